"""The AxialAttention operator contract in numpy: what ONNX Runtime's reference op computes
where PyTorch is not installed (the base, torch-free install).

It mirrors `axial_deploy.models.axial_attention.axial_attention_op` (the torch form, which stays
the reference the kernel and the plugin are tested against) step by step;
tests/op/test_install_reference_op.py checks the two agree on random inputs.
"""

from __future__ import annotations

import numpy as np

from axial_deploy.op.spec import GLOBAL_SPAN, AxialAttentionAttributes

__all__ = ["GLOBAL_SPAN", "WINDOW_ELEMENTS_PER_CHUNK", "axial_attention_numpy"]
# Bound on the windowed intermediates per chunk of lines, as in the torch form: 128 MiB float32.
WINDOW_ELEMENTS_PER_CHUNK = 2**25


def axial_attention_numpy(
    qkv: np.ndarray,
    rel_q: np.ndarray,
    rel_k: np.ndarray,
    rel_v: np.ndarray,
    logit_scale: np.ndarray,
    out_bias: np.ndarray,
    attributes: AxialAttentionAttributes,
) -> np.ndarray:
    """y [N, G * Dv, H, W] from qkv [N, G * (2 Dq + Dv), H, W] (blocked Q | K | V, head-major),
    rel_q, rel_k [G, Dq, T], rel_v [G, Dv, T], logit_scale [G], out_bias [G * Dv]; computed in
    float32 (float64 for float64 input) and returned in qkv's dtype."""
    axis = attributes.axis
    groups, dq, dv = attributes.num_heads, attributes.key_depth, attributes.value_depth
    expected = attributes.qkv_channels
    if qkv.ndim != 4 or qkv.shape[1] != expected:
        raise ValueError(f"qkv must be [N, G*(2*Dq+Dv) = {expected}, H, W], got {qkv.shape}")
    table = rel_q.shape[-1]
    if table % 2 == 0 or rel_k.shape[-1] != table or rel_v.shape[-1] != table:
        raise ValueError("rel_q, rel_k and rel_v must share one odd table length T")
    compute = np.float64 if qkv.dtype == np.float64 else np.float32
    n, _, height, width = qkv.shape
    length, other = (height, width) if axis == 2 else (width, height)
    # Position-major lines: [B = N * other, G, L, C].
    order = (0, 4, 1, 3, 2) if axis == 2 else (0, 3, 1, 4, 2)

    def lines(start: int, depth: int) -> np.ndarray:
        block = qkv[:, start : start + groups * depth].astype(compute)
        block = block.reshape(n, groups, depth, height, width).transpose(order)
        return block.reshape(n * other, groups, length, depth)

    qt, kt, vt = lines(0, dq), lines(groups * dq, dq), lines(2 * groups * dq, dv)

    window = attributes.window(length)
    radius = (window - 1) // 2
    key = np.arange(length)[:, None] + np.arange(window)[None, :] - radius  # [L, m]
    valid = (key >= 0) & (key < length)
    positions = key.clip(0, length - 1)
    columns = (np.arange(window) - radius + (table - 1) // 2).clip(0, table - 1)
    rq, rk, rv = (np.asarray(t, compute)[..., columns] for t in (rel_q, rel_k, rel_v))  # [G,C,m]
    scale = np.asarray(logit_scale, compute).reshape(1, groups, 1, 1)
    bias = np.asarray(out_bias, compute).reshape(1, groups, 1, dv)

    def attend(qt: np.ndarray, kt: np.ndarray, vt: np.ndarray) -> np.ndarray:
        k_win, v_win = kt[:, :, positions], vt[:, :, positions]  # [B, G, L, m, C]
        logits = np.matmul(k_win, (scale * qt)[..., None])[..., 0]  # [B, G, L, m]
        logits = logits + np.matmul(qt, rq[None])
        logits = logits + (k_win * rk.transpose(0, 2, 1)[None, :, None]).sum(axis=-1)
        logits = np.where(valid, logits, -np.inf)
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        y = np.matmul(weights[:, :, :, None], v_win)[:, :, :, 0]  # [B, G, L, Dv]
        return y + np.matmul(weights, rv.transpose(0, 2, 1)[None]) + bias

    total = n * other
    step = max(1, WINDOW_ELEMENTS_PER_CHUNK // max(groups * length * window * (dq + dv), 1))
    chunks = [slice(start, start + step) for start in range(0, total, step)]
    y = np.concatenate([attend(qt[c], kt[c], vt[c]) for c in chunks])
    # Back to NCHW: [N, other, G, L, Dv] -> [N, G, Dv, H, W].
    y = y.reshape(n, other, groups, length, dv)
    y = y.transpose(0, 2, 4, 3, 1) if axis == 2 else y.transpose(0, 2, 4, 1, 3)
    return y.reshape(n, groups * dv, height, width).astype(qkv.dtype)
