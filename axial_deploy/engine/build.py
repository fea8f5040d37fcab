"""ONNX -> TensorRT engine: one code path for TensorRT 10/11 and TensorRT-RTX.

The network is strongly typed by default: the precision stage already fixed every tensor's
type (FP16 casts, INT8 Q/DQ pairs), so the builder must not re-decide them. On TensorRT 10 the
legacy weakly typed flags (`fp16`, `int8` + a calibration cache) remain available.

TensorRT-RTX compiles ahead of time on a CPU-only machine (kernels are specialized on the GPU
at load time) and has no plugin layer: graphs with AxialAttention nodes need full TensorRT and
the plugin library. Beside the engine goes `<engine>.json` (see `manifest.py`).

FP8 graphs (E4M3 Q/DQ from `axial-deploy quantize --precision fp8`) need FP8 tensor cores:
compute capability 8.9 or newer (`fp8_support_problem`). A build for a GPU without them stops
with one line before any work; TensorRT-RTX builds for the GPU given as `compute_capability`
(its builder config's target, e.g. "8.9" or "12.0"), so FP8 engines are built on a CPU-only
machine too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import onnx

from axial_deploy.artifacts import atomic_output, load_onnx
from axial_deploy.engine.environment import (  # noqa: F401 (BuildError, BACKENDS: build.X works)
    BACKENDS,
    BuildError,
    cuda_device_info,
    import_backend,
    running_environment,
)
from axial_deploy.engine.manifest import (
    Manifest,
    TensorInfo,
    sha256_file,
    write_engine,
)
from axial_deploy.engine.tensorrt_api import require_tensorrt10
from axial_deploy.graph import (
    SymbolicDimensionError,
    graph_input_dims,
    is_static,
    producers,
    static_shape,
)
from axial_deploy.native import PLUGIN, NativeLibraryError, locate, register_plugin_library
from axial_deploy.op.spec import OP_TYPE

# A symbolic batch axis without --shapes: build for 1..DEFAULT_MAX_BATCH, tuned at 1.
DEFAULT_MAX_BATCH = 8

LEGACY_FIX = "quantize the graph with `axial-deploy quantize` and build it strongly typed"

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


# FP8 (E4M3) tensor cores start at compute capability 8.9 (Ada). NVIDIA's precision tables:
# TensorRT's support matrix lists FP8 for 8.9 and 9.0 (H100) but not for 8.7 (Jetson Orin),
# 8.6 / 8.0 (Ampere) or 7.5 (Turing)
# (https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-1010/support-matrix/index.html),
# TensorRT for DRIVE OS lists FP8 for Thor
# (https://developer.nvidia.com/docs/drive/drive-os/7.0.3/public/drive-os-tensorrt-release-notes/release-properties.html),
# and TensorRT-RTX's for 12.0 (Blackwell RTX) and 8.9, not 8.6 or 7.5
# (https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/support-matrix.html).
FP8_MIN_SM = (8, 9)
FP8_TYPES = (onnx.TensorProto.FLOAT8E4M3FN,)


def parse_sm(sm: str) -> tuple[int, int]:
    """'8.9' (or '89', 'sm_89', 'sm89') -> (8, 9)."""
    text = sm.strip().lower().removeprefix("sm").lstrip("_")
    major, dot, minor = text.partition(".")
    if not dot and text.isdigit() and len(text) >= 2:  # '89', '120'
        major, minor = text[:-1], text[-1]
    if not (major.isdigit() and minor.isdigit()):
        raise BuildError(f"compute capability {sm!r} is not MAJOR.MINOR, e.g. 8.9 or 12.0")
    return int(major), int(minor)


def fp8_support_problem(sm: str, gpu: str | None = None) -> str | None:
    """None when a GPU of compute capability `sm` runs FP8 engines, else the one line saying
    it does not (a pure function of the compute capability; `gpu` only names it)."""
    if parse_sm(sm) >= FP8_MIN_SM:
        return None
    named = f"{gpu} (compute capability {sm})" if gpu else f"compute capability {sm}"
    return (
        f"{named} has no FP8 tensor cores (FP8 needs compute capability 8.9 or newer: Ada, "
        "Hopper, Blackwell, Thor)"
    )


def uses_fp8(model: onnx.ModelProto) -> bool:
    """Whether the graph holds FP8 Q/DQ (float8 zero points or weights)."""
    return any(init.data_type in FP8_TYPES for init in model.graph.initializer)


def hosts_plugins(trt: ModuleType) -> bool:
    """Whether `trt` can put a plugin into a network: a feature check of its network API
    (IPluginV3 layers, `add_plugin_v3`), not a version number, so that a TensorRT-RTX that
    gains plugin layers is used. TensorRT-RTX 1.x has none, and its ONNX parser, given a
    registered AxialAttention creator, creates the plugin and then aborts the whole process
    (tests/plugins/test_plugin_loading.py shows it)."""
    return hasattr(trt.INetworkDefinition, "add_plugin_v3")


def refuse_plugin_graph(backend: str, nodes: list[str], trt: ModuleType | None = None) -> None:
    """The one guard for every path that hands a graph (or a plugin engine) to `backend`:
    build, deploy, serve/runtime, the comparison runners. Raises BuildError, in one line, when
    the graph has AxialAttention nodes and the backend's network has no plugin layer."""
    if not nodes:
        return
    trt = trt or import_backend(backend)
    if hosts_plugins(trt):
        return
    name = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}.get(backend, backend)
    raise BuildError(
        f"the graph has {len(nodes)} AxialAttention node(s) ({', '.join(nodes[:5])}"
        f"{', ...' if len(nodes) > 5 else ''}) and {name} has no plugin layer ({trt.__name__} "
        f"{trt.__version__}: no add_plugin_v3): build it with --backend tensorrt --plugins LIB "
        "(the AxialAttention plugin library), or build the graph from before `axial-deploy "
        "rewrite` with tensorrt-rtx"
    )


