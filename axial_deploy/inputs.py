"""One model input from a file: a .npy array as it is, or an image preprocessed as the model
expects (resized to the input's fixed height and width)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from axial_deploy.errors import AxialDeployError
from axial_deploy.models.preprocess import preprocess_for


class InputFileError(AxialDeployError, ValueError):
    """An input file that cannot feed the model."""


def read_input(
    path: str | Path, input_shape: tuple, task: str, model: str = "the model"
) -> np.ndarray:
    """A batch of one from `path` for an input of `input_shape` (NCHW; -1 or a name for a
    symbolic axis) of a `task` model."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputFileError(f"{path}: not a readable .npy array ({error})") from None
    hw = tuple(input_shape[2:])
    if len(input_shape) != 4 or not all(isinstance(d, int) and d > 0 for d in hw):
        raise InputFileError(
            f"{model}: input {list(input_shape)} has no fixed height and width to resize an "
            "image to; feed a .npy array instead"
        )
    return preprocess_for(task, hw).load(path)[None]
