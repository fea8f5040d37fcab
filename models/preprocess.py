"""Each zoo model's input preprocessing: how an image file becomes the network's input.

One definition, shared by calibration readers, training, evaluation and `axial-deploy run`,
so a model never sees differently normalized pixels in two stages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from axial_deploy.errors import AxialDeployError, first_line

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
        with open_image(path) as image:
            return self(image)


# Images larger than this are refused from their header, before any pixel is decoded (a PNG
# header can claim 100000 x 100000 pixels in a few bytes). 8192 x 8192 covers every dataset
# the models are deployed on.
MAX_IMAGE_PIXELS = 8192 * 8192


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """Opens and decodes an image file for reading; one clear ImageError for a missing,
    unreadable, damaged or oversized file (every reader of images in the toolkit goes through
    here). Only opening and decoding are guarded: an error in the caller's `with` body is the
    caller's own and passes through unchanged."""
    try:
        image = Image.open(path)
    except Exception as error:  # OSError, UnidentifiedImageError, ...
        raise ImageError(f"cannot read image {path}: {first_line(error)}") from None
    with image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ImageError(
                f"image {path} claims {image.width}x{image.height} pixels, more than the "
                f"{MAX_IMAGE_PIXELS:,} allowed: resize it or check the file"
            )
        try:
            image.load()  # decode here, so that a damaged file is refused here
        # PIL's decoders raise OSError, ValueError, SyntaxError ("broken PNG file", found by
        # test_fuzz_readers), EOFError, struct.error... for a damaged file
        except Exception as error:
            raise ImageError(f"cannot read image {path}: {first_line(error)}") from None
        yield image


def preprocess_for(task: str, input_hw: tuple[int, int]) -> Preprocess:
    """The preprocessing of a model of `task` ('classification' | 'panoptic') fed `input_hw`."""
    if task == "classification":
        return Preprocess(crop=input_hw, resize_short=round(min(input_hw) * 256 / 224))
    if task == "panoptic":
        return Preprocess(crop=input_hw)
    raise ValueError(f"unknown task {task!r}: expected 'classification' or 'panoptic'")
