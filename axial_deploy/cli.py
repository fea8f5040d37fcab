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
  axial-deploy export --model axial26s --dynamic batch,hw --exporter dynamo -o out/a.onnx
  axial-deploy rewrite out/s.onnx -o out/s.axial.onnx --report out/s.rewrite.json
  axial-deploy verify out/s.onnx out/s.axial.onnx
  axial-deploy verify out/s.onnx out/s.axial.onnx --batch 2
  axial-deploy dataset panoptic --out data/synthetic_panoptic --seed 0
  axial-deploy train --model axial_deeplab_tiny --data data/synthetic_panoptic -o out/tiny.pt
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
        description="Export a zoo model to ONNX (opset >= 17; TorchScript-based or dynamo "
        "exporter), then run the ONNX model in ONNX Runtime on random inputs and print its "
        "error against PyTorch: at the export shape and, for dynamic axes, at a second shape "
        "(batch + 1; about 3/4 of the height and width with --dynamic batch,hw). Exits with "
        "status 1 when the error exceeds --rtol.",
    )
    export.add_argument(
        "--model",
        required=True,
        choices=list_models(),
        metavar="NAME",
        help=f"zoo model: {', '.join(list_models())}",
    )
    export.add_argument(
        "--live-random-weights",
        action="store_true",
        help="without --checkpoint: random BatchNorm statistics and live residual branches, "
        "so every attention layer affects the outputs (a fresh model zero-initializes them, "
        "which makes any parity check pass trivially)",
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
        choices=["batch", "batch,hw", "none"],
        default="batch",
        metavar="AXES",
        help="symbolic axes of the graph: 'batch' (default), 'batch,hw' (batch, height and "
        "width) or 'none'. A model that cannot keep height and width dynamic is refused",
    )
    export.add_argument(
        "--exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="torch.onnx exporter: torchscript (tracing, fast) or dynamo (torch.export, "
        "opset >= 18, slower) (default: torchscript)",
    )
    export.add_argument(
        "--opset", type=int, help="ONNX opset (default: 17 for torchscript, 18 for dynamo)"
    )
    export.add_argument(
        "--rtol",
        type=float,
        default=1e-4,
        help="max relative error against PyTorch (default: 1e-4, fp32)",
    )
    export.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    export.add_argument("-o", "--output", required=True, help="path of the .onnx file")
    export.set_defaults(func=cmd_export)

    verify = sub.add_parser(
        "verify",
        help="compare two ONNX models on the same random inputs in ONNX Runtime",
        description="Run ONNX models A (reference) and B on the same random N(0, 1) inputs in "
        "ONNX Runtime (AxialAttention nodes run through the reference op) and print, per "
        "output, max abs, max rel (max abs / max |A|) and mean abs errors. An output fails "
        "when max abs > atol + rtol * max |A|; exits with status 1 if any fails. Outputs "
        "match by name, or by position when names differ but counts agree.",
    )
    verify.add_argument("model_a", metavar="A.onnx", help="reference model")
    verify.add_argument("model_b", metavar="B.onnx", help="model to check against A")
    verify.add_argument(
        "--rtol", type=float, default=1e-4, help="relative tolerance (default: 1e-4)"
    )
    verify.add_argument(
        "--atol", type=float, default=1e-6, help="absolute tolerance (default: 1e-6)"
    )
    verify.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    verify.add_argument(
        "--batch",
        type=int,
        default=1,
        help="size of a symbolic batch axis (default: 1); other axes must be static",
    )
    verify.set_defaults(func=cmd_verify)

    rewrite = sub.add_parser(
        "rewrite",
        help="replace every axial-attention layer by one AxialAttention plugin node",
        description="Find every position-sensitive axial-attention layer of an ONNX graph "
        "(any exporter; static height and width) and replace it, from its input to its "
        "output, by a 1x1 Conv (qkv projection, BatchNorms folded) feeding one AxialAttention "
        "node. Each layer's constants are read by probing its pieces in ONNX Runtime, and the "
        "replacement must reproduce the layer (fp32 max rel err < 1e-4) or the layer is left "
        "intact and reported. Prints a summary; --report writes it as JSON.",
    )
    rewrite.add_argument("model", metavar="IN.onnx", help="graph to rewrite")
    rewrite.add_argument("-o", "--output", required=True, help="path of the rewritten .onnx")
    rewrite.add_argument("--report", help="write the per-layer report as JSON to this path")
    rewrite.add_argument(
        "--strict",
        action="store_true",
        help="fail (writing nothing) when any attention-like layer is left intact",
    )
    rewrite.set_defaults(func=cmd_rewrite)

    dataset = sub.add_parser(
        "dataset",
        help="generate a synthetic panoptic or classification dataset (deterministic by seed)",
        description="Generate a synthetic dataset (numpy + PIL, seconds): 'panoptic' writes "
        "scenes of stuff (sky, wall, ground) and thing instances (disc, box, triangle, ring) "
        "in the COCO panoptic format (DIR/panoptic_SPLIT.json, DIR/panoptic_SPLIT/*.png, "
        "DIR/images/SPLIT/*.png) plus semantic and instance maps; 'classification' writes one "
        "shape (5 classes) per image as DIR/SPLIT/CLASS/*.png. The same seed gives "
        "byte-identical files; DIR/dataset.json records the seed, sizes, counts and command.",
    )
    dataset.add_argument("kind", choices=["panoptic", "classification"])
    dataset.add_argument("--out", required=True, help="output directory")
    dataset.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    dataset.add_argument(
        "--train", type=int, help="training images (default: 500 panoptic, 4000 classification)"
    )
    dataset.add_argument(
        "--val", type=int, help="validation images (default: 100 panoptic, 500 classification)"
    )
    dataset.add_argument(
        "--size",
        type=parse_size,
        help="HxW of the images (default: 129x129 panoptic, 64x64 classification)",
    )
    dataset.set_defaults(func=cmd_dataset)

    train = sub.add_parser(
        "train",
        help="train a small zoo model on a (synthetic) dataset on CPU",
        description="Train a zoo model on a dataset written by `axial-deploy dataset` (or any "
        "dataset in the same layout): panoptic models with the Panoptic-DeepLab targets and "
        "losses (bootstrapped cross-entropy, center heatmap MSE, offset L1), classifiers with "
        "cross-entropy; Adam with a poly schedule, horizontal flips. Saves CKPT (fp16 "
        "state_dict) and CKPT.json (command, seed, dataset record, losses, train time and the "
        "val PQ/SQ/RQ/mIoU or top-1 of the saved weights).",
    )
    train.add_argument(
        "--model", required=True, choices=list_models(), metavar="NAME", help="zoo model"
    )
    train.add_argument("--data", required=True, help="dataset directory (with dataset.json)")
    train.add_argument(
        "--epochs", type=int, help="passes over the train split (default: 16 panoptic, 6 cls)"
    )
    train.add_argument(
        "--batch-size", type=int, help="images per step (default: 8 panoptic, 32 cls)"
    )
    train.add_argument(
        "--lr", type=float, help="Adam learning rate (default: 1e-3 panoptic, 2e-3 cls)"
    )
    train.add_argument("--seed", type=int, default=0, help="seed of init and order (default: 0)")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    train.add_argument("-o", "--output", required=True, help="checkpoint path (.pt)")
    train.set_defaults(func=cmd_train)
    return parser


def parse_size(text: str) -> tuple[int, int]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 2 or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"size {text!r} must be HxW, e.g. 129x129")
    return dims  # type: ignore[return-value]


