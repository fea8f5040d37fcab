"""The rewrite stage: locate -> probe -> verify -> replace, from a model or from files."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from axial_deploy.artifacts import atomic_output, load_onnx
from axial_deploy.graph import graph_input_dims, is_static, label
from axial_deploy.op.spec import OP_TYPE

from .locate import (
    Candidate,
    GraphIndex,
    constant_values,
    locate_layers,
    region_nodes,
    static_input_shapes,
    tensor_shapes,
)
from .pieces import PieceExtractor
from .probe import Extracted, extract_layer
from .records import LayerRecord, Refusal, RewriteError, RewriteReport
from .replace import replace_layers
from .verify import check_graph, check_reproduces, verify_layer

# Lines of a layer that probing and verification run (lines are independent). Probing packs
# several channels into each line, so a few lines suffice. Verification runs random inputs on
# 8 lines: every line holds every channel, head and query/key offset of the layer (the tables
# are the same on every line), so more lines repeat the same checks on other numbers; 32 lines
# double the rewrite time of Axial-DeepLab-L (--verify-lines 32: 102 s instead of 52 s).
PROBE_LINES = 8
VERIFY_LINES = 8


def rewrite(
    model: onnx.ModelProto,
    source: str = "<model>",
    probe_shape: tuple[int, ...] | None = None,
    check_shapes: list[tuple[int, ...]] | None = None,
    verify_lines: int = VERIFY_LINES,
) -> tuple[onnx.ModelProto, RewriteReport]:
    """Rewrite every recognized axial-attention layer; returns the new model and the report.

    A graph with symbolic height / width is probed at `probe_shape` (default: DEFAULT_PROBE_HW)
    and keeps its dynamic axes; the whole rewritten graph is then checked against the original
    at `check_shapes` (default: the probe shape and about 3/4 of its height and width). Each
    layer is verified on `verify_lines` random lines (all when it has fewer)."""
    from axial_deploy.op.ort import check_known_ops  # imports onnxruntime

    start = time.perf_counter()
    # probing runs pieces of the graph in ONNX Runtime: an op it lacks is refused up front
    check_known_ops(model, source, RewriteError)
    index = GraphIndex(model.graph)
    already = sum(1 for node in model.graph.node if node.op_type == OP_TYPE)
    records, candidates = locate_layers(index)
    input_shapes, shape_from = probe_input_shapes(model, probe_shape)
    accepted = (
        probe_candidates(model, index, candidates, input_shapes, verify_lines) if candidates else []
    )
    result = replace_layers(model, accepted)
    report = RewriteReport(source, records, already)
    report.probe_shape, report.probe_shape_from = next(iter(input_shapes.values())), shape_from
    if accepted and has_symbolic_sizes(model):
        shapes = check_shapes or [report.probe_shape, smaller_shape(report.probe_shape)]
        check_sizes_allowed(report, shapes)
        report.checks = [check_graph(model, result, shape) for shape in shapes]
    report.seconds = time.perf_counter() - start
    return result, report


DEFAULT_PROBE_HW = (513, 513)  # lines long enough for span-65 windows at output stride 16


def has_symbolic_sizes(model: onnx.ModelProto) -> bool:
    """A graph input with a symbolic axis other than the batch."""
    return any(not is_static(d) for dims in graph_input_dims(model).values() for d in dims[1:])


def probe_input_shapes(
    model: onnx.ModelProto, probe_shape: tuple[int, ...] | None
) -> tuple[dict[str, tuple[int, ...]], str]:
    """The graph inputs' static shapes probing runs at, and where they came from."""
    if probe_shape is None and not has_symbolic_sizes(model):
        return static_input_shapes(model), "the graph's input shape"
    inputs = graph_input_dims(model)
    if len(inputs) != 1:
        raise RewriteError("probing at a given shape needs a graph with exactly one input")
    [(name, dims)] = inputs.items()
    how = "--probe-shape"
    if probe_shape is None:
        if len(dims) != 4 or not is_static(dims[1]):
            raise RewriteError(
                f"graph input {name!r} {dims} has symbolic sizes: give --probe-shape NxCxHxW"
            )
        probe_shape = (1, int(dims[1]), *DEFAULT_PROBE_HW)
        how = "default: the graph's height and width are symbolic; set it with --probe-shape"
    fits = len(dims) == len(probe_shape) and all(
        not is_static(d) or d == size for d, size in zip(dims, probe_shape, strict=False)
    )
    if not fits:
        shape = "x".join(map(str, probe_shape))
        raise RewriteError(
            f"--probe-shape {shape} does not fit graph input {name!r} {dims}: give the fixed "
            "axes their sizes"
        )
    return {name: tuple(probe_shape)}, how


