"""Which TensorRT API a code path may use: the guard for code that only TensorRT 10 has.

TensorRT 11 removed the weakly typed precision flags (BuilderFlag.FP16, .INT8, ...), the INT8
calibrators, the algorithm selector and more (migration guide, "Removed Python APIs and
Replacements":
https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html).
This project keeps those only for TensorRT 10 users (JetPack 6 ships 10.3), and every use sits
behind a guard that tests/engine/test_tensorrt11_api.py checks:

- Python: the function using a removed name first calls `require_tensorrt10(trt, ...)`, or
  leaves early under `if tensorrt_major(trt) >= 11:` (raise, return or pytest.skip);
- C++: the use sits inside `#if NV_TENSORRT_MAJOR < 11` ... `#endif`.
"""

from __future__ import annotations

from types import ModuleType

from axial_deploy.errors import AxialDeployError


def tensorrt_major(trt: ModuleType) -> int:
    """The major version of a TensorRT Python module (`tensorrt`); 0 when unknown. TensorRT-RTX
    (`tensorrt_rtx`, versioned 1.x) is not TensorRT and reports 0: it never had the removed API."""
    if trt.__name__ != "tensorrt":
        return 0
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


def require_tensorrt10(
    trt: ModuleType, what: str, fix: str, error: type[Exception] = AxialDeployError
) -> None:
    """Raises `error` (one line: what, the running version, the fix) unless `trt` is TensorRT 10
    or older, the versions that still have the API `what` needs."""
    major = tensorrt_major(trt)
    if trt.__name__ != "tensorrt":
        raise error(f"{what} needs TensorRT 10 ({trt.__name__} has no such API): {fix}")
    if major >= 11:
        raise error(f"{what} was removed in TensorRT {trt.__version__}: {fix}")
