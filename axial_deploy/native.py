"""Where the toolkit's native libraries are found and how they are opened: one resolver and
one loader (`load`, which checks the library's ABI version) for every caller.

Order: the library's environment variable, then the installed package (`axial_deploy/lib/`,
where the package build puts what it compiled), then the checkout this package runs from
(`<checkout>/build/lib/`, what `make plugins` builds). Never the current working directory:
a library planted there must not run because a command was started from that folder.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from axial_deploy.errors import AxialDeployError

PACKAGE_DIR = Path(__file__).resolve().parent


class NativeLibraryError(AxialDeployError, ValueError):
    """A native library that is missing or does not load."""


@dataclass(frozen=True)
class NativeLibrary:
    name: str  # what it is, for messages
    filename: str
    env: str  # environment variable that names the file explicitly
    build_hint: str  # how to get it
    # The library's int32 function returning its ABI version, and the version this package's
    # bindings expect (None: no ABI of ours to check, e.g. the TensorRT plugin's getCreators).
    abi_symbol: str | None = None
    abi_version: int | None = None


KERNEL = NativeLibrary(
    "AxialAttention kernel library (C ABI)",
    "libaxial_attention_capi.so",
    "AXIAL_DEPLOY_KERNEL_LIB",
    "build it with `make plugins` (CMake >= 3.25 and nvcc) or install the package on a machine "
    "with nvcc",
    "axial_attention_abi_version",
    1,  # AXIAL_ATTENTION_ABI_VERSION of plugins/axial_attention/axialAttentionKernel.h
)
PLUGIN = NativeLibrary(
    "AxialAttention TensorRT plugin library",
    "libaxial_attention_plugin.so",
    "AXIAL_DEPLOY_PLUGIN_LIB",
    "build it with `make plugins` on a machine with nvcc and TensorRT",
)


CPU_OP = NativeLibrary(
    "AxialAttention CPU op library (ONNX Runtime custom op)",
    "libaxial_attention_cpu.so",
    "AXIAL_DEPLOY_CPU_LIB",
    "build it with `make cpu-libs` in a checkout (CMake >= 3.25, a C++17 compiler), or reinstall "
    "the package without AXIAL_DEPLOY_NATIVE=OFF; without it the Python fallback runs",
    "axial_attention_cpu_abi_version",
    # AXIAL_ATTENTION_CPU_ABI_VERSION * 1000 + AXIAL_ATTENTION_ABI_VERSION (axialAttentionCpu.h)
    1001,
)
CALIBRATION = NativeLibrary(
    "calibration histogram library",
    "libaxial_calibration.so",
    "AXIAL_DEPLOY_CALIBRATION_LIB",
    "build it with `make cpu-libs` in a checkout (CMake >= 3.25, a C++17 compiler), or reinstall "
    "the package without AXIAL_DEPLOY_NATIVE=OFF; without it the Python fallback runs",
    "axial_calibration_abi_version",
    1,  # AXIAL_CALIBRATION_ABI_VERSION of calibration/csrc/calibrationHistogram.h
)


class ParamsStruct(ctypes.Structure):
    """AxialAttentionParams of the C ABI (plugins/axial_attention/axialAttentionKernel.h), shared
    by the CUDA library (kernel.py) and the CPU op library (ort_ops.py)."""

    _fields_ = [
        (name, ctypes.c_int32)
        for name in ("batch", "height", "width", "axis", "num_heads", "key_depth", "value_depth",
                     "span", "table_length", "dtype")
    ]  # fmt: skip


class TablesStruct(ctypes.Structure):
    """AxialAttentionTables: device (CUDA) or host (CPU) pointers to the five float32 tables."""

    _fields_ = [
        (name, ctypes.c_void_p) for name in ("rel_q", "rel_k", "rel_v", "logit_scale", "out_bias")
    ]


@dataclass(frozen=True)
class Found:
    path: Path | None  # None: not found
    source: str  # "$VAR", "installed package", "checkout build/", or "not found"
    candidates: list[Path] = field(default_factory=list)  # everywhere it was looked for

    def describe(self) -> str:
        if self.path is None:
            return "not found (looked in " + ", ".join(map(str, self.candidates)) + ")"
        return f"{self.path} ({self.source})"


def candidates(library: NativeLibrary) -> list[tuple[str, Path]]:
    """(source, path) in search order."""
    places = []
    override = os.environ.get(library.env)
    if override:
        places.append((f"${library.env}", Path(override).expanduser().absolute()))
    places.append(("installed package", PACKAGE_DIR / "lib" / library.filename))
    checkout = PACKAGE_DIR.parent
    if (checkout / "CMakeLists.txt").is_file():  # running from a source checkout
        places.append(("checkout build/", checkout / "build" / "lib" / library.filename))
    return places


def locate(library: NativeLibrary) -> Found:
    """The first existing file in search order. An environment override that names a missing
    file is reported as that (not silently skipped): the user asked for that file."""
    places = candidates(library)
    for source, path in places:
        if path.is_file() or source.startswith("$"):
            return Found(path if path.is_file() else None, source, [path])
    return Found(None, "not found", [path for _, path in places])


def library_path(library: NativeLibrary) -> Path:
    """Where `locate` finds `library`, else the first place it looked (for the message)."""
    found = locate(library)
    return found.path or found.candidates[0]


def load(
    library: NativeLibrary,
    path: str | os.PathLike | None = None,
    error: type[Exception] = NativeLibraryError,
) -> ctypes.CDLL:
    """The one loader of the toolkit's native libraries: opens `library` (at `path`, default:
    where `locate` finds it) and checks its ABI version. Raises `error` (a NativeLibraryError
    unless the caller names its own) with one line naming the file, the problem (missing, does
    not load, not this library, stale) and the fix. Each file is opened and checked once; the
    caller declares the signatures of the functions it calls."""
    path = Path(path) if path is not None else library_path(library)
    try:
        return _load(library, path.absolute())
    except NativeLibraryError as failure:
        if error is NativeLibraryError:
            raise
        raise error(str(failure)) from failure


@functools.cache
def _load(library: NativeLibrary, path: Path) -> ctypes.CDLL:
    if not path.is_file():
        raise NativeLibraryError(
            f"{library.name} not found at {path}: {library.build_hint} (or set {library.env} "
            f"to a built {library.filename})"
        )
    try:
        lib = ctypes.CDLL(str(path))  # RTLD_LOCAL (ctypes' default): its symbols stay private
    except OSError as failure:
        raise NativeLibraryError(
            f"cannot load the {library.name} {path}: {failure}; {library.build_hint}"
        ) from failure
    if library.abi_symbol is None:
        return lib
    try:
        version_of = getattr(lib, library.abi_symbol)
    except AttributeError:
        raise NativeLibraryError(
            f"{path} is not the {library.name}: it has no {library.abi_symbol}(); "
            f"{library.build_hint}"
        ) from None
    version_of.restype, version_of.argtypes = ctypes.c_int32, []
    version = version_of()
    if version != library.abi_version:
        raise NativeLibraryError(
            f"{path} has ABI version {version}, this package expects {library.abi_version}: the "
            f"library is stale; {library.build_hint}"
        )
    return lib


CUDA_DRIVER = "libcuda.so.1"  # the NVIDIA driver's CUDA library, by its soname


def cuda_driver() -> ctypes.CDLL:
    """The NVIDIA driver's CUDA library: a system library that the dynamic loader finds, with
    no ABI of ours to check. A new handle per call (callers set their own restypes); OSError
    when there is no driver."""
    return ctypes.CDLL(CUDA_DRIVER)


PLUGIN_CREATOR = ("AxialAttention", "1", "axial_deploy")  # name, version, namespace


def plugin_registered(trt) -> bool:
    """Whether `trt`'s plugin registry holds the AxialAttention creator. Looked for in
    `all_creators`: `get_creator` of a missing creator logs an API-usage error."""
    return any(
        (creator.name, creator.plugin_version, creator.plugin_namespace) == PLUGIN_CREATOR
        for creator in trt.get_plugin_registry().all_creators
    )


def register_plugin_library(trt, path: str | os.PathLike) -> None:
    """Makes the AxialAttention creator available in `trt`'s plugin registry; idempotent.

    IPluginRegistry::loadLibrary fails when one of the library's creators is already
    registered (a second load in one process, or a library another consumer opened), so the
    registry is asked first and loadLibrary runs only when the creator is absent; a None from
    loadLibrary with the creator then present is success. Not loaded RTLD_GLOBAL (that would
    put the library's symbols in front of every later-loaded library's). A failure says why: a
    preliminary private load (RTLD_LOCAL) gets the dynamic loader's message, e.g. a missing
    dependency, which TensorRT's registry does not report.
    """
    path = Path(path)
    if not path.is_file():
        raise NativeLibraryError(f"plugin library {path} not found: build it with `make plugins`")
    if plugin_registered(trt):
        return
    resolved = str(path.resolve())
    try:
        ctypes.CDLL(resolved)  # RTLD_LOCAL (ctypes' default); may register on open (the plugin)
    except OSError as error:
        raise NativeLibraryError(f"cannot load plugin library {path}: {error}") from error
    try:
        handle = trt.get_plugin_registry().load_library(resolved)
    except RuntimeError as error:
        raise NativeLibraryError(f"TensorRT cannot load plugin library {path}: {error}") from error
    if handle is None and not plugin_registered(trt):
        raise NativeLibraryError(
            f"TensorRT cannot load plugin library {path} (see TensorRT's messages above): "
            "it must export getCreators and the AxialAttention creator; rebuild it with "
            "`make plugins`"
        )
