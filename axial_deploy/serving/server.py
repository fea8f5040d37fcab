"""`axial-deploy serve`: a real Triton Inference Server (PyTriton's bundled `tritonserver`)
serving a model through `runtime.Engine`.

Triton owns the network side: HTTP/gRPC endpoints, the dynamic batcher, health/ready
endpoints, statistics and Prometheus metrics. PyTriton forwards each batch Triton forms to a
Python callable in this process; ours feeds it to an `Engine` (ONNX Runtime on a CPU,
TensorRT on a GPU), one engine per Triton model instance. With `panoptic=True` a second model,
`NAME_panoptic`, takes a raw uint8 RGB image and returns COCO segment ids and segments_info.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axial_deploy.extras import require
from axial_deploy.serving import ServeError
from axial_deploy.serving.pipeline import PanopticSettings, PanopticStep, preprocess_image

# Endpoints that need PyTriton's access token. Statistics stay open (read-only, like the
# metrics port) so load tests and dashboards can read the batcher's histogram.
RESTRICTED_ENDPOINTS = ["shared-memory", "model-repository", "trace", "logging"]


@dataclass
class ServeSettings:
    model: str  # .engine / .onnx path, or a zoo name with shipped weights
    name: str = "axial"  # Triton model name
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    queue_delay_us: int = 2000
    preferred_batch: list[int] = field(default_factory=list)
    instances: int = 1
    panoptic: PanopticSettings | None = None  # also serve NAME_panoptic
    input_size: tuple[int, int] | None = None  # for zoo models (default: the trained size)
    drain_timeout_s: int = 30  # Triton's --exit-timeout-secs
    startup_timeout_s: float = 120.0
    cuda: str = "cuda-python"
    plugins: str | None = None
    allow_remote: bool = False  # bind to a non-loopback host
    verbose: bool = False  # print Triton's log


def python_library_dir() -> str | None:
    """The directory of this interpreter's shared libpython (None for a static build)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and (Path(libdir) / soname).exists():
        return libdir
    return None


@contextlib.contextmanager
def libpython_first() -> Iterator[None]:
    """Puts this interpreter's libpython first on LD_LIBRARY_PATH while Triton starts.

    Why: Triton's Python-backend stub links `libpython3.X.so.1.0` by name; the dynamic linker
    otherwise finds the system's build, which differs from this interpreter's (e.g. pyenv)
    and breaks `multiprocessing` inside the stub ('_thread.RLock' object has no attribute
    '_recursion_count'), so the model never loads. PyTriton copies os.environ into the
    server's environment at start; the previous value is restored afterwards.
    """
    libdir = python_library_dir()
    previous = os.environ.get("LD_LIBRARY_PATH")
    if libdir:
        rest = [p for p in (previous or "").split(":") if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *rest])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = previous


def resolve_model(spec: str, workdir: Path, input_size: tuple[int, int] | None) -> Path:
    """An engine or ONNX path as is; a zoo name -> its shipped weights exported to ONNX (batch
    dynamic) in `workdir`."""
    path = Path(spec)
    if path.suffix in (".onnx", ".engine", ".plan"):
        if not path.is_file():
            raise ServeError(f"model file {path} not found")
        return path
    from axial_deploy.export import export_onnx
    from axial_deploy.models import create_model, list_models, pretrained_models, pretrained_record

    if spec not in list_models():
        raise ServeError(
            f"unknown model {spec!r}: give a .engine or .onnx file, or a zoo model with shipped "
            f"weights ({', '.join(pretrained_models())})"
        )
    if spec not in pretrained_models():
        raise ServeError(
            f"{spec} has no shipped weights: export it with trained weights "
            f"(`axial-deploy export --checkpoint ...`) and serve the .onnx file"
        )
    hw = tuple(input_size or pretrained_record(spec).input_size)
    model = create_model(spec, pretrained=True)
    return export_onnx(model, (1, 3, *hw), workdir / f"{spec}.onnx", dynamic="batch")


def _tensor_specs(metas, batching: bool):
    """PyTriton tensors: with batching, Triton's dims leave out the batch axis."""
    from pytriton.model_config import Tensor

    dims = (lambda shape: tuple(shape[1:])) if batching else tuple
    return [Tensor(name=m.name, dtype=np.dtype(m.dtype).type, shape=dims(m.shape)) for m in metas]


def _batching_of(engine, max_batch: int) -> bool:
    """Batch along axis 0 when every input's first axis is dynamic (or bounded by a profile
    that reaches `max_batch`); otherwise serve the model's fixed shapes unbatched."""
    if max_batch < 1:
        return False
    for meta in engine.inputs:
        if not meta.shape or meta.shape[0] >= 0:
            return False
        if meta.profile is not None and meta.profile[2][0] < max_batch:
            raise ServeError(
                f"--max-batch {max_batch} exceeds the engine's profile for {meta.name!r} "
                f"(max batch {meta.profile[2][0]}): lower --max-batch or rebuild the engine"
            )
    return True


