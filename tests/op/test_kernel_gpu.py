"""The fused CUDA kernel on a GPU against the reference `axial_attention_op` (float64 on the same,
already rounded, qkv): many random shapes, both axes, global and local spans, both dtypes, output
buffers poisoned with NaN first. Skipped without CUDA (torch's CUDA build and a device)."""

from __future__ import annotations

import random

import pytest
import torch
import yaml
from kernel_helpers import library_for_tests, random_op_inputs, reference

from axial_deploy.op import kernel
from axial_deploy.op import torch_op as kernel_op
from axial_deploy.op.spec import AxialAttentionAttributes

# The spec's tolerances, read without axial_deploy.op.spec (which needs onnx): this file also runs
# on bare GPU machines through `make gpu-check` (python, numpy, torch, nvcc only).
_SPEC = kernel.REPO_ROOT / "plugins" / "axial_attention" / "AxialAttention_PluginConfig.yaml"
TOLERANCES = {
    dtype: float(entry["max_rel_err"])
    for dtype, entry in yaml.safe_load(_SPEC.read_text())["versions"]["1"]["tolerances"].items()
}

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    # Only this GPU's architecture: faster than the full build test_kernel_build.py checks.
    return library_for_tests(tmp_path_factory.getbasetemp() / "kernel-build", archs="native")


@pytest.fixture(autouse=True)
def use_library(library, monkeypatch):
    monkeypatch.setenv(kernel.LIBRARY_ENV, str(library))


def random_cases(count: int, seed: int = 0) -> list[tuple]:
    """(N, H, W, axis, G, Dq, Dv, span, T): zoo depths, odd depths, spans 0/1/odd/65, tables
    shorter and longer than the lines."""
    rng = random.Random(seed)
    depths = [(4, 8), (8, 16), (16, 32), (32, 64), (64, 128), (1, 1), (3, 5), (5, 2), (12, 24)]
    cases = []
    for index in range(count):
        dq, dv = depths[index % len(depths)]
        h, w = rng.randint(1, 80), rng.randint(1, 80)
        span = rng.choice([0, 1, 3, 2 * rng.randint(0, 40) + 1, 65])
        length = w if index % 2 else h
        t = rng.choice([1, 2 * rng.randint(0, 2 * length) + 1, 65, 2 * length - 1])
        g = rng.randint(1, 4 if dq >= 32 else 8)
        cases.append((rng.randint(1, 3), h, w, 3 if index % 2 else 2, g, dq, dv, span, t))
    return cases


def run_kernel(qkv, tables, attrs, stream=None):
    """The kernel through the C ABI into a NaN-poisoned output buffer."""
    n, _, h, w = qkv.shape
    y = torch.full((n, attrs.out_channels, h, w), float("nan"), dtype=qkv.dtype, device=qkv.device)
    dtype = kernel.DataType.FLOAT16 if qkv.dtype == torch.float16 else kernel.DataType.FLOAT32
    params = kernel.KernelParams.for_call(attrs, (n, h, w), tables[0].shape[-1], dtype)
    pointers = kernel.TablePointers(*(t.data_ptr() for t in tables))
    stream = stream or torch.cuda.current_stream()
    kernel.enqueue(params, qkv.data_ptr(), pointers, y.data_ptr(), stream=stream.cuda_stream)
    stream.synchronize()
    return y


def check_case(case, dtype, seed=0):
    n, h, w, axis, g, dq, dv, span, t = case
    qkv, tables = random_op_inputs(n, h, w, g, dq, dv, t, dtype=dtype, seed=seed)
    attrs = AxialAttentionAttributes(axis, g, dq, dv, span)
    expected = reference(qkv, tables, attrs)
    y = run_kernel(qkv.cuda(), [x.cuda() for x in tables], attrs).cpu()
    assert not torch.isnan(y).any(), f"{case}: output left unwritten"
    err = ((y.double() - expected).abs().max() / expected.abs().max()).item()
    tolerance = TOLERANCES["float32" if dtype == torch.float32 else "float16"]
    assert err < tolerance, f"{case} {dtype}: max rel err {err:.3g} >= {tolerance}"


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", random_cases(60), ids=lambda c: "x".join(map(str, c)))
def test_kernel_matches_reference(case, dtype):
    check_case(case, dtype, seed=hash(case) % 1000)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize(
    "case",
    [
        (1, 65, 129, 3, 8, 4, 8, 65, 65),  # Axial-DeepLab-S stride-4 depths, both axes
        (1, 65, 129, 2, 8, 4, 8, 65, 65),
        (1, 129, 33, 2, 8, 16, 32, 65, 65),  # stride-16 depths
        (1, 129, 33, 3, 8, 16, 32, 65, 65),
        (1, 56, 56, 2, 8, 32, 64, 0, 111),  # Axial-ResNet global span, table for 56
        (1, 28, 28, 3, 8, 64, 128, 0, 111),  # line shorter than the table was made for
        (2, 7, 300, 3, 1, 4, 8, 65, 65),
    ],
    ids=lambda c: "x".join(map(str, c)),
)
def test_model_like_shapes(case, dtype):
    check_case(case, dtype)


def test_torch_op_matches_the_c_abi_and_runs_on_a_side_stream():
    qkv, tables = random_op_inputs(2, 33, 47, 8, 4, 8, 65, dtype=torch.float16)
    qkv, tables = qkv.cuda(), [t.cuda() for t in tables]
    attrs = AxialAttentionAttributes(axis=2, num_heads=8, key_depth=4, value_depth=8, span=65)
    direct = run_kernel(qkv, tables, attrs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        via_op = kernel_op.axial_attention(qkv, *tables, attrs)
        via_keywords = kernel_op.axial_attention(qkv, *tables, **attrs.as_dict())
        side_direct = run_kernel(qkv, tables, attrs, stream=side)
    side.synchronize()
    torch.testing.assert_close(via_op, direct, rtol=0, atol=0)
    torch.testing.assert_close(via_keywords, direct, rtol=0, atol=0)
    torch.testing.assert_close(side_direct, direct, rtol=0, atol=0)


def test_batch_beyond_one_grid_launch():
    # gridDim.y is at most 65535: larger batches go in several launches.
    case = (65537 + 3, 1, 3, 3, 1, 4, 8, 3, 3)
    check_case(case, torch.float32)


def test_torch_op_under_torch_compile():
    qkv, tables = random_op_inputs(1, 17, 23, 2, 4, 8, 9)
    qkv, tables = qkv.cuda(), [t.cuda() for t in tables]
    attrs = AxialAttentionAttributes(axis=3, num_heads=2, key_depth=4, value_depth=8, span=5)
    compiled = torch.compile(lambda x: kernel_op.axial_attention(x, *tables, attrs), fullgraph=True)
    torch.testing.assert_close(compiled(qkv), run_kernel(qkv, tables, attrs), rtol=0, atol=0)
    # the keyword form builds the attributes inside the compiled function: no graph break
    keywords = attrs.as_dict()
    by_keyword = torch.compile(
        lambda x: kernel_op.axial_attention(x, *tables, **keywords), fullgraph=True
    )
    torch.testing.assert_close(by_keyword(qkv), run_kernel(qkv, tables, attrs), rtol=0, atol=0)