def parse_shape_spec(text: str) -> tuple[str, tuple[tuple[int, ...], ...]]:
    """'input:1x3x224x224/4x3x224x224/8x3x224x224' -> (name, (min, opt, max)).

    A single shape ('input:1x3x224x224') means min = opt = max.
    """
    name, sep, dims = text.rpartition(":")
    parts = dims.split("/") if sep else []
    try:
        shapes = tuple(tuple(int(v) for v in part.lower().split("x")) for part in parts)
    except ValueError:
        shapes = ()
    if not name or len(shapes) not in (1, 3) or any(d <= 0 for s in shapes for d in s):
        raise BuildError(
            f"shape spec {text!r} must be NAME:MIN/OPT/MAX (or NAME:SHAPE) with positive "
            "dimensions, e.g. input:1x3x224x224/4x3x224x224/8x3x224x224"
        )
    if len(shapes) == 1:
        shapes = shapes * 3
    if len({len(s) for s in shapes}) != 1:
        raise BuildError(f"shape spec {text!r}: min, opt and max must have the same rank")
    low, opt, high = shapes
    if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
        raise BuildError(f"shape spec {text!r}: needs min <= opt <= max in every dimension")
    return name, shapes  # type: ignore[return-value]


def resolve_profile(model: onnx.ModelProto, shapes: Shapes | None = None) -> Shapes:
    """One optimization profile for every input: from `shapes`, else from the graph.

    A dynamic axis 0 (batch) defaults to 1 / 1 / DEFAULT_MAX_BATCH; any other dynamic axis has
    no sensible default and must be given with --shapes.
    """
    shapes = dict(shapes or {})
    inputs = graph_input_dims(model)
    unknown = set(shapes) - set(inputs)
    if unknown:
        raise BuildError(
            f"--shapes names {sorted(unknown)}, not inputs of the graph: its inputs are "
            f"{sorted(inputs)}"
        )
    profile: Shapes = {}
    for name, dims in inputs.items():
        if name in shapes:
            low, opt, high = shapes[name]
            if len(low) != len(dims):
                raise BuildError(
                    f"--shapes {name}: rank {len(low)}, but the graph's input has rank {len(dims)}"
                )
            for axis, dim in enumerate(dims):
                if is_static(dim) and not low[axis] == opt[axis] == high[axis] == dim:
                    raise BuildError(
                        f"--shapes {name}: axis {axis} is fixed to {dim} in the graph; "
                        "re-export the model with that axis dynamic to vary it"
                    )
            profile[name] = (low, opt, high)
            continue
        try:
            low = static_shape(dims, 1)
        except SymbolicDimensionError as error:
            raise BuildError(
                f"input {name!r} has dynamic axis {error.axis} ({error.dim!r}) with no default "
                f"range: give it with --shapes {name}:MIN/OPT/MAX, e.g. "
                f"{name}:1x3x256x256/1x3x512x512/1x3x1024x1024"
            ) from None
        profile[name] = (low, low, static_shape(dims, DEFAULT_MAX_BATCH))
    return profile


