"""Issue 25: nothing a command writes can destroy what it reads, however its paths are spelled,
and engine + manifest are one unit at every instant of `build`'s writing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from test_hostile_input import conv_model

from axial_deploy.cli import COMMANDS, _load, build_parser, main
from axial_deploy.engine.manifest import (
    COMPLETE,
    NEW_PAIR,
    OLD_PAIR,
    manifest_path,
    pending_path,
    read_manifest,
    settle_pending,
    sha256_file,
)

DATA = Path(__file__).parent / "data"

# (argv with {w} where the written path goes, the input {w} is spelled to reach, the label the
# refusal names). Inputs are made by `workdir`; nothing runs past the check.
WRITTEN = [
    (["export", "--model", "axial26_tiny", "--checkpoint", "ck.pt", "-o", "{w}"], "ck.pt", "-o"),
    (["export", "--model", "axial26_tiny", "--checkpoint", "ck.data", "-o", "{w}"], "ck",
     "its external data"),
    (["rewrite", "m.onnx", "-o", "{w}"], "m.onnx", "-o"),
    (["rewrite", "m.onnx", "-o", "out.onnx", "--report", "{w}"], "m.onnx", "--report"),
    (["quantize", "m.onnx", "--precision", "fp16", "-o", "{w}"], "m.onnx", "-o"),
    (["quantize", "m.onnx", "--precision", "fp16", "-o", "q.onnx", "--report", "{w}"], "m.onnx",
     "--report"),
    (["quantize", "m.onnx", "--precision", "int8", "-o", "q.onnx", "--cache", "{w}"], "m.onnx",
     "--cache"),
    (["quantize", "m.calib", "--precision", "int8", "-o", "{w}"], "m.onnx", "--cache"),
    (["quantize", "m.onnx", "--precision", "int8", "-o", "q.onnx", "--max-drop", "1", "--data",
      "d", "--budget-record", "{w}"], "m.onnx", "--budget-record"),
    (["quantize", "q.budget.json", "--precision", "int8", "-o", "{w}", "--max-drop", "1",
      "--data", "d"], "q.onnx", "--budget-record"),
    (["quantize", "m.onnx", "--precision", "int8", "-o", "{w}", "--max-drop", "1", "--data",
      "d"], "d/q.onnx", "-o"),
    (["compare", "m.onnx", "m2.onnx", "--report", "{w}"], "m2.onnx", "--report"),
    (["build", "m.onnx", "-o", "{w}"], "m.onnx", "-o"),
    (["build", "e.engine.json", "-o", "{w}"], "e.engine", "the manifest"),
    (["build", "e.engine.json.pending", "-o", "{w}"], "e.engine", "the pending manifest"),
    (["build", "m.onnx", "-o", "new.engine", "--timing-cache", "{w}"], "m.onnx",
     "--timing-cache"),
    (["run", "m.onnx", "--input", "x.npy", "-o", "{w}"], "x.npy", "-o"),
    (["run", "m.onnx", "--input", "x.npy", "--save-inputs", "{w}"], "m.onnx", "--save-inputs"),
    (["run", "m.onnx", "--input", "x.npy", "--save-outputs", "{w}"], "x.npy", "--save-outputs"),
    (["run", "e.engine", "--input", "x.npy", "-o", "{w}"], "e.engine.json", "-o"),
    (["profile", "r.json", "--report", "{w}"], "r.json", "--report"),
    (["profile", "r.html", "--report", "{w}"], "r.json", "its HTML"),
    (["evaluate", "m.onnx", "--data", "d", "--report", "{w}"], "m.onnx", "--report"),
    (["evaluate", "m.onnx", "--data", "d", "--report", "{w}"], "d/dataset.json", "--report"),
    (["evaluate", "m.onnx", "--data", "d", "--panels", "{w}"], "d", "--panels"),
    (["train", "--model", "axial26_tiny", "--data", "d", "-o", "{w}"], "d/dataset.json", "-o"),
    (["train", "--model", "axial26_tiny", "--data", "c.json", "-o", "{w}"], "c.pt",
     "its record"),
    (["triton-repo", "m.onnx", "-o", "{w}"], ".", "-o"),
    (["deploy", "--checkpoint", "ck.pt", "-o", "{w}"], ".", "-o"),
    (["deploy", "--data", "d", "-o", "{w}"], "d/out", "-o"),
    (["infer", "x.npy", "-o", "{w}"], "x.npy", "-o"),
    (["loadtest", "x.npy", "--report", "{w}"], "x.npy", "--report"),
]  # fmt: skip
# Commands that write nothing, with arguments that parse.
READ_ONLY = {
    "models": [], "verify": ["m.onnx", "m2.onnx"], "serve": ["m.onnx"], "doctor": [],
    "plugin-path": [],
}  # fmt: skip


def spellings(target: str) -> dict[str, str]:
    """`target` (relative to the working folder) written four ways."""
    return {
        "relative": target,
        "absolute": str(Path(target).absolute()),
        "symlink": str(Path("alias") / target),  # alias -> the working folder
        "dotdot": str(Path("sub") / ".." / target),
    }


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("m.onnx", "m2.onnx", "m.calib", "e.engine.json", "e.engine.json.pending",
                 "q.budget.json"):  # fmt: skip
        onnx.save(conv_model(), name)
    np.save("x.npy", np.ones((1, 3, 8, 8), np.float32))
    for name in ("ck.pt", "ck.data", "e.engine", "r.json", "r.html", "c.pt"):
        Path(name).write_bytes(b"input " + name.encode())
    Path("d").mkdir()
    Path("d/dataset.json").write_text("{}")
    Path("c.json").mkdir()  # a dataset folder named like train's record
    Path("sub").mkdir()
    Path("alias").symlink_to(tmp_path)
    return tmp_path


def _snapshot(folder: Path) -> dict[str, bytes]:
    files = [p for p in folder.rglob("*") if p.is_file() and "alias" not in p.parts]
    return {str(p): p.read_bytes() for p in files}


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink", "dotdot"])
@pytest.mark.parametrize(("argv", "target", "label"), WRITTEN, ids=lambda v: str(v)[:40])
def test_no_written_path_overwrites_an_input(workdir, capsys, argv, target, label, how):
    before = _snapshot(workdir)
    code = main([a.replace("{w}", spellings(target)[how]) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    refusals = ("same file as", "lies inside", "it is a folder")
    assert label in err and any(r in err for r in refusals), err
    assert _snapshot(workdir) == before  # nothing written, nothing lost
    assert not list(workdir.glob(".*.tmp"))


def _declared_writes(argv: list[str]) -> set[str]:
    args = build_parser().parse_args([a.replace("{w}", "w") for a in argv])
    return {label for label, path in args.files(args).writes.items() if path is not None}


def test_the_table_covers_every_command_and_every_kind_of_written_path(workdir):
    covered: dict[str, set[str]] = {}
    declared: dict[str, set[str]] = {}
    for argv, _, label in WRITTEN:
        covered.setdefault(argv[0], set()).add(label)
        declared.setdefault(argv[0], set()).update(_declared_writes(argv))
    for command, argv in READ_ONLY.items():
        assert _declared_writes([command, *argv]) == set(), command
    # dataset reads nothing: its folder cannot overwrite an input (its own refusals are in
    # test_hostile_input: -o a file)
    assert set(COMMANDS) == set(covered) | set(READ_ONLY) | {"dataset"}
    for command, labels in declared.items():
        assert labels <= covered[command], f"{command}: {labels - covered[command]} untested"
    for command in COMMANDS.values():  # every command declares its files (cli.main checks)
        assert callable(getattr(_load(command), "files", None)), command


# ---------------------------------------------------------------- issue 25, its six cases


def test_quantize_never_writes_its_cache_over_the_model(workdir, capsys):
    """Case 2: INT8 writes TensorRT's cache beside -o as .calib; -o q.calib made it the model."""
    code = main(["quantize", "m.onnx", "--precision", "int8", "-o", "q.calib"])
    assert code == 2 and "--cache q.calib is the same file as -o" in capsys.readouterr().err
    assert not Path("q.calib").exists()


