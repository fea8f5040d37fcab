"""Python access to the fused AxialAttention CUDA kernel.

Two layers:

* A ctypes binding of its C ABI (`plugins/axial_attention/axialAttentionKernel.h`), built by
  `make plugins` into `build/lib/libaxial_attention_capi.so` (or named by the environment variable
  AXIAL_DEPLOY_KERNEL_LIB). Argument checking is host-only, so `check` works without a GPU.
* A torch custom op, `torch.ops.axial_deploy.axial_attention` (also `axial_attention` below),
  with the signature of the reference `axial_attention_op`: CUDA tensors run the kernel on the
  current stream; meta / fake tensors get the output shape (torch.compile, export); CPU tensors
  are refused with a pointer to the reference op.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import astuple, dataclass
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from axial_deploy.errors import AxialDeployError
from axial_deploy.native import KERNEL, ParamsStruct, TablesStruct, locate

ABI_VERSION = 1  # AXIAL_ATTENTION_ABI_VERSION of the header this binding mirrors
LIBRARY_ENV = KERNEL.env
LIBRARY_NAME = "libaxial_attention_capi.so"
REPO_ROOT = Path(__file__).resolve().parent.parent


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


class KernelLibraryError(AxialDeployError, ValueError):
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
    """AxialAttentionParams: shapes, attributes and the I/O dtype of one call."""

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
    found = locate(KERNEL)
    return found.path or found.candidates[0]


@cache
def _load(path: Path) -> ctypes.CDLL:
    if not path.is_file():
        raise KernelLibraryError(
            f"AxialAttention kernel library not found at {path}: build it with `make plugins` "
            f"(needs CMake and nvcc) or point {LIBRARY_ENV} at a built {LIBRARY_NAME}"
        )
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        raise KernelLibraryError(
            f"cannot load the AxialAttention kernel library {path}: {error}; rebuild it with "
            "`make plugins`"
        ) from error
    lib.axial_attention_abi_version.restype = ctypes.c_int32
    lib.axial_attention_abi_version.argtypes = []
    version = lib.axial_attention_abi_version()
    if version != ABI_VERSION:
        raise KernelLibraryError(
            f"{path} has ABI version {version}, this binding expects {ABI_VERSION}: the library "
            "is stale, rebuild it with `make plugins`"
        )
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
    return _load(library_path())


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


# ---------------------------------------------------------------------------------------------
# torch custom op

_DTYPES = {torch.float32: DataType.FLOAT32, torch.float16: DataType.FLOAT16}


def _output_shape(
    qkv: Tensor, num_heads: int, key_depth: int, value_depth: int
) -> tuple[int, int, int, int]:
    expected = num_heads * (2 * key_depth + value_depth)
    if qkv.dim() != 4 or qkv.shape[1] != expected:
        raise KernelArgumentError(
            f"qkv must be [N, num_heads * (2 * key_depth + value_depth) = {expected}, H, W], "
            f"got {tuple(qkv.shape)}"
        )
    if qkv.dtype not in _DTYPES:
        raise KernelArgumentError(f"qkv must be float32 or float16, got {qkv.dtype}")
    return (qkv.shape[0], num_heads * value_depth, qkv.shape[2], qkv.shape[3])


def _check_tables(
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    num_heads: int,
    key_depth: int,
    value_depth: int,
) -> int:
    """The tables' common length T, after checking every shape."""
    table_length = rel_q.shape[-1] if rel_q.dim() == 3 else -1
    shapes = {
        "rel_q": (rel_q, (num_heads, key_depth, table_length)),
        "rel_k": (rel_k, (num_heads, key_depth, table_length)),
        "rel_v": (rel_v, (num_heads, value_depth, table_length)),
        "logit_scale": (logit_scale, (num_heads,)),
        "out_bias": (out_bias, (num_heads * value_depth,)),
    }
    for name, (tensor, shape) in shapes.items():
        if tuple(tensor.shape) != shape:
            raise KernelArgumentError(
                f"{name} must have shape {shape} (num_heads={num_heads}, key_depth={key_depth}, "
                f"value_depth={value_depth}, T=rel_q.shape[-1]), got {tuple(tensor.shape)}",
            )
    return table_length


@torch.library.custom_op("axial_deploy::axial_attention", mutates_args=(), device_types="cuda")
def _axial_attention_cuda(
    qkv: Tensor,
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    axis: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    span: int,
) -> Tensor:
    shape = _output_shape(qkv, num_heads, key_depth, value_depth)
    tables = (rel_q, rel_k, rel_v, logit_scale, out_bias)
    table_length = _check_tables(*tables, num_heads, key_depth, value_depth)
    for name, tensor in zip(
        ("rel_q", "rel_k", "rel_v", "logit_scale", "out_bias"), tables, strict=True
    ):
        if tensor.device != qkv.device:
            raise KernelArgumentError(
                f"{name} is on {tensor.device}, qkv on {qkv.device}: move the tables to qkv's "
                "device",
            )
    params = KernelParams(
        batch=shape[0],
        height=shape[2],
        width=shape[3],
        axis=axis,
        num_heads=num_heads,
        key_depth=key_depth,
        value_depth=value_depth,
        span=span,
        table_length=table_length,
        dtype=_DTYPES[qkv.dtype],
    )
    qkv = qkv.contiguous()
    rel_q, rel_k, rel_v, logit_scale, out_bias = (t.to(torch.float32).contiguous() for t in tables)
    y = torch.empty(shape, dtype=qkv.dtype, device=qkv.device)
    with torch.cuda.device(qkv.device):
        stream = torch.cuda.current_stream(qkv.device).cuda_stream
        enqueue(
            params,
            qkv.data_ptr(),
            TablePointers(
                rel_q.data_ptr(),
                rel_k.data_ptr(),
                rel_v.data_ptr(),
                logit_scale.data_ptr(),
                out_bias.data_ptr(),
            ),
            y.data_ptr(),
            stream=stream,
        )
    return y


@_axial_attention_cuda.register_fake
def _axial_attention_fake(
    qkv: Tensor,
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    axis: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    span: int,
) -> Tensor:
    shape = _output_shape(qkv, num_heads, key_depth, value_depth)
    _check_tables(rel_q, rel_k, rel_v, logit_scale, out_bias, num_heads, key_depth, value_depth)
    return qkv.new_empty(shape)


@_axial_attention_cuda.register_kernel("cpu")
def _axial_attention_cpu(qkv: Tensor, *args, **kwargs) -> Tensor:
    raise KernelArgumentError(
        "axial_deploy::axial_attention runs on CUDA tensors only; on CPU use the reference "
        "axial_deploy.models.axial_attention.axial_attention_op (same arguments)",
    )


def axial_attention(
    qkv: Tensor,
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    *,
    axis: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    span: int,
) -> Tensor:
    """The fused kernel with `axial_attention_op`'s signature (CUDA tensors; float32/float16)."""
    return torch.ops.axial_deploy.axial_attention(
        qkv,
        rel_q,
        rel_k,
        rel_v,
        logit_scale,
        out_bias,
        axis,
        num_heads,
        key_depth,
        value_depth,
        span,
    )
