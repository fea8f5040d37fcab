"""The axial-attention layer: training form, folded form and the operator contract against an
independent, straightforward loop implementation of Eq. 4 (float64, one query at a time)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from axial_deploy.models.axial_attention import (
    AxialAttention,
    axial_attention_op,
    fold_axial_attention,
    fold_axial_layers,
)
from axial_deploy.op.spec import AxialAttentionAttributes

from helpers import max_rel_err, randomize_batchnorm

FP32_RTOL = 1e-5


def bn_affine(bn):
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def loop_layer(layer: AxialAttention, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode layer, written from the paper and the reference's BatchNorm placement:
    nothing shared with the module but its parameters."""
    x = x.double()
    n, _, height, width = x.shape
    groups, gp = layer.groups, layer.group_planes
    dq = gp // 2
    w_qkv = layer.qkv_transform.weight.double()[:, :, 0]
    s_qkv, b_qkv = bn_affine(layer.bn_qkv)
    s_sim, b_sim = bn_affine(layer.bn_similarity)
    s_out, b_out = bn_affine(layer.bn_output)
    table = layer.relative.double()
    radius = None if layer.span == 0 else (layer.span - 1) // 2
    centre = (table.shape[-1] - 1) // 2

    def column(offset):  # table column of an offset, clamped to the table's ends
        return min(max(offset + centre, 0), table.shape[-1] - 1)

    out = torch.zeros(n, groups * gp, height, width, dtype=torch.float64)
    length = width if layer.width else height
    for b in range(n):
        for line in range(height if layer.width else width):
            feats = x[b, :, line, :] if layer.width else x[b, :, :, line]  # [C, L]
            qkv = (w_qkv @ feats) * s_qkv[:, None] + b_qkv[:, None]
            for g in range(groups):
                head = qkv[g * 2 * gp : (g + 1) * 2 * gp]
                q, k, v = head[:dq], head[dq : 2 * dq], head[2 * dq :]
                tab = table if layer.shared_tables else table[g]
                tq, tk, tv = tab[:dq], tab[dq : 2 * dq], tab[2 * dq :]
                for i in range(length):
                    keys = [j for j in range(length) if radius is None or abs(j - i) <= radius]
                    logits = []
                    for j in keys:
                        qk = float(q[:, i] @ k[:, j])
                        qr = float(q[:, i] @ tq[:, column(i - j)])  # r^q by query - key
                        kr = float(k[:, j] @ tk[:, column(j - i)])  # r^k by key - query
                        logits.append(
                            s_sim[g] * qk
                            + b_sim[g]
                            + s_sim[groups + g] * qr
                            + b_sim[groups + g]
                            + s_sim[2 * groups + g] * kr
                            + b_sim[2 * groups + g]
                        )
                    top = max(logits)
                    weights = [math.exp(value - top) for value in logits]
                    total = sum(weights)
                    pairs = list(zip(weights, keys, strict=True))
                    for c in range(gp):
                        sv = sum(a * float(v[c, j]) for a, j in pairs) / total
                        sve = sum(a * float(tv[c, column(i - j)]) for a, j in pairs) / total
                        oc = g * gp + c
                        y = (
                            s_out[2 * oc] * sv
                            + b_out[2 * oc]
                            + s_out[2 * oc + 1] * sve
                            + b_out[2 * oc + 1]
                        )
                        if layer.width:
                            out[b, oc, line, i] = y
                        else:
                            out[b, oc, i, line] = y
    if layer.stride > 1:
        out = layer.pooling(out)
    return out


