"""FP8 (E4M3) Q/DQ graphs: placement, ONNX Runtime parity, layer-wise comparison, the engine
build for an FP8-capable GPU (TensorRT-RTX here, TensorRT on a GPU), and the one-line refusal
on GPUs without FP8.

Stated tolerances (FP8 E4M3 keeps 3 mantissa bits: a value's rounding error is at most 2^-4 of
it, ~2.5% RMS on spread-out values; measured values in brackets):
- one Q/DQ pair in ONNX Runtime: bit-exact against ml_dtypes' float8_e4m3fn rounding;
- conv net (two Conv, a residual Add, Gemm), FP8 vs FP32 on random non-zero inputs: relative
  RMS error of the logits <= 0.08 and > 0.002 (it did quantize) [0.016, 0.019];
- axial26s 64x64 with random live weights, 38 quantized layers: relative RMS error of the
  logits <= 0.35 [0.23 rewritten and plain; INT8 0.04]: E4M3 rounding of every layer input
  compounds (INT8's per-tensor steps are finer on this net; see docs/precision.md).
"""

from __future__ import annotations

import importlib.util
from collections import Counter

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from test_quantize import rewritten
from torch import nn

from axial_deploy.calibration.fp16 import check_strongly_typed
from axial_deploy.calibration.ranges import float_tensor_types
from axial_deploy.checks.layerwise import layerwise_compare
from axial_deploy.cli import main
from axial_deploy.engine import build as build_module
from axial_deploy.engine.build import (
    BuildError,
    BuildOptions,
    build_engine,
    describe_precision,
    fp8_support_problem,
    parse_sm,
)
from axial_deploy.export import export_onnx
from axial_deploy.op.ort import create_session
from axial_deploy.quantize import QuantizeError, quantize_file

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def relative_rms(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def opset(model: onnx.ModelProto) -> int:
    return next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))


@pytest.fixture(scope="module")
def axial26s(tmp_path_factory) -> dict:
    """axial26s 64x64 (plain export and rewritten) and their FP8 graphs, calibrated (minmax)
    on 2 inputs from an .npy file."""
    folder = tmp_path_factory.mktemp("fp8_axial26s")
    fp32 = rewritten(folder, "axial26s", (1, 3, 64, 64), classes=5)
    calib = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.save(folder / "calib.npy", calib)
    out = {"folder": folder, "fp32": fp32, "plain": folder / "axial26s.onnx", "calib": calib}
    for name in ("fp32", "plain"):
        target = out[name].with_suffix(".fp8.onnx")
        out[f"{name}_report"] = quantize_file(
            out[name], target, precision="fp8", calib=str(folder / "calib.npy"), batches=2
        )
        out[f"{name}_fp8"] = target
    return out


# ------------------------------------------------------------------ which GPUs have FP8


@pytest.mark.parametrize(
    ("sm", "gpu", "has_fp8"),
    [
        ("7.5", "Tesla T4 (Turing)", False),
        ("8.0", "A100 (Ampere)", False),
        ("8.6", "RTX 3090 (Ampere)", False),
        ("8.7", "Jetson AGX Orin", False),
        ("8.9", "L4 / RTX 4090 (Ada)", True),
        ("9.0", "H100 / H200 (Hopper)", True),
        ("10.0", "B200 (Blackwell)", True),
        ("11.0", "Jetson Thor (Blackwell, CUDA 13)", True),
        ("12.0", "RTX 5090 (Blackwell)", True),
        ("sm_120", "RTX PRO 6000", True),
        ("89", "L40S", True),
    ],
)
def test_fp8_support_is_a_function_of_compute_capability(sm, gpu, has_fp8):
    problem = fp8_support_problem(sm, gpu)
    assert (problem is None) == has_fp8
    if problem:
        assert "\n" not in problem and gpu in problem and "8.9 or newer" in problem


def test_compute_capability_spellings():
    assert parse_sm("8.9") == parse_sm("sm_89") == parse_sm("89") == (8, 9)
    assert parse_sm("12.0") == parse_sm("sm120") == (12, 0)
    with pytest.raises(BuildError, match=r"MAJOR\.MINOR"):
        parse_sm("ada")


# ------------------------------------------------------------------ the graph


