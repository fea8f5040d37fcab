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
  axial-deploy evaluate axial_deeplab_s --checkpoint s.pt --data data/synth --input-size 257x513
  axial-deploy evaluate out/s.onnx out/s.fp16.onnx out/s.int8.onnx --labels fp32 fp16 int8 \
      --data data/synth --strict --panels out/panels --json out/accuracy.json
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


def parse_hw(text: str) -> tuple[int, int]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 2 or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"size {text!r} must be HxW, e.g. 257x513")
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

    evaluate = sub.add_parser(
        "evaluate",
        help="task accuracy (PQ / mIoU or top-1) of models, ONNX graphs and engines",
        description="Evaluate each TARGET on a dataset split and print the metrics side by "
        "side: panoptic PQ / SQ / RQ (COCO panoptic API rules), PQ things / stuff and mIoU, "
        "or top-1 / top-5 for classifiers. With several targets, the accuracy gate compares "
        "each with the reference (--reference) and flags drops above --max-drop points.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="data layouts: panoptic DIR/panoptic_SPLIT.json + DIR/panoptic_SPLIT/*.png + "
        "DIR/images/SPLIT/*.png (COCO panoptic);\nclassification DIR/SPLIT/CLASS/*.png "
        "(class order: DIR/dataset.json 'classes', else sorted folders).",
    )
    evaluate.add_argument(
        "targets",
        nargs="+",
        metavar="TARGET",
        help="zoo model name (with --checkpoint / --pretrained), .onnx file or .engine file",
    )
    evaluate.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    evaluate.add_argument("--split", default="val", help="dataset split (default: val)")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N images")
    evaluate.add_argument("--checkpoint", help="weights for zoo-model targets")
    evaluate.add_argument(
        "--pretrained", action="store_true", help="use the zoo's shipped weights for zoo models"
    )
    evaluate.add_argument(
        "--input-size",
        type=parse_hw,
        metavar="HxW",
        help="resize inputs to HxW (default: a graph's fixed size, else each image's size)",
    )
    evaluate.add_argument("--batch-size", type=int, default=1, help="images per run (default 1)")
    evaluate.add_argument(
        "--labels", nargs="+", help="a label per target (default: fp32 for the first "
        "target, then the file stems)"
    )  # fmt: skip
    evaluate.add_argument(
        "--reference", help="label the gate compares with (default: the first target)"
    )
    evaluate.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="largest allowed drop of the primary metric, in points (PQ 0-100 / top-1 %%; "
        "default 1.0)",
    )
    evaluate.add_argument(
        "--strict", action="store_true", help="exit 1 when the accuracy gate flags a target"
    )
    evaluate.add_argument("--json", metavar="OUT", help="write results and gate as JSON")
    evaluate.add_argument(
        "--panels",
        metavar="DIR",
        help="write input / ground truth / prediction panels (PNG + index.html) here",
    )
    evaluate.add_argument(
        "--panel-count", type=int, default=4, help="images shown in the panels (default 4)"
    )
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


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


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    from axial_deploy.artifacts import atomic_output
    from axial_deploy.evaluate import (
        EvaluationError,
        accuracy_gate,
        comparison_table,
        dataset_task,
        evaluate_many,
    )

    labels = args.labels or ["fp32" if i == 0 else Path(t).stem for i, t in enumerate(args.targets)]
    if len(labels) != len(args.targets) or len(set(labels)) != len(labels):
        raise EvaluationError("--labels needs one distinct label per TARGET")
    targets = dict(zip(labels, args.targets, strict=True))
    panoptic = dataset_task(args.data, args.split) == "panoptic"
    with tempfile.TemporaryDirectory(prefix="axial-eval-") as scratch:
        root = Path(args.panels) / "predictions" if args.panels and panoptic else Path(scratch)
        results = evaluate_many(
            targets,
            args.data,
            predictions_root=root,
            split=args.split,
            limit=args.limit,
            checkpoint=args.checkpoint,
            pretrained=args.pretrained,
            batch_size=args.batch_size,
            input_hw=args.input_size,
        )
    print(comparison_table(results))
    gate = None
    if len(results) > 1:
        gate = accuracy_gate(results, args.reference or labels[0], args.max_drop)
        print(gate.summary())
    if args.panels and panoptic:
        from axial_deploy.panels import render_panels, write_panels_html

        paths = render_panels(
            args.data,
            {label: root / label for label in labels},
            args.panels,
            split=args.split,
            count=args.panel_count,
        )
        page = write_panels_html(paths, Path(args.panels) / "index.html", "Predictions")
        print(f"wrote {len(paths)} panels and {page}")
    elif args.panels:
        print("--panels: only panoptic datasets have panels; none written")
    if args.json:
        document = {
            "results": {label: r.to_json() for label, r in results.items()},
            "gate": gate.to_json() if gate else None,
        }
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(document, indent=2))
        print(f"wrote {args.json}")
    return 1 if args.strict and gate is not None and not gate.passed else 0


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
