"""Shared test helpers: deterministic non-trivial weights and BatchNorm statistics."""

from __future__ import annotations

import math

import torch
from torch import nn

from axial_deploy.models.random_init import calibrate_batchnorm, randomize_batchnorm

__all__ = ["calibrate_batchnorm", "max_rel_err", "randomize_batchnorm", "randomize_state"]


@torch.no_grad()
def randomize_state(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every float parameter and BatchNorm statistic drawn from a seeded generator, in sorted
    key order: the same seed gives the same weights in any implementation with the same keys."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name]
        if not tensor.is_floating_point():
            continue
        if name.endswith("running_var"):
            tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
        elif name.endswith(("running_mean", "bias")):
            tensor.copy_(0.2 * (torch.rand(tensor.shape, generator=generator) - 0.5))
        elif tensor.dim() == 1:  # BatchNorm scales
            tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
        else:
            fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
            std = math.sqrt(1.0 / max(fan_in, 1))
            tensor.copy_(std * torch.randn(tensor.shape, generator=generator))
    return model


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max abs error relative to the reference's max magnitude."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()
