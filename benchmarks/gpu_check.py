"""One command for the day a GPU is lent: build, test and benchmark the AxialAttention kernel.

Runs on a bare GPU machine with only Python, numpy, torch and nvcc (no pip, no TensorRT, no
CMake, no internet), from a copy of this repository:

  1. environment: versions of Python, numpy, torch and nvcc, and the GPU (nvidia-smi)
  2. build: the kernel's C ABI library for this GPU's architecture with nvcc (the flags of
     CMakeLists.txt: -O3, static cudart with its symbols hidden), into build/gpu-check/
  3. load: the library through axial_deploy.op.kernel (ABI version, host-side argument check)
  4. tests: tests/op/test_kernel_gpu.py (many random shapes, both axes, global and local spans,
     fp32/fp16, NaN-poisoned outputs) against the reference op, through pytest
  5. benchmark: benchmarks/kernel.py (kernel vs eager vs torch.compile at every attention stage
     of Axial-DeepLab-S at 1025x2049)

and writes OUT/gpu_check.jsonl (one line per finished step), OUT/gpu_check.json and
OUT/gpu_check.md (plus the logs, the tests' JUnit XML and the benchmark's rows, one JSON line
each as measured) into the folder given on the command line, after every step, so a run cut short
still leaves its results. Children run unbuffered and write straight into their logs.

It fits its time budget by construction (`--budget`, default 360 s): it prints the plan up front
(each step's share), every child gets the time left as its timeout, and the benchmark gets a
time budget of its own, past which its rows are recorded as skipped with the reason.
torch.compile rows use one dynamic compile per dtype within a compile budget (benchmarks/kernel.py),
so no row says "compiled" for an eager run. `--dry-run` runs everything up to the first CUDA call
(environment, build for --arch or sm_90, load, test collection, the benchmark's shape table): it
passes on machines without a GPU, and CI runs it.

Needs no make, pip or CMake on the GPU machine, and runs on Python 3.10 to 3.12 (JetPack 6 has
3.10): `python3 benchmarks/gpu_check.py OUT`.

The package is imported from the source tree (a link farm in build/gpu-check/pkg maps
axial_deploy.models to models/, as the installed package does). pytest and PyYAML are taken
from the machine when it has them, else from build/gpu-check/deps, which
`python benchmarks/gpu_check.py --prepare-deps` (or `make gpu-check-deps`) fills here from this
environment (pure-Python packages only), adding the backports pytest needs on Python 3.10
(exceptiongroup, tomli) from the package index when this Python does not have them, and checking
that every file parses as Python 3.10.

Usage:  python3 benchmarks/gpu_check.py OUT_DIR [--dry-run] [--arch 90] [--no-compile]
                                         [--budget 360]
        python3 benchmarks/gpu_check.py --prepare-deps
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "gpu-check"
DEPS = WORK / "deps"
PLUGIN_DIR = REPO / "plugins" / "axial_attention"
LIBRARY_NAME = "libaxial_attention_capi.so"
DRY_RUN_ARCH = "90"  # H100/H200: what a lent machine has; only used when no GPU is visible
# Pure-Python distributions the tests need beyond numpy and torch (pytest 9 and its own
# requirements, pygments among them; PyYAML).
DEP_MODULES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "yaml", "py")
DEP_EXTRAS = ("exceptiongroup", "tomli")  # pytest's backports on Python < 3.11
# exceptiongroup needs typing_extensions on Python < 3.13 (torch brings it; bundled if here).
DEP_OPTIONAL = ("typing_extensions",)
OLDEST_PYTHON = (3, 10)  # JetPack 6's Python; the bundle and these scripts must parse there
# The budget's shares (seconds) before the benchmark takes what is left.
BUILD_SECONDS = 150
TESTS_SECONDS = 150
MARGIN_SECONDS = 15  # writing the report after the last child


class CheckFailed(RuntimeError):
    pass


class Report:
    """The steps so far, rewritten as JSON + Markdown into OUT after every step."""

    def __init__(self, out: Path, dry_run: bool):
        self.out = out
        self.document: dict = {"dry_run": dry_run, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.steps: list[dict] = []
        self.document["steps"] = self.steps

    def step(self, name: str, status: str, seconds: float, detail: str, **extra) -> None:
        entry = {"step": name, "status": status, "seconds": round(seconds, 2), "detail": detail}
        self.steps.append({**entry, **extra})
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "gpu_check.jsonl", "a") as stream:  # one line per finished step
            stream.write(json.dumps(self.steps[-1]) + "\n")
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.out / "gpu_check.json", json.dumps(self.document, indent=1) + "\n")
        _write_atomic(self.out / "gpu_check.md", self.markdown())

    def markdown(self) -> str:
        lines = [f"# gpu-check{' (dry run)' if self.document['dry_run'] else ''}", ""]
        env = self.document.get("environment", {})
        if env:
            lines += [f"- {key}: {value}" for key, value in env.items()] + [""]
        lines += ["| step | status | seconds | detail |", "|---|---|---|---|"]
        for s in self.steps:
            detail = str(s["detail"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {s['step']} | {s['status']} | {s['seconds']:.1f} | {detail} |")
        bench = self.document.get("benchmark")
        if bench:
            lines += ["", f"## Stage benchmark on {bench['device']}", ""]
            if "peak_fp32_tflop_per_s" in bench:
                lines.append(
                    f"Measured peaks: FP32 {bench['peak_fp32_tflop_per_s']:.1f} TFLOP/s (SGEMM, "
                    f"TF32 off), copy {bench['peak_copy_gb_per_s']:.0f} GB/s."
                )
            else:
                lines.append("Cut short: the rows measured before the end (no summary).")
            lines += ["", "| qkv H x W | axis | Dq | Dv | dtype | impl | ms | GB/s | TFLOP/s "
                      "| vs kernel |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
            for r in bench["rows"]:
                if r.get("status") == "skipped":
                    lines.append(
                        f"| {r['height']} x {r['width']} | {r['axis']} | {r['key_depth']} | "
                        f"{r['value_depth']} | {r['dtype']} | {r['impl']} | skipped: "
                        f"{r['reason']} | | | |"
                    )
                    continue
                lines.append(
                    f"| {r['height']} x {r['width']} | {r['axis']} | {r['key_depth']} | "
                    f"{r['value_depth']} | {r['dtype']} | {r['impl']} | {r['ms']:.3f} | "
                    f"{r['gb_per_s']:.0f} | {r['tflop_per_s']:.2f} | {r['vs_kernel']:.1f}x |"
                )
        return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _run(command: list[str], log: Path, timeout: float, env: dict | None = None) -> str:
    """Runs command (cwd: the work folder, so the repo's own axial_deploy/ folder does not shadow
    the link farm) with its output going straight into log, unbuffered, so a timeout keeps what
    it printed; raises CheckFailed on failure or timeout. Returns the output."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    if timeout <= 0:
        raise CheckFailed("no time left in the budget (--budget)")
    header = f"$ {' '.join(command)}\n"
    with open(log, "w") as stream:
        stream.write(header)
        stream.flush()
        try:
            result = subprocess.run(
                command, stdout=stream, stderr=subprocess.STDOUT, timeout=timeout, env=env, cwd=WORK
            )
        except subprocess.TimeoutExpired as error:
            stream.write(f"\nTIMEOUT after {timeout:.0f} s\n")
            raise CheckFailed(f"timed out after {timeout:.0f} s (log: {log.name})") from error
    output = log.read_text()[len(header) :]
    if result.returncode != 0:
        tail = output.strip().splitlines()[-3:]
        raise CheckFailed(f"exit {result.returncode} (log: {log.name}): {' / '.join(tail)}")
    return output


