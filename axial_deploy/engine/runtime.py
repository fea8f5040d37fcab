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
import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from axial_deploy.engine.build import refuse_plugin_graph
from axial_deploy.engine.cuda import CUDA_LIBRARIES, EngineError, open_binding
from axial_deploy.engine.environment import (
    BuildError,
    import_backend,
    running_environment,
)
from axial_deploy.engine.manifest import allows_engine_host_code, check_manifest, read_manifest
from axial_deploy.graph import SymbolicDimensionError, static_shape
from axial_deploy.native import (
    PLUGIN,
    NativeLibraryError,
    locate,
    register_plugin_library,
)

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
        self.cuda = open_binding(cuda, path)
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
