"""TensorRT calibration cache: the legacy implicit-INT8 path (TensorRT 10, e.g. JetPack 6).

TensorRT 10's INT8 calibrators (IInt8EntropyCalibrator2, IInt8MinMaxCalibrator, ...) write and
read a plain-text cache through writeCalibrationCache / readCalibrationCache:

    TRT-100300-EntropyCalibration2
    images: 3c010204
    /layer1/conv/Conv_output_0: 3d0b7086

- line 1: `TRT-<version>-<algorithm>`: the TensorRT version as one integer (10.3.0 -> 100300,
  major * 10000 + minor * 100 + patch) and the calibration algorithm (EntropyCalibration2,
  EntropyCalibration, MinMaxCalibration, LegacyCalibration);
- then one line per tensor: `<tensor name>: <scale>`, the scale (amax / 127, symmetric INT8)
  written as the 8 hex digits of its IEEE-754 float32 bits (big-endian, as `struct.pack(">f")`
  gives them). The ONNX parser names network tensors after the ONNX tensors, so the names are
  the FP32 graph's tensor names.

TensorRT uses a cache only if its header matches the calibrator reading it (algorithm, and a
compatible version); otherwise it calibrates again. A calibrator that serves this file must
therefore report the header's algorithm. Checked against public TensorRT material (samples'
CalibrationTable files and NVIDIA forum answers); not against a TensorRT install (none here).
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from axial_deploy.artifacts import atomic_output
from axial_deploy.engine.tensorrt_api import require_tensorrt10
from axial_deploy.errors import AxialDeployError

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
DEFAULT_TRT_VERSION = 100300  # TensorRT 10.3: JetPack 6.1 / 6.2
METHOD_ALGORITHM = {  # what our calibration methods claim to be when TensorRT reads the cache
    "entropy": "EntropyCalibration2",
    "percentile": "EntropyCalibration2",  # TensorRT has no percentile calibrator
    "minmax": "MinMaxCalibration",
}
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


class CalibrationCacheError(AxialDeployError, ValueError):
    """A calibration cache file that is not in TensorRT's format."""


@dataclass
class CalibrationCache:
    scales: dict[str, float] = field(default_factory=dict)
    algorithm: str = "EntropyCalibration2"
    version: int = DEFAULT_TRT_VERSION

    def to_text(self) -> str:
        if self.algorithm not in ALGORITHMS:
            raise CalibrationCacheError(
                f"unknown algorithm {self.algorithm!r}: use one of {', '.join(ALGORITHMS)}"
            )
        lines = [f"TRT-{self.version}-{self.algorithm}"]
        for name, scale in self.scales.items():
            if "\n" in name or not math.isfinite(scale) or scale <= 0:
                raise CalibrationCacheError(f"tensor {name!r}: cannot write scale {scale}")
            lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str, origin: str = "<cache>") -> CalibrationCache:
        lines = [line for line in text.splitlines() if line.strip()]
        match = _HEADER.match(lines[0].strip()) if lines else None
        if not match:
            raise CalibrationCacheError(
                f"{origin}: first line must be TRT-<version>-<algorithm>, "
                f"got {lines[0][:60] if lines else 'an empty file'!r}"
            )
        scales = {}
        for number, line in enumerate(lines[1:], start=2):
            # Tensor names may hold ': ' themselves (TensorFlow 'x:0'): split at the last one.
            name, sep, value = line.rpartition(": ")
            if not sep or not re.fullmatch(r"[0-9a-fA-F]{8}", value.strip()):
                raise CalibrationCacheError(f"{origin}:{number}: not '<tensor>: <8 hex digits>'")
            scales[name] = struct.unpack(">f", bytes.fromhex(value.strip()))[0]
        return cls(scales, match.group(2), int(match.group(1)))


def scales_from_amax(amax: Mapping[str, float]) -> dict[str, float]:
    """Symmetric INT8 scales amax / 127 (a dead tensor gets a tiny positive scale)."""
    return {name: max(value, 1e-8) / 127.0 for name, value in amax.items()}


def write_cache(
    path: str | os.PathLike,
    scales: Mapping[str, float],
    *,
    algorithm: str = "EntropyCalibration2",
    version: int = DEFAULT_TRT_VERSION,
) -> Path:
    """Write a TensorRT calibration cache atomically."""
    text = CalibrationCache(dict(scales), algorithm, version).to_text()
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="ascii")
    return Path(path)


def read_cache(path: str | os.PathLike) -> CalibrationCache:
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrationCacheError(f"cannot read calibration cache {path}: {error}") from error
    return CalibrationCache.from_text(text, str(path))


def cache_calibrator(trt, path: str | os.PathLike):
    """A TensorRT 10 INT8 calibrator that serves the cache at `path` and no batches: the
    builder reads the scales from the cache and skips calibration (legacy implicit INT8:
    `config.set_flag(trt.BuilderFlag.INT8); config.int8_calibrator = cache_calibrator(trt, p)`).

    `trt` is the imported `tensorrt` module (TensorRT 10; TensorRT 11 removed these classes).
    The calibrator class matches the cache's algorithm, since TensorRT ignores a cache written
    by another algorithm. Written against TensorRT's documented Python API; not run here.
    """
    require_tensorrt10(
        trt, "implicit INT8 calibration caches", "use the Q/DQ graph", CalibrationCacheError
    )
    cache = read_cache(path)
    bases = {
        "EntropyCalibration2": "IInt8EntropyCalibrator2",
        "EntropyCalibration": "IInt8EntropyCalibrator",
        "MinMaxCalibration": "IInt8MinMaxCalibrator",
        "LegacyCalibration": "IInt8LegacyCalibrator",
    }
    base = getattr(trt, bases[cache.algorithm], None)
    if base is None:
        raise CalibrationCacheError(
            f"this TensorRT ({getattr(trt, '__version__', '?')}) has no {bases[cache.algorithm]}: "
            "implicit INT8 calibration caches need TensorRT 10 or older; use the Q/DQ graph"
        )
    payload = Path(path).read_bytes()

    class CacheCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # TensorRT's bindings need the base constructor called

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # no data: everything comes from the cache
            return None

        def read_calibration_cache(self) -> bytes:
            return payload

        def write_calibration_cache(self, cache) -> None:
            return None

    return CacheCalibrator()
