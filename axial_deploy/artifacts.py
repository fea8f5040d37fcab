"""Writing artifacts: a stage's output file appears complete or not at all."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx loads in load_onnx: `axial-deploy --help` imports this module
    import onnx

from axial_deploy.errors import AxialDeployError

# The largest batch and image side any option or record takes (flags, dataset records).
MAX_BATCH, MAX_SIDE = 256, 8192


class OutputPathError(AxialDeployError, ValueError):
    """An output path that cannot be written, or that would overwrite an input."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a path in a fresh temporary folder beside `path`; on success moves what was
    written there into place, external data files first and the .onnx file last, so that
    `path` appears only complete. On failure nothing is left behind; temporaries that a killed
    run left beside `path` are removed on the next write."""
    path = Path(path)
    folder = _temporary_folder(path)
    try:
        yield folder / path.name
        for written in sorted(folder.iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _temporary_folder(path: Path) -> Path:
    """A fresh hidden folder beside `path` named after this process (.NAME.PID.XXXX.tmp)."""
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        prefix = f".{path.name}.{os.getpid()}."
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    except OSError as error:
        raise OutputPathError(
            f"cannot write {path}: {error.strerror or error} ({error.filename or path.parent}); "
            "choose a writable output path"
        ) from None


def remove_stale_temporaries(path: Path) -> None:
    """Removes .NAME.PID.*.tmp folders beside `path` whose process no longer runs."""
    for folder in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = folder.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _check_writable(path: Path, label: str) -> None:
    """The cheap checks, before any work: not a folder, no file where a folder must be."""
    if path.is_dir():
        raise OutputPathError(f"cannot write {label} {path}: it is a folder; give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise OutputPathError(
                    f"cannot write {label} {path}: {parent} is "
                    f"{'a file' if not parent.is_dir() else 'not writable'}; choose another path"
                )
            return


def check_distinct(
    inputs: dict[str, object], outputs: dict[str, object], folders: tuple[str, ...] = ()
) -> None:
    """Refuses, before any work, outputs that would overwrite an input or each other, or
    that cannot be written (a folder, a file where a folder must be, no write permission).

    `inputs` and `outputs` map a label for the message (e.g. "-o", "--report") to a path or
    None (not given); `folders` names the outputs that are folders the command fills. Paths
    compare resolved (relative, absolute, through links, with `..` alike). Besides equal
    paths, an output inside an input folder (it would change that input), an input inside an
    output folder, and a file an ONNX input keeps its weights in are refused."""
    seen: dict[Path, str] = {}
    for label, value in inputs.items():
        if value is not None:
            seen.setdefault(Path(value).resolve(), label)
    read = dict(seen)
    for path, label in list(read.items()):
        if path.suffix == ".onnx" and path.is_file():
            for location in _external_data(path, outputs):
                seen.setdefault(location, f"the weights of {label}")
        if manifest_of(path).is_file():  # an engine's manifest is read with it
            seen.setdefault(manifest_of(path), f"the manifest of {label}")
    for label, value in outputs.items():
        if value is None:
            continue
        if label not in folders:
            _check_writable(Path(value), label)
        elif Path(value).is_file():
            raise OutputPathError(f"cannot write {label} {value}: it is a file; give a folder")
        resolved = Path(value).resolve()
        if resolved in seen:
            raise OutputPathError(
                f"{label} {value} is the same file as {seen[resolved]}: writing it would destroy "
                f"that file; choose another path for {label}"
            )
        for path, other in read.items():
            if path.is_dir() and resolved.is_relative_to(path):
                raise OutputPathError(
                    f"{label} {value} lies inside {other} {path}: writing it would change that "
                    f"input; choose a path outside it for {label}"
                )
            if label in folders and path.exists() and path.is_relative_to(resolved):
                raise OutputPathError(
                    f"{other} {path} lies inside the folder {label} {value}: writing that folder "
                    f"could destroy it; choose another folder for {label}"
                )
        seen[resolved] = label


def manifest_of(path: Path) -> Path:
    """ENGINE -> ENGINE.json (manifest.manifest_path, which imports nothing heavy either)."""
    return path.with_name(path.name + ".json")


def _external_data(model: Path, outputs: dict[str, object]) -> list[Path]:
    """The resolved external-data files of the ONNX input `model`, read only when an output
    lies in its folder (the graph is parsed without its weights)."""
    folder = model.parent
    if not any(v is not None and Path(v).resolve().parent == folder for v in outputs.values()):
        return []
    import onnx

    try:
        graph = onnx.load(str(model), load_external_data=False)
        return [(folder / p).resolve() for p in check_external_data(graph, model)]
    except Exception:  # an unreadable model: the stage's own reader names the problem
        return []


# Largest JSON record a reader takes: far above any record the toolkit writes (a COCO panoptic
# JSON of 5000 images is ~10 MB), far below what would exhaust memory when parsed.
MAX_JSON_BYTES = 512 * 2**20


def read_json(
    path: str | os.PathLike,
    error: type[Exception] = ValueError,
    what: str = "JSON file",
    fix: str = "",
    expect: type | None = dict,
):
    """Reads a JSON record (dataset record, report, manifest, COCO JSON): the one reader of
    JSON files. A missing file, undecodable bytes, invalid JSON, nesting too deep to parse or
    a top level that is not `expect` raises `error` with one line naming `what`, the file and
    `fix` (what to do)."""
    path = Path(path)
    tail = f"; {fix}" if fix else ""
    if not path.is_file():
        raise error(f"no such file: {what} {path}{tail}")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{what} {path} is larger than {MAX_JSON_BYTES >> 20} MiB{tail}")
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}{tail}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path} is not JSON text: byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start} is not UTF-8 (a binary file?){tail}"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(
            f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}{tail}"
        ) from None
    except RecursionError:  # [[[[... thousands deep: Python's parser recurses
        raise error(f"{what} {path} is nested too deeply to be a record{tail}") from None
    if expect is not None and not isinstance(document, expect):
        raise error(
            f"{what} {path} holds a JSON {_json_type(document)}, not {_json_name(expect)}{tail}"
        )
    return document


def _json_type(value) -> str:
    """The JSON name of a parsed value's type, without its article (a bool is no number)."""
    if isinstance(value, bool):
        return "boolean"
    return _json_name(type(value)).split(" ")[-1]


