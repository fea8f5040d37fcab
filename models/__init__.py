"""PyTorch Axial-ResNet / Axial-DeepLab models: `create_model`, `load_checkpoint`.

The names below are imported on first use (PEP 562), so that the torch-free modules of this
package (preprocess, metrics) load without torch: the deploy side imports them on machines
that have no PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "prepare_model": "prepare",
    "PretrainedWeightsError": "zoo",
    "create_model": "zoo",
    "default_input_shape": "zoo",
    "list_models": "zoo",
    "model_task": "zoo",
    "pretrained_models": "zoo",
    "pretrained_record": "zoo",
}

__all__ = [
    "CheckpointError",
    "PretrainedWeightsError",
    "create_model",
    "default_input_shape",
    "list_models",
    "load_checkpoint",
    "model_task",
    "prepare_model",
    "pretrained_models",
    "pretrained_record",
]

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, load_checkpoint
    from .prepare import prepare_model
    from .zoo import (
        PretrainedWeightsError,
        create_model,
        default_input_shape,
        list_models,
        model_task,
        pretrained_models,
        pretrained_record,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
