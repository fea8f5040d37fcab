"""Activation ranges of an FP32 graph, measured in ONNX Runtime on calibration batches.

Every float tensor a node computes (and the graph input) becomes an extra graph output of an
in-memory copy of the model; AxialAttention nodes run through ONNX Runtime's custom op
(`ort_ops.create_session`: the native CPU op, or the reference op without its library). One pass
records min / max / max |x| per tensor; the histogram methods add a second pass that bins |x|
into 2048 bins over [0, max |x|] (the range is known after the first pass, so every batch lands
in the same bins); when all activations of all batches fit in keep_budget() (a quarter of the
free memory) the second pass reuses them instead of running the model again. Histograms are
counted by the native library (build/lib/libaxial_calibration.so, `make cpu-libs`) in one pass,
or by numpy without it: the same counts either way.

Reproducible: the same model and inputs give the same bytes on one machine whatever the thread
counts (integer histograms, per-element ONNX Runtime results that do not depend on its thread
count, a native op whose every output is computed by one thread in a fixed order); another
ONNX Runtime build, CPU or AxialAttention body can move a float by an ulp and a threshold by a
bin (docs/design/precision.md, "Reproducible INT8").

The threshold `amax` of a tensor, from which its INT8 scale is amax / 127 (symmetric, zero
point 0), comes from one of three methods:

- minmax: amax = max |x|. Never clips, wastes resolution on rare outliers.
- percentile: amax = the given percentile (default 99.99) of |x|.
- entropy: the threshold minimizing the KL divergence between the clipped FP32 distribution
  and its 128-level quantization, searched over 128..2048 bins (the method TensorRT's entropy
  calibrator describes: Migacz, "8-bit Inference with TensorRT", GTC 2017). All 1,921
  candidates are screened at once, the near-best recomputed exactly (see entropy_threshold).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

METHODS = ("entropy", "percentile", "minmax")
HISTOGRAM_BINS = 2048
QUANTIZED_LEVELS = 128  # |x| maps onto 0..127: symmetric INT8
DEFAULT_PERCENTILE = 99.99
Q_FLOOR = 1e-12  # floor of Q's normalized bins in the KL (see _candidate_kl)
# Screened KL values within this (relative to 1 + |min|) of the minimum are recomputed bin by
# bin; float64 prefix sums stay ~1e-12 from the bin-by-bin values.
SCREEN_TOLERANCE = 1e-7
CHUNK_BYTES = 2 << 30  # tensors probed by one session: their outputs of one batch, at most
KEEP_BYTES = 1 << 30  # activations kept for the histogram pass: at least this much, and
KEEP_FRACTION = 0.25  # up to this fraction of the memory available when calibration starts


def keep_budget() -> int:
    """Bytes of activations the histogram pass may keep from the first pass instead of running
    the model again: a quarter of the available memory (Linux MemAvailable), at least
    KEEP_BYTES. Keeping 16 batches of a 129x129 model (~1.8 GB) halves the model runs."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return max(KEEP_BYTES, int(int(line.split()[1]) * 1024 * KEEP_FRACTION))
    except OSError:
        pass
    return KEEP_BYTES


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


def _candidate_kl(counts: np.ndarray, tail: np.ndarray, i: int) -> float:
    """KL divergence of candidate `i` (see entropy_threshold), computed bin by bin; inf when
    the first i bins are empty. The reference arithmetic: ties between candidates are decided on
    these values, so that the search picks the same threshold however it screens candidates."""
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
        return np.inf
    p /= p_sum
    q /= q_sum
    mask = p > 0
    # Q is zero only where the source bin is empty; P can be non-zero there only in the
    # last bin (the folded outliers): a small floor keeps that candidate finite but bad.
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], Q_FLOOR))))


@functools.cache
def _group_index(bins: int) -> tuple[np.ndarray, int]:
    """Where the groups of every candidate live in _screen_kl's (first bin, size) table: for
    candidates i = QUANTIZED_LEVELS..bins, group g covers bins [g*i//128, (g+1)*i//128) (the
    integer formula of _candidate_kl). Returns the [candidates, 128] flat indices
    first * width + size into a [bins, width] table, and width (the largest size + 1)."""
    candidates = np.arange(QUANTIZED_LEVELS, bins + 1)
    levels = np.arange(QUANTIZED_LEVELS + 1)
    edges = (levels[None, :] * candidates[:, None]) // QUANTIZED_LEVELS
    first, size = edges[:, :-1], np.diff(edges, axis=1)
    width = int(size.max()) + 1
    index = first * width + size
    index.setflags(write=False)
    return index, width


