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
from axial_deploy.graph import label
from axial_deploy.op_spec import OP_TYPE

from .locate import (
    Candidate,
    GraphIndex,
    constant_values,
    locate_layers,
    region_nodes,
    tensor_shapes,
)
from .pieces import PieceExtractor
from .probe import Extracted, extract_layer
from .records import LayerRecord, Refusal, RewriteError, RewriteReport
from .replace import replace_layers
from .verify import check_reproduces, verify_layer

PROBE_LINES = 32  # lines of a layer that probing and verification run (they are independent)


def rewrite(
    model: onnx.ModelProto, source: str = "<model>"
) -> tuple[onnx.ModelProto, RewriteReport]:
    """Rewrite every recognized axial-attention layer; returns the new model and the report."""
    start = time.perf_counter()
    index = GraphIndex(model.graph)
    already = sum(1 for node in model.graph.node if node.op_type == OP_TYPE)
    records, candidates = locate_layers(index)
    accepted = probe_candidates(model, index, candidates) if candidates else []
    result = replace_layers(model, accepted)
    report = RewriteReport(source, records, already, time.perf_counter() - start)
    return result, report


@dataclass(frozen=True)
class Probing:
    """What probing reads from the whole model: its pieces, its index, its constants."""

    extractor: PieceExtractor
    index: GraphIndex
    values: Callable[[str], np.ndarray]


def probe_candidates(
    model: onnx.ModelProto, index: GraphIndex, candidates: list[Candidate]
) -> list[tuple[LayerRecord, Extracted]]:
    """The candidates whose extracted operator reproduces the layer, with what was extracted;
    the others' records say why they are left intact."""
    shapes = tensor_shapes(model, sorted({candidate.record.input for candidate in candidates}))
    probing = Probing(PieceExtractor(model), index, constant_values(model))
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
        layer, line_length, error = _probe_and_verify(probing, candidate, x_shape)
        record.max_rel_err = error
        check_reproduces(error)
    except Refusal as refusal:
        record.reason = str(refusal)
        return None
    record.axis, record.num_heads = layer.axis, layer.num_heads
    record.key_depth, record.value_depth = layer.key_depth, layer.value_depth
    record.span, record.line_length = layer.span, line_length
    record.table_length = layer.rel_q.shape[-1]
    record.replaced_nodes = [
        label(node) for node in region_nodes(probing.index, record.input, record.output)
    ]
    return layer


def _probe_and_verify(
    probing: Probing, candidate: Candidate, x_shape: tuple[int, ...]
) -> tuple[Extracted, int, float]:
    """(layer, line length, max rel err). Lines are independent: probe a few of them (fast,
    small) when the graph computes its reshapes from the input's shape; graphs with baked-in
    sizes get the full layer. ORT failures on the last try become a Refusal: report, never
    guess."""
    x_name, y_name = candidate.record.input, candidate.record.output
    extractor = probing.extractor

    def attempt(shape: tuple[int, ...]) -> tuple[Extracted, int, float]:
        layer, info = extract_layer(
            extractor,
            probing.index,
            candidate.conv,
            x_name,
            shape,
            y_name,
            candidate.softmax,
            probing.values,
        )
        error = verify_layer(extractor, x_name, shape, y_name, layer)
        return layer, info["line_length"], error

    few_lines = (1, min(x_shape[1], PROBE_LINES), *x_shape[2:])
    attempts = [few_lines, x_shape] if few_lines != tuple(x_shape) else [x_shape]
    for shape in attempts[:-1]:
        try:
            return attempt(shape)
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
) -> RewriteReport:
    """Rewrite `source` into `target` (and the JSON report). With `strict`, fail (writing
    nothing) when any candidate layer is left intact."""
    model = load_model(source)
    result, report = rewrite(model, str(source))
    if strict and report.left:
        raise RewriteError(strict_failure(report))
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
