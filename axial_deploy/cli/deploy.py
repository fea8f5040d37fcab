"""The whole pipeline in one command, ending in one HTML + JSON report.

export -> rewrite -> verify -> precision (FP32/FP16/INT8/FP8 of the rewritten and the plain graph)
-> task accuracy per variant with the accuracy gate and prediction panels -> engine build
(TensorRT with the plugin where installed, else TensorRT-RTX on the plain graphs, else skipped
with the reason) -> latency profile -> OUTPUT/report.html and OUTPUT/report.json. Without
--data, the model's synthetic dataset is generated under OUTPUT/data (its held-out val split).

examples:
  axial-deploy deploy    (axial_deeplab_tiny with its shipped weights)
  axial-deploy deploy --model axial26_tiny --precision fp32,int8 -o out/cls
  axial-deploy deploy --model axial_deeplab_s --checkpoint s.pt --data data/synth \\
      --input-size 257x513 --strict
"""

from __future__ import annotations

import argparse
from pathlib import Path

from axial_deploy.cli.args import (
    Files,
    OldSpelling,
    add_calib_batches,
    add_checkpoint,
    add_gate,
    add_iterations,
    add_num_classes,
    add_output_folder,
    add_plugins,
    add_seed,
    add_zoo_model,
    non_negative_int,
    parse_size,
    positive_int,
)
from axial_deploy.pipeline.deploy import BACKEND_CHOICES, DEFAULT_MODEL, DEFAULT_PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_zoo_model(parser, default=DEFAULT_MODEL, what=f"zoo model (default {DEFAULT_MODEL})")
    add_checkpoint(parser, "weights to deploy (default: the shipped ones)")
    add_num_classes(parser, "classes of --checkpoint's head (default: the dataset's)")
    parser.add_argument(
        "--precision",
        default=",".join(DEFAULT_PRECISIONS),
        metavar="LIST",
        help="comma-separated precisions among fp32,fp16,int8,fp8 (default "
        f"{','.join(DEFAULT_PRECISIONS)}; fp32 is always the reference; FP8 engines need "
        "compute capability 8.9+)",
    )
    parser.add_argument(
        "--calib",
        metavar="SRC",
        help="INT8/FP8 calibration data: image folder, .npy/.npz, or 'synthetic' (default: "
        "the dataset's train images)",
    )
    add_calib_batches(parser, "INT8 calibration batches of one image")
    parser.add_argument(
        "--data", metavar="DIR", help="evaluation dataset (default: generate OUTPUT/data)"
    )
    parser.add_argument(
        "--eval-images", type=positive_int, default=100, help="val images evaluated (default 100)"
    )
    parser.add_argument(
        "--input-size",
        type=parse_size,
        metavar="HxW",
        help="input height x width (default: the weights' training size, else the zoo's)",
    )
    add_gate(parser, "the accuracy gate flags a variant")
    parser.add_argument(
        "--fit-budget",
        action="store_true",
        help="int8: keep the layers that add the most error in FP32, the fewest a search "
        "finds, until each INT8 variant is within --max-drop of FP32 on the val images "
        "(docs/precision-budget.md)",
    )
    parser.add_argument(
        "--panel-count", "--panels", dest="panel_count", type=non_negative_int, default=4,
        action=OldSpelling, old=("--panels",), help="prediction panels in the report (default 4)",
    )  # fmt: skip
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="engine builder (default auto: TensorRT, else TensorRT-RTX, else none)",
    )
    add_plugins(parser)
    add_iterations(parser, "timed runs per variant")
    add_seed(parser, what="weights, inputs and dataset")
    add_output_folder(parser, "output folder", default="out/deploy")


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    reads = {"--checkpoint": args.checkpoint, "--calib": args.calib, "--data": args.data,
             "--plugins": args.plugins}  # fmt: skip
    return Files(reads, {"-o": args.output}, folders=("-o",))


def run(args: argparse.Namespace) -> int:
    from axial_deploy.pipeline.deploy import DeploySettings, parse_precisions, run_pipeline

    settings = DeploySettings(
        model=args.model,
        out=Path(args.output),
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        input_hw=args.input_size,
        precisions=parse_precisions(args.precision),
        calib=args.calib,
        calib_batches=args.calib_batches,
        data=args.data,
        eval_images=args.eval_images,
        max_drop=args.max_drop,
        fit_budget=args.fit_budget,
        panels=args.panel_count,
        backend=args.backend,
        plugin_library=args.plugins,
        iterations=args.iterations,
        seed=args.seed,
    )
    report = run_pipeline(settings)
    return 1 if args.strict and report.gate_passed is False else 0