# ---------------------------------------------------------------- steps


def environment(report: Report) -> None:
    import numpy
    import torch

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise CheckFailed("nvcc not found on PATH: the kernel is built here (CUDA toolkit)")
    nvcc_version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release ([\d.]+)", nvcc_version)
    env = {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda,
        "nvcc": match.group(1) if match else nvcc_version.strip().splitlines()[-1],
        "gpu": gpu_name() or "none visible (nvidia-smi)",
    }
    report.document["environment"] = env


def _nvidia_smi(query: str) -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    result = subprocess.run(
        [smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True
    )
    lines = result.stdout.strip().splitlines()
    return lines[0].strip() if result.returncode == 0 and lines else None


def gpu_name() -> str | None:
    return _nvidia_smi("name")


def detect_arch(requested: str | None, dry_run: bool) -> tuple[str, str]:
    """(sm number, how it was chosen), without a CUDA call: --arch, else nvidia-smi."""
    if requested:
        return requested.replace("sm_", "").replace(".", ""), "--arch"
    capability = _nvidia_smi("compute_cap")
    if capability:
        return capability.replace(".", ""), f"nvidia-smi compute_cap {capability}"
    if dry_run:
        return DRY_RUN_ARCH, f"no GPU visible: sm_{DRY_RUN_ARCH} for the dry run"
    raise CheckFailed("cannot read the GPU's compute capability (nvidia-smi): pass --arch, e.g. 90")


def build_library(arch: str, out: Path, timeout: float) -> Path:
    """nvcc, the flags of CMakeLists.txt (Release, static cudart hidden, only the C ABI
    exported), machine code for `arch` only."""
    target = WORK / "lib" / LIBRARY_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "nvcc", "-std=c++17", "-O3", "-DNDEBUG", "-shared", "--cudart", "static",
        f"-gencode=arch=compute_{arch},code=sm_{arch}",
        "-Xcompiler=-fPIC,-fvisibility=hidden,-Wall,-Wextra",
        "-Xlinker=--exclude-libs,libcudart_static.a", "-Xlinker=--no-undefined",
        f"-I{PLUGIN_DIR}", str(PLUGIN_DIR / "axialAttentionKernel.cu"),
        str(PLUGIN_DIR / "axialAttentionApi.cpp"), "-o", str(target),
    ]  # fmt: skip
    _run(command, out / "build.log", timeout)
    return target


