"""The CPU side of a deploy against its peers, measured in one run, printed as one table.

Usage:  python benchmarks/cpu_pipeline.py [--out out/bench_cpu] [--images 16] [--before]
                                          [--s-size 513x1025] [--skip-s] [--runs 20]
                                          [--modelopt-python PATH] [--skip-export]
                                          [--export-model axial_deeplab_l]
                                          [--export-size 1025x2049] [--trace-size 65x129]
                                          [--modelopt-python PATH]
                                          [--rewrite-model PATH[@PROBE@CHECK] ...]

1. INT8 calibration of the trained axial_deeplab_tiny export (129x129) on `--images` synthetic
   train images (the data `make demo` calibrates on): ours per method (ranges + Q/DQ graph +
   save) against ONNX Runtime's `quantize_static` (MinMax and Entropy, QDQ) on the same batches,
   and NVIDIA ModelOpt's ONNX PTQ when `--modelopt-python` names an interpreter that has it.
   `--before` adds the calibration code of commit b834c85 (read from git: the per-candidate
   entropy loop, numpy histograms), so before and after come from one run. FP8 (E4M3) rows:
   ours (opset lift to 19 + ranges + Q/DQ graph + save; minmax and percentile, FP8's methods)
   against `quantize_static` with QFLOAT8E4M3FN activations and weights, whose float8 path
   accepts only its Distribution calibration method. `--calibration-only` stops after these.
2. ONNX Runtime latency (median of `--runs`, plain and rewritten runs interleaved) of the
   rewritten graph, whose AxialAttention nodes run the native CPU op, against the plain export:
   axial_deeplab_tiny (trained) and axial_deeplab_s at `--s-size` (random weights), ORT defaults
   and with intra-op spinning off. `--before` adds the rewritten graph through the torch
   reference op (the body before the native op) for the tiny model.
3. Export (`axial-deploy export`) of `--export-model` at `--export-size` by a small trace
   (`--trace-size`), time and peak memory of its own process; `--before` adds today's
   full-size trace (~10 min and ~12 GB for axial_deeplab_l: run under
   `flock /work/notes/big.lock`).
3. The graph rewrite of each `--rewrite-model PATH[@PROBE@CHECK]` (e.g. the S and L exports;
   PROBE and CHECK give the shapes for a graph with symbolic height and width), each run in its
   own process: time and peak RSS, at the default 32 verified lines per layer and at 8, and with
   `--before` the rewrite code of commit 9dc4101 (one qkv channel per probed line).

The machine's load average is printed before and after: on a shared machine, compare the ratios
of one run, not seconds across runs. Needs the CPU libraries (`make cpu-libs`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

BEFORE_COMMIT = "b834c85"
REPO = Path(__file__).resolve().parent.parent
Row = tuple[str, ...]


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _old_ranges_module() -> types.ModuleType:
    """calibration/ranges.py as of BEFORE_COMMIT, imported from git."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:calibration/ranges.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("ranges_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BEFORE_COMMIT}:calibration/ranges.py", "exec"), module.__dict__)
    return module


def prepare_tiny(out: Path, images: int) -> tuple[Path, Path, list[np.ndarray]]:
    from axial_deploy.calibration.sources import open_source
    from axial_deploy.datasets.synthetic import generate_panoptic
    from axial_deploy.export import export_onnx
    from axial_deploy.models import create_model
    from axial_deploy.rewrite import rewrite_file

    plain, axial = out / "axial_deeplab_tiny.onnx", out / "axial_deeplab_tiny.axial.onnx"
    if not axial.is_file():
        model = create_model("axial_deeplab_tiny", pretrained=True).eval()
        export_onnx(model, (1, 3, 129, 129), plain)
        rewrite_file(plain, axial)
    data = out / "data"
    if not (data / "dataset.json").is_file():
        generate_panoptic(data, seed=0, size=(129, 129), train=images, val=1, progress=False)
    source = open_source(str(data / "images" / "train"), (1, 3, 129, 129), task="panoptic")
    return plain, axial, source.take(images)