def test_fp8_graph_places_e4m3_qdq_where_tensorrt_fuses(axial26s):
    model = onnx.load(axial26s["fp32_fp8"])
    onnx.checker.check_model(model)
    assert opset(model) == 19 and opset(onnx.load(axial26s["fp32"])) == 17
    assert check_strongly_typed(model) == []
    assert describe_precision(model, False, False) == "strongly-typed fp8 q/dq"
    made_by = {name: node for node in model.graph.node for name in node.output}
    initializers = {init.name: init for init in model.graph.initializer}
    arrays = {name: numpy_helper.to_array(init) for name, init in initializers.items()}
    assert TensorProto.INT8 not in {init.data_type for init in model.graph.initializer}
    fp32_weights = {
        init.name: numpy_helper.to_array(init)
        for init in onnx.load(axial26s["fp32"]).graph.initializer
    }

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
        assert is_qdq(node.input[0]), node.name
        weight_dq = made_by[node.input[1]]  # FP8 initializer -> per-channel DQ
        weight = initializers[weight_dq.input[0]]
        assert weight.data_type == TensorProto.FLOAT8E4M3FN
        axis = next(a.i for a in weight_dq.attribute if a.name == "axis")
        scales = arrays[weight_dq.input[1]]
        assert scales.shape == (weight.dims[axis],)
        # per channel, the largest |w| lands on 448 (E4M3's largest value): its scale is
        # amax / 448, and the dequantized weight keeps each channel's max exactly
        original = fp32_weights[weight_dq.input[0].removesuffix("_fp8")]
        moved = np.moveaxis(np.abs(original), axis, 0).reshape(len(scales), -1).max(axis=1)
        np.testing.assert_allclose(scales * 448, moved, rtol=1e-6)
        quantized = np.moveaxis(np.abs(arrays[weight_dq.input[0]].astype(np.float32)), axis, 0)
        assert (quantized.reshape(len(scales), -1).max(axis=1) == 448).all()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = initializers[node.input[2]]
            assert zero.data_type == TensorProto.FLOAT8E4M3FN
            assert not arrays[node.input[2]].astype(np.float32).any()
        if node.op_type == "Add":  # residual: the non-Conv input is read as FP8
            assert sum(is_qdq(name) for name in node.input) == 1
        if node.op_type == "AxialAttention":  # FP16 between the DQ and the next Q
            types = float_tensor_types(model)
            assert types[node.input[0]] == types[node.output[0]] == TensorProto.FLOAT16
            assert made_by[node.input[0]].op_type == "Cast"
    # minmax: the input's scale is max |x| of the calibration data / 448
    (images_q,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and
                   n.input[0] == "images"]  # fmt: skip
    assert float(arrays[images_q.input[1]]) * 448 == pytest.approx(
        float(np.abs(axial26s["calib"]).max()), rel=1e-6
    )
    report = axial26s["fp32_report"]
    assert (report.int8_nodes, report.int8_weights, report.residual_adds) == (38, 38, 8)
    assert report.method == "minmax" and report.opset == 19 and report.cache is None
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["QuantizeLinear"] == 38 and ops["DequantizeLinear"] == 76
    assert "FP8 inputs" in report.summary()