def smaller_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A second check size: about 3/4 of the height and width (odd, as the zoo's sizes)."""
    return (*shape[:-2], *(max(3, (3 * size // 4) | 1) for size in shape[-2:]))


def check_sizes_allowed(report: RewriteReport, shapes: list[tuple[int, ...]]) -> None:
    """Refuse a check size larger than the probe where a layer is exact only up to its probed
    line length (a global table that had not reached its clamped ends)."""
    limited = [layer for layer in report.rewritten if layer.line_limit]
    probe = report.probe_shape
    for shape in shapes:
        if limited and any(a > b for a, b in zip(shape[-2:], probe[-2:], strict=True)):
            raise RewriteError(
                f"{len(limited)} layer(s) (e.g. {limited[0].softmax}) are exact only on lines up "
                f"to {limited[0].line_limit} as probed at {'x'.join(map(str, probe))}; "
                f"{'x'.join(map(str, shape))} is larger: give --probe-shape at least that large"
            )


@dataclass(frozen=True)
class Probing:
    """What probing reads from the whole model: its pieces, its index, its constants."""

    extractor: PieceExtractor
    index: GraphIndex
    values: Callable[[str], np.ndarray]
    verify_lines: int = VERIFY_LINES


def probe_candidates(
    model: onnx.ModelProto,
    index: GraphIndex,
    candidates: list[Candidate],
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    verify_lines: int = VERIFY_LINES,
) -> list[tuple[LayerRecord, Extracted]]:
    """The candidates whose extracted operator reproduces the layer, with what was extracted;
    the others' records say why they are left intact."""
    names = sorted({candidate.record.input for candidate in candidates})
    shapes = tensor_shapes(model, names, input_shapes)
    probing = Probing(PieceExtractor(model), index, constant_values(model), verify_lines)
    accepted = []
    for candidate in candidates:
        layer = probe_candidate(probing, candidate, shapes[candidate.record.input])
        if layer is not None:
            accepted.append((candidate.record, layer))
    return accepted


def probe_candidate(
    probing: Probing, candidate: Candidate, x_shape: tuple[int, ...]
) -> Extracted | None:
    """One layer probed and verified, its record filled in; None (and the reason) when refused."""
    record = candidate.record
    if len(x_shape) != 4:
        record.reason = f"layer input {record.input} is rank {len(x_shape)}, not NCHW"
        return None
    try:
        layer, info, error = _probe_and_verify(probing, candidate, x_shape)
        record.max_rel_err = error
        check_reproduces(error)
    except Refusal as refusal:
        record.reason = str(refusal)
        return None
    record.attributes, record.line_length = layer.attributes, info["line_length"]
    record.line_limit = info["line_limit"]
    record.table_length = layer.rel_q.shape[-1]
    record.replaced_nodes = [
        label(node) for node in region_nodes(probing.index, record.input, record.output)
    ]
    return layer


def _probe_and_verify(
    probing: Probing, candidate: Candidate, x_shape: tuple[int, ...]
) -> tuple[Extracted, dict, float]:
    """(layer, info (line length and limit), max rel err). Lines are independent: probe a few
    of them (fast, small) when the graph computes its reshapes from the input's shape; graphs
    with baked-in sizes get the full layer. ORT failures on the last try become a Refusal:
    report, never guess."""
    x_name, y_name = candidate.record.input, candidate.record.output
    extractor = probing.extractor

    def attempt(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[Extracted, dict, float]:
        probe_shape, verify_shape = shapes
        layer, info = extract_layer(
            extractor,
            probing.index,
            candidate.conv,
            x_name,
            probe_shape,
            y_name,
            candidate.softmax,
            probing.values,
        )
        error = verify_layer(extractor, x_name, verify_shape, y_name, layer)
        return layer, info, error

    def lines(count: int) -> tuple[int, ...]:
        return (1, min(x_shape[1], count), *x_shape[2:])

    few_lines = (lines(PROBE_LINES), lines(probing.verify_lines))
    full = (tuple(x_shape), tuple(x_shape))
    attempts = [few_lines, full] if few_lines != full else [full]
    for shapes in attempts[:-1]:
        try:
            return attempt(shapes)
        except Refusal:
            raise
        except Exception:  # e.g. sizes baked into the graph's reshapes: try the full layer
            pass
    try:
        return attempt(attempts[-1])
    except Refusal:
        raise
    except Exception as failure:  # ORT could not run a piece
        raise Refusal(f"probing failed: {type(failure).__name__}: {failure}") from failure


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    return load_onnx(path, RewriteError)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write the model atomically (see artifacts.atomic_output)."""
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)


def rewrite_file(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    report_path: str | os.PathLike | None = None,
    strict: bool = False,
    probe_shape: tuple[int, ...] | None = None,
    check_shapes: list[tuple[int, ...]] | None = None,
    verify_lines: int = VERIFY_LINES,
) -> RewriteReport:
    """Rewrite `source` into `target` (and the JSON report). With `strict`, fail (writing
    nothing) when any candidate layer is left intact. A graph with symbolic sizes that fails
    a whole-graph check is never written."""
    model = load_model(source)
    result, report = rewrite(model, str(source), probe_shape, check_shapes, verify_lines)
    if strict and report.left:
        raise RewriteError(strict_failure(report))
    failed = [check for check in report.checks if not check["passed"]]
    if failed:
        raise RewriteError(
            f"the rewritten graph differs from {source} at {failed[0]['shape']} (max rel err "
            f"{failed[0]['max_rel_err']:.1e} >= {failed[0]['rtol']:.0e}) though each layer "
            "verified at the probe shape: nothing written"
        )
    if not report.layers and not report.already_rewritten:
        raise RewriteError(
            f"{source} holds no attention (no Softmax and no AxialAttention node): nothing to "
            "rewrite. Is this an Axial-DeepLab / Axial-ResNet export?"
        )
    save_model(result, target)
    if report_path is not None:
        with atomic_output(report_path) as tmp:
            tmp.write_text(report.to_json())
    return report


def strict_failure(report: RewriteReport) -> str:
    """The one-line --strict error: plainly "nothing rewritten" when so, reasons with counts."""
    counts: dict[str, int] = {}
    for layer in report.left:
        counts[layer.reason] = counts.get(layer.reason, 0) + 1
    reasons = "; ".join(f"{n} x {reason}" if n > 1 else reason for reason, n in counts.items())
    what = "nothing rewritten, " if not report.rewritten else ""
    return f"--strict: {what}{len(report.left)} layer(s) left intact: {reasons}"
