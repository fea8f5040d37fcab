"""Task accuracy (PQ / mIoU or top-1) of models, ONNX graphs and engines.

Evaluates each TARGET on a dataset split and prints the metrics side by side: panoptic PQ /
SQ / RQ (COCO panoptic API rules), PQ things / stuff and mIoU, or top-1 / top-5 for
classifiers. With several targets, the accuracy gate compares each with the reference
(--reference) and flags drops above --max-drop points.

data layouts: panoptic DIR/panoptic_SPLIT.json + DIR/panoptic_SPLIT/*.png +
DIR/images/SPLIT/*.png (COCO panoptic); classification DIR/SPLIT/CLASS/*.png (class order:
DIR/dataset.json 'classes', else sorted folders).
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import (
    Files,
    add_checkpoint,
    add_gate,
    add_report,
    parse_size,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="zoo model name (with --checkpoint / --pretrained), .onnx file or .engine file",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N images")
    add_checkpoint(parser, "weights for zoo-model targets")
    parser.add_argument(
        "--pretrained", action="store_true", help="use the zoo's shipped weights for zoo models"
    )
    parser.add_argument(
        "--input-size",
        type=parse_size,
        metavar="HxW",
        help="resize inputs to HxW (default: a graph's fixed size, else each image's size)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=1, help="images per run (default 1)"
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        help="a label per target (default: fp32 for the first target, then the file stems)",
    )
    parser.add_argument(
        "--reference", help="label the gate compares with (default: the first target)"
    )
    parser.add_argument(
        "--postprocess-of",
        metavar="MODEL",
        help="panoptic post-processing (thresholds, kernel, stuff area) recorded with zoo "
        "MODEL's shipped weights, for every target: use it when evaluating .onnx/.engine files "
        "of that model (default: those of a --pretrained zoo TARGET, else Panoptic-DeepLab's "
        "defaults scaled to the input size)",
    )
    add_gate(parser, "the accuracy gate flags a target")
    add_report(parser, "write results and gate as JSON", old_json=True)
    parser.add_argument(
        "--panels",
        metavar="DIR",
        help="write input / ground truth / prediction panels (PNG + index.html) here",
    )
    parser.add_argument(
        "--panel-count", type=positive_int, default=4, help="images in the panels (default 4)"
    )


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    from axial_deploy.evaluation.evaluate import labelled_targets

    reads = {f"TARGET {k}": v for k, v in labelled_targets(args.targets, args.labels).items()}
    reads |= {"--data": args.data, "--checkpoint": args.checkpoint}
    return Files(reads, {"--report": args.report, "--panels": args.panels}, folders=("--panels",))


def run(args: argparse.Namespace) -> int:

    from axial_deploy.artifacts import write_json
    from axial_deploy.evaluation.evaluate import (
        comparison_table,
        evaluate_with_gate,
        labelled_targets,
        recorded_postprocess,
    )

    targets = labelled_targets(args.targets, args.labels)
    evaluation = evaluate_with_gate(
        targets,
        args.data,
        reference=args.reference,
        max_drop=args.max_drop,
        panels_dir=args.panels,
        panel_count=args.panel_count,
        split=args.split,
        limit=args.limit,
        checkpoint=args.checkpoint,
        pretrained=args.pretrained,
        batch_size=args.batch_size,
        input_hw=args.input_size,
        postprocess=recorded_postprocess(args.postprocess_of) if args.postprocess_of else None,
    )
    print(comparison_table(evaluation.results))
    if evaluation.gate:
        print(evaluation.gate.summary())
    if evaluation.panels_page:
        print(f"wrote {len(evaluation.panels)} panels and {evaluation.panels_page}")
    for note in evaluation.notes:
        print(note)
    if args.report:
        write_json(args.report, evaluation.to_json())
        print(f"wrote {args.report}")
    gate = evaluation.gate
    return 1 if args.strict and gate is not None and not gate.passed else 0
