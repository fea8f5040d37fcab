"""`axial-deploy doctor`: what this machine can do, and what to install for the rest."""

from __future__ import annotations

import importlib
from pathlib import Path

from axial_deploy.engine.backends import Gpu, installed_backends, local_gpus, runnable_backends
from axial_deploy.engine.build import fp8_support_problem
from axial_deploy.engine.environment import cuda_device_info
from axial_deploy.engine.platform_checks import Check  # the doctor line, defined below doctor
from axial_deploy.native import (
    CALIBRATION,
    CPU_OP,
    PLUGIN,
    NativeLibrary,
    NativeLibraryError,
    load,
    locate,
)


def _module(name: str, label: str, fix: str, required: bool = False) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as error:  # ImportError, or a broken install's OSError
        return Check(
            label, False, f"not importable ({type(error).__name__}: {error})", fix, required
        )
    version = getattr(module, "__version__", None)
    if version is None:  # e.g. cuda.bindings: the distribution knows its version
        from importlib import metadata

        try:
            version = metadata.version(name.split(".")[0] + "-python")
        except metadata.PackageNotFoundError:
            version = "installed"
    return Check(label, True, version, required=required)


def _plugin_library(given: str | Path | None) -> Check:
    """The plugin library given, else the one the resolver finds (never the current folder's);
    loaded only when it exists, since loading a library runs its code."""
    label, fix = "plugin library", PLUGIN.build_hint
    found = locate(PLUGIN)
    path, where = (Path(given), "--plugins") if given else (found.path, found.source)
    if path is None or not path.is_file():
        return Check(label, False, f"{path} not found" if path else found.describe(), fix)
    try:
        load(PLUGIN, path.resolve())
    except NativeLibraryError as error:
        return Check(
            label, False, f"{path} ({where}) does not load: {error.__cause__ or error}", fix
        )
    return Check(label, True, f"{path} ({where}) loads")


def _kernel_library() -> Check:
    """The C ABI library as `axial_deploy.op.kernel` loads it: $AXIAL_DEPLOY_KERNEL_LIB or
    build/lib, with its ABI version checked."""
    fix = "make plugins (needs CMake >= 3.25 and nvcc)"
    try:
        from axial_deploy.op.kernel import library_path, load_library

        load_library()
    except (ImportError, ValueError) as error:  # KernelLibraryError is a ValueError
        return Check("kernel library", False, str(error), fix)
    return Check("kernel library", True, f"{library_path()} loads")


def _found(library: NativeLibrary) -> Check:
    """Where a CPU library was found (not loaded here: its users load and check it)."""
    found = locate(library)
    name = library.filename.removeprefix("lib").removesuffix(".so")
    return Check(name, found.path is not None, found.describe(), library.build_hint)


def backend_checks(gpus: list[Gpu], installed: set[str]) -> list[Check]:
    """Per local GPU, which engine backends can run engines there (`backends` decides)."""
    if not gpus:
        return [
            Check(
                "engine backends",
                False,
                "no GPU: engines cannot run here (tensorrt-rtx can still build them ahead of time)",
                "run engines on an NVIDIA GPU; here use .onnx models (ONNX Runtime)",
            )
        ]
    checks = []
    for index, gpu in enumerate(gpus):
        verdicts = runnable_backends(gpu, installed)
        usable = [backend for backend, why in verdicts.items() if why is None]
        parts = [f"{b}: {'yes' if why is None else 'no, ' + why}" for b, why in verdicts.items()]
        checks.append(
            Check(
                f"engine backends GPU {index}",
                bool(usable),
                f"{gpu.name} (SM {gpu.sm}): " + "; ".join(parts),
                "pip install tensorrt (it runs on this GPU)",
            )
        )
    return checks


def run_checks(plugin_library: str | Path | None = None) -> list[Check]:
    checks = [
        # torch: export, train, the zoo, deploy; the deploy side runs without it
        _module("torch", "torch", "pip install 'axial-deploy[torch]' (export, train, zoo, deploy)"),
        _module("onnxruntime", "ONNX Runtime", "pip install onnxruntime", True),
        _module(
            "onnxruntime_extensions",
            "onnxruntime-extensions",
            "pip install onnxruntime-extensions (runs AxialAttention nodes in ONNX Runtime)",
            True,
        ),
        _module(
            "tensorrt",
            "TensorRT",
            "pip install tensorrt on a machine with an NVIDIA driver (engines with the "
            "AxialAttention plugin need it)",
        ),
        _module(
            "tensorrt_rtx",
            "TensorRT-RTX",
            "pip install 'axial-deploy[rtx]' (builds plugin-free engines, also on CPU-only hosts)",
        ),
        _module("cuda.bindings.runtime", "cuda-python", "pip install 'axial-deploy[gpu]'"),
    ]
    cuda, gpu, sm = cuda_device_info()
    checks.append(
        Check(
            "CUDA runtime",
            cuda is not None,
            f"CUDA {cuda}" if cuda else "unknown",
            "install cuda-python and an NVIDIA driver",
        )
    )
    checks.append(
        Check(
            "GPU",
            gpu is not None,
            f"{gpu} (SM {sm})" if gpu else "none found",
            "engines run on an NVIDIA GPU; on this machine use .onnx models (ONNX Runtime) or "
            "build engines ahead of time with --backend tensorrt-rtx",
        )
    )
    if sm is not None:  # FP8 engines: said in one line, before the libraries
        problem = fp8_support_problem(sm, gpu)
        checks.append(
            Check(
                "FP8",
                problem is None,
                problem or f"{gpu} (SM {sm}) runs FP8 engines",
                "deploy this GPU with --precision int8 or fp16",
            )
        )
    checks += backend_checks(local_gpus(), installed_backends())
    checks.append(_kernel_library())
    checks.append(_plugin_library(plugin_library))
    checks += [_found(library) for library in (CPU_OP, CALIBRATION)]
    # version mismatches (numpy/torch, cuda-python/driver, JetPack): lines only where one is seen
    from axial_deploy.engine.platform_checks import platform_checks, probe

    checks += platform_checks(probe())
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "--  ")
        lines.append(f"[{mark}] {check.name:<24} {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"       {'':<24} -> {check.fix}")
    return "\n".join(lines)
