"""Export a zoo model to ONNX and check it against PyTorch.

Exports with the TorchScript-based or the dynamo exporter (opset >= 17), then runs the ONNX
model in ONNX Runtime on random inputs and prints its error against PyTorch: at the export
shape and, for dynamic axes, at a second shape (batch + 1; about 3/4 of the height and width
with --dynamic batch,hw). Exits with status 1 when the error exceeds --rtol.
"""

from __future__ import annotations

import argparse
import time

from axial_deploy.cli.args import (
    add_checkpoint,
    add_num_classes,
    add_output,
    add_seed,
    add_zoo_model,
    parse_shape,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_zoo_model(parser)
    parser.add_argument(
        "--live-random-weights",
        action="store_true",
        help="without --checkpoint: random BatchNorm statistics and live residual branches, "
        "so every attention layer affects the outputs (a fresh model zero-initializes them, "
        "which makes any parity check pass trivially)",
    )
    add_checkpoint(parser, "weights to load (state_dict or train.py file); default: fresh random")
    add_num_classes(
        parser, "classes of the model's head (default: the model's: 1000 classifiers, 19 panoptic)"
    )
    parser.add_argument(
        "--input-shape",
        type=parse_shape,
        help="NxCxHxW (default: 1x3x224x224 for classifiers, 1x3x1025x2049 for panoptic models)",
    )
    parser.add_argument(
        "--dynamic",
        choices=["batch", "batch,hw", "none"],
        default="batch",
        metavar="AXES",
        help="symbolic axes of the graph: 'batch' (default), 'batch,hw' (batch, height and "
        "width) or 'none'. A model that cannot keep height and width dynamic is refused",
    )
    parser.add_argument(
        "--exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="torch.onnx exporter: torchscript (tracing, fast) or dynamo (torch.export, "
        "opset >= 18, slower) (default: torchscript)",
    )
    parser.add_argument(
        "--opset", type=int, help="ONNX opset (default: 17 for torchscript, 18 for dynamo)"
    )
    parser.add_argument(
        "--rtol", type=float, default=1e-4, help="max relative error vs PyTorch (default: 1e-4)"
    )
    add_seed(parser, what="random inputs (and of --live-random-weights)")
    add_output(parser, "path of the .onnx file")


def run(args: argparse.Namespace) -> int:
    from axial_deploy.export import (
        ExportError,
        check_parity,
        default_opset,
        export_onnx,
        parity_shapes,
    )
    from axial_deploy.models import default_input_shape, prepare_model

    shape = args.input_shape or default_input_shape(args.model)
    model = prepare_model(
        args.model,
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        live_random_weights=args.live_random_weights,
        input_shape=shape,
        seed=args.seed,
    )
    dims = "x".join(map(str, shape))
    opset = args.opset or default_opset(args.exporter)
    start = time.perf_counter()
    print(
        f"[1/2] exporting {args.model} at {dims} (opset {opset}, {args.exporter} exporter, "
        f"dynamic {args.dynamic}) ...",
        flush=True,
    )
    try:
        path = export_onnx(
            model, shape, args.output, opset=opset, dynamic=args.dynamic, exporter=args.exporter
        )
    except ExportError as error:
        raise ExportError(f"{args.model}: {error}") from error
    size_mb = path.stat().st_size / 2**20
    print(f"      wrote {path} ({size_mb:.1f} MiB) in {time.perf_counter() - start:.1f} s")

    print("[2/2] checking ONNX Runtime against PyTorch on random inputs ...", flush=True)
    print(f"      {'input':<16} {'output':<10} {'max abs':>10} {'max rel':>10} {'mean abs':>10}")
    worst = 0.0
    for check, errors in check_parity(model, path, parity_shapes(shape, args.dynamic), args.seed):
        size = "x".join(map(str, check))
        for e in errors:
            print(
                f"      {size:<16} {e.name:<10} {e.max_abs:>10.2e} {e.max_rel:>10.2e} "
                f"{e.mean_abs:>10.2e}"
            )
            worst = max(worst, e.max_rel)  # NaN in one side only is infinite
    if worst > args.rtol:
        print(f"FAILED: max relative error {worst:.2e} exceeds --rtol {args.rtol:.0e}")
        return 1
    print(f"OK: ONNX Runtime matches PyTorch (max rel {worst:.2e} <= {args.rtol:.0e})")
    return 0
