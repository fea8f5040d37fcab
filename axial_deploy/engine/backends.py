"""Which engine backend can run on which GPU: the `auto` choice and `doctor`'s per-GPU report.

TensorRT-RTX runs only on the GPUs of its support matrix, by compute capability and platform:
https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/support-matrix-1/1.5.html
(Turing 7.5, Ampere 8.6, Ada Lovelace 8.9, Blackwell 12.0 and 12.1; Linux x86-64 and Windows x64).
So A100 (8.0), H100/H200 (9.0), B200 (10.0), Jetson Orin (8.7) and Thor (11.0) are outside
it, while RTX 30/40/50 cards and data-center parts of a listed capability (A10 8.6, L4 8.9) are
in. TensorRT itself runs on the GPU it built an engine on, and only it hosts the
AxialAttention plugin.

The decision is a pure function of (local GPUs, installed backends), so it is tested here
with a table of GPUs; `local_gpus()` and `installed_backends()` read this machine.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from axial_deploy.engine.environment import BACKENDS, BuildError, import_backend

RTX_SUPPORT_MATRIX = (
    "https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/"
    "support-matrix-1/1.5.html"
)
# compute capability -> architecture, as the matrix's "Supported Hardware" table lists them
RTX_COMPUTE_CAPABILITIES = {
    "7.5": "Turing",
    "8.6": "Ampere",
    "8.9": "Ada Lovelace",
    "12.0": "Blackwell",
    "12.1": "Blackwell",
}
# the matrix's platforms ("Linux x86-64", "Windows x64"), as platform.system()-machine() says
RTX_PLATFORMS = {"Linux-x86_64": "Linux x86-64", "Windows-AMD64": "Windows x64"}


@dataclass(frozen=True)
class Gpu:
    name: str
    sm: str  # compute capability "major.minor", e.g. "8.6"
    platform: str = "Linux-x86_64"  # platform.system()-platform.machine() of the host


def rtx_refusal(gpu: Gpu) -> str | None:
    """Why TensorRT-RTX cannot run engines on `gpu` (None: it can), per its support matrix."""
    if gpu.platform not in RTX_PLATFORMS:
        return (
            f"{gpu.platform} is not a TensorRT-RTX platform (Linux x86-64, Windows x64; "
            f"{RTX_SUPPORT_MATRIX})"
        )
    if gpu.sm not in RTX_COMPUTE_CAPABILITIES:
        listed = ", ".join(RTX_COMPUTE_CAPABILITIES)
        return (
            f"SM {gpu.sm} is not in the TensorRT-RTX support matrix (SM {listed}; "
            f"{RTX_SUPPORT_MATRIX})"
        )
    return None


def runnable_backends(gpu: Gpu, installed: set[str]) -> dict[str, str | None]:
    """backend -> None where it can run engines on `gpu`, else why not (one phrase)."""
    result: dict[str, str | None] = {}
    for backend in BACKENDS:
        if backend not in installed:
            result[backend] = "not installed"
        elif backend == "tensorrt-rtx":
            result[backend] = rtx_refusal(gpu)
        else:
            result[backend] = None
    return result


def choose_auto(gpus: list[Gpu], installed: set[str]) -> tuple[str | None, str]:
    """(backend, why) for `--backend auto`, or (None, a one-line explanation).

    TensorRT first where there is a GPU (it builds for that GPU and hosts the plugin); else
    TensorRT-RTX when GPU 0 (the one engines run on) is in its support matrix, or when there is
    no GPU (it compiles ahead of time on a CPU-only host; the engine runs later on a supported
    GPU); else nothing, saying why.
    """
    gpu = gpus[0] if gpus else None
    if gpu is not None and "tensorrt" in installed:
        return "tensorrt", f"TensorRT on {gpu.name} (SM {gpu.sm})"
    if "tensorrt-rtx" in installed:
        if gpu is None:
            return "tensorrt-rtx", (
                "TensorRT-RTX, ahead of time (no GPU here; its engines run on the GPUs of "
                f"its support matrix, {RTX_SUPPORT_MATRIX})"
            )
        refusal = rtx_refusal(gpu)
        if refusal is None:
            return "tensorrt-rtx", f"TensorRT-RTX on {gpu.name} (SM {gpu.sm})"
        return None, (
            f"engine step skipped: TensorRT-RTX cannot run on {gpu.name}: {refusal}; install "
            "TensorRT (pip install tensorrt) to build engines for this GPU"
        )
    if "tensorrt" in installed:
        return None, (
            "engine step skipped: TensorRT needs a GPU to build and none is found here; "
            "pip install 'axial-deploy[rtx]' to build ahead of time with TensorRT-RTX"
        )
    return None, (
        "engine step skipped: neither TensorRT nor TensorRT-RTX is installed (pip install "
        "tensorrt on a GPU machine, or pip install 'axial-deploy[rtx]')"
    )


def installed_backends() -> set[str]:
    """The backends whose Python module imports here."""
    found = set()
    for backend in BACKENDS:
        try:
            import_backend(backend)
        except BuildError:
            continue
        found.add(backend)
    return found


def local_gpus() -> list[Gpu]:
    """This machine's CUDA GPUs through cuda-python ([] without it, a driver or a GPU)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return []
    host = f"{platform.system()}-{platform.machine()}"
    gpus = []
    try:
        err, count = cudart.cudaGetDeviceCount()
        for index in range(count if err == 0 else 0):
            err, props = cudart.cudaGetDeviceProperties(index)
            if err == 0:
                name = props.name.decode(errors="replace").rstrip("\0")
                gpus.append(Gpu(name, f"{props.major}.{props.minor}", host))
    except Exception:  # a missing driver surfaces as assorted runtime errors
        return gpus
    return gpus
