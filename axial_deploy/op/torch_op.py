"""The fused AxialAttention kernel as a torch custom op, `torch.ops.axial_deploy.axial_attention`,
with the signature of the reference `axial_attention_op`: CUDA tensors run the kernel (through
the ctypes binding in `axial_deploy.op.kernel`) on the current stream; meta / fake tensors get the
output shape (torch.compile, export); CPU tensors are refused with a pointer to the reference op.

The registered schema takes the attributes as five plain ints (torch.library schemas hold no
Python classes); the functions registered for it build the `AxialAttentionAttributes` at once,
and everything behind them works with that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from axial_deploy.op.kernel import (
    DataType,
    KernelArgumentError,
    KernelParams,
    TablePointers,
    enqueue,
)
from axial_deploy.op.spec import TABLE_ATTRIBUTES, AxialAttentionAttributes

_DTYPES = {torch.float32: DataType.FLOAT32, torch.float16: DataType.FLOAT16}


def _output_shape(qkv: Tensor, attributes: AxialAttentionAttributes) -> tuple[int, int, int, int]:
    expected = attributes.qkv_channels
    if qkv.dim() != 4 or qkv.shape[1] != expected:
        raise KernelArgumentError(
            f"qkv must be [N, num_heads * (2 * key_depth + value_depth) = {expected}, H, W], "
            f"got {tuple(qkv.shape)}"
        )
    if qkv.dtype not in _DTYPES:
        raise KernelArgumentError(f"qkv must be float32 or float16, got {qkv.dtype}")
    return (qkv.shape[0], attributes.out_channels, qkv.shape[2], qkv.shape[3])


def _check_tables(tables: Sequence[Tensor], attributes: AxialAttentionAttributes) -> int:
    """The tables' common length T, after checking every shape."""
    table_length = tables[0].shape[-1] if tables[0].dim() == 3 else -1
    shapes = attributes.table_shapes(table_length)
    for name, tensor in zip(TABLE_ATTRIBUTES, tables, strict=True):
        if tuple(tensor.shape) != shapes[name]:
            raise KernelArgumentError(
                f"{name} must have shape {shapes[name]} (num_heads={attributes.num_heads}, "
                f"key_depth={attributes.key_depth}, value_depth={attributes.value_depth}, "
                f"T=rel_q.shape[-1]), got {tuple(tensor.shape)}",
            )
    return table_length


def _run_kernel(
    qkv: Tensor, tables: Sequence[Tensor], attributes: AxialAttentionAttributes
) -> Tensor:
    shape = _output_shape(qkv, attributes)
    table_length = _check_tables(tables, attributes)
    for name, tensor in zip(TABLE_ATTRIBUTES, tables, strict=True):
        if tensor.device != qkv.device:
            raise KernelArgumentError(
                f"{name} is on {tensor.device}, qkv on {qkv.device}: move the tables to qkv's "
                "device",
            )
    params = KernelParams.for_call(
        attributes, (shape[0], shape[2], shape[3]), table_length, _DTYPES[qkv.dtype]
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


# The registered schema: plain ints, converted to the attribute type right away.
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
    attributes = AxialAttentionAttributes(axis, num_heads, key_depth, value_depth, span)
    return _run_kernel(qkv, (rel_q, rel_k, rel_v, logit_scale, out_bias), attributes)


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
    attributes = AxialAttentionAttributes(axis, num_heads, key_depth, value_depth, span)
    shape = _output_shape(qkv, attributes)
    _check_tables((rel_q, rel_k, rel_v, logit_scale, out_bias), attributes)
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
    attributes: AxialAttentionAttributes | None = None,
    **keywords: int,
) -> Tensor:
    """The fused kernel with `axial_attention_op`'s signature (CUDA tensors; float32/float16):
    the tables, then an `AxialAttentionAttributes` or the five ints as keywords (axis=...,
    num_heads=..., key_depth=..., value_depth=..., span=...)."""
    attributes = AxialAttentionAttributes.resolve(attributes, keywords, "axial_attention")
    return torch.ops.axial_deploy.axial_attention(
        qkv, rel_q, rel_k, rel_v, logit_scale, out_bias, *attributes.as_tuple()
    )
