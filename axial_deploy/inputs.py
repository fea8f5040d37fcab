"""One model input from a file: a .npy array as it is, or an image preprocessed as the model
expects (resized to the input's fixed height and width)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from axial_deploy.errors import AxialDeployError, first_line
from axial_deploy.models.preprocess import preprocess_for


class InputFileError(AxialDeployError, ValueError):
    """An input file that cannot feed the model."""


def read_input(
    path: str | Path, input_shape: tuple, task: str, model: str = "the model"
) -> np.ndarray:
    """A batch of one from `path` for an input of `input_shape` (NCHW; -1 or a name for a
    symbolic axis) of a `task` model."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path} is not a file: give a .npy array or an image file")
    if path.suffix == ".npy":
        return read_arrays(path)[0]
    hw = tuple(input_shape[2:])
    if len(input_shape) != 4 or not all(isinstance(d, int) and d > 0 for d in hw):
        raise InputFileError(
            f"{model}: input {list(input_shape)} has no fixed height and width to resize an "
            "image to; feed a .npy array instead"
        )
    return preprocess_for(task, hw).load(path)[None]


def read_arrays(path: str | Path) -> list[np.ndarray]:
    """The arrays of a .npy file, or of a .npz file in key order: numeric arrays only (no
    pickles, no strings), and a header's claimed size is checked against the bytes really
    there before anything is allocated."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path} is not a file: give a .npy or .npz array file")
    try:
        if path.suffix.lower() == ".npz":
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    with archive.open(member) as stream:
                        _check_header(stream, member.file_size, f"{path}:{member.filename}")
            with np.load(path, allow_pickle=False) as npz:
                return [npz[key] for key in sorted(npz.files)]
        with open(path, "rb") as stream:
            _check_header(stream, path.stat().st_size, str(path))
        return [np.load(path, allow_pickle=False)]
    except InputFileError:
        raise
    except Exception as error:  # numpy and zipfile raise many types for a damaged file
        raise InputFileError(f"cannot read {path} as a numpy file: {first_line(error)}") from None


def _check_header(stream, size: int, name: str) -> None:
    try:
        major, _ = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0
        if major != 1:
            read_header = np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except Exception as error:  # the header is a Python literal: a damaged one raises
        # ValueError, SyntaxError or tokenize.TokenError (found by test_fuzz_readers)
        raise InputFileError(
            f"cannot read {name} as a numpy file: not a .npy array ({first_line(error)})"
        ) from None
    if dtype.kind not in "biuf":
        raise InputFileError(f"{name} holds {dtype} values; a model input must be numeric")
    claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if claimed > size - stream.tell():
        raise InputFileError(
            f"{name} claims a {list(shape)} {dtype} array ({claimed:,} bytes) but holds "
            f"{size - stream.tell():,}: the file is truncated or forged"
        )


def save_polygraphy_inputs(path: str | Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """Writes `feeds` (one name -> array dict per iteration) as Polygraphy's input-data JSON,
    what `polygraphy run --load-inputs FILE` reads; atomically."""
    from polygraphy.json import save_json
    from polygraphy.logger import G_LOGGER

    from axial_deploy.artifacts import atomic_output

    # quiet: Polygraphy would announce the temporary path, the caller prints the real one
    with atomic_output(path) as tmp, G_LOGGER.verbosity(G_LOGGER.WARNING):
        save_json([dict(feed) for feed in feeds], str(tmp))
    return Path(path)


def save_polygraphy_outputs(
    path: str | Path, outputs: list[dict[str, np.ndarray]], runner: str, seconds: float
) -> Path:
    """Writes `outputs` (one name -> array dict per iteration) as Polygraphy RunResults of a
    runner named `runner`: `polygraphy run ... --load-outputs FILE` compares against them."""
    from polygraphy.comparator import RunResults
    from polygraphy.logger import G_LOGGER

    from axial_deploy.artifacts import atomic_output

    results = RunResults()
    results.add([dict(out) for out in outputs], runtime=seconds, runner_name=runner)
    with atomic_output(path) as tmp, G_LOGGER.verbosity(G_LOGGER.WARNING):
        results.save(str(tmp))
    return Path(path)
