"""Quantization to an accuracy budget: the fewest layers kept at high precision for the task
metric to stay within `max_drop` points of FP32.

    settings = BudgetSettings(precision="int8", max_drop=0.5, data="data/synth",
                              calib="data/synth/images/train")
    report = quantize_to_budget("m.onnx", "m.int8.onnx", settings)

1. Calibrate once (`quantize.calibrate`); every candidate graph is made from the same ranges
   by a *graph maker*: a callable from the set of node names kept unquantized to the Q/DQ
   graph (`quantize.quantized_graph`, so any Q/DQ precision it makes, INT8 and FP8, works).
2. The plain graph (nothing kept) is scored on the task (PQ for panoptic, top-1 for
   classifiers: `evaluate.evaluate` on the given split), beside FP32. Within the budget: done.
3. Else its quantized layers (the Conv / Gemm / MatMul nodes reading a DequantizeLinear) are
   ranked by the error each adds on its own: `local_graph` adds to the FP32 graph a copy of
   each layer fed by its own Q/DQ pairs of the FP32 tensors (and its quantized weights), and the
   layer-wise comparison's runner (`layerwise.run_chunk`: ONNX Runtime, Polygraphy's SNR) gives
   each copy's relative RMS error against the FP32 output, on calibration inputs. (The
   layer-wise report's in-graph "jump" ranks badly here: one broken early layer makes every
   later error large, and a later layer's own rounding vanishes in it.)
4. `search_prefix` keeps the top-k of that ranking, k = 1, 2, 4, ... until the budget is met
   (or every layer is kept), then bisects between the last miss and the first hit: about
   2 log2(n) task evaluations for n layers, instead of n for one layer at a time. It assumes
   that keeping more of the ranking never hurts much; the answer is the smallest k it saw meet
   the budget, not a proof that no smaller set of layers would.
5. The chosen graph is written atomically with, beside it, a JSON record: the layers kept and
   why (rank, added error, multiply-adds), every search step, the achieved drop, and the share
   of multiply-adds still quantized (`layer_macs`: Conv / Gemm / MatMul / AxialAttention from
   the tensor shapes of one FP32 run; the AxialAttention plugin never computes in INT8).

Kept layers compute in FP32: the Q/DQ graph is strongly typed, and a node without Q/DQ runs in
the precision of its float inputs.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from axial_deploy.calibration.qdq import WEIGHTED_OPS
from axial_deploy.errors import AxialDeployError
from axial_deploy.graph import label
from axial_deploy.op.spec import OP_TYPE

if TYPE_CHECKING:
    from axial_deploy.checks.layerwise import TensorMatch

# Precisions whose graphs `quantize.quantized_graph` makes with nodes kept unquantized.
BUDGET_PRECISIONS = ("int8", "fp8")  # the Q/DQ precisions (calibration/qdq.py formats)
KEPT_PRECISION = "fp32"  # what a kept layer computes in (module doc)

GraphMaker = Callable[[frozenset[str]], onnx.ModelProto]


class BudgetError(AxialDeployError, ValueError):
    """A budget search that cannot run as asked."""


# ------------------------------------------------------------------------------ the search


@dataclass
class SearchStep:
    """One task evaluation: the top `kept` layers of the ranking left at high precision."""

    kept: int
    metric: float
    drop: float
    within: bool
    seconds: float = 0.0


@dataclass
class SearchResult:
    kept: int  # the prefix chosen: every layer when the budget is never met
    met: bool
    steps: list[SearchStep] = field(default_factory=list)


def _within(drop: float, max_drop: float) -> bool:
    # The gate's epsilon (evaluate.accuracy_gate): float noise at the threshold is no miss; NaN is.
    return drop <= max_drop + 1e-9


def search_prefix(
    count: int,
    drop_at: Callable[[int], float],
    max_drop: float,
    *,
    on_step: Callable[[SearchStep], None] | None = None,
) -> SearchResult:
    """The smallest k in 0..count (of those tried) with drop_at(k) <= max_drop: k = 0, then
    1, 2, 4, ... (capped at count) until one meets the budget, then bisection between the last
    miss and that hit. `drop_at(k)`: the metric drop (points) with the top k layers kept."""
    if count < 0:
        raise BudgetError(f"count must be >= 0, got {count}")
    result = SearchResult(kept=count, met=False)
    tried: dict[int, bool] = {}

    def within(k: int) -> bool:
        if k not in tried:
            start = time.perf_counter()
            drop = float(drop_at(k))
            step = SearchStep(k, math.nan, drop, _within(drop, max_drop))
            step.seconds = time.perf_counter() - start
            result.steps.append(step)
            tried[k] = step.within
            if on_step is not None:
                on_step(step)
        return tried[k]

    if within(0):
        result.kept, result.met = 0, True
        return result
    miss, k = 0, 1
    while k <= count:
        if within(k):
            break
        miss = k
        if k == count:
            return result  # everything kept and still over budget
        k = min(2 * k, count)
    else:
        return result  # count == 0: nothing to keep
    hit = k
    while hit - miss > 1:
        middle = (miss + hit) // 2
        if within(middle):
            hit = middle
        else:
            miss = middle
    result.kept, result.met = hit, True
    return result


# ------------------------------------------------------------------------------ layers


@dataclass
class RankedLayer:
    node: str
    op: str
    rank: int  # 1 = adds the most error
    error: float  # relative RMS error this layer adds (module doc, step 3)
    macs: int


def quantized_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The Conv / Gemm / MatMul nodes of a Q/DQ graph that read a DequantizeLinear output:
    the layers a budget can keep at high precision (any Q/DQ precision)."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear"
                   for out in node.output}  # fmt: skip
    return [
        node
        for node in model.graph.node
        if node.op_type in WEIGHTED_OPS and any(name in dequantized for name in node.input)
    ]


def local_graph(
    reference: onnx.ModelProto, quantized: onnx.ModelProto, layers: Sequence[str]
) -> tuple[onnx.ModelProto, list[TensorMatch]]:
    """The FP32 graph plus, for each of `layers` (quantized nodes of `quantized`), a copy of
    the layer fed by its own Q/DQ pairs of the *FP32* tensors (and its dequantized weights);
    and the matches pairing each copy's output with the FP32 output it stands for. Compared by
    the layer-wise runner, each pair gives the error the layer adds on exact inputs: no error
    from upstream layers, which in a chain of quantized layers swamps a late layer's own."""
    from axial_deploy.checks.layerwise import TensorMatch

    local = onnx.ModelProto()
    local.CopyFrom(reference)
    producer = {out: node for node in quantized.graph.node for out in node.output}
    q_inits = {init.name: init for init in quantized.graph.initializer}
    have = {init.name for init in local.graph.initializer}
    made = {out for node in reference.graph.node for out in node.output}
    by_name = {label(node): node for node in quantized.graph.node}
    matches = []
    for index, name in enumerate(layers):
        suffix = f"/local{index}"
        copies: list[onnx.NodeProto] = []
        node = by_name[name]
        layer = onnx.NodeProto()
        layer.CopyFrom(node)
        layer.name = node.name + suffix
        for position, tensor in enumerate(node.input):
            if tensor:
                layer.input[position] = _copy_qdq_chain(tensor, suffix, producer, copies)
        for tensor in (t for copy in [*copies, layer] for t in copy.input):
            # scales, zero points, INT8 weights: the quantized graph's own initializers
            if tensor in q_inits and tensor not in have and tensor not in made:
                local.graph.initializer.append(q_inits[tensor])
                have.add(tensor)
        layer.output[0] = node.output[0] + suffix
        local.graph.node.extend([*copies, layer])
        matches.append(
            TensorMatch(layer.output[0], node.output[0], "local", name, node.op_type, "fp32")
        )
    return local, matches


