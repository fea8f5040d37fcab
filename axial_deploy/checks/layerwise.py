"""Where precision breaks, layer by layer: every intermediate tensor of a candidate graph (FP16,
INT8, ...) against the same tensor of the reference graph (FP32), on the same inputs.

    report = layerwise_compare("model.axial.onnx", "model.axial.int8.onnx")
    print(report.summary())

1. `match_tensors` pairs each float tensor the candidate computes with the reference tensor it
   stands for: the same name; else the output of the node with the same name and op type (our
   FP16 conversion renames a graph output's producer output to `Y/fp16`, and INT8 renames the
   AxialAttention output); else a wrapper of a matched tensor: a Cast of X (FP16 islands, the
   FP16 AxialAttention I/O) or the DequantizeLinear of a QuantizeLinear of X (INT8 activation
   pairs) stands for X.
2. Both graphs get those tensors marked as outputs (Polygraphy's `ModifyOutputs`, what
   `polygraphy run --onnx-outputs mark all` does), a chunk at a time when all of them would not
   fit `chunk_mb` (estimated from ONNX shape inference), and run in ONNX Runtime through
   Polygraphy's `OnnxrtRunner` over our sessions (`ort_ops.create_session`: AxialAttention
   nodes run through our op) on the same feeds (Polygraphy's seeded `DataLoader`, or our
   calibration sources for real images).
3. Polygraphy's `Comparator` with `SnrCompareFunc` measures each pair; the error of a tensor is
   its relative RMS error ||cand - ref|| / ||ref|| = 10^(-SNR/20), root-mean-square over the
   batches.
4. The error a layer *introduces* ("jump") is its output's error minus the worst error reaching
   its inputs (the error of the nearest compared tensors upstream; weights and graph inputs
   count 0, so a quantized weight's error is the consuming Conv's). Layers are ranked by jump;
   the first layer in topological order whose error passes the threshold is named.

Caveat of the jump: a layer that amplifies the error it receives (a subtraction of close
values, a normalization by a small variance) shows a jump without adding rounding of its own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import TensorProto

from axial_deploy.calibration import ranges
from axial_deploy.checks.comparison import quiet_polygraphy
from axial_deploy.errors import AxialDeployError

DEFAULT_THRESHOLD = 1e-2  # 1 % relative RMS error (SNR 40 dB)
DEFAULT_CHUNK_MB = 1024
FLOAT_TYPES = (*ranges.FLOAT_TYPES, TensorProto.DOUBLE)  # the calibration's, and fp64
TYPE_NAMES = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.DOUBLE: "fp64",
              TensorProto.BFLOAT16: "bf16"}  # fmt: skip
REFERENCE_RUNNER, CANDIDATE_RUNNER = "reference", "candidate"


class LayerwiseError(AxialDeployError, ValueError):
    """Graphs or options the layer-wise comparison cannot work with."""


# ------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class TensorMatch:
    """A candidate tensor and the reference tensor it stands for."""

    candidate: str
    reference: str
    how: str  # "name", "node" (same node name and op), "cast" or "qdq" (a wrapper of it)
    node: str  # the candidate node that writes it
    op: str
    dtype: str  # the candidate tensor's element type ("fp16", "fp32", "?" when unknown)


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    from axial_deploy.calibration.ranges import float_tensor_types

    return float_tensor_types(model)


def _is_float(types: Mapping[str, int], name: str) -> bool:
    """Float, or of unknown type (a custom op's output ONNX cannot infer): checked at run time."""
    return types.get(name, TensorProto.UNDEFINED) in (*FLOAT_TYPES, TensorProto.UNDEFINED)


def match_tensors(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> list[TensorMatch]:
    """The candidate's float node outputs paired with the reference tensors they stand for
    (rules in the module doc), in the candidate's (topological) node order."""
    ref_types, cand_types = _float_types(reference), _float_types(candidate)
    ref_tensors = {
        out
        for node in reference.graph.node
        if node.op_type != "Constant"
        for out in node.output
        if out and _is_float(ref_types, out)
    }
    ref_nodes = {node.name: node for node in reference.graph.node if node.name}
    cand_producers = {out: node for node in candidate.graph.node for out in node.output}
    # Shared graph inputs stand for themselves: a Cast or Q/DQ of an input is compared too.
    stands_for = {name: name for name in _real_inputs(candidate) & _real_inputs(reference)}
    matches = []
    for node in candidate.graph.node:
        if node.op_type == "Constant":
            continue
        for position, out in enumerate(node.output):
            if not out or not _is_float(cand_types, out):
                continue
            found = _stands_for(node, position, ref_tensors, ref_nodes, stands_for, cand_producers)
            if found is None:
                continue
            stands_for[out] = found[0]
            dtype = TYPE_NAMES.get(cand_types.get(out, 0), "?")
            matches.append(TensorMatch(out, found[0], found[1], node.name or out, node.op_type,
                                       dtype))  # fmt: skip
    return matches


def _real_inputs(model: onnx.ModelProto) -> set[str]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    return {info.name for info in model.graph.input if info.name not in initializers}


def _stands_for(node, position, ref_tensors, ref_nodes, stands_for, cand_producers):
    """(reference tensor, how) for output `position` of candidate `node`, or None."""
    out = node.output[position]
    if out in ref_tensors:
        return out, "name"
    twin = ref_nodes.get(node.name) if node.name else None
    same = twin is not None and twin.op_type == node.op_type and position < len(twin.output)
    if same and twin.output[position] in ref_tensors:
        return twin.output[position], "node"
    source = node.input[0] if node.input else ""
    if node.op_type in ("Cast", "CastLike") and source in stands_for:
        return stands_for[source], "cast"
    if node.op_type == "DequantizeLinear":
        quantize = cand_producers.get(source)
        pair = quantize is not None and quantize.op_type == "QuantizeLinear"
        if pair and quantize.input[0] in stands_for:
            return stands_for[quantize.input[0]], "qdq"
    return None


# ------------------------------------------------------------------------------ the report


@dataclass
class LayerRow:
    """One compared candidate tensor: the layer that writes it and the error it carries."""

    node: str
    op: str
    tensor: str  # candidate tensor
    reference: str  # the reference tensor it is compared with
    how: str
    dtype: str
    error: float  # relative RMS error vs the reference tensor
    input_error: float  # worst error reaching the node's inputs
    jump: float  # error - input_error: what this layer adds

    @property
    def snr_db(self) -> float:
        if self.error == 0:
            return math.inf
        return -20 * math.log10(self.error) if math.isfinite(self.error) else -math.inf


@dataclass
class LayerwiseReport:
    reference: str
    candidate: str
    inputs: str
    batches: int
    threshold: float
    runs: int = 0  # sessions per graph: chunks of marked outputs
    rows: list[LayerRow] = field(default_factory=list)  # candidate topological order
    unmatched: list[str] = field(default_factory=list)  # reference tensors never compared
    skipped: dict[str, str] = field(default_factory=dict)  # candidate tensor -> why

    @property
    def first_past(self) -> LayerRow | None:
        """The first layer (topological order) whose error passes the threshold."""
        return next((row for row in self.rows if not row.error <= self.threshold), None)

    def ranked(self) -> list[LayerRow]:
        """Rows by jump, largest first (NaN last)."""
        return sorted(self.rows, key=lambda r: -r.jump if not math.isnan(r.jump) else math.inf)

    def islands(self) -> list[LayerRow]:
        """In a graph that computes mostly in FP16: the layers (Casts aside) that compute in
        FP32. Empty for other graphs (an INT8 graph's FP16 AxialAttention I/O is no island)."""
        layers = [r for r in self.rows if r.op not in ("Cast", "CastLike")]
        fp16 = sum(r.dtype == "fp16" for r in layers)
        if fp16 <= len(layers) - fp16:
            return []
        return [r for r in layers if r.dtype == "fp32"]

    def to_json(self) -> dict:
        first = self.first_past
        data = asdict(self)
        data["first_past_threshold"] = asdict(first) if first else None
        data["ranked"] = [row.tensor for row in self.ranked()]
        data["fp32_islands"] = [row.node for row in self.islands()]
        data["metric"] = "relative RMS error ||cand - ref|| / ||ref|| (Polygraphy SNR)"
        return data

    def summary(self, top: int = 15) -> str:
        first = self.first_past
        lines = [
            f"layer-wise: {self.candidate} vs {self.reference} on {self.inputs} "
            f"({self.batches} batch(es), {self.runs} run(s) per graph)",
            f"  {len(self.rows)} tensors compared ({_count_how(self.rows)}); "
            f"{len(self.unmatched)} reference tensors without a counterpart",
            "  error: relative RMS error ||cand - ref|| / ||ref||; jump: error minus the worst "
            "error reaching the layer's inputs",
            f"  first layer past {self.threshold:.1e}: "
            + (f"{_layer(first)} ({_op(first)}), error {first.error:.2e}" if first else "none"),
            f"  layers ranked by jump (top {min(top, len(self.rows))}):",
            layer_table(self.ranked()[:top]),
        ]
        islands = self.islands()
        if islands:
            worst = max((r.jump for r in islands), default=0.0)
            ops = _count(r.op for r in islands)
            lines += [
                f"  FP32 islands: {len(islands)} layers ({ops}); their largest jump {worst:.2e}",
                layer_table(sorted(islands, key=lambda r: -r.jump)[:top]),
            ]
        for tensor, why in list(self.skipped.items())[:5]:
            lines.append(f"  not compared: {tensor}: {why}")
        return "\n".join(lines)


def _count(items: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _count_how(rows: list[LayerRow]) -> str:
    return _count(f"by {row.how}" for row in rows) or "none"


def layer_table(rows: list[LayerRow]) -> str:
    """The rows as a text table (rank, layer, op, dtype, error, input error, jump, SNR). A
    Q/DQ pair or Cast row names the tensor it wraps."""
    from axial_deploy.progress import text_table

    header = ["#", "layer", "op", "dtype", "error", "input err", "jump", "SNR dB"]
    body = [
        [str(i), _short(_layer(r)), _op(r), r.dtype, f"{r.error:.2e}", f"{r.input_error:.2e}",
         f"{r.jump:+.2e}", f"{r.snr_db:.1f}"]
        for i, r in enumerate(rows, 1)
    ]  # fmt: skip
    return "\n".join("    " + line for line in text_table(header, body).splitlines())


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def _layer(row: LayerRow) -> str:
    return row.node if row.how in ("name", "node") else row.reference


def _op(row: LayerRow) -> str:
    return {"qdq": "Q/DQ of", "cast": "Cast of"}.get(row.how, row.op)


# ------------------------------------------------------------------------------ running


def _literal(name: str) -> str:
    """`name` as an fnmatch pattern matching only itself (ModifyOutputs expands wildcards)."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _mark(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    from polygraphy.backend.onnx import ModifyOutputs

    return ModifyOutputs(model, outputs=[_literal(n) for n in names], copy=True)()


def _tensor_bytes(model: onnx.ModelProto, batch: int) -> dict[str, int]:
    """Bytes of each tensor ONNX shape inference sizes (a dynamic axis counts `batch`)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # custom ops or odd graphs: sizes stay unknown, chunks use the largest
        inferred = model
    sizes = {}
    graph = inferred.graph
    for info in [*graph.value_info, *graph.output]:
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch
                for d in info.type.tensor_type.shape.dim]  # fmt: skip
        sizes[info.name] = int(np.prod(dims, dtype=np.int64)) * 4
    return sizes


def plan_chunks(
    matches: list[TensorMatch], sizes: Mapping[str, int], budget_bytes: int
) -> list[list[TensorMatch]]:
    """Consecutive groups of matches whose marked outputs (the reference tensor once, each
    candidate tensor) fit `budget_bytes` per inference; a tensor of unknown size counts as the
    largest known one. A single tensor larger than the budget gets a chunk of its own."""
    largest = max(sizes.values(), default=0)
    chunks: list[list[TensorMatch]] = []
    current: list[TensorMatch] = []
    used, seen = 0, set()
    for match in matches:
        size = sizes.get(match.reference, largest)
        cost = size + (0 if match.reference in seen else size)
        if current and used + cost > budget_bytes:
            chunks.append(current)
            current, used, seen = [], 0, set()
            cost = 2 * size
        current.append(match)
        seen.add(match.reference)
        used += cost
    if current:
        chunks.append(current)
    return chunks


def _runner(model: onnx.ModelProto, name: str):
    """Polygraphy's ONNX Runtime runner over our session (AxialAttention nodes run our op),
    with ONNX Runtime's graph optimizations off: even its basic level moves and fuses Q/DQ
    nodes wherever the tensors between them are not outputs, so an INT8 tensor's values
    depended on which tensors a chunk marked (measured: 2e-2 on a Conv of the tiny model).
    Unoptimized, every graph computes exactly what it says."""
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from axial_deploy.op.ort import create_session

    def session():
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as ort_ops
        return create_session(model, session_options=options)

    return OnnxrtRunner(session, name=name)


def _spread(pairs: list[tuple[str, str]]) -> Callable:
    """A Polygraphy postprocess function: the reference's outputs renamed to the candidate
    tensors that stand for them (one reference tensor may stand behind several: X, its
    Q/DQ pair, its Cast), so the comparator pairs them by name."""
    from polygraphy.comparator import IterationResult

    def spread(result):
        if result.runner_name != REFERENCE_RUNNER:
            return result
        outputs = {cand: result[ref] for cand, ref in pairs}
        return IterationResult(outputs, runtime=result.runtime, runner_name=result.runner_name)

    return spread


def _agreeing_infinities(compare: Callable) -> Callable:
    """`compare` (a Polygraphy compare function) where infinities that both sides hold at the
    same element count as equal (masked attention logits are -inf in both graphs); an infinity
    or NaN on one side only still makes the SNR infinite or NaN."""
    from polygraphy.comparator import IterationResult

    def sanitized(result0, result1):
        outputs0, outputs1 = {}, {}
        for name in result0:
            a = np.asarray(result0[name])
            b = np.asarray(result1[name]) if name in result1 else None
            if b is not None and a.shape == b.shape and a.dtype.kind == "f" and b.dtype.kind == "f":
                same = np.isinf(a) & (a == b)
                if same.any():
                    a, b = np.where(same, 0, a), np.where(same, 0, b)
            outputs0[name] = a
            if b is not None:
                outputs1[name] = b
        return (IterationResult(outputs0, runner_name=result0.runner_name),
                IterationResult(outputs1, runner_name=result1.runner_name))  # fmt: skip

    def agreeing(result0, result1):
        return compare(*sanitized(result0, result1))

    return agreeing


def _relative(snr: float | None) -> float:
    """Relative RMS error from an SNR in dB (None: not comparable, e.g. shapes differ)."""
    if snr is None or math.isnan(snr):
        return math.nan
    return 10 ** (-snr / 20) if math.isfinite(snr) else (0.0 if snr > 0 else math.inf)


def run_chunk(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    chunk: list[TensorMatch],
    feeds: list[dict[str, np.ndarray]],
    on_feed: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Candidate tensor -> its relative RMS error per feed: both graphs with the chunk's
    tensors marked as outputs, run by Polygraphy's Comparator (streaming: one feed's outputs
    held at a time) and compared with its SNR function. `on_feed` is called after each feed."""
    from polygraphy.comparator import Comparator, SnrCompareFunc

    references = list(dict.fromkeys(m.reference for m in chunk))
    runners = [
        _runner(_mark(reference, references), REFERENCE_RUNNER),
        _runner(_mark(candidate, [m.candidate for m in chunk]), CANDIDATE_RUNNER),
    ]
    errors: dict[str, list[float]] = {}
    # numpy warns on the statistics Polygraphy computes over masked (-inf) attention logits
    with quiet_polygraphy(), np.errstate(invalid="ignore", over="ignore"):
        stream = _counted(Comparator.run(runners, data_loader=feeds, streaming=True), on_feed)
        stream = Comparator.postprocess(
            stream, _spread([(m.candidate, m.reference) for m in chunk])
        )
        # Every SNR passes -inf: we rank, not judge (a NaN row is reported by us).
        compare = _agreeing_infinities(SnrCompareFunc(snr_threshold=-math.inf))
        results = Comparator.compare_accuracy(stream, compare_func=compare)
    for iteration in results[0][(REFERENCE_RUNNER, CANDIDATE_RUNNER)]:
        for name, result in iteration.items():
            errors.setdefault(name, []).append(_relative(getattr(result, "snr", None)))
    return errors


def _counted(stream: Iterable, on_feed: Callable[[], None] | None):
    """`stream` (one RunResults per feed), calling `on_feed` as each feed's results are used."""
    for single in stream:
        yield single
        if on_feed is not None:
            on_feed()


def _worst(values: Iterable[float]) -> float:
    """The largest value, NaN counting as infinite (a NaN upstream is the worst error)."""
    return max((math.inf if math.isnan(v) else v for v in values), default=0.0)


def layer_rows(
    candidate: onnx.ModelProto, matches: list[TensorMatch], errors: Mapping[str, float]
) -> list[LayerRow]:
    """One row per compared tensor, with the worst error reaching its node's inputs: one
    forward pass over the candidate's nodes; an uncompared tensor carries the worst error of
    its node's inputs, weights and graph inputs carry 0."""
    reach: dict[str, float] = {}
    node_input_error: dict[str, float] = {}
    for node in candidate.graph.node:
        incoming = _worst(reach.get(name, 0.0) for name in node.input if name)
        for out in node.output:
            reach[out] = errors.get(out, incoming)
            node_input_error[out] = incoming
    rows = []
    for m in matches:
        if m.candidate not in errors:
            continue
        error, incoming = errors[m.candidate], node_input_error[m.candidate]
        jump = error - incoming if math.isfinite(incoming) else math.nan
        rows.append(LayerRow(m.node, m.op, m.candidate, m.reference, m.how, m.dtype, error,
                             incoming, jump))  # fmt: skip
    return rows


def _rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


# ------------------------------------------------------------------------------ inputs


def make_feeds(
    model: onnx.ModelProto,
    inputs: str | None,
    *,
    batches: int,
    seed: int,
    val_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[list[dict[str, np.ndarray]], str]:
    """The feeds both graphs run on, made once (every chunk reuses them), and their
    description. `inputs` None: Polygraphy's DataLoader (seeded, uniform in `val_range`,
    batch 1 where the batch is dynamic); else a calibration-source spec (image folder,
    .npy/.npz, 'synthetic') for the model's single image input, preprocessed as calibration."""
    from axial_deploy.graph import SymbolicDimensionError, graph_input_dims, static_shape

    if batches < 1:
        raise LayerwiseError(f"batches must be >= 1, got {batches}")
    if inputs is not None:
        return _source_feeds(model, inputs, batches, seed)
    from polygraphy.common import TensorMetadata
    from polygraphy.comparator import DataLoader

    types = {info.name: info.type.tensor_type.elem_type for info in model.graph.input}
    metadata = TensorMetadata()
    for name, dims in graph_input_dims(model).items():
        try:
            shape = static_shape(dims, batch=1)
        except SymbolicDimensionError as error:
            raise LayerwiseError(
                f"graph input {name} has a dynamic {error}: pass --inputs with tensors of "
                "the size to compare at"
            ) from None
        dtype = onnx.helper.tensor_dtype_to_np_dtype(types[name])
        metadata.add(name, dtype=dtype, shape=shape)
    with quiet_polygraphy():
        loader = DataLoader(
            seed=seed, iterations=batches, input_metadata=metadata, val_range=tuple(val_range)
        )
        feeds = [{name: np.array(value) for name, value in feed.items()} for feed in loader]
    low, high = val_range
    return feeds, f"Polygraphy DataLoader (seed {seed}, uniform in [{low:g}, {high:g}])"


def _source_feeds(model: onnx.ModelProto, inputs: str, batches: int, seed: int):
    from axial_deploy.calibration.sources import open_source
    from axial_deploy.graph import graph_input_dims
    from axial_deploy.task import task_of

    dims = graph_input_dims(model)
    if len(dims) != 1:
        raise LayerwiseError(
            f"--inputs feeds one image input; this graph has {sorted(dims)}: leave --inputs "
            "out (Polygraphy's DataLoader feeds every input)"
        )
    (name, shape), = dims.items()  # fmt: skip
    source = open_source(inputs, tuple(shape), task=task_of(model), seed=seed, batch_size=1,
                         samples=batches)  # fmt: skip
    return [{name: batch} for batch in source.take(batches)], source.description


# ------------------------------------------------------------------------------ entry point


def layerwise_compare(
    reference_path: str | os.PathLike,
    candidate_path: str | os.PathLike,
    *,
    inputs: str | None = None,
    batches: int = 2,
    seed: int = 1,
    val_range: tuple[float, float] = (0.0, 1.0),
    threshold: float = DEFAULT_THRESHOLD,
    chunk_mb: float = DEFAULT_CHUNK_MB,
    progress: bool = False,
) -> LayerwiseReport:
    """Compare every tensor the candidate shares with the reference (see the module doc)."""
    from axial_deploy.artifacts import load_onnx

    reference = load_onnx(reference_path, LayerwiseError, "reference")
    candidate = load_onnx(candidate_path, LayerwiseError, "candidate")
    matches = match_tensors(reference, candidate)
    if not matches:
        raise LayerwiseError(
            f"{candidate_path} shares no intermediate tensor with {reference_path} (by name, "
            "node name, Cast or Q/DQ): compare graphs made from the same export"
        )
    feeds, description = make_feeds(reference, inputs, batches=batches, seed=seed,
                                    val_range=val_range)  # fmt: skip
    batch = max(int(np.shape(next(iter(feeds[0].values())))[0] or 1), 1)
    chunks = plan_chunks(matches, _tensor_bytes(reference, batch), int(chunk_mb * 2**20))
    report = LayerwiseReport(str(reference_path), str(candidate_path), description, len(feeds),
                             threshold, runs=len(chunks))  # fmt: skip
    per_feed: dict[str, list[float]] = {}
    from axial_deploy.progress import progress_bar

    what = f"layer-wise, {len(matches)} tensors in {len(chunks)} run(s)"
    with progress_bar(total=len(chunks) * len(feeds), desc=what, unit="feed", disable=not progress,
              leave=False) as bar:  # fmt: skip
        for chunk in chunks:
            per_feed.update(run_chunk(reference, candidate, chunk, feeds, bar.update))
    errors = {name: _rms(values) for name, values in per_feed.items()}
    report.rows = layer_rows(candidate, matches, errors)
    report.skipped = {m.candidate: "not compared (shapes differ or no output)"
                      for m in matches if m.candidate not in errors}  # fmt: skip
    compared, types = {m.reference for m in matches}, _float_types(reference)
    report.unmatched = [
        out
        for node in reference.graph.node
        if node.op_type != "Constant"
        for out in node.output
        if out and out not in compared and _is_float(types, out)
    ]
    return report


def layerwise_command(reference: str | os.PathLike, candidate: str | os.PathLike) -> str:
    """The shell command that runs this comparison (the deploy report names it)."""
    import shlex

    return shlex.join(["axial-deploy", "compare", "--layerwise", str(reference), str(candidate)])
