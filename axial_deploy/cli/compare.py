"""Accuracy of FP16 / INT8 / FP8 graphs against the FP32 graph in ONNX Runtime.

Runs the reference graph and each candidate on the same held-out inputs in ONNX Runtime and
prints, per output, max / mean abs and max rel error, plus task agreement: top-1 agreement for
classifiers, pixel agreement and mIoU between the argmax predictions of the semantic output
for panoptic models. The default inputs are synthetic, drawn with --seed + 1, so that
calibration with the same --seed (quantize's default 0) never saw them.

--layerwise REF.onnx CAND.onnx: where precision breaks, layer by layer. Every float tensor the
candidate computes is paired with the reference tensor it stands for (same name; same node
name; or a Cast / QuantizeLinear->DequantizeLinear wrapping it, as our FP16, INT8, FP8 graphs
write them), both graphs get those tensors marked as outputs (as `polygraphy run --onnx-outputs
mark all`), run in ONNX Runtime (graph optimizations off: they move Q/DQ nodes around unmarked
tensors) on the same seeded inputs, and are compared with Polygraphy's comparator. Per tensor:
  error      relative RMS error ||cand - ref|| / ||ref|| (= 10^(-SNR/20)), RMS over batches;
  input err  the worst error reaching the layer's inputs (nearest compared tensors upstream;
             weights and graph inputs count 0, so a quantized weight is its Conv's doing);
  jump       error - input err: the error the layer itself adds. A layer that amplifies the
             error it receives (a subtraction of close values) also shows a jump.
It prints the layers ranked by jump, the first layer (topological order) whose error passes
--threshold, and, for FP16 graphs, the layers kept in FP32. Marking every tensor keeps them all
in memory: they are run in chunks of at most --chunk-mb per inference (a run of both graphs per
chunk, with a progress bar).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from axial_deploy.cli.args import Files, add_report, add_seed, positive_float, positive_int
from axial_deploy.cli.quantize import CALIB_HELP

# compare draws held-out inputs with --seed + 1: one --seed default (0) for every command, and
# synthetic held-out inputs that calibration with the same --seed never saw.
HELD_OUT_SEED_OFFSET = 1


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
    add_seed(parser, what=f"synthetic inputs, drawn with seed N + {HELD_OUT_SEED_OFFSET} so that "
             "they differ from calibration's (quantize --seed N)")  # fmt: skip
    parser.add_argument(
        "--task",
        choices=["classification", "panoptic"],
        help="task metric (default: panoptic if the graph has a 'semantic' output)",
    )
    add_report(parser, "write the report as JSON to this path", old_json=True)
    _add_layerwise_arguments(parser)


def _add_layerwise_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("layer-wise (--layerwise REF.onnx CAND.onnx)")
    group.add_argument(
        "--layerwise",
        action="store_true",
        help="compare every shared intermediate tensor, ranked by the error each layer adds "
        "(inputs: Polygraphy's seeded DataLoader, or --inputs SRC)",
    )
    group.add_argument(
        "--threshold",
        type=positive_float,
        default=1e-2,
        help="name the first layer whose relative RMS error passes this (default: 0.01)",
    )
    group.add_argument(
        "--top", type=positive_int, default=15, help="layers printed by jump (default: 15)"
    )
    group.add_argument(
        "--chunk-mb",
        type=positive_float,
        default=1024,
        help="most MiB of marked outputs per inference; more tensors run in more chunks "
        "(default: 1024)",
    )
    group.add_argument(
        "--val-range",
        type=_value_range,
        default=(0.0, 1.0),
        metavar="LO,HI",
        help="range of the DataLoader's uniform inputs, e.g. --val-range=-1,1 (default: 0,1)",
    )


def _value_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        low = high = float("nan")
    if not low < high:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not LO,HI with LO < HI, e.g. --val-range=-1,1"
        )
    return low, high


def labelled(texts: list[str]) -> dict[str, str]:
    """LABEL=PATH or PATH (labelled by its file name) -> {label: path}."""
    candidates = {}
    for text in texts:
        label, sep, path = text.partition("=")
        if not sep:
            label, path = Path(text).name, text
        candidates[label] = path
    return candidates


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    candidates = {f"candidate {k}": v for k, v in labelled(args.candidates).items()}
    reads = {"REF.onnx": args.reference, **candidates, "--inputs": args.inputs}
    return Files(reads, {"--report": args.report})


def run(args: argparse.Namespace) -> int:
    from axial_deploy.artifacts import write_json
    from axial_deploy.quantize import accuracy_report

    if args.layerwise:
        return run_layerwise(args)
    candidates = labelled(args.candidates)
    report = accuracy_report(
        args.reference,
        candidates,
        inputs=args.inputs,
        batches=args.batches,
        seed=args.seed + HELD_OUT_SEED_OFFSET,
        task=args.task,
        progress=True,
    )
    print(report.summary())
    if args.report:
        write_json(args.report, report.to_json())
        print(f"wrote {args.report}")
    return 0


def run_layerwise(args: argparse.Namespace) -> int:
    from axial_deploy.artifacts import write_json
    from axial_deploy.checks.layerwise import LayerwiseError, layerwise_compare

    candidates = labelled(args.candidates)
    if len(candidates) != 1:
        raise LayerwiseError(
            f"--layerwise compares one candidate with the reference, got {len(candidates)}: "
            "run it once per candidate"
        )
    ((label, candidate),) = candidates.items()
    report = layerwise_compare(
        args.reference,
        candidate,
        inputs=args.inputs,
        batches=args.batches,
        seed=args.seed + HELD_OUT_SEED_OFFSET,
        val_range=args.val_range,
        threshold=args.threshold,
        chunk_mb=args.chunk_mb,
        progress=True,
    )
    print(report.summary(top=args.top))
    if args.report:
        write_json(args.report, {"label": label, **report.to_json()})
        print(f"wrote {args.report}")
    return 0
