"""Train a small zoo model on a (synthetic) dataset on CPU.

Trains on a dataset written by `axial-deploy dataset` (or any dataset in the same layout):
panoptic models with the Panoptic-DeepLab targets and losses (bootstrapped cross-entropy,
center heatmap MSE, offset L1), classifiers with cross-entropy; Adam with a poly schedule,
horizontal flips. Saves CKPT (fp16 state_dict) and CKPT.json (command, seed, dataset record,
losses, train time and the val PQ/SQ/RQ/mIoU or top-1 of the saved weights).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from axial_deploy.cli.args import (
    Files,
    add_output,
    add_seed,
    add_zoo_model,
    positive_float,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_zoo_model(parser)
    parser.add_argument("--data", required=True, help="dataset directory (with dataset.json)")
    parser.add_argument(
        "--epochs", type=positive_int, help="passes over the train split (default: 16 pan., 6 cls)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, help="images per step (default: 8 panoptic, 32 cls)"
    )
    parser.add_argument(
        "--lr", type=positive_float, help="Adam learning rate (default: 1e-3 panoptic, 2e-3 cls)"
    )
    add_seed(parser, what="initialization and data order")
    parser.add_argument(
        "--threads", type=positive_int, default=2, help="torch CPU threads (default: 2)"
    )
    add_output(parser, "checkpoint path (.pt); its record goes beside it as .json")


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    written = {"-o": args.output, "its record": Path(args.output).with_suffix(".json")}
    return Files({"--data": args.data}, written)


def run(args: argparse.Namespace) -> int:
    from axial_deploy.train import TrainSettings, train

    settings = TrainSettings.for_model(
        args.model,
        args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
    )
    command = " ".join(shlex.quote(a) for a in ["axial-deploy", *args.argv])
    record = train(settings, args.output, command=command)
    print(f"trained in {record['train_time_s']:.0f} s; val: {record['val_metrics']}")
    print(f"wrote {args.output} and {Path(args.output).with_suffix('.json')}")
    return 0
