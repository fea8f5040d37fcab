"""What this machine has for engines: the TensorRT module of a backend, the CUDA runtime and
GPU, and the `Environment` an engine's manifest is checked against (the probing that `build`,
the runtime, `deploy` and `doctor` share)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from axial_deploy.engine.manifest import Environment, sha256_file
from axial_deploy.errors import AxialDeployError
from axial_deploy.native import PLUGIN, locate

BACKENDS = ("tensorrt", "tensorrt-rtx")


class BuildError(AxialDeployError, ValueError):
    """An engine that cannot be built from the given graph and options (says why and the fix)."""


def import_backend(backend: str) -> ModuleType:
    """The TensorRT Python module of `backend`, or a BuildError naming the pip package."""
    if backend not in BACKENDS:
        raise BuildError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    try:
        if backend == "tensorrt":
            import tensorrt as trt
        else:
            import tensorrt_rtx as trt
    except ImportError as error:
        fix = (
            "pip install tensorrt (needs an NVIDIA GPU driver), or build with "
            "--backend tensorrt-rtx for plugin-free graphs"
            if backend == "tensorrt"
            else "pip install 'axial-deploy[rtx]' (tensorrt-rtx-cu13)"
        )
        raise BuildError(f"{backend} is not installed ({error}): {fix}") from error
    return trt


def cuda_device_info() -> tuple[str | None, str | None, str | None]:
    """(CUDA runtime version, GPU 0 name, 'major.minor') through cuda-python; None where unknown."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None, None, None
    try:
        err, version = cudart.cudaRuntimeGetVersion()
        cuda = f"{version // 1000}.{version % 1000 // 10}" if err == 0 else None
        err, count = cudart.cudaGetDeviceCount()
        if err != 0 or count == 0:
            return cuda, None, None
        err, props = cudart.cudaGetDeviceProperties(0)
        if err != 0:
            return cuda, None, None
        name = props.name.decode(errors="replace").rstrip("\0")
        return cuda, name, f"{props.major}.{props.minor}"
    except Exception:  # a missing driver surfaces as assorted runtime errors
        return None, None, None


def running_environment(
    backend: str, trt: ModuleType | None = None, plugin_library: str | os.PathLike | None = None
) -> Environment:
    """This machine's TensorRT version, CUDA runtime, GPU and plugin library, as far as known."""
    if trt is None:
        try:
            trt = import_backend(backend)
        except BuildError:
            trt = None
    cuda_version, gpu_name, sm = cuda_device_info()
    plugin = Path(plugin_library) if plugin_library else locate(PLUGIN).path
    return Environment(
        backend=backend,
        tensorrt_version=getattr(trt, "__version__", None),
        cuda_version=cuda_version,
        gpu_name=gpu_name,
        sm=sm,
        plugin_sha256=sha256_file(plugin) if plugin and plugin.is_file() else None,
    )
