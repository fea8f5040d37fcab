"""Careless and hostile input: one clear line and exit code 2, nothing written, nothing lost,
and no code runs that the user did not ask for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axial_deploy.artifacts import OutputPathError, atomic_output, load_onnx
from axial_deploy.cli import main
from axial_deploy.engine.manifest import (
    Manifest,
    ManifestError,
    TensorInfo,
    manifest_path,
    pending_path,
    read_manifest,
    sha256_file,
    write_engine,
)


def conv_model(weights: np.ndarray | None = None, dtype=np.float32) -> onnx.ModelProto:
    """x [1, 3, 8, 8] -> Conv 3->4 -> y: the smallest graph every stage accepts."""
    weights = np.random.default_rng(0).standard_normal((4, 3, 1, 1)) if weights is None else weights
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weights.astype(dtype), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if elem == TensorProto.FLOAT16:  # an FP16 graph keeps FP32 I/O behind a Cast
        model.graph.node.insert(0, helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT))
        model.graph.initializer[0].name = "w16"
    return model


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(), model)
    fp16 = tmp_path / "m16.onnx"
    onnx.save(conv_model(dtype=np.float16), fp16)
    nan = tmp_path / "nan.onnx"
    onnx.save(conv_model(np.full((4, 3, 1, 1), np.nan)), nan)
    array = tmp_path / "x.npy"
    np.save(array, np.ones((1, 3, 8, 8), np.float32))
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    (tmp_path / "empty.npy").write_bytes(b"")
    forged = (tmp_path / "x.npy").read_bytes().replace(b"(1, 3, 8, 8)", b"(9999, 99999999)")
    (tmp_path / "forged.npy").write_bytes(forged)
    (tmp_path / "a_file").write_text("not a folder")
    unknown = conv_model()
    unknown.graph.node.insert(0, helper.make_node("FooBar", ["x0"], ["x"], domain="weird"))
    unknown.graph.input[0].name = "x0"
    unknown.opset_import.append(helper.make_opsetid("weird", 1))
    onnx.save(unknown, tmp_path / "unknown_op.onnx")
    return tmp_path


# (argv with {t} for the test folder, what stderr says, files that must not change or appear)
BAD_INPUTS = [
    (["rewrite", "{t}/m.onnx", "-o", "{t}/out.onnx", "--report", "{t}/m.onnx"],
     "--report {t}/m.onnx is the same file as IN.onnx", ["out.onnx"]),
    (["rewrite", "{t}/m.onnx", "-o", "{t}/r.json", "--report", "{t}/r.json"],
     "is the same file as -o", ["r.json"]),
    (["rewrite", "{t}/missing.onnx", "-o", "{t}/out.onnx"], "no such file", ["out.onnx"]),
    (["rewrite", "{t}/m.onnx", "-o", "{t}/a_file/out.onnx"], "cannot write", []),
    (["rewrite", "{t}/m.onnx", "-o", "{t}"], "it is a folder", []),
    (["quantize", "{t}/m.onnx", "--precision", "int8", "-o", "{t}/q.onnx", "--report",
      "{t}/m.onnx"], "is the same file as IN.onnx", ["q.onnx"]),
    (["quantize", "{t}/m.onnx", "--precision", "int8", "-o", "{t}/q.onnx", "--cache",
      "{t}/q.onnx"], "is the same file as -o", ["q.onnx"]),
    (["quantize", "{t}/m16.onnx", "--precision", "int8", "-o", "{t}/q.onnx"],
     "already an FP16 graph", ["q.onnx"]),
    (["quantize", "{t}/nan.onnx", "--precision", "int8", "-o", "{t}/q.onnx"],
     "NaN or infinite", ["q.onnx"]),
    (["quantize", "{t}/unknown_op.onnx", "--precision", "fp16", "-o", "{t}/q.onnx"],
     "ONNX Runtime cannot load", ["q.onnx"]),
    (["build", "{t}/m.onnx", "-o", "{t}/m.onnx"], "is the same file as MODEL.onnx", []),
    (["run", "{t}/m.onnx", "--input", "{t}/x.npy", "-o", "{t}/x.npy"],
     "is the same file as --input", []),
    (["run", "{t}/m.onnx", "--input", "{t}/strings.npy"], "must be numeric", []),
    (["run", "{t}/m.onnx", "--input", "{t}/empty.npy"], "not a .npy array", []),
    (["run", "{t}/m.onnx", "--input", "{t}"], "is not a file", []),
    (["run", "{t}/m.onnx", "--input", "{t}/forged.npy"], "truncated or forged", []),
    (["train", "--model", "axial26_tiny", "--data", "{t}/data", "-o", "{t}/c.json"],
     "its record", ["c.json"]),
    (["dataset", "panoptic", "-o", "{t}/a_file"], "is a file", []),
    (["compare", "{t}/m.onnx", "{t}/m16.onnx", "--report", "{t}/m16.onnx"],
     "is the same file as candidate", []),
    (["profile", "{t}/m.onnx", "--report", "{t}/m.json", "--iterations", "1"], "", []),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "says", "untouched"), BAD_INPUTS, ids=lambda v: str(v)[:60])
def test_bad_input_is_one_line_exit_2_and_nothing_written(files, capsys, argv, says, untouched):
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    code = main([a.format(t=files) for a in argv])
    err = capsys.readouterr().err.strip()
    if not says:  # a valid run (the control case of the table)
        assert code == 0, err
        return
    assert code == 2, err
    assert len(err.splitlines()) == 1 and says.format(t=files) in err, err
    assert "Traceback" not in err
    for name, data in before.items():
        assert (files / name).read_bytes() == data, f"{name} changed"
    for name in untouched:
        assert name in before or not (files / name).exists(), f"{name} was written"


def test_a_library_planted_in_the_working_directory_is_never_loaded(tmp_path, monkeypatch, capsys):
    planted = tmp_path / "build" / "lib"
    planted.mkdir(parents=True)
    (planted / "libaxial_attention_plugin.so").write_bytes(b"\x7fELF planted")
    (planted / "libaxial_attention_capi.so").write_bytes(b"\x7fELF planted")
    monkeypatch.chdir(tmp_path)
    main(["doctor"])
    assert str(tmp_path) not in capsys.readouterr().out


def test_external_data_that_leaves_the_model_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(12, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    model = conv_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="w.bin")
    onnx.save(model, folder / "m.onnx")
    (folder / "w.bin").symlink_to(secret)  # a link inside the folder pointing out of it
    with pytest.raises(ValueError, match="leaves the model's folder"):
        load_onnx(folder / "m.onnx")
    tensor.external_data[0].value = "../secret.bin"
    onnx.save(model, folder / "m2.onnx")
    with pytest.raises(ValueError, match="leaves the model's folder"):
        load_onnx(folder / "m2.onnx", load_external_data=False)


def _manifest(engine_sha256: str) -> Manifest:
    tensor = TensorInfo("x", "float32", [1, 3, 8, 8], "input")
    return Manifest("tensorrt-rtx", "1.7", None, None, None, "strongly-typed",
                    [{"x": [[1, 3, 8, 8]] * 3}], [tensor], [], "0" * 64, engine_sha256)  # fmt: skip


def test_engine_and_manifest_are_one_step_even_when_killed_between(tmp_path):
    import hashlib

    engine = tmp_path / "m.engine"
    old, new = b"old engine", b"new engine"
    write_engine(old, _manifest(hashlib.sha256(old).hexdigest()), engine)
    # killed after the new manifest was staged, before the engine moved: the old pair stands
    with atomic_output(pending_path(engine)) as tmp:
        tmp.write_text(_manifest(hashlib.sha256(new).hexdigest()).to_json())
    assert read_manifest(engine).engine_sha256 == sha256_file(engine)
    assert not pending_path(engine).exists()
    # killed after the engine moved, before the manifest: the swap completes on next read
    with atomic_output(pending_path(engine)) as tmp:
        tmp.write_text(_manifest(hashlib.sha256(new).hexdigest()).to_json())
    engine.write_bytes(new)
    assert read_manifest(engine).engine_sha256 == hashlib.sha256(new).hexdigest()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x89PNG\x00\xff binary", "byte 0x89 at offset 0 is not UTF-8"),
        (b"[1, 2]", "holds a JSON array, not an object"),
        (json.dumps({"backend": 3}).encode(), "key 'backend' must be a string, not integer 3"),
        (json.dumps({"plugin_serialized": "yes"}).encode(), "must be a boolean"),
        (json.dumps({"backend": "tensorrt"}).encode(), "missing key 'tensorrt_version'"),
    ],
)
def test_a_damaged_manifest_is_named_with_its_file(tmp_path, content, says):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    manifest_path(engine).write_bytes(content)
    with pytest.raises(ManifestError, match=says) as info:
        read_manifest(engine)
    assert str(manifest_path(engine)) in str(info.value)


def test_a_killed_writer_leaves_its_temporaries_for_the_next_run_to_remove(tmp_path):
    target = tmp_path / "out.onnx"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = tmp_path / f".out.onnx.{child.pid}.abc.tmp"
    stale.mkdir()
    child.kill()
    child.wait()
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and not stale.exists()


GENERATE = """
import sys
from axial_deploy.datasets.synthetic import generate_panoptic
generate_panoptic(sys.argv[1], seed=int(sys.argv[2]), train=int(sys.argv[3]), val=0,
                  size=(32, 32), progress=False)
