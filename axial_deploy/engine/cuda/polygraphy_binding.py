"""The same calls through Polygraphy's CUDA wrapper (a core dependency: ctypes over the CUDA
runtime library it finds), and the prototypes for the calls it does not wrap."""

from __future__ import annotations

import contextlib
import ctypes
import re

import numpy as np

from axial_deploy.engine.cuda.common import EngineError, disown, release_all


class PolygraphyBinding:
    """The same calls through Polygraphy's CUDA wrapper (`polygraphy.cuda`), which finds and
    loads the CUDA runtime library (toolkit, LD_LIBRARY_PATH or the nvidia-cuda-runtime wheel)
    and wraps streams, device memory and copies; the calls it does not wrap (pinned host
    memory, events, graph capture) go through the same library, loaded once more by path so
    that Polygraphy's own ctypes handle is left untouched. No pycuda, no cuda-python."""

    _CAPTURE_MODE_GLOBAL = 0  # cudaStreamCaptureModeGlobal
    _NO_DEVICE = (35, 100)  # cudaErrorInsufficientDriver, cudaErrorNoDevice

    def __init__(self):
        try:
            from polygraphy import cuda as pg_cuda
            from polygraphy.exception import PolygraphyException
        except ImportError as error:
            raise EngineError(
                f"polygraphy is not installed ({error}): pip install polygraphy"
            ) from error
        self.pg = pg_cuda
        try:
            self.wrapper = pg_cuda.wrapper()
        except (OSError, PolygraphyException) as error:
            raise EngineError(
                f"Polygraphy finds no CUDA runtime library ({error}): install the CUDA toolkit "
                "or `pip install nvidia-cuda-runtime-cu12` (cu13 for CUDA 13), or put the "
                "folder of libcudart.so on LD_LIBRARY_PATH"
            ) from None
        self.lib = polygraphy_cudart()
        count = ctypes.c_int(0)
        status = self.lib.cudaGetDeviceCount(ctypes.byref(count))
        if status in self._NO_DEVICE or (status == 0 and count.value == 0):
            seen = cuda_error_name(self.lib, status) if status else "no device"
            raise EngineError(
                f"no CUDA GPU found (the CUDA runtime reports {seen}): an engine needs one to "
                "run; on this machine run the .onnx model instead (ONNX Runtime), see "
                "`axial-deploy doctor`"
            )
        self._ok(status, "cudaGetDeviceCount")
        self._owned: list[tuple[str, object]] = []

    def _ok(self, status: int, call: str) -> None:
        if status != 0:
            raise EngineError(f"{call} failed: {cuda_error_name(self.lib, status)}")

    def _polygraphy(self, call: str):
        return polygraphy_cuda_errors(self.lib, call)

    def _own(self, kind: str, handle):
        self._owned.append((kind, handle))
        return handle

    def stream(self):
        with self._polygraphy("cudaStreamCreate"):
            return self._own("stream", self.pg.Stream())

    def malloc(self, nbytes: int) -> int:
        with self._polygraphy("cudaMalloc"):
            return self._own("device", self.wrapper.malloc(max(nbytes, 1)))

    def host(self, nbytes: int, dtype: np.dtype) -> np.ndarray:
        pointer = ctypes.c_void_p()
        size = ctypes.c_size_t(max(nbytes, 1))
        self._ok(self.lib.cudaMallocHost(ctypes.byref(pointer), size), "cudaMallocHost")
        self._own("host", pointer.value)
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(pointer.value)
        return np.frombuffer(raw, dtype=np.uint8)[:nbytes].view(dtype)

    def _copy(self, dst: int, src: int, nbytes: int, kind, stream) -> None:
        with self._polygraphy("cudaMemcpyAsync"):
            self.wrapper.memcpy(dst, src, nbytes, kind, stream.ptr)

    def h2d(self, device: int, host: np.ndarray, nbytes: int, stream) -> None:
        self._copy(device, host.ctypes.data, nbytes, self.pg.MemcpyKind.HostToDevice, stream)

    def d2h(self, host: np.ndarray, device: int, nbytes: int, stream) -> None:
        self._copy(host.ctypes.data, device, nbytes, self.pg.MemcpyKind.DeviceToHost, stream)

    def event(self):
        event = ctypes.c_void_p()
        self._ok(self.lib.cudaEventCreate(ctypes.byref(event)), "cudaEventCreate")
        return self._own("event", event)

    def record(self, event, stream) -> None:
        self._ok(self.lib.cudaEventRecord(event, ctypes.c_void_p(stream.ptr)), "cudaEventRecord")

    def elapsed_ms(self, start, end) -> float:
        ms = ctypes.c_float()
        self._ok(
            self.lib.cudaEventElapsedTime(ctypes.byref(ms), start, end), "cudaEventElapsedTime"
        )
        return float(ms.value)

    def sync(self, stream) -> None:
        with self._polygraphy("cudaStreamSynchronize"):
            stream.synchronize()

    def handle(self, stream) -> int:
        return stream.ptr

    def begin_capture(self, stream) -> None:
        mode = ctypes.c_int(self._CAPTURE_MODE_GLOBAL)
        status = self.lib.cudaStreamBeginCapture(ctypes.c_void_p(stream.ptr), mode)
        self._ok(status, "cudaStreamBeginCapture")

    def end_capture(self, stream):
        """A (graph, executable) pair for launch/free_graph."""
        graph, executable = ctypes.c_void_p(), ctypes.c_void_p()
        status = self.lib.cudaStreamEndCapture(ctypes.c_void_p(stream.ptr), ctypes.byref(graph))
        self._ok(status, "cudaStreamEndCapture")
        # WithFlags: one signature from CUDA 11.4 to 13 (plain cudaGraphInstantiate changed in 12)
        status = self.lib.cudaGraphInstantiateWithFlags(
            ctypes.byref(executable), graph, ctypes.c_ulonglong(0)
        )
        if status != 0:
            self.lib.cudaGraphDestroy(graph)
        self._ok(status, "cudaGraphInstantiateWithFlags")
        return self._own("graph", (graph, executable))

    def launch(self, graph, stream) -> None:
        status = self.lib.cudaGraphLaunch(graph[1], ctypes.c_void_p(stream.ptr))
        self._ok(status, "cudaGraphLaunch")

    def _free_graph(self, graph) -> None:
        self._ok(self.lib.cudaGraphExecDestroy(graph[1]), "cudaGraphExecDestroy")
        self._ok(self.lib.cudaGraphDestroy(graph[0]), "cudaGraphDestroy")

    def free_graph(self, graph) -> None:
        disown(self._owned, graph)
        self._free_graph(graph)

    def close(self) -> None:
        def release(kind: str, handle) -> None:
            if kind == "stream":
                with self._polygraphy("cudaStreamDestroy"):
                    handle.free()
            elif kind == "device":
                with self._polygraphy("cudaFree"):
                    self.wrapper.free(handle)
            elif kind == "graph":
                self._free_graph(handle)
            else:
                call = {"host": "cudaFreeHost", "event": "cudaEventDestroy"}[kind]
                pointer = handle if isinstance(handle, ctypes.c_void_p) else ctypes.c_void_p(handle)
                self._ok(getattr(self.lib, call)(pointer), call)

        release_all(self._owned, release)


