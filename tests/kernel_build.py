"""Builds the AxialAttention kernel library with CMake once per test session (shared by the
kernel test modules; no conftest so that other test files are untouched)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from axial_deploy.kernel import LIBRARY_ENV, LIBRARY_NAME, REPO_ROOT

# nvcc 13.0 accepts all of them (`nvcc --list-gpu-arch`); the last also gets PTX.
DEFAULT_ARCHS = ("75", "80", "86", "87", "89", "90", "100", "110", "120")

_builds: dict[str, tuple[Path, float]] = {}


def skip_without_toolchain() -> None:
    for tool in ("cmake", "nvcc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: the kernel build needs CMake >= 3.25 and nvcc")


def build_kernels(build_root: Path, archs: str | None = None) -> tuple[Path, float]:
    """Configure and build into build_root/<archs>; returns (build dir, build seconds).

    archs None = the CMakeLists default (all architectures). Warnings are errors. Cached for the
    session, so the ABI tests reuse the build of the build test.
    """
    key = archs or "default"
    if key not in _builds:
        skip_without_toolchain()
        build = build_root / key
        configure = [
            "cmake",
            "-S",
            str(REPO_ROOT),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DAXIAL_ATTENTION_WERROR=ON",
            "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
        ]
        if archs:
            configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
        env = {k: v for k, v in os.environ.items() if k != "CUDAARCHS"}
        subprocess.run(configure, check=True, capture_output=True, text=True, env=env)
        start = time.perf_counter()
        result = subprocess.run(
            ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise AssertionError(f"kernel build failed:\n{result.stdout}\n{result.stderr}")
        _builds[key] = (build, seconds)
    return _builds[key]


def library_for_tests(build_root: Path, archs: str | None = None) -> Path:
    """$AXIAL_DEPLOY_KERNEL_LIB when set (a library built elsewhere), else a fresh build."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return Path(override)
    build, _ = build_kernels(build_root, archs)
    return build / "lib" / LIBRARY_NAME
