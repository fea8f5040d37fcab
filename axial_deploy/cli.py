"""The `axial-deploy` command line: one subcommand per stage of the flow."""

from __future__ import annotations

import argparse
import sys
import time

EPILOG = """\
stages: export -> rewrite -> precision -> build -> run / profile (more subcommands arrive
with each stage). Every stage reads and writes files, so you can stop after any of them,
inspect the artifact (Netron, polygraphy) and go on elsewhere.

examples:
  axial-deploy models
  axial-deploy export --model axial26s -o out/axial26s.onnx
  axial-deploy export --model axial_deeplab_s --input-shape 1x3x513x1025 -o out/s.onnx
"""


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or any(d <= 0 for d in dims) or dims[1] != 3:
        raise argparse.ArgumentTypeError(
            f"input shape {text!r} must be NxCxHxW with positive sizes and C = 3, e.g. 1x3x224x224"
        )
    return dims  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    from axial_deploy.models import list_models

    parser = argparse.ArgumentParser(
        prog="axial-deploy",
        description="Deploy Axial-DeepLab / Axial-ResNet models: export to ONNX, rewrite "
        "axial attention into one fused TensorRT plugin node, build FP16/INT8 engines, "
        "run, verify and profile them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models = sub.add_parser(
        "models",
        help="list the model zoo with parameters and multiply-adds",
        description="List the zoo's models: task, parameters and multiply-adds at the "
        "default input size (counted on PyTorch's meta device: instant, no memory).",
    )
    models.set_defaults(func=cmd_models)

    export = sub.add_parser(
        "export",
        help="export a zoo model to ONNX and check it against PyTorch",
        description="Export a zoo model to ONNX (opset >= 17, TorchScript-based exporter), "
        "then run the ONNX model in ONNX Runtime on a random input and print its error "
        "against PyTorch. Exits with status 1 when the error exceeds --rtol.",
    )
    export.add_argument(
        "--model",
        required=True,
        choices=list_models(),
        metavar="NAME",
        help=f"zoo model: {', '.join(list_models())}",
    )
    export.add_argument(
        "--checkpoint",
        help="weights to load (state_dict or train.py file); default: fresh random weights",
    )
    export.add_argument(
        "--num-classes",
        type=int,
        help="classes of the model's head "
        "(default: the model's: 1000 for classifiers, 19 for panoptic)",
    )
    export.add_argument(
        "--input-shape",
        type=parse_shape,
        help="NxCxHxW (default: 1x3x224x224 for classifiers, 1x3x1025x2049 for panoptic models)",
    )
    export.add_argument(
        "--dynamic",
        choices=["batch", "none"],
        default="batch",
        help="symbolic axes of the graph (default: batch)",
    )
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    export.add_argument(
        "--rtol",
        type=float,
        default=1e-4,
        help="max relative error against PyTorch (default: 1e-4, fp32)",
    )
    export.add_argument("--seed", type=int, default=0, help="seed of the random input")
    export.add_argument("-o", "--output", required=True, help="path of the .onnx file")
    export.set_defaults(func=cmd_export)
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from axial_deploy.models import create_model, default_input_shape, list_models, model_task
    from axial_deploy.models.complexity import count_madds, count_parameters

    print(f"{'model':<18} {'task':<15} {'params (M)':>10} {'input':>16} {'M-Adds (B)':>11}")
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name)
        shape = default_input_shape(name)
        madds = count_madds(model, shape)
        dims = "x".join(map(str, shape))
        print(
            f"{name:<18} {model_task(name):<15} {count_parameters(model) / 1e6:>10.2f} "
            f"{dims:>16} {madds / 1e9:>11.1f}"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from axial_deploy.export import compare_with_onnxruntime, export_onnx
    from axial_deploy.models import create_model, default_input_shape, load_checkpoint

    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = create_model(args.model, **kwargs)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model.eval()
    shape = args.input_shape or default_input_shape(args.model)
    dims = "x".join(map(str, shape))

    start = time.perf_counter()
    print(f"[1/2] exporting {args.model} at {dims} (opset {args.opset}) ...", flush=True)
    path = export_onnx(
        model, shape, args.output, opset=args.opset, dynamic_batch=args.dynamic == "batch"
    )
    size_mb = path.stat().st_size / 2**20
    print(f"      wrote {path} ({size_mb:.1f} MiB) in {time.perf_counter() - start:.1f} s")

    print("[2/2] checking ONNX Runtime against PyTorch on a random input ...", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn(shape, generator=generator)
    errors = compare_with_onnxruntime(model, path, inputs)
    print(f"      {'output':<10} {'max abs':>10} {'max rel':>10} {'mean abs':>10}")
    for e in errors:
        print(f"      {e.name:<10} {e.max_abs:>10.2e} {e.max_rel:>10.2e} {e.mean_abs:>10.2e}")
    worst = max(e.max_rel for e in errors)
    if worst > args.rtol:
        print(f"FAILED: max relative error {worst:.2e} exceeds --rtol {args.rtol:.0e}")
        return 1
    print(f"OK: ONNX Runtime matches PyTorch (max rel {worst:.2e} <= {args.rtol:.0e})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from axial_deploy.export import ExportError
    from axial_deploy.models import CheckpointError

    try:
        return args.func(args)
    except (CheckpointError, ExportError, ValueError) as error:
        print(f"axial-deploy {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
