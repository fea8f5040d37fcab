"""Calibration data: where the inputs that measure activation ranges come from.

`open_source(spec, input_shape)` reads

- a folder of images (preprocessed exactly as the model expects: `models/preprocess.py`),
- a `.npy` / `.npz` file, or a folder of them, holding preprocessed float tensors [N, C, H, W]
  (or [C, H, W] for one sample),
- `synthetic` (or None): seeded random images, for smoke runs only: their ranges say nothing
  about real data.

Iterating a source yields float32 batches [B, C, H, W]. Every problem (an empty folder, an
unreadable file, a tensor that does not fit the model) raises `CalibrationDataError`, a
ValueError naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from axial_deploy.errors import AxialDeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
SYNTHETIC = "synthetic"
DEFAULT_SYNTHETIC_SAMPLES = 8


class CalibrationDataError(AxialDeployError, ValueError):
    """Calibration input that cannot be used: empty, unreadable, or the wrong shape."""


def _sample_shape(input_shape: tuple) -> tuple[int, int, int]:
    """(C, H, W) of one sample; the model's input must be NCHW with static C, H, W."""
    if len(input_shape) != 4:
        raise CalibrationDataError(
            f"calibration needs an NCHW model input, got shape {list(input_shape)}"
        )
    chw = input_shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in chw):
        raise CalibrationDataError(
            f"calibration needs static channels, height and width, the model input is "
            f"{list(input_shape)}: export with --dynamic batch (the default)"
        )
    return tuple(chw)  # type: ignore[return-value]


