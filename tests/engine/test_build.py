"""Engine builds for real with TensorRT-RTX (CPU-only ahead-of-time build), manifest checked."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from engine_helpers import axial_net, conv_net

from axial_deploy.cli import main
from axial_deploy.engine.build import (
    DEFAULT_MAX_BATCH,
    BuildError,
    BuildOptions,
    build_engine,
    parse_shape_spec,
    resolve_profile,
    rewritten_layer_blocks,
)
from axial_deploy.engine.manifest import manifest_path, read_manifest, sha256_file

trt_rtx = pytest.importorskip(
    "tensorrt_rtx", reason="TensorRT-RTX not installed: pip install 'axial-deploy[rtx]'"
)


def test_rtx_build_writes_engine_and_manifest(tmp_path):
    model = conv_net(tmp_path / "net.onnx")
    engine = tmp_path / "out" / "net.engine"
    options = BuildOptions(
        backend="tensorrt-rtx",
        shapes={"input": ((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))},
        timing_cache=tmp_path / "timing.cache",
        workspace_mb=64,
    )
    built = build_engine(model, engine, options)

    assert engine.stat().st_size > 1000
    manifest = json.loads(manifest_path(engine).read_text())
    assert manifest == json.loads(built.to_json())
    assert manifest["backend"] == "tensorrt-rtx"
    assert manifest["tensorrt_version"] == trt_rtx.__version__
    assert manifest["onnx_sha256"] == sha256_file(model)
    assert manifest["engine_sha256"] == sha256_file(engine)
    assert manifest["precision"] == "strongly-typed fp32"
    assert manifest["profiles"] == [{"input": [[1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16]]}]
    assert manifest["inputs"] == [
        {"name": "input", "dtype": "float32", "shape": [-1, 3, 16, 16], "mode": "input"}
    ]
    assert manifest["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": [-1, 4, 16, 16], "mode": "output"}
    ]
    assert manifest["plugin_library"] is None and manifest["sm"] is None
    assert read_manifest(engine).engine_sha256 == manifest["engine_sha256"]
    assert sorted(p.name for p in engine.parent.iterdir()) == ["net.engine", "net.engine.json"]

    # TensorRT-RTX picks kernels at load time: a timing cache is noted as unused, not written.
    assert "TensorRT-RTX has no timing cache" in manifest["extra"]["timing_cache"]
    assert not (tmp_path / "timing.cache").exists()


def test_cli_build_derives_the_batch_profile(tmp_path, capsys):
    model = conv_net(tmp_path / "net.onnx")
    engine = tmp_path / "net.engine"
    assert main(["build", str(model), "--backend", "tensorrt-rtx", "-o", str(engine)]) == 0
    assert "profile input: min [1, 3, 16, 16] opt [1, 3, 16, 16]" in capsys.readouterr().out
    profile = read_manifest(engine).profiles[0]["input"]
    assert profile[2] == [DEFAULT_MAX_BATCH, 3, 16, 16]


def test_axial_attention_on_rtx_names_the_nodes_and_the_fix(tmp_path, capsys):
    model = axial_net(tmp_path / "axial.onnx")
    engine = tmp_path / "axial.engine"
    code = main(["build", str(model), "--backend", "tensorrt-rtx", "-o", str(engine)])
    error = capsys.readouterr().err
    assert code == 2
    assert "1 AxialAttention node(s) (axial_attention_0)" in error
    assert "--backend tensorrt --plugins" in error and "before `axial-deploy rewrite`" in error
    assert not engine.exists() and not manifest_path(engine).exists()


def test_parser_errors_are_reported(tmp_path):
    model = onnx.load(conv_net(tmp_path / "net.onnx"))
    model.graph.node[1].op_type = "NoSuchOp"
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(BuildError, match=r"(?s)ONNX parser rejects .*NoSuchOp.*no layer or plugin"):
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.engine", BuildOptions("tensorrt-rtx"))


def test_missing_and_corrupt_models_are_refused(tmp_path):
    with pytest.raises(BuildError, match="no such file"):
        build_engine(tmp_path / "none.onnx", tmp_path / "x.engine", BuildOptions("tensorrt-rtx"))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\xff not protobuf")
    with pytest.raises(BuildError, match="not a readable ONNX model"):
        build_engine(corrupt, tmp_path / "x.engine", BuildOptions("tensorrt-rtx"))
    assert not (tmp_path / "x.engine").exists()


def test_shape_specs_and_profiles(tmp_path):
    assert parse_shape_spec("input:1x3x8x8/2x3x8x8/4x3x8x8") == (
        "input",
        ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)),
    )
    assert parse_shape_spec("x:2x3")[1] == ((2, 3), (2, 3), (2, 3))
    for bad in ["input", "input:1x3/2x3", "input:4x3/2x3/1x3", "input:0x3", "a:1xb"]:
        with pytest.raises(BuildError):
            parse_shape_spec(bad)
    model = onnx.load(conv_net(tmp_path / "net.onnx"))
    with pytest.raises(BuildError, match="axis 2 is fixed to 16"):
        resolve_profile(model, {"input": ((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))})
    with pytest.raises(BuildError, match="not inputs of the graph"):
        resolve_profile(model, {"image": ((1, 3, 16, 16),) * 3})
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(BuildError, match=r"dynamic axis 2 \('H'\).*--shapes input:"):
        resolve_profile(model)


def test_legacy_flags_are_refused_on_rtx(tmp_path):
    model = conv_net(tmp_path / "net.onnx")
    with pytest.raises(BuildError, match="TensorRT-RTX is strongly typed"):
        build_engine(model, tmp_path / "e.engine", BuildOptions("tensorrt-rtx", fp16=True))


def test_rtx_build_of_an_fp16_graph_keeps_its_types(tmp_path):
    model = conv_net(tmp_path / "half.onnx", dtype=np.float16)
    manifest = build_engine(model, tmp_path / "half.engine", BuildOptions("tensorrt-rtx"))
    assert manifest.precision == "strongly-typed fp16"
    assert [t.dtype for t in manifest.inputs + manifest.outputs] == ["float16", "float16"]


def test_rewritten_layers_map_to_their_blocks(tmp_path):
    model = onnx.load(axial_net(tmp_path / "axial.onnx"))
    graph = model.graph
    graph.input[0].name = "x"
    graph.node.insert(0, onnx.helper.make_node("Relu", ["x"], ["r"], "/layer3/layer3.1/relu/Relu"))
    graph.node.insert(1, onnx.helper.make_node("Relu", ["r"], ["qkv"], "axial_attention_0/qkv"))
    assert rewritten_layer_blocks(model) == {"axial_attention_0": "layer3"}
