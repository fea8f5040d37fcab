"""PyTorch Axial-ResNet / Axial-DeepLab models: `create_model`, `load_checkpoint`."""

from .checkpoint import CheckpointError, load_checkpoint
from .zoo import create_model, default_input_shape, list_models, model_task

__all__ = [
    "CheckpointError",
    "create_model",
    "default_input_shape",
    "list_models",
    "load_checkpoint",
    "model_task",
]
