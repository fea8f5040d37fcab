"""Replace every axial-attention layer by one AxialAttention plugin node.

Finds every axial-attention layer of an ONNX graph, with or without relative positions (any
exporter; static height and width), and replaces it, from its input to its output, by a 1x1
Conv (qkv projection, BatchNorms folded) feeding one AxialAttention node. Each layer's
constants are read by probing its pieces in ONNX Runtime, and the replacement must reproduce
the layer (fp32 max rel err < 1e-4) or the layer is left intact and reported. Prints a summary;
--report writes it as JSON.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import add_output, add_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="IN.onnx", help="graph to rewrite")
    add_output(parser, "path of the rewritten .onnx")
    add_report(parser, "write the per-layer report as JSON to this path")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail (writing nothing) when any attention-like layer is left intact",
    )


def run(args: argparse.Namespace) -> int:
    from axial_deploy.artifacts import check_distinct
    from axial_deploy.rewrite import rewrite_file

    check_distinct({"IN.onnx": args.model}, {"-o": args.output, "--report": args.report})
    print(f"rewriting {args.model} ...", flush=True)
    report = rewrite_file(args.model, args.output, report_path=args.report, strict=args.strict)
    print(report.summary())
    print(f"wrote {args.output}" + (f" and {args.report}" if args.report else ""))
    return 0
