"""Compare two ONNX models on the same random inputs in ONNX Runtime.

Runs A (reference) and B on the same random N(0, 1) inputs in ONNX Runtime (AxialAttention
nodes run through the reference op) and prints, per output, max abs, max rel (max abs / max |A|)
and mean abs errors. An output fails when max abs > atol + rtol * max |A|; exits with status 1
if any fails. Outputs match by name, or by position when names differ but counts agree.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import add_seed, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_a", metavar="A.onnx", help="reference model")
    parser.add_argument("model_b", metavar="B.onnx", help="model to check against A")
    parser.add_argument(
        "--rtol", type=float, default=1e-4, help="relative tolerance (default: 1e-4)"
    )
    parser.add_argument(
        "--atol", type=float, default=1e-6, help="absolute tolerance (default: 1e-6)"
    )
    add_seed(parser)
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        help="size of a symbolic batch axis (default: 1); other axes must be static",
    )


def run(args: argparse.Namespace) -> int:
    from axial_deploy.verify import format_report, verify_models

    report = verify_models(
        args.model_a,
        args.model_b,
        rtol=args.rtol,
        atol=args.atol,
        seed=args.seed,
        batch=args.batch,
    )
    print(format_report(report))
    return 0 if report.passed else 1