def _ours(ranges_module, model: onnx.ModelProto, batches, method: str, folder: Path) -> float:
    from axial_deploy.calibration.qdq import quantize_int8

    def work() -> None:
        ranges = ranges_module.collect_ranges(model, batches, method=method)
        quantized = quantize_int8(model, ranges)
        onnx.save(quantized.model, str(folder / f"ours_{method}.onnx"))

    return _seconds(work)


def _ours_fp8(model: onnx.ModelProto, batches, method: str, folder: Path) -> float:
    from axial_deploy.calibration.qdq import quantize_int8, upgrade_opset
    from axial_deploy.calibration.ranges import collect_ranges

    def work() -> None:
        lifted = upgrade_opset(model, "fp8")
        ranges = collect_ranges(lifted, batches, method=method)
        quantized = quantize_int8(lifted, ranges, format="fp8")
        onnx.save(quantized.model, str(folder / f"ours_fp8_{method}.onnx"))

    return _seconds(work)


def _ort_peer(path: Path, batches, method: str, folder: Path) -> tuple[float | None, str]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "fp8 distribution": CalibrationMethod.Distribution,  # its only float8 method
    }
    # float8: E4M3 activations and weights (ORT lifts the model to opset 19 itself), on the op
    # types our placement quantizes: on every op, ONNX Runtime 1.32 fails (a tensor without
    # avg/std in its distribution calibrator)
    types = {
        "activation_type": QuantType.QFLOAT8E4M3FN,
        "weight_type": QuantType.QFLOAT8E4M3FN,
        "op_types_to_quantize": ["Conv", "Gemm", "MatMul", "Add"],
    }
    target = folder / f"ort_{method.replace(' ', '_')}.onnx"
    try:
        seconds = _seconds(
            lambda: quantize_static(
                str(path),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                calibrate_method=calibrate[method],
                per_channel=True,
                **(types if method.startswith("fp8") else {}),
            )
        )
    except Exception as error:  # the peer's own failure is a result worth printing
        return None, f"fails: {str(error).splitlines()[0][:70]}"
    return seconds, ""


MODELOPT_SCRIPT = """
import sys, time, numpy as np
from modelopt.onnx.quantization import quantize
data = np.load(sys.argv[2])
start = time.perf_counter()
quantize(onnx_path=sys.argv[1], quantize_mode="int8", calibration_data={"images": data},
         calibration_method=sys.argv[3], output_path=sys.argv[4], calibration_eps=["cpu"])
print("SECONDS", time.perf_counter() - start)
"""