def axial_attention_nodes(model: onnx.ModelProto) -> list[str]:
    return [
        node.name or f"#{i}" for i, node in enumerate(model.graph.node) if node.op_type == OP_TYPE
    ]


def rewritten_layer_blocks(model: onnx.ModelProto) -> dict[str, str]:
    """'axial_attention_<n>' -> the model block it replaced ('layer1'), for per-layer profiles.

    The rewriter names its nodes by number; the block is the scope ('/layer1/...') of the
    nearest exporter-named node upstream of the AxialAttention node.
    """
    producer = producers(model.graph)
    blocks = {}
    for node in model.graph.node:
        if node.op_type != OP_TYPE or not node.name:
            continue
        current = node
        for _ in range(64):  # a few hops reach the block's own layers
            if not current.input or current.input[0] not in producer:
                break
            current = producer[current.input[0]]
            parts = [p for p in current.name.split("/") if p]
            if current.name.startswith("/") and len(parts) > 1:
                blocks[node.name] = parts[0]
                break
    return blocks


def describe_precision(model: onnx.ModelProto, fp16: bool, int8: bool) -> str:
    """What decides the engine's types: the graph (strongly typed) or the legacy flags."""
    if fp16 or int8:
        return "int8" if int8 else "fp16"
    ops = {node.op_type for node in model.graph.node}
    elem_types = {init.data_type for init in model.graph.initializer}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops:
        kind = "fp8 q/dq" if uses_fp8(model) else "int8 q/dq"
    elif onnx.TensorProto.FLOAT16 in elem_types or ("Cast" in ops and _casts_to_fp16(model)):
        kind = "fp16"
    else:
        kind = "fp32"
    return f"strongly-typed {kind}"


def _casts_to_fp16(model: onnx.ModelProto) -> bool:
    for node in model.graph.node:
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT16:
                    return True
    return False


def make_progress_monitor(trt: ModuleType, show: bool = True):
    """A `trt.IProgressMonitor` showing the builder's top-level phases as progress bars (builds of
    large models take minutes) and cancelling the build on Ctrl-C.

    Python handles SIGINT only when the builder calls back into Python, so a KeyboardInterrupt
    would be raised inside a callback, swallowed by the binding, and reported as a failed
    build. `_cancel_on_interrupt` sets `interrupted` instead; the next step cancels the build
    and the caller raises KeyboardInterrupt when it returns."""
    from axial_deploy.progress import progress_bar

    class ProgressMonitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.bars: dict = {}
            self.interrupted = False

        def phase_start(self, phase_name, parent_phase, num_steps):
            if show and parent_phase is None:  # nested phases would flood the terminal
                self.bars[phase_name] = progress_bar(total=num_steps, desc=phase_name, leave=False)

        def step_complete(self, phase_name, step):
            if phase_name in self.bars:
                self.bars[phase_name].update(1)
            return not self.interrupted  # False cancels the build

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return ProgressMonitor()


