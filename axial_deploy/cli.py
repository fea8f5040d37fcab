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
  axial-deploy deploy                       (the whole flow on the built-in trained model)
  axial-deploy models
  axial-deploy export --model axial26s -o out/axial26s.onnx
  axial-deploy export --model axial_deeplab_s --input-shape 1x3x513x1025 -o out/s.onnx
  axial-deploy export --model axial26s --dynamic batch,hw --exporter dynamo -o out/a.onnx
  axial-deploy rewrite out/s.onnx -o out/s.axial.onnx --report out/s.rewrite.json
  axial-deploy verify out/s.onnx out/s.axial.onnx
  axial-deploy verify out/s.onnx out/s.axial.onnx --batch 2
  axial-deploy quantize out/s.axial.onnx --precision fp16 -o out/s.fp16.onnx
  axial-deploy quantize out/s.axial.onnx --precision int8 --calib data/calib_images \
      --method entropy --batches 32 -o out/s.int8.onnx      (also writes out/s.int8.calib)
  axial-deploy compare out/s.axial.onnx out/s.fp16.onnx out/s.int8.onnx --json out/acc.json
  axial-deploy build out/axial26s.onnx --backend tensorrt-rtx -o out/axial26s.engine
  axial-deploy build out/s.axial.onnx --timing-cache out/tc.bin -o out/s.engine
  axial-deploy build out/a.onnx --shapes images:1x3x224x224/4x3x224x224/8x3x224x224 -o a.engine
  axial-deploy run out/s.engine --input street.png
  axial-deploy profile out/s.engine --iterations 200 --cuda-graph --report out/s.profile
  axial-deploy profile out/axial26s.onnx --duration 5 --batch 4
  axial-deploy doctor
  axial-deploy dataset panoptic --out data/synthetic_panoptic --seed 0
  axial-deploy train --model axial_deeplab_tiny --data data/synthetic_panoptic -o out/tiny.pt
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

    quantize = sub.add_parser(
        "quantize",
        help="FP32 graph -> strongly typed FP16 graph or explicit INT8 (Q/DQ) graph",
        description="Measure activation ranges of the FP32 graph in ONNX Runtime on "
        "calibration inputs, then write a strongly typed FP16 graph (ops that overflow FP16 "
        "or are precision-sensitive stay FP32 behind Casts) or an INT8 graph with "
        "QuantizeLinear/DequantizeLinear where TensorRT fuses them (Conv/Gemm/MatMul inputs, "
        "per-channel symmetric weights, residual Adds; AxialAttention stays FP16/FP32). For "
        "INT8 it also writes TensorRT's calibration cache (text, TensorRT 10 implicit INT8) "
        "from the same ranges. Check the result with `axial-deploy compare`.",
    )
    quantize.add_argument("model", metavar="IN.onnx", help="FP32 graph (rewritten or not)")
    quantize.add_argument("-o", "--output", required=True, help="path of the output .onnx")
    quantize.add_argument("--precision", required=True, choices=["fp16", "int8"])
    quantize.add_argument(
        "--calib",
        metavar="SRC",
        help="calibration inputs: a folder of images (preprocessed as the model expects), a "
        ".npy/.npz file or folder of preprocessed NCHW tensors, or 'synthetic' (random "
        "images, for smoke runs only; the default)",
    )
    quantize.add_argument(
        "--method",
        choices=["entropy", "percentile", "minmax"],
        default="entropy",
        help="INT8 activation thresholds: KL-divergence (entropy, default), 99.99th "
        "percentile, or max |x| (fp16 always uses max |x| to find overflows)",
    )
    quantize.add_argument(
        "--batches", type=int, default=8, help="calibration batches to use (default: 8)"
    )
    quantize.add_argument("--batch-size", type=int, default=1, help="batch size (default: 1)")
    quantize.add_argument("--seed", type=int, default=0, help="seed of synthetic inputs")
    quantize.add_argument(
        "--cache",
        metavar="PATH",
        help="TensorRT calibration cache to write (default for int8: OUT with suffix .calib)",
    )
    quantize.add_argument(
        "--io-fp16",
        action="store_true",
        help="fp16: make graph inputs/outputs FP16 too (default: they stay FP32)",
    )
    quantize.add_argument(
        "--attention-precision",
        choices=["fp16", "fp32"],
        default="fp16",
        help="int8: I/O type of the AxialAttention nodes (default: fp16)",
    )
    quantize.add_argument(
        "--quantizer",
        choices=["native", "modelopt"],
        default="native",
        help="native (default, needs nothing extra) or NVIDIA ModelOpt (int8; must be installed)",
    )
    quantize.add_argument("--report", help="write the quantization report as JSON to this path")
    quantize.set_defaults(func=cmd_quantize)

    compare = sub.add_parser(
        "compare",
        help="accuracy of FP16 / INT8 graphs against the FP32 graph in ONNX Runtime",
        description="Run the reference graph and each candidate on the same held-out inputs "
        "in ONNX Runtime and print, per output, max / mean abs and max rel error, plus task "
        "agreement: top-1 agreement for classifiers, pixel agreement and mIoU between the "
        "argmax predictions of the semantic output for panoptic models. The default inputs "
        "are synthetic with seed 1, which calibration (seed 0) never saw.",
    )
    compare.add_argument("reference", metavar="REF.onnx", help="FP32 graph")
    compare.add_argument(
        "candidates",
        metavar="[LABEL=]CAND.onnx",
        nargs="+",
        help="graphs to compare (label defaults to the file name)",
    )
    compare.add_argument(
        "--inputs",
        metavar="SRC",
        help="held-out inputs, as --calib of quantize (default: synthetic)",
    )
    compare.add_argument("--batches", type=int, default=4, help="batches to run (default: 4)")
    compare.add_argument(
        "--seed", type=int, default=1, help="seed of synthetic inputs (default: 1)"
    )
    compare.add_argument(
        "--task",
        choices=["classification", "panoptic"],
        help="task metric (default: panoptic if the graph has a 'semantic' output)",
    )
    compare.add_argument("--json", help="write the report as JSON to this path")
    compare.set_defaults(func=cmd_compare)
    build = sub.add_parser(
        "build",
        help="build a TensorRT / TensorRT-RTX engine from an ONNX graph",
        description="Build an engine from an ONNX graph with TensorRT 10/11 (strongly typed: "
        "the graph's types from the precision stage decide) or TensorRT-RTX (ahead of time, "
        "also on CPU-only machines; no plugins, so only graphs without AxialAttention nodes). "
        "One optimization profile: from --shapes, else from the graph (a dynamic batch axis "
        "gets 1/1/8). Writes ENGINE and ENGINE.json (versions, GPU, profiles, I/O, sha256s).",
    )
    build.add_argument("model", metavar="MODEL.onnx", help="graph to build")
    build.add_argument("-o", "--output", required=True, help="path of the engine")
    build.add_argument(
        "--backend",
        choices=["tensorrt", "tensorrt-rtx"],
        default="tensorrt",
        help="tensorrt (default; GPU, plugins) or tensorrt-rtx (plugin-free graphs, CPU build)",
    )
    build.add_argument(
        "--plugins",
        metavar="LIB",
        help="AxialAttention plugin library (default: build/lib/libaxial_attention_plugin.so "
        "when it exists)",
    )
    build.add_argument(
        "--serialize-plugin",
        action="store_true",
        help="embed the plugin library in the engine (no library needed where it runs)",
    )
    build.add_argument(
        "--shapes",
        nargs="+",
        default=[],
        metavar="NAME:MIN/OPT/MAX",
        help="profile shapes per input, e.g. input:1x3x224x224/4x3x224x224/8x3x224x224",
    )
    build.add_argument("--workspace", type=int, metavar="MB", help="builder workspace limit")
    build.add_argument(
        "--timing-cache", metavar="FILE", help="read (when it exists) and update this cache"
    )
    build.add_argument(
        "--fp16", action="store_true", help="TensorRT 10 only, legacy weakly typed FP16"
    )
    build.add_argument(
        "--int8", action="store_true", help="TensorRT 10 only, legacy INT8 (needs --calib-cache)"
    )
    build.add_argument("--calib-cache", metavar="FILE", help="INT8 calibration cache (legacy)")
    build.set_defaults(func=cmd_build)

    run = sub.add_parser(
        "run",
        help="run an engine or ONNX model on a .npy array or an image",
        description="Run ENGINE (TensorRT, manifest-checked) or ONNX (ONNX Runtime) on one "
        "input: a .npy array, or an image preprocessed as the model expects (resized to the "
        "model's input size; panoptic models are recognized by their semantic/center/offset "
        "outputs). Prints each output's shape and range; --output saves them as .npz.",
    )
    run.add_argument("model", metavar="ENGINE|ONNX")
    run.add_argument("--input", required=True, metavar="FILE.npy|IMAGE")
    run.add_argument("-o", "--output", metavar="FILE.npz", help="save the outputs here")
    run.add_argument(
        "--cuda", choices=["cuda-python", "pycuda"], default="cuda-python", help="CUDA binding"
    )
    run.set_defaults(func=cmd_run)

    profile = sub.add_parser(
        "profile",
        help="latency statistics, throughput and per-layer times",
        description="Time ENGINE or ONNX on random inputs: warm-up, then --iterations runs "
        "(or --duration seconds); prints min / mean / median / p90 / p95 / p99 latency and "
        "throughput; for engines also the H2D / compute / D2H split and the time per model "
        "block (TensorRT's profiler) with the AxialAttention plugin's share. --report writes "
        "REPORT.json and REPORT.html (latency histogram, per-block bar chart).",
    )
    profile.add_argument("model", metavar="ENGINE|ONNX")
    profile.add_argument("--warmup", type=float, default=1.0, metavar="S", help="default 1 s")
    length = profile.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, metavar="N", help="timed runs (default 100)")
    length.add_argument("--duration", type=float, metavar="S", help="time for S seconds")
    profile.add_argument("--batch", type=int, default=1, help="size of a dynamic batch axis")
    profile.add_argument("--cuda-graph", action="store_true", help="replay a CUDA graph")
    profile.add_argument(
        "--cuda", choices=["cuda-python", "pycuda"], default="cuda-python", help="CUDA binding"
    )
    profile.add_argument("--report", metavar="PREFIX", help="write PREFIX.json and PREFIX.html")
    profile.set_defaults(func=cmd_profile)

    doctor = sub.add_parser(
        "doctor",
        help="check torch, ONNX Runtime, TensorRT, CUDA, GPU and the plugin library",
        description="Report what this machine has for each stage and what to do for what is "
        "missing. Exits with status 1 when something the CPU flow needs is missing.",
    )
    doctor.add_argument("--plugins", metavar="LIB", help="plugin library to check")
    doctor.set_defaults(func=cmd_doctor)

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

    from axial_deploy.deploy import BACKEND_CHOICES, DEFAULT_MODEL

    deploy = sub.add_parser(
        "deploy",
        help="the whole pipeline in one command, ending in one HTML + JSON report",
        description="export -> rewrite -> verify -> precision (FP32/FP16/INT8 of the "
        "rewritten and the plain graph) -> task accuracy per variant with the accuracy gate "
        "and prediction panels -> engine build (TensorRT with the plugin where installed, "
        "else TensorRT-RTX on the plain graphs, else skipped with the reason) -> latency "
        "profile -> OUT/report.html and OUT/report.json. Without --data, the model's "
        "synthetic dataset is generated under OUT/data (its held-out val split).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  axial-deploy deploy    (axial_deeplab_tiny with its shipped "
        "weights)\n  axial-deploy deploy --model axial26_tiny --precision fp32,int8 --out "
        "out/cls\n  axial-deploy deploy --model axial_deeplab_s --checkpoint s.pt --data "
        "data/synth --input-size 257x513 --strict",
    )
    deploy.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        choices=list_models(),
        metavar="NAME",
        help=f"zoo model (default {DEFAULT_MODEL}, which ships trained weights)",
    )
    deploy.add_argument("--checkpoint", help="weights to deploy (default: the shipped ones)")
    deploy.add_argument(
        "--num-classes", type=int, help="classes of --checkpoint's head (default: the dataset's)"
    )
    deploy.add_argument(
        "--precision",
        default="fp32,fp16,int8",
        metavar="LIST",
        help="comma-separated precisions (default fp32,fp16,int8; fp32 is always the reference)",
    )
    deploy.add_argument(
        "--calib",
        metavar="SRC",
        help="INT8 calibration data: image folder, .npy/.npz, or 'synthetic' (default: the "
        "dataset's train images)",
    )
    deploy.add_argument(
        "--calib-batches", type=int, default=16, help="calibration batches (default 16)"
    )
    deploy.add_argument(
        "--data", metavar="DIR", help="evaluation dataset (default: generate OUT/data)"
    )
    deploy.add_argument(
        "--eval-images", type=int, default=100, help="val images evaluated (default 100)"
    )
    deploy.add_argument(
        "--input-size",
        type=parse_hw,
        metavar="HxW",
        help="input height x width (default: the weights' training size, else the zoo's)",
    )
    deploy.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="accuracy gate: largest allowed drop vs FP32 in points (default 1.0)",
    )
    deploy.add_argument(
        "--strict", action="store_true", help="exit 1 when the accuracy gate flags a variant"
    )
    deploy.add_argument(
        "--panels", type=int, default=4, help="prediction panels in the report (default 4)"
    )
    deploy.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="engine builder (default auto: TensorRT, else TensorRT-RTX, else none)",
    )
    deploy.add_argument("--plugins", metavar="LIB", help="AxialAttention plugin library")
    deploy.add_argument(
        "--iterations", type=int, default=50, help="timed runs per variant (default 50)"
    )
    deploy.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    deploy.add_argument(
        "--out", default="out/deploy", metavar="DIR", help="output folder (default out/deploy)"
    )
    deploy.set_defaults(func=cmd_deploy)
    # Serving: add_*_arguments / run_* pairs (move into the cli/ package at the split).
    import inspect

    from axial_deploy.serving import cli_commands as serving

    for command, add, run in (
        ("serve", serving.add_serve_arguments, serving.run_serve),
        ("triton-repo", serving.add_triton_repo_arguments, serving.run_triton_repo),
        ("infer", serving.add_infer_arguments, serving.run_infer),
        ("loadtest", serving.add_loadtest_arguments, serving.run_loadtest),
    ):
        doc = inspect.cleandoc(run.__doc__ or "")
        command_parser = sub.add_parser(command, help=doc.split("\n")[0], description=doc)
        command_parser.formatter_class = parser.formatter_class  # keeps the paragraphs
        add(command_parser)
        command_parser.set_defaults(func=run)
    return parser


