"""Writing artifacts: a stage's output file appears complete or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a path in a fresh temporary folder beside `path`; on success moves what was
    written there into place, external data files first and the .onnx file last, so that
    `path` appears only complete. On failure nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield folder / path.name
        for written in sorted(folder.iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
