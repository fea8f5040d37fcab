"""The precision stage on zoo models with the rewritten graph: FP16 and INT8 graphs are valid
ONNX, run in ONNX Runtime, hold the expected node types, stay within stated tolerances of FP32
on inputs calibration did not see; bad calibration input fails clearly; the TensorRT cache
matches the graph's scales.

Stated tolerances (random live weights, see models/random_init.py; trained weights do better):
- axial26s 64x64, FP16: max rel error 1e-2 of the logits, top-1 agreement 100%;
- axial26s 64x64, INT8 (entropy, 2 calibration images): max rel error 0.35 of the logits;
- axial_deeplab_s 65x129 (slow): FP16 pixel agreement >= 95%; INT8 runs, finite outputs and
  pixel agreement >= 50% (a random attention net amplifies INT8 noise: measured ~74%).
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from PIL import Image

from axial_deploy.calibration.cache import read_cache
from axial_deploy.calibration.fp16 import check_strongly_typed
from axial_deploy.calibration.ranges import float_tensor_types
from axial_deploy.cli import main
from axial_deploy.export import export_onnx
from axial_deploy.models import create_model
from axial_deploy.quantize import QuantizeError, accuracy_report, quantize_file
from axial_deploy.rewrite import rewrite_file

from helpers import calibrate_batchnorm


def rewritten(folder: Path, name: str, shape: tuple[int, ...], classes: int) -> Path:
    torch.manual_seed(0)
    model = create_model(name, num_classes=classes)
    with torch.no_grad():
        calibrate_batchnorm(model, torch.randn(2, *shape[1:]), seed=0, residual_gain=0.1)
    source = export_onnx(model, shape, folder / f"{name}.onnx")
    target = folder / f"{name}.axial.onnx"
    rewrite_file(source, target)
    return target


@pytest.fixture(scope="session")
def classifier(tmp_path_factory) -> dict[str, Path]:
    """axial26s at 64x64, rewritten, and its FP16 (from an image folder) and INT8 (from an
    .npz file) versions, each calibrated on 2 inputs that the accuracy checks never see."""
    folder = tmp_path_factory.mktemp("quantize_axial26s")
    fp32 = rewritten(folder, "axial26s", (1, 3, 64, 64), classes=5)
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for number in range(2):
        pixels = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{number}.png")
    calib = folder / "calib.npz"
    np.savez(calib, images=rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    fp16, int8 = folder / "axial26s.fp16.onnx", folder / "axial26s.int8.onnx"
    reports = {
        "fp16": quantize_file(fp32, fp16, precision="fp16", calib=str(images), batches=2),
        "int8": quantize_file(fp32, int8, precision="int8", calib=str(calib), batches=2),
    }
    return {"folder": folder, "fp32": fp32, "fp16": fp16, "int8": int8, "reports": reports}


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {name: node for node in model.graph.node for name in node.output}


def test_fp16_graph_is_strongly_typed_fp16(classifier):
    model = onnx.load(classifier["fp16"])
    onnx.checker.check_model(model)
    assert check_strongly_typed(model) == []
    types = float_tensor_types(model)
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert initializers[node.input[1]].data_type == TensorProto.FLOAT16, node.name
        if node.op_type == "AxialAttention":
            assert types[node.input[0]] == types[node.output[0]] == TensorProto.FLOAT16
    # FP32 graph I/O with one Cast at each edge.
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert Counter(node.op_type for node in model.graph.node)["Cast"] == 2
    report = classifier["reports"]["fp16"]
    assert report.kept_fp32 == {} and "2 images" in report.calibration


def test_int8_graph_places_qdq_where_tensorrt_fuses(classifier):
    model = onnx.load(classifier["int8"])
    onnx.checker.check_model(model)
    assert check_strongly_typed(model) == []
    made_by = producers(model)
    initializers = {init.name: init for init in model.graph.initializer}
    types = float_tensor_types(model)

    def is_qdq(tensor: str) -> bool:
        dq = made_by.get(tensor)
        return (
            dq is not None
            and dq.op_type == "DequantizeLinear"
            and (made_by[dq.input[0]].op_type == "QuantizeLinear")
        )

    convs = [node for node in model.graph.node if node.op_type in ("Conv", "Gemm")]
    assert len(convs) == 38
    for node in convs:
        assert is_qdq(node.input[0]), node.name  # activation: Q -> DQ
        weight_dq = made_by[node.input[1]]  # weight: INT8 initializer -> per-channel DQ
        assert weight_dq.op_type == "DequantizeLinear"
        weight = initializers[weight_dq.input[0]]
        assert weight.data_type == TensorProto.INT8
        axis = next(a.i for a in weight_dq.attribute if a.name == "axis")
        channels = weight.dims[axis]
        assert list(initializers[weight_dq.input[1]].dims) == [channels]
        assert not numpy_helper.to_array(initializers[weight_dq.input[2]]).any()  # symmetric
        if len(node.input) > 2:  # bias stays float, unquantized
            assert initializers[node.input[2]].data_type == TensorProto.FLOAT
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = numpy_helper.to_array(initializers[node.input[2]])
            assert zero.dtype == np.int8 and not zero.any()
        if node.op_type == "Add":  # residual: the non-Conv input is read as INT8
            sources = [made_by[name].op_type for name in node.input]
            assert "Conv" in sources and sum(is_qdq(name) for name in node.input) == 1
        if node.op_type == "AxialAttention":  # FP16 I/O behind Casts
            assert types[node.input[0]] == types[node.output[0]] == TensorProto.FLOAT16
            assert made_by[node.input[0]].op_type == "Cast"
    report = classifier["reports"]["int8"]
    assert report.residual_adds == 8 and report.int8_weights == 38


def test_calibration_cache_matches_the_graph_scales(classifier):
    report = classifier["reports"]["int8"]
    cache = read_cache(report.cache)
    assert Path(report.cache) == classifier["int8"].with_suffix(".calib")
    assert cache.algorithm == "EntropyCalibration2"
    model = onnx.load(classifier["int8"])
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    fp32_tensors = {
        name for node in onnx.load(classifier["fp32"]).graph.node for name in node.output
    }
    assert set(cache.scales) <= fp32_tensors | {"images"}
    checked = 0
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            assert cache.scales[node.input[0]] == pytest.approx(float(initializers[node.input[1]]))
            checked += 1
    assert checked == 38


def test_accuracy_on_held_out_inputs_and_compare_cli(classifier, capsys):
    report = accuracy_report(
        classifier["fp32"],
        {"fp16": classifier["fp16"], "int8": classifier["int8"]},
        batches=2,
        seed=1,
    )
    assert report.task == "classification"
    fp16, int8 = report.candidates["fp16"], report.candidates["int8"]
    assert fp16.outputs["logits"].max_rel < 1e-2 and fp16.top1_agreement == 1.0
    assert 0 < int8.outputs["logits"].max_rel < 0.35
    assert "top-1" in report.summary()
    # The CLI writes the same report as JSON.
    out = classifier["folder"] / "accuracy.json"
    code = main(
        [
            "compare",
            str(classifier["fp32"]),
            f"fp16={classifier['fp16']}",
            "--batches",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0 and "fp16" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["candidates"]["fp16"]["outputs"]["logits"]["max_rel"] < 1e-2


def test_bad_calibration_input_fails_clearly(classifier, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    np.save(tmp_path / "small.npy", np.zeros((2, 3, 32, 32), np.float32))
    out = tmp_path / "never.onnx"
    for calib, message in [(empty, "holds no images"), (tmp_path / "small.npy", "does not fit")]:
        code = main(
            [
                "quantize",
                str(classifier["fp32"]),
                "--precision",
                "int8",
                "--calib",
                str(calib),
                "-o",
                str(out),
            ]
        )
        error = capsys.readouterr().err
        assert code == 2 and "axial-deploy quantize: error:" in error and message in error
    assert not out.exists() and not out.with_suffix(".calib").exists()
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_file(classifier["int8"], out, precision="int8")


@pytest.mark.skipif(importlib.util.find_spec("modelopt") is not None, reason="ModelOpt installed")
def test_modelopt_quantizer_says_how_to_install_it(classifier, tmp_path):
    with pytest.raises(QuantizeError, match=r"pip install 'nvidia-modelopt\[onnx\]'"):
        quantize_file(
            classifier["fp32"],
            tmp_path / "m.onnx",
            precision="int8",
            batches=1,
            quantizer="modelopt",
        )
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_panoptic_model_fp16_and_int8(tmp_path):
    fp32 = rewritten(tmp_path, "axial_deeplab_s", (1, 3, 65, 129), classes=4)
    fp16, int8 = tmp_path / "s.fp16.onnx", tmp_path / "s.int8.onnx"
    quantize_file(fp32, fp16, precision="fp16", batches=1)
    result = quantize_file(fp32, int8, precision="int8", method="minmax", batches=1)
    assert result.int8_weights == result.ops["Conv"]
    assert check_strongly_typed(onnx.load(fp16)) == []
    report = accuracy_report(fp32, {"fp16": fp16, "int8": int8}, batches=1, seed=1)
    assert report.task == "panoptic"
    assert report.candidates["fp16"].pixel_agreement >= 0.95
    int8_result = report.candidates["int8"]
    assert all(np.isfinite(e.max_abs) for e in int8_result.outputs.values())
    assert int8_result.pixel_agreement >= 0.5 and 0 <= int8_result.miou <= 1


def build_strongly_typed(trt, path: Path) -> tuple[bool, list[str], int]:
    """Parse and build `path` as a strongly typed TensorRT(-RTX) network: (built, parser
    errors, number of Quantize layers)."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flag)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        return False, [parser.get_error(i).desc() for i in range(parser.num_errors)], 0
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    tensor = network.get_input(0)
    shape = [1 if d < 0 else d for d in tensor.shape]
    profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    layers = [network.get_layer(i).type for i in range(network.num_layers)]
    built = builder.build_serialized_network(network, config) is not None
    return built, [], layers.count(trt.LayerType.QUANTIZE)


@pytest.mark.tensorrt
def test_tensorrt_rtx_builds_fp16_and_int8_as_strongly_typed(classifier, tmp_path):
    """TensorRT-RTX has no plugin layer, so this builds the graph *before* the rewrite (same
    conversion rules; its Softmax / ReduceSum stay FP32 behind Casts): what a strongly typed
    TensorRT network accepts without any precision flag."""
    trt = pytest.importorskip("tensorrt_rtx", reason="pip install '.[rtx]' (TensorRT-RTX)")
    plain = classifier["folder"] / "axial26s.onnx"  # the export, without AxialAttention nodes
    fp16, int8 = tmp_path / "plain.fp16.onnx", tmp_path / "plain.int8.onnx"
    quantize_file(plain, fp16, precision="fp16", batches=1)
    quantize_file(plain, int8, precision="int8", method="minmax", batches=1)
    for path, quantize_layers in [(fp16, 0), (int8, 38)]:
        built, errors, quantizers = build_strongly_typed(trt, path)
        assert built and not errors, (path.name, errors)
        assert quantizers == quantize_layers
