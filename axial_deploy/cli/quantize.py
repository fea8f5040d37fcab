"""FP32 graph -> strongly typed FP16 graph or explicit INT8 / FP8 (Q/DQ) graph.

Measures activation ranges of the FP32 graph in ONNX Runtime on calibration inputs, then
writes a strongly typed FP16 graph (ops that overflow FP16 or are precision-sensitive stay FP32
behind Casts) or an INT8 / FP8 (E4M3, opset 19) graph with QuantizeLinear/DequantizeLinear where
TensorRT fuses them (Conv/Gemm/MatMul inputs, per-channel symmetric weights, residual Adds;
AxialAttention stays FP16/FP32). For INT8 it also writes TensorRT's calibration cache (text,
TensorRT 10 implicit INT8) from the same ranges. FP8 engines need a GPU of compute capability
8.9 or newer (Ada, Hopper, Blackwell, Thor). Check the result with `axial-deploy compare`.

With --max-drop D and --data DIR, INT8 keeps its most error-prone layers (ranked by the
error each adds on its own) in FP32, the fewest a search finds, until the task metric (PQ / top-1)
on DIR is within D points of FP32; a JSON record says which layers and why
(docs/precision-budget.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from axial_deploy.cli.args import (
    Files,
    add_batch_size,
    add_calib_batches,
    add_output,
    add_report,
    add_seed,
    positive_int,
)
from axial_deploy.errors import CHECK_FAILED

CALIB_HELP = (
    "a folder of images (preprocessed as the model expects), a .npy/.npz file or folder of "
    "preprocessed NCHW tensors, or 'synthetic' (random images, for smoke runs only)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="IN.onnx", help="FP32 graph (rewritten or not)")
    add_output(parser, "path of the output .onnx")
    parser.add_argument(
        "--precision", required=True, choices=["fp16", "int8", "fp8"], help="precision of the graph"
    )
    parser.add_argument(
        "--calib", metavar="SRC", help=f"calibration inputs: {CALIB_HELP} (default: synthetic)"
    )
    parser.add_argument(
        "--method",
        choices=["entropy", "percentile", "minmax"],
        help="activation thresholds. int8: KL-divergence (entropy, default), 99.99th "
        "percentile, or max |x| (minmax). fp8: minmax (default) or percentile; not entropy, "
        "whose KL is measured against INT8's 128 uniform levels, while FP8's relative "
        "precision is nearly constant, so clipping gains little. fp16 always uses max |x| to "
        "find overflows",
    )
    add_calib_batches(parser, "calibration batches", old_batches=True)
    add_batch_size(parser, "images per calibration batch")
    add_seed(parser, what="synthetic calibration inputs")
    parser.add_argument(
        "--cache",
        metavar="PATH",
        help="TensorRT calibration cache to write (default for int8: OUT with suffix .calib)",
    )
    parser.add_argument(
        "--io-fp16",
        action="store_true",
        help="fp16: make graph inputs/outputs FP16 too (default: they stay FP32)",
    )
    parser.add_argument(
        "--attention-precision",
        choices=["fp16", "fp32"],
        default="fp16",
        help="int8/fp8: I/O type of the AxialAttention nodes (default: fp16)",
    )
    parser.add_argument(
        "--quantizer",
        choices=["native", "modelopt"],
        default="native",
        help="native (default, needs nothing extra) or NVIDIA ModelOpt (int8; must be installed)",
    )
    budget = parser.add_argument_group("accuracy budget (int8, fp8)")
    budget.add_argument(
        "--max-drop",
        type=float,
        metavar="D",
        help="keep the layers that add the most error unquantized (FP32) until the task "
        "metric is within D points of FP32 (PQ 0-100 / top-1 %%); needs --data",
    )
    budget.add_argument(
        "--data", metavar="DIR", help="--max-drop: dataset the task metric is measured on"
    )
    budget.add_argument("--split", default="val", help="--max-drop: split of --data (default val)")
    budget.add_argument(
        "--eval-images",
        type=positive_int,
        metavar="N",
        help="--max-drop: first N images of the split (default: all)",
    )
    budget.add_argument(
        "--budget-record",
        metavar="PATH",
        help="--max-drop: JSON record of the search (default: OUT with suffix .budget.json)",
    )
    add_report(parser, "write the quantization report as JSON to this path")


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    # INT8 always writes TensorRT's calibration cache: --cache, else beside -o as .calib
    cache = args.cache
    if cache is None and args.precision == "int8":
        cache = Path(args.output).with_suffix(".calib")
    written = {"-o": args.output, "--report": args.report, "--cache": cache}
    if args.max_drop is not None:  # the search's record: --budget-record, else OUT.budget.json
        record = args.budget_record or Path(args.output).with_suffix(".budget.json")
        written["--budget-record"] = record
    return Files({"IN.onnx": args.model, "--calib": args.calib, "--data": args.data}, written)


def run(args: argparse.Namespace) -> int:
    from axial_deploy.artifacts import write_json
    from axial_deploy.quantize import quantize_file

    if args.max_drop is not None:
        return _run_budget(args)
    for flag in ("data", "eval_images", "budget_record"):
        if getattr(args, flag) is not None:
            from axial_deploy.budget import BudgetError

            raise BudgetError(f"--{flag.replace('_', '-')} goes with --max-drop D: add it")
    print(f"quantizing {args.model} to {args.precision} ...", flush=True)
    report = quantize_file(
        args.model,
        args.output,
        precision=args.precision,
        calib=args.calib,
        method=args.method,
        batches=args.calib_batches,
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
        write_json(args.report, report.to_json())
    print(f"wrote {args.output}" + (f" and {args.report}" if args.report else ""))
    return 0


def _run_budget(args: argparse.Namespace) -> int:
    from axial_deploy.artifacts import write_json
    from axial_deploy.budget import BudgetError, BudgetSettings, quantize_to_budget

    if args.data is None:
        raise BudgetError("--max-drop needs --data DIR: the dataset the task metric is measured on")
    if args.quantizer != "native":
        raise BudgetError("--max-drop needs the native quantizer (leave --quantizer out)")
    print(
        f"quantizing {args.model} to {args.precision} within {args.max_drop:g} points ...",
        flush=True,
    )
    settings = BudgetSettings(
        precision=args.precision,
        max_drop=args.max_drop,
        data=args.data,
        split=args.split,
        eval_images=args.eval_images,
        calib=args.calib,
        method=args.method,
        batches=args.calib_batches,
        batch_size=args.batch_size,
        seed=args.seed,
        attention_precision=args.attention_precision,
        progress=True,
    )
    report = quantize_to_budget(
        args.model, args.output, settings, record_path=args.budget_record, cache_path=args.cache
    )
    print(report.summary())
    if args.report:
        write_json(args.report, report.quantize)
    extra = f" and {args.report}" if args.report else ""
    print(f"wrote {args.output} and {report.record}{extra}")
    # Over budget with every layer kept: the graph is written, the check failed.
    return 0 if report.met else CHECK_FAILED
