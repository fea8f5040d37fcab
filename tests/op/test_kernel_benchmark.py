"""benchmarks/kernel.py without a GPU: shape derivation from the model and --dry-run."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from axial_deploy.op.kernel import REPO_ROOT


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "bench_kernel", REPO_ROOT / "benchmarks" / "kernel.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_stages_follow_the_model_strides(capsys):
    bench = load_benchmark()
    stages = bench.model_stages("axial_deeplab_s", 129, 257)
    # Axial-DeepLab-S: stride 4, 8 and 16 maps of a 129 x 257 input, span 65, 8 heads.
    sizes = {(s.height, s.width) for s in stages}
    assert sizes == {(33, 65), (17, 33), (9, 17)}
    assert {s.axis for s in stages} == {2, 3}
    assert all(s.span == 65 and s.table_length == 65 and s.num_heads == 8 for s in stages)
    assert {(s.key_depth, s.value_depth) for s in stages} == {(4, 8), (8, 16), (16, 32), (32, 64)}
    # 3 + 4 + 6 + 3 blocks, two attention layers each
    assert sum(s.layers for s in stages) == 2 * (3 + 4 + 6 + 3)
    stage = bench.Stage(5, 7, 3, 2, 4, 8, 3, 3, layers=1)
    # lines of 7 with radius 1: 5 windows of 3 and 2 clipped ones of 2 -> 19 pairs per line
    assert stage.pairs(batch=1) == 5 * 2 * 19
    assert bench.main(["--dry-run", "--input-shape", "129x257"]) == 0
    assert "33 x 65" in capsys.readouterr().out


def load_gpu_check():
    spec = importlib.util.spec_from_file_location(
        "gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_check_report_and_junit_counts(tmp_path):
    """The report's JSON/Markdown (rewritten after each step) and the JUnit tally."""
    gpu_check = load_gpu_check()
    report = gpu_check.Report(tmp_path / "out", dry_run=False)
    report.step("build", "ok", 1.25, "sm_90 | nvcc")
    report.document["benchmark"] = {
        "device": "H100", "peak_fp32_tflop_per_s": 51.2, "peak_copy_gb_per_s": 2900.0,
        "rows": [{"height": 257, "width": 513, "axis": 3, "key_depth": 4, "value_depth": 8,
                  "dtype": "fp16", "impl": "kernel", "ms": 0.123, "gb_per_s": 1500.0,
                  "tflop_per_s": 3.5, "vs_kernel": 1.0}],
    }  # fmt: skip
    report.step("stage benchmark", "failed", 2.0, "exit 1")
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [s["status"] for s in saved["steps"]] == ["ok", "failed"]
    markdown = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| build | ok | 1.2 | sm_90 \\| nvcc |" in markdown
    assert "| 257 x 513 | 3 | 4 | 8 | fp16 | kernel | 0.123 | 1500 | 3.50 | 1.0x |" in markdown
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase name="a"/><testcase name="b"><failure/></testcase>'
        '<testcase name="c"><skipped/></testcase></testsuite></testsuites>'
    )
    counts = gpu_check.junit_counts(xml)
    assert counts == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1, "failed": ["b"]}


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    """Everything up to the first CUDA call: environment, nvcc build, load, test collection,
    the benchmark's shape table (about a minute: the nvcc build)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found")
    gpu_check = load_gpu_check()
    assert gpu_check.main([str(tmp_path), "--dry-run", "--arch", "80"]) == 0
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["passed"] and saved["dry_run"]
    steps = {s["step"]: s for s in saved["steps"]}
    assert all(s["status"] == "ok" for s in steps.values()), steps
    assert steps["build"]["arch"] == "80"
    assert "ABI 1" in steps["load"]["detail"]
    assert re.search(r"collected \d{3} tests", steps["kernel GPU tests"]["detail"])


def test_compile_budget_never_labels_eager_as_compiled(monkeypatch):
    """One dynamic compile serves every shape; a call that needs one more compile past the
    budget is refused with the reason instead of running eagerly (dynamo's own fallback)."""
    import torch
    import torch._dynamo
    import torch._dynamo.config as dynamo_config

    bench = load_benchmark()
    monkeypatch.setattr(dynamo_config, bench.recompile_limit_name(), 1)  # the budget lifts it
    torch._dynamo.reset()

    def op(x, *, axis: int):  # axis is specialized (a guard), the sizes are dynamic
        return (x * 2).sum(axis)

    budget = bench.CompileBudget(op, budget=2, backend="eager")
    assert budget.prepare(torch.ones(3, 4), axis=0) is None
    assert len(budget.compiles) == 1
    for shape in ((5, 6), (7, 2)):  # new sizes: the dynamic graph serves them
        assert budget.prepare(torch.ones(*shape), axis=0) is None
        assert budget(torch.ones(*shape), axis=0).shape == (shape[1],)
    assert len(budget.compiles) == 1
    assert budget.prepare(torch.ones(3, 4), axis=1) is None  # a guard failure: compile 2
    assert len(budget.compiles) == 2
    reason = budget.prepare(torch.ones(3, 4, 5), axis=2)  # would be compile 3
    assert reason is not None and reason.startswith("compile budget spent (2 compiles")
    with pytest.raises(RuntimeError, match="Detected recompile"):
        budget(torch.ones(3, 4, 5), axis=2)  # never a silent eager run
    torch._dynamo.reset()


def test_rows_are_written_as_measured_and_skips_say_why(tmp_path, capsys):
    bench = load_benchmark()
    stage = bench.Stage(33, 65, 3, 8, 4, 8, 65, 65, layers=2)
    rows = tmp_path / "rows.jsonl"
    row = bench.skipped_row(stage, "fp16", "compiled", "compile budget spent (4 compiles, 90 s)")
    bench.append_row(str(rows), row)
    bench.append_row(str(rows), {**row, "impl": "eager"})
    saved = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [r["impl"] for r in saved] == ["compiled", "eager"]
    assert saved[0]["status"] == "skipped" and "budget" in saved[0]["reason"]
    assert "skipped: compile budget spent" in capsys.readouterr().out
    args = bench.build_parser().parse_args(["--repeats", "10"])
    with_compile = bench.estimate_seconds([stage], args, ["kernel", "eager", "compiled"])
    without = bench.estimate_seconds([stage], args, ["kernel", "eager"])
    assert with_compile - without > bench.COMPILE_SECONDS  # one cold compile per dtype
    assert bench.main(["--dry-run", "--input-shape", "129x257"]) == 0
    assert re.search(r"^estimated \d+ s for 24 stage x dtype rows", capsys.readouterr().out, re.M)


def test_gpu_check_keeps_what_a_cut_short_child_printed(tmp_path):
    gpu_check = load_gpu_check()
    gpu_check.WORK.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "child.log"
    code = "import time; print('row 1'); time.sleep(30)"
    with pytest.raises(gpu_check.CheckFailed, match="timed out after 2 s"):
        gpu_check._run([sys.executable, "-c", code], log, 2)
    assert "row 1" in log.read_text()  # unbuffered, straight into the log
    rows = tmp_path / "kernel_benchmark.jsonl"
    rows.write_text('{"impl": "kernel", "ms": 1.0}\n{"impl": "eag')  # killed mid-line
    assert gpu_check.benchmark_rows(rows) == [{"impl": "kernel", "ms": 1.0}]
    report = gpu_check.Report(tmp_path / "out", dry_run=True)
    report.step("build", "ok", 1.0, "sm_90")
    report.step("load", "failed", 0.5, "exit 1")
    lines = (tmp_path / "out" / "gpu_check.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == ["build", "load"]
    assert "budget 360 s" in gpu_check.plan(360)


def test_gpu_check_sources_parse_on_python_3_10(tmp_path):
    """JetPack 6 runs Python 3.10: the files a GPU machine runs must parse there."""
    gpu_check = load_gpu_check()
    files = [
        REPO_ROOT / "benchmarks" / "gpu_check.py",
        REPO_ROOT / "benchmarks" / "kernel.py",
        REPO_ROOT / "tests" / "op" / "test_kernel_gpu.py",
        REPO_ROOT / "tests" / "kernel_helpers.py",
        *sorted((REPO_ROOT / "axial_deploy").rglob("*.py")),
        *sorted((REPO_ROOT / "models").rglob("*.py")),
    ]
    for path in files:
        target = tmp_path / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    assert gpu_check.files_newer_than(tmp_path, (3, 10)) == []
    (tmp_path / "new.py").write_text("type Alias = int\n")  # 3.12 syntax
    assert gpu_check.files_newer_than(tmp_path, (3, 10)) == ["new.py"]


def other_python(version: str) -> str | None:
    """A working python3.X on this machine (pyenv shims may exist without the version)."""
    import subprocess

    pyenv = Path("/root/.pyenv/versions").glob(f"{version}.*/bin/python{version}")
    for candidate in (shutil.which(f"python{version}"), *sorted(map(str, pyenv))):
        if not candidate:
            continue
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_gpu_check_deps_import_on_other_pythons(version):
    """The carried bundle (build/gpu-check/deps, made here on 3.11) imports pytest and yaml on
    Python 3.10 (with the backports fetched for it) and 3.12."""
    import subprocess

    python = other_python(version)
    if python is None:
        pytest.skip(f"no working python{version} on this machine")
    gpu_check = load_gpu_check()
    assert gpu_check.prepare_deps() == 0  # the bundle as a session makes it, fresh
    code = "import pytest, yaml; print(pytest.__version__, yaml.safe_load('a: 1'))"
    result = subprocess.run(
        [python, "-I", "-c", f"import sys; sys.path.append({str(gpu_check.DEPS)!r}); {code}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "{'a': 1}" in result.stdout


def test_gpu_check_returns_the_child_output_only(tmp_path):
    gpu_check = load_gpu_check()
    gpu_check.WORK.mkdir(parents=True, exist_ok=True)
    code = "import sys\nprint('ABI', 1)"  # a command line with a newline in it
    assert gpu_check._run([sys.executable, "-c", code], tmp_path / "log", 30).strip() == "ABI 1"
