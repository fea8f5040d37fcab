"""The `.engine.json` manifest beside every engine: what built it, for what, from what.

A TensorRT engine only runs on the TensorRT version, GPU architecture and plugin library it
was built with, and fails late and cryptically otherwise. The manifest records those facts at
build time; `check_manifest` compares them with the running environment (passed in as a value,
so the checks are testable without a GPU) and names every mismatch before deserialization.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from axial_deploy.artifacts import atomic_output, check_fields, read_json
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
    # built with BuilderFlag.VERSION_COMPATIBLE (`--serialize-plugin`): the plan carries the
    # lean runtime and the plugin library as host code, and loads in later TensorRT versions
    version_compatible: bool = False
    build_seconds: float | None = None
    manifest_version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict, path: str | os.PathLike = "manifest", fix: str = "") -> Manifest:
        """A manifest from its JSON object; a wrong key or type raises ManifestError naming
        `path` and the key."""
        check_fields(data, FIELD_TYPES, path=path, error=ManifestError, fix=fix,
                     required=REQUIRED_FIELDS)  # fmt: skip
        data = dict(data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ManifestError(f"{path}: unknown manifest fields {sorted(unknown)}; {fix}")
        for key in ("inputs", "outputs"):
            for number, tensor in enumerate(data[key]):
                check_fields(tensor, TENSOR_TYPES, path=path, error=ManifestError, fix=fix,
                             required=tuple(TENSOR_TYPES), where=f"{key}[{number}]: ")  # fmt: skip
            data[key] = [TensorInfo(**t) for t in data[key]]
        return cls(**data)


# JSON types of each field (a field missing from the JSON is left to the dataclass)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "backend": (str,), "tensorrt_version": (str,), "cuda_version": (str, type(None)),
    "gpu_name": (str, type(None)), "sm": (str, type(None)), "precision": (str,),
    "profiles": (list,), "inputs": (list,), "outputs": (list,), "onnx_sha256": (str,),
    "engine_sha256": (str,), "plugin_library": (str, type(None)),
    "plugin_sha256": (str, type(None)), "plugin_serialized": (bool,),
    "version_compatible": (bool,),
    "build_seconds": (int, float, type(None)), "manifest_version": (int,), "extra": (dict,),
}  # fmt: skip
# Fields without a default: a manifest without them cannot be checked
REQUIRED_FIELDS = (
    "backend", "tensorrt_version", "cuda_version", "gpu_name", "sm", "precision", "profiles",
    "inputs", "outputs", "onnx_sha256", "engine_sha256",
)  # fmt: skip
TENSOR_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "dtype": (str,),
    "shape": (list,),
    "mode": (str,),
}


def pending_path(engine_path: str | os.PathLike) -> Path:
    """Where the new manifest waits while its engine replaces the old one."""
    return manifest_path(engine_path).with_suffix(".json.pending")


@contextlib.contextmanager
def _folder_lock(engine_path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on the engine's folder (no lock file to leave behind): writers wait
    for it, a reader only tries (yields False while a writer holds it)."""
    folder = os.open(engine_path.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(folder)  # closing releases the lock


def write_engine(serialized, manifest: Manifest, engine_path: str | os.PathLike) -> Path:
    """Writes an engine and its manifest as one unit.

    Two files cannot be replaced atomically together, so under a lock on the folder: a swap
    that a killed writer left half done is settled first (its pending manifest must not be
    overwritten before it is moved in), the new manifest is written beside the old one as
    ENGINE.json.pending (rename 1), the engine replaces the old engine (rename 2), the pending
    manifest replaces the old manifest (rename 3). Killed before rename 2, the old pair stands
    (the pending manifest does not match the engine and is dropped); killed after it, the
    pending manifest matches the new engine and `read_manifest` moves it in. At every instant
    the next read finds the old pair or the new pair, and `settle_pending` says which."""
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    pending = pending_path(engine_path)
    with _folder_lock(engine_path, wait=True):
        _settle(engine_path, locked=True)
        with atomic_output(pending) as tmp:
            tmp.write_text(manifest.to_json())
        with atomic_output(engine_path) as tmp:
            tmp.write_bytes(memoryview(serialized))
        os.replace(pending, manifest_path(engine_path))
    return manifest_path(engine_path)


# What `settle_pending` found beside an engine.
COMPLETE = "complete"  # no build was interrupted: the engine and its manifest
NEW_PAIR = "new pair"  # a build was killed after its engine moved in: its manifest completed
OLD_PAIR = "old pair"  # a build was killed before its engine moved in: the previous pair kept


def settle_pending(engine_path: str | os.PathLike) -> str:
    """Settles a swap that `write_engine` was killed in the middle of and says which pair
    stands: COMPLETE, NEW_PAIR or OLD_PAIR. While a writer is active nothing is moved."""
    engine_path = Path(engine_path)
    if not pending_path(engine_path).is_file() or not engine_path.parent.is_dir():
        return COMPLETE
    with _folder_lock(engine_path, wait=False) as locked:
        return _settle(engine_path, locked)[0]


def _settle(engine_path: Path, locked: bool) -> tuple[str, Path]:
    """(which pair stands, the manifest file that describes the engine). With `locked` (no
    writer active) the pending manifest is moved in or dropped; without, only read."""
    pending = pending_path(engine_path)
    if not pending.is_file():
        return COMPLETE, manifest_path(engine_path)
    try:
        wanted = read_json(pending, ManifestError).get("engine_sha256")
    except ManifestError:  # a pending manifest is always complete (written atomically)
        wanted = None
    if engine_path.is_file() and wanted == sha256_file(engine_path):
        if locked:
            os.replace(pending, manifest_path(engine_path))
            return NEW_PAIR, manifest_path(engine_path)
        return NEW_PAIR, pending
    if locked:
        pending.unlink(missing_ok=True)
    return OLD_PAIR, manifest_path(engine_path)


def write_manifest(manifest: Manifest, engine_path: str | os.PathLike) -> Path:
    path = manifest_path(engine_path)
    with atomic_output(path) as tmp:
        tmp.write_text(manifest.to_json())
    return path


SETTLED_NOTES = {
    NEW_PAIR: "a build was killed after writing this engine; its manifest is now in place",
    OLD_PAIR: "a build was killed before replacing this engine; the previous engine and "
    "manifest stand",
}


def read_manifest(engine_path: str | os.PathLike) -> Manifest:
    """The manifest that describes the engine at `engine_path` (settling a build killed while
    writing, with a note on stderr saying which pair it found)."""
    engine_path = Path(engine_path)
    if pending_path(engine_path).is_file() and engine_path.parent.is_dir():
        with _folder_lock(engine_path, wait=False) as locked:
            found, path = _settle(engine_path, locked)
        print(f"note: {engine_path}: {SETTLED_NOTES[found]}", file=sys.stderr)
    else:
        path = manifest_path(engine_path)
    if not path.is_file():
        raise ManifestError(
            f"no manifest {path} beside the engine: engines built by `axial-deploy build` have "
            "one; rebuild the engine with it (an engine without one cannot be checked against "
            "this machine's TensorRT, GPU and plugin library)"
        )
    fix = "rebuild the engine with `axial-deploy build`"
    return Manifest.from_dict(read_json(path, ManifestError, "manifest", fix), path, fix)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def version_fits(manifest: Manifest, running: str | None) -> bool:
    """Whether a TensorRT of version `running` loads the engine: the exact version that built
    it, or for a version-compatible engine that version or a later one ("engines built with
    TensorRT 10 work with TensorRT 11 ... built with version compatibility enabled using
    TensorRT 11.0 will be compatible with TensorRT 11.1 and later 11.x versions":
    https://docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/engine-compatibility.html)."""
    if running is None:
        return False
    if running == manifest.tensorrt_version:
        return True
    return manifest.version_compatible and (
        _version_key(running) >= _version_key(manifest.tensorrt_version)
    )


def allows_engine_host_code(manifest: Manifest) -> bool:
    """Whether the runtime may run host code from this engine (IRuntime::setEngineHostCodeAllowed,
    default false): only for the version-compatible TensorRT engines `--serialize-plugin` builds,
    whose plan carries the lean runtime and the plugin library. The manifest check (engine
    sha256) runs before, so only the engine this build wrote gets the permission."""
    return manifest.backend == "tensorrt" and manifest.version_compatible


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
    if not version_fits(manifest, environment.tensorrt_version):
        running = environment.tensorrt_version or "none installed"
        if manifest.version_compatible:
            problems.append(
                f"engine built version-compatible with {manifest.backend} "
                f"{manifest.tensorrt_version}, running {running}: it loads in that version or "
                f"a later one; install {manifest.backend}>={manifest.tensorrt_version}"
            )
        else:
            problems.append(
                f"engine built with {manifest.backend} {manifest.tensorrt_version}, running "
                f"{running}: engines load only in the exact version that built them; rebuild "
                f"the engine here or install {manifest.backend}=={manifest.tensorrt_version}"
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
