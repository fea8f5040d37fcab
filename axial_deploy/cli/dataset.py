"""Generate a synthetic panoptic or classification dataset (deterministic by seed).

Numpy + PIL, seconds. 'panoptic' writes scenes of stuff (sky, wall, ground) and thing
instances (disc, box, triangle, ring) in the COCO panoptic format (DIR/panoptic_SPLIT.json,
DIR/panoptic_SPLIT/*.png, DIR/images/SPLIT/*.png) plus semantic and instance maps;
'classification' writes one shape (5 classes) per image as DIR/SPLIT/CLASS/*.png. The same seed
gives byte-identical files; DIR/dataset.json records the seed, sizes, counts and command.
"""

from __future__ import annotations

import argparse
import time

from axial_deploy.cli.args import Files, add_output_folder, add_seed, non_negative_int, parse_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["panoptic", "classification"])
    add_output_folder(parser, "output directory")
    add_seed(parser, what="scenes")
    parser.add_argument(
        "--train",
        type=non_negative_int,
        help="training images (default: 500 panoptic, 4000 classification)",
    )
    parser.add_argument(
        "--val",
        type=non_negative_int,
        help="validation images (default: 100 panoptic, 500 classification)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        help="HxW of the images (default: 129x129 panoptic, 64x64 classification)",
    )


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({}, {"-o": args.output}, folders=("-o",))


def run(args: argparse.Namespace) -> int:
    from axial_deploy.datasets.synthetic import generate_classification, generate_panoptic

    generate = generate_panoptic if args.kind == "panoptic" else generate_classification
    options = {
        key: value
        for key, value in (("train", args.train), ("val", args.val), ("size", args.size))
        if value is not None
    }
    start = time.perf_counter()
    record = generate(args.output, seed=args.seed, **options)
    counts = ", ".join(f"{split}: {c['images']} images" for split, c in record["counts"].items())
    elapsed = time.perf_counter() - start
    print(f"wrote {args.kind} dataset {args.output} ({counts}) in {elapsed:.1f} s")
    return 0
