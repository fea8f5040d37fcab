"""Does Polygraphy's constant folding (axial_deploy.checks.sanitize) make the rewrite or the build
simpler or faster? One table per run.

Usage:  python benchmarks/sanitize_graphs.py MODEL.onnx [MODEL.onnx ...] [--out DIR] [--runs 2]

For each exported (plain) graph: sanitize it (fold + verify in ONNX Runtime), then rewrite the
original and the sanitized graph (`rewrite_file`) and build both plain graphs with TensorRT-RTX
on the CPU (when `tensorrt_rtx` is installed), `--runs` times each; prints node
counts (export, rewritten), the fold time, and the median wall and CPU seconds of rewrite and
build. Export the graphs first, e.g.
  axial-deploy export --model axial26_tiny --live-random-weights -o out/axial26_tiny.onnx
On a shared machine compare CPU seconds and the ratios of one run, not seconds across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from axial_deploy.checks.sanitize import sanitize_file
from axial_deploy.engine.build import BuildOptions, build_engine
from axial_deploy.rewrite import rewrite_file


def timed(call: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU (this process, all threads) seconds of `runs` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure(source: Path, out: Path, runs: int) -> list[tuple[str, ...]]:
    """Two table rows for one exported graph: as exported, and sanitized."""
    sanitized = out / f"{source.stem}.sanitized.onnx"
    result = sanitize_file(source, sanitized)
    try:
        import tensorrt_rtx  # noqa: F401  (the build column needs it)

        can_build = True
    except ImportError:
        can_build = False
    options = BuildOptions("tensorrt-rtx")
    rows = []
    for label, graph in (("export", source), ("sanitized", sanitized)):
        axial = out / f"{graph.stem}.axial.onnx"
        rewrite = timed(lambda g=graph, a=axial: rewrite_file(g, a), runs)
        build = (float("nan"), float("nan"))
        if can_build:
            engine = out / f"{graph.stem}.engine"
            build = timed(lambda g=graph, e=engine: build_engine(g, e, options), runs)
        nodes = len(onnx.load(graph, load_external_data=False).graph.node)
        rewritten = len(onnx.load(axial, load_external_data=False).graph.node)
        fold = f"{result.seconds:.1f}" if graph == sanitized else "-"
        rows.append(
            (source.stem, label, str(nodes), str(rewritten), fold,
             f"{rewrite[0]:.1f} / {rewrite[1]:.1f}", f"{build[0]:.1f} / {build[1]:.1f}")
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL.onnx")
    parser.add_argument("--out", type=Path, default=Path("out/bench_sanitize"))
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    header = ("model", "graph", "nodes", "rewritten nodes", "fold s", "rewrite s wall / cpu",
              "build s wall / cpu")  # fmt: skip
    rows = [header]
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    for model in args.models:
        rows += measure(model, args.out, args.runs)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