def test_rewrite_report_equal_to_output_is_refused_in_any_spelling(workdir, capsys):
    """Case 1 (refused on main already for the plain spelling; kept for every spelling)."""
    for how, spelled in spellings("out.onnx").items():
        assert main(["rewrite", "m.onnx", "-o", "out.onnx", "--report", spelled]) == 2, how
        assert "is the same file as -o" in capsys.readouterr().err
    assert not Path("out.onnx").exists()


def test_rewrite_refuses_an_op_onnx_runtime_does_not_know(tmp_path, capsys):
    """Case 3: was an ONNX Runtime traceback (weird:FooBar is not a registered function/op)."""
    model = onnx.load(DATA / "reference_axial_block.onnx")
    for node in model.graph.node:
        node.input[:] = ["x_w" if name == "x" else name for name in node.input]
    model.graph.node.insert(0, helper.make_node("FooBar", ["x"], ["x_w"], "odd", domain="weird"))
    model.opset_import.append(helper.make_opsetid("weird", 1))
    onnx.save(model, tmp_path / "u.onnx")
    code = main(["rewrite", str(tmp_path / "u.onnx"), "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "node odd is op 'FooBar' of domain 'weird', which it does not know" in err[0]
    assert not (tmp_path / "out.onnx").exists()


def test_train_names_the_missing_key_of_the_dataset_record(tmp_path, capsys):
    """Case 4: was KeyError: 'size'."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"kind": "panoptic", "seed": 0}))
    code = main(["train", "--model", "axial26_tiny", "--data", str(data),
                 "-o", str(tmp_path / "c.pt")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{data / 'dataset.json'}: missing key 'size' (an array)" in err


def test_evaluate_names_the_undecodable_json(tmp_path, capsys):
    """Case 5: was 'utf-8' codec can't decode byte 0x80, naming neither file nor format."""
    (tmp_path / "panoptic_val.json").write_bytes(b'{"a": "\x80\x81 binary"}')
    (tmp_path / "m.onnx").write_bytes(b"unused")
    code = main(["evaluate", str(tmp_path / "m.onnx"), "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"panoptic JSON {tmp_path / 'panoptic_val.json'} is not JSON text: byte 0x80 at " \
        "offset 7 is not UTF-8" in err  # fmt: skip


# ---------------------------------------------------------------- engine + manifest, killed

WRITER = """
import os, sys
from axial_deploy.engine.manifest import Manifest, TensorInfo, write_engine
import hashlib
step, when, engine, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode()
real, count = os.replace, 0
def replace(source, target):  # the writer is killed (no cleanup runs) around rename `step`
    global count
    count += 1
    if when == "before the engine" and os.fspath(target) == engine:
        os._exit(9)
    if count == step and when == "before":
        os._exit(9)
    real(source, target)
    if count == step and when == "after":
        os._exit(9)
os.replace = replace
tensor = TensorInfo("x", "float32", [1, 3, 8, 8], "input")
manifest = Manifest("tensorrt-rtx", "1.7", None, None, None, "strongly-typed",
                    [{"x": [[1, 3, 8, 8]] * 3}], [tensor], [], "0" * 64,
                    hashlib.sha256(payload).hexdigest())
write_engine(payload, manifest, engine)
"""


def _write(engine: Path, payload: bytes, step: int = 0, when: str = "") -> int:
    argv = [sys.executable, "-c", WRITER, str(step), when, str(engine), payload.decode()]
    return subprocess.run(argv, env={**os.environ, "PYTHONPATH": ""}).returncode


def _pair(engine: Path) -> bytes:
    """The engine's bytes, once the manifest read says it describes them."""
    assert read_manifest(engine).engine_sha256 == sha256_file(engine), "a mixed pair"
    assert not pending_path(engine).exists()
    return engine.read_bytes()


# rename 1: the pending manifest in place; 2: the engine; 3: the manifest
# (rename, killed before or after it, what the next read says, the engine it finds)
STEPS = [(1, "before", COMPLETE, b"old"), (1, "after", OLD_PAIR, b"old"),
         (2, "after", NEW_PAIR, b"new"), (3, "after", COMPLETE, b"new")]  # fmt: skip


@pytest.mark.parametrize(("step", "when", "says", "found"), STEPS)
def test_a_build_killed_at_any_rename_leaves_the_old_pair_or_the_new(
    tmp_path, step, when, says, found
):
    engine = tmp_path / "m.engine"
    assert _write(engine, b"old") == 0
    assert _write(engine, b"new", step, when) == 9
    assert settle_pending(engine) == says
    assert _pair(engine) == found


def test_a_second_build_killed_after_a_first_killed_one_leaves_a_whole_pair(tmp_path, capsys):
    """Case 2 of the issue: killed after its engine moved in, then rebuilt and killed before
    the engine moved: the second run overwrote the first one's pending manifest, leaving the
    new engine with the old manifest (and `run` refused it)."""
    engine = tmp_path / "m.engine"
    assert _write(engine, b"engine 1") == 0
    assert _write(engine, b"engine 2", 2, "after") == 9
    assert _write(engine, b"engine 3", 0, "before the engine") == 9
    assert _pair(engine) == b"engine 2"
    assert "the previous engine and manifest stand" in capsys.readouterr().err


def test_a_reader_during_a_write_moves_nothing(tmp_path):
    """While a writer holds the folder, a reader takes the pending manifest that matches the
    engine without moving it (the writer's own rename 3 must still find it)."""
    import fcntl

    engine = tmp_path / "m.engine"
    assert _write(engine, b"engine 1") == 0
    assert _write(engine, b"engine 2", 3, "before") == 9
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # what an active writer holds
        assert read_manifest(engine).engine_sha256 == hashlib.sha256(b"engine 2").hexdigest()
        assert pending_path(engine).exists() and manifest_path(engine).exists()
    finally:
        os.close(folder)
    assert _pair(engine) == b"engine 2"