def _modelopt(python: str | None, path: Path, batches, method: str, folder: Path):
    if not python:
        # Here `pip install 'nvidia-modelopt[onnx]'` did not finish in 10 minutes: it pulls
        # onnxruntime-gpu (which replaces onnxruntime in one environment), cupy-cuda12x, scipy.
        return None, "not run: needs --modelopt-python (nvidia-modelopt[onnx] in its own venv)"
    data = folder / "calibration.npy"
    np.save(data, np.concatenate(batches))
    target = folder / f"modelopt_{method}.onnx"
    command = [python, "-c", MODELOPT_SCRIPT, str(path), str(data), method, str(target)]
    result = subprocess.run(command, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if line.startswith("SECONDS"):
            return float(line.split()[1]), ""
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return None, f"fails: {last[:70]}"


def calibration_rows(args, out: Path) -> list[Row]:
    from axial_deploy.calibration import ranges as ranges_after

    plain, _, batches = prepare_tiny(out, args.images)
    model = onnx.load(str(plain))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        peer, note = _ort_peer(plain, batches, "minmax", folder)
        timings: list[tuple[str, str, float | None, str]] = [
            ("ONNX Runtime quantize_static", "minmax", peer, note)
        ]
        timings.append(
            (
                "ONNX Runtime quantize_static",
                "entropy",
                *_ort_peer(plain, batches, "entropy", folder),
            )
        )
        for method in ("minmax", "percentile", "entropy"):
            timings.append(
                (
                    "axial-deploy (after)",
                    method,
                    _ours(ranges_after, model, batches, method, folder),
                    "",
                )
            )
        if args.before:
            before = _old_ranges_module()
            for method in ("percentile", "entropy"):
                seconds = _ours(before, model, batches, method, folder)
                timings.append((f"axial-deploy (before, {BEFORE_COMMIT})", method, seconds, ""))
        for method, label in (("max", "minmax"), ("entropy", "entropy")):
            seconds, note = _modelopt(args.modelopt_python, plain, batches, method, folder)
            timings.append(("NVIDIA ModelOpt ONNX PTQ", label, seconds, note))
        fp8_peer, fp8_note = _ort_peer(plain, batches, "fp8 distribution", folder)
        fp8_timings = [("ONNX Runtime quantize_static", "distribution", fp8_peer, fp8_note)]
        for method in ("minmax", "percentile"):
            seconds = _ours_fp8(model, batches, method, folder)
            fp8_timings.append(("axial-deploy", method, seconds, ""))
    for kind, reference, label, group in (
        ("INT8", peer, "ORT minmax", timings),
        ("FP8", fp8_peer, "ORT FP8", fp8_timings),
    ):
        for tool, method, seconds, note in group:
            ratio = f"{seconds / reference:.2f}x" if seconds is not None and reference else "-"
            rows.append(
                (
                    f"{kind} calibration, tiny 129x129, {len(batches)} images",
                    f"{tool}, {method}",
                    "-" if seconds is None else f"{seconds:.2f} s",
                    f"{ratio} of {label}",
                    note,
                )
            )
    return rows


def _sessions(plain: Path, axial: Path, reference: bool):
    import onnxruntime as ort

    from axial_deploy.op.ort import OP_ENV, create_session

    def no_spin() -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    sessions = {
        "plain, ORT defaults": ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]),
        "plain, spinning off": ort.InferenceSession(
            str(plain), no_spin(), providers=["CPUExecutionProvider"]
        ),
        "rewritten, native op (create_session)": create_session(axial),
    }
    if reference:
        # The op's body is chosen per call: the environment variable is set around its runs.
        sessions["rewritten, reference op (before)"] = create_session(axial)
    return sessions, OP_ENV


def latency_rows(label: str, plain: Path, axial: Path, shape, runs: int, reference: bool):
    sessions, op_env = _sessions(plain, axial, reference)
    feed = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for run in range(runs + 1):  # the first round warms up
        for name, session in sessions.items():
            if "reference" in name:
                os.environ[op_env] = "reference"
            start = time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: feed})
            elapsed = time.perf_counter() - start
            os.environ.pop(op_env, None)
            if run:
                times[name].append(elapsed)
    base = float(np.median(times["plain, ORT defaults"]))
    rows = []
    for name, values in times.items():
        median = float(np.median(values))
        rows.append(
            (
                f"ORT latency, {label}",
                name,
                f"{median * 1e3:.1f} ms",
                f"{median / base:.2f}x of plain",
                f"median of {len(values)}",
            )
        )
    return rows


