"""How long exporting and rewriting a zoo model takes on this machine.

Usage:  python benchmarks/export_rewrite.py [--model axial_deeplab_l] [--size 1025x2049]
                                            [--exporter torchscript] [--out out/bench]
Prints one table row per stage: seconds, and for the rewrite the layers rewritten / left.
Then checks the rewritten graph against the exported one in ONNX Runtime (reference op).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from axial_deploy.checks.verify import verify_models
from axial_deploy.export import export_onnx
from axial_deploy.models import create_model
from axial_deploy.rewrite import rewrite_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="axial_deeplab_l")
    parser.add_argument("--size", default="1025x2049", help="HxW of the input")
    parser.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    parser.add_argument("--out", default="out/bench", help="folder for the .onnx files")
    parser.add_argument("--skip-verify", action="store_true", help="skip the ORT comparison")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    out = Path(args.out)
    source, target = out / f"{args.model}.onnx", out / f"{args.model}.axial.onnx"

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    print(f"| {'stage':<8} | {'model':<18} | {'input':>10} | {'seconds':>8} | notes")
    print(f"|{'-' * 10}|{'-' * 20}|{'-' * 12}|{'-' * 10}|------")
    start = time.perf_counter()
    export_onnx(model, (1, 3, height, width), source, exporter=args.exporter)
    size_mb = source.stat().st_size / 2**20
    print(
        f"| {'export':<8} | {args.model:<18} | {args.size:>10} | "
        f"{time.perf_counter() - start:>8.1f} | {args.exporter}, {size_mb:.0f} MiB",
        flush=True,
    )
    start = time.perf_counter()
    report = rewrite_file(source, target)
    print(
        f"| {'rewrite':<8} | {args.model:<18} | {args.size:>10} | "
        f"{time.perf_counter() - start:>8.1f} | {len(report.rewritten)} layers rewritten, "
        f"{len(report.left)} left, max layer err "
        f"{max((r.max_rel_err or 0 for r in report.rewritten), default=0):.1e}",
        flush=True,
    )
    if not args.skip_verify:
        start = time.perf_counter()
        result = verify_models(source, target, rtol=1e-4, atol=1e-6, seed=0, batch=1)
        worst = max(row.max_rel for row in result.rows)
        print(
            f"| {'verify':<8} | {args.model:<18} | {args.size:>10} | "
            f"{time.perf_counter() - start:>8.1f} | {'PASS' if result.passed else 'FAIL'}, "
            f"max rel {worst:.1e}"
        )


if __name__ == "__main__":
    main()
