"""The CUDA bindings of the engine runtime, one module each: cuda-python (`[gpu]` extra),
pycuda (for users who have it) and Polygraphy's CUDA wrapper (a core dependency, nothing to
build). Each offers the same few calls (streams, device and pinned memory, copies, events,
graph capture) and releases everything it created on `close()`."""

from __future__ import annotations

from pathlib import Path

from axial_deploy.engine.cuda.common import EngineError
from axial_deploy.engine.cuda.cuda_python_binding import CudaPythonBinding
from axial_deploy.engine.cuda.polygraphy_binding import PolygraphyBinding
from axial_deploy.engine.cuda.pycuda_binding import PyCudaBinding
from axial_deploy.engine.environment import cuda_device_info

# CUDA bindings of the TensorRT path: cuda-python (`[gpu]` extra), pycuda (users who have it),
# and Polygraphy's CUDA wrapper (a core dependency: ctypes over libcudart, nothing to build).
CUDA_LIBRARIES = ("cuda-python", "pycuda", "polygraphy")


def open_binding(cuda: str, path: Path):
    """The CUDA binding named by `cuda`, on a machine with a GPU (else EngineError)."""
    if cuda == "polygraphy":
        return PolygraphyBinding()  # checks for a device itself, through the CUDA runtime
    if cuda == "pycuda":
        return PyCudaBinding()  # pycuda.driver.Device.count() checks
    binding = CudaPythonBinding()
    if cuda_device_info()[1] is None:
        binding.close()
        raise EngineError(
            f"no CUDA GPU found: {path} needs one to run; on this machine run the .onnx "
            "model instead (ONNX Runtime), see `axial-deploy doctor`"
        )
    return binding
