"""Compare two ONNX models on the same seeded inputs in ONNX Runtime.

Runs A (reference) and B on the same seeded inputs (uniform in [-2, 2], Polygraphy's data
loader) in ONNX Runtime (AxialAttention nodes run through the registered op) and prints, per
output, max abs, max rel (max abs / max |A|) and mean abs errors, compared by Polygraphy. An
output passes when max abs <= atol + rtol * max |A|, or, on a numerically chaotic model, when
it stays within F x A's own fp32 noise floor (A's change under a 1-ulp input change and its
distance to A run in float64; measured when the plain tolerance fails, see --noise-floor). The
result column says which judgement applied. Exits with status 1 if any output fails. Outputs
match by name, or by position when names differ but counts agree.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import Files, add_batch_size, add_seed, parse_shape


def _factor(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be a number >= 1, got {text}")
    return value


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
    add_batch_size(
        parser,
        "size of a symbolic batch axis; other symbolic axes need --input-shape",
        old_batch=True,
    )
    parser.add_argument(
        "--input-shape",
        type=parse_shape,
        metavar="NxCxHxW",
        help="run at this shape: sets the symbolic axes (batch, height, width) of graphs "
        "exported or rewritten with dynamic sizes; run verify once per size to check several",
    )
    parser.add_argument(
        "--noise-floor",
        choices=["auto", "always", "off"],
        default="auto",
        help="measure A's fp32 noise floor when an output exceeds the plain tolerance (auto, "
        "the default), always, or never (off: the plain tolerance alone decides)",
    )
    parser.add_argument(
        "--noise-factor",
        type=_factor,
        default=4.0,
        metavar="F",
        help="an output beyond the plain tolerance passes within F x the noise floor "
        "(default: 4; two correct fp32 results differ by up to about 2 floors)",
    )


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({"A.onnx": args.model_a, "B.onnx": args.model_b}, {})


def run(args: argparse.Namespace) -> int:
    from axial_deploy.checks.verify import format_report, verify_models

    report = verify_models(
        args.model_a,
        args.model_b,
        rtol=args.rtol,
        atol=args.atol,
        seed=args.seed,
        batch=args.batch_size,
        input_shape=args.input_shape,
        noise_floor=args.noise_floor,
        noise_factor=args.noise_factor,
    )
    print(format_report(report))
    return 0 if report.passed else 1
