"""Shared helpers of the kernel tests: the CMake build of the library, once per test session (no
conftest, so other test files are untouched), and random operator inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from axial_deploy.op.kernel import LIBRARY_ENV, LIBRARY_NAME, REPO_ROOT

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


def random_op_inputs(
    batch: int,
    height: int,
    width: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    table_length: int,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """qkv in `dtype` and the five float32 tables, random and non-zero (CPU tensors).

    Scales keep the logits in the range a trained, BatchNorm-folded layer sees (a few units), so
    the softmax is neither one-hot nor flat.
    """
    g = torch.Generator().manual_seed(seed)
    channels = num_heads * (2 * key_depth + value_depth)
    qkv = torch.randn(batch, channels, height, width, generator=g) / key_depth**0.25
    tables = (
        0.5 * torch.randn(num_heads, key_depth, table_length, generator=g),
        0.5 * torch.randn(num_heads, key_depth, table_length, generator=g),
        torch.randn(num_heads, value_depth, table_length, generator=g),
        0.5 + torch.rand(num_heads, generator=g),
        0.2 * torch.randn(num_heads * value_depth, generator=g),
    )
    return qkv.to(dtype), tables


def reference(qkv: torch.Tensor, tables, attributes) -> torch.Tensor:
    """axial_attention_op in float64 on the same (already rounded) qkv, on the CPU."""
    from axial_deploy.models.axial_attention import axial_attention_op

    return axial_attention_op(
        qkv.detach().cpu().double(), *(t.detach().cpu().double() for t in tables), attributes
    )
