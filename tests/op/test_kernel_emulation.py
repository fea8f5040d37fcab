"""The CUDA kernel's device code, run on the CPU: tests/native/kernel_emulation.cpp compiles
plugins/axial_attention/axialAttentionDevice.cuh as host C++ (one thread per CUDA thread, a
barrier as __syncthreads) behind the real C ABI, and its output must match the reference
`axial_attention_op` within the spec's tolerance. This checks the kernel's indexing, tiling,
chunking, table clamping and online softmax without a GPU; GPU-only behaviour (coalescing, races,
speed) is for tests/op/test_kernel_gpu.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from kernel_helpers import random_op_inputs, reference

from axial_deploy.op.kernel import REPO_ROOT, KernelParams
from axial_deploy.op.spec import TOLERANCES, AxialAttentionAttributes

NATIVE_DIR = REPO_ROOT / "tests" / "native"
EMULATOR_SOURCES = (NATIVE_DIR / "kernel_emulator.cpp", NATIVE_DIR / "kernel_emulation.cpp")
PLUGIN_DIR = REPO_ROOT / "plugins" / "axial_attention"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ not found: the kernel emulation needs a C++20 compiler")
    version = subprocess.run([compiler, "-dumpversion"], capture_output=True, text=True).stdout
    if int(version.split(".")[0] or 0) < 12:
        pytest.skip(f"g++ {version.strip()} is too old: the emulation needs g++ >= 12 (_Float16)")
    binary = tmp_path_factory.mktemp("emulator") / "kernel_emulator"
    command = [
        compiler, "-std=c++20", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror",
        "-Wno-unknown-pragmas", f"-I{PLUGIN_DIR}", *map(str, EMULATOR_SOURCES),
        str(PLUGIN_DIR / "axialAttentionApi.cpp"), "-o", str(binary),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return binary


def emulate(emulator: Path, tmp_path: Path, qkv, tables, attrs, budget=None) -> tuple:
    n, _, h, w = qkv.shape
    dtype = {torch.float32: 0, torch.float16: 1}[qkv.dtype]
    params = KernelParams.for_call(attrs, (n, h, w), tables[0].shape[-1], dtype)
    ints = dataclasses.astuple(params)  # the C struct AxialAttentionParams, field for field
    source, target = tmp_path / "in.bin", tmp_path / "out.bin"
    with source.open("wb") as f:
        f.write(struct.pack("<10i", *ints))
        for t in (qkv, *tables):
            f.write(t.float().numpy().astype("<f4").tobytes())
    command = [str(emulator), str(source), str(target)]
    if budget is not None:
        command.append(str(budget))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    y = torch.from_numpy(np.fromfile(target, dtype="<f4")).reshape(n, -1, h, w)
    return y, json.loads(result.stdout)


# (N, H, W, axis, G, Dq, Dv, span, T, shared-memory budget or None for the real 48 KiB)
CASES = [
    (1, 8, 9, 3, 2, 4, 8, 3, 5, None),  # span < line, table = span
    (1, 8, 9, 2, 2, 4, 8, 3, 5, None),
    (2, 13, 17, 3, 3, 8, 16, 0, 7, None),  # global, T < 2L - 1: clamped offsets
    (2, 13, 17, 2, 3, 8, 16, 0, 41, None),  # global, T > 2L - 1
    (1, 1, 1, 2, 1, 4, 8, 1, 1, None),  # L = 1, T = 1, span 1
    (1, 1, 6, 3, 1, 4, 8, 1, 3, None),  # span 1: attends to itself only
    (1, 5, 40, 3, 2, 16, 32, 9, 3, None),
    (1, 40, 5, 2, 2, 32, 64, 0, 79, None),  # chunked keys at the real budget
    (1, 21, 19, 2, 2, 3, 5, 7, 9, None),  # generic variant, odd depths
    (1, 21, 19, 3, 1, 64, 128, 7, 9, None),  # generic variant at its maxima
    (1, 11, 6, 2, 2, 4, 8, 65, 65, None),  # window wider than the line
    (1, 33, 70, 3, 2, 4, 8, 65, 65, None),  # the stride-4 stage's depths, 3 query tiles
    (1, 21, 19, 3, 2, 4, 8, 7, 9, 6000),  # key chunks, tables staged per chunk
    (1, 37, 19, 2, 2, 8, 16, 11, 21, 30000),  # same along the height
    (1, 37, 19, 2, 2, 8, 16, 11, 21, 12000),  # tables from global memory
    (1, 21, 19, 3, 2, 4, 8, 7, 9, 2048),  # tables read from global memory
    (1, 21, 19, 2, 2, 4, 8, 0, 9, 2048),
    (2, 7, 300, 3, 1, 4, 8, 65, 65, None),  # long line: several query tiles
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_emulated_kernel_matches_reference(emulator, tmp_path, case, dtype):
    n, h, w, axis, g, dq, dv, span, t, budget = case
    qkv, tables = random_op_inputs(n, h, w, g, dq, dv, t, dtype=dtype, seed=sum(case[:9]))
    attrs = AxialAttentionAttributes(axis, g, dq, dv, span)
    y, plan = emulate(emulator, tmp_path, qkv, tables, attrs, budget=budget)
    expected = reference(qkv, tables, attrs)
    assert not torch.isnan(y).any(), "output left unwritten (poisoned with NaN)"
    err = ((y.double() - expected).abs().max() / expected.abs().max()).item()
    tolerance = TOLERANCES["float32" if dtype == torch.float32 else "float16"]
    assert err < tolerance, (err, plan)


def test_budget_cases_drive_the_chunked_paths(emulator, tmp_path):
    """The small budgets above really take the chunked and global-table paths."""
    qkv, tables = random_op_inputs(1, 21, 19, 2, 4, 8, 9)
    attrs = AxialAttentionAttributes(axis=3, num_heads=2, key_depth=4, value_depth=8, span=7)
    _, chunked = emulate(emulator, tmp_path, qkv, tables, attrs, budget=6000)
    assert chunked["tables_in_shared"] == 1 and 8 <= chunked["key_chunk"] < 19
    height = dataclasses.replace(attrs, axis=2, key_depth=8, value_depth=16, span=11)
    qkv, tables = random_op_inputs(1, 37, 19, 2, 8, 16, 21)
    _, chunked = emulate(emulator, tmp_path, qkv, tables, height, budget=30000)
    assert chunked["tables_in_shared"] == 1 and 8 <= chunked["key_chunk"] < 26
    _, global_tables = emulate(emulator, tmp_path, qkv, tables, height, budget=12000)
    assert global_tables["tables_in_shared"] == 0
    _, global_tables = emulate(emulator, tmp_path, qkv, tables, attrs, budget=2048)
    assert global_tables["tables_in_shared"] == 0
    _, whole = emulate(emulator, tmp_path, qkv, tables, attrs)
    assert whole["tables_in_shared"] == 1 and whole["key_chunk"] == 19