def _copy_qdq_chain(
    tensor: str, suffix: str, producer: Mapping[str, onnx.NodeProto], copies: list
) -> str:
    """`tensor` as a layer's copy reads it: the Q/DQ nodes that make it copied (outputs
    renamed with `suffix`, appended to `copies`) down to the FP32 tensor they round; a tensor
    no Q/DQ node makes is read as it is."""
    node = producer.get(tensor)
    if node is None or node.op_type not in ("DequantizeLinear", "QuantizeLinear"):
        return tensor
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = node.name + suffix
    copy.input[0] = _copy_qdq_chain(node.input[0], suffix, producer, copies)
    for position, out in enumerate(node.output):
        copy.output[position] = out + suffix
    copies.append(copy)
    return tensor + suffix


def _finite(value: float) -> float:
    """NaN as infinite: a NaN error is the worst."""
    return math.inf if math.isnan(value) else value


def local_errors(
    reference: onnx.ModelProto,
    quantized: onnx.ModelProto,
    layers: Sequence[str],
    feeds: list[dict[str, np.ndarray]],
) -> dict[str, float]:
    """Layer name -> relative RMS error of its output when it alone is quantized on exact
    (FP32) inputs (`local_graph`), run and measured by the layer-wise comparison's runner
    (Polygraphy SNR, RMS over the feeds), in chunks that fit its memory budget."""
    from axial_deploy.checks.layerwise import (
        DEFAULT_CHUNK_MB,
        _rms,
        _tensor_bytes,
        plan_chunks,
        run_chunk,
    )

    local, matches = local_graph(reference, quantized, layers)
    batch = max(int(np.shape(next(iter(feeds[0].values())))[0] or 1), 1)
    sizes = _tensor_bytes(reference, batch)
    errors: dict[str, float] = {}
    for chunk in plan_chunks(matches, sizes, DEFAULT_CHUNK_MB * 2**20):
        measured = run_chunk(reference, local, chunk, feeds)
        for match in chunk:
            errors[match.node] = _rms(measured.get(match.candidate, [math.nan]))
    return errors