def raw_infer_fn(engine) -> Callable:
    """Triton batch -> `engine.infer` -> outputs, cast to the declared dtypes."""
    from pytriton.decorators import batch

    dtypes = {m.name: np.dtype(m.dtype) for m in engine.outputs}

    @batch
    def infer(**inputs):
        outputs = engine.infer(inputs)
        return {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in outputs.items()}

    return infer


def panoptic_infer_fn(engine, step: PanopticStep) -> Callable:
    """uint8 images [N, H, W, 3] -> segment ids [N, H, W] int32 + segments_info JSON bytes."""
    from pytriton.decorators import batch

    meta = engine.inputs[0]
    hw = (int(meta.shape[2]), int(meta.shape[3]))

    @batch
    def infer(image):
        inputs = np.stack([preprocess_image(one, hw) for one in image]).astype(meta.dtype)
        outputs = engine.infer({meta.name: inputs})
        sizes = np.array([one.shape[:2] for one in image])
        results = step(outputs["semantic"], outputs["center"], outputs["offset"], sizes)
        segments = np.array([[json.dumps(s).encode()] for _, s in results], dtype=object)
        return {"panoptic": np.stack([ids for ids, _ in results]), "segments_info": segments}

    return infer


def _check_panoptic(engine) -> None:
    names = {m.name for m in engine.outputs}
    meta = engine.inputs[0]
    if len(engine.inputs) != 1 or {"semantic", "center", "offset"} - names:
        raise ServeError(
            "--panoptic needs a panoptic model (one image input; outputs semantic, center, "
            f"offset); this one has inputs {[m.name for m in engine.inputs]}, "
            f"outputs {sorted(names)}"
        )
    if len(meta.shape) != 4 or min(meta.shape[2:]) < 1:
        raise ServeError(
            f"--panoptic resizes images to the model's height and width, but input {meta.name!r} "
            f"{list(meta.shape)} has none fixed: export the model at a fixed size"
        )


def _model_config(settings: ServeSettings, batching: bool):
    from pytriton.model_config import DynamicBatcher, ModelConfig

    if not batching:
        return ModelConfig(batching=False)
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=settings.queue_delay_us,
        preferred_batch_size=list(settings.preferred_batch) or None,
    )
    return ModelConfig(max_batch_size=settings.max_batch, batcher=batcher)


def _engines(path: Path, settings: ServeSettings) -> list:
    """One Engine per Triton instance (a TensorRT context and stream are not shared)."""
    from axial_deploy.engine.runtime import Engine

    count = settings.instances
    return [Engine(path, cuda=settings.cuda, plugins=settings.plugins) for _ in range(count)]


def bind_models(triton, path: Path, settings: ServeSettings) -> list[str]:
    """Binds NAME (raw tensors) and, with panoptic settings, NAME_panoptic; returns the names."""
    from pytriton.model_config import Tensor

    engines = _engines(path, settings)
    batching = _batching_of(engines[0], settings.max_batch)
    triton.bind(
        model_name=settings.name,
        infer_func=[raw_infer_fn(engine) for engine in engines],
        inputs=_tensor_specs(engines[0].inputs, batching),
        outputs=_tensor_specs(engines[0].outputs, batching),
        config=_model_config(settings, batching),
        strict=True,
    )
    if settings.panoptic is None:
        return [settings.name]
    _check_panoptic(engines[0])
    step = PanopticStep(settings.panoptic)
    name = f"{settings.name}_panoptic"
    image_engines = _engines(path, settings)
    triton.bind(
        model_name=name,
        infer_func=[panoptic_infer_fn(engine, step) for engine in image_engines],
        inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))],
        outputs=[
            Tensor(name="panoptic", dtype=np.int32, shape=(-1, -1)),
            Tensor(name="segments_info", dtype=bytes, shape=(1,)),
        ],
        # Triton batches only requests of equal shape: same-size images share a batch.
        config=_model_config(settings, batching),
    )
    return [settings.name, name]


@dataclass
class RunningServer:
    """A started server: its endpoints, models and start time; `stop()` drains and stops."""

    triton: object
    models: list[str]
    http_url: str
    grpc_url: str
    metrics_url: str
    start_seconds: float
    workdir: tempfile.TemporaryDirectory
    log_file: Path | None = None  # Triton's log (None: printed, --verbose)

    def is_alive(self) -> bool:
        return self.triton.is_alive()

    def stop(self) -> None:
        """SIGINT to tritonserver, which finishes in-flight requests (up to the drain
        timeout) before it exits; then PyTriton's proxies and the workspace go."""
        try:
            self.triton.stop()
        finally:
            self.workdir.cleanup()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *_) -> None:
        self.stop()


def _check_settings(settings: ServeSettings) -> None:
    from axial_deploy.serving.client import is_loopback

    if not is_loopback(settings.host) and not settings.allow_remote:
        raise ServeError(
            f"--host {settings.host} is not a loopback address: pass --allow-remote to listen "
            "beyond this machine (behind your own network policy)"
        )
    ports = [settings.http_port, settings.grpc_port, settings.metrics_port]
    if len(set(ports)) != 3 or any(not 0 < p < 65536 for p in ports):
        raise ServeError(f"HTTP, gRPC and metrics ports must be 3 distinct ports, got {ports}")
    if settings.instances < 1:
        raise ServeError(f"--instances must be >= 1, got {settings.instances}")


