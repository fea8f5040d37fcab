"""`axial-deploy triton-repo`: every generated config.pbtxt parsed against Triton's ModelConfig
protobuf (tritonclient's model_config_pb2), and the generated Python-backend models loaded and
run by a real tritonserver (PyTriton's bundled binary) on 127.0.0.1.

The engine cases use an engine file with a manifest as `axial-deploy build` writes it: the
repository only reads the manifest and copies the bytes (TensorRT cannot run here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import axial_net, conv_net
from google.protobuf import text_format

from axial_deploy.engine.manifest import Manifest, TensorInfo, read_manifest, write_manifest
from axial_deploy.serving import ServeError
from axial_deploy.serving.pipeline import PanopticSettings, panoptic_settings_for
from axial_deploy.serving.triton_repo import (
    NEWEST_RELEASE,
    RELEASE_NOTES,
    SUPPORT_MATRIX,
    TRITON_RELEASES,
    RepoOptions,
    check_release,
    release_for,
    write_repository,
)

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="needs the [serve] extra (tritonclient)"
)


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def configs(out: Path) -> dict:
    return {p.parent.name: parse(p) for p in sorted((out / "models").glob("*/config.pbtxt"))}


def make_engine(folder: Path, *, version="10.8.0.43", backend="tensorrt", plugin=True) -> Path:
    """An engine + manifest: images [-1, 3, 33, 33] fp16 (profile batch 1/4/16) -> semantic,
    center, offset; needs a plugin library (hash recorded) unless plugin=False."""
    engine = folder / "tiny.engine"
    engine.write_bytes(b"serialized engine bytes")
    library = folder / "libaxial_attention_plugin.so"
    library.write_bytes(b"\x7fELF plugin")
    outputs = [
        ("semantic", [-1, 7, 33, 33]),
        ("center", [-1, 1, 33, 33]),
        ("offset", [-1, 2, 33, 33]),
    ]
    manifest = Manifest(
        backend=backend, tensorrt_version=version, cuda_version="12.8", gpu_name="NVIDIA A100",
        sm="8.0", precision="fp16",
        profiles=[{"images": [[1, 3, 33, 33], [4, 3, 33, 33], [16, 3, 33, 33]]}],
        inputs=[TensorInfo("images", "float16", [-1, 3, 33, 33], "input")],
        outputs=[TensorInfo(n, "float16", s, "output") for n, s in outputs],
        onnx_sha256="0" * 64, engine_sha256=hashlib.sha256(engine.read_bytes()).hexdigest(),
        plugin_library=str(library) if plugin else None,
        plugin_sha256=hashlib.sha256(library.read_bytes()).hexdigest() if plugin else None,
    )  # fmt: skip
    write_manifest(manifest, engine)
    return engine


def test_engine_repository_follows_the_manifest(tmp_path):
    engine = make_engine(tmp_path)
    options = RepoOptions(instances=2, preferred_batch=[4, 8, 32], queue_delay_us=500)
    report = write_repository(engine, tmp_path / "repo", options)
    # 25.01 and 25.02 both ship TensorRT 10.8.0.43: the newer Triton is picked
    assert report.release == "25.02" and report.warnings == []
    config = configs(tmp_path / "repo")["axial"]
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert config.default_model_filename == "model.plan"
    (image,) = config.input
    assert image.name == "images" and list(image.dims) == [3, 33, 33]
    assert image.data_type == model_config_pb2.TYPE_FP16
    assert {o.name: list(o.dims) for o in config.output} == {
        "semantic": [7, 33, 33], "center": [1, 33, 33], "offset": [2, 33, 33]
    }  # fmt: skip
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]  # 32 > max batch
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    out = tmp_path / "repo"
    assert (out / "models/axial/1/model.plan").read_bytes() == engine.read_bytes()
    assert (out / "plugins/libaxial_attention_plugin.so").is_file()
    assert "nvcr.io/nvidia/tritonserver:25.02-py3" in report.launch
    assert (
        "--backend-config=tensorrt,plugins=/axial/plugins/libaxial_attention_plugin.so"
        in (out / "launch.sh").read_text()
    )
    record = json.loads((out / "repository.json").read_text())
    assert record["triton"] == "2.55.0" and record["manifest"]["tensorrt_version"] == "10.8.0.43"


def test_triton_repo_serves_a_carrying_engine_without_plugins(tmp_path):
    engine = make_engine(tmp_path, version="10.8.0.43")
    manifest = dataclasses.replace(
        read_manifest(engine), plugin_serialized=True, version_compatible=True
    )
    write_manifest(manifest, engine)
    (tmp_path / "libaxial_attention_plugin.so").unlink()  # nothing to copy or check
    report = write_repository(engine, tmp_path / "repo", RepoOptions(release="25.06"))
    # 25.06 ships TensorRT 10.11: later than 10.8, so a version-compatible engine loads there
    assert report.warnings == []
    assert not (tmp_path / "repo" / "plugins").exists()
    launch = (tmp_path / "repo" / "launch.sh").read_text()
    assert "--backend-config=tensorrt,version-compatible=true" in launch
    assert "plugins=" not in launch

    (tmp_path / "plain").mkdir()
    plain = make_engine(tmp_path / "plain", version="10.8.0.43")
    report = write_repository(plain, tmp_path / "repo2", RepoOptions(release="25.06"))
    assert "version-compatible" not in report.launch and report.warnings  # exact version only
    # without --release: the newest recorded release whose TensorRT fits (same or later)
    (tmp_path / "vc").mkdir()
    carrying = make_engine(tmp_path / "vc", version="10.8.0.40")
    write_manifest(
        dataclasses.replace(
            read_manifest(carrying), plugin_serialized=True, version_compatible=True
        ),
        carrying,
    )
    assert write_repository(carrying, tmp_path / "repo3", RepoOptions()).release == "25.06"


def test_tensorrt_version_without_a_recorded_release_stops_with_what_to_check(tmp_path):
    # A patch build of a recorded minor, an old TensorRT, and one newer than the table: no image
    # is guessed, the message names the Support Matrix and --release, and nothing is written.
    for version, near in [("10.8.0.40", "25.01, 25.02"), ("8.6.1", None), ("10.16.1.11", None)]:
        folder = tmp_path / version
        folder.mkdir()
        with pytest.raises(ServeError) as refused:
            write_repository(make_engine(folder, version=version), folder / "repo", RepoOptions())
        message = str(refused.value)
        assert f"ships TensorRT {version}" in message and "--release YY.MM" in message
        assert SUPPORT_MATRIX in message and "rebuild the engine" in message
        assert (f"same TensorRT minor: {near}" in message) == (near is not None)
        assert not (folder / "repo").exists()
    forced = write_repository(make_engine(tmp_path), tmp_path / "c", RepoOptions(release="24.12"))
    assert forced.release == "24.12" and "ships TensorRT 10.7.0.23" in forced.warnings[0]
    assert "Use --release 25.02" in forced.warnings[0]
    assert release_for("10.9.0.34") == ("25.04", ["25.03", "25.04"])
    # a release whose TensorRT is not recorded, or one newer than the table: a warning to check
    unrecorded = write_repository(
        make_engine(tmp_path, version="10.16.1.11"), tmp_path / "d", RepoOptions(release="26.10")
    )
    assert unrecorded.release == "26.10" and "not recorded" in unrecorded.warnings[0]
    assert "nvcr.io/nvidia/tritonserver:26.10-py3" in unrecorded.launch
    newer = write_repository(
        make_engine(tmp_path, version="10.16.1.11"), tmp_path / "e", RepoOptions(release="27.01")
    )
    assert "newer than axial-deploy's table" in newer.warnings[0]
    record = json.loads((tmp_path / "e/repository.json").read_text())
    assert record["release"] == "27.01" and record["triton"] is None


def _months(first: str, last: str) -> list[str]:
    year, month = (int(p) for p in first.split("."))
    out = []
    while f"{year:02d}.{month:02d}" <= last:
        out.append(f"{year:02d}.{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def test_release_table_covers_every_month_up_to_the_newest_source():
    # Every monthly release from the first TensorRT 10 one to the newest with release notes
    # is in the table (a gap would send an engine to a wrong or no image), in order.
    releases = list(TRITON_RELEASES)
    assert releases == _months(releases[0], NEWEST_RELEASE)
    assert releases == sorted(releases)
    recorded = [TRITON_RELEASES[r].tensorrt for r in releases if TRITON_RELEASES[r].tensorrt]
    assert all(v.startswith("10.") for v in recorded)
    # versions recorded are full 4-part TensorRT versions, CUDA 13 from 25.08 on
    assert all(len(v.split(".")) == 4 for v in recorded)
    cuda = {r: t.cuda for r, t in TRITON_RELEASES.items() if t.cuda}
    assert all(v.startswith("13.") == (r >= "25.08") for r, v in cuda.items())
    assert "{yy}" in RELEASE_NOTES and SUPPORT_MATRIX.startswith("https://docs.nvidia.com/")


@pytest.mark.parametrize("release", ["19.01", "2510", "25.13", "latest"])
def test_release_names_outside_the_table_are_refused(release):
    with pytest.raises(ServeError, match="unknown NGC release"):
        check_release(release)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("rtx", "Triton's TensorRT backend loads TensorRT engines only"),
        ("other plugin", "differs from the one the engine was built with"),
        ("no plugin", "pass --plugins PATH"),
        ("max batch", "exceeds the engine's profile"),
        ("release", "unknown NGC release"),
    ],
)
def test_engine_repository_refusals_leave_nothing_behind(tmp_path, change, message):
    engine = make_engine(tmp_path, backend="tensorrt-rtx" if change == "rtx" else "tensorrt")
    options = RepoOptions()
    if change == "other plugin":
        (tmp_path / "other.so").write_bytes(b"another build")
        options.plugins = str(tmp_path / "other.so")
    if change == "no plugin":
        (tmp_path / "libaxial_attention_plugin.so").unlink()
    options.max_batch = 32 if change == "max batch" else None
    options.release = "19.01" if change == "release" else None
    with pytest.raises(ServeError, match=message):
        write_repository(engine, tmp_path / "repo", options)
    assert not (tmp_path / "repo").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")]


def test_an_existing_repository_is_replaced_only_with_force(tmp_path):
    onnx_path = conv_net(tmp_path / "conv.onnx")
    write_repository(onnx_path, tmp_path / "repo", RepoOptions())
    with pytest.raises(ServeError, match="--force"):
        write_repository(onnx_path, tmp_path / "repo", RepoOptions(name="other"))
    write_repository(onnx_path, tmp_path / "repo", RepoOptions(name="other", force=True))
    assert sorted(configs(tmp_path / "repo")) == ["other"]


def test_onnx_repository(tmp_path):
    report = write_repository(
        conv_net(tmp_path / "conv.onnx"),
        tmp_path / "repo",
        RepoOptions(max_batch=4, kind="KIND_CPU"),
    )
    config = configs(tmp_path / "repo")["axial"]
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    assert [list(t.dims) for t in config.input] == [[3, 16, 16]]
    assert [list(t.dims) for t in config.output] == [[4, 16, 16]]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert "--backend-config" not in report.launch
    fixed = write_repository(
        conv_net(tmp_path / "b1.onnx", batch=1), tmp_path / "fixed", RepoOptions()
    )
    config = configs(fixed.out)["axial"]
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 3, 16, 16]
    assert not config.HasField("dynamic_batching")


def test_onnx_external_data_travels_with_the_model(tmp_path):
    """A model saved with its weights in a file beside it: the repository holds both, and
    ONNX Runtime runs the copy (the model's folder alone, source removed) like the original."""
    import onnx
    import onnxruntime as ort

    source = tmp_path / "src"
    source.mkdir()
    model = onnx.load(str(conv_net(tmp_path / "conv.onnx")))
    onnx.save(model, str(source / "conv.onnx"), save_as_external_data=True,
              location="conv.weights", size_threshold=0)  # fmt: skip
    write_repository(source / "conv.onnx", tmp_path / "repo", RepoOptions())
    copied = tmp_path / "repo" / "models" / "axial" / "1"
    assert sorted(p.name for p in copied.iterdir()) == ["conv.weights", "model.onnx"]
    shutil.rmtree(source)
    feed = {"input": np.random.default_rng(0).standard_normal((2, 3, 16, 16), np.float32)}
    expected = ort.InferenceSession(str(tmp_path / "conv.onnx")).run(None, feed)
    got = ort.InferenceSession(str(copied / "model.onnx")).run(None, feed)
    np.testing.assert_array_equal(got[0], expected[0])
    # replacing it with --force leaves no staging or set-aside folder behind
    write_repository(tmp_path / "conv.onnx", tmp_path / "repo", RepoOptions(force=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx", "repo"]
    assert sorted(p.name for p in copied.iterdir()) == ["model.onnx"]


def test_onnx_with_axial_attention_nodes_needs_a_custom_op_library(tmp_path):
    graph = axial_net(tmp_path / "axial.onnx")
    with pytest.raises(ServeError, match="--ort-op-library"):
        write_repository(graph, tmp_path / "repo", RepoOptions())
    library = tmp_path / "libaxial_ort_ops.so"
    library.write_bytes(b"\x7fELF ops")
    write_repository(graph, tmp_path / "repo", RepoOptions(ort_op_library=str(library)))
    config = configs(tmp_path / "repo")["axial"]
    assert list(config.model_operations.op_library_filename) == [
        "/axial/plugins/libaxial_ort_ops.so"
    ]
    assert (tmp_path / "repo/plugins/libaxial_ort_ops.so").is_file()


def _ensemble_is_wired(models: dict) -> None:
    """Each step's maps name real inputs/outputs of its model, and every tensor an ensemble
    step reads is the ensemble's input or another step's output."""
    ensemble = models["axial_panoptic"]
    available = {t.name for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = models[step.model_name]
        assert set(step.input_map) <= {t.name for t in model.input}
        assert set(step.output_map) <= {t.name for t in model.output}
        assert set(step.input_map.values()) <= available
        available |= set(step.output_map.values())
    assert {t.name for t in ensemble.output} <= available


def test_panoptic_repository_has_python_models_and_an_ensemble(tmp_path):
    panoptic = panoptic_settings_for("axial_deeplab_tiny", None)
    report = write_repository(
        make_engine(tmp_path), tmp_path / "repo", RepoOptions(panoptic=panoptic)
    )
    models = configs(tmp_path / "repo")
    assert sorted(models) == ["axial", "axial_panoptic", "axial_postprocess", "axial_preprocess"]
    assert models["axial_panoptic"].platform == "ensemble"
    assert models["axial_preprocess"].backend == "python"
    settings = json.loads(models["axial_postprocess"].parameters["panoptic"].string_value)
    assert PanopticSettings.from_json(settings) == panoptic
    _ensemble_is_wired(models)
    assert "axial-deploy-triton:25.02" in report.launch
    with pytest.raises(ServeError, match="needs a panoptic model"):
        write_repository(
            conv_net(tmp_path / "c.onnx"), tmp_path / "r2", RepoOptions(panoptic=panoptic)
        )


# --------------------------------------------------------------------------------------------
# The generated Python-backend models in a real tritonserver
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled_tritonserver(tmp_path_factory):
    """PyTriton's tritonserver with its Python backend, laid out like PyTriton does (the stub
    for this Python beside the backend)."""
    pytriton = pytest.importorskip("pytriton", reason="needs the [serve] extra (nvidia-pytriton)")
    from pytriton.utils.distribution import get_libs_path, get_stub_path

    root = tmp_path_factory.mktemp("tritonserver")
    dist = Path(pytriton.__file__).parent / "tritonserver"
    shutil.copytree(dist, root / "ts", ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "ts/backends/python/triton_python_backend_stub"
    shutil.copy(get_stub_path(version), stub)
    return root / "ts", str(get_libs_path())


def start_tritonserver(server: Path, libs: str, repository: Path, models: list[str], log: Path):
    from axial_deploy.serving.server import python_library_dir

    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    env = dict(os.environ)
    # The interpreter's libpython first (see serving.server.libpython_first), this venv's
    # python on PATH so the stub finds its packages.
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (python_library_dir(), libs) if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    command = [
        str(server / "bin/tritonserver"), f"--model-repository={repository}",
        "--model-control-mode=explicit", *(f"--load-model={m}" for m in models),
        f"--backend-directory={server / 'backends'}", "--http-address=127.0.0.1",
        f"--http-port={ports[0]}", "--grpc-address=127.0.0.1", f"--grpc-port={ports[1]}",
        "--allow-metrics=false", "--exit-timeout-secs=5",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{ports[0]}"


@pytest.mark.slow
def test_python_backend_models_run_in_a_real_tritonserver(bundled_tritonserver, tmp_path):
    from axial_deploy.engine.runtime import Engine
    from axial_deploy.export import export_onnx
    from axial_deploy.models import create_model
    from axial_deploy.serving.client import TritonClient
    from axial_deploy.serving.pipeline import PanopticStep, preprocess_image

    onnx_path = export_onnx(
        create_model("axial_deeplab_tiny", pretrained=True), (1, 3, 33, 33), tmp_path / "t.onnx"
    )
    panoptic = panoptic_settings_for("axial_deeplab_tiny", None)
    write_repository(onnx_path, tmp_path / "repo", RepoOptions(panoptic=panoptic))
    models = ["axial_preprocess", "axial_postprocess"]
    server, libs = bundled_tritonserver
    process, url = start_tritonserver(
        server, libs, tmp_path / "repo/models", models, tmp_path / "log"
    )
    image = (np.random.default_rng(0).random((2, 45, 38, 3)) * 255).astype(np.uint8)
    try:
        with TritonClient(url, timeout_s=30) as client:
            deadline = time.monotonic() + 60
            while not all(client.ready(m) for m in models):
                assert process.poll() is None, (tmp_path / "log").read_text()[-3000:]
                assert time.monotonic() < deadline, "models did not load in 60 s"
                time.sleep(0.5)
            pre = client.infer("axial_preprocess", {"IMAGE": image})
            outputs = Engine(onnx_path).infer({"images": pre["images"]})
            post = client.infer("axial_postprocess", {**outputs, "ORIGINAL_HW": pre["ORIGINAL_HW"]})
            # Reaches the model (Triton accepts the dims) and fails there alone, with a reason.
            with pytest.raises(ServeError, match="preprocess: ServeError: image must be HxWx3"):
                client.infer("axial_preprocess", {"IMAGE": image[:, :0]})
            again = client.infer("axial_preprocess", {"IMAGE": image})
    finally:
        process.terminate()
        process.wait(30)
    expected_pixels = np.stack([preprocess_image(one, (33, 33)) for one in image])
    np.testing.assert_allclose(pre["images"], expected_pixels, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(pre["ORIGINAL_HW"], [[45, 38], [45, 38]])
    np.testing.assert_array_equal(again["images"], pre["images"])
    step = PanopticStep(panoptic)
    expected = step(outputs["semantic"], outputs["center"], outputs["offset"], [(45, 38)] * 2)
    np.testing.assert_array_equal(post["PANOPTIC"], np.stack([ids for ids, _ in expected]))
    for got, (_, segments) in zip(post["SEGMENTS_INFO"].reshape(-1), expected, strict=True):
        assert json.loads(got) == segments
