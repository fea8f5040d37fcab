"""A zoo model ready to export: its weights (shipped, a checkpoint, or live random) in eval mode."""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .random_init import calibrate_batchnorm
from .zoo import create_model, default_input_shape

# Residual branches scaled into [0, 0.1]: every attention layer affects the outputs while the
# random model stays well conditioned in fp32 (see random_init.calibrate_batchnorm).
LIVE_RESIDUAL_GAIN = 0.1


def prepare_model(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint: str | None = None,
    num_classes: int | None = None,
    live_random_weights: bool = False,
    input_shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> nn.Module:
    """`name` with the shipped weights (`pretrained`), a `checkpoint`, live random weights
    (random BatchNorm statistics measured on seeded random inputs of `input_shape`, live
    residual branches) or, with none of these, a fresh model; in eval mode."""
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = create_model(name, pretrained=pretrained, **kwargs)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    elif live_random_weights and not pretrained:
        shape = input_shape or default_input_shape(name)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            calibration = torch.randn((2, *shape[1:]), generator=generator)
            calibrate_batchnorm(model, calibration, seed=seed, residual_gain=LIVE_RESIDUAL_GAIN)
    return model.eval()
