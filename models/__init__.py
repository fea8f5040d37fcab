"""PyTorch Axial-ResNet / Axial-DeepLab models: `create_model`, `load_checkpoint`."""

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
