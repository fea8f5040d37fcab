"""The same calls through pycuda (the CUDA driver API), with CUDA-graph capture through
libcuda, since pycuda wraps no graph calls."""

from __future__ import annotations

import ctypes

import numpy as np

from axial_deploy.engine.cuda.common import EngineError, disown, release_all
from axial_deploy.native import cuda_driver


class DriverGraphs:
    """CUDA-graph capture through the driver API (libcuda), for pycuda, which wraps no graph
    calls: pycuda's streams are driver streams, so their handles go straight to these."""

    _CAPTURE_MODE_GLOBAL = 0  # CU_STREAM_CAPTURE_MODE_GLOBAL

    def __init__(self):
        try:
            self.lib = cuda_driver()
        except OSError as error:
            raise EngineError(f"CUDA graphs with pycuda need libcuda.so.1: {error}") from error
        for name in ("cuStreamBeginCapture_v2", "cuStreamEndCapture", "cuGraphLaunch"):
            getattr(self.lib, name).restype = ctypes.c_int
        for name in ("cuGraphInstantiateWithFlags", "cuGraphExecDestroy", "cuGraphDestroy"):
            getattr(self.lib, name).restype = ctypes.c_int

    def _ok(self, code: int, call: str) -> None:
        if code != 0:
            raise EngineError(f"{call} failed with CUresult {code}")

    def begin(self, stream: int) -> None:
        code = self.lib.cuStreamBeginCapture_v2(
            ctypes.c_void_p(stream), ctypes.c_int(self._CAPTURE_MODE_GLOBAL)
        )
        self._ok(code, "cuStreamBeginCapture")

    def end(self, stream: int) -> tuple[ctypes.c_void_p, ctypes.c_void_p]:
        graph, executable = ctypes.c_void_p(), ctypes.c_void_p()
        self._ok(
            self.lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)),
            "cuStreamEndCapture",
        )
        code = self.lib.cuGraphInstantiateWithFlags(
            ctypes.byref(executable), graph, ctypes.c_ulonglong(0)
        )
        if code != 0:
            self.lib.cuGraphDestroy(graph)
            self._ok(code, "cuGraphInstantiateWithFlags")
        return graph, executable

    def launch(self, executable: ctypes.c_void_p, stream: int) -> None:
        self._ok(self.lib.cuGraphLaunch(executable, ctypes.c_void_p(stream)), "cuGraphLaunch")

    def destroy(self, graph: ctypes.c_void_p, executable: ctypes.c_void_p) -> None:
        self._ok(self.lib.cuGraphExecDestroy(executable), "cuGraphExecDestroy")
        self._ok(self.lib.cuGraphDestroy(graph), "cuGraphDestroy")


class PyCudaBinding:
    """The same calls through pycuda (the driver API), on the device's primary context, the one
    the CUDA runtime (TensorRT, torch) uses too, so pointers and streams are shared."""

    def __init__(self, device: int = 0):
        try:
            import pycuda.driver as driver
        except ImportError as error:
            raise EngineError(f"pycuda is not installed ({error}): pip install pycuda") from error
        self.driver = driver
        try:
            driver.init()
            if driver.Device.count() == 0:
                raise EngineError("no CUDA GPU found (pycuda sees no device)")
            self.context = driver.Device(device).retain_primary_context()
        except driver.Error as error:
            raise EngineError(f"pycuda cannot use GPU {device}: {error}") from error
        self.context.push()
        self._graphs: DriverGraphs | None = None
        self._owned: list[tuple[str, object]] = []

    def _own(self, kind: str, handle):
        self._owned.append((kind, handle))
        return handle

    def stream(self):
        return self._own("stream", self.driver.Stream())

    def malloc(self, nbytes: int) -> int:
        return int(self._own("device", self.driver.mem_alloc(max(nbytes, 1))))

    def host(self, nbytes: int, dtype: np.dtype) -> np.ndarray:
        # One byte at least, as with cuda-python; `base` holds the HostAllocation that frees it.
        raw = self.driver.pagelocked_empty(max(nbytes, 1), np.uint8)
        self._own("host", raw.base)
        return raw[:nbytes].view(dtype)

    def h2d(self, device: int, host: np.ndarray, nbytes: int, stream) -> None:
        self.driver.memcpy_htod_async(device, host.reshape(-1)[: nbytes // host.itemsize], stream)

    def d2h(self, host: np.ndarray, device: int, nbytes: int, stream) -> None:
        self.driver.memcpy_dtoh_async(host.reshape(-1)[: nbytes // host.itemsize], device, stream)

    def event(self):
        return self._own("event", self.driver.Event())

    def record(self, event, stream) -> None:
        event.record(stream)

    def elapsed_ms(self, start, end) -> float:
        return float(end.time_since(start))

    def sync(self, stream) -> None:
        stream.synchronize()

    def handle(self, stream) -> int:
        return stream.handle

    def begin_capture(self, stream) -> None:
        if self._graphs is None:
            self._graphs = DriverGraphs()
        self._graphs.begin(stream.handle)

    def end_capture(self, stream):
        assert self._graphs is not None, "end_capture without begin_capture"
        return self._own("graph", self._graphs.end(stream.handle))  # (graph, executable)

    def launch(self, graph, stream) -> None:
        assert self._graphs is not None
        self._graphs.launch(graph[1], stream.handle)

    def free_graph(self, graph) -> None:
        disown(self._owned, graph)
        self._graphs.destroy(*graph)

    def close(self) -> None:
        def release(kind: str, handle) -> None:
            if kind == "graph":
                self._graphs.destroy(*handle)
            elif kind in ("device", "host"):
                handle.free()
            # streams and events are destroyed with their last reference, dropped below

        try:
            release_all(self._owned, release)
        finally:
            if self.context is not None:
                self.context.pop()
                self.context.detach()  # releases the primary-context reference
                self.context = None
