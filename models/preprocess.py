"""Each zoo model's input preprocessing: how an image file becomes the network's input.

One definition, shared by calibration readers, training, evaluation and `axial-deploy run`,
so a model never sees differently normalized pixels in two stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from axial_deploy.errors import AxialDeployError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(AxialDeployError, ValueError):
    """An image file that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class Preprocess:
    """RGB image -> float32 [3, H, W]: resize, center crop, scale to [0, 1], normalize.

    Classifiers resize the shorter side to `resize_short` then crop `crop` (the ImageNet
    recipe: 256 -> 224); panoptic models resize the whole image to exactly `crop` (H, W), so
    the prediction maps align with the resized ground truth.
    """

    crop: tuple[int, int]
    resize_short: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        height, width = self.crop
        if self.resize_short is not None:
            scale = self.resize_short / min(image.width, image.height)
            size = (
                max(width, round(image.width * scale)),
                max(height, round(image.height * scale)),
            )
            image = image.resize(size, Image.Resampling.BILINEAR)
            left, top = (image.width - width) // 2, (image.height - height) // 2
            image = image.crop((left, top, left + width, top + height))
        elif (image.height, image.width) != (height, width):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def load(self, path: str | Path) -> np.ndarray:
        """Reads an image file and preprocesses it; a clear ImageError when unreadable."""
        try:
            with Image.open(path) as image:
                return self(image)
        except (OSError, ValueError) as error:
            raise ImageError(f"cannot read image {path}: {error}") from error


def preprocess_for(task: str, input_hw: tuple[int, int]) -> Preprocess:
    """The preprocessing of a model of `task` ('classification' | 'panoptic') fed `input_hw`."""
    if task == "classification":
        return Preprocess(crop=input_hw, resize_short=round(min(input_hw) * 256 / 224))
    if task == "panoptic":
        return Preprocess(crop=input_hw)
    raise ValueError(f"unknown task {task!r}: expected 'classification' or 'panoptic'")
