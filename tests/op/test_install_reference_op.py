"""The numpy AxialAttention contract (what ONNX Runtime runs without torch) against the torch
form `axial_attention_op`, on random non-zero inputs: float32 within 1e-5 relative to the
largest |y|, float64 within 1e-12."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axial_deploy.models.axial_attention import GLOBAL_SPAN, axial_attention_op
from axial_deploy.op.reference import GLOBAL_SPAN as NUMPY_GLOBAL_SPAN
from axial_deploy.op.reference import axial_attention_numpy
from axial_deploy.op.spec import AxialAttentionAttributes

CASES = [
    # axis, heads, Dq, Dv, span, table, N, H, W
    (2, 2, 4, 8, GLOBAL_SPAN, 2 * 7 - 1, 2, 7, 5),
    (3, 2, 4, 8, GLOBAL_SPAN, 2 * 6 - 1, 1, 3, 6),
    (2, 1, 2, 4, 5, 5, 2, 9, 4),  # local window shorter than the line
    (3, 4, 2, 2, 3, 3, 1, 2, 8),
    (2, 2, 2, 4, 7, 7, 1, 3, 2),  # window wider than the line: clamped to 2 L - 1
]


def _inputs(rng, heads, dq, dv, table, n, h, w, dtype):
    return (
        rng.normal(size=(n, heads * (2 * dq + dv), h, w)).astype(dtype),
        rng.normal(size=(heads, dq, table)).astype(dtype),
        rng.normal(size=(heads, dq, table)).astype(dtype),
        rng.normal(size=(heads, dv, table)).astype(dtype),
        rng.uniform(0.2, 1.5, size=heads).astype(dtype),
        rng.normal(size=heads * dv).astype(dtype),
    )


def test_global_span_constant_is_the_models_one():
    assert NUMPY_GLOBAL_SPAN == GLOBAL_SPAN


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"axis{c[0]}-span{c[4]}-{c[6]}x{c[7]}x{c[8]}")
def test_numpy_matches_torch(case, dtype, tol):
    axis, heads, dq, dv, span, table, n, h, w = case
    arrays = _inputs(np.random.default_rng(sum(case)), heads, dq, dv, table, n, h, w, dtype)
    attrs = AxialAttentionAttributes(axis, heads, dq, dv, span)
    expected = axial_attention_op(*(torch.from_numpy(a) for a in arrays), attrs).numpy()
    got = axial_attention_numpy(*arrays, attrs)
    assert got.dtype == expected.dtype and got.shape == expected.shape == (n, heads * dv, h, w)
    assert np.abs(expected).max() > 0.1
    assert np.abs(got - expected).max() <= tol * np.abs(expected).max()


def test_bad_shapes_are_refused_like_torch():
    arrays = _inputs(np.random.default_rng(0), 2, 4, 8, 13, 1, 7, 5, np.float32)
    with pytest.raises(ValueError, match="qkv must be"):
        axial_attention_numpy(*arrays, AxialAttentionAttributes(2, 3, 4, 8, 0))
    with pytest.raises(ValueError, match="rel_q, rel_k and rel_v must share one odd table"):
        short_rel_k = arrays[2][..., :-1]  # 12 columns where rel_q has 13
        axial_attention_numpy(
            *arrays[:2], short_rel_k, *arrays[3:], AxialAttentionAttributes(2, 2, 4, 8, 0)
        )