def link_farm() -> Path:
    """build/gpu-check/pkg/axial_deploy: the package's files plus models/ and calibration/ as
    its subpackages, the layout `pip install` gives (pyproject's package-dir)."""
    root = WORK / "pkg"
    package = root / "axial_deploy"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    for entry in (REPO / "axial_deploy").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "models").symlink_to(REPO / "models")
    (package / "calibration").symlink_to(REPO / "calibration")
    return root


def python_env(library: Path, package_root: Path) -> tuple[dict, list[str]]:
    """The subprocesses' environment, and which modules come from build/gpu-check/deps."""
    from_deps = [m for m in ("pytest", "yaml") if importlib.util.find_spec(m) is None]
    if from_deps and not (DEPS / "pytest").is_dir():
        raise CheckFailed(
            f"{', '.join(from_deps)} not installed and {DEPS.relative_to(REPO)} is empty: run "
            "`make gpu-check-deps` where they are installed and carry that folder along"
        )
    paths = [str(package_root), str(REPO / "tests")]
    if from_deps:
        paths.append(str(DEPS))  # after the machine's own packages
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["AXIAL_DEPLOY_KERNEL_LIB"] = str(library)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env, from_deps


def check_library(env: dict, out: Path, timeout: float) -> str:
    code = (
        "from axial_deploy import kernel\n"
        "from axial_deploy.op.spec import AxialAttentionAttributes\n"
        "lib = kernel.load_library()\n"
        "attributes = AxialAttentionAttributes(axis=3, num_heads=8, key_depth=4, value_depth=8, "
        "span=65)\n"
        "p = kernel.KernelParams.for_call(attributes, (1, 65, 129), table_length=65)\n"
        "kernel.check(p)\n"
        "print(kernel.library_path(), 'ABI', lib.axial_attention_abi_version())\n"
    )
    return _run([sys.executable, "-c", code], out / "load.log", timeout, env).strip()


def pytest_command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(REPO / "tests" / "op" / "test_kernel_gpu.py"),
        f"--rootdir={REPO}", "-c", str(REPO / "pyproject.toml"), "-p", "no:cacheprovider",
        "-q", *extra,
    ]  # fmt: skip


