"""Activation ranges of an FP32 graph, measured in ONNX Runtime on calibration batches.

Every float tensor a node computes (and the graph input) becomes an extra graph output of an
in-memory copy of the model; AxialAttention nodes run through the reference op
(`ort_ops.create_session`). One pass records min / max / max |x| per tensor; the histogram
methods add a second pass that bins |x| into 2048 bins over [0, max |x|] (the range is known
after the first pass, so every batch lands in the same bins); when all activations of all
batches fit in KEEP_BYTES the second pass reuses them instead of running the model again.

The threshold `amax` of a tensor, from which its INT8 scale is amax / 127 (symmetric, zero
point 0), comes from one of three methods:

- minmax: amax = max |x|. Never clips, wastes resolution on rare outliers.
- percentile: amax = the given percentile (default 99.99) of |x|.
- entropy: the threshold minimizing the KL divergence between the clipped FP32 distribution
  and its 128-level quantization, searched over 128..2048 bins (the method TensorRT's entropy
  calibrator describes: Migacz, "8-bit Inference with TensorRT", GTC 2017).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

METHODS = ("entropy", "percentile", "minmax")
HISTOGRAM_BINS = 2048
QUANTIZED_LEVELS = 128  # |x| maps onto 0..127: symmetric INT8
DEFAULT_PERCENTILE = 99.99
KEEP_BYTES = 1 << 30  # activations of the first pass kept for the second up to this size
CHUNK_BYTES = 2 << 30  # tensors probed by one session: their outputs of one batch, at most


@dataclass
class TensorRange:
    """What calibration measured of one tensor; `amax` is the threshold of the chosen method."""

    name: str
    min: float
    max: float
    absmax: float
    amax: float = 0.0

    @property
    def scale(self) -> float:
        """Symmetric INT8 scale amax / 127 (never zero: a dead tensor gets a tiny one)."""
        return max(self.amax, 1e-8) / 127.0


def float_tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor the graph types (graph I/O, value_info, initializers), after
    ONNX shape inference; tensors it cannot type are absent."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # custom ops or odd graphs: fall back to what the graph already states
        inferred = model
    graph = inferred.graph
    types = {
        info.name: info.type.tensor_type.elem_type
        for info in [*graph.input, *graph.value_info, *graph.output]
        if info.type.HasField("tensor_type")
    }
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def activation_names(model: onnx.ModelProto) -> list[str]:
    """Float tensors that are graph inputs or outputs of (non-Constant) nodes, in graph order."""
    types = float_tensor_types(model)
    initializers = {init.name for init in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    for node in model.graph.node:
        if node.op_type != "Constant":
            names.extend(name for name in node.output if name)
    return [name for name in dict.fromkeys(names) if types.get(name) in FLOAT_TYPES]


def _probe_model(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are `names` (all float32 in an FP32 graph)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names
    )
    return probe


def entropy_threshold(histogram: np.ndarray, bin_width: float) -> float:
    """The KL-divergence-minimizing clipping threshold of a histogram of |x| (see module doc).

    For each candidate i (128..bins): P = the first i bins with every count beyond folded into
    bin i-1; Q = the same i bins merged into 128 equal groups, each group's count spread evenly
    over its non-empty bins (empty bins stay empty, as P's do); the threshold of the best i is
    the upper edge of its last bin. Feed it magnitudes without exact zeros (see
    collect_ranges)."""
    counts = histogram.astype(np.float64)
    bins = len(counts)
    if counts.sum() == 0:
        return 0.0
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = sum(counts[i:])
    best_i, best_kl = bins, np.inf
    for i in range(QUANTIZED_LEVELS, bins + 1):
        p = counts[:i].copy()
        p[i - 1] += tail[i]
        # Group boundaries: group g covers bins [starts[g], starts[g+1]).
        starts = (np.arange(QUANTIZED_LEVELS) * i) // QUANTIZED_LEVELS
        sizes = np.diff(np.append(starts, i))
        source = counts[:i]
        nonzero = (source > 0).astype(np.float64)
        group_sum = np.add.reduceat(source, starts)
        group_nonzero = np.add.reduceat(nonzero, starts)
        per_bin = np.divide(
            group_sum, group_nonzero, out=np.zeros_like(group_sum), where=group_nonzero > 0
        )
        q = np.repeat(per_bin, sizes) * nonzero
        p_sum, q_sum = p.sum(), q.sum()
        if q_sum == 0:
            continue
        p /= p_sum
        q /= q_sum
        mask = p > 0
        # Q is zero only where the source bin is empty; P can be non-zero there only in the
        # last bin (the folded outliers): a small floor keeps that candidate finite but bad.
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i * bin_width


def percentile_threshold(histogram: np.ndarray, bin_width: float, percentile: float) -> float:
    """The upper edge of the bin where the cumulative count reaches `percentile` percent."""
    cumulative = np.cumsum(histogram, dtype=np.float64)
    if cumulative[-1] == 0:
        return 0.0
    index = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0))
    return (min(index, len(histogram) - 1) + 1) * bin_width


def collect_ranges(
    model: onnx.ModelProto,
    batches: Iterable[np.ndarray],
    *,
    method: str = "entropy",
    percentile: float = DEFAULT_PERCENTILE,
    names: Sequence[str] | None = None,
    progress: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, TensorRange]:
    """Run the FP32 `model` on `batches` (arrays for its single input) and measure every
    activation tensor (or only `names`); returns {tensor: TensorRange} with `amax` set by
    `method` ("entropy" | "percentile" | "minmax"). Tensors are probed in groups whose
    outputs for one batch fit in `chunk_bytes` (one model run per batch and group)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
    inputs = [i.name for i in model.graph.input if i.name not in _initializer_names(model)]
    if len(inputs) != 1:
        raise ValueError(f"calibration supports single-input models, this one has {inputs}")
    batches = list(batches)
    if not batches:
        raise ValueError("calibration needs at least one batch of inputs")
    names = list(names) if names is not None else activation_names(model)
    ranges: dict[str, TensorRange] = {}
    chunks = tensor_chunks(model, names, len(batches[0]), chunk_bytes)
    for number, chunk in enumerate(chunks, start=1):
        label = f" ({number}/{len(chunks)})" if len(chunks) > 1 else ""
        ranges.update(
            _collect_chunk(model, chunk, inputs[0], batches, method, percentile, progress, label)
        )
    return ranges


def tensor_chunks(
    model: onnx.ModelProto, names: Sequence[str], batch: int, budget: int = CHUNK_BYTES
) -> list[list[str]]:
    """`names` split into groups whose float32 outputs for one batch fit in `budget` bytes
    (sizes from shape inference; unknown dims count as 1), so that calibrating a large model
    at full resolution never holds every activation at once."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        inferred = model.graph
    sizes = {}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = info.type.tensor_type.shape.dim
        count = 1
        for position, dim in enumerate(dims):
            count *= dim.dim_value if dim.HasField("dim_value") else (batch if position == 0 else 1)
        sizes[info.name] = 4 * count
    chunks: list[list[str]] = [[]]
    used = 0
    for name in names:
        size = sizes.get(name, 0)
        if chunks[-1] and used + size > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += size
    return chunks


def _collect_chunk(model, names, input_name, batches, method, percentile, progress, label):
    """collect_ranges for one group of tensors (one ONNX Runtime session)."""
    from tqdm import tqdm

    from axial_deploy.ort_ops import create_session

    session = create_session(_probe_model(model, names))

    def runs(text: str):
        desc = text + label
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
            yield session.run(names, {input_name: batch})

    low = {name: np.inf for name in names}
    high = {name: -np.inf for name in names}
    kept: list[list[np.ndarray]] | None = [] if method != "minmax" else None
    for values in runs("calibration: ranges"):
        if kept is not None:  # small models: keep the activations for the histogram pass
            kept.append(values)
            if sum(v.nbytes for run in kept for v in run) > KEEP_BYTES:
                kept = None
        for name, value in zip(names, values, strict=True):
            if value.size:
                low[name] = min(low[name], float(value.min()))
                high[name] = max(high[name], float(value.max()))
    ranges = {}
    for name in names:
        lo, hi = (low[name], high[name]) if np.isfinite(low[name]) else (0.0, 0.0)
        absmax = max(abs(lo), abs(hi))
        ranges[name] = TensorRange(name, lo, hi, absmax, absmax)
    if method == "minmax":
        return ranges

    histograms = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in names}
    second_pass = kept if kept is not None else runs(f"calibration: {method} histograms")
    for values in second_pass:
        for name, value in zip(names, values, strict=True):
            top = ranges[name].absmax
            if top > 0:
                # Exact zeros (half of every ReLU output) quantize exactly at any threshold;
                # left in, their spike in bin 0 would drag the KL search to tiny thresholds.
                magnitudes = np.abs(value[value != 0])
                counts, _ = np.histogram(magnitudes, bins=HISTOGRAM_BINS, range=(0.0, top))
                histograms[name] += counts
    for name in names:
        width = ranges[name].absmax / HISTOGRAM_BINS
        if method == "entropy":
            amax = entropy_threshold(histograms[name], width)
        else:
            amax = percentile_threshold(histograms[name], width, percentile)
        ranges[name].amax = min(amax, ranges[name].absmax)
    return ranges


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    return {init.name for init in model.graph.initializer}


def weight_scales(weight: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-channel symmetric INT8 scales of a weight: max |w| over all axes but `axis`, / 127.
    An all-zero channel gets scale 1 (any scale represents zeros exactly)."""
    moved = np.moveaxis(np.abs(weight.astype(np.float32)), axis, 0)
    amax = moved.reshape(moved.shape[0], -1).max(axis=1)
    return np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
