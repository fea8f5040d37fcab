"""Writing artifacts: a stage's output file appears complete or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx loads in load_onnx: `axial-deploy --help` imports this module
    import onnx


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


def load_onnx(
    path: str | os.PathLike,
    error: type[ValueError] = ValueError,
    label: str = "model",
    load_external_data: bool = True,
) -> onnx.ModelProto:
    """Reads a stage's input ONNX file; a missing, unreadable or empty file raises `error`
    (the stage's own ValueError subclass) with a message naming the file and its `label`.
    `load_external_data=False` reads the graph only (weights in external files stay out)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise error(f"no such file: {label} {path}")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf raises several types for a corrupt file
        raise error(f"{path} is not a readable ONNX model: {exc}") from exc
    if not model.graph.node:
        raise error(f"{path} is not an ONNX model with a graph (no nodes)")
    return model
