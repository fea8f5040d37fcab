"""Latency statistics, throughput and per-layer time tables attributed to model blocks.

Pure functions over timing series (tested exactly on synthetic data) plus the loop that
produces the series from any `runtime.Engine`, and a `trt.IProfiler` collecting per-layer times
on TensorRT engines.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

# The rewriter names each fused node `axial_attention_<n>` (see rewrite/replace.py); the plugin
# layer keeps that name in TensorRT (fused layers join their parts with " + ").
_PLUGIN_LAYER = re.compile(r"(^|\+ ?)axial_attention_\d+($| ?\+)|AxialAttention")


@dataclass
class LatencyStats:
    """Statistics of a latency series in milliseconds (percentiles: linear interpolation)."""

    count: int
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    batch: int
    throughput_per_s: float  # samples (batch items) per second, inferences run back to back


def latency_stats(latencies_ms, batch: int = 1) -> LatencyStats:
    series = np.asarray(latencies_ms, dtype=np.float64)
    if series.ndim != 1 or series.size == 0:
        raise ValueError("latency statistics need a non-empty 1-D series of milliseconds")
    if (series < 0).any() or not np.isfinite(series).all():
        raise ValueError("latencies must be finite and non-negative")
    p90, p95, p99 = np.percentile(series, [90, 95, 99])
    total_s = series.sum() / 1e3
    return LatencyStats(
        count=int(series.size),
        min_ms=float(series.min()),
        mean_ms=float(series.mean()),
        median_ms=float(np.median(series)),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=float(series.max()),
        std_ms=float(series.std()),
        batch=batch,
        throughput_per_s=float(batch * series.size / total_s) if total_s > 0 else float("inf"),
    )


def block_of(layer_name: str, layer_blocks: dict[str, str] | None = None) -> str:
    """The model block a TensorRT layer (or ONNX node) belongs to, from its name.

    '/layer1/layer1.0/conv1/Conv' (the exporters' scope paths) -> 'layer1'; fused 'A + B'
    layers go by their first part; the rewriter's 'axial_attention_<n>[/...]' layers go to
    `layer_blocks[name]` (recorded at build time from the graph), else to 'AxialAttention';
    TensorRT's own reformatting layers -> '(reformat)'.
    """
    first = layer_name.split(" + ")[0].strip()
    parts = [p for p in first.split("/") if p]
    if layer_blocks and parts and parts[0] in layer_blocks:
        return layer_blocks[parts[0]]
    if is_plugin_layer(layer_name) or (parts and re.fullmatch(r"axial_attention_\d+", parts[0])):
        return "AxialAttention"
    if first.lower().startswith(("reformatting", "copynode", "[")):
        return "(reformat)"
    if len(parts) > 1:
        return parts[0]
    return parts[0].split(".")[0].split("_")[0] if parts else "(unnamed)"


def is_plugin_layer(layer_name: str) -> bool:
    return bool(_PLUGIN_LAYER.search(layer_name))


@dataclass
class LayerTable:
    """Mean time per layer and per block over the profiled runs."""

    layers: list[tuple[str, float]]  # (layer, mean ms), slowest first
    blocks: list[tuple[str, float, float]]  # (block, ms, share of total), slowest first
    total_ms: float
    axial_attention_ms: float

    @property
    def axial_attention_share(self) -> float:
        return self.axial_attention_ms / self.total_ms if self.total_ms > 0 else 0.0


def layer_table(
    layer_times_ms: dict[str, list[float]], layer_blocks: dict[str, str] | None = None
) -> LayerTable:
    """From layer -> per-run times (ms) to the layer and block tables; the AxialAttention
    plugin layers' time counts in their block and, separately, as the plugin's share."""
    means = {name: float(np.mean(times)) for name, times in layer_times_ms.items() if times}
    total = sum(means.values())
    per_block: dict[str, float] = defaultdict(float)
    for name, ms in means.items():
        per_block[block_of(name, layer_blocks)] += ms
    blocks = sorted(
        ((b, ms, ms / total if total else 0.0) for b, ms in per_block.items()),
        key=lambda row: -row[1],
    )
    return LayerTable(
        layers=sorted(means.items(), key=lambda row: -row[1]),
        blocks=blocks,
        total_ms=total,
        axial_attention_ms=sum(ms for name, ms in means.items() if is_plugin_layer(name)),
    )


def make_layer_profiler(trt):
    """A `trt.IProfiler` that accumulates every layer's time per run (TensorRT reports each
    layer once per enqueue when `context.profiler` is set)."""

    class LayerProfiler(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = defaultdict(list)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times[layer_name].append(ms)

    return LayerProfiler()


@dataclass
class ProfileResult:
    model: str
    backend: str
    latency: LatencyStats
    latencies_ms: list[float]
    warmup_s: float
    # Engines only: host-to-device / compute / device-to-host means (ms) and the layer table.
    split_ms: dict[str, float] = field(default_factory=dict)
    layers: LayerTable | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What `axial-deploy profile` prints: latency, throughput, split and layer tables."""
        s = self.latency
        lines = [
            f"{self.backend}, batch {s.batch}, {s.count} runs",
            f"latency ms: min {s.min_ms:.3f} mean {s.mean_ms:.3f} median {s.median_ms:.3f} "
            f"p90 {s.p90_ms:.3f} p95 {s.p95_ms:.3f} p99 {s.p99_ms:.3f}",
            f"throughput: {s.throughput_per_s:.1f} samples/s",
        ]
        if self.split_ms:
            lines.append("split ms: " + ", ".join(f"{k} {v:.3f}" for k, v in self.split_ms.items()))
        if self.layers is not None:
            lines.append(f"{'block':<24} {'ms':>9} {'share':>7}")
            lines += [f"{b:<24} {ms:>9.4f} {100 * sh:>6.1f}%" for b, ms, sh in self.layers.blocks]
            lines.append(
                f"AxialAttention plugin share: {100 * self.layers.axial_attention_share:.1f}%"
            )
            lines.append("slowest layers:")
            lines += [f"  {ms:>9.4f} ms  {layer}" for layer, ms in self.layers.layers[:10]]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.layers is not None:
            data["layers"]["axial_attention_share"] = self.layers.axial_attention_share
        return data