def l_layer_rows() -> list[Row]:
    """The first axial-attention layer of axial_deeplab_l at 1025x2049 (stride 4: qkv
    1x256x257x513, 8 heads, Dq 8, Dv 16, span 65), width axis, through the native op, random
    inputs: time and how much the process's peak memory grew (its output alone is 67 MB)."""
    import resource

    from axial_deploy.op.ort import native_axial_attention
    from axial_deploy.op.spec import AxialAttentionAttributes

    rng = np.random.default_rng(0)
    groups, dq, dv, table = 8, 8, 16, 129
    qkv = rng.standard_normal((1, groups * (2 * dq + dv), 257, 513)).astype(np.float32)
    tables = {
        "rel_q": 0.5 * rng.standard_normal((groups, dq, table)),
        "rel_k": 0.5 * rng.standard_normal((groups, dq, table)),
        "rel_v": rng.standard_normal((groups, dv, table)),
        "logit_scale": 0.5 + rng.random(groups),
        "out_bias": rng.standard_normal(groups * dv),
    }
    attributes = AxialAttentionAttributes(
        axis=3, num_heads=groups, key_depth=dq, value_depth=dv, span=65
    )
    seconds = _seconds(lambda: native_axial_attention(qkv, **tables, attributes=attributes))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    # What the reference's windowed form holds for the keys alone: [lines, G, L, span, Dq].
    windows = 257 * groups * 513 * 65 * dq * 4 / 2**30
    return [
        (
            "AxialAttention, L layer 1 at 1025x2049",
            "native op, qkv 1x256x257x513, span 65",
            f"{seconds:.2f} s",
            "-",
            f"process peak RSS {peak:.0f} MiB (qkv 129 MiB, y 64 MiB; the reference's key "
            f"windows alone {windows:.1f} GiB)",
        )
    ]


def prepare_s(out: Path, size: tuple[int, int]) -> tuple[Path, Path, list[Row]]:
    import torch

    from axial_deploy.export import export_onnx
    from axial_deploy.models import create_model
    from axial_deploy.rewrite import rewrite_file

    tag = f"{size[0]}x{size[1]}"
    plain, axial = out / f"axial_deeplab_s_{tag}.onnx", out / f"axial_deeplab_s_{tag}.axial.onnx"
    rows: list[Row] = []
    if not axial.is_file():
        torch.manual_seed(0)
        model = create_model("axial_deeplab_s").eval()
        seconds = _seconds(lambda: export_onnx(model, (1, 3, *size), plain))
        rows.append(
            (f"export, S {tag}", "torchscript", f"{seconds:.1f} s", "-", "not this branch's")
        )
        seconds = _seconds(lambda: rewrite_file(plain, axial))
        rows.append(
            (f"rewrite, S {tag}", "rewrite_file", f"{seconds:.1f} s", "-", "not this branch's")
        )
    return plain, axial, rows


# ------------------------------------------------------------------ export (issue 17 item 3)
EXPORT_BEFORE = """
import sys
from axial_deploy.export import export_onnx
from axial_deploy.models import prepare_model
model_name, size, out, trace = sys.argv[1:5]
# The weights of the after run: live statistics measured at the trace size (seed 0).
shape = tuple(int(v) for v in f"1x3x{trace}".split("x"))
model = prepare_model(model_name, live_random_weights=True, input_shape=shape, seed=0)
export_onnx(model, tuple(int(v) for v in f"1x3x{size}".split("x")), out)
"""


