"""Replace every axial-attention layer by one AxialAttention plugin node.

Finds every axial-attention layer of an ONNX graph, with or without relative positions (any
exporter), and replaces it, from its input to its output, by a 1x1 Conv (qkv projection,
BatchNorms folded) feeding one AxialAttention node. Each layer's constants are read by probing
its pieces in ONNX Runtime, and the replacement must reproduce the layer (fp32 max rel err
< 1e-4) or the layer is left intact and reported. A graph with symbolic height and width keeps
them: it is probed at --probe-shape (default 1xCx513x513), then the whole rewritten graph is
checked against the original at --check-shape (default: the probe shape and about 3/4 of
it; fp32 max rel err < 1e-3), and is not written if a check fails. Prints a summary; --report
writes it as JSON.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import Files, add_output, add_report

VERIFY_LINES = 8


def parse_nchw(text: str) -> tuple[int, int, int, int]:
    """NxCxHxW with positive sizes."""
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"shape {text!r} must be NxCxHxW of positive integers")
    n, c, h, w = (int(p) for p in parts)
    return n, c, h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="IN.onnx", help="graph to rewrite")
    add_output(parser, "path of the rewritten .onnx")
    add_report(parser, "write the per-layer report as JSON to this path")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail (writing nothing) when any attention-like layer is left intact",
    )
    parser.add_argument(
        "--probe-shape",
        type=parse_nchw,
        metavar="NxCxHxW",
        help="input shape to probe a graph with symbolic height/width at (default: "
        "1xCx513x513); its tables must see each layer's whole window, so use at least the "
        "largest size you deploy at where the model has global attention",
    )
    parser.add_argument(
        "--check-shape",
        type=parse_nchw,
        metavar="NxCxHxW",
        action="append",
        help="input shape(s) to check the whole rewritten graph at, when its height/width "
        "are symbolic (repeatable; default: the probe shape and about 3/4 of it)",
    )
    add_verify_lines(parser)


def add_verify_lines(parser: argparse.ArgumentParser) -> None:
    from axial_deploy.cli.args import positive_int

    parser.add_argument(
        "--verify-lines",
        type=positive_int,
        default=VERIFY_LINES,  # rewrite.stage.VERIFY_LINES (that module imports onnx)
        metavar="N",
        help="random lines each replaced layer is checked on against its original subgraph "
        "(all of its lines when it has fewer; every line covers every channel, head and "
        f"query/key offset of the layer; default: {VERIFY_LINES})",
    )


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({"IN.onnx": args.model}, {"-o": args.output, "--report": args.report})


def run(args: argparse.Namespace) -> int:
    from axial_deploy.rewrite import rewrite_file

    print(f"rewriting {args.model} ...", flush=True)
    report = rewrite_file(
        args.model,
        args.output,
        report_path=args.report,
        strict=args.strict,
        probe_shape=args.probe_shape,
        check_shapes=args.check_shape,
        verify_lines=args.verify_lines,
    )
    print(report.summary())
    print(f"wrote {args.output}" + (f" and {args.report}" if args.report else ""))
    return 0
