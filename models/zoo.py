"""The model zoo's public surface: `create_model(name, **kwargs)` and `list_models()`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import axial_deeplab, axialnet

# name -> (factory, task, default input shape for a quick run)
MODELS: dict[str, tuple[Callable[..., nn.Module], str, tuple[int, int, int, int]]] = {
    "axial26s": (axialnet.axial26s, "classification", (1, 3, 224, 224)),
    "axial50s": (axialnet.axial50s, "classification", (1, 3, 224, 224)),
    "axial50m": (axialnet.axial50m, "classification", (1, 3, 224, 224)),
    "axial50l": (axialnet.axial50l, "classification", (1, 3, 224, 224)),
    "axial_deeplab_s": (axial_deeplab.axial_deeplab_s, "panoptic", (1, 3, 1025, 2049)),
    "axial_deeplab_m": (axial_deeplab.axial_deeplab_m, "panoptic", (1, 3, 1025, 2049)),
    "axial_deeplab_l": (axial_deeplab.axial_deeplab_l, "panoptic", (1, 3, 1025, 2049)),
    "axial_deeplab_xl": (axial_deeplab.axial_deeplab_xl, "panoptic", (1, 3, 1025, 2049)),
}


def list_models() -> list[str]:
    return list(MODELS)


def model_task(name: str) -> str:
    return _entry(name)[1]


def default_input_shape(name: str) -> tuple[int, int, int, int]:
    return _entry(name)[2]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a zoo model with fresh weights, e.g. create_model("axial26s", num_classes=10).

    Load trained weights with `load_checkpoint(model, path)`.
    """
    return _entry(name)[0](**kwargs)


def _entry(name: str):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name]