def _screen_kl(counts: np.ndarray) -> np.ndarray:
    """KL of every candidate i = QUANTIZED_LEVELS..bins at once (inf where the first i bins
    are empty), from prefix sums: P's and Q's sums, sum P log P and sum P log Q reduce to
    cumulative counts, and a group's term (its count times the log of its average over its
    non-empty bins) depends only on its first bin and its size, so it is computed once per
    (first bin, size) pair (bins x 17 logs instead of candidates x 128) and gathered. Same
    formula as _candidate_kl, other rounding (see entropy_threshold)."""
    bins = len(counts)
    index, width = _group_index(bins)
    candidates = np.arange(QUANTIZED_LEVELS, bins + 1)
    positive = counts > 0
    logs = np.zeros(bins)
    np.log(counts, out=logs, where=positive)
    cum = np.concatenate([[0.0], np.cumsum(counts)])  # cum[k] = sum(counts[:k])
    cum_nonzero = np.concatenate([[0.0], np.cumsum(positive, dtype=np.float64)])
    cum_clogc = np.concatenate([[0.0], np.cumsum(counts * logs)])
    total = cum[-1]

    # Every (first bin, size): count * log(count / non-empty bins), 0 for empty groups.
    first = np.arange(bins)[:, None]
    stop = np.minimum(first + np.arange(width)[None, :], bins)
    group = cum[stop] - cum[first]
    filled = cum_nonzero[stop] - cum_nonzero[first]
    has = filled > 0
    log_avg = np.zeros_like(group)
    np.log(np.divide(group, filled, out=np.ones_like(group), where=has), out=log_avg, where=has)
    log_avg = log_avg.ravel()
    sum_clog_avg = (group.ravel() * log_avg)[index].sum(axis=1)  # over each candidate's groups

    last = candidates - 1
    c_last = counts[last]
    log_avg_last = log_avg[index[:, -1]]
    p_last = total - cum[last]  # counts[i-1] + everything beyond: the folded last bin
    q_sum = cum[candidates]
    sum_clog_avg -= c_last * log_avg_last  # bins b < i-1 only: bin i-1 is P's folded bin
    with np.errstate(divide="ignore", invalid="ignore"):
        q_last = np.maximum(np.exp(log_avg_last) * positive[last] / q_sum, Q_FLOOR)
        p_log_p = cum_clogc[last] + np.where(p_last > 0, p_last * np.log(p_last), 0.0)
        p_log_q = sum_clog_avg - cum[last] * np.log(q_sum)
        p_log_q += np.where(p_last > 0, p_last * np.log(q_last), 0.0)
        kl = (p_log_p - p_log_q) / total - np.log(total)
    return np.where(q_sum > 0, kl, np.inf)


def entropy_threshold(histogram: np.ndarray, bin_width: float) -> float:
    """The KL-divergence-minimizing clipping threshold of a histogram of |x| (see module doc).

    For each candidate i (128..bins): P = the first i bins with every count beyond folded into
    bin i-1; Q = the same i bins merged into 128 equal groups, each group's count spread evenly
    over its non-empty bins (empty bins stay empty, as P's do); the threshold of the best i (the
    first one, on ties) is the upper edge of its last bin. Feed it magnitudes without exact
    zeros (see collect_ranges).

    The search screens all candidates at once (_screen_kl, vectorized), then recomputes the
    ones within SCREEN_TOLERANCE of the screened minimum with the bin-by-bin arithmetic
    (_candidate_kl) and takes the first minimum among them: the screen's rounding differs from
    the bin-by-bin one by far less than the tolerance, so the pick is the one a loop over every
    candidate with _candidate_kl makes (tests/data/entropy_thresholds.npz pins it)."""
    counts = histogram.astype(np.float64)
    bins = len(counts)
    if counts.sum() == 0 or bins < QUANTIZED_LEVELS:
        return 0.0 if counts.sum() == 0 else bins * bin_width
    screened = _screen_kl(counts)
    best = screened.min()
    if not np.isfinite(best):
        return bins * bin_width  # every candidate empty: nothing to choose
    near = np.flatnonzero(screened <= best + SCREEN_TOLERANCE * (1.0 + abs(best)))
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = sum(counts[i:])
    best_i, best_kl = bins, np.inf
    for index in near:
        i = QUANTIZED_LEVELS + int(index)
        kl = _candidate_kl(counts, tail, i)
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i * bin_width