@contextlib.contextmanager
def _cancel_on_interrupt(monitor) -> Iterator[None]:
    """While building, Ctrl-C marks `monitor` interrupted (see make_progress_monitor)."""
    if monitor is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: setattr(monitor, "interrupted", True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class BuildOptions:
    backend: str = "tensorrt"
    plugin_library: str | os.PathLike | None = None
    serialize_plugin: bool = False
    shapes: Shapes = field(default_factory=dict)
    workspace_mb: int | None = None
    timing_cache: str | os.PathLike | None = None
    fp16: bool = False  # legacy, TensorRT 10 only
    int8: bool = False  # legacy, TensorRT 10 only
    calib_cache: str | os.PathLike | None = None
    progress: bool = False  # progress bars for the builder's phases
    # TensorRT-RTX: the GPU to build for ("8.9", "12.0"; default: RTX's portable set);
    # TensorRT always builds for the GPU it runs on
    compute_capability: str | None = None


def _parse(trt: ModuleType, parser, model_path: Path) -> None:
    if parser.parse_from_file(str(model_path)):
        return
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = ""
        if hasattr(error, "node_name") and error.node_name():
            where = f" at node {error.node_name()!r} ({error.node_operator()})"
        errors.append(f"{error.desc()}{where}")
    hint = ""
    if any("Plugin not found" in e for e in errors):
        hint = (
            f"\n{trt.__name__} has no layer or plugin for the node(s) above: re-export with "
            "a supported opset, or (AxialAttention) build with TensorRT and --plugins"
        )
    raise BuildError(f"the ONNX parser rejects {model_path}:\n  " + "\n  ".join(errors) + hint)


def build_engine(
    model_path: str | os.PathLike, output: str | os.PathLike, options: BuildOptions | None = None
) -> Manifest:
    """Builds `output` (and `output.json`, as one step) from an ONNX file; returns the
    manifest written."""
    options = options or BuildOptions()
    model_path, output = Path(model_path), Path(output)
    model = load_onnx(model_path, BuildError, load_external_data=False)
    nodes = axial_attention_nodes(model)
    _check_target(model, options)
    plugin = _checked_plugin(nodes, options)
    profile = resolve_profile(model, options.shapes)

    trt = import_backend(options.backend)
    # the parser stays referenced until the build ends: the network uses weights it owns
    builder, network, _parser = _parsed_network(trt, model_path, options, plugin if nodes else None)
    config, monitor = _builder_config(trt, builder, options, plugin if nodes else None)
    extra: dict = {}
    if nodes and (layer_blocks := rewritten_layer_blocks(model)):
        extra["layer_blocks"] = layer_blocks
    if options.compute_capability is not None:
        extra["compute_capability"] = options.compute_capability
    cache_path = _use_timing_cache(config, options, extra)
    trt_profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        trt_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(trt_profile)

    start = time.perf_counter()
    with _cancel_on_interrupt(monitor):
        serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if monitor is not None and monitor.interrupted:
        raise KeyboardInterrupt
    if serialized is None:
        raise BuildError(
            f"{options.backend} failed to build {model_path} (see the messages above); try a "
            "larger --workspace or narrower --shapes"
        )
    if cache_path is not None:
        with atomic_output(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))

    built = _Built(model_path, model, trt, network, profile, serialized, seconds, extra)
    manifest = _manifest(built, options, plugin, uses_plugin=bool(plugin and nodes))
    write_engine(serialized, manifest, output)
    return manifest


def _parsed_network(trt: ModuleType, model_path: Path, options: BuildOptions, plugin):
    """(builder, network, parser) with the ONNX graph parsed; `plugin` (None for graphs
    without AxialAttention nodes) is registered first so the parser maps those nodes."""
    legacy = options.fp16 or options.int8
    if legacy:
        require_tensorrt10(trt, "--fp16 / --int8", LEGACY_FIX, BuildError)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if plugin:
        try:
            register_plugin_library(trt, plugin)
        except NativeLibraryError as error:
            raise BuildError(str(error)) from error
        if hasattr(trt, "init_libnvinfer_plugins"):
            trt.init_libnvinfer_plugins(None, "")
    flags = 0 if legacy else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    _parse(trt, parser, model_path)
    return builder, network, parser


