"""The fused AxialAttention CUDA kernel against PyTorch, at every attention stage of a zoo model.

For each distinct attention layer shape of the model at the given input size (derived by running
the folded model on PyTorch's meta device: stride 4, 8 and 16 lines of Axial-DeepLab, both
axes), and each dtype, it times (CUDA events, median of --repeats after warm-up):

  kernel    the fused kernel through the torch op axial_deploy::axial_attention
  eager     the reference axial_attention_op in eager PyTorch
  compiled  torch.compile of axial_attention_op, one dynamic-shape compile per dtype and at most
            --compile-budget compiles in all (--no-compile skips it); a shape that would need
            one more compile gets a skipped row saying so, never an eager time labelled compiled

and prints time, achieved bandwidth (qkv read + y written once: the minimum traffic), FLOP rate
(per query-key pair: 3 Dq FMAs for the logits, Dv adds and Dv FMAs for the values = 6 Dq + 3 Dv
FLOP) and the fractions of this device's measured peaks: FP32 FLOP rate from an FP32 SGEMM (TF32
off) and copy bandwidth from a device-to-device copy.

Each row is printed (unbuffered) and appended to --jsonl as soon as it is measured, so a run cut
short keeps what it measured; --time-budget S skips the rows that would start after S seconds
(each such row says so). The estimated time is printed before the first measurement.

Usage:  python benchmarks/kernel.py [--model axial_deeplab_s] [--input-shape 1025x2049]
                                    [--dtypes fp16 fp32] [--repeats 20] [--no-compile]
                                    [--jsonl rows.jsonl] [--time-budget 300]
        python benchmarks/kernel.py --dry-run      # the shape table and estimate; no GPU needed
Needs a CUDA GPU and the kernel library (`make plugins`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from axial_deploy.op.spec import AxialAttentionAttributes

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}

# For the estimate printed before the first measurement (the run then re-estimates from what it
# measured): a cold torch.compile of the op, and nominal rates per implementation. Rough on
# purpose; --time-budget is what bounds the run.
COMPILE_SECONDS = 40.0
NOMINAL_GB_PER_S = {"kernel": 500.0, "compiled": 150.0, "eager": 25.0}
RECOMPILE_MESSAGE = "Detected recompile"  # torch.compiler.set_stance("fail_on_recompile")


def recompile_limit_name() -> str:
    """Dynamo's recompile limit: `recompile_limit` since torch 2.6, `cache_size_limit` before
    (a deprecated alias of the new name since; setting both would touch one value twice)."""
    import torch._dynamo.config as dynamo_config

    return "recompile_limit" if "recompile_limit" in dir(dynamo_config) else "cache_size_limit"


class CompileBudget:
    """torch.compile of one op: one dynamic-shape compile per dtype, at most `budget` compiles.

    Dynamo recompiles for what dynamic shapes cannot cover (axis, span, head count...). Past its
    recompile limit (8 by default) it silently runs the function eagerly, which would label eager
    times "compiled". Here every call first runs under the stance "fail_on_recompile": a call that
    succeeds there ran an already compiled graph; one that needs a compile is compiled only while
    the budget lasts, and otherwise refused with the reason (the caller records a skipped row).
    Dynamo's own limit is raised above the budget so that it never falls back on its own.
    """

    def __init__(self, op: Callable, budget: int, backend: str = "inductor"):
        import torch._dynamo.config as dynamo_config

        self.budget = budget
        self.compiles: list[float] = []  # seconds per compile
        self.unavailable = None
        if not hasattr(torch.compiler, "set_stance"):  # torch < 2.6
            self.unavailable = (
                f"torch {torch.__version__} has no torch.compiler.set_stance: compiled and "
                "eager runs cannot be told apart"
            )
        name = recompile_limit_name()
        setattr(dynamo_config, name, max(getattr(dynamo_config, name), budget + 1))
        self.compiled = torch.compile(op, dynamic=True, fullgraph=True, backend=backend)

    def prepare(self, *args, **kwargs) -> str | None:
        """Makes sure a compiled graph serves these arguments; None, or why not (skip)."""
        if self.unavailable:
            return self.unavailable
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                self.compiled(*args, **kwargs)
            return None
        except RuntimeError as error:
            if RECOMPILE_MESSAGE not in str(error):
                return f"torch.compile failed: {str(error).splitlines()[0][:200]}"
        if len(self.compiles) >= self.budget:
            return f"compile budget spent ({self.budget} compiles, {sum(self.compiles):.0f} s)"
        start = time.perf_counter()
        try:
            self.compiled(*args, **kwargs)
        except Exception as error:  # an inductor failure is a result to record, not a crash
            return f"torch.compile failed: {str(error).splitlines()[0][:200]}"
        self.compiles.append(time.perf_counter() - start)
        return None

    def __call__(self, *args, **kwargs):
        """Runs only a graph compiled before: a recompile here raises instead of going eager."""
        with torch.compiler.set_stance("fail_on_recompile"):
            return self.compiled(*args, **kwargs)


def estimate_seconds(stages: list[Stage], args, impls: list[str]) -> float:
    """Rough time of the timed part: warm-up + repeats per row at nominal rates, plus one cold
    compile per dtype when compiled rows are asked for."""
    total = 0.0
    for stage in stages:
        for dtype_name in args.dtypes:
            size = torch.finfo(DTYPES[dtype_name]).bits // 8
            moved = stage.bytes_moved(args.batch, size)
            for impl in impls:
                total += (args.repeats + 3) * moved / (NOMINAL_GB_PER_S[impl] * 1e9)
    if "compiled" in impls:
        total += COMPILE_SECONDS * len(args.dtypes)
    return total


def append_row(path: str | None, row: dict) -> None:
    """One JSON line per row, flushed at once: a run cut short keeps every row it measured."""
    if path is None:
        return
    with open(path, "a") as stream:
        stream.write(json.dumps(row) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


@dataclass(frozen=True)
class Stage:
    """One distinct attention layer shape: qkv [batch, G (2 Dq + Dv), height, width]."""

    height: int
    width: int
    axis: int
    num_heads: int
    key_depth: int
    value_depth: int
    span: int
    table_length: int
    layers: int  # how many layers of the model have this shape

    @property
    def attributes(self) -> AxialAttentionAttributes:
        return AxialAttentionAttributes(
            self.axis, self.num_heads, self.key_depth, self.value_depth, self.span
        )

    @property
    def length(self) -> int:
        return self.height if self.axis == 2 else self.width

    @property
    def lines(self) -> int:
        return self.width if self.axis == 2 else self.height

    def pairs(self, batch: int) -> int:
        """Query-key pairs attended (windows clipped at the line ends)."""
        length = self.length
        radius = length - 1 if self.span == 0 else min((self.span - 1) // 2, length - 1)
        per_line = sum(min(length - 1, i + radius) - max(0, i - radius) + 1 for i in range(length))
        return batch * self.lines * self.num_heads * per_line

    def flops(self, batch: int) -> int:
        return self.pairs(batch) * (6 * self.key_depth + 3 * self.value_depth)

    def bytes_moved(self, batch: int, element_size: int) -> int:
        heads, dq, dv = self.num_heads, self.key_depth, self.value_depth
        channels = heads * (2 * dq + dv) + heads * dv
        return batch * channels * self.height * self.width * element_size


def model_stages(model_name: str, height: int, width: int) -> list[Stage]:
    """Distinct attention shapes of a zoo model at an input size, in order of first use."""
    from axial_deploy.models import create_model
    from axial_deploy.models.axial_attention import FoldedAxialAttention, fold_axial_layers

    with torch.device("meta"):
        model = fold_axial_layers(create_model(model_name).eval())
    found: dict[tuple, int] = {}

    def record(layer: FoldedAxialAttention, args, output) -> None:
        _, _, h, w = output.shape
        key = (h, w, *layer.attributes.as_tuple(), layer.rel_q.shape[-1])
        found[key] = found.get(key, 0) + 1

    hooks = [
        m.qkv.register_forward_hook(lambda conv, a, out, m=m: record(m, a, out))
        for m in model.modules()
        if isinstance(m, FoldedAxialAttention)
    ]
    with torch.no_grad():
        model(torch.empty(1, 3, height, width, device="meta"))
    for hook in hooks:
        hook.remove()
    return [Stage(*key, layers=count) for key, count in found.items()]


def print_stages(stages: list[Stage], batch: int) -> None:
    print(
        f"| {'qkv H x W':>11} | axis | heads | Dq | Dv | span |  T | layers | "
        f"{'pairs (M)':>9} | {'GFLOP':>7} |"
    )
    print("|" + "---|" * 11)
    for s in stages:
        print(
            f"| {s.height:>5} x {s.width:<3} | {s.axis:>4} | {s.num_heads:>5} | {s.key_depth:>2} |"
            f" {s.value_depth:>3} | {s.span:>4} | {s.table_length:>2} | {s.layers:>6} | "
            f"{s.pairs(batch) / 1e6:>9.1f} | {s.flops(batch) / 1e9:>7.2f} |"
        )


def time_cuda(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median seconds of fn() on the current stream, by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def measure_peaks(repeats: int) -> tuple[float, float]:
    """(FP32 FLOP/s of an SGEMM with TF32 off, device-to-device copy bytes/s)."""
    allow = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        n = 8192
        a, b = (torch.randn(n, n, device="cuda") for _ in range(2))
        gemm = time_cuda(lambda: a @ b, repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    src = torch.empty(2**28, dtype=torch.uint8, device="cuda")  # 256 MiB, far beyond L2
    dst = torch.empty_like(src)
    copy = time_cuda(lambda: dst.copy_(src), repeats)
    return 2 * n**3 / gemm, 2 * src.numel() / copy


def stage_inputs(stage: Stage, batch: int, dtype: torch.dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    attrs = stage.attributes
    channels = attrs.qkv_channels
    qkv = torch.randn(batch, channels, stage.height, stage.width, device="cuda", generator=g)
    tables = [
        torch.randn(*shape, device="cuda", generator=g)
        for shape in attrs.table_shapes(stage.table_length).values()
    ]
    return qkv.to(dtype), tables, attrs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Derives the shapes from the model; --dry-run prints them without a GPU.",
    )
    parser.add_argument(
        "--model", default="axial_deeplab_s", help="zoo model (default: %(default)s)"
    )
    parser.add_argument(
        "--input-shape", default="1025x2049", help="HxW of the input image (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=20, help="timed runs (median)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--compile-budget",
        type=int,
        default=4,
        help="most torch.compile compiles in all (one dynamic compile per dtype is the aim; "
        "default: %(default)s); rows past it are skipped with the reason",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="S",
        help="skip (and record) the rows that would start after S seconds of timing",
    )
    parser.add_argument(
        "--jsonl", metavar="PATH", help="append every row to PATH as soon as it is measured"
    )
    parser.add_argument("--no-eager", action="store_true", help="skip the eager reference")
    parser.add_argument("--dry-run", action="store_true", help="print the shape table and exit")
    parser.add_argument(
        "--json", metavar="PATH", help="also write the device, peaks and every row as JSON"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.input_shape.lower().split("x"))
    except ValueError:
        parser.error(f"--input-shape {args.input_shape!r} must be HxW, e.g. 1025x2049")
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be >= 1")

    stages = model_stages(args.model, height, width)
    print(f"{args.model} at {height}x{width}, batch {args.batch}: attention stages")
    print_stages(stages, args.batch)
    impl_names = ["kernel", *([] if args.no_eager else ["eager"])]
    impl_names += [] if args.no_compile else ["compiled"]
    estimate = estimate_seconds(stages, args, impl_names)
    budget = f", budget {args.time_budget:.0f} s" if args.time_budget else ""
    print(
        f"estimated {estimate:.0f} s for {len(stages) * len(args.dtypes)} stage x dtype rows of "
        f"{', '.join(impl_names)} at nominal rates{budget}",
        flush=True,
    )
    if args.dry_run:
        return 0
    if not torch.cuda.is_available():
        print(
            "benchmarks/kernel.py: needs a CUDA GPU and torch's CUDA build (none found); "
            "--dry-run prints the shapes without one",
            file=sys.stderr,
        )
        return 1

    from axial_deploy.models.axial_attention import axial_attention_op
    from axial_deploy.op import kernel
    from axial_deploy.op import torch_op as kernel_op

    try:
        kernel.load_library()
    except kernel.KernelLibraryError as error:
        print(f"benchmarks/kernel.py: {error}", file=sys.stderr)
        return 1

    peaks = peak_flops, peak_bandwidth = measure_peaks(args.repeats)
    print(
        f"\n{torch.cuda.get_device_name()}: measured FP32 {peak_flops / 1e12:.1f} TFLOP/s "
        f"(SGEMM, TF32 off), copy {peak_bandwidth / 1e9:.0f} GB/s"
    )
    impls: dict[str, Callable[..., object]] = {"kernel": kernel_op.axial_attention}
    if not args.no_eager:
        impls["eager"] = axial_attention_op
    compiled: dict[str, CompileBudget] = {}
    if not args.no_compile:
        # one compiled function per dtype, so that each dtype gets its own dynamic compile
        compiled = {d: CompileBudget(axial_attention_op, args.compile_budget) for d in args.dtypes}
    header = (
        f"| {'qkv H x W':>11} | axis | dtype | {'impl':<8} | {'ms':>8} | {'GB/s':>6} | "
        f"{'% copy':>6} | {'TFLOP/s':>7} | {'% FP32':>6} | {'vs kernel':>9} |"
    )
    print("\n" + header, flush=True)
    print("|" + "---|" * 10)
    rows: list[dict] = []
    started = time.perf_counter()
    for stage in stages:
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            stage_impls = dict(impls)
            if compiled:
                stage_impls["compiled"] = compiled[dtype_name]
            elapsed = time.perf_counter() - started
            if args.time_budget is not None and elapsed > args.time_budget:
                reason = f"time budget: {elapsed:.0f} s > {args.time_budget:.0f} s"
                new = [skipped_row(stage, dtype_name, name, reason) for name in stage_impls]
            else:
                inputs = stage_inputs(stage, args.batch, dtype)
                new = time_stage(stage, dtype_name, inputs, stage_impls, args, peaks)
                del inputs
                torch.cuda.empty_cache()
            for row in new:
                append_row(args.jsonl, row)
            rows += new
    if args.json:
        write_json(
            args.json,
            {
                "model": args.model,
                "input_shape": [height, width],
                "batch": args.batch,
                "device": torch.cuda.get_device_name(),
                "peak_fp32_tflop_per_s": peak_flops / 1e12,
                "peak_copy_gb_per_s": peak_bandwidth / 1e9,
                "compiles": {d: c.compiles for d, c in compiled.items()},
                "rows": rows,
            },
        )
    return 0


STAGE_FIELDS = (
    "height",
    "width",
    "axis",
    "num_heads",
    "key_depth",
    "value_depth",
    "span",
    "layers",
)


def skipped_row(stage: Stage, dtype_name: str, impl: str, reason: str) -> dict:
    """A row that was not measured, and why (printed and recorded like a measured one)."""
    print(
        f"| {stage.height:>5} x {stage.width:<3} | {stage.axis:>4} | {dtype_name:>5} | "
        f"{impl:<8} | skipped: {reason}",
        flush=True,
    )
    shape = {k: getattr(stage, k) for k in STAGE_FIELDS}
    return {**shape, "dtype": dtype_name, "impl": impl, "status": "skipped", "reason": reason}


def time_stage(stage, dtype_name: str, inputs, impls: dict, args, peaks) -> list[dict]:
    """Times every implementation on one stage and dtype: prints a table row each, returns the
    rows (the first implementation, the kernel, is the `vs kernel` reference). A CompileBudget
    that cannot serve the stage gives a skipped row with its reason."""
    qkv, tables, attrs = inputs
    peak_flops, peak_bandwidth = peaks
    moved = stage.bytes_moved(args.batch, qkv.element_size())
    flops = stage.flops(args.batch)
    kernel_seconds = None
    rows = []
    for name, fn in impls.items():
        with torch.inference_mode():
            if isinstance(fn, CompileBudget):
                reason = fn.prepare(qkv, *tables, attrs)
                if reason is not None:
                    rows.append(skipped_row(stage, dtype_name, name, reason))
                    continue
            seconds = time_cuda(partial(fn, qkv, *tables, attrs), args.repeats)
        kernel_seconds = kernel_seconds or seconds
        shape = {k: getattr(stage, k) for k in STAGE_FIELDS}
        rows.append(
            {
                **shape,
                "dtype": dtype_name,
                "impl": name,
                "status": "measured",
                "ms": seconds * 1e3,
                "gb_per_s": moved / seconds / 1e9,
                "tflop_per_s": flops / seconds / 1e12,
                "vs_kernel": seconds / kernel_seconds,
            }
        )
        print(
            f"| {stage.height:>5} x {stage.width:<3} | {stage.axis:>4} | {dtype_name:>5} | "
            f"{name:<8} | {seconds * 1e3:>8.3f} | {moved / seconds / 1e9:>6.0f} | "
            f"{100 * moved / seconds / peak_bandwidth:>6.1f} | "
            f"{flops / seconds / 1e12:>7.2f} | "
            f"{100 * flops / seconds / peak_flops:>6.1f} | "
            f"{seconds / kernel_seconds:>8.1f}x |",
            flush=True,
        )
    return rows


def write_json(path: str, document: dict) -> None:
    """Written atomically: a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial_file = target.with_name(target.name + ".partial")
    partial_file.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(partial_file, target)


if __name__ == "__main__":
    sys.exit(main())