def rank_layers(added: Mapping[str, float], ops: Mapping[str, str],
                macs: Mapping[str, int]) -> list[RankedLayer]:  # fmt: skip
    """Layers by added error, largest first, NaN first (ties: the more multiply-adds first)."""
    order = sorted(added, key=lambda n: (-_finite(added[n]), -macs.get(n, 0), n))
    return [RankedLayer(n, ops[n], i, added[n], macs.get(n, 0)) for i, n in enumerate(order, 1)]


# ------------------------------------------------------------------------------ multiply-adds


def attended_pairs(length: int, span: int) -> int:
    """(query, key) pairs on a line of `length` with a window of `span` (0: the whole line),
    as `models.complexity.attended_pairs` counts them (that module needs torch; this one not)."""
    if span == 0 or span >= 2 * length - 1:
        return length * length
    radius = (span - 1) // 2
    i = np.arange(length)
    return int((np.minimum(i + radius, length - 1) - np.maximum(i - radius, 0) + 1).sum())


def node_macs(node: onnx.NodeProto, shapes: Mapping[str, Sequence[int]]) -> int:
    """Multiply-adds of one Conv / Gemm / MatMul / AxialAttention node from its tensors'
    shapes (as `models.complexity` counts them: output elements x reduction length; the
    attention per head, query and attended key 3 * key_depth + 2 * value_depth)."""
    out = int(np.prod(shapes[node.output[0]]))
    if node.op_type == "Conv":
        return out * int(np.prod(shapes[node.input[1]][1:]))
    if node.op_type == "MatMul":
        return out * int(shapes[node.input[0]][-1])
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        a = shapes[node.input[0]]
        return out * int(a[0] if trans_a else a[1])
    if node.op_type == OP_TYPE:
        from axial_deploy.op.spec import read_node_attributes

        attrs = read_node_attributes(node)
        n, _, h, w = shapes[node.input[0]]
        length, lines = (h, n * w) if attrs["axis"] == 2 else (w, n * h)
        per_pair = 3 * attrs["key_depth"] + 2 * attrs["value_depth"]
        return lines * attrs["num_heads"] * attended_pairs(length, attrs["span"]) * per_pair
    raise BudgetError(f"no multiply-add count for {node.op_type} ({label(node)})")


