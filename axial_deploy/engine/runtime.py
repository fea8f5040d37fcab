"""`Engine(path)`: one runner for TensorRT engines and ONNX models.

A small polygraphy-like interface: `inputs` / `outputs` metadata, `infer(feed) -> dict`,
`last_inference_time` (seconds). `.onnx` files run in ONNX Runtime (AxialAttention nodes
through the reference op), so everything above the runner is tested on CPU; `.engine` files run
in TensorRT / TensorRT-RTX with `execute_async_v3` on one CUDA stream, device buffers allocated
once (at the profile's maximum shapes) and pinned host buffers, optionally replayed as a CUDA
graph. Before deserializing, the engine's manifest is checked against this machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from axial_deploy.engine.build import refuse_plugin_graph
from axial_deploy.engine.environment import (
    BuildError,
    cuda_device_info,
    import_backend,
    running_environment,
)
from axial_deploy.engine.manifest import allows_engine_host_code, check_manifest, read_manifest
from axial_deploy.errors import AxialDeployError
from axial_deploy.graph import SymbolicDimensionError, static_shape
from axial_deploy.native import (
    PLUGIN,
    NativeLibraryError,
    cuda_driver,
    locate,
    register_plugin_library,
)

# CUDA bindings of the TensorRT path: cuda-python (`[gpu]` extra), pycuda (users who have it),
# and Polygraphy's CUDA wrapper (a core dependency: ctypes over libcudart, nothing to build).
CUDA_LIBRARIES = ("cuda-python", "pycuda", "polygraphy")

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


# CUDA graphs an engine keeps at most (one per input shape; each has its own execution context)
GRAPH_CACHE_SIZE = 8
# The key of a graph: the input shapes and the address of every I/O tensor it was captured with
GraphKey = tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[tuple[str, int], ...]]


class EngineError(AxialDeployError, ValueError):
    """An engine or model that cannot be opened or fed as asked (says why and the fix)."""


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # -1: dynamic
    # (min, opt, max) of the optimization profile; None where the model gives no bounds
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


def check_feed(feed_shapes: dict[str, tuple[int, ...]], inputs: list[TensorMeta]) -> None:
    """Raises EngineError unless every input is fed once, at a shape the model accepts.

    Pure: used by both backends before any run, so errors name the input, the axis and the
    allowed range instead of surfacing as a backend's failure.
    """
    names = {meta.name for meta in inputs}
    missing = names - set(feed_shapes)
    unknown = set(feed_shapes) - names
    if missing or unknown:
        raise EngineError(
            f"inputs {sorted(missing)} missing, {sorted(unknown)} unknown: the model's inputs are "
            + ", ".join(f"{m.name} {list(m.shape)}" for m in inputs)
        )
    for meta in inputs:
        shape = tuple(feed_shapes[meta.name])
        if len(shape) != len(meta.shape):
            raise EngineError(
                f"input {meta.name!r}: got rank {len(shape)} {list(shape)}, the model takes "
                f"rank {len(meta.shape)} {list(meta.shape)}"
            )
        for axis, (got, fixed) in enumerate(zip(shape, meta.shape, strict=True)):
            if fixed >= 0 and got != fixed:
                raise EngineError(
                    f"input {meta.name!r} shape {list(shape)}: axis {axis} must be {fixed} "
                    f"(the model's shape is {list(meta.shape)}); export or build the model with "
                    "that axis dynamic to feed other sizes"
                )
        if meta.profile is not None:
            low, _, high = meta.profile
            for axis, got in enumerate(shape):
                if not low[axis] <= got <= high[axis]:
                    raise EngineError(
                        f"input {meta.name!r} shape {list(shape)} is outside the engine's "
                        f"optimization profile: axis {axis} is {got}, allowed "
                        f"{low[axis]}..{high[axis]} (profile min {list(low)}, max {list(high)}); "
                        f"rebuild with --shapes {meta.name}:MIN/OPT/MAX covering it"
                    )


def _to_numpy(value) -> tuple[np.ndarray, bool]:
    """(array, was_torch): accepts numpy arrays and torch tensors (any device)."""
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy(), True
    return np.asarray(value), False


class Engine:
    """Runs a `.engine` (TensorRT / TensorRT-RTX, manifest-checked) or an `.onnx` model.

    `cuda` picks the CUDA binding for engines: 'cuda-python' (default), 'pycuda' or
    'polygraphy' (Polygraphy's ctypes wrapper of the CUDA runtime: no extra package); all run
    the same calls (buffers, stream, events, CUDA graphs). `plugins` is the AxialAttention plugin
    library for engines that need it (default: the manifest's path). `check=False` skips the
    manifest check (not recommended).

    `close()` frees the device and pinned host buffers, the stream, the events, a captured CUDA
    graph and the TensorRT objects; use the engine as a context manager (`with Engine(p) as e:`)
    or call `close()`; garbage collection closes it too, but at an unpredictable time.
    """

    _impl = None  # set first thing in __init__; __del__ of a half-made engine sees None

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        cuda: str = "cuda-python",
        plugins: str | os.PathLike | None = None,
        check: bool = True,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"{self.path} not found")
        if cuda not in CUDA_LIBRARIES:
            raise EngineError(f"cuda={cuda!r}: expected one of {', '.join(CUDA_LIBRARIES)}")
        self.last_inference_time: float | None = None
        self.last_split_ms: dict[str, float] = {}
        if self.path.suffix == ".onnx":
            self._impl = _OrtRunner(self.path)
        else:
            self._impl = _TrtRunner(self.path, cuda=cuda, plugins=plugins, check=check)
        self.backend: str = self._impl.backend

    def close(self) -> None:
        """Frees everything the engine holds (idempotent); later calls to `infer` raise."""
        impl, self._impl = self._impl, None
        if impl is not None:
            impl.close()

    @property
    def closed(self) -> bool:
        return self._impl is None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        # Interpreter shutdown may already have torn down the CUDA bindings: nothing to report to.
        with contextlib.suppress(Exception):
            self.close()

    @property
    def _runner(self):
        if self._impl is None:
            raise EngineError(f"{self.path}: the engine is closed")
        return self._impl

    @property
    def inputs(self) -> list[TensorMeta]:
        return self._runner.inputs

    @property
    def outputs(self) -> list[TensorMeta]:
        return self._runner.outputs

    @property
    def layer_blocks(self) -> dict[str, str]:
        """Rewritten layer name -> model block (from the engine's manifest), for profiles."""
        return getattr(self._runner, "layer_blocks", {})

    @property
    def supports_layer_profiling(self) -> bool:
        return isinstance(self._runner, _TrtRunner)

    def infer(self, feed: dict) -> dict:
        """name -> array (numpy or torch) in; name -> numpy array out (torch tensors when the
        feed was torch)."""
        arrays, torch_in = self._prepare(feed)
        runner = self._runner
        start = time.perf_counter()
        outputs = runner.infer(arrays)
        self.last_inference_time = time.perf_counter() - start
        self.last_split_ms = dict(getattr(runner, "last_split_ms", {}))
        if torch_in:
            import torch

            return {k: torch.from_numpy(v) for k, v in outputs.items()}
        return outputs

    def _prepare(self, feed: dict) -> tuple[dict[str, np.ndarray], bool]:
        """Checked numpy arrays of the inputs' dtypes, and whether the feed was torch."""
        arrays, torch_in = {}, False
        for name, value in feed.items():
            arrays[name], was_torch = _to_numpy(value)
            torch_in |= was_torch
        check_feed({k: v.shape for k, v in arrays.items()}, self.inputs)
        for meta in self.inputs:
            if arrays[meta.name].dtype != meta.dtype:
                arrays[meta.name] = arrays[meta.name].astype(meta.dtype)
        return arrays, torch_in

    def random_inputs(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """N(0, 1) inputs: dynamic axis 0 = `batch`, other dynamic axes at the profile's opt."""
        generator = np.random.default_rng(seed)
        feed = {}
        for meta in self.inputs:
            try:
                shape = static_shape(meta.shape, batch, meta.profile and meta.profile[1])
            except SymbolicDimensionError as error:
                raise EngineError(
                    f"input {meta.name!r} has dynamic axis {error.axis} and no profile to size "
                    "it: feed inputs explicitly or export the model at a fixed size"
                ) from None
            if batch != 1 and meta.shape and meta.shape[0] >= 0 and meta.shape[0] != batch:
                raise EngineError(
                    f"--batch-size {batch}: input {meta.name!r} has a fixed batch of "
                    f"{meta.shape[0]}; export the model with --dynamic batch"
                )
            values = generator.standard_normal(shape)
            feed[meta.name] = values.astype(meta.dtype)
        return feed

    def enable_cuda_graph(self, feed: dict | None = None, capacity: int = GRAPH_CACHE_SIZE) -> None:
        """Runs later `infer` calls as CUDA graphs (fewer launch overheads for small batches).

        TensorRT engines: one graph per input shape (and I/O addresses), captured on its own
        execution context the first time that shape comes, replayed after; at most `capacity`
        graphs, the least recently used dropped first. A graph is never replayed for other
        shapes or addresses. `feed` (optional) captures its shapes now.
        TensorRT-RTX engines: its built-in CUDA graphs (see `_TrtRunner.enable_graphs`)."""
        if not isinstance(self._runner, _TrtRunner):
            raise EngineError("CUDA graphs need a TensorRT engine; ONNX models run on the CPU")
        self._runner.enable_graphs(capacity)
        if feed is not None:
            self.infer(feed)

    def profile_layers(self, feed: dict, runs: int = 10) -> dict[str, list[float]]:
        """TensorRT only: per-layer times (ms) over `runs` inferences, via trt.IProfiler."""
        if not isinstance(self._runner, _TrtRunner):
            raise EngineError("per-layer times need a TensorRT engine")
        return self._runner.profile_layers(self._prepare(feed)[0], runs)


class _OrtRunner:
    backend = "onnxruntime"

    def __init__(self, path: Path):
        from axial_deploy.op.ort import create_session

        try:
            self.session = create_session(path)
        except (ImportError, ValueError) as error:
            raise EngineError(f"{path}: {error}") from error
        except Exception as error:  # ORT's own exceptions derive from Exception only
            raise EngineError(f"ONNX Runtime cannot load {path}: {error}") from error
        self.inputs = [self._meta(m) for m in self.session.get_inputs()]
        self.outputs = [self._meta(m) for m in self.session.get_outputs()]

    @staticmethod
    def _meta(meta) -> TensorMeta:
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in meta.shape)
        dtype = np.dtype(_ORT_TYPES.get(meta.type, np.float32))
        return TensorMeta(meta.name, dtype, shape)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [m.name for m in self.outputs]
        return dict(zip(names, self.session.run(names, feed), strict=True))

    def close(self) -> None:
        self.session = None  # ONNX Runtime frees its arena with the session


class _CudaPython:
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
        _disown(self._owned, graph)
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

        _release_all(self._owned, free)


class _DriverGraphs:
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


class _PyCuda:
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
        self._graphs: _DriverGraphs | None = None
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
            self._graphs = _DriverGraphs()
        self._graphs.begin(stream.handle)

    def end_capture(self, stream):
        assert self._graphs is not None, "end_capture without begin_capture"
        return self._own("graph", self._graphs.end(stream.handle))  # (graph, executable)

    def launch(self, graph, stream) -> None:
        assert self._graphs is not None
        self._graphs.launch(graph[1], stream.handle)

    def free_graph(self, graph) -> None:
        _disown(self._owned, graph)
        self._graphs.destroy(*graph)

    def close(self) -> None:
        def release(kind: str, handle) -> None:
            if kind == "graph":
                self._graphs.destroy(*handle)
            elif kind in ("device", "host"):
                handle.free()
            # streams and events are destroyed with their last reference, dropped below

        try:
            _release_all(self._owned, release)
        finally:
            if self.context is not None:
                self.context.pop()
                self.context.detach()  # releases the primary-context reference
                self.context = None


class _PolygraphyCuda:
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
        _disown(self._owned, graph)
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

        _release_all(self._owned, release)


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


def _open_binding(cuda: str, path: Path):
    """The CUDA binding named by `cuda`, on a machine with a GPU (else EngineError)."""
    if cuda == "polygraphy":
        return _PolygraphyCuda()  # checks for a device itself, through the CUDA runtime
    if cuda == "pycuda":
        return _PyCuda()  # pycuda.driver.Device.count() checks
    binding = _CudaPython()
    if cuda_device_info()[1] is None:
        binding.close()
        raise EngineError(
            f"no CUDA GPU found: {path} needs one to run; on this machine run the .onnx "
            "model instead (ONNX Runtime), see `axial-deploy doctor`"
        )
    return binding


def _disown(owned: list[tuple[str, object]], handle) -> None:
    """Drops `handle` (by identity) from a binding's records: its caller releases it now."""
    for index, (_, held) in enumerate(owned):
        if held is handle:
            del owned[index]
            return


def _release_all(owned: list[tuple[str, object]], release) -> None:
    """Releases every recorded handle, newest first, even when one fails; raises the first
    failure afterwards. Empties `owned`, so a second call does nothing."""
    first_error: Exception | None = None
    while owned:
        kind, handle = owned.pop()
        try:
            release(kind, handle)
        except Exception as error:  # keep releasing the rest
            first_error = first_error or error
    if first_error is not None:
        raise EngineError(f"releasing CUDA resources failed: {first_error}") from first_error


@dataclass
class CapturedGraph:
    """A CUDA graph of one enqueue, the execution context it was captured on (kept: TensorRT
    bakes the context's shapes and addresses into the launches it records) and the output
    shapes of that enqueue."""

    graph: object
    context: object
    out_shapes: dict[str, tuple[int, ...]]


class GraphCache:
    """Captured graphs by `GraphKey`, at most `capacity`, the least recently used dropped first.

    A graph replays exactly the launches, shapes and addresses it recorded, so it is looked up
    by all of them: another shape or a moved buffer is a miss and a new capture, never a stale
    replay. `capture(key)` makes a `CapturedGraph`; `release(graph)` frees one that is dropped.
    """

    def __init__(self, capture, release, capacity: int = GRAPH_CACHE_SIZE):
        if capacity < 1:
            raise EngineError(f"CUDA graph capacity {capacity}: keep at least 1")
        self._capture, self._release, self.capacity = capture, release, capacity
        self._graphs: OrderedDict[GraphKey, CapturedGraph] = OrderedDict()
        self.captures = 0  # how many graphs were captured (a replay does not count)

    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, key: GraphKey) -> bool:
        return key in self._graphs

    def get(self, key: GraphKey) -> CapturedGraph:
        """The graph of `key`, captured now when there is none."""
        found = self._graphs.get(key)
        if found is not None:
            self._graphs.move_to_end(key)
            return found
        while len(self._graphs) >= self.capacity:
            _, oldest = self._graphs.popitem(last=False)
            self._release(oldest)
        captured = self._capture(key)
        self.captures += 1
        self._graphs[key] = captured
        return captured

    def clear(self) -> None:
        """Releases every graph (newest first)."""
        while self._graphs:
            self._release(self._graphs.popitem()[1])

    def forget(self) -> None:
        """Drops every entry without releasing it (the CUDA binding's close frees them)."""
        self._graphs.clear()


def graph_key(shapes: dict[str, tuple[int, ...]], addresses: dict[str, int]) -> GraphKey:
    return (
        tuple(sorted((name, tuple(shape)) for name, shape in shapes.items())),
        tuple(sorted(addresses.items())),
    )


def new_runtime(trt, manifest):
    """A `trt.Runtime` for the engine `manifest` describes. Host code (the lean runtime and the
    serialized plugin) runs only from the version-compatible engines `--serialize-plugin`
    builds (IRuntime::setEngineHostCodeAllowed, default false, NvInferRuntime.h); every other
    engine keeps TensorRT's default."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    runtime.engine_host_code_allowed = allows_engine_host_code(manifest)
    return runtime


class _TrtRunner:
    def __init__(self, path: Path, *, cuda: str, plugins, check: bool):
        manifest = read_manifest(path)
        self.backend = manifest.backend
        self.layer_blocks = dict(manifest.extra.get("layer_blocks", {}))
        trt = import_backend(manifest.backend)
        if manifest.plugin_library:  # the engine holds AxialAttention layers
            try:
                refuse_plugin_graph(manifest.backend, ["AxialAttention"], trt)
            except BuildError as error:
                raise EngineError(f"{path}: {error}") from error
        self.trt = trt
        # The library to load comes from the user or the installed package, never from the
        # manifest: a manifest only checks (by sha256) the library that is loaded.
        plugin = plugins or (locate(PLUGIN).path if manifest.plugin_library else None)
        serialized = path.read_bytes()  # read once: hashed for the check, then deserialized
        if check:
            environment = running_environment(manifest.backend, trt, plugin)
            engine_sha256 = hashlib.sha256(serialized).hexdigest()
            check_manifest(manifest, environment, engine_sha256=engine_sha256)
        self.cuda = _open_binding(cuda, path)
        try:
            self._open(path, manifest, plugin, serialized)
        except BaseException:
            self.close()  # what was allocated before the failure
            raise

    def _open(self, path: Path, manifest, plugin, serialized: bytes) -> None:
        trt = self.trt
        # kept: an ICudaEngine must not outlive the runtime that deserialized it
        self.runtime = runtime = new_runtime(trt, manifest)
        if plugin and manifest.plugin_library and not manifest.plugin_serialized:
            try:
                register_plugin_library(trt, plugin)
            except NativeLibraryError as error:
                raise EngineError(str(error)) from error
        self.engine = runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise EngineError(f"{manifest.backend} cannot deserialize {path} (see messages above)")
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.events = [self.cuda.event() for _ in range(4)]
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(self.engine.get_tensor_shape(name))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                low, opt, high = (tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0))
                self.inputs.append(TensorMeta(name, dtype, shape, (low, opt, high)))
            else:
                self.outputs.append(TensorMeta(name, dtype, shape))
        self._allocate()
        self.graphs: GraphCache | None = None  # CUDA graphs (TensorRT engines), when enabled
        self.last_split_ms: dict[str, float] = {}

    def _allocate(self) -> None:
        """Device and pinned host buffers, once, at the profile's maximum shapes."""
        for meta in self.inputs:
            self.context.set_input_shape(meta.name, meta.profile[2])
        self.device, self.host = {}, {}
        for meta in [*self.inputs, *self.outputs]:
            shape = tuple(self.context.get_tensor_shape(meta.name))
            nbytes = int(np.prod(shape)) * meta.dtype.itemsize
            self.device[meta.name] = self.cuda.malloc(nbytes)
            self.host[meta.name] = self.cuda.host(nbytes, meta.dtype)
            self.context.set_tensor_address(meta.name, self.device[meta.name])

    def _enqueue(
        self, shapes: dict[str, tuple[int, ...]], context=None
    ) -> dict[str, tuple[int, ...]]:
        context = context or self.context
        for name, shape in shapes.items():
            context.set_input_shape(name, shape)
        if not context.execute_async_v3(self.cuda.handle(self.stream)):
            raise EngineError("execute_async_v3 failed (see TensorRT's messages above)")
        return {m.name: tuple(context.get_tensor_shape(m.name)) for m in self.outputs}

    def enable_graphs(self, capacity: int = GRAPH_CACHE_SIZE) -> None:
        """TensorRT: later inferences replay per-shape CUDA graphs (`GraphCache`).

        TensorRT-RTX: user stream capture needs engines built with REQUIRE_USER_ALLOCATION and
        a context that `is_stream_capturable` (TensorRT-RTX 1.2 release notes:
        https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/release-notes-1/1.2.html);
        ours are not, so instead the context is remade with TensorRT-RTX's built-in CUDA graphs
        (IRuntimeConfig cuda_graph_strategy WHOLE_GRAPH_CAPTURE, which captures per shape
        after its shape-specialized kernels compile:
        https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/work-with-cuda-graphs.html)."""
        if self.backend == "tensorrt-rtx":
            self._use_rtx_graphs()
            return
        if self.graphs is not None and self.graphs.capacity == capacity:
            return
        if self.graphs is not None:
            self.cuda.sync(self.stream)
            self.graphs.clear()
        self.graphs = GraphCache(self._capture, self._release_graph, capacity)

    def _use_rtx_graphs(self) -> None:
        trt = self.trt
        config = self.engine.create_runtime_config()
        config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        self.cuda.sync(self.stream)
        context = self.engine.create_execution_context(config)
        for name, address in self.device.items():
            context.set_tensor_address(name, address)
        self.context = context

    def _addresses(self) -> dict[str, int]:
        return {name: int(self.context.get_tensor_address(name)) for name in self.device}

    def _capture(self, key: GraphKey) -> CapturedGraph:
        """A graph of one enqueue at `key`'s shapes, on an execution context of its own (so no
        other shape ever reconfigures what the graph recorded)."""
        shapes, addresses = dict(key[0]), dict(key[1])
        context = self.engine.create_execution_context()
        for name, address in addresses.items():
            context.set_tensor_address(name, address)
        self._enqueue(shapes, context)  # TensorRT needs one enqueue at new shapes first
        self.cuda.begin_capture(self.stream)
        try:
            out_shapes = self._enqueue(shapes, context)
        finally:  # end the capture even when the enqueue failed, or the stream stays capturing
            graph = self.cuda.end_capture(self.stream)
        return CapturedGraph(graph, context, out_shapes)

    def _release_graph(self, captured: CapturedGraph) -> None:
        self.cuda.sync(self.stream)  # its last launch may still run
        self.cuda.free_graph(captured.graph)
        captured.context = None

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, stream, events = self.cuda, self.stream, self.events
        shapes = {name: array.shape for name, array in feed.items()}
        cuda.record(events[0], stream)
        for name, array in feed.items():
            host = self.host[name][: array.size]
            np.copyto(host, array.reshape(-1))
            cuda.h2d(self.device[name], host, array.nbytes, stream)
        cuda.record(events[1], stream)
        if self.graphs is not None:
            captured = self.graphs.get(graph_key(shapes, self._addresses()))
            cuda.launch(captured.graph, stream)
            out_shapes = captured.out_shapes
        else:
            out_shapes = self._enqueue(shapes)
        cuda.record(events[2], stream)
        results = {}
        for meta in self.outputs:
            size = int(np.prod(out_shapes[meta.name]))
            host = self.host[meta.name][:size]
            cuda.d2h(host, self.device[meta.name], host.nbytes, stream)
            results[meta.name] = host
        cuda.record(events[3], stream)
        cuda.sync(stream)
        self.last_split_ms = {
            "h2d": cuda.elapsed_ms(events[0], events[1]),
            "compute": cuda.elapsed_ms(events[1], events[2]),
            "d2h": cuda.elapsed_ms(events[2], events[3]),
        }
        # Copies: the pinned buffers are reused by the next inference.
        return {name: host.reshape(out_shapes[name]).copy() for name, host in results.items()}

    def close(self) -> None:
        """Waits for the stream, drops the TensorRT objects (newest first: their plugins free
        their tables while the CUDA context lives), then frees buffers, graph, events, stream."""
        cuda = getattr(self, "cuda", None)
        if cuda is None:
            return
        try:
            if getattr(self, "stream", None) is not None:
                cuda.sync(self.stream)
        finally:
            if getattr(self, "graphs", None) is not None:
                self.graphs.forget()  # their contexts go now, their graphs with the binding
            self.graphs = None
            self.context = self.engine = self.runtime = None
            self.device, self.host = {}, {}
            self.stream, self.events = None, []
            self.cuda = None
            cuda.close()

    def profile_layers(self, feed: dict, runs: int) -> dict[str, list[float]]:
        from axial_deploy.engine.profile import make_layer_profiler

        profiler = make_layer_profiler(self.trt)
        graphs, self.graphs = self.graphs, None  # per-layer reports need plain enqueues
        self.context.profiler = profiler
        try:
            for _ in range(runs):
                self.infer(feed)
        finally:
            self.graphs = graphs
            # bindings that refuse None keep the profiler attached
            with contextlib.suppress(TypeError):
                self.context.profiler = None
        return dict(profiler.times)
