"""Python access to the fused AxialAttention CUDA kernel.

Two layers:

* A ctypes binding of its C ABI (`plugins/axial_attention/axialAttentionKernel.h`), built by
  `make plugins` into `build/lib/libaxial_attention_capi.so` (or named by the environment variable
  AXIAL_DEPLOY_KERNEL_LIB). Argument checking is host-only, so `check` works without a GPU.
* A torch custom op, `torch.ops.axial_deploy.axial_attention`, in `axial_deploy.op.torch_op`
  (`from axial_deploy.op.torch_op import axial_attention`): it loads torch and builds on this
  module, which never imports it (the ctypes layer and `axial-deploy doctor` need no torch).
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import astuple, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from axial_deploy.errors import AxialDeployError
from axial_deploy.native import KERNEL, NativeLibraryError, ParamsStruct, TablesStruct, load
from axial_deploy.native import library_path as native_library_path

if TYPE_CHECKING:  # the ctypes layer stays light: it only reads the attributes' fields
    from axial_deploy.op.spec import AxialAttentionAttributes

ABI_VERSION = KERNEL.abi_version  # AXIAL_ATTENTION_ABI_VERSION of the header this mirrors
LIBRARY_ENV = KERNEL.env
LIBRARY_NAME = KERNEL.filename
REPO_ROOT = Path(__file__).resolve().parents[2]  # axial_deploy/op/kernel.py -> the checkout


class Status(enum.IntEnum):
    """AxialAttentionStatus."""

    SUCCESS = 0
    NULL_POINTER = 1
    BAD_DTYPE = 2
    BAD_AXIS = 3
    BAD_SHAPE = 4
    BAD_SPAN = 5
    BAD_TABLE = 6
    UNSUPPORTED = 7
    WORKSPACE = 8
    CUDA = 9


class DataType(enum.IntEnum):
    """AxialAttentionDataType."""

    FLOAT32 = 0
    FLOAT16 = 1


class KernelLibraryError(NativeLibraryError):
    """The kernel library is missing, unloadable or stale: build it with `make plugins`."""


class KernelArgumentError(AxialDeployError, ValueError):
    """The kernel refused its arguments; `status` says why."""

    def __init__(self, message: str, status: Status | None = None) -> None:
        super().__init__(message)
        self.status = status  # None for checks done in Python before the C ABI is called


class KernelCudaError(AxialDeployError, RuntimeError):
    """A CUDA call of the kernel failed (no usable device, launch error)."""


@dataclass(frozen=True)
class KernelParams:
    """AxialAttentionParams: shapes, attributes and the I/O dtype of one call.

    Field for field the C struct, so that tests can hand the C checks any value; code that runs
    the operator builds it with `for_call` from an `AxialAttentionAttributes`."""

    batch: int
    height: int
    width: int
    axis: int
    num_heads: int
    key_depth: int
    value_depth: int
    span: int
    table_length: int
    dtype: int = DataType.FLOAT32

    @classmethod
    def for_call(
        cls,
        attributes: AxialAttentionAttributes,
        shape: tuple[int, int, int],
        table_length: int,
        dtype: int = DataType.FLOAT32,
    ) -> KernelParams:
        """The params of one call: the operator's attributes, (batch, height, width) of qkv,
        the tables' length T and the I/O dtype."""
        batch, height, width = shape
        return cls(
            batch, height, width, **attributes.as_dict(), table_length=table_length, dtype=dtype
        )


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _c_params(params: KernelParams) -> ParamsStruct:
    values = astuple(params)
    for name, value in zip(ParamsStruct._fields_, values, strict=True):
        if not INT32_MIN <= int(value) <= INT32_MAX:
            raise KernelArgumentError(
                f"{name[0]} = {value} does not fit the kernel's int32 fields", Status.BAD_SHAPE
            )
    return ParamsStruct(*(int(v) for v in values))


