"""Latency statistics, throughput and per-layer times.

Times ENGINE or ONNX on random inputs: warm-up, then --iterations runs (or --duration
seconds); prints min / mean / median / p90 / p95 / p99 latency and throughput; for engines
also the H2D / compute / D2H split and the time per model block (TensorRT's profiler) with the
AxialAttention plugin's share. --report FILE.json writes the JSON and FILE.html beside it
(latency histogram, per-block bar chart).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from axial_deploy.cli.args import (
    Files,
    add_batch_size,
    add_cuda_binding,
    add_iterations,
    add_report,
    positive_float,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="ENGINE|ONNX")
    parser.add_argument(
        "--warmup", type=float, default=1.0, metavar="S", help="warm-up seconds (default 1)"
    )
    length = parser.add_mutually_exclusive_group()
    add_iterations(length)
    length.add_argument(
        "--duration", type=positive_float, metavar="S", help="time for S seconds instead"
    )
    add_batch_size(parser, "size of a dynamic batch axis", old_batch=True)
    parser.add_argument("--cuda-graph", action="store_true", help="replay a CUDA graph")
    add_cuda_binding(parser)
    add_report(parser, "write FILE.json and FILE.html beside it")


def report_paths(report: str) -> tuple[Path, Path]:
    """FILE.json -> (FILE.json, FILE.html); an old-style PREFIX -> (PREFIX.json, PREFIX.html)
    (`files` notes that form: it goes in the next release)."""
    path = Path(report)
    prefix = path.with_suffix("") if path.suffix == ".json" else path
    return Path(f"{prefix}.json"), Path(f"{prefix}.html")


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    if args.report and Path(args.report).suffix != ".json":
        print(
            f"note: --report {args.report} is the old PREFIX form; give {args.report}.json (the "
            "PREFIX form goes in the next release)",
            file=sys.stderr,
        )
    json_path, html_path = report_paths(args.report) if args.report else (None, None)
    return Files({"ENGINE|ONNX": args.model}, {"--report": json_path, "its HTML": html_path})


def run(args: argparse.Namespace) -> int:
    from axial_deploy.artifacts import write_json
    from axial_deploy.engine.profile import profile_engine
    from axial_deploy.engine.runtime import Engine
    from axial_deploy.pipeline.report import write_html

    json_path, html_path = report_paths(args.report) if args.report else (None, None)
    with Engine(args.model, cuda=args.cuda) as engine:
        result = profile_engine(
            engine,
            batch=args.batch_size,
            warmup_s=args.warmup,
            iterations=None if args.duration else args.iterations,
            duration_s=args.duration,
            cuda_graph=args.cuda_graph,
        )
    print(result.summary())
    if args.report:
        write_json(json_path, result.to_dict())
        write_html(result, html_path)
        print(f"wrote {json_path} and {html_path}")
    return 0