def cmd_deploy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from axial_deploy.deploy import DeploySettings, deploy, parse_precisions

    settings = DeploySettings(
        model=args.model,
        out=Path(args.out),
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        input_hw=args.input_size,
        precisions=parse_precisions(args.precision),
        calib=args.calib,
        calib_batches=args.calib_batches,
        data=args.data,
        eval_images=args.eval_images,
        max_drop=args.max_drop,
        panels=args.panels,
        backend=args.backend,
        plugin_library=args.plugins,
        iterations=args.iterations,
        seed=args.seed,
    )
    report = deploy(settings)
    gate = report.get("accuracy", {}).get("gate")
    return 1 if args.strict and gate is not None and not gate["passed"] else 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from axial_deploy.quantize import quantize_file, write_json

    print(f"quantizing {args.model} to {args.precision} ...", flush=True)
    report = quantize_file(
        args.model,
        args.output,
        precision=args.precision,
        calib=args.calib,
        method=args.method,
        batches=args.batches,
        batch_size=args.batch_size,
        seed=args.seed,
        cache_path=args.cache,
        keep_io_fp32=not args.io_fp16,
        attention_precision=args.attention_precision,
        quantizer=args.quantizer,
        progress=True,
    )
    print(report.summary())
    if args.report:
        write_json(report, args.report)
    print(f"wrote {args.output}" + (f" and {args.report}" if args.report else ""))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from axial_deploy.quantize import accuracy_report, write_json

    candidates = {}
    for text in args.candidates:
        label, sep, path = text.partition("=")
        if not sep:
            label, path = Path(text).name, text
        candidates[label] = path
    report = accuracy_report(
        args.reference,
        candidates,
        inputs=args.inputs,
        batches=args.batches,
        seed=args.seed,
        task=args.task,
        progress=True,
    )
    print(report.summary())
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from axial_deploy.build import BuildOptions, build_engine, parse_shape_spec

    options = BuildOptions(
        backend=args.backend,
        plugin_library=args.plugins,
        serialize_plugin=args.serialize_plugin,
        shapes=dict(parse_shape_spec(spec) for spec in args.shapes),
        workspace_mb=args.workspace,
        timing_cache=args.timing_cache,
        fp16=args.fp16,
        int8=args.int8,
        calib_cache=args.calib_cache,
        progress=True,
    )
    print(f"building {args.model} with {args.backend} ...", flush=True)
    manifest = build_engine(args.model, args.output, options)
    size_mb = Path(args.output).stat().st_size / 2**20
    print(
        f"wrote {args.output} ({size_mb:.1f} MiB, {manifest.precision}, built in "
        f"{manifest.build_seconds:.1f} s) and {args.output}.json"
    )
    for name, (low, opt, high) in manifest.profiles[0].items():
        print(f"  profile {name}: min {low} opt {opt} max {high}")
    for key, note in manifest.extra.items():
        print(f"  note ({key}): {note}")
    return 0