def _check_target(model: onnx.ModelProto, options: BuildOptions) -> None:
    """Refuses, before any work, an FP8 graph for a GPU without FP8: the RTX target given, else
    this machine's GPU (none: an RTX build targets its portable set, which drops GPUs without
    FP8 by itself)."""
    if options.compute_capability is not None and options.backend != "tensorrt-rtx":
        raise BuildError(
            "--compute-capability sets TensorRT-RTX's ahead-of-time target; TensorRT builds for "
            "the GPU it runs on: drop it or use --backend tensorrt-rtx"
        )
    if not uses_fp8(model):
        return
    if options.compute_capability is not None:
        sm, gpu = options.compute_capability, None
    else:
        _, gpu, sm = cuda_device_info()
    if sm is not None and (problem := fp8_support_problem(sm, gpu)):
        raise BuildError(f"FP8 graph: {problem}: quantize with --precision int8 or fp16")


def _rtx_compute_capability(trt: ModuleType, sm: str):
    """'8.9' -> trt.ComputeCapability.SM89 (TensorRT-RTX's builder-config target)."""
    major, minor = parse_sm(sm)
    value = getattr(trt.ComputeCapability, f"SM{major}{minor}", None)
    if value is None:
        known = [name[2:-1] + "." + name[-1] for name in trt.ComputeCapability.__members__
                 if name.startswith("SM")]  # fmt: skip
        raise BuildError(
            f"TensorRT-RTX {trt.__version__} cannot target compute capability {sm}: use one "
            f"of {', '.join(known)}"
        )
    return value


def _checked_plugin(nodes: list[str], options: BuildOptions) -> str | os.PathLike | None:
    """The plugin library the build uses (the default one for graphs that need it), after
    refusing option combinations that cannot build."""
    plugin = options.plugin_library
    refuse_plugin_graph(options.backend, nodes)
    if nodes and not plugin:
        plugin = locate(PLUGIN).path  # the package's or the checkout's, never the cwd's
    if nodes and not plugin:
        raise BuildError(
            f"the graph has {len(nodes)} AxialAttention node(s) ({', '.join(nodes[:5])}) and no "
            f"plugin library was found ({locate(PLUGIN).describe()}): {PLUGIN.build_hint}, "
            "or pass --plugins LIB"
        )
    if options.serialize_plugin and options.backend != "tensorrt":
        raise BuildError(
            "--serialize-plugin needs --backend tensorrt: TensorRT-RTX has no plugin layer"
        )
    if options.serialize_plugin and not nodes:
        raise BuildError(
            "--serialize-plugin: the graph has no AxialAttention nodes, so there is no plugin "
            "to serialize; drop the option (or build the graph from `axial-deploy rewrite`)"
        )
    if (options.fp16 or options.int8) and options.backend != "tensorrt":
        raise BuildError("--fp16 / --int8 are TensorRT 10 flags: TensorRT-RTX is strongly typed")
    if options.int8 and not options.calib_cache:
        raise BuildError(
            "--int8 needs --calib-cache (or a Q/DQ graph from `axial-deploy quantize`)"
        )
    return plugin


def _builder_config(trt: ModuleType, builder, options: BuildOptions, plugin):
    """The builder config of `options` (progress, workspace, legacy flags, plugin to serialize;
    `plugin` is None for graphs without AxialAttention nodes)."""
    config = builder.create_builder_config()
    monitor = None
    if hasattr(trt, "IProgressMonitor"):
        monitor = config.progress_monitor = make_progress_monitor(trt, show=options.progress)
    if options.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.fp16 or options.int8:
        _legacy_precision(trt, config, options)
    if plugin and options.serialize_plugin:
        _serialize_plugin(trt, config, plugin)
    if options.compute_capability is not None:  # TensorRT-RTX only (see _check_target)
        config.num_compute_capabilities = 1
        config.set_compute_capability(_rtx_compute_capability(trt, options.compute_capability), 0)
    return config, monitor