def cmd_dataset(args: argparse.Namespace) -> int:
    from axial_deploy.synthetic import generate_classification, generate_panoptic

    generate = generate_panoptic if args.kind == "panoptic" else generate_classification
    options = {
        key: value
        for key, value in (("train", args.train), ("val", args.val), ("size", args.size))
        if value is not None
    }
    start = time.perf_counter()
    record = generate(args.out, seed=args.seed, **options)
    counts = ", ".join(f"{split}: {c['images']} images" for split, c in record["counts"].items())
    print(f"wrote {args.kind} dataset {args.out} ({counts}) in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from axial_deploy.models import model_task
    from axial_deploy.train import TrainSettings, train

    panoptic = model_task(args.model) == "panoptic"
    settings = TrainSettings(
        model=args.model,
        data=args.data,
        epochs=args.epochs or (16 if panoptic else 6),
        batch_size=args.batch_size or (8 if panoptic else 32),
        lr=args.lr or (1e-3 if panoptic else 2e-3),
        seed=args.seed,
        threads=args.threads,
    )
    command = " ".join(shlex.quote(a) for a in ["axial-deploy", *args.argv])
    record = train(settings, args.output, command=command)
    print(f"trained in {record['train_time_s']:.0f} s; val: {record['val_metrics']}")
    print(f"wrote {args.output} and {Path(args.output).with_suffix('.json')}")
    return 0


def cmd_rewrite(args: argparse.Namespace) -> int:
    from axial_deploy.rewrite import rewrite_file

    print(f"rewriting {args.model} ...", flush=True)
    report = rewrite_file(args.model, args.output, report_path=args.report, strict=args.strict)
    print(report.summary())
    print(f"wrote {args.output}" + (f" and {args.report}" if args.report else ""))
    return 0


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

    from axial_deploy.export import (
        ExportError,
        compare_with_onnxruntime,
        default_opset,
        export_onnx,
        second_shape,
    )
    from axial_deploy.models import create_model, default_input_shape, load_checkpoint

    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = create_model(args.model, **kwargs)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    elif args.live_random_weights:
        from axial_deploy.models.random_init import calibrate_batchnorm

        generator = torch.Generator().manual_seed(args.seed)
        shape = args.input_shape or default_input_shape(args.model)
        calibration = torch.randn((2, *shape[1:]), generator=generator)
        with torch.no_grad():
            calibrate_batchnorm(model, calibration, seed=args.seed, residual_gain=0.1)
    model.eval()
    shape = args.input_shape or default_input_shape(args.model)
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

    # Every dynamic axis is exercised: a graph that baked a size in fails the second shape.
    shapes = [shape]
    if second := second_shape(shape, args.dynamic):
        shapes.append(second)
    print("[2/2] checking ONNX Runtime against PyTorch on random inputs ...", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"      {'input':<16} {'output':<10} {'max abs':>10} {'max rel':>10} {'mean abs':>10}")
    worst = 0.0
    for check in shapes:
        inputs = torch.randn(check, generator=generator)
        errors = compare_with_onnxruntime(model, path, inputs)
        size = "x".join(map(str, check))
        for e in errors:
            print(
                f"      {size:<16} {e.name:<10} {e.max_abs:>10.2e} {e.max_rel:>10.2e} "
                f"{e.mean_abs:>10.2e}"
            )
        worst = max([worst, *(e.max_rel for e in errors)])
    if worst > args.rtol:
        print(f"FAILED: max relative error {worst:.2e} exceeds --rtol {args.rtol:.0e}")
        return 1
    print(f"OK: ONNX Runtime matches PyTorch (max rel {worst:.2e} <= {args.rtol:.0e})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from axial_deploy.verify import format_report, verify_models

    report = verify_models(
        args.model_a,
        args.model_b,
        rtol=args.rtol,
        atol=args.atol,
        seed=args.seed,
        batch=args.batch,
    )
    print(format_report(report))
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by `train`
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