def _json_name(kind: type) -> str:
    names = {dict: "an object", list: "an array", str: "a string", int: "an integer",
             float: "a number", bool: "a boolean", type(None): "null"}  # fmt: skip
    return names.get(kind, kind.__name__)


def check_fields(
    record: dict,
    types: dict[str, tuple[type, ...]],
    *,
    path: str | os.PathLike,
    error: type[Exception] = ValueError,
    required: tuple[str, ...] = (),
    where: str = "",
    fix: str = "",
) -> dict:
    """Checks the keys of a JSON object read by `read_json`: each key of `required` present,
    each key of `types` present in `record` of one of its types (a bool is not an int, an int
    is a float). Raises `error` naming the file, the key and the expected type; returns
    `record`. `where` places nested objects, e.g. "annotation 3: "."""
    tail = f"; {fix}" if fix else ""
    if not isinstance(record, dict):
        raise error(f"{path}: {where}holds a JSON {_json_type(record)}, not an object{tail}")
    for key, allowed in types.items():
        if key not in record:
            continue
        value = record[key]
        if isinstance(value, bool):  # a bool is an int in Python, not in JSON
            ok = bool in allowed
        else:  # an int is a JSON number
            ok = isinstance(value, allowed) or (float in allowed and isinstance(value, int))
        if not ok:
            names = " or ".join(_json_name(t) for t in allowed)
            raise error(
                f"{path}: {where}key {key!r} must be {names}, not {_json_type(value)} "
                f"{json.dumps(value, default=str)[:40]}{tail}"
            )
    for key in required:
        if key not in record:
            names = " or ".join(_json_name(t) for t in types.get(key, ()))
            raise error(f"{path}: {where}missing key {key!r}{f' ({names})' if names else ''}{tail}")
    return record


def write_json(path: str | os.PathLike, document, indent: int | None = 2) -> Path:
    """Writes a JSON document atomically (values JSON cannot hold, e.g. paths, as strings);
    returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(document, indent=indent, default=str) + "\n")
    return Path(path)


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
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a corrupt file
        raise error(f"{path} is not a readable ONNX model: {exc}") from exc
    # Every parser that later opens `path` (ONNX Runtime, TensorRT, TensorRT-RTX) follows
    # these locations; some follow links out of the folder, so they are checked here first.
    check_external_data(model, path, error)
    if load_external_data:
        onnx.load_external_data_for_model(model, str(path.parent))
    if not model.graph.node:
        raise error(f"{path} is not an ONNX model with a graph (no nodes)")
    return model


def check_external_data(
    model: onnx.ModelProto, path: Path, error: type[ValueError] = ValueError
) -> list[Path]:
    """Every external-data file a model names must be a regular file inside the model's
    folder once links are resolved; otherwise `error` names the tensor and the location.
    Returns the locations (relative to the model's folder), each once, in order."""
    folder = path.parent.resolve()
    locations: list[Path] = []
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != tensor.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (path.parent / location).resolve()
        inside = target.is_relative_to(folder) and target != folder
        if not inside or not target.is_file():
            why = "leaves the model's folder" if not inside else "is not a regular file there"
            raise error(
                f"{path}: tensor {tensor.name} keeps its data in {location!r}, which {why}; "
                "external data must be plain files beside the model (re-save the model)"
            )
        if Path(location) not in locations:
            locations.append(Path(location))
    return locations


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of `graph` and of every subgraph (If, Loop, Scan)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def replace_folder(staging: Path, out: Path) -> None:
    """Moves the complete folder `staging` to `out`; an existing `out` is moved aside first and
    removed only once the new one is in place, so a failure never leaves neither."""
    if not out.exists():
        staging.rename(out)
        return
    aside = out.parent / f".{out.name}.{os.getpid()}.old"
    shutil.rmtree(aside, ignore_errors=True)
    out.rename(aside)
    try:
        staging.rename(out)
    except OSError:
        aside.rename(out)  # put the old one back
        raise
    shutil.rmtree(aside, ignore_errors=True)
