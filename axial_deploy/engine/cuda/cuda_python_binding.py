"""The CUDA runtime calls the engine runner needs, through cuda-python (`cuda.bindings`,
the `[gpu]` extra)."""

from __future__ import annotations

import ctypes

import numpy as np

from axial_deploy.engine.cuda.common import EngineError, disown, release_all


class CudaPythonBinding:
    """The few CUDA runtime calls the runner needs, through cuda-python (cuda.bindings).

    Every handle it creates is recorded, and `close()` releases them all (newest first).
    """

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError as error:
            raise EngineError(
                f"cuda-python is not installed ({error}): pip install 'axial-deploy[gpu]'"
            ) from error
        self.rt = cudart
        self._owned: list[tuple[str, object]] = []

    def _ok(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self.rt.cudaGetErrorName(err)
            raise EngineError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else rest

    def _own(self, kind: str, handle):
        self._owned.append((kind, handle))
        return handle

    def stream(self):
        return self._own("stream", self._ok(self.rt.cudaStreamCreate()))

    def malloc(self, nbytes: int) -> int:
        return self._own("device", int(self._ok(self.rt.cudaMalloc(max(nbytes, 1)))))

    def host(self, nbytes: int, dtype: np.dtype) -> np.ndarray:
        pointer = self._own("host", int(self._ok(self.rt.cudaMallocHost(max(nbytes, 1)))))
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(pointer)
        return np.frombuffer(raw, dtype=np.uint8)[:nbytes].view(dtype)

    def h2d(self, device: int, host: np.ndarray, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(device, host.ctypes.data, nbytes, kind, stream))

    def d2h(self, host: np.ndarray, device: int, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, device, nbytes, kind, stream))

    def event(self):
        return self._own("event", self._ok(self.rt.cudaEventCreate()))

    def record(self, event, stream) -> None:
        self._ok(self.rt.cudaEventRecord(event, stream))

    def elapsed_ms(self, start, end) -> float:
        return float(self._ok(self.rt.cudaEventElapsedTime(start, end)))

    def sync(self, stream) -> None:
        self._ok(self.rt.cudaStreamSynchronize(stream))

    def handle(self, stream) -> int:
        return int(stream)

    def begin_capture(self, stream) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._ok(self.rt.cudaStreamBeginCapture(stream, mode))

    def end_capture(self, stream):
        """The captured graph, instantiated: a (graph, executable) pair for launch/free_graph."""
        graph = self._ok(self.rt.cudaStreamEndCapture(stream))
        try:
            executable = self._ok(self.rt.cudaGraphInstantiate(graph, 0))
        except EngineError:
            self.rt.cudaGraphDestroy(graph)
            raise
        return self._own("graph", (graph, executable))

    def launch(self, graph, stream) -> None:
        self._ok(self.rt.cudaGraphLaunch(graph[1], stream))

    def _free_graph(self, graph) -> None:
        self._ok(self.rt.cudaGraphExecDestroy(graph[1]))
        self._ok(self.rt.cudaGraphDestroy(graph[0]))

    def free_graph(self, graph) -> None:
        disown(self._owned, graph)
        self._free_graph(graph)

    def close(self) -> None:
        release = {
            "device": self.rt.cudaFree,
            "host": self.rt.cudaFreeHost,
            "stream": self.rt.cudaStreamDestroy,
            "event": self.rt.cudaEventDestroy,
        }

        def free(kind: str, handle) -> None:
            if kind == "graph":
                self._free_graph(handle)
            else:
                self._ok(release[kind](handle))

        release_all(self._owned, free)