def _triton_config(settings: ServeSettings, log_file: Path | None):
    """Triton's options; its log goes to `log_file` (None: to this process's stdout)."""
    from pytriton.triton import TritonConfig

    return TritonConfig(
        http_address=settings.host,
        http_port=settings.http_port,
        grpc_address=settings.host,
        grpc_port=settings.grpc_port,
        metrics_address=settings.host,
        metrics_port=settings.metrics_port,
        allow_cpu_metrics=True,
        exit_timeout_secs=settings.drain_timeout_s,
        log_verbose=1 if settings.verbose else 0,
        log_file=log_file,
    )


# Lines Triton logs as errors on every CPU-only start, which say nothing about the model.
_LOG_NOISE = ("CudaDriverHelper", "config modification time", "NVML", "DCGM")


def _read_log(triton, log_file: Path | None) -> str:
    if log_file is not None:
        return log_file.read_text(errors="replace") if log_file.is_file() else ""
    server = getattr(triton, "_triton_server", None)
    return server.logs() if server is not None else ""


def _load_error(triton, error: Exception, log_file: Path | None) -> ServeError:
    """Triton's own reasons for a failed start (its error lines), read before it stops. The
    log is written asynchronously, so the reasons are awaited briefly (bounded)."""
    reasons: list[str] = []
    for _ in range(20):
        log = _read_log(triton, log_file)
        reasons = [
            line.split("] ", 1)[-1].strip().strip('"')
            for line in log.splitlines()
            if line.startswith("E") and not any(noise in line for noise in _LOG_NOISE)
        ]
        if reasons:
            break
        time.sleep(0.1)
    detail = "".join(f"\n  {reason}" for reason in reasons[-3:])
    return ServeError(f"Triton did not start serving: {error}{detail}")


def start_server(settings: ServeSettings) -> RunningServer:
    """Starts Triton with the model(s) loaded and ready, or raises (EngineError for a model
    that cannot be opened, ServeError with Triton's reasons for one Triton refuses) within
    `startup_timeout_s`; never leaves a server running on failure."""
    _check_settings(settings)
    require("pytriton", "axial-deploy serve")
    from pytriton.triton import Triton, TritonSecurityConfig

    workdir = tempfile.TemporaryDirectory(prefix="axial-serve-")
    started = time.perf_counter()
    try:  # everything that can fail before Triton runs: the model, the engines, the config
        path = resolve_model(settings.model, Path(workdir.name), settings.input_size)
        security = TritonSecurityConfig(restricted_endpoints=list(RESTRICTED_ENDPOINTS))
        workspace = Path(workdir.name) / "pytriton"
        log_file = None if settings.verbose else Path(workdir.name) / "triton.log"
        triton = Triton(
            config=_triton_config(settings, log_file), security_config=security, workspace=workspace
        )
        models = bind_models(triton, path, settings)
    except BaseException:
        workdir.cleanup()
        raise
    try:
        with libpython_first():
            _run_bounded(triton, settings.startup_timeout_s)
    except BaseException as error:
        failure = _load_error(triton, error, log_file) if isinstance(error, Exception) else None
        triton.stop()
        workdir.cleanup()
        if failure is None:
            raise
        raise failure from error
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return RunningServer(
        triton,
        models,
        f"http://{host}:{settings.http_port}",
        f"grpc://{host}:{settings.grpc_port}",
        f"http://{host}:{settings.metrics_port}/metrics",
        time.perf_counter() - started,
        workdir,
        log_file,
    )


def _run_bounded(triton, timeout_s: float) -> None:
    """`triton.run()` (start + wait for the models) in this thread, stopped by a watchdog
    after `timeout_s`. Not in a helper thread: PyTriton starts tritonserver with
    PR_SET_PDEATHSIG, which the kernel fires when the *thread* that forked it ends."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        triton.stop()

    watchdog = threading.Timer(timeout_s, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        triton.run()
    except Exception as error:
        if expired.is_set():
            raise TimeoutError(f"the server was not ready after {timeout_s:.0f} s") from error
        raise
    finally:
        watchdog.cancel()
    if expired.is_set():
        raise TimeoutError(f"the server was not ready after {timeout_s:.0f} s")


def serve_until_signal(settings: ServeSettings, ready: Callable[[RunningServer], None]) -> int:
    """Serves until SIGTERM/SIGINT (then drains in-flight requests and returns 0) or until the
    server dies by itself (returns 1)."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(number, _frame) -> None:
        received.append(number)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = start_server(settings)
        try:
            ready(server)
            while not stop.wait(0.5):
                if not server.is_alive():
                    print("tritonserver exited unexpectedly", file=sys.stderr)
                    return 1
            print(f"{signal.Signals(received[0]).name}: draining in-flight requests", flush=True)
        finally:
            server.stop()
        return 0
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
