"""The model zoo's public surface: `create_model(name, **kwargs)` over the registry of
`@register_model` factories (declared in axialnet.py and axial_deeplab.py), plus
`prepare_model`, the one way the stages set a model up (weights, eval mode) before export."""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .registry import PretrainedWeightsError, model_spec, pretrained_record, pretrained_weights


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a zoo model, e.g. create_model("axial26s", num_classes=10) (fresh weights).

    pretrained=True loads the weights shipped for `name` (see `pretrained_models()`), offline,
    with the class count they were trained for. Other weights: `load_checkpoint(model, path)`.
    """
    factory = model_spec(name).factory()
    if not pretrained:
        return factory(**kwargs)
    record = pretrained_record(name)
    kwargs.setdefault("num_classes", record.num_classes)
    if kwargs["num_classes"] != record.num_classes:
        raise PretrainedWeightsError(
            f"the shipped {name} weights have {record.num_classes} classes, not "
            f"{kwargs['num_classes']}: drop num_classes or use pretrained=False"
        )
    model = load_checkpoint(factory(**kwargs), pretrained_weights(name))
    return model.eval()


def prepare_model(
    name: str,
    checkpoint: str | None = None,
    pretrained: bool = False,
    live_random_weights: bool = False,
    input_shape: tuple[int, int, int, int] | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> nn.Module:
    """The model a stage exports, in eval mode: the shipped weights (`pretrained`), a
    checkpoint, or fresh weights drawn from `seed`, made live with `live_random_weights`
    (random BatchNorm statistics measured at `input_shape`, default the zoo's, and residual
    branches at gain 0.1, so every attention layer shows in the outputs; a fresh model's
    zeroed branches hide them). The CLI's `export` and the `deploy` pipeline both use it."""
    if pretrained and checkpoint:
        raise PretrainedWeightsError("give a checkpoint or pretrained=True, not both")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if pretrained or checkpoint:
        model = create_model(name, pretrained=pretrained, **kwargs)
    else:  # fresh weights drawn from `seed`, so a rerun exports the same graph
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(name, **kwargs)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    elif live_random_weights and not pretrained:
        _live_random_weights(model, input_shape or model_spec(name).input_shape, seed)
    return model.eval()


def _live_random_weights(model: nn.Module, shape: tuple[int, ...], seed: int) -> None:
    from .random_init import calibrate_batchnorm

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        calibration = torch.randn((2, *shape[1:]), generator=generator)
        calibrate_batchnorm(model, calibration, seed=seed, residual_gain=0.1)