class CudaRuntime:
    """Functions of a loaded CUDA runtime library, each made with ctypes' documented
    `prototype((name, library))` form: our own function objects, so the restypes set here
    leave the library handle's own (Polygraphy's) alone. Every call used returns cudaError_t
    (int), except cudaGetErrorName (const char *)."""

    def __init__(self, library: ctypes.CDLL):
        self._library = library

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        restype = ctypes.c_char_p if name == "cudaGetErrorName" else ctypes.c_int
        function = ctypes.CFUNCTYPE(restype)((name, self._library))
        setattr(self, name, function)  # made once per name
        return function


def polygraphy_cudart() -> CudaRuntime:
    """The CUDA runtime library Polygraphy found and loaded (`polygraphy.cuda.wrapper().handle`,
    the public handle of its wrapper). EngineError, naming Polygraphy's version, when the
    wrapper no longer has that handle; PolygraphyException or OSError when there is no
    library."""
    import polygraphy
    from polygraphy import cuda as pg_cuda

    handle = getattr(pg_cuda.wrapper(), "handle", None)
    if not isinstance(handle, ctypes.CDLL):
        raise EngineError(
            f"Polygraphy {getattr(polygraphy, '__version__', '?')}'s CUDA wrapper has no CUDA "
            "runtime handle (polygraphy.cuda.wrapper().handle, a ctypes library in 0.53): use "
            "--cuda cuda-python or --cuda pycuda, or install polygraphy 0.53"
        )
    return CudaRuntime(handle)


def cuda_error_name(lib: CudaRuntime, status: int) -> str:
    """'cudaErrorNoDevice (100)': the CUDA runtime's own name of an error code."""
    name = lib.cudaGetErrorName(ctypes.c_int(status))
    return f"{name.decode() if name else 'unknown CUDA error'} ({status})"


@contextlib.contextmanager
def polygraphy_cuda_errors(lib: CudaRuntime, call: str):
    """Polygraphy's CUDA wrapper raises PolygraphyException('CUDA Error: N. ...'): re-raised
    as EngineError naming the call and the error."""
    from polygraphy.exception import PolygraphyException

    try:
        yield
    except PolygraphyException as error:
        code = re.search(r"CUDA Error: (\d+)", str(error))
        what = cuda_error_name(lib, int(code.group(1))) if code else str(error)
        raise EngineError(f"{call} failed: {what}") from None