def _task_of(output_names: list[str]) -> str:
    return "panoptic" if {"semantic", "center", "offset"} & set(output_names) else "classification"


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from axial_deploy.models.preprocess import preprocess_for
    from axial_deploy.runtime import Engine

    engine = Engine(args.model, cuda=args.cuda)
    if len(engine.inputs) != 1:
        raise ValueError(f"run feeds one input; {args.model} has {len(engine.inputs)}")
    meta = engine.inputs[0]
    path = Path(args.input)
    if path.suffix == ".npy":
        array = np.load(path)
    else:
        if len(meta.shape) != 4 or min(meta.shape[2:]) < 0:
            raise ValueError(
                f"{args.model}: input {meta.name!r} {list(meta.shape)} has no fixed height and "
                "width to resize an image to; feed a .npy array instead"
            )
        task = _task_of([m.name for m in engine.outputs])
        array = preprocess_for(task, tuple(meta.shape[2:])).load(path)[None]
    outputs = engine.infer({meta.name: array})
    print(f"{engine.backend}: {engine.last_inference_time * 1e3:.2f} ms")
    for name, value in outputs.items():
        print(
            f"  {name:<12} {list(value.shape)} {value.dtype} "
            f"min {value.min():.4g} max {value.max():.4g} mean {value.mean():.4g}"
        )
    if args.output:
        from axial_deploy.artifacts import atomic_output

        with atomic_output(args.output) as tmp, open(tmp, "wb") as stream:
            np.savez(stream, **outputs)
        print(f"wrote {args.output}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from axial_deploy.profile import profile_engine
    from axial_deploy.report import write_html, write_json
    from axial_deploy.runtime import Engine

    engine = Engine(args.model, cuda=args.cuda)
    result = profile_engine(
        engine,
        batch=args.batch,
        warmup_s=args.warmup,
        iterations=args.iterations,
        duration_s=args.duration,
        cuda_graph=args.cuda_graph,
    )
    s = result.latency
    print(f"{engine.backend}, batch {s.batch}, {s.count} runs")
    print(
        f"latency ms: min {s.min_ms:.3f} mean {s.mean_ms:.3f} median {s.median_ms:.3f} "
        f"p90 {s.p90_ms:.3f} p95 {s.p95_ms:.3f} p99 {s.p99_ms:.3f}"
    )
    print(f"throughput: {s.throughput_per_s:.1f} samples/s")
    if result.split_ms:
        print("split ms: " + ", ".join(f"{k} {v:.3f}" for k, v in result.split_ms.items()))
    if result.layers is not None:
        layers = result.layers
        print(f"{'block':<24} {'ms':>9} {'share':>7}")
        for block, ms, share in layers.blocks:
            print(f"{block:<24} {ms:>9.4f} {100 * share:>6.1f}%")
        print(f"AxialAttention plugin share: {100 * layers.axial_attention_share:.1f}%")
        print("slowest layers:")
        for layer, ms in layers.layers[:10]:
            print(f"  {ms:>9.4f} ms  {layer}")
    for note in result.notes:
        print(f"note: {note}")
    if args.report:
        json_path = write_json(result, f"{args.report}.json")
        html_path = write_html(result, f"{args.report}.html")
        print(f"wrote {json_path} and {html_path}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from axial_deploy.doctor import format_checks, run_checks

    checks = run_checks(args.plugins)
    print(format_checks(checks))
    return 1 if any(c.required and not c.ok for c in checks) else 0


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