def layer_macs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Node name -> multiply-adds on `feed` (one batch) for every Conv / Gemm / MatMul /
    AxialAttention node of the FP32 `model`: one ONNX Runtime run with their tensors marked
    as outputs gives the shapes (ONNX shape inference stops at the custom op)."""
    from axial_deploy.checks.layerwise import _mark
    from axial_deploy.op.ort import create_session

    counted = [n for n in model.graph.node if n.op_type in (*WEIGHTED_OPS, OP_TYPE)]
    if not counted:
        return {}
    shapes: dict[str, Sequence[int]] = {t.name: tuple(t.dims) for t in model.graph.initializer}
    wanted = list(dict.fromkeys(
        name for n in counted for name in [*n.input[:2], n.output[0]]
        if name and name not in shapes
    ))  # fmt: skip
    session = create_session(_mark(model, wanted))
    names = [o.name for o in session.get_outputs()]
    for name, value in zip(names, session.run(names, dict(feed)), strict=True):
        shapes[name] = np.shape(value)
    return {label(n): node_macs(n, shapes) for n in counted}


# ------------------------------------------------------------------------------ the report


@dataclass
class BudgetReport:
    source: str
    output: str
    record: str
    precision: str
    kept_precision: str
    max_drop: float
    metric: str  # "PQ" or "top1"
    data: str
    split: str
    images: int
    reference: float  # FP32's metric
    plain: float  # the plain quantized graph's metric (nothing kept)
    achieved: float  # the written graph's metric
    met: bool
    layers: int = 0  # quantized layers of the plain graph: what could be kept
    kept: list[RankedLayer] = field(default_factory=list)
    ranking: list[RankedLayer] = field(default_factory=list)
    steps: list[SearchStep] = field(default_factory=list)
    macs_total: int = 0  # every counted node of the FP32 graph
    macs_quantized_plain: int = 0
    macs_quantized: int = 0  # in the written graph
    ranking_inputs: str = ""
    seconds: float = 0.0
    quantize: dict[str, Any] = field(default_factory=dict)  # the QuantizeReport of the graph

    @property
    def plain_drop(self) -> float:
        return self.reference - self.plain

    @property
    def drop(self) -> float:
        return self.reference - self.achieved

    @property
    def share_quantized(self) -> float:
        return self.macs_quantized / self.macs_total if self.macs_total else 0.0

    @property
    def share_kept(self) -> float:
        """Share of all multiply-adds moved to high precision by the budget."""
        return sum(layer.macs for layer in self.kept) / self.macs_total if self.macs_total else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            plain_drop=self.plain_drop,
            drop=self.drop,
            share_macs_quantized=self.share_quantized,
            share_macs_quantized_plain=(
                self.macs_quantized_plain / self.macs_total if self.macs_total else 0.0
            ),
            share_macs_kept=self.share_kept,
            evaluations=len(self.steps),
            why=(
                "kept: the top-ranked layers by the relative RMS error each adds when it alone "
                f"is {self.precision} on exact FP32 inputs (error); the search kept the smallest "
                "prefix of that ranking it found within the budget"
            ),
        )
        return data

    def summary(self) -> str:
        lines = [
            f"{self.source} -> {self.output}: {self.precision} within {self.max_drop:g} "
            f"{self.metric} points of FP32 on {self.data} ({self.split}, {self.images} images)",
            f"  FP32 {self.reference:.2f}; plain {self.precision} {self.plain:.2f} (drop "
            f"{self.plain_drop:+.2f}); written {self.achieved:.2f} (drop {self.drop:+.2f}): "
            + ("budget met" if self.met else "budget NOT met even with every layer kept"),
            f"  {len(self.kept)} of {self.layers} quantized layers kept in "
            f"{self.kept_precision}; multiply-adds still quantized: {self.share_quantized:.1%} "
            f"(plain {self.precision}: {self.macs_quantized_plain / max(self.macs_total, 1):.1%})",
            f"  search: {len(self.steps)} task evaluations "
            + ", ".join(f"k={s.kept}: drop {s.drop:+.2f}" for s in self.steps),
        ]
        for layer in self.kept[:10]:
            lines.append(
                f"    kept #{layer.rank} {layer.node} ({layer.op}): adds error "
                f"{layer.error:.2e}, {layer.macs / 1e6:.2f} M multiply-adds"
            )
        if len(self.kept) > 10:
            lines.append(f"    ... and {len(self.kept) - 10} more (see {self.record})")
        lines.append(f"  record: {self.record}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ entry point


def graph_maker(calibration, attention_precision: str = "fp16") -> GraphMaker:
    """The precision's graph maker over one calibration: keep set -> Q/DQ graph."""
    from axial_deploy.quantize import quantized_graph

    def make(keep: frozenset[str]) -> onnx.ModelProto:
        return quantized_graph(
            calibration, keep_nodes=keep, attention_precision=attention_precision
        )

    return make


