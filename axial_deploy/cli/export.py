"""Export a zoo model to ONNX and check it against PyTorch.

Exports with the TorchScript-based or the dynamo exporter (opset >= 17), then runs the ONNX
model in ONNX Runtime on random inputs and prints its error against PyTorch: at the export
shape and, for dynamic axes, at a second shape (batch + 1; about 3/4 of the height and width
with --dynamic batch,hw). Exits with status 1 when the error exceeds --rtol.

With --trace-size HxW (big inputs: tracing Axial-DeepLab-L at 1025x2049 runs its un-chunked
windowed attention, ~13 min and ~19 GB here, and ONNX Runtime needs more than 24 GB for that
graph) the model is traced at HxW and at about half of it, both with symbolic batch, height and
width. The exporter computes every size inside the graph from the input's shape, so both traces
must write the same graph (every node, attribute and weight, byte for byte), or the export is
refused: a size baked into the graph shows up as a difference. The parity check then runs at
both trace sizes on that graph, which is written unchanged with the input declared at
--input-shape. The full size itself is not run in ONNX Runtime on this path; what stands for it
is that the graph does not depend on the size it was traced at (checked once against full-size
traces: Axial-DeepLab-L at 1025x2049 byte for byte, -S at 513x1025 node for node; see
benchmarks/cpu_pipeline.py --before). --trace-size full (the default up to 1024x1024
pixels) exports and checks at full size; above that the default picks about 1/16 of each side.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import (
    Files,
    add_checkpoint,
    add_num_classes,
    add_output,
    add_seed,
    add_zoo_model,
    parse_shape,
    parse_size,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_zoo_model(parser)
    parser.add_argument(
        "--live-random-weights",
        action="store_true",
        help="without --checkpoint: random BatchNorm statistics and live residual branches, "
        "so every attention layer affects the outputs (a fresh model zero-initializes them, "
        "which makes any parity check pass trivially); statistics measured on random inputs "
        "of --trace-size if given, else of --input-shape",
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
        "--trace-size",
        type=_parse_trace_size,
        default="auto",
        metavar="HxW|auto|full",
        help="trace at this smaller height x width (and at about half of it) instead of at "
        "the input shape: both traces must give the same graph, parity is checked at both "
        "sizes, and the graph is written with the input shape declared. For inputs too big "
        "to trace or to run in ONNX Runtime, e.g. Axial-DeepLab-L at 1025x2049: 65x129 (~1 "
        "min; its stride-16 maps stay 5x9) or, to check windows inside lines longer than "
        "the span of 65 as at full size, 289x289 (stride-4 lines of 73; several minutes). "
        "Time and memory grow with the trace size's pixels. 'full': trace and check at the "
        "input shape. Default 'auto': full up to 1024x1024 pixels, above that (e.g. the "
        "panoptic default 1025x2049) about 1/16 of each side (65x129)",
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


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    written = {"-o": args.output, "its external data": f"{args.output}.data"}
    return Files({"--checkpoint": args.checkpoint}, written)


def run(args: argparse.Namespace) -> int:
    from axial_deploy.export import (
        ExportError,
        auto_trace_note,
        export_checked,
        resolve_trace_size,
    )
    from axial_deploy.models import default_input_shape, prepare_model

    shape = args.input_shape or default_input_shape(args.model)
    trace_size = resolve_trace_size(args.trace_size, shape)
    if args.trace_size == "auto" and trace_size:
        print(auto_trace_note(shape, trace_size))
    # --live-random-weights measures BatchNorm statistics in a training-mode pass, which holds
    # every un-chunked attention window: at the trace size when there is one (L at 1025x2049
    # would need more than 24 GB).
    traced = (*shape[:2], *trace_size) if trace_size else shape
    model = prepare_model(
        args.model,
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        live_random_weights=args.live_random_weights,
        input_shape=traced,
        seed=args.seed,
    )
    try:
        result = export_checked(
            model,
            shape,
            args.output,
            trace_size=trace_size,
            rtol=args.rtol,
            opset=args.opset,
            dynamic=args.dynamic,
            exporter=args.exporter,
            seed=args.seed,
            name=args.model,
            log=lambda text: print(text, flush=True),
        )
    except ExportError as error:
        raise ExportError(f"{args.model}: {error}") from error
    return 0 if result.passed else 1


def _parse_trace_size(text: str) -> tuple[int, int] | str:
    return text if text in ("auto", "full") else parse_size(text)
