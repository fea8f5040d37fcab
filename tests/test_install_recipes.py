"""The install and serving recipes' checkable parts (docs/install/): the tar recipe's wheel
selection, the Kubernetes objects (rendered with kustomize, validated against the Kubernetes
schemas), the Dockerfiles (hadolint) and the per-platform constraints files."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


select = _load(ROOT / "deploy/select_wheel.py")

# What a TensorRT 10 tar package's python/ folder holds: one wheel per Python version, for the
# full bindings and the lean and dispatch runtimes (names as the tar's wheels are written).
PYTHONS = ["cp38", "cp39", "cp310", "cp311", "cp312", "cp313"]


def tar_python_folder(tmp_path: Path, machine: str) -> Path:
    folder = tmp_path / "python"
    folder.mkdir()
    for name in ("tensorrt", "tensorrt_lean", "tensorrt_dispatch"):
        for cp in PYTHONS:
            (folder / f"{name}-10.16.1.11-{cp}-none-linux_{machine}.whl").write_bytes(b"")
    return folder


def test_tar_wheel_selection_picks_the_running_interpreters_wheel(tmp_path):
    machine = platform.machine()
    folder = tar_python_folder(tmp_path, machine)
    cp = f"cp{sys.version_info.major}{sys.version_info.minor}"
    picked = select.select_wheel(folder, "tensorrt")
    assert picked.name == f"tensorrt-10.16.1.11-{cp}-none-linux_{machine}.whl"
    lean = select.select_wheel(folder, "tensorrt-lean")  # pip spelling of the name works too
    assert lean.name == f"tensorrt_lean-10.16.1.11-{cp}-none-linux_{machine}.whl"
    # as the docs call it: the path on stdout, nothing else
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy/select_wheel.py"), str(folder), "tensorrt"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == str(picked) and out.stderr == ""


@pytest.mark.parametrize(
    ("version", "machine", "expected"),
    [
        ((3, 10), "x86_64", "tensorrt-10.16.1.11-cp310-none-linux_x86_64.whl"),
        ((3, 12), "x86_64", "tensorrt-10.16.1.11-cp312-none-linux_x86_64.whl"),
        ((3, 12), "aarch64", None),  # an x86 tar on an arm64 machine
        ((3, 14), "x86_64", None),  # a Python the tar has no wheel for
    ],
)
def test_tar_wheel_selection_by_version_and_machine(tmp_path, version, machine, expected):
    folder = tar_python_folder(tmp_path, "x86_64")
    if expected:
        assert select.select_wheel(folder, "tensorrt", version, machine).name == expected
        return
    with pytest.raises(select.NoWheelError) as refused:
        select.select_wheel(folder, "tensorrt", version, machine)
    message = str(refused.value)
    assert f"Python {version[0]}.{version[1]} on {machine}" in message
    assert "cp310-none-linux_x86_64" in message  # what was there, to choose from


def test_tar_wheel_selection_errors(tmp_path):
    code = select.main([str(tmp_path / "missing"), "tensorrt"])
    assert code == 1
    (tmp_path / "tensorrt-10.3.0.30-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "tensorrt-10.3.0.30-cp310-none-any.whl").write_bytes(b"")
    with pytest.raises(select.NoWheelError, match="several tensorrt wheels"):
        select.select_wheel(tmp_path, "tensorrt", (3, 10), "x86_64")
    assert select.main([]) == 2


def test_triton_image_panoptic_step_needs_no_torch(monkeypatch):
    # deploy/triton/Dockerfile installs axial-deploy without [torch]: the Python-backend
    # post-processing then runs the numpy form, with the same segments as the torch one.
    from axial_deploy.serving.pipeline import PanopticStep, panoptic_settings_for

    rng = np.random.default_rng(3)
    semantic = rng.normal(size=(2, 7, 17, 19)).astype(np.float32)
    center = rng.random((2, 1, 17, 19)).astype(np.float32)
    offset = rng.normal(scale=3.0, size=(2, 2, 17, 19)).astype(np.float32)
    sizes = [(30, 40), (17, 19)]
    settings = panoptic_settings_for("axial_deeplab_tiny", None)
    with_torch = PanopticStep(settings)(semantic, center, offset, sizes)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    without = PanopticStep(settings)(semantic, center, offset, sizes)
    for (ids_t, seg_t), (ids_n, seg_n) in zip(with_torch, without, strict=True):
        np.testing.assert_array_equal(ids_t, ids_n)
        assert seg_t == seg_n and seg_t
