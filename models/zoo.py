"""The model zoo's public surface: `create_model(name, **kwargs)` and `list_models()`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torch import nn

from axial_deploy.errors import AxialDeployError

from . import axial_deeplab, axialnet
from .checkpoint import load_checkpoint

# Trained weights shipped with the package: NAME.pt (fp16 state_dict) and NAME.json (the
# command, seed, dataset and metrics that produced it).
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


class PretrainedWeightsError(AxialDeployError, ValueError):
    """A model asked for with pretrained=True that has no shipped weights."""


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
    # Small variants trained on the synthetic datasets (`axial-deploy dataset`); weights
    # ship in models/pretrained/ (create_model(name, pretrained=True)).
    "axial26_tiny": (axialnet.axial26_tiny, "classification", (1, 3, 64, 64)),
    "axial_deeplab_tiny": (axial_deeplab.axial_deeplab_tiny, "panoptic", (1, 3, 129, 129)),
}


def list_models() -> list[str]:
    return list(MODELS)


def model_task(name: str) -> str:
    return _entry(name)[1]


def default_input_shape(name: str) -> tuple[int, int, int, int]:
    return _entry(name)[2]


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a zoo model, e.g. create_model("axial26s", num_classes=10) (fresh weights).

    pretrained=True loads the weights shipped for `name` (see `pretrained_models()`), offline,
    with the class count they were trained for. Other weights: `load_checkpoint(model, path)`.
    """
    factory = _entry(name)[0]
    if not pretrained:
        return factory(**kwargs)
    record = pretrained_record(name)
    kwargs.setdefault("num_classes", record["num_classes"])
    if kwargs["num_classes"] != record["num_classes"]:
        raise PretrainedWeightsError(
            f"the shipped {name} weights have {record['num_classes']} classes, not "
            f"{kwargs['num_classes']}: drop num_classes or use pretrained=False"
        )
    model = load_checkpoint(factory(**kwargs), PRETRAINED_DIR / f"{name}.pt")
    return model.eval()


def pretrained_models() -> list[str]:
    """Zoo models with shipped trained weights."""
    return [name for name in MODELS if (PRETRAINED_DIR / f"{name}.pt").is_file()]


def pretrained_record(name: str) -> dict:
    """The JSON record of the shipped weights of `name`: command, seed, dataset, metrics,
    input size, class names and (panoptic) post-processing settings."""
    _entry(name)
    path = PRETRAINED_DIR / f"{name}.json"
    if not path.is_file() or not (PRETRAINED_DIR / f"{name}.pt").is_file():
        available = ", ".join(pretrained_models()) or "none"
        raise PretrainedWeightsError(
            f"no pretrained weights ship for {name!r} (models with weights: {available}); "
            "use pretrained=False, train one with `axial-deploy train`, or load a checkpoint "
            "with load_checkpoint(model, path)"
        )
    return json.loads(path.read_text())


def _entry(name: str):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name]
