"""The fused AxialAttention kernel as a torch custom op, `torch.ops.axial_deploy.axial_attention`,
with the signature of the reference `axial_attention_op`: CUDA tensors run the kernel (through
the ctypes binding in `axial_deploy.kernel`) on the current stream; meta / fake tensors get the
output shape (torch.compile, export); CPU tensors are refused with a pointer to the reference op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from axial_deploy.kernel import (
    DataType,
    KernelArgumentError,
    KernelParams,
    TablePointers,
    enqueue,
)

_DTYPES = {torch.float32: DataType.FLOAT32, torch.float16: DataType.FLOAT16}


def _output_shape(
    qkv: Tensor, num_heads: int, key_depth: int, value_depth: int
) -> tuple[int, int, int, int]:
    expected = num_heads * (2 * key_depth + value_depth)
    if qkv.dim() != 4 or qkv.shape[1] != expected:
        raise KernelArgumentError(
            f"qkv must be [N, num_heads * (2 * key_depth + value_depth) = {expected}, H, W], "
            f"got {tuple(qkv.shape)}"
        )
    if qkv.dtype not in _DTYPES:
        raise KernelArgumentError(f"qkv must be float32 or float16, got {qkv.dtype}")
    return (qkv.shape[0], num_heads * value_depth, qkv.shape[2], qkv.shape[3])


def _check_tables(
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    num_heads: int,
    key_depth: int,
    value_depth: int,
) -> int:
    """The tables' common length T, after checking every shape."""
    table_length = rel_q.shape[-1] if rel_q.dim() == 3 else -1
    shapes = {
        "rel_q": (rel_q, (num_heads, key_depth, table_length)),
        "rel_k": (rel_k, (num_heads, key_depth, table_length)),
        "rel_v": (rel_v, (num_heads, value_depth, table_length)),
        "logit_scale": (logit_scale, (num_heads,)),
        "out_bias": (out_bias, (num_heads * value_depth,)),
    }
    for name, (tensor, shape) in shapes.items():
        if tuple(tensor.shape) != shape:
            raise KernelArgumentError(
                f"{name} must have shape {shape} (num_heads={num_heads}, key_depth={key_depth}, "
                f"value_depth={value_depth}, T=rel_q.shape[-1]), got {tuple(tensor.shape)}",
            )
    return table_length


@torch.library.custom_op("axial_deploy::axial_attention", mutates_args=(), device_types="cuda")
def _axial_attention_cuda(
    qkv: Tensor,
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    axis: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    span: int,
) -> Tensor:
    shape = _output_shape(qkv, num_heads, key_depth, value_depth)
    tables = (rel_q, rel_k, rel_v, logit_scale, out_bias)
    table_length = _check_tables(*tables, num_heads, key_depth, value_depth)
    for name, tensor in zip(
        ("rel_q", "rel_k", "rel_v", "logit_scale", "out_bias"), tables, strict=True
    ):
        if tensor.device != qkv.device:
            raise KernelArgumentError(
                f"{name} is on {tensor.device}, qkv on {qkv.device}: move the tables to qkv's "
                "device",
            )
    params = KernelParams(
        batch=shape[0],
        height=shape[2],
        width=shape[3],
        axis=axis,
        num_heads=num_heads,
        key_depth=key_depth,
        value_depth=value_depth,
        span=span,
        table_length=table_length,
        dtype=_DTYPES[qkv.dtype],
    )
    qkv = qkv.contiguous()
    rel_q, rel_k, rel_v, logit_scale, out_bias = (t.to(torch.float32).contiguous() for t in tables)
    y = torch.empty(shape, dtype=qkv.dtype, device=qkv.device)
    with torch.cuda.device(qkv.device):
        stream = torch.cuda.current_stream(qkv.device).cuda_stream
        enqueue(
            params,
            qkv.data_ptr(),
            TablePointers(
                rel_q.data_ptr(),
                rel_k.data_ptr(),
                rel_v.data_ptr(),
                logit_scale.data_ptr(),
                out_bias.data_ptr(),
            ),
            y.data_ptr(),
            stream=stream,
        )
    return y


@_axial_attention_cuda.register_fake
def _axial_attention_fake(
    qkv: Tensor,
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    axis: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    span: int,
) -> Tensor:
    shape = _output_shape(qkv, num_heads, key_depth, value_depth)
    _check_tables(rel_q, rel_k, rel_v, logit_scale, out_bias, num_heads, key_depth, value_depth)
    return qkv.new_empty(shape)


@_axial_attention_cuda.register_kernel("cpu")
def _axial_attention_cpu(qkv: Tensor, *args, **kwargs) -> Tensor:
    raise KernelArgumentError(
        "axial_deploy::axial_attention runs on CUDA tensors only; on CPU use the reference "
        "axial_deploy.models.axial_attention.axial_attention_op (same arguments)",
    )


def axial_attention(
    qkv: Tensor,
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    *,
    axis: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    span: int,
) -> Tensor:
    """The fused kernel with `axial_attention_op`'s signature (CUDA tensors; float32/float16)."""
    return torch.ops.axial_deploy.axial_attention(
        qkv,
        rel_q,
        rel_k,
        rel_v,
        logit_scale,
        out_bias,
        axis,
        num_heads,
        key_depth,
        value_depth,
        span,
    )