def task_metric(
    data: str | os.PathLike,
    *,
    split: str = "val",
    limit: int | None = None,
    postprocess=None,
) -> tuple[Callable[[str | os.PathLike], float], str]:
    """(path -> primary metric in points, its name): `evaluate.evaluate` of a graph on the
    split, the same post-processing for every graph."""
    from axial_deploy.evaluation.evaluate import dataset_task, evaluate

    task = dataset_task(data, split)

    def metric(path: str | os.PathLike) -> float:
        result = evaluate(path, data, split=split, limit=limit, postprocess=postprocess,
                          progress=False)  # fmt: skip
        return float(result.metrics[result.primary])

    return metric, "PQ" if task == "panoptic" else "top1"


@dataclass
class BudgetSettings:
    """What a budget search quantizes to and measures with: the precision and the budget, the
    task data the metric is measured on (`data` / `split`, the first `eval_images`), the
    calibration (`calib`, `method`, `batches` of `batch_size`, `seed`) and the ranking's
    `rank_batches` of calibration inputs."""

    precision: str
    max_drop: float
    data: str | os.PathLike
    split: str = "val"
    eval_images: int | None = None
    calib: str | None = None
    method: str = "entropy"
    batches: int = 8
    batch_size: int = 1
    seed: int = 0
    attention_precision: str = "fp16"
    rank_batches: int = 4
    postprocess: Any = None  # the panoptic post-processing config of the task metric
    progress: bool = False

    def check(self) -> None:
        if self.precision not in BUDGET_PRECISIONS:
            raise BudgetError(
                f"--max-drop searches Q/DQ precisions {BUDGET_PRECISIONS}, not "
                f"{self.precision!r} (an fp16 graph keeps its sensitive ops in FP32 by itself)"
            )
        if not self.max_drop >= 0:
            raise BudgetError(f"--max-drop must be >= 0 points, got {self.max_drop}")


@dataclass
class _Searched:
    """What the search found, for the record: the metrics, the ranking and the search."""

    name: str
    reference: float
    plain: float
    metrics: dict[int, float]
    layers: list
    ranking: list[RankedLayer]
    macs: dict[str, int]
    inputs: str
    search: Any


def quantize_to_budget(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    settings: BudgetSettings,
    *,
    record_path: str | os.PathLike | None = None,
    cache_path: str | os.PathLike | None = None,
    metric: Callable[[str | os.PathLike], float] | None = None,
    metric_name: str = "metric",
) -> BudgetReport:
    """Quantize the FP32 graph at `model_path` to `settings.precision`, keeping its most
    error-prone layers unquantized until the task metric on the settings' data is within
    `max_drop` points of FP32 (module doc). Writes OUT (atomically), its calibration cache
    (INT8) and the record (default: OUT with suffix .budget.json). `metric` replaces the task
    evaluation (path -> points, named `metric_name`: tests, caches)."""
    from axial_deploy.artifacts import write_json
    from axial_deploy.quantize import calibrate

    start = time.perf_counter()
    settings.check()
    name = metric_name
    if metric is None:
        metric, name = task_metric(
            settings.data, split=settings.split, limit=settings.eval_images,
            postprocess=settings.postprocess,
        )  # fmt: skip
    record_path = (
        Path(record_path) if record_path else Path(output_path).with_suffix(".budget.json")
    )
    calibration = calibrate(
        model_path, output_path, precision=settings.precision, calib=settings.calib,
        method=settings.method, batches=settings.batches, batch_size=settings.batch_size,
        seed=settings.seed, progress=settings.progress,
    )  # fmt: skip
    make = graph_maker(calibration, settings.attention_precision)
    found = _rank_and_search(model_path, calibration, make, settings, metric, name)
    kept = found.ranking[: found.search.kept]
    quantize_report = _write_graph(calibration, make, kept, output_path, settings, cache_path)
    quantize_report.seconds = time.perf_counter() - start
    plain_macs = sum(found.macs.get(label(n), 0) for n in found.layers)
    report = BudgetReport(
        source=str(model_path), output=str(output_path), record=str(record_path),
        precision=settings.precision, kept_precision=KEPT_PRECISION,
        max_drop=settings.max_drop, metric=found.name, data=str(settings.data),
        split=settings.split, images=_images(settings.data, settings.split, settings.eval_images),
        reference=found.reference, plain=found.plain, achieved=found.metrics[found.search.kept],
        met=found.search.met, layers=len(found.layers), kept=kept, ranking=found.ranking,
        steps=found.search.steps, macs_total=sum(found.macs.values()),
        macs_quantized_plain=plain_macs,
        macs_quantized=plain_macs - sum(layer.macs for layer in kept),
        ranking_inputs=found.inputs, seconds=time.perf_counter() - start,
        quantize=quantize_report.to_json(),
    )  # fmt: skip
    write_json(record_path, report.to_json())
    return report