def library_path() -> Path:
    """Where the library is: `axial_deploy.native`'s search ($AXIAL_DEPLOY_KERNEL_LIB, the
    installed package, the checkout's build/lib; never the working directory)."""
    return native_library_path(KERNEL)


@cache
def _bind(path: Path) -> ctypes.CDLL:
    """The library at `path`, opened and ABI-checked by `native.load`, its C ABI declared."""
    lib = load(KERNEL, path, KernelLibraryError)
    lib.axial_attention_check.restype = ctypes.c_int
    lib.axial_attention_check.argtypes = [ctypes.POINTER(ParamsStruct)]
    lib.axial_attention_workspace_size.restype = ctypes.c_size_t
    lib.axial_attention_workspace_size.argtypes = [ctypes.POINTER(ParamsStruct)]
    lib.axial_attention_enqueue.restype = ctypes.c_int
    lib.axial_attention_enqueue.argtypes = [
        ctypes.POINTER(ParamsStruct),
        ctypes.c_void_p,
        ctypes.POINTER(TablesStruct),
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
    ]
    lib.axial_attention_status_string.restype = ctypes.c_char_p
    lib.axial_attention_status_string.argtypes = [ctypes.c_int]
    return lib


def load_library() -> ctypes.CDLL:
    """The loaded C ABI library (raises KernelLibraryError naming `make plugins` if missing)."""
    return _bind(library_path())


def status_string(status: int) -> str:
    """The library's description of a status code."""
    return load_library().axial_attention_status_string(int(status)).decode()


def _raise_for(status: int, params: KernelParams) -> None:
    if status == Status.SUCCESS:
        return
    message = f"AxialAttention kernel: {status_string(status)} (params: {params})"
    if status == Status.CUDA:
        raise KernelCudaError(message)
    raise KernelArgumentError(message, Status(status))


def check(params: KernelParams) -> None:
    """Validate params without touching the GPU; raises KernelArgumentError."""
    c_params = _c_params(params)
    _raise_for(load_library().axial_attention_check(ctypes.byref(c_params)), params)


def workspace_size(params: KernelParams) -> int:
    """Bytes of device scratch memory `enqueue` needs (0 for the fused kernel)."""
    c_params = _c_params(params)
    return int(load_library().axial_attention_workspace_size(ctypes.byref(c_params)))


@dataclass(frozen=True)
class TablePointers:
    """Device addresses of the float32 tables (AxialAttentionTables)."""

    rel_q: int
    rel_k: int
    rel_v: int
    logit_scale: int
    out_bias: int


def enqueue(
    params: KernelParams,
    qkv: int,
    tables: TablePointers,
    y: int,
    stream: int = 0,
    workspace: int = 0,
    workspace_bytes: int = 0,
) -> None:
    """Launch the kernel on `stream` (a cudaStream_t address, 0 = legacy default stream).

    Every pointer is a device address (an int, e.g. `tensor.data_ptr()`); 0 is NULL.
    Raises KernelArgumentError for bad arguments, KernelCudaError when the launch fails.
    """
    c_params = _c_params(params)
    c_tables = TablesStruct(*(ctypes.c_void_p(p or None) for p in astuple(tables)))
    status = load_library().axial_attention_enqueue(
        ctypes.byref(c_params),
        ctypes.c_void_p(qkv or None),
        ctypes.byref(c_tables),
        ctypes.c_void_p(y or None),
        ctypes.c_void_p(workspace or None),
        ctypes.c_size_t(workspace_bytes),
        ctypes.c_void_p(stream or None),
    )
    _raise_for(status, params)


def __getattr__(name: str):
    """`kernel.axial_attention`, the torch op, moved to `axial_deploy.op.torch_op` (which builds
    on this module; a lazy alias back up would be an import cycle): the error says where."""
    if name == "axial_attention":
        raise AttributeError(
            "axial_deploy.op.kernel.axial_attention moved: import axial_attention from "
            "axial_deploy.op.torch_op (the torch op builds on this ctypes layer)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
