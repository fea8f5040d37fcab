"""Write a Triton model repository for a GPU fleet running the NGC Triton image.

For an engine: a tensorrt_plan model whose config.pbtxt comes from the engine manifest
(tensors, dtypes, dims, max batch from the profile, dynamic batching, instance groups), the
plugin library beside it and the exact launch line with the plugin option; the manifest's
TensorRT version picks the matching Triton release (warning when none matches). For an ONNX
file: an onnxruntime_onnx model. --panoptic adds Python-backend pre/post-processing and an
ensemble NAME_panoptic that takes raw images.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import Files, add_output_folder, add_plugins
from axial_deploy.cli.serving_args import add_batching, add_name, add_panoptic, panoptic_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a TensorRT .engine (with its manifest) or an .onnx file")
    add_output_folder(parser, "repository folder to write")
    add_name(parser)
    add_batching(parser, None)
    parser.add_argument(
        "--kind", choices=["KIND_GPU", "KIND_CPU"], default="KIND_GPU", help="instance kind"
    )
    parser.add_argument(
        "--release",
        help="NGC Triton release YY.MM (default: the one recorded with the engine's TensorRT; "
        "refused with what to check when none is)",
    )
    add_plugins(parser, "plugin library to ship (checked against the manifest's sha256)")
    parser.add_argument("--ort-op-library", help="ONNX Runtime custom-op library (ONNX models)")
    add_panoptic(parser)
    parser.add_argument("--force", action="store_true", help="replace an existing repository")


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    reads = {"MODEL": args.model, "--plugins": args.plugins,
             "--ort-op-library": args.ort_op_library}  # fmt: skip
    return Files(reads, {"-o": args.output}, folders=("-o",))


def run(args: argparse.Namespace) -> int:
    from axial_deploy.serving.triton_repo import RepoOptions, write_repository

    options = RepoOptions(
        name=args.name,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        preferred_batch=args.preferred_batch,
        instances=args.instances,
        kind=args.kind,
        release=args.release,
        plugins=args.plugins,
        ort_op_library=args.ort_op_library,
        panoptic=panoptic_settings(args, ""),
        force=args.force,
    )
    report = write_repository(args.model, args.output, options)
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(f"wrote {report.out}: models {', '.join(report.models)} (Triton {report.release})")
    print(f"launch (also in {report.out}/launch.sh, with OUT={report.out}):\n  {report.launch}")
    return 0