def _rank_and_search(model_path, calibration, make, settings: BudgetSettings, metric, name):
    """Scores FP32 and the plain Q/DQ graph; when the plain graph misses the budget, ranks its
    quantized layers by the error each adds and searches the fewest to keep."""
    from axial_deploy.checks.layerwise import make_feeds

    say = print if settings.progress else (lambda *_: None)
    precision, max_drop = settings.precision, settings.max_drop
    plain = make(frozenset())
    layers = quantized_layers(plain)
    ops = {label(n): n.op_type for n in layers}
    with tempfile.TemporaryDirectory(prefix="axial-budget-") as scratch:
        folder = Path(scratch)

        def score(model: onnx.ModelProto, stem: str) -> float:
            path = folder / f"{stem}.onnx"
            onnx.save(model, str(path))
            return metric(path)

        say(f"budget: evaluating FP32 and plain {precision} on {settings.data} ...")
        reference = metric(model_path)
        plain_metric = score(plain, "plain")
        say(f"budget: FP32 {name} {reference:.2f}, plain {precision} {plain_metric:.2f}")
        feeds, inputs = make_feeds(
            calibration.model, settings.calib, batches=settings.rank_batches, seed=settings.seed
        )
        macs = layer_macs(calibration.model, feeds[0])
        ranking: list[RankedLayer] = []
        metrics: dict[int, float] = {0: plain_metric}
        if not _within(reference - plain_metric, max_drop) and layers:
            say(f"budget: ranking {len(layers)} quantized layers by the error each adds ...")
            added = local_errors(calibration.model, plain, list(ops), feeds)
            ranking = rank_layers(added, ops, macs)

        def drop_at(k: int) -> float:
            if k not in metrics:
                keep = frozenset(layer.node for layer in ranking[:k])
                metrics[k] = score(make(keep), f"keep{k}")
            return reference - metrics[k]

        def show(step: SearchStep) -> None:
            step.metric = reference - step.drop
            verdict = "within" if step.within else "over"
            say(f"budget: {step.kept} layer(s) kept: {name} {step.metric:.2f}, drop "
                f"{step.drop:+.2f} ({verdict} {max_drop:g})")  # fmt: skip

        search = search_prefix(len(ranking), drop_at, max_drop, on_step=show)
    return _Searched(name, reference, plain_metric, metrics, layers, ranking, macs, inputs, search)


def _write_graph(calibration, make, kept, output_path, settings: BudgetSettings, cache_path):
    """Writes the graph with `kept` unquantized (atomically) and, for INT8, TensorRT's
    calibration cache; returns the quantize report filled for it."""
    from axial_deploy.quantize import write_calibration_cache, write_graph

    calibration.report.output = str(output_path)
    final = make(frozenset(layer.node for layer in kept))
    write_graph(final, output_path, settings.precision)
    quantize_report = calibration.report
    quantize_report.ops = _op_counts(final)
    if settings.precision == "int8":
        cache = Path(cache_path) if cache_path else Path(output_path).with_suffix(".calib")
        write_calibration_cache(calibration.ranges, cache, quantize_report)
    return quantize_report


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    import collections

    return dict(collections.Counter(node.op_type for node in model.graph.node))


def _images(data, split: str, limit: int | None) -> int:
    """Images the metric was computed on (the split's, capped at `limit`)."""
    from axial_deploy.evaluation.evaluate import classification_samples, dataset_task

    try:
        if dataset_task(data, split) == "panoptic":
            from axial_deploy.datasets.coco_panoptic import load_split, split_paths

            count = len(load_split(*split_paths(data, split)[:2]).annotations)
        else:
            count = len(classification_samples(data, split)[1])
    except (ValueError, OSError):
        return limit or 0
    return min(count, limit) if limit else count