def junit_counts(path: Path) -> dict:
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    counts["skipped"] = sum(int(s.get("skipped", 0)) for s in suites)
    failed = [
        case.get("name")
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts | {"failed": failed[:20]}


# ---------------------------------------------------------------- driver


def benchmark_rows(path: Path) -> list[dict]:
    """The rows the benchmark appended before it ended (or was cut short)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            break
    return rows


def plan(budget: float) -> str:
    """The time plan printed before any work: the steps' shares of --budget."""
    rest = budget - BUILD_SECONDS - TESTS_SECONDS - MARGIN_SECONDS
    return (
        f"gpu-check plan, budget {budget:.0f} s: environment + build <= {BUILD_SECONDS} s (nvcc, "
        f"one architecture), load + tests <= {TESTS_SECONDS} s, benchmark the rest "
        f"(~{max(rest, 0):.0f} s, rows past it recorded as skipped), report {MARGIN_SECONDS} s"
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("gpu_check.jsonl", "kernel_benchmark.jsonl"):
        (out / stale).unlink(missing_ok=True)
    report = Report(out, args.dry_run)
    report.document["budget_s"] = args.budget
    print(plan(args.budget), flush=True)
    deadline = time.monotonic() + args.budget - MARGIN_SECONDS
    state: dict = {}

    def left(share: float | None = None) -> float:
        remaining = deadline - time.monotonic()
        return remaining if share is None else min(share, remaining)

    def step(name: str, body) -> bool:
        start = time.perf_counter()
        try:
            detail, extra = body()
        except CheckFailed as error:
            report.step(name, "failed", time.perf_counter() - start, str(error))
            return False
        report.step(name, "ok", time.perf_counter() - start, detail, **extra)
        print(f"gpu-check: {name} ok ({time.perf_counter() - start:.0f} s)", flush=True)
        return True

    def do_environment():
        environment(report)
        return "; ".join(f"{k} {v}" for k, v in report.document["environment"].items()), {}

    def do_build():
        arch, how = detect_arch(args.arch, args.dry_run)
        state["library"] = build_library(arch, out, left(BUILD_SECONDS))
        return f"sm_{arch} ({how}) -> {state['library']}", {"arch": arch}

    def do_load():
        env, from_deps = python_env(state["library"], link_farm())
        state["env"] = env
        state["tests_until"] = time.monotonic() + TESTS_SECONDS
        where = f"; from {DEPS.relative_to(REPO)}: {', '.join(from_deps)}" if from_deps else ""
        return check_library(env, out, left(60)) + where, {}

    def do_tests():
        timeout = left(state["tests_until"] - time.monotonic())
        if args.dry_run:
            text = _run(
                pytest_command(out, "--collect-only"), out / "tests.log", timeout, state["env"]
            )
            collected = re.search(r"(\d+) tests? collected", text)
            return f"collected {collected.group(1) if collected else '?'} tests (not run)", {}
        xml = out / "kernel_gpu_tests.xml"
        try:
            _run(pytest_command(out, f"--junitxml={xml}"), out / "tests.log", timeout, state["env"])
        finally:
            if xml.is_file():
                report.document["tests"] = junit_counts(xml)
        counts = report.document["tests"]
        if counts["skipped"] == counts["tests"]:
            raise CheckFailed("every test skipped: no CUDA device visible to torch")
        return (
            f"{counts['tests']} tests, {counts['failures']} failures, {counts['errors']} errors, "
            f"{counts['skipped']} skipped",
            {},
        )

    def do_benchmark():
        rows_file = out / "kernel_benchmark.jsonl"
        command = [sys.executable, "-u", str(REPO / "benchmarks" / "kernel.py"), "--repeats",
                   str(args.repeats), "--jsonl", str(rows_file)]  # fmt: skip
        if args.dry_run:
            text = _run([*command, "--dry-run"], out / "benchmark.log", left(), state["env"])
            stages = re.findall(r"^\|\s+\d+ x \d+", text, flags=re.MULTILINE)
            estimate = re.search(r"^estimated .*$", text, flags=re.MULTILINE)
            detail = f"shape table: {len(stages)} stages (not timed)"
            return detail + (f"; {estimate.group(0)}" if estimate else ""), {}
        if args.no_compile:
            command.append("--no-compile")
        timeout = left()
        # The benchmark's own budget leaves it time to finish the row it is in.
        command += ["--time-budget", f"{max(timeout * 0.75 - 30, 0):.0f}"]
        result = out / "kernel_benchmark.json"
        try:
            _run([*command, "--json", str(result)], out / "benchmark.log", timeout, state["env"])
        finally:
            if result.is_file():
                report.document["benchmark"] = json.loads(result.read_text())
            else:  # cut short: keep the rows it measured
                report.document["benchmark"] = {
                    "device": "cut short",
                    "rows": benchmark_rows(rows_file),
                }
        rows = report.document["benchmark"]["rows"]
        skipped = sum(r.get("status") == "skipped" for r in rows)
        return f"{len(rows)} rows, {skipped} skipped (kernel_benchmark.jsonl, benchmark.log)", {}

    ok = step("environment", do_environment)
    ok = ok and step("build", do_build)
    ok = ok and step("load", do_load)
    if ok:
        ok = step("kernel GPU tests", do_tests) & step("stage benchmark", do_benchmark)
    report.document["passed"] = ok
    report.write()
    print((out / "gpu_check.md").read_text())
    print(f"gpu-check {'passed' if ok else 'FAILED'}: {out / 'gpu_check.json'}")
    return 0 if ok else 1


def prepare_deps() -> int:
    """Copies pytest, its pure-Python dependencies and PyYAML from this environment into
    build/gpu-check/deps, for GPU machines that lack them (carry the folder along). The
    backports pytest needs on Python 3.10 come from the package index when this Python has
    none; every file must parse as Python 3.10."""
    if DEPS.exists():
        shutil.rmtree(DEPS)
    DEPS.mkdir(parents=True)
    copied, missing = [], []
    for name in (*DEP_MODULES, *DEP_EXTRAS, *DEP_OPTIONAL):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            if name in DEP_EXTRAS:
                missing.append(name)
            elif name not in (*DEP_OPTIONAL, "py"):
                print(f"gpu_check: {name} is not installed here: pip install pytest pyyaml")
                return 1
            continue
        source = Path(spec.origin)
        if source.name == "__init__.py":
            shutil.copytree(
                source.parent, DEPS / name, ignore=shutil.ignore_patterns("__pycache__", "*.so")
            )
        else:
            shutil.copy2(source, DEPS / source.name)
        copied.append(name)
    if missing:
        copied += download_backports(missing)
    too_new = files_newer_than(DEPS, OLDEST_PYTHON)
    if too_new:
        print(f"gpu_check: not Python {'.'.join(map(str, OLDEST_PYTHON))} syntax: {too_new[:3]}")
        return 1
    size = sum(f.stat().st_size for f in DEPS.rglob("*") if f.is_file())
    print(f"{DEPS}: {', '.join(copied)} ({size / 2**20:.1f} MiB, pure Python, parses as 3.10)")
    return 0


def download_backports(names: list[str]) -> list[str]:
    """Pure-Python wheels (py3-none-any) of `names` for Python 3.10, unpacked into DEPS."""
    wheels = WORK / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    version = "".join(map(str, OLDEST_PYTHON))
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", version,
               "-d", str(wheels), *names]  # fmt: skip
    subprocess.run(command, check=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(DEPS)
    return [f"{name} (py{version} wheel)" for name in names]


def files_newer_than(folder: Path, version: tuple[int, int]) -> list[str]:
    """Python files under folder that do not parse with `version`'s grammar."""
    bad = []
    for path in sorted(folder.rglob("*.py")):
        try:
            ast.parse(path.read_bytes(), filename=str(path), feature_version=version)
        except SyntaxError:
            bad.append(str(path.relative_to(folder)))
    return bad


def main(argv: list[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress reaches a log or pipe at once
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Results: OUT/gpu_check.json and OUT/gpu_check.md (see the module docstring).",
    )
    parser.add_argument("out", nargs="?", help="folder for the results (created)")
    parser.add_argument(
        "--dry-run", action="store_true", help="everything up to the first CUDA call (no GPU)"
    )
    parser.add_argument("--arch", help="SM to build for, e.g. 90 (default: from nvidia-smi)")
    parser.add_argument("--repeats", type=int, default=10, help="benchmark timed runs (median)")
    parser.add_argument(
        "--budget",
        type=float,
        default=360.0,
        metavar="S",
        help="seconds for the whole check (default: %(default)s); each step gets its share",
    )
    parser.add_argument("--no-compile", action="store_true", help="benchmark without torch.compile")
    parser.add_argument(
        "--prepare-deps",
        action="store_true",
        help=f"copy pytest and PyYAML from here into {DEPS.relative_to(REPO)} and exit",
    )
    args = parser.parse_args(argv)
    if args.prepare_deps:
        return prepare_deps()
    if not args.out:
        parser.error("give the results folder, e.g. out/gpu-check")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    minimum = BUILD_SECONDS + TESTS_SECONDS + MARGIN_SECONDS + 30
    if args.budget < minimum and not args.dry_run:
        parser.error(f"--budget {args.budget:.0f} s is too short: at least {minimum} s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
