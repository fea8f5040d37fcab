"""benchmarks/kernel.py without a GPU: shape derivation from the model and --dry-run."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys

import pytest

from axial_deploy.kernel import REPO_ROOT


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
