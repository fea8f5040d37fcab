"""The package as a user gets it: a wheel built from this checkout (pure Python,
AXIAL_DEPLOY_NATIVE=OFF), installed into a fresh venv WITHOUT torch, runs the deploy side from a
folder outside the checkout: `build --backend tensorrt-rtx`, `run`, `profile`, `verify`,
`evaluate` on a small plain and rewritten ONNX model (exported by this checkout's torch), and
refuses `export` with the one-line extra hint.

One wheel, one venv and one pair of models per session (module-scoped fixtures): the build and
the installs take about a minute on 2 cores, the tests seconds each. Packages come from the pip
index configured on the machine (the local mirror here; no other network).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
RTX_REQUIREMENT_RE = re.compile(r"^tensorrt-rtx")


def _env() -> dict[str, str]:
    """The environment without anything that points back into this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXIAL_DEPLOY_", "PYTHON"))}
    env["AXIAL_DEPLOY_NATIVE"] = "OFF"
    return env


def _run(argv: list, cwd: Path, timeout: int = 600, check: bool = True):
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def _requirements(wheel: Path) -> tuple[list[str], list[str]]:
    """(base requirements, the rtx extra's) from the wheel's own metadata."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    base, rtx = [], []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = line.split(":", 1)[1].strip()
        if ";" not in requirement:
            base.append(requirement)
        elif 'extra == "rtx"' in requirement:
            rtx.append(requirement.split(";")[0].strip())
    return base, rtx


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, REPO], cwd=out)
    (built,) = out.glob("axial_deploy-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """bin/ of a fresh venv holding the wheel, its base requirements and TensorRT-RTX."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", root / "venv"], cwd=root)
    pip = [root / "venv" / "bin" / "python", "-m", "pip", "install", "-q"]
    _run([*pip, "--no-deps", wheel], cwd=root)
    base, rtx = _requirements(wheel)
    _run([*pip, *base, *rtx], cwd=root)
    return root / "venv" / "bin"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder outside the checkout with plain.onnx and rewritten.onnx (axial26_tiny and its
    shipped weights, exported and rewritten by this checkout's environment, which has torch)."""
    folder = tmp_path_factory.mktemp("work")
    cli = [sys.executable, "-m", "axial_deploy.cli"]
    weights = REPO / "models" / "pretrained" / "axial26_tiny.pt"
    _run(
        [*cli, "export", "--model", "axial26_tiny", "--checkpoint", weights, "--num-classes", "5",
         "--input-shape", "1x3x64x64", "-o", "plain.onnx"],
        cwd=folder,
    )  # fmt: skip
    _run([*cli, "rewrite", "plain.onnx", "-o", "rewritten.onnx"], cwd=folder)
    return folder


def test_wheel_carries_what_the_package_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "axial_deploy/data/AxialAttention_PluginConfig.yaml" in names
    for model in ("axial26_tiny", "axial_deeplab_tiny"):
        assert {f"axial_deploy/models/pretrained/{model}.{ext}" for ext in ("pt", "json")} <= names
    assert {"axial_deploy/cli/plugin_path.py", "axial_deploy/calibration/qdq.py"} <= names
    assert not any(n.startswith("axial_deploy/lib/") for n in names)  # built with NATIVE=OFF
    assert not any(n.startswith(("plugins/", "tests/", "models/")) for n in names)
    base, _ = _requirements(wheel)
    assert base and not any(re.match(r"torch\b", r) for r in base), base
    assert wheel.name.endswith("-py3-none-linux_x86_64.whl")


def test_installed_package_has_no_torch_and_reads_only_itself(venv, work):
    python = venv / "python"
    assert _run([python, "-c", "import torch"], cwd=work, check=False).returncode != 0
    probe = (
        "import json, axial_deploy, axial_deploy.op.spec as s, axial_deploy.models as m;"
        "print(json.dumps([axial_deploy.__file__, m.__file__, str(s.SPEC_PATH), s.OP_TYPE]))"
    )
    package, models, spec, op_type = json.loads(_run([python, "-c", probe], cwd=work).stdout)
    site = str(venv.parent / "lib")
    assert all(path.startswith(site) for path in (package, models, spec)), (package, spec)
    assert op_type == "AxialAttention"


def test_rewrite_without_torch_writes_the_same_graph(venv, work):
    """Each layer's probe runs the numpy form of the op: every layer is rewritten, and the file
    is the one the torch environment wrote."""
    result = _run(
        [venv / "axial-deploy", "rewrite", "plain.onnx", "-o", "torchfree.onnx",
         "--report", "torchfree.rewrite.json"],
        cwd=work,
    )  # fmt: skip
    report = json.loads((work / "torchfree.rewrite.json").read_text())
    assert report["rewritten"] == 8 and report["left_intact"] == 0, result.stdout
    assert all(layer["max_rel_err"] < 1e-5 for layer in report["layers"])
    assert (work / "torchfree.onnx").read_bytes() == (work / "rewritten.onnx").read_bytes()


def test_build_with_tensorrt_rtx_without_torch(venv, work):
    result = _run(
        [venv / "axial-deploy", "build", "plain.onnx", "--backend", "tensorrt-rtx",
         "-o", "plain.engine"],
        cwd=work,
    )  # fmt: skip
    assert "wrote plain.engine" in result.stdout + result.stderr
    manifest = json.loads((work / "plain.engine.json").read_text())
    assert manifest and (work / "plain.engine").stat().st_size > 100_000


def test_run_verify_profile_evaluate_without_torch(venv, work):
    cli = venv / "axial-deploy"
    _run([cli, "dataset", "classification", "-o", "data", "--train", "0", "--val", "10"], cwd=work)
    image = sorted((work / "data" / "val").glob("*/*.png"))[0]

    # run: the rewritten graph's AxialAttention nodes go through the numpy reference op here;
    # the same run in this checkout's environment goes through the torch one.
    _run([cli, "run", "rewritten.onnx", "--input", image, "-o", "torchfree.npz"], cwd=work)
    _run(
        [sys.executable, "-m", "axial_deploy.cli", "run", "rewritten.onnx", "--input", image,
         "-o", "withtorch.npz"],
        cwd=work,
    )  # fmt: skip
    got, expected = np.load(work / "torchfree.npz"), np.load(work / "withtorch.npz")
    assert set(got.files) == set(expected.files) and got.files
    for name in got.files:
        scale = np.abs(expected[name]).max()
        assert scale > 0.1 and np.abs(got[name] - expected[name]).max() <= 1e-5 * scale

    result = _run([cli, "verify", "plain.onnx", "rewritten.onnx"], cwd=work)
    assert "PASS" in result.stdout

    _run([cli, "profile", "rewritten.onnx", "--iterations", "3", "--report", "p.json"], cwd=work)
    assert (work / "p.json").is_file() and (work / "p.html").is_file()

    result = _run([cli, "evaluate", "rewritten.onnx", "--data", "data"], cwd=work)
    top1 = float(re.search(r"^\S+\s+(\d+\.\d+)", result.stdout, re.M).group(1))
    assert top1 >= 60.0, result.stdout  # the shipped weights reach ~95% on this data


def test_export_is_refused_with_the_extra_hint(venv, work):
    result = _run(
        [venv / "axial-deploy", "export", "--model", "axial26_tiny", "-o", "x.onnx"],
        cwd=work, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "export needs PyTorch" in result.stderr
    assert "pip install 'axial-deploy[torch]'" in result.stderr
    assert not (work / "x.onnx").exists()


def test_panoptic_evaluate_without_torch_equals_the_torch_one(venv, work):
    """The numpy post-processing of the torch-free install gives the same PQ, SQ, RQ and mIoU
    as the PyTorch one, on the shipped axial_deeplab_tiny exported to ONNX."""
    weights = REPO / "models" / "pretrained" / "axial_deeplab_tiny.pt"
    here = [sys.executable, "-m", "axial_deploy.cli"]
    _run(
        [*here, "export", "--model", "axial_deeplab_tiny", "--checkpoint", weights,
         "--num-classes", "7", "--input-shape", "1x3x129x129", "-o", "panoptic.onnx"],
        cwd=work,
    )  # fmt: skip
    cli = venv / "axial-deploy"
    _run([cli, "dataset", "panoptic", "-o", "panoptic", "--train", "0", "--val", "3"], cwd=work)
    evaluate = ["evaluate", "panoptic.onnx", "--data", "panoptic", "--report"]
    _run([cli, *evaluate, "torchfree.json"], cwd=work)
    _run([*here, *evaluate, "withtorch.json"], cwd=work)
    got, expected = (
        json.loads((work / name).read_text())["results"]
        for name in ("torchfree.json", "withtorch.json")
    )
    (result,) = got.values()
    assert result["task"] == "panoptic" and result["metrics"]["PQ"] > 30.0, result["metrics"]
    assert [r["metrics"] for r in got.values()] == [r["metrics"] for r in expected.values()]
