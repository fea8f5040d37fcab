"""The `.engine.json` manifest beside every engine: what built it, for what, from what.

A TensorRT engine only runs on the TensorRT version, GPU architecture and plugin library it
was built with, and fails late and cryptically otherwise. The manifest records those facts at
build time; `check_manifest` compares them with the running environment (passed in as a value,
so the checks are testable without a GPU) and names every mismatch before deserialization.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from axial_deploy.artifacts import atomic_output
from axial_deploy.errors import AxialDeployError

MANIFEST_VERSION = 1


class ManifestError(AxialDeployError, ValueError):
    """A missing or unreadable manifest, or an engine that does not fit this environment."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(engine_path: str | os.PathLike) -> Path:
    """`model.engine` -> `model.engine.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


@dataclass
class TensorInfo:
    name: str
    dtype: str  # numpy spelling: float32, float16, int8, ...
    shape: list[int]  # -1 for dynamic axes
    mode: str  # "input" | "output"


@dataclass
class Environment:
    """What an engine depends on, as found on a machine (None: not known there)."""

    backend: str  # "tensorrt" | "tensorrt-rtx"
    tensorrt_version: str | None
    cuda_version: str | None = None
    gpu_name: str | None = None
    sm: str | None = None  # compute capability, e.g. "8.6"
    plugin_sha256: str | None = None  # of the plugin library that would be loaded


@dataclass
class Manifest:
    backend: str
    tensorrt_version: str
    cuda_version: str | None
    gpu_name: str | None
    sm: str | None  # the engine's target architecture; None: built for the running GPU's
    precision: str  # "strongly-typed", "fp32", "fp16", "int8"
    profiles: list[dict[str, list[list[int]]]]  # per profile: input -> [min, opt, max]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    onnx_sha256: str
    engine_sha256: str
    plugin_library: str | None = None
    plugin_sha256: str | None = None
    plugin_serialized: bool = False
    build_seconds: float | None = None
    manifest_version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        data = dict(data)
        for key in ("inputs", "outputs"):
            data[key] = [TensorInfo(**t) for t in data.get(key, [])]
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ManifestError(f"unknown manifest fields {sorted(unknown)}")
        return cls(**data)


def write_manifest(manifest: Manifest, engine_path: str | os.PathLike) -> Path:
    path = manifest_path(engine_path)
    with atomic_output(path) as tmp:
        tmp.write_text(manifest.to_json())
    return path


def read_manifest(engine_path: str | os.PathLike) -> Manifest:
    path = manifest_path(engine_path)
    if not path.is_file():
        raise ManifestError(
            f"no manifest {path} beside the engine: engines built by `axial-deploy build` have "
            "one; rebuild the engine with it (an engine without one cannot be checked against "
            "this machine's TensorRT, GPU and plugin library)"
        )
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise ManifestError(f"manifest {path} is unreadable: {error}") from error


def check_manifest(
    manifest: Manifest, environment: Environment, engine_sha256: str | None = None
) -> None:
    """Raises a ManifestError listing every way the engine does not fit `environment`.

    Checked: the engine's hash (when `engine_sha256`, the hash of the bytes about to be
    deserialized, is given), the backend, the TensorRT
    version, the GPU architecture (when both sides know it) and the plugin library (present and
    identical, unless the plugin was serialized into the engine).
    """
    problems: list[str] = []
    if engine_sha256 is not None:
        actual = engine_sha256
        if actual != manifest.engine_sha256:
            problems.append(
                f"engine file hash {actual[:12]}... differs from the manifest's "
                f"{manifest.engine_sha256[:12]}...: the engine was modified or replaced after "
                "the build; rebuild it with `axial-deploy build`"
            )
    if manifest.backend != environment.backend:
        problems.append(
            f"engine built with {manifest.backend}, running {environment.backend}: engines of "
            "one do not load in the other; rebuild with --backend "
            f"{environment.backend}"
        )
    if manifest.tensorrt_version != environment.tensorrt_version:
        running = environment.tensorrt_version or "none installed"
        problems.append(
            f"engine built with {manifest.backend} {manifest.tensorrt_version}, running "
            f"{running}: engines load only in the exact version that built them; rebuild the "
            f"engine here or install {manifest.backend}=={manifest.tensorrt_version}"
        )
    if manifest.sm and environment.sm and manifest.sm != environment.sm:
        problems.append(
            f"engine built for SM {manifest.sm} ({manifest.gpu_name or 'unknown GPU'}), this GPU "
            f"is SM {environment.sm} ({environment.gpu_name or 'unknown'}): rebuild the engine "
            "on this GPU"
        )
    if manifest.plugin_sha256 and not manifest.plugin_serialized:
        if environment.plugin_sha256 is None:
            problems.append(
                f"engine needs the AxialAttention plugin library ({manifest.plugin_library}) and "
                "none is found: build it with `make plugins` or pass its path"
            )
        elif environment.plugin_sha256 != manifest.plugin_sha256:
            problems.append(
                f"plugin library differs from the one the engine was built with "
                f"({manifest.plugin_library}, sha256 {manifest.plugin_sha256[:12]}...): "
                "rebuild the engine against this library"
            )
    if problems:
        raise ManifestError("engine does not fit this environment:\n  - " + "\n  - ".join(problems))
