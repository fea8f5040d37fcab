"""PyTorch Axial-ResNet / Axial-DeepLab models: `create_model`, `load_checkpoint`.

The registry functions (list_models, model_task, default_input_shape, pretrained_models,
pretrained_record) are torch-free; the names that need torch (create_model, prepare_model,
load_checkpoint, CheckpointError) are imported on first use, so `import axial_deploy.models`
stays cheap for the command line's help and listings.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import (
    PretrainedConfig,
    PretrainedWeightsError,
    UnknownModelError,
    default_input_shape,
    list_models,
    model_task,
    pretrained_models,
    pretrained_record,
    register_model,
)

# name -> submodule that defines it (importing it imports torch)
_LAZY = {
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "create_model": "zoo",
    "prepare_model": "zoo",
}

__all__ = [
    "CheckpointError",
    "PretrainedConfig",
    "PretrainedWeightsError",
    "UnknownModelError",
    "create_model",
    "default_input_shape",
    "list_models",
    "load_checkpoint",
    "model_task",
    "prepare_model",
    "pretrained_models",
    "pretrained_record",
    "register_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