def _measured_child(argv: list[str]) -> tuple[float, float, int, str]:
    """Run `argv` in a child process: (seconds, its peak RSS in GiB, exit status, last line)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    last = (output.strip().splitlines() or ["no output"])[-1]
    return seconds, usage.ru_maxrss / 2**20, child.returncode, last


def export_rows(args, out: Path) -> list[Row]:
    """`axial-deploy export` of `--export-model` at `--export-size`: after, by a small trace
    (`--trace-size`, parity in ONNX Runtime at both trace sizes, --live-random-weights);
    with `--before`, the full-size trace of today's default path with the same weights (no
    ONNX Runtime check: it does not fit in 24 GB for L), and whether both wrote one graph.
    Each in its own process, its peak RSS its own. Run under `flock /work/notes/big.lock`.
    One run here (2 cores, load 6.0 -> 3.2, 2026-11-29): L 1025x2049 before 703.4 s, 18.87
    GiB; after (65x129) 63.4 s, 1.45 GiB: 11.1x faster, 0.08x the memory, same graph."""
    size, tag = args.export_size, f"{args.export_model} {args.export_size}"
    target = out / f"{args.export_model}_{size}.onnx"
    after = [sys.executable, "-m", "axial_deploy.cli", "export", "--model", args.export_model]
    after += ["--live-random-weights", "--input-shape", f"1x3x{size}"]
    after += ["--trace-size", args.trace_size, "-o", str(target)]
    seconds, peak, code, last = _measured_child(after)
    rows: list[Row] = []
    before = None
    if args.before:
        full = out / f"{args.export_model}_{size}.full.onnx"
        argv = [sys.executable, "-c", EXPORT_BEFORE, args.export_model, size, str(full)]
        before = _measured_child([*argv, args.trace_size])
        ok = "ok" if before[2] == 0 else f"exit {before[2]}: {before[3][:60]}"
        rows.append(
            (
                f"export, {tag}",
                "before: trace at full size (no ORT check)",
                f"{before[0]:.1f} s",
                "1.00x",
                f"peak {before[1]:.2f} GiB, {ok}",
            )
        )
    ratio = f"{before[0] / seconds:.2f}x faster" if before and before[2] == 0 else "-"
    memory = f" ({peak / before[1]:.2f}x before's)" if before and before[2] == 0 else ""
    rows.append(
        (
            f"export, {tag}",
            f"after: --trace-size {args.trace_size} + ORT parity at 2 sizes",
            f"{seconds:.1f} s",
            ratio,
            f"peak {peak:.2f} GiB{memory}, exit {code}: {last[:60]}",
        )
    )
    if before and before[2] == 0 and code == 0:
        from axial_deploy.export import graph_difference

        # The same weights: the same nodes and initializers, byte for byte, or the first
        # difference.
        difference = graph_difference(target, full)
        rows.append(
            (
                f"export, {tag}",
                "after's graph against before's",
                "-",
                "-",
                "the same graph, byte for byte (nodes, attributes, weights)"
                if difference is None
                else f"DIFFER: {difference[:70]}",
            )
        )


# ---------------------------------------------------------------- rewrite (issue 17 item 2)

REWRITE_BEFORE_COMMIT = "9dc4101"  # probing one qkv channel per line, 32 lines per ORT run

_REWRITE_CHILD = """
import sys, time
if sys.argv[1]:  # the code of another commit: bypass the editable install's finder
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path.insert(0, sys.argv[1])
from axial_deploy.rewrite import rewrite_file
extra = {"verify_lines": int(sys.argv[4])} if sys.argv[4] != "-" else {}
if sys.argv[5] != "-":
    extra["probe_shape"] = tuple(int(v) for v in sys.argv[5].split("x"))
    extra["check_shapes"] = [tuple(int(v) for v in sys.argv[6].split("x"))]