class CalibrationSource:
    """A finite, re-iterable sequence of preprocessed samples, served in batches.

    Subclasses implement `samples()` (one float32 [C, H, W] array at a time) and `__len__`
    (number of samples). `batch_size` samples form a batch; a last partial batch is kept.
    """

    description = "calibration data"

    def __init__(self, input_shape: tuple, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise CalibrationDataError(f"batch size must be >= 1, got {batch_size}")
        self.sample_shape = _sample_shape(input_shape)
        self.batch_size = batch_size

    def samples(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def num_batches(self) -> int:
        return -(-len(self) // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        for sample in self.samples():
            pending.append(sample)
            if len(pending) == self.batch_size:
                yield np.stack(pending)
                pending = []
        if pending:
            yield np.stack(pending)

    def take(self, batches: int) -> list[np.ndarray]:
        """The first `batches` batches (fewer if the source is shorter)."""
        out = []
        for batch in self:
            if len(out) == batches:
                break
            out.append(batch)
        return out

    def _check(self, sample: np.ndarray, origin: str) -> np.ndarray:
        if sample.dtype.kind not in "fiu":
            raise CalibrationDataError(f"{origin}: dtype {sample.dtype} is not numeric")
        if tuple(sample.shape) != self.sample_shape:
            raise CalibrationDataError(
                f"{origin}: sample shape {list(sample.shape)} does not fit the model input "
                f"[N, {', '.join(map(str, self.sample_shape))}]; save preprocessed tensors of "
                "that size, or pass an image folder (resized and normalized for you)"
            )
        if not np.isfinite(sample).all():
            raise CalibrationDataError(f"{origin}: holds NaN or infinite values")
        return np.ascontiguousarray(sample, dtype=np.float32)


class SyntheticSource(CalibrationSource):
    """Seeded random images (uniform pixels, normalized like ImageNet inputs): a smoke test
    of the pipeline, not a calibration: real data gives real ranges."""

    def __init__(
        self,
        input_shape: tuple,
        *,
        samples: int = DEFAULT_SYNTHETIC_SAMPLES,
        batch_size: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(input_shape, batch_size)
        self.count, self.seed = samples, seed
        self.description = f"synthetic ({samples} random images, seed {seed})"

    def __len__(self) -> int:
        return self.count

    def samples(self) -> Iterator[np.ndarray]:
        from axial_deploy.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

        rng = np.random.default_rng(self.seed)
        mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
        std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
        for _ in range(self.count):
            pixels = rng.random(self.sample_shape, dtype=np.float32)
            yield ((pixels - mean) / std).astype(np.float32)


class ImageFolderSource(CalibrationSource):
    """Image files of a folder (recursively, sorted), preprocessed with the model's recipe."""

    def __init__(self, folder: Path, input_shape: tuple, *, task: str, batch_size: int = 1) -> None:
        from axial_deploy.models.preprocess import preprocess_for

        super().__init__(input_shape, batch_size)
        if self.sample_shape[0] != 3:
            raise CalibrationDataError(
                f"images give 3 channels, the model input has {self.sample_shape[0]}"
            )
        self.files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.files:
            raise CalibrationDataError(
                f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) "
                "and no .npy/.npz tensors: point --calib at representative images"
            )
        self.preprocess = preprocess_for(task, self.sample_shape[1:])
        self.description = f"{len(self.files)} images in {folder} ({task} preprocessing)"

    def __len__(self) -> int:
        return len(self.files)

    def samples(self) -> Iterator[np.ndarray]:
        from axial_deploy.models.preprocess import ImageError

        for path in self.files:
            try:
                pixels = self.preprocess.load(path)
            except ImageError as error:
                raise CalibrationDataError(f"{error}: remove or replace the file") from error
            yield self._check(pixels, str(path))


def _load_arrays(path: Path) -> list[np.ndarray]:
    """The arrays of one .npy or .npz file (every array of an .npz, in key order)."""
    from axial_deploy.inputs import InputFileError, read_arrays

    try:
        return read_arrays(path)
    except InputFileError as error:
        raise CalibrationDataError(str(error)) from None


class ArraySource(CalibrationSource):
    """Preprocessed tensors from .npy / .npz files: each array is [N, C, H, W] or [C, H, W]."""

    def __init__(self, files: list[Path], input_shape: tuple, *, batch_size: int = 1) -> None:
        super().__init__(input_shape, batch_size)
        if not files:
            raise CalibrationDataError("no .npy/.npz files given")
        self.files = files
        # Read the headers now: a wrong shape fails before any model runs.
        self.counts = [sum(self._count(a, path) for a in _load_arrays(path)) for path in files]
        if not sum(self.counts):
            raise CalibrationDataError(f"{files[0].parent}: the numpy files hold no samples")
        where = files[0] if len(files) == 1 else f"{len(files)} files in {files[0].parent}"
        self.description = f"{sum(self.counts)} tensors from {where}"

    def _count(self, array: np.ndarray, path: Path) -> int:
        if array.ndim == 3:
            self._check(array, str(path))
            return 1
        if array.ndim == 4:
            if len(array):
                self._check(array[0], f"{path}")
            return len(array)
        raise CalibrationDataError(
            f"{path}: array of shape {list(array.shape)} is neither [N, C, H, W] nor [C, H, W]"
        )

    def __len__(self) -> int:
        return sum(self.counts)

    def samples(self) -> Iterator[np.ndarray]:
        for path in self.files:
            for array in _load_arrays(path):
                for sample in array[None] if array.ndim == 3 else array:
                    yield self._check(sample, str(path))


def open_source(
    spec: str | Path | None,
    input_shape: tuple,
    *,
    task: str = "panoptic",
    seed: int = 0,
    batch_size: int = 1,
    samples: int | None = None,
) -> CalibrationSource:
    """The calibration source `spec` names (see the module doc). `input_shape` is the model's
    NCHW input shape (the batch entry may be symbolic); `task` picks the image preprocessing;
    `seed` and `samples` shape the synthetic source."""
    if spec is None or str(spec) == SYNTHETIC:
        count = DEFAULT_SYNTHETIC_SAMPLES if samples is None else samples
        return SyntheticSource(input_shape, samples=count, batch_size=batch_size, seed=seed)
    path = Path(spec)
    if not path.exists():
        raise CalibrationDataError(
            f"calibration source {spec!s} does not exist: give an image folder, a .npy/.npz "
            f"file or folder of them, or '{SYNTHETIC}'"
        )
    if path.is_file():
        if path.suffix.lower() not in ARRAY_SUFFIXES:
            raise CalibrationDataError(
                f"calibration file {path} is not .npy or .npz; for images pass their folder"
            )
        return ArraySource([path], input_shape, batch_size=batch_size)
    arrays = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in ARRAY_SUFFIXES
    )
    if arrays:
        return ArraySource(arrays, input_shape, batch_size=batch_size)
    return ImageFolderSource(path, input_shape, task=task, batch_size=batch_size)
