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
import time

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
    from axial_deploy.export import ExportError, default_opset
    from axial_deploy.models import default_input_shape, prepare_model

    shape = args.input_shape or default_input_shape(args.model)
    automatic = args.trace_size == "auto"
    args.trace_size = resolve_trace_size(args.trace_size, shape)
    if automatic and args.trace_size:
        print(
            f"--trace-size auto: {_dims(shape[2:])} is above {AUTO_TRACE_PIXELS:,} pixels, "
            f"so the graph is traced at {_dims(args.trace_size)} (--trace-size full: at full size)"
        )
    # --live-random-weights measures BatchNorm statistics in a training-mode pass, which holds
    # every un-chunked attention window: at the trace size when there is one (L at 1025x2049
    # would need more than 24 GB).
    traced = (*shape[:2], *args.trace_size) if args.trace_size else shape
    model = prepare_model(
        args.model,
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        live_random_weights=args.live_random_weights,
        input_shape=traced,
        seed=args.seed,
    )
    opset = args.opset or default_opset(args.exporter)
    try:
        if args.trace_size:
            return _export_by_small_trace(args, model, shape, opset)
        return _export_at_full_size(args, model, shape, opset)
    except ExportError as error:
        raise ExportError(f"{args.model}: {error}") from error


def _export_at_full_size(args: argparse.Namespace, model, shape, opset: int) -> int:
    from axial_deploy.export import check_parity, export_onnx, parity_shapes

    start = time.perf_counter()
    print(
        f"[1/2] exporting {args.model} at {_dims(shape)} (opset {opset}, {args.exporter} "
        f"exporter, dynamic {args.dynamic}) ...",
        flush=True,
    )
    path = export_onnx(
        model, shape, args.output, opset=opset, dynamic=args.dynamic, exporter=args.exporter
    )
    size_mb = path.stat().st_size / 2**20
    print(f"      wrote {path} ({size_mb:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    print("[2/2] checking ONNX Runtime against PyTorch on random inputs ...", flush=True)
    checks = check_parity(model, path, parity_shapes(shape, args.dynamic), args.seed)
    return _report_parity(checks, args.rtol)


def _export_by_small_trace(args: argparse.Namespace, model, shape, opset: int) -> int:
    from axial_deploy.export import check_parity, small_trace_export, write_at_size

    trace_shape = (*shape[:2], *args.trace_size)
    start = time.perf_counter()
    print(
        f"[1/3] tracing {args.model} at {_dims(trace_shape)} and at about half of it (opset "
        f"{opset}, {args.exporter} exporter, symbolic batch, height and width) ...",
        flush=True,
    )
    with small_trace_export(
        model, shape, trace_shape, opset=opset, exporter=args.exporter
    ) as trace:
        print(
            f"      {_dims(trace.trace_shape)} and {_dims(trace.witness_shape)} give the same "
            f"graph ({trace.nodes} nodes, {trace.graph_bytes / 2**20:.1f} MiB of weights and "
            f"constants, byte for byte) in {time.perf_counter() - start:.1f} s: no size is "
            "baked in, every size is computed from the input's shape",
            flush=True,
        )
        print(
            "[2/3] checking ONNX Runtime against PyTorch on random inputs at both trace sizes "
            f"(not at {_dims(shape)}: that is the same graph, see above) ...",
            flush=True,
        )
        checks = check_parity(model, trace.dynamic_path, trace.parity_shapes, args.seed)
        code = _report_parity(checks, args.rtol)
        if code:
            print(f"      {args.output} not written")
            return code
        path = write_at_size(trace, args.output, shape, args.dynamic)
    size_mb = path.stat().st_size / 2**20
    print(
        f"[3/3] wrote {path} ({size_mb:.1f} MiB): the checked graph, input declared "
        f"{_dims(shape)} (dynamic {args.dynamic}), in {time.perf_counter() - start:.1f} s"
    )
    return 0


# Above this many input pixels a full-size trace of Axial-DeepLab costs minutes and tens of GB
# (L at 1025x2049: ~12 min, ~19 GB) and its graph does not fit ONNX Runtime in 24 GB.
AUTO_TRACE_PIXELS = 1024 * 1024
AUTO_TRACE_STRIDE = 16  # the auto trace size: (side - 1) / 16 + 1, e.g. 1025x2049 -> 65x129


def _parse_trace_size(text: str) -> tuple[int, int] | str:
    return text if text in ("auto", "full") else parse_size(text)


def resolve_trace_size(
    trace_size: tuple[int, int] | str, shape: tuple[int, ...]
) -> tuple[int, int] | None:
    """The size to trace at (None: the input shape itself): 'auto' picks a small trace only
    for inputs above AUTO_TRACE_PIXELS."""
    if trace_size == "full":
        return None
    if trace_size != "auto":
        return trace_size  # type: ignore[return-value]
    height, width = shape[2], shape[3]
    if height * width <= AUTO_TRACE_PIXELS:
        return None
    return tuple(max(33, (side - 1) // AUTO_TRACE_STRIDE + 1) for side in (height, width))


def _report_parity(checks, rtol: float) -> int:
    """Print the errors of each (shape, errors) check; 1 when one exceeds `rtol`."""
    print(f"      {'input':<16} {'output':<10} {'max abs':>10} {'max rel':>10} {'mean abs':>10}")
    worst = 0.0
    for check, errors in checks:
        for e in errors:
            print(
                f"      {_dims(check):<16} {e.name:<10} {e.max_abs:>10.2e} {e.max_rel:>10.2e} "
                f"{e.mean_abs:>10.2e}"
            )
            worst = max(worst, e.max_rel)  # NaN in one side only is infinite
    if worst > rtol:
        print(f"FAILED: max relative error {worst:.2e} exceeds --rtol {rtol:.0e}")
        return 1
    print(f"OK: ONNX Runtime matches PyTorch (max rel {worst:.2e} <= {rtol:.0e})")
    return 0


def _dims(shape) -> str:
    return "x".join(map(str, shape))
