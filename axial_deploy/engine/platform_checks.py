"""Version mismatches `axial-deploy doctor` can see, as pure functions of what was probed.

`probe()` reads the machine (package versions, the CUDA driver's version, the Jetson release
file); `platform_checks(probe)` turns that into doctor lines, one per mismatch found (and one
line naming the JetPack release on a Jetson). The checks read nothing themselves, so the tests
feed them tables of probes.

Facts behind the checks (NVIDIA's documentation, looked up, not remembered):
- cuda-python 13.x needs a Linux driver 580.65.06 or later (a CUDA 13 driver), 12.x needs
  525.60.13 or later: https://nvidia.github.io/cuda-python/cuda-bindings/latest/install.html
  (and the 12.9.x page of the same site).
- JetPack 6.1 is Jetson Linux (L4T) R36.4 with CUDA 12.6 and TensorRT 10.3; JetPack 6.2.1 is
  L4T 36.4.4: https://docs.nvidia.com/jetson/jetpack/introduction (6.2.1),
  https://docs.nvidia.com/jetson/archives/jetpack-archived/jetpack-61/ (6.1). L4T R36.3 and
  R36.2 are JetPack 6.0 and 6.0 DP (https://docs.nvidia.com/jetson/jetpack/6.0DP/introduction/).
  The plugin needs JetPack 6.1 or later.
- JetPack 7.0 is L4T 38.2, 7.1 is 38.4 (https://developer.nvidia.com/embedded/jetpack/downloads/
  archive-7.0 and archive-7.1).
"""

from __future__ import annotations

import ctypes
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from axial_deploy.native import cuda_driver


@dataclass
class Check:
    """One doctor line (`axial_deploy.doctor` builds the rest; it lives here, below both)."""

    name: str
    ok: bool
    detail: str  # version / what was found
    fix: str = ""  # what to do when not ok
    required: bool = False  # the CPU flow (export, rewrite, verify, ONNX Runtime) needs it


TEGRA_RELEASE = Path("/etc/nv_tegra_release")
MIN_L4T = (36, 4)  # JetPack 6.1
# L4T release -> JetPack, for the doctor line (see the module docstring for the sources)
JETPACK_OF_L4T = {
    (36, 2): "6.0 DP",
    (36, 3): "6.0",
    (36, 4): "6.1/6.2",
    (38, 2): "7.0",
    (38, 4): "7.1",
}


@dataclass(frozen=True)
class Probe:
    numpy: str | None = None  # numpy version, None: not installed
    torch: str | None = None  # torch version, None: not installed / not importable
    torch_numpy_error: str | None = None  # torch.from_numpy's error, None: it works
    cuda_python: str | None = None  # cuda-python (or cuda-bindings) version
    driver_cuda: int | None = None  # cuDriverGetVersion, e.g. 12060; None: no driver
    tegra_release: str | None = None  # /etc/nv_tegra_release text; None: not a Jetson


def _major(version: str) -> int | None:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else None


def parse_l4t(text: str) -> tuple[int, int, int] | None:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> (36, 4, 3); None when unreadable."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def jetpack_check(tegra_release: str | None) -> Check | None:
    if tegra_release is None:
        return None
    l4t = parse_l4t(tegra_release)
    if l4t is None:
        return Check("JetPack", False, "unreadable /etc/nv_tegra_release", "reflash JetPack 6.1+")
    name = f"L4T R{l4t[0]}.{l4t[1]}.{l4t[2]}"
    jetpack = JETPACK_OF_L4T.get(l4t[:2])
    detail = f"{name} (JetPack {jetpack})" if jetpack else name
    if l4t[:2] < MIN_L4T:
        return Check(
            "JetPack",
            False,
            f"{detail} is older than JetPack 6.1",
            "the AxialAttention plugin needs JetPack 6.1 (L4T R36.4: TensorRT 10.3, CUDA 12.6) "
            "or later: flash a newer JetPack (docs/install/jetpack6.md)",
            required=True,
        )
    return Check("JetPack", True, detail)


def numpy_torch_check(probe: Probe) -> Check | None:
    """numpy 2 beside a torch built against numpy 1 (NVIDIA's JetPack 6 wheels): torch imports
    with a warning, then every torch.from_numpy fails."""
    if not (probe.numpy and probe.torch and probe.torch_numpy_error):
        return None
    if (_major(probe.numpy) or 0) < 2:
        return Check(
            "numpy / torch",
            False,
            f"torch {probe.torch} cannot exchange arrays with numpy {probe.numpy}: "
            f"{probe.torch_numpy_error}",
            "reinstall torch for this numpy",
            required=True,
        )
    return Check(
        "numpy / torch",
        False,
        f"numpy {probe.numpy} is installed but torch {probe.torch} was built against numpy 1 "
        f"({probe.torch_numpy_error})",
        "pip install 'numpy<2' (on JetPack 6: pip install -c constraints/jetpack6.txt ...)",
        required=True,
    )


def cuda_python_check(probe: Probe) -> Check | None:
    """A cuda-python whose CUDA major is newer than the driver's (cuda-python 13 on a CUDA 12
    driver): engines cannot run, `run` and `profile` fail at the first CUDA call."""
    if not (probe.cuda_python and probe.driver_cuda):
        return None
    wanted, driver = _major(probe.cuda_python), probe.driver_cuda // 1000
    if wanted is None or wanted <= driver:
        return None
    supports = f"{driver}.{probe.driver_cuda % 1000 // 10}"
    return Check(
        "cuda-python / driver",
        False,
        f"cuda-python {probe.cuda_python} needs a CUDA {wanted} driver; this driver supports "
        f"CUDA {supports}",
        f"pip install 'cuda-python=={driver}.*' (constraints/cuda{driver}.txt), or update the "
        f"driver (cuda-python 13: Linux driver 580.65.06 or later)",
        required=True,
    )


def platform_checks(probe: Probe) -> list[Check]:
    """The doctor lines for this probe: the JetPack release on a Jetson, and each mismatch."""
    found = [jetpack_check(probe.tegra_release), numpy_torch_check(probe), cuda_python_check(probe)]
    return [check for check in found if check is not None]


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _driver_cuda() -> int | None:
    """The CUDA version the installed driver supports, through libcuda directly (works without
    cuda-python, and whatever cuda-python is installed)."""
    try:
        libcuda = cuda_driver()
        version = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return version.value or None


def _torch_numpy() -> tuple[str | None, str | None]:
    """(torch version, torch.from_numpy's error or None); imports torch only when installed."""
    if _version("torch") is None:
        return None, None
    try:
        import numpy
        import torch

        torch.from_numpy(numpy.zeros(1))
    except ImportError:  # a broken torch: doctor's own torch line reports it
        return None, None
    except Exception as error:  # RuntimeError: Numpy is not available (numpy-1 builds)
        return getattr(sys.modules.get("torch"), "__version__", "?"), str(error).splitlines()[0]
    return torch.__version__, None


def probe() -> Probe:
    torch_version, error = _torch_numpy()
    tegra = TEGRA_RELEASE.read_text(errors="replace") if TEGRA_RELEASE.is_file() else None
    return Probe(
        numpy=_version("numpy"),
        torch=torch_version,
        torch_numpy_error=error,
        cuda_python=_version("cuda-python", "cuda-bindings"),
        driver_cuda=_driver_cuda(),
        tegra_release=tegra,
    )
