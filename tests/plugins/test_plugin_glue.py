"""The TensorRT plugin glue: its fields match the spec, it compiles against TensorRT headers,
and (where TensorRT and a GPU exist) a one-node network runs and matches the reference op."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from trt_headers import newest_include

from axial_deploy.op import spec as op_spec

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "plugins" / "axial_attention"
PLUGIN_LIB = REPO / "build" / "lib" / "libaxial_attention_plugin.so"
# The plugin's single field table (kFIELDS): intField("name", ...) / tableField("name", ...).
FIELD_RE = re.compile(r'\b(intField|tableField)\("(\w+)",')
FIELD_TYPES = {"intField": "kINT32", "tableField": "kFLOAT32"}


def test_plugin_fields_match_spec() -> None:
    """The field table's entries (name, type, order-free) equal the spec's attributes (a source
    check that needs no headers; tests/plugins/test_plugin_harness.py checks the running plugin)."""
    source = (PLUGIN_DIR / "axialAttentionPlugin.cpp").read_text()
    fields = [(name, FIELD_TYPES[kind]) for kind, name in FIELD_RE.findall(source)]
    assert len(fields) == len(set(fields)), "duplicate entry in kFIELDS"
    spec = op_spec.load_spec()["versions"]["1"]["attributes"]
    expected = {(name, attr["field_type"]) for name, attr in spec.items()}
    assert set(fields) == expected


def test_plugin_identity_matches_spec() -> None:
    source = (PLUGIN_DIR / "axialAttentionPlugin.cpp").read_text()
    version = op_spec.load_spec()["versions"]["1"]
    assert 'kPLUGIN_NAME = "AxialAttention"' in source
    assert 'kPLUGIN_VERSION = "1"' in source
    assert f'kPLUGIN_NAMESPACE = "{version["namespace"]}"' in source


def test_cmake_compile_only_check(tmp_path: Path) -> None:
    """With only TensorRT headers, cmake/TensorRTPlugin.cmake compile-checks the glue."""
    include = os.environ.get("AXIAL_DEPLOY_TENSORRT_INCLUDE")
    headers = os.environ.get("AXIAL_DEPLOY_TRT_HEADERS")  # what .ci/run exports
    if not include and headers:
        include = str(newest_include() or headers)
    if not include or not (Path(include) / "NvInferRuntime.h").is_file():
        pytest.skip(
            "set AXIAL_DEPLOY_TRT_HEADERS (folder of <version>/include) or "
            "AXIAL_DEPLOY_TENSORRT_INCLUDE to TensorRT headers (not in the repo)"
        )
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    root = tmp_path / "src"
    root.mkdir()
    (root / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(check LANGUAGES CXX)\n"
        f'include("{REPO / "cmake" / "TensorRTPlugin.cmake"}")\n'
    )
    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", root, "-B", build, f"-DTENSORRT_INCLUDE_DIR={include}",
         "-DTENSORRT_LIB_DIR=/nonexistent"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert configure.returncode == 0, configure.stderr
    assert "compile-only check" in configure.stdout
    compiled = subprocess.run(
        ["cmake", "--build", build], capture_output=True, text=True, check=False
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert "warning" not in compiled.stdout.lower(), compiled.stdout


def _case(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    g, dq, dv, t = 2, 4, 8, 9
    return {
        "qkv": rng.standard_normal((2, g * (2 * dq + dv), 6, 7)).astype(np.float32),
        "rel_q": rng.standard_normal((g, dq, t)).astype(np.float32) * 0.3,
        "rel_k": rng.standard_normal((g, dq, t)).astype(np.float32) * 0.3,
        "rel_v": rng.standard_normal((g, dv, t)).astype(np.float32) * 0.3,
        "logit_scale": rng.uniform(0.2, 0.6, g).astype(np.float32),
        "out_bias": rng.standard_normal(g * dv).astype(np.float32),
        "attrs": op_spec.AxialAttentionAttributes(3, g, dq, dv, 5),
    }


def _reference(case: dict, qkv: np.ndarray) -> np.ndarray:
    import torch

    from axial_deploy.models.axial_attention import axial_attention_op

    names = ("rel_q", "rel_k", "rel_v", "logit_scale", "out_bias")
    tables = [torch.from_numpy(case[n]).double() for n in names]
    with torch.no_grad():
        y = axial_attention_op(torch.from_numpy(qkv).double(), *tables, case["attrs"])
    return y.numpy()


def _run_engine(trt, network, builder, qkv: np.ndarray, fp16: bool) -> np.ndarray:
    import torch

    # Strongly typed: the input's dtype decides the plugin's (BuilderFlag.FP16 is TensorRT 10's
    # weak typing, removed in 11; see axial_deploy/engine/tensorrt_api.py).
    config = builder.create_builder_config()
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "engine build failed"
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    dtype = torch.float16 if fp16 else torch.float32
    x = torch.from_numpy(qkv).to("cuda", dtype)
    out_name = engine.get_tensor_name(1)
    y = torch.empty(tuple(context.get_tensor_shape(out_name)), device="cuda", dtype=dtype)
    context.set_tensor_address(engine.get_tensor_name(0), x.data_ptr())
    context.set_tensor_address(out_name, y.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return y.float().cpu().numpy()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("path", ["network", "onnx"])
@pytest.mark.parametrize("fp16", [False, True])
def test_plugin_runs_in_tensorrt(path: str, fp16: bool) -> None:
    trt = pytest.importorskip("tensorrt", reason="TensorRT Python package not installed")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not PLUGIN_LIB.is_file():
        pytest.skip(f"{PLUGIN_LIB} not built (cmake -DTENSORRT_ROOT=... && cmake --build)")
    logger = trt.Logger(trt.Logger.WARNING)
    registry = trt.get_plugin_registry()
    registry.load_library(str(PLUGIN_LIB))
    case = _case()
    qkv = case["qkv"].astype(np.float16).astype(np.float32) if fp16 else case["qkv"]
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    tables = ("rel_q", "rel_k", "rel_v", "logit_scale", "out_bias")
    if path == "network":
        creator = registry.get_creator("AxialAttention", "1", "axial_deploy")
        assert creator is not None
        # The spec's field list ("kINT32" -> trt.PluginFieldType.INT32, "kFLOAT32" -> FLOAT32).
        fields = [
            trt.PluginField(f.name, f.data, getattr(trt.PluginFieldType, f.field_type[1:]))
            for f in op_spec.plugin_fields({n: case[n] for n in tables}, case["attrs"])
        ]
        plugin = creator.create_plugin(
            "axial", trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD
        )
        dtype = trt.float16 if fp16 else trt.float32
        x = network.add_input("qkv", dtype, qkv.shape)
        layer = network.add_plugin_v3([x], [], plugin)
        network.mark_output(layer.get_output(0))
    else:
        import onnx

        node = op_spec.make_node(
            "qkv", "y", **{n: case[n] for n in tables}, attributes=case["attrs"]
        )
        elem = onnx.TensorProto.FLOAT16 if fp16 else onnx.TensorProto.FLOAT
        g = case["attrs"].out_channels
        graph = onnx.helper.make_graph(
            [node], "one_node",
            [onnx.helper.make_tensor_value_info("qkv", elem, qkv.shape)],
            [onnx.helper.make_tensor_value_info("y", elem, (qkv.shape[0], g, *qkv.shape[2:]))],
        )  # fmt: skip
        model = onnx.helper.make_model(
            graph, opset_imports=[onnx.helper.make_opsetid("", 17), op_spec.opset_import()]
        )
        parser = trt.OnnxParser(network, logger)
        ok = parser.parse(model.SerializeToString())
        assert ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    got = _run_engine(trt, network, builder, qkv, fp16)
    expected = _reference(case, qkv)
    err = np.abs(got - expected).max() / np.abs(expected).max()
    assert err < (2e-3 if fp16 else 1e-5), err