def profile_engine(
    engine,
    *,
    batch: int = 1,
    warmup_s: float = 1.0,
    iterations: int | None = None,
    duration_s: float | None = None,
    cuda_graph: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> ProfileResult:
    """Runs `engine` (a runtime.Engine) on random inputs: warm-up, then timed inferences."""
    from axial_deploy.progress import progress_bar

    if iterations is None and duration_s is None:
        iterations = 100
    feed = engine.random_inputs(batch=batch, seed=seed)
    if cuda_graph:
        engine.enable_cuda_graph(feed)
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        engine.infer(feed)
    latencies, splits = [], defaultdict(list)
    began = time.perf_counter()
    bar = progress_bar(total=iterations, desc="profiling", unit="run", disable=not progress)
    while True:
        engine.infer(feed)
        latencies.append(engine.last_inference_time * 1e3)
        for key, value in engine.last_split_ms.items():
            splits[key].append(value)
        bar.update(1)
        if iterations is not None and len(latencies) >= iterations:
            break
        if duration_s is not None and time.perf_counter() - began >= duration_s:
            break
    bar.close()
    result = ProfileResult(
        model=str(engine.path),
        backend=engine.backend,
        latency=latency_stats(latencies, batch=batch),
        latencies_ms=latencies,
        warmup_s=warmup_s,
        split_ms={key: float(np.mean(values)) for key, values in splits.items()},
    )
    if engine.supports_layer_profiling:
        result.layers = layer_table(engine.profile_layers(feed, runs=10), engine.layer_blocks)
    else:
        result.notes.append(f"{engine.backend}: no per-layer times (TensorRT engines only)")
    return result