def test_one_qdq_pair_is_e4m3_rounding_in_onnx_runtime(axial26s):
    """ONNX Runtime's FLOAT8E4M3FN QuantizeLinear/DequantizeLinear on the CPU round exactly as
    ml_dtypes' float8_e4m3fn cast (round to nearest even, saturating at 448)."""
    model = onnx.load(axial26s["fp32_fp8"])
    (q,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "images"]
    dq = next(
        n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]
    )
    scale = float(
        next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == q.input[1])
    )
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(dq.output[0], TensorProto.FLOAT, None)
    )
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32) * 1.5
    session = create_session(model)
    got = session.run([dq.output[0]], {"images": x})[0]
    expected = np.clip(x / np.float32(scale), -448, 448).astype(ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(got, expected.astype(np.float32) * np.float32(scale))
    assert 0 < relative_rms(got, x) <= 2**-4


class SmallNet(nn.Module):
    """Conv -> ReLU -> Conv + residual -> pool -> Linear: every op kind the placement covers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = torch.relu(self.conv(y) + y)
        return self.head(y.mean(dim=(2, 3)))


def test_fp8_graph_matches_fp32_in_onnx_runtime(tmp_path):
    torch.manual_seed(0)
    fp32 = export_onnx(SmallNet().eval(), (1, 3, 32, 32), tmp_path / "small.onnx")
    rng = np.random.default_rng(1)
    np.save(tmp_path / "calib.npy", rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    fp8 = tmp_path / "small.fp8.onnx"
    report = quantize_file(fp32, fp8, precision="fp8", calib=str(tmp_path / "calib.npy"), batches=4)
    assert (report.int8_nodes, report.residual_adds) == (3, 1)
    reference, candidate = create_session(str(fp32)), create_session(str(fp8))
    for seed in (2, 3):  # random non-zero inputs calibration never saw
        x = np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)
        want = reference.run(None, {reference.get_inputs()[0].name: x})[0]
        got = candidate.run(None, {candidate.get_inputs()[0].name: x})[0]
        assert 0.002 < relative_rms(got, want) <= 0.08


def test_axial26s_fp8_stays_within_tolerance_of_fp32(axial26s):
    x = np.random.default_rng(7).standard_normal((1, 3, 64, 64)).astype(np.float32)
    for fp32, fp8 in (("fp32", "fp32_fp8"), ("plain", "plain_fp8")):
        want = create_session(str(axial26s[fp32])).run(None, {"images": x})[0]
        got = create_session(str(axial26s[fp8])).run(None, {"images": x})[0]
        assert np.isfinite(got).all() and relative_rms(got, want) <= 0.35


def test_layerwise_on_an_fp8_graph(axial26s):
    report = layerwise_compare(axial26s["fp32"], axial26s["fp32_fp8"], batches=1)
    how = Counter(row.how for row in report.rows)
    assert how["qdq"] == 38 and not report.unmatched
    images = next(row for row in report.rows if row.how == "qdq" and row.reference == "images")
    assert 0.005 < images.error <= 2**-4  # E4M3 rounding of uniform [0, 1) inputs
    assert report.first_past is not None and "Q/DQ of" in report.summary(top=5)


# ------------------------------------------------------------------ CLI choices


def test_fp8_refuses_entropy_and_a_calibration_cache(axial26s, tmp_path, capsys):
    out = tmp_path / "never.onnx"
    args = ["quantize", str(axial26s["fp32"]), "--precision", "fp8", "-o", str(out)]
    assert main([*args, "--method", "entropy"]) == 2
    error = capsys.readouterr().err
    assert "--method minmax or percentile" in error and len(error.strip().splitlines()) == 1
    assert main([*args, "--cache", str(tmp_path / "c.calib")]) == 2
    assert "INT8 calibration cache" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_file(axial26s["fp32_fp8"], out, precision="fp8")


def test_percentile_calibration_clips_fp8_activations(axial26s, tmp_path):
    target = tmp_path / "p.fp8.onnx"
    calib = str(axial26s["folder"] / "calib.npy")
    report = quantize_file(axial26s["plain"], target, precision="fp8", method="percentile",
                           calib=calib, batches=2)  # fmt: skip
    assert report.method == "percentile"
    scales = {
        node.input[0]: node.input[1]
        for node in onnx.load(target).graph.node
        if node.op_type == "QuantizeLinear"
    }
    values = {i.name: numpy_helper.to_array(i) for i in onnx.load(target).graph.initializer}
    # 99.99th percentile of 24,576 values: below max |x|
    assert float(values[scales["images"]]) * 448 < float(np.abs(axial26s["calib"]).max())


# ------------------------------------------------------------------ engines


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_RTX, reason="pip install '.[rtx]' (TensorRT-RTX)")
def test_tensorrt_rtx_builds_the_plain_fp8_graph_for_ada(axial26s, tmp_path):
    """TensorRT-RTX compiles ahead of time on this CPU for a target compute capability (its
    builder config's `set_compute_capability`); the plain export (no AxialAttention nodes)."""
    engine = tmp_path / "plain.fp8.engine"
    options = BuildOptions(backend="tensorrt-rtx", compute_capability="8.9")
    manifest = build_engine(axial26s["plain_fp8"], engine, options)
    assert engine.stat().st_size > 0 and manifest.precision == "strongly-typed fp8 q/dq"
    assert manifest.extra["compute_capability"] == "8.9"
    # a target without FP8 is refused in one line, before the parser runs
    with pytest.raises(BuildError, match=r"^FP8 graph: compute capability 8\.6 has no FP8"):
        build_engine(axial26s["plain_fp8"], tmp_path / "no.engine",
                     BuildOptions(backend="tensorrt-rtx", compute_capability="8.6"))  # fmt: skip
    assert not (tmp_path / "no.engine").exists()


def test_build_deploy_and_doctor_say_when_the_gpu_has_no_fp8(axial26s, tmp_path, monkeypatch):
    """No GPU here: the one thing replaced is what cuda-python would report on a Jetson Orin."""
    from axial_deploy import doctor
    from axial_deploy.engine import environment
    from axial_deploy.pipeline.deploy import DeploySettings, plan_deploy

    orin = ("12.6", "Orin", "8.7")
    monkeypatch.setattr(build_module, "cuda_device_info", lambda: orin)
    monkeypatch.setattr(environment, "cuda_device_info", lambda: orin)  # deploy's probe
    monkeypatch.setattr(doctor, "cuda_device_info", lambda: orin)
    with pytest.raises(BuildError, match=r"Orin \(compute capability 8\.7\) has no FP8"):
        build_engine(
            axial26s["plain_fp8"], tmp_path / "e.engine", BuildOptions(backend="tensorrt-rtx")
        )
    plan = plan_deploy(DeploySettings(out=tmp_path, precisions=("fp32", "fp8"), backend="none"))
    assert plan.fp8_problem.startswith("fp8: Orin (compute capability 8.7) has no FP8")
    assert plan_deploy(DeploySettings(out=tmp_path, precisions=("fp32", "int8"),
                                      backend="none")).fp8_problem is None  # fmt: skip
    (fp8,) = [c for c in doctor.run_checks() if c.name == "FP8"]
    assert not fp8.ok and "no FP8 tensor cores" in fp8.detail


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_builds_the_rewritten_fp8_graph_with_the_plugin(axial26s, tmp_path):
    """Full TensorRT on an FP8 GPU: the rewritten FP8 graph (AxialAttention plugin with FP16
    I/O between a DQ and a Q), strongly typed, as on TensorRT 10 and 11."""
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install tensorrt) and a GPU")
    from axial_deploy.engine.environment import cuda_device_info
    from axial_deploy.native import PLUGIN, locate

    _, gpu, sm = cuda_device_info()
    if sm is None:
        pytest.skip("needs an NVIDIA GPU")
    if problem := fp8_support_problem(sm, gpu):
        pytest.skip(problem)
    if locate(PLUGIN).path is None:
        pytest.skip(f"needs the AxialAttention plugin: {PLUGIN.build_hint}")
    manifest = build_engine(axial26s["fp32_fp8"], tmp_path / "fp8.engine", BuildOptions())
    assert manifest.precision == "strongly-typed fp8 q/dq" and manifest.plugin_library


def test_fp8_sessions_run_with_basic_graph_optimizations(axial26s):
    """ONNX Runtime 1.32's level-2 CPU optimizations compute FP8 Q/DQ graphs wrongly (the
    trained tiny model's FP8 PQ fell from ~78 to 19): `create_session` caps FP8 graphs at
    basic, whatever the options ask, and leaves other graphs alone."""
    import onnxruntime as ort

    x = np.random.default_rng(9).standard_normal((1, 3, 64, 64)).astype(np.float32)
    basic = ort.SessionOptions()
    basic.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    expected = ort.InferenceSession(str(axial26s["plain_fp8"]), basic).run(None, {"images": x})
    asked = ort.SessionOptions()  # ORT_ENABLE_ALL by default
    session = create_session(str(axial26s["plain_fp8"]), session_options=asked)
    assert asked.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    np.testing.assert_array_equal(session.run(None, {"images": x})[0], expected[0])
    fp32_options = ort.SessionOptions()
    create_session(str(axial26s["plain"]), session_options=fp32_options)
    assert fp32_options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