@functools.cache
def _histogram_library(path: Path) -> ctypes.CDLL | None:
    """The native histogram library at `path` (opened and ABI-checked by `native.load`), or
    None when it is missing, unloadable or stale (then numpy computes the same counts, slower)."""
    from axial_deploy.native import CALIBRATION, NativeLibraryError, load

    try:
        lib = load(CALIBRATION, path)
    except NativeLibraryError:
        return None
    lib.axial_calibration_abs_histogram.restype = ctypes.c_int32
    lib.axial_calibration_abs_histogram.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_double,
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_int32,
    ]
    return lib


def histogram_library() -> ctypes.CDLL | None:
    """libaxial_calibration.so ($AXIAL_DEPLOY_CALIBRATION_LIB, else build/lib of the repository,
    built by `make cpu-libs`), or None: calibration then bins with numpy (same counts)."""
    from axial_deploy.native import CALIBRATION, library_path

    return _histogram_library(library_path(CALIBRATION))


def abs_histogram(value: np.ndarray, top: float, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Counts of |x| over the non-zero elements x of `value`, in `bins` equal bins over
    [0, top]: exactly np.histogram(|value[value != 0]|, bins, range=(0, top)) (float32 data),
    in one native pass when the calibration library is built."""
    counts = np.zeros(bins, np.int64)
    lib = histogram_library() if value.dtype == np.float32 else None
    if lib is None:
        magnitudes = np.abs(value[value != 0])
        counts += np.histogram(magnitudes, bins=bins, range=(0.0, top))[0]
        return counts
    value = np.ascontiguousarray(value)
    # numpy's own edges for float32 data over (0.0, top): the native code corrects its bin
    # estimate against these, as np.histogram does.
    edges = np.linspace(0.0, top, bins + 1, dtype=np.float32)
    status = lib.axial_calibration_abs_histogram(
        value.ctypes.data, value.size, float(top), edges.ctypes.data, bins, counts.ctypes.data, 0
    )
    if status != 0:
        raise MemoryError(f"native calibration histogram failed (status {status})")
    return counts


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
    from axial_deploy.op.ort import create_session
    from axial_deploy.progress import progress_bar

    session = create_session(_probe_model(model, names))

    def runs(text: str):
        desc = text + label
        for batch in progress_bar(
            batches, desc=desc, unit="batch", disable=not progress, leave=False
        ):
            yield session.run(names, {input_name: batch})

    low = {name: np.inf for name in names}
    high = {name: -np.inf for name in names}
    kept: list[list[np.ndarray]] | None = [] if method != "minmax" else None
    budget, kept_bytes = keep_budget(), 0
    for values in runs("calibration: ranges"):
        if kept is not None:  # small models: keep the activations for the histogram pass
            kept.append(values)
            kept_bytes += sum(v.nbytes for v in values)
            if kept_bytes > budget:
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
                histograms[name] += abs_histogram(value, top)
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


def weight_scales(weight: np.ndarray, axis: int = 0, max_value: float = 127.0) -> np.ndarray:
    """Per-channel symmetric scales of a weight: max |w| over all axes but `axis`, divided by
    the quantized type's largest value (INT8 127, FP8 E4M3 448). An all-zero channel gets
    scale 1 (any scale represents zeros exactly)."""
    moved = np.moveaxis(np.abs(weight.astype(np.float32)), axis, 0)
    amax = moved.reshape(moved.shape[0], -1).max(axis=1)
    return np.where(amax > 0, amax / max_value, 1.0).astype(np.float32)
