#!/usr/bin/env python3
"""Print the one wheel in a folder that this Python can install, e.g. the TensorRT tar
package's Python bindings:

    python3 deploy/select_wheel.py "$TENSORRT_ROOT/python" tensorrt

The tar package ships one `tensorrt-<version>-cp3XY-none-linux_<arch>.whl` per Python version
(and tensorrt_lean / tensorrt_dispatch ones beside them), so a `pip install .../tensorrt-*.whl`
glob hands pip every one of them and pip stops at the first that is "not a supported wheel on
this platform". This picks by the wheel file name's tags (PEP 427: name-version[-build]-python-
abi-platform.whl) against the running interpreter. Standard library only: it runs before
anything is installed. Exit status 1, with the reason on stderr, when none or several match.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path


class NoWheelError(Exception):
    pass


def _normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def wheel_tags(filename: str) -> tuple[str, set[str], set[str], set[str]] | None:
    """(distribution, python tags, abi tags, platform tags) of a wheel file name, or None."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    python, abi, plat = parts[-3:]
    return _normalize(parts[0]), set(python.split(".")), set(abi.split(".")), set(plat.split("."))


def supported(
    tags: tuple[str, set[str], set[str], set[str]], version: tuple[int, int], machine: str
) -> bool:
    """Whether a CPython `version` on Linux `machine` can install a wheel with these tags."""
    _, python, abi, plat = tags
    cp = f"cp{version[0]}{version[1]}"
    python_ok = bool(python & {cp, f"py{version[0]}", f"py{version[0]}{version[1]}"})
    abi_ok = bool(abi & {"none", "abi3", cp})
    plat_ok = "any" in plat or any(p.startswith(("linux_", "manylinux")) and
                                   p.endswith("_" + machine) for p in plat)  # fmt: skip
    return python_ok and abi_ok and plat_ok


def select_wheel(
    folder: str | Path,
    distribution: str,
    version: tuple[int, int] | None = None,
    machine: str | None = None,
) -> Path:
    """The single wheel of `distribution` in `folder` for this (or the given) Python/machine."""
    folder = Path(folder)
    version = version or (sys.version_info.major, sys.version_info.minor)
    machine = machine or platform.machine()
    if not folder.is_dir():
        raise NoWheelError(f"{folder} is not a folder (give the tar package's python/ folder)")
    wanted = _normalize(distribution)
    candidates = {}
    for path in sorted(folder.glob("*.whl")):
        tags = wheel_tags(path.name)
        if tags is not None and tags[0] == wanted:
            candidates[path] = tags
    matches = [p for p, t in candidates.items() if supported(t, version, machine)]
    python = f"Python {version[0]}.{version[1]} on {machine}"
    if not matches:
        found = ", ".join(p.name for p in candidates) or "none"
        raise NoWheelError(
            f"no {distribution} wheel in {folder} for {python} (found: {found}): use a Python "
            "the package ships a wheel for, or the matching TensorRT package"
        )
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise NoWheelError(f"several {distribution} wheels fit {python}: {names}")
    return matches[0]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: select_wheel.py FOLDER DISTRIBUTION", file=sys.stderr)
        return 2
    try:
        print(select_wheel(args[0], args[1]))
    except NoWheelError as error:
        print(f"select_wheel: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