def loop_op(qkv, rel_q, rel_k, rel_v, scale, bias, axis, heads, dq, dv, span):
    """The operator contract, literally: one query at a time, float64."""
    qkv = qkv.double()
    n, _, height, width = qkv.shape
    table = rel_q.shape[-1]
    out = torch.zeros(n, heads * dv, height, width, dtype=torch.float64)
    length = height if axis == 2 else width
    for b in range(n):
        for line in range(width if axis == 2 else height):
            feats = qkv[b, :, :, line] if axis == 2 else qkv[b, :, line, :]
            for g in range(heads):
                q = feats[g * dq : (g + 1) * dq]
                k = feats[heads * dq + g * dq : heads * dq + (g + 1) * dq]
                v = feats[2 * heads * dq + g * dv : 2 * heads * dq + (g + 1) * dv]
                for i in range(length):
                    keys = [j for j in range(length) if span == 0 or abs(j - i) <= (span - 1) // 2]
                    cols = [min(max(j - i + (table - 1) // 2, 0), table - 1) for j in keys]
                    logits = torch.tensor(
                        [
                            float(scale[g]) * float(q[:, i] @ k[:, j])
                            + float(q[:, i] @ rel_q[g, :, t].double())
                            + float(k[:, j] @ rel_k[g, :, t].double())
                            for j, t in zip(keys, cols, strict=True)
                        ],
                        dtype=torch.float64,
                    )
                    a = torch.softmax(logits, 0)
                    y = sum(
                        a[m] * (v[:, j] + rel_v[g, :, t].double())
                        for m, (j, t) in enumerate(zip(keys, cols, strict=True))
                    )
                    y = y + bias[g * dv : (g + 1) * dv].double()
                    if axis == 2:
                        out[b, g * dv : (g + 1) * dv, i, line] = y
                    else:
                        out[b, g * dv : (g + 1) * dv, line, i] = y
    return out


LAYER_CASES = [
    # (span, width axis, kernel_size (table), H, W, shared tables, stride)
    (0, False, 6, 6, 5, True, 1),  # global, line length = table's size: the reference's case
    (0, True, 6, 5, 6, True, 1),
    (0, False, 4, 7, 3, True, 1),  # line longer than the table: offsets clamp
    (0, True, 8, 3, 5, True, 1),  # line shorter than the table
    (0, False, 5, 5, 4, False, 1),  # per-head tables
    (5, False, 0, 9, 4, False, 1),  # local span, clipped at the borders
    (5, True, 0, 4, 9, True, 1),
    (3, True, 0, 5, 6, False, 2),  # local + strided (pooled) width block
    (7, False, 0, 3, 3, False, 1),  # window wider than the line
]


@pytest.mark.parametrize("span,width,kernel,h,w,shared,stride", LAYER_CASES)
def test_layer_matches_loop_and_folded_form(span, width, kernel, h, w, shared, stride):
    torch.manual_seed(span * 100 + h * 10 + w)
    layer = AxialAttention(
        8,
        8,
        groups=2,
        kernel_size=kernel or 4,
        width=width,
        span=span,
        shared_tables=shared,
        stride=stride,
        pool="centered",
    )
    randomize_batchnorm(layer, seed=h + w).eval()
    x = torch.randn(2, 8, h, w)
    with torch.no_grad():
        expected = loop_layer(layer, x)
        training_form = layer(x)
        folded = fold_axial_attention(layer)(x)
    assert training_form.shape == expected.shape
    assert max_rel_err(training_form, expected) < FP32_RTOL
    assert max_rel_err(folded, expected) < FP32_RTOL


@pytest.mark.parametrize(
    "axis,heads,dq,dv,span,table,h,w",
    [
        (2, 2, 2, 4, 0, 7, 5, 3),
        (3, 1, 3, 2, 0, 3, 2, 6),  # table shorter than the line: clamped offsets
        (2, 3, 2, 2, 3, 3, 6, 2),
        (3, 2, 1, 3, 5, 9, 3, 7),  # table longer than the window
        (2, 2, 2, 2, 9, 9, 3, 2),  # window wider than the line
    ],
)
def test_contract_op_matches_loop(axis, heads, dq, dv, span, table, h, w):
    g = torch.Generator().manual_seed(heads * 10 + span)
    qkv = torch.randn(2, heads * (2 * dq + dv), h, w, generator=g)
    rel_q = torch.randn(heads, dq, table, generator=g)
    rel_k = torch.randn(heads, dq, table, generator=g)
    rel_v = torch.randn(heads, dv, table, generator=g)
    scale = 0.5 + torch.rand(heads, generator=g)
    bias = torch.randn(heads * dv, generator=g)
    args = (qkv, rel_q, rel_k, rel_v, scale, bias)
    attrs = AxialAttentionAttributes(axis, heads, dq, dv, span)
    got = axial_attention_op(*args, attrs)
    expected = loop_op(*args, axis, heads, dq, dv, span)
    assert max_rel_err(got, expected) < FP32_RTOL


def test_contract_op_keeps_dtype_and_accumulates_in_fp32():
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(1, 2 * (2 * 2 + 4), 6, 5, generator=g)
    tables = [torch.randn(2, d, 5, generator=g) for d in (2, 2, 4)]
    attrs = AxialAttentionAttributes(axis=3, num_heads=2, key_depth=2, value_depth=4, span=5)
    ref = axial_attention_op(qkv, *tables, torch.ones(2), torch.zeros(8), attrs)
    half = axial_attention_op(
        qkv.half(),
        *(t.half() for t in tables),
        torch.ones(2).half(),
        torch.zeros(8).half(),
        attrs,
    )
    assert half.dtype == torch.float16
    assert max_rel_err(half.float(), ref) < 2e-3


def test_wide_local_window_equals_global():
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(1, 2 * 8, 7, 4, generator=g)
    tables = [torch.randn(2, d, 13, generator=g) for d in (2, 2, 4)]
    extra = (0.5 + torch.rand(2, generator=g), torch.randn(8, generator=g))
    attrs = AxialAttentionAttributes(axis=2, num_heads=2, key_depth=2, value_depth=4, span=13)
    local = axial_attention_op(qkv, *tables, *extra, attrs)
    full = axial_attention_op(qkv, *tables, *extra, dataclasses.replace(attrs, span=0))
    assert max_rel_err(local, full) < 1e-6


def test_local_span_is_windowed():
    """Memory must grow with L * m, not L * L: a 4097-long line with span 65 would need a
    4097 x 4097 logit matrix per head (~0.5 GB in fp32 for 8 heads) if it were dense."""
    layer = AxialAttention(16, 16, groups=8, span=65).eval()
    x = torch.randn(1, 16, 4097, 1)
    with torch.no_grad(), torch.profiler.profile(profile_memory=True) as prof:
        layer(x)
    peak_alloc = max(e.cpu_memory_usage for e in prof.key_averages())
    assert peak_alloc < 128 * 2**20  # dense would allocate ~1.5 GB


def test_training_mode_backward():
    layer = AxialAttention(8, 8, groups=2, span=3, shared_tables=False)
    x = torch.randn(2, 8, 5, 4, requires_grad=True)
    layer(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert layer.relative.grad is not None and layer.relative.grad.abs().sum() > 0


def test_fold_axial_layers_replaces_every_layer():
    from axial_deploy.models import create_model

    model = randomize_batchnorm(create_model("axial26s", num_classes=10), seed=2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        folded = fold_axial_layers(model)
        got = folded(x)
    assert not any(isinstance(m, AxialAttention) for m in folded.modules())
    assert max_rel_err(got, expected) < 1e-4


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(in_planes=12, out_planes=16, groups=8), "multiples of groups"),
        (dict(in_planes=8, out_planes=8, groups=8), "must be even"),
        (dict(in_planes=8, out_planes=8, groups=2, span=4), "odd"),
        (dict(in_planes=8, out_planes=8, groups=2, pool="max"), "pool"),
    ],
)
def test_layer_rejects_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AxialAttention(**kwargs)


def test_contract_op_rejects_bad_input():
    tables = [torch.zeros(2, d, 5) for d in (2, 2, 4)]
    attrs = AxialAttentionAttributes(axis=2, num_heads=2, key_depth=2, value_depth=4, span=0)
    with pytest.raises(ValueError, match="qkv must be"):
        axial_attention_op(torch.zeros(1, 15, 4, 4), *tables, torch.ones(2), torch.zeros(8), attrs)
    with pytest.raises(ValueError, match=r"axis .* must be one of \[2, 3\], got 1"):
        axial_attention_op(
            torch.zeros(1, 16, 4, 4),
            *tables,
            torch.ones(2),
            torch.zeros(8),
            axis=1,
            num_heads=2,
            key_depth=2,
            value_depth=4,
            span=0,
        )


def test_eval_chunking_over_lines_is_exact(monkeypatch):
    from axial_deploy.models import axial_attention

    layer = randomize_batchnorm(AxialAttention(16, 16, groups=2, span=5), seed=7).eval()
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        whole = layer(x)
        folded = fold_axial_attention(layer)
        whole_folded = folded(x)
        monkeypatch.setattr(axial_attention, "WINDOW_ELEMENTS_PER_CHUNK", 5 * 16 * 9)
        assert len(axial_attention._line_chunks(22, 2 * 9 * 5 * 16)) > 1
        assert torch.allclose(layer(x), whole, rtol=0, atol=1e-6)
        assert torch.allclose(folded(x), whole_folded, rtol=0, atol=1e-6)