def _serialize_plugin(trt: ModuleType, config, plugin) -> None:
    """A version-compatible engine that carries the plugin library, as TensorRT documents it:
    IBuilderConfig::setPluginsToSerialize sets "the plugin libraries to be serialized with
    version-compatible engines" (NvInfer.h 10.x and 11.1; the ONNX parser's
    getUsedVCPluginLibraries says the same), so BuilderFlag.VERSION_COMPATIBLE goes with it
    (https://docs.nvidia.com/deeplearning/tensorrt/10.16.1/inference-library/version-compatibility.html).
    The lean runtime stays in the plan (EXCLUDE_LEAN_RUNTIME unset), so a later TensorRT runs
    it; loading such a plan needs IRuntime::setEngineHostCodeAllowed(true), which the runtime
    grants to exactly these engines (manifest.allows_engine_host_code)."""
    config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    config.plugins_to_serialize = [str(Path(plugin).resolve())]


def _legacy_precision(trt: ModuleType, config, options: BuildOptions) -> None:
    """TensorRT 10's weakly typed flags (removed in 11, see `tensorrt_api`)."""
    require_tensorrt10(trt, "--fp16 / --int8", LEGACY_FIX, BuildError)
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        from axial_deploy.calibration.cache import cache_calibrator

        # Its class follows the cache's algorithm: TensorRT ignores a cache of another one.
        config.int8_calibrator = cache_calibrator(trt, options.calib_cache)


def _use_timing_cache(config, options: BuildOptions, extra: dict) -> Path | None:
    """Reuse earlier builds' tactic timings (the cache is updated after the build); returns
    the cache's path, None where there is none or the backend has none (noted in `extra`)."""
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    if cache_path is not None and options.backend == "tensorrt-rtx":
        extra["timing_cache"] = (
            f"{cache_path} not used: TensorRT-RTX has no timing cache (it picks kernels when "
            "the engine loads on the GPU)"
        )
        return None
    if cache_path is not None:
        cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache_path


@dataclass
class _Built:
    """What one build produced, for its manifest."""

    model_path: Path
    model: onnx.ModelProto
    trt: ModuleType
    network: object
    profile: Shapes
    serialized: object
    seconds: float
    extra: dict


def _manifest(built: _Built, options: BuildOptions, plugin, *, uses_plugin: bool) -> Manifest:
    """The manifest of a build; `uses_plugin`: the graph has AxialAttention nodes."""
    trt = built.trt
    environment = running_environment(options.backend, trt, plugin)
    sm = environment.sm if options.backend == "tensorrt" else None  # RTX engines are portable
    profile = built.profile
    return Manifest(
        backend=options.backend,
        tensorrt_version=trt.__version__,
        cuda_version=environment.cuda_version,
        gpu_name=environment.gpu_name if options.backend == "tensorrt" else None,
        sm=sm,
        precision=describe_precision(built.model, options.fp16, options.int8),
        profiles=[{name: [list(s) for s in shapes] for name, shapes in profile.items()}],
        inputs=_tensors(trt, built.network, "input"),
        outputs=_tensors(trt, built.network, "output"),
        onnx_sha256=sha256_file(built.model_path),
        engine_sha256=hashlib.sha256(memoryview(built.serialized)).hexdigest(),  # as written
        plugin_library=str(plugin) if uses_plugin else None,
        plugin_sha256=environment.plugin_sha256 if uses_plugin else None,
        plugin_serialized=bool(uses_plugin and options.serialize_plugin),
        version_compatible=bool(uses_plugin and options.serialize_plugin),
        build_seconds=round(built.seconds, 3),
        extra=built.extra,
    )


def _tensors(trt: ModuleType, network, mode: str) -> list[TensorInfo]:
    count = network.num_inputs if mode == "input" else network.num_outputs
    get = network.get_input if mode == "input" else network.get_output
    tensors = []
    for i in range(count):
        tensor = get(i)
        dtype = trt.nptype(tensor.dtype).__name__
        tensors.append(TensorInfo(tensor.name, dtype, list(tensor.shape), mode))
    return tensors
