"""Parameter and multiply-add counts.

Multiply-adds (M-Adds, as the Axial-DeepLab paper reports them) count convolutions, linear layers
and the attention's matrix products: per head, query position and attended key, 3 * Dq for the
logits (q.k, q.r^q, k.r^k) and 2 * Dv for the output (a.v, a.r^v). Only keys inside the line count
(a local window is clipped at the borders). BatchNorm, softmax, pooling and resizing are not
counted.
Shapes are traced on PyTorch's meta device: nothing is computed and no memory is used for them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .axial_attention import GLOBAL_SPAN, AxialAttention, FoldedAxialAttention


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def attended_pairs(length: int, span: int) -> int:
    """Number of (query, key) pairs on a line of `length` with a window of `span` (0 = global)."""
    if span == GLOBAL_SPAN or span >= 2 * length - 1:
        return length * length
    radius = (span - 1) // 2
    return sum(min(i + radius, length - 1) - max(i - radius, 0) + 1 for i in range(length))


def _attention_madds(
    shape: torch.Size, axis: int, heads: int, key_depth: int, value_depth: int, span: int
) -> int:
    n, _, h, w = shape
    length, lines = (h, n * w) if axis == 2 else (w, n * h)
    per_pair = 3 * key_depth + 2 * value_depth
    return lines * heads * attended_pairs(length, span) * per_pair


def count_madds(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on an input of `input_shape` (e.g. (1, 3, 1025, 2049))."""
    meta_model = copy.deepcopy(model).to("meta") if _has_data(model) else model
    total = 0

    def conv_hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        kernel = module.weight[0].numel()  # in_channels / groups * kernel elements
        total += output.numel() * kernel

    def linear_hook(module: nn.Linear, inputs, output) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    def attention_hook(module: AxialAttention, inputs, output) -> None:
        nonlocal total
        axis = 3 if module.width else 2
        total += _attention_madds(
            inputs[0].shape,
            axis,
            module.groups,
            module.key_depth,
            module.value_depth,
            module.span,
        )

    def folded_hook(module: FoldedAxialAttention, inputs, output) -> None:
        nonlocal total
        attributes = module.attributes
        total += _attention_madds(
            inputs[0].shape,
            attributes.axis,
            attributes.num_heads,
            attributes.key_depth,
            attributes.value_depth,
            attributes.span,
        )

    hooks = []
    for module in meta_model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, AxialAttention):
            hooks.append(module.register_forward_hook(attention_hook))
        elif isinstance(module, FoldedAxialAttention):
            hooks.append(module.register_forward_hook(folded_hook))
    try:
        with torch.no_grad():
            meta_model.eval()(torch.empty(input_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _has_data(model: nn.Module) -> bool:
    return any(not t.is_meta for t in [*model.parameters(), *model.buffers()])


@dataclass(frozen=True)
class ZooComplexity:
    name: str
    task: str
    input_shape: tuple[int, int, int, int]
    parameters: int
    madds: int


def zoo_complexity() -> list[ZooComplexity]:
    """Parameters and multiply-adds of every zoo model at its default input size."""
    from .registry import default_input_shape, list_models, model_task
    from .zoo import create_model

    rows = []
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name)
        shape = default_input_shape(name)
        rows.append(
            ZooComplexity(
                name, model_task(name), shape, count_parameters(model), count_madds(model, shape)
            )
        )
    return rows
