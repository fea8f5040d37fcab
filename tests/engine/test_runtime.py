"""Runtime: manifest checks, profile-shape checks, the ONNX Runtime path; engines on GPUs."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from engine_helpers import conv_net

from axial_deploy.engine.build import BuildOptions, build_engine
from axial_deploy.engine.manifest import (
    Environment,
    ManifestError,
    check_manifest,
    read_manifest,
    write_manifest,
)
from axial_deploy.engine.runtime import Engine, EngineError, TensorMeta, check_feed


def _manifest(**changes):
    from axial_deploy.engine.manifest import Manifest

    base = Manifest(
        backend="tensorrt",
        tensorrt_version="10.13.0.35",
        cuda_version="12.9",
        gpu_name="NVIDIA A10",
        sm="8.6",
        precision="strongly-typed fp16",
        profiles=[],
        inputs=[],
        outputs=[],
        onnx_sha256="0" * 64,
        engine_sha256="1" * 64,
        plugin_library="build/lib/libaxial_attention_plugin.so",
        plugin_sha256="2" * 64,
    )
    return dataclasses.replace(base, **changes)


MATCHING = Environment("tensorrt", "10.13.0.35", "12.9", "NVIDIA A10", "8.6", "2" * 64)


def test_matching_environment_passes():
    check_manifest(_manifest(), MATCHING)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (dataclasses.replace(MATCHING, tensorrt_version="10.9.0.34"), "running 10.9.0.34"),
        (dataclasses.replace(MATCHING, tensorrt_version=None), "running none installed"),
        (dataclasses.replace(MATCHING, sm="9.0", gpu_name="H100"), "SM 8.6 .*is SM 9.0"),
        (dataclasses.replace(MATCHING, plugin_sha256=None), "none is found: .*make plugins"),
        (dataclasses.replace(MATCHING, plugin_sha256="3" * 64), "plugin library differs"),
        (dataclasses.replace(MATCHING, backend="tensorrt-rtx"), "--backend tensorrt-rtx"),
    ],
)
def test_each_mismatch_is_named(environment, message):
    with pytest.raises(ManifestError, match=message):
        check_manifest(_manifest(), environment)


def test_all_mismatches_are_listed_and_serialized_plugins_need_no_library():
    other = Environment("tensorrt", "11.0.0", None, "H100", "9.0", None)
    with pytest.raises(ManifestError) as caught:
        check_manifest(_manifest(), other)
    assert str(caught.value).count("\n  - ") == 3
    check_manifest(_manifest(plugin_serialized=True), dataclasses.replace(MATCHING, sm=None))


def test_tampered_engine_is_refused(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine bytes")
    from axial_deploy.engine.manifest import sha256_file

    write_manifest(_manifest(engine_sha256=sha256_file(engine)), engine)
    check_manifest(read_manifest(engine), MATCHING, engine_sha256=sha256_file(engine))
    engine.write_bytes(b"engine bytes, modified")
    with pytest.raises(ManifestError, match="engine was modified or replaced"):
        check_manifest(read_manifest(engine), MATCHING, engine_sha256=sha256_file(engine))


def test_missing_manifest_says_rebuild(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(ManifestError, match=r"no manifest .*rebuild"):
        Engine(tmp_path / "m.engine")


def test_rtx_engine_manifest_is_checked_before_loading(tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed")
    engine = tmp_path / "net.engine"
    build_engine(conv_net(tmp_path / "net.onnx"), engine, BuildOptions("tensorrt-rtx"))
    manifest = read_manifest(engine)
    write_manifest(dataclasses.replace(manifest, tensorrt_version="1.0.0.1"), engine)
    with pytest.raises(ManifestError, match=r"built with tensorrt-rtx 1\.0\.0\.1, running 1\.7"):
        Engine(engine)


def test_engine_without_a_gpu_says_so(tmp_path):
    """Every binding refuses with one line naming the problem; the Polygraphy binding gets
    this far on any machine with the CUDA runtime library (here: the toolkit's libcudart)."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed")
    from axial_deploy.engine.environment import cuda_device_info

    if cuda_device_info()[1] is not None:
        pytest.skip("a GPU is present: the engine runs (test_engine_on_a_gpu_...)")
    engine = tmp_path / "net.engine"
    build_engine(conv_net(tmp_path / "net.onnx"), engine, BuildOptions("tensorrt-rtx"))
    with pytest.raises(EngineError, match=r"cuda-python is not installed|no CUDA GPU found"):
        Engine(engine)
    with pytest.raises(EngineError, match=r"pycuda is not installed|no CUDA GPU|pycuda cannot"):
        Engine(engine, cuda="pycuda")
    with pytest.raises(EngineError) as caught:
        Engine(engine, cuda="polygraphy")
    message = str(caught.value)
    if "no CUDA runtime library" in message:
        pytest.skip("no libcudart on this machine: Polygraphy's binding stops before the GPU")
    # the CUDA runtime's own error name (35 no driver, 100 no device), then the way out
    assert re.match(r"no CUDA GPU found \(the CUDA runtime reports cudaError\w+ \(\d+\)\)", message)
    assert "run the .onnx model instead" in message


def test_polygraphy_cuda_errors_are_named():
    """Polygraphy's CUDA wrapper raises 'CUDA Error: N' (a number and a link); the binding
    re-raises it naming the call and the CUDA runtime's name for N. Real calls: on a machine
    with the CUDA runtime but no GPU, Polygraphy's own cudaStreamCreate fails."""
    from axial_deploy.engine.cuda.polygraphy_binding import (
        cuda_error_name,
        polygraphy_cuda_errors,
        polygraphy_cudart,
    )
    from axial_deploy.engine.environment import cuda_device_info

    if cuda_device_info()[1] is not None:
        pytest.skip("a GPU is present: Polygraphy's calls succeed")
    from polygraphy import cuda as pg_cuda

    try:
        lib = polygraphy_cudart()
    except OSError as error:
        pytest.skip(f"no CUDA runtime library for Polygraphy to load: {error}")
    assert cuda_error_name(lib, 100) == "cudaErrorNoDevice (100)"
    named = r"^cudaStreamCreate failed: cudaError\w+ \(\d+\)$"
    with pytest.raises(EngineError, match=named), polygraphy_cuda_errors(lib, "cudaStreamCreate"):
        pg_cuda.Stream()


def test_unknown_cuda_binding_lists_the_choices(tmp_path):
    model = conv_net(tmp_path / "net.onnx")
    with pytest.raises(EngineError, match=r"expected one of cuda-python, pycuda, polygraphy"):
        Engine(model, cuda="cupy")


PROFILED = TensorMeta(
    "input", np.dtype(np.float32), (-1, 3, -1, 16), ((1, 3, 8, 16), (2, 3, 16, 16), (4, 3, 32, 16))
)


def test_feed_checks():
    check_feed({"input": (4, 3, 32, 16)}, [PROFILED])
    check_feed({"input": (1, 3, 8, 16)}, [PROFILED])
    with pytest.raises(EngineError, match=r"outside .*profile: axis 0 is 5, allowed 1\.\.4"):
        check_feed({"input": (5, 3, 16, 16)}, [PROFILED])
    with pytest.raises(EngineError, match=r"axis 2 is 33, allowed 8\.\.32.*--shapes input:"):
        check_feed({"input": (1, 3, 33, 16)}, [PROFILED])
    with pytest.raises(EngineError, match="axis 3 must be 16"):
        check_feed({"input": (1, 3, 16, 17)}, [PROFILED])
    with pytest.raises(EngineError, match="rank 3"):
        check_feed({"input": (3, 16, 16)}, [PROFILED])
    with pytest.raises(EngineError, match=r"\['input'\] missing, \['image'\] unknown"):
        check_feed({"image": (1, 3, 16, 16)}, [PROFILED])


def test_onnxruntime_engine_runs_numpy_and_torch(tmp_path):
    engine = Engine(conv_net(tmp_path / "net.onnx", batch=2))
    assert [(m.name, m.shape) for m in engine.inputs] == [("input", (2, 3, 16, 16))]
    assert [(m.name, m.shape) for m in engine.outputs] == [("logits", (2, 4, 16, 16))]
    feed = engine.random_inputs(batch=2)
    out = engine.infer(feed)["logits"]
    assert isinstance(out, np.ndarray) and out.shape == (2, 4, 16, 16) and np.abs(out).max() > 0
    assert engine.last_inference_time > 0
    torch_out = engine.infer({"input": torch.from_numpy(feed["input"]).double()})["logits"]
    assert isinstance(torch_out, torch.Tensor)
    np.testing.assert_allclose(torch_out.numpy(), out, rtol=1e-6)
    with pytest.raises(EngineError, match="axis 0 must be 2"):
        engine.infer({"input": np.zeros((3, 3, 16, 16), np.float32)})
    with pytest.raises(EngineError, match="CUDA graphs need a TensorRT engine"):
        engine.enable_cuda_graph(feed)


def test_onnx_engine_closes(tmp_path):
    model = conv_net(tmp_path / "net.onnx", batch=2)
    with Engine(model) as engine:
        feed = engine.random_inputs(batch=2)
        assert engine.infer(feed)["logits"].shape == (2, 4, 16, 16)
        assert not engine.closed
    assert engine.closed
    engine.close()  # idempotent
    with pytest.raises(EngineError, match="the engine is closed"):
        engine.infer(feed)
    with pytest.raises(EngineError, match="the engine is closed"):
        _ = engine.inputs
    Engine(model).__del__()  # what garbage collection runs: closes without raising


def test_release_all_frees_newest_first_and_reports_the_first_failure():
    from axial_deploy.engine.cuda.common import release_all

    released = []

    def release(kind, handle):
        released.append(handle)
        if kind == "bad":
            raise RuntimeError(f"cannot free {handle}")

    owned = [("device", 1), ("bad", 2), ("host", 3), ("bad", 4), ("stream", 5)]
    with pytest.raises(EngineError, match="cannot free 4"):
        release_all(owned, release)
    assert released == [5, 4, 3, 2, 1] and owned == []  # all released despite the failures
    release_all(owned, release)  # nothing left: a second close does nothing
    assert released == [5, 4, 3, 2, 1]


CUDA_BINDINGS = [
    ("cuda-python", "cuda.bindings.runtime"),
    ("pycuda", "pycuda.driver"),
    ("polygraphy", "polygraphy.cuda"),
]


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize(("cuda", "cuda_module"), CUDA_BINDINGS, ids=[c for c, _ in CUDA_BINDINGS])
@pytest.mark.parametrize(
    ("backend", "module"), [("tensorrt", "tensorrt"), ("tensorrt-rtx", "tensorrt_rtx")]
)
def test_engine_on_a_gpu_matches_onnxruntime(tmp_path, backend, module, cuda, cuda_module):
    """The same checks through either CUDA binding: buffers, split timings, profile refusal,
    CUDA-graph replay, per-layer profiles, and close() releasing every handle it made."""
    pytest.importorskip(module, reason=f"{backend} not installed")
    pytest.importorskip(cuda_module, reason=f"{cuda} not installed")
    from axial_deploy.engine.environment import cuda_device_info

    if cuda_device_info()[1] is None:
        pytest.skip("no CUDA GPU")
    model = conv_net(tmp_path / "net.onnx")
    build_engine(model, tmp_path / "net.engine", BuildOptions(backend))
    engine, reference = Engine(tmp_path / "net.engine", cuda=cuda), Engine(model)
    assert engine.backend == backend
    for batch in (1, 3):
        feed = reference.random_inputs(batch=batch, seed=batch)
        np.testing.assert_allclose(
            engine.infer(feed)["logits"], reference.infer(feed)["logits"], rtol=1e-3, atol=1e-4
        )
        assert set(engine.last_split_ms) == {"h2d", "compute", "d2h"}
    with pytest.raises(EngineError, match="outside the engine's optimization profile"):
        engine.infer(reference.random_inputs(batch=9))
    feed = reference.random_inputs(batch=2)
    engine.enable_cuda_graph(feed)
    # new input values copied in, and shapes that alternate: each shape replays its own graph
    for seed, batch in ((2, 2), (3, 3), (4, 2), (5, 3), (6, 1), (7, 2)):
        feed = reference.random_inputs(batch=batch, seed=seed)
        np.testing.assert_allclose(
            engine.infer(feed)["logits"], reference.infer(feed)["logits"], rtol=1e-3, atol=1e-4
        )
    if backend == "tensorrt":  # TensorRT-RTX captures inside (its built-in CUDA graphs)
        assert len(engine._impl.graphs) == 3 and engine._impl.graphs.captures == 3
    layers = engine.profile_layers(feed, runs=3)
    assert layers and all(len(times) == 3 for times in layers.values())
    binding = engine._impl.cuda
    kinds = {kind for kind, _ in binding._owned}
    graphs = {"graph"} if backend == "tensorrt" else set()
    assert {"device", "host", "stream", "event"} | graphs <= kinds, kinds
    engine.close()
    assert binding._owned == [] and engine.closed
    with Engine(tmp_path / "net.engine", cuda=cuda) as again:  # a fresh one after the close
        np.testing.assert_allclose(
            again.infer(feed)["logits"], reference.infer(feed)["logits"], rtol=1e-3, atol=1e-4
        )


BINDING_CLASSES = {
    "cuda-python": "CudaPythonBinding",
    "pycuda": "PyCudaBinding",
    "polygraphy": "PolygraphyBinding",
}


@pytest.mark.gpu
@pytest.mark.parametrize(("cuda", "cuda_module"), CUDA_BINDINGS, ids=[c for c, _ in CUDA_BINDINGS])
def test_cuda_binding_round_trip_events_and_graph_replay(cuda, cuda_module):
    """Each binding alone, no TensorRT (so it runs on any GPU machine): pinned buffers, async
    copies there and back, event timing, and a captured graph of the copies replayed with new
    host values; close() releases every handle."""
    pytest.importorskip(cuda_module, reason=f"{cuda} not installed")
    from axial_deploy.engine.environment import cuda_device_info

    if cuda_device_info()[1] is None:
        pytest.skip("no CUDA GPU")
    from axial_deploy.engine import cuda as bindings

    binding = getattr(bindings, BINDING_CLASSES[cuda])()
    n = 1 << 16
    stream, start, end = binding.stream(), binding.event(), binding.event()
    device = binding.malloc(n * 4)
    host_in, host_out = binding.host(n * 4, np.float32), binding.host(n * 4, np.float32)
    host_in[:] = np.random.default_rng(0).standard_normal(n)
    binding.record(start, stream)
    binding.h2d(device, host_in, n * 4, stream)
    binding.d2h(host_out, device, n * 4, stream)
    binding.record(end, stream)
    binding.sync(stream)
    np.testing.assert_array_equal(host_out, host_in)
    assert binding.elapsed_ms(start, end) >= 0
    binding.begin_capture(stream)
    binding.h2d(device, host_in, n * 4, stream)
    binding.d2h(host_out, device, n * 4, stream)
    graph = binding.end_capture(stream)
    host_in[:] = np.arange(n, dtype=np.float32)  # the graph copies whatever is there now
    binding.launch(graph, stream)
    binding.sync(stream)
    np.testing.assert_array_equal(host_out, np.arange(n, dtype=np.float32))
    binding.close()
    assert binding._owned == []


def test_cli_run_on_an_array_and_an_image(tmp_path, capsys):
    from PIL import Image

    from axial_deploy.cli import main
    from axial_deploy.models.preprocess import preprocess_for

    model = conv_net(tmp_path / "net.onnx", batch=1)
    array = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    assert (
        main(["run", str(model), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "a.npz")])
        == 0
    )
    expected = Engine(model).infer({"input": array})["logits"]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["logits"], expected)

    pixels = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    args = [
        "run",
        str(model),
        "--input",
        str(tmp_path / "image.png"),
        "-o",
        str(tmp_path / "b.npz"),
    ]
    assert main(args) == 0
    image = preprocess_for("classification", (16, 16)).load(tmp_path / "image.png")[None]
    expected = Engine(model).infer({"input": image})["logits"]
    np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["logits"], expected)
    assert "logits       [1, 4, 16, 16] float32" in capsys.readouterr().out

    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["run", str(model), "--input", str(tmp_path / "bad.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_cuda_flag_offers_every_binding_the_runtime_has():
    """--cuda (run, profile, serve) takes exactly the runtime's CUDA bindings."""
    import argparse

    from axial_deploy.cli.args import add_cuda_binding
    from axial_deploy.engine.cuda import CUDA_LIBRARIES

    parser = argparse.ArgumentParser()
    add_cuda_binding(parser)
    choices = next(a.choices for a in parser._actions if a.dest == "cuda")
    assert tuple(choices) == CUDA_LIBRARIES