"""


def test_killed_dataset_generation_leaves_the_old_dataset_whole(tmp_path):
    from axial_deploy.datasets.synthetic import generate_panoptic

    out = tmp_path / "data"
    generate_panoptic(out, seed=0, train=2, val=0, size=(32, 32), progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    child = subprocess.Popen([sys.executable, "-c", GENERATE, str(out), "1", "400"])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".data.*.tmp/images/train/*.png")):
        assert time.monotonic() < deadline and child.poll() is None, "the writer never started"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    generate_panoptic(out, seed=1, train=1, val=0, size=(32, 32), progress=False)
    assert json.loads((out / "dataset.json").read_text())["seed"] == 1
    assert not list(tmp_path.glob(".data.*.tmp"))  # the killed run's folder is gone


def test_a_second_dataset_writer_is_refused_while_the_first_is_active(tmp_path):
    import fcntl

    from axial_deploy.datasets.synthetic import DatasetError, generate_panoptic

    out = tmp_path / "data"
    with open(tmp_path / ".data.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what an active writer holds
        with pytest.raises(DatasetError, match="another run is writing"):
            generate_panoptic(out, train=1, val=0, size=(32, 32), progress=False)
    assert not out.exists()
    generate_panoptic(out, train=1, val=0, size=(32, 32), progress=False)
    assert (out / "dataset.json").is_file()


def test_outputs_that_collide_are_refused_before_any_work(tmp_path):
    from axial_deploy.artifacts import check_distinct

    with pytest.raises(OutputPathError, match="same file as IN"):
        check_distinct({"IN": tmp_path / "a"}, {"-o": tmp_path / "." / "a"})
    check_distinct({"IN": tmp_path / "a"}, {"-o": tmp_path / "b", "--report": None})


def test_ctrl_c_during_a_build_cancels_it_instead_of_failing_it():
    from types import SimpleNamespace

    from axial_deploy.engine.build import _cancel_on_interrupt

    monitor = SimpleNamespace(interrupted=False)
    # whatever handled SIGINT before (Python's default, or SIG_IGN in a background job) returns
    before = signal.getsignal(signal.SIGINT)
    with _cancel_on_interrupt(monitor):
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends while the builder runs
        time.sleep(0.01)  # the handler runs between bytecodes
    assert monitor.interrupted  # the next progress step returns False: the build is cancelled
    assert signal.getsignal(signal.SIGINT) is before