start = time.perf_counter()
report = rewrite_file(sys.argv[2], sys.argv[3], **extra)
seconds = time.perf_counter() - start
peak = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(seconds, int(peak) / 1024, len(report.rewritten), len(report.layers))
"""


def _checkout(commit: str, folder: Path) -> Path:
    """The package as of `commit` (git archive), its top-level models/ and calibration/ linked
    where the installed package maps them."""
    if not (folder / "axial_deploy").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", commit], cwd=REPO, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        for name in ("models", "calibration"):
            (folder / "axial_deploy" / name).symlink_to(folder / name)
    return folder


def _timed_rewrite(
    source: Path, code: Path | None, verify_lines: int | None, probe: str | None, check: str | None
) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, rewritten/found) of one rewrite in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "out.onnx"
        argv = [str(code or ""), str(source), str(target), str(verify_lines or "-")]
        argv += [probe or "-", check or "-"]
        result = subprocess.run(
            [sys.executable, "-c", _REWRITE_CHILD, *argv],
            check=True,
            capture_output=True,
            text=True,
        )
    seconds, peak, rewritten, found = result.stdout.split()[-4:]
    return float(seconds), float(peak), f"{rewritten}/{found} layers"


def rewrite_rows(args: argparse.Namespace, out: Path) -> list[Row]:
    """The rewrite of each `--rewrite-model PATH[@PROBE@CHECK]` (PROBE, CHECK: NxCxHxW for a
    graph with symbolic sizes): the code of REWRITE_BEFORE_COMMIT (with --before), and today's
    at the default 32 verified lines and at 8. Each in its own process: time, peak RSS."""
    rows: list[Row] = []
    for spec in args.rewrite_model or []:
        path, probe, check = [*spec.split("@"), None, None][:3]
        source, label = Path(path), Path(path).stem
        runs = [("after", None, None), ("after, --verify-lines 8", None, 8)]
        if args.before:
            before = _checkout(REWRITE_BEFORE_COMMIT, out / f"code_{REWRITE_BEFORE_COMMIT}")
            runs.insert(0, (f"before ({REWRITE_BEFORE_COMMIT})", before, None))
        base = None
        for name, code, lines in runs:
            if code is not None and probe:
                continue  # the code before refuses symbolic sizes
            seconds, peak, layers = _timed_rewrite(source, code, lines, probe, check)
            ratio = f"{base / seconds:.1f}x faster" if base else "1.0x"
            base = base or seconds
            note = f"peak RSS {peak:.0f} MiB, {layers}" + (f", probed at {probe}" if probe else "")
            rows.append((f"rewrite, {label}", name, f"{seconds:.1f} s", ratio, note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/bench_cpu", help="folder for models and data")
    parser.add_argument("--images", type=int, default=16, help="calibration images")
    parser.add_argument("--runs", type=int, default=20, help="latency runs per graph")
    parser.add_argument("--s-size", default="513x1025", help="HxW of axial_deeplab_s")
    parser.add_argument("--skip-s", action="store_true", help="skip axial_deeplab_s")
    parser.add_argument("--skip-calibration", action="store_true")
    parser.add_argument(
        "--calibration-only", action="store_true", help="only the INT8 / FP8 calibration rows"
    )
    parser.add_argument("--before", action="store_true", help="add the pre-change code")
    parser.add_argument("--modelopt-python", help="python with nvidia-modelopt[onnx]")
    parser.add_argument("--skip-export", action="store_true", help="skip the export rows")
    parser.add_argument("--export-model", default="axial_deeplab_l", help="model of the export")
    parser.add_argument("--export-size", default="1025x2049", help="HxW of the export")
    parser.add_argument("--trace-size", default="65x129", help="HxW of its small trace")
    parser.add_argument(
        "--rewrite-model",
        action="append",
        metavar="PATH[@PROBE@CHECK]",
        help="time the rewrite of this ONNX graph (repeatable; e.g. the S and L exports)",
    )
    args = parser.parse_args()
    from axial_deploy.op.ort import op_implementation

    if op_implementation() != "native":
        parser.error("the native CPU op is not built: run `make cpu-libs` first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    if args.calibration_only:
        rows: list[Row] = calibration_rows(args, out)
        _print_table(rows, load_before)
        return
    rows = l_layer_rows()  # first: the process's peak memory is still its own
    if not args.skip_calibration:
        rows += calibration_rows(args, out)
    plain, axial, _ = prepare_tiny(out, args.images)
    rows += latency_rows("tiny 129x129", plain, axial, (1, 3, 129, 129), args.runs, args.before)
    if not args.skip_s:
        size = tuple(int(v) for v in args.s_size.split("x"))
        s_plain, s_axial, prep = prepare_s(out, size)
        rows += prep
        rows += latency_rows(
            f"S {args.s_size}", s_plain, s_axial, (1, 3, *size), max(3, args.runs // 4), False
        )
    if not args.skip_export:
        rows += export_rows(args, out)
    rows += rewrite_rows(args, out)
    _print_table(rows, load_before)


def _print_table(rows: list[Row], load_before: tuple[float, float, float]) -> None:
    load_after = os.getloadavg()
    header = ("measurement", "what", "time", "ratio", "note")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after"
    )
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
