"""The public TensorRT headers the tests compile against (never in the repository): found
through $AXIAL_DEPLOY_TRT_HEADERS, which .ci/run sets where ../shared/third_party/tensorrt
exists. Versions are read from NvInferVersion.h, never from folder names."""

from __future__ import annotations

import os
import re
from pathlib import Path

HEADERS_ENV = "AXIAL_DEPLOY_TRT_HEADERS"


def header_version(include: Path) -> tuple[int, int, int] | None:
    """(major, minor, patch) of the headers in `include`; None when it holds none. Handles the
    plain `#define NV_TENSORRT_MAJOR 10` and the 10.x+ `TRT_MAJOR_ENTERPRISE` indirection."""
    path = include / "NvInferVersion.h"
    if not (include / "NvInferRuntime.h").is_file() or not path.is_file():
        return None
    defines = dict(re.findall(r"^#define\s+(\w+)\s+(\w+)", path.read_text(), re.MULTILINE))

    def value(name: str) -> int:
        seen = set()
        while name in defines and name not in seen:  # follow NV_ -> TRT_..._ENTERPRISE
            seen.add(name)
            name = defines[name]
        return int(name) if name.isdigit() else 0

    return value("NV_TENSORRT_MAJOR"), value("NV_TENSORRT_MINOR"), value("NV_TENSORRT_PATCH")


def include_folders() -> dict[tuple[int, int, int], Path]:
    """Every include folder under $AXIAL_DEPLOY_TRT_HEADERS by version: the variable names
    either one include folder or a folder of <version>/include folders."""
    root = os.environ.get(HEADERS_ENV)
    if not root:
        return {}
    candidates = [Path(root), *sorted(Path(root).glob("*/include"))]
    found = {}
    for include in candidates:
        version = header_version(include)
        if version is not None:
            found.setdefault(version, include)
    return found


def include_for(version: str) -> Path | None:
    """The include folder whose headers are `version` ("10.16", "10.3.0"): every component
    given must match."""
    wanted = tuple(int(part) for part in version.split("."))
    for found, include in include_folders().items():
        if found[: len(wanted)] == wanted:
            return include
    return None


def newest_include() -> Path | None:
    folders = include_folders()
    return folders[max(folders)] if folders else None
