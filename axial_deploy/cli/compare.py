"""Accuracy of FP16 / INT8 graphs against the FP32 graph in ONNX Runtime.

Runs the reference graph and each candidate on the same held-out inputs in ONNX Runtime and
prints, per output, max / mean abs and max rel error, plus task agreement: top-1 agreement for
classifiers, pixel agreement and mIoU between the argmax predictions of the semantic output
for panoptic models. The default inputs are synthetic with seed 1, which calibration (seed 0)
never saw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from axial_deploy.cli.args import add_report, add_seed, positive_int
from axial_deploy.cli.quantize import CALIB_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", metavar="REF.onnx", help="FP32 graph")
    parser.add_argument(
        "candidates",
        metavar="[LABEL=]CAND.onnx",
        nargs="+",
        help="graphs to compare (label defaults to the file name)",
    )
    parser.add_argument(
        "--inputs", metavar="SRC", help=f"held-out inputs: {CALIB_HELP} (default: synthetic)"
    )
    parser.add_argument("--batches", type=positive_int, default=4, help="batches (default: 4)")
    add_seed(parser, default=1, what="synthetic inputs")
    parser.add_argument(
        "--task",
        choices=["classification", "panoptic"],
        help="task metric (default: panoptic if the graph has a 'semantic' output)",
    )
    add_report(parser, "write the report as JSON to this path", old_json=True)


def labelled(texts: list[str]) -> dict[str, str]:
    """LABEL=PATH or PATH (labelled by its file name) -> {label: path}."""
    candidates = {}
    for text in texts:
        label, sep, path = text.partition("=")
        if not sep:
            label, path = Path(text).name, text
        candidates[label] = path
    return candidates


def run(args: argparse.Namespace) -> int:
    from axial_deploy.artifacts import check_distinct, write_json
    from axial_deploy.quantize import accuracy_report

    candidates = labelled(args.candidates)
    inputs = {"REF.onnx": args.reference, **{f"candidate {k}": v for k, v in candidates.items()}}
    check_distinct(inputs, {"--report": args.report})
    report = accuracy_report(
        args.reference,
        candidates,
        inputs=args.inputs,
        batches=args.batches,
        seed=args.seed,
        task=args.task,
        progress=True,
    )
    print(report.summary())
    if args.report:
        write_json(args.report, report.to_json())
        print(f"wrote {args.report}")
    return 0
