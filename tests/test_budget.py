"""Quantization to an accuracy budget (`axial_deploy.budget`, `quantize --max-drop`).

- the search over the ranked prefix, on deterministic drop functions: the smallest prefix
  within the budget, found in O(log n) evaluations; "nothing left to keep" when never met;
- the Q/DQ placement's keep set: kept nodes get no Q/DQ, a kept Conv takes its residual Add's
  Q/DQ with it, unknown names fail in one line;
- multiply-adds from shapes, checked by hand on a small graph with an AxialAttention node;
- end to end (real ONNX Runtime, real calibration, layer-wise ranking and top-1 evaluation) on
  a small classifier made range-sensitive on purpose: one channel of conv1's output scaled up
  1000x and conv2's input weights scaled down as much (ReLU between, so FP32 computes the same
  function), so per-tensor INT8 of conv2's input loses the other channels. Plain INT8 misses a
  budget of 1 top-1 point; the search keeps conv2 (ranked first) and meets it with most
  multiply-adds still in INT8.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from checks.test_layerwise import SIDE, attention_block
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from axial_deploy.budget import (
    BudgetError,
    BudgetSettings,
    attended_pairs,
    layer_macs,
    quantize_to_budget,
    search_prefix,
)
from axial_deploy.calibration.qdq import QuantizationError, quantize_int8
from axial_deploy.calibration.ranges import collect_ranges
from axial_deploy.cli import main

# ------------------------------------------------------------------------------ the search


def counted(drops):
    calls = []

    def drop_at(k: int) -> float:
        calls.append(k)
        return drops(k)

    return drop_at, calls


@pytest.mark.parametrize("needed", [0, 1, 2, 3, 7, 8, 9, 40, 63, 64])
def test_search_finds_the_smallest_prefix_in_log_steps(needed):
    """drop falls by one point per layer kept until `needed` layers are kept."""
    count, max_drop = 64, 0.5
    drop_at, calls = counted(lambda k: 0.0 if k >= needed else float(needed - k))
    result = search_prefix(count, drop_at, max_drop)
    assert result.met and result.kept == needed
    assert len(calls) == len(set(calls)) == len(result.steps)  # each prefix evaluated once
    assert len(calls) <= 2 * math.ceil(math.log2(count)) + 2
    assert [s.kept for s in result.steps] == calls
    assert all(s.within == (s.drop <= max_drop) for s in result.steps)


def test_search_reports_a_budget_never_met_with_everything_kept():
    drop_at, calls = counted(lambda k: 3.0)
    result = search_prefix(10, drop_at, 1.0)
    assert not result.met and result.kept == 10
    assert calls == [0, 1, 2, 4, 8, 10]


def test_search_with_nothing_to_keep_and_nan_drops():
    result = search_prefix(0, lambda k: 2.0, 1.0)
    assert not result.met and result.kept == 0 and len(result.steps) == 1
    result = search_prefix(4, lambda k: math.nan if k < 2 else 0.0, 1.0)  # NaN is a miss
    assert result.met and result.kept == 2
    with pytest.raises(BudgetError):
        search_prefix(-1, lambda k: 0.0, 1.0)


def test_search_at_the_threshold_counts_as_within():
    result = search_prefix(8, lambda k: 1.0 + 1e-12 if k < 3 else 0.5, 1.0)
    assert result.met and result.kept == 0


# ------------------------------------------------------------------------------ keep set


def _ranges(model: onnx.ModelProto):
    rng = np.random.default_rng(0)
    batches = [rng.random((1, 3, SIDE, SIDE), dtype=np.float32) for _ in range(2)]
    return collect_ranges(model, batches, method="minmax")


def _dq_fed(model: onnx.ModelProto) -> dict[str, int]:
    """Node name -> how many of its inputs are DequantizeLinear outputs."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: sum(i in dq for i in n.input) for n in model.graph.node if n.name}


def test_kept_nodes_get_no_qdq_and_take_their_residual_pair_along():
    model = attention_block()
    ranges = _ranges(model)
    plain = quantize_int8(model, ranges)
    assert _dq_fed(plain.model)["proj"] == 2 and _dq_fed(plain.model)["residual"] == 1
    kept = quantize_int8(model, ranges, skip_nodes={"proj", "head"})
    fed = _dq_fed(kept.model)
    assert fed["proj"] == fed["head"] == 0
    assert fed["stem"] == fed["qkv_conv"] == 2
    # proj stays float: no INT8 epilogue to fuse the Add into, so no Q/DQ on its other input
    assert fed["residual"] == 0 and kept.residual_adds == 0
    assert set(kept.quantized_nodes) == set(plain.quantized_nodes) - {"proj", "head"}
    onnx.checker.check_model(kept.model)


def test_unknown_kept_node_is_a_one_line_error():
    model = attention_block()
    with pytest.raises(QuantizationError, match=r"not in the graph.*no_such_conv"):
        quantize_int8(model, _ranges(model), skip_nodes={"no_such_conv"})


# ------------------------------------------------------------------------------ multiply-adds


def test_multiply_adds_from_shapes():
    model = attention_block()
    feed = {"images": np.random.default_rng(0).random((2, 3, SIDE, SIDE), dtype=np.float32)}
    macs = layer_macs(model, feed)
    n, c = 2, 8
    groups, dq, dv = 2, 2, 4
    conv = n * SIDE * SIDE * 9  # per output channel per input channel
    assert macs["stem"] == conv * c * 3
    assert macs["qkv_conv"] == conv * groups * (2 * dq + dv) * c
    assert macs["proj"] == conv * c * groups * dv
    assert macs["head"] == conv * 5 * c
    # height axis, global span: n * W lines, SIDE^2 pairs each, 3 dq + 2 dv per pair and head
    assert macs["attention"] == n * SIDE * groups * SIDE * SIDE * (3 * dq + 2 * dv)
    assert attended_pairs(5, 3) == 13 and attended_pairs(4, 0) == 16


# ------------------------------------------------------------------------------ end to end

CLASSES, PIXELS, IMAGES = 4, 16, 24
OUTLIER = 1000.0


def range_sensitive_classifier(seed: int = 0, outlier: float = OUTLIER) -> onnx.ModelProto:
    """images -> conv1 -> relu -> conv2 -> relu -> conv3 -> relu -> GAP -> fc: channel 0 of
    conv1 scaled by OUTLIER, conv2's weights on that channel divided by it (the same function
    in FP32; a per-tensor INT8 scale for conv2's input that zeroes the other channels)."""
    rng = np.random.default_rng(seed)

    def w(out: int, inp: int) -> np.ndarray:
        return rng.normal(0, 1 / np.sqrt(9 * inp), (out, inp, 3, 3)).astype(np.float32)

    w1, w2, w3 = w(8, 3), w(8, 8), w(8, 8)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    w1[0] *= outlier
    b1[0] *= outlier
    w2[:, 0] /= outlier
    fc = rng.normal(0, 1, (CLASSES, 8)).astype(np.float32)

    def conv(name: str, x: str, y: str, ws: list[str]) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, *ws], [y], name=name, pads=[1, 1, 1, 1])

    nodes = [
        conv("conv1", "images", "c1", ["w1", "b1"]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        conv("conv2", "r1", "c2", ["w2"]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        conv("conv3", "r2", "c3", ["w3"]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="fc", transB=1),
    ]
    arrays = {"w1": w1, "b1": b1, "w2": w2, "w3": w3, "fc": fc}
    graph = helper.make_graph(
        nodes,
        "range_sensitive",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, PIXELS, PIXELS])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def make_case(folder: Path, outlier: float) -> dict[str, Path]:
    """The graph, calibration images, and a val split labelled with FP32's own predictions
    (FP32 top-1 is 100 %: the drop is exactly the share of images the Q/DQ graph gets wrong)."""
    from axial_deploy.models.preprocess import preprocess_for
    from axial_deploy.op.ort import create_session

    model_path = folder / "sensitive.onnx"
    onnx.save(range_sensitive_classifier(outlier=outlier), str(model_path))
    session = create_session(str(model_path))
    preprocess = preprocess_for("classification", (PIXELS, PIXELS))
    rng = np.random.default_rng(1)
    calib = folder / "calib"
    calib.mkdir()
    for split, count in (("calib", 8), ("val", IMAGES)):
        for index in range(count):
            pixels = rng.integers(0, 256, (PIXELS, PIXELS, 3), dtype=np.uint8)
            if split == "calib":
                Image.fromarray(pixels).save(calib / f"{index}.png")
                continue
            scratch = folder / "scratch.png"
            Image.fromarray(pixels).save(scratch)
            logits = session.run(None, {"images": preprocess.load(scratch)[None]})[0]
            target = folder / "data" / "val" / f"class{int(logits.argmax())}"
            target.mkdir(parents=True, exist_ok=True)
            scratch.rename(target / f"{index:03d}.png")
    for label in range(CLASSES):  # every class a folder, so logits and classes agree
        (folder / "data" / "val" / f"class{label}").mkdir(parents=True, exist_ok=True)
    return {"folder": folder, "model": model_path, "calib": calib, "data": folder / "data"}


@pytest.fixture(scope="module")
def sensitive_case(tmp_path_factory) -> dict[str, Path]:
    return make_case(tmp_path_factory.mktemp("budget"), OUTLIER)


def test_budget_search_keeps_the_range_sensitive_layer(sensitive_case):
    case = sensitive_case
    out = case["folder"] / "sensitive.int8.onnx"
    settings = BudgetSettings(
        precision="int8",
        max_drop=1.0,
        data=case["data"],
        calib=str(case["calib"]),
        method="minmax",
        batches=4,
        rank_batches=2,
    )
    report = quantize_to_budget(case["model"], out, settings)
    assert report.reference == pytest.approx(100.0)
    assert report.plain_drop > 10  # plain INT8 misses the budget by far
    assert report.met and report.drop <= 1.0
    assert report.ranking[0].node == "conv2"  # the layer made sensitive
    assert [layer.node for layer in report.kept] == ["conv2"] and report.layers == 4
    assert report.share_quantized > 0.5  # conv1, conv3 and fc still INT8
    assert [s.kept for s in report.steps] == [0, 1]
    # the written graph is the one measured: conv2 has no Q/DQ, the others do
    written = onnx.load(str(out))
    fed = _dq_fed(written)
    assert fed["conv2"] == 0 and fed["conv1"] == fed["conv3"] == fed["fc"] == 2
    record = json.loads(Path(report.record).read_text())
    assert record["kept"][0]["node"] == "conv2" and record["kept"][0]["rank"] == 1
    assert record["kept"][0]["error"] > record["ranking"][1]["error"]
    assert record["drop"] == pytest.approx(report.drop)
    assert record["evaluations"] == 2 and record["met"] is True
    assert Path(out).with_suffix(".calib").is_file()


def test_budget_search_in_fp8(tmp_path):
    """FP8 through the same search. E4M3 spans a wide range (down to 2**-9 of its 448 maximum),
    so INT8's outlier (1e3) and even 1e5 cost it no top-1 here; at 1e7 the other channels
    fall below FP8's smallest subnormal at conv2's per-tensor scale and flush to zero. The
    search keeps conv2 and leaves the rest in FP8."""
    case = make_case(tmp_path, outlier=1e7)
    out = tmp_path / "sensitive.fp8.onnx"
    settings = BudgetSettings(
        precision="fp8",
        max_drop=1.0,
        data=case["data"],
        calib=str(case["calib"]),
        method="minmax",
        batches=4,
        rank_batches=2,
    )
    report = quantize_to_budget(case["model"], out, settings)
    assert report.plain_drop > 10  # plain FP8 misses the budget
    assert report.met and report.drop <= 1.0
    assert report.ranking[0].node == "conv2"
    assert [layer.node for layer in report.kept] == ["conv2"]
    written = onnx.load(str(out))
    fed = _dq_fed(written)
    assert fed["conv2"] == 0 and fed["conv1"] == fed["conv3"] == fed["fc"] == 2
    float8 = {TensorProto.FLOAT8E4M3FN}
    zero_points = [t for t in written.graph.initializer if t.data_type in float8]
    assert zero_points, "an FP8 graph carries FLOAT8E4M3FN zero points"
    assert not out.with_suffix(".calib").exists()  # no FP8 calibration cache exists


def test_quantize_cli_max_drop(sensitive_case, capsys):
    case = sensitive_case
    out = case["folder"] / "cli.int8.onnx"
    code = main(["quantize", str(case["model"]), "-o", str(out), "--precision", "int8",
                 "--calib", str(case["calib"]), "--calib-batches", "4", "--method", "minmax",
                 "--max-drop", "1", "--data", str(case["data"])])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "budget met" in printed and "kept #1 conv2" in printed
    assert out.is_file() and out.with_suffix(".budget.json").is_file()


def test_quantize_cli_budget_errors(sensitive_case, capsys):
    case = sensitive_case
    base = ["quantize", str(case["model"]), "-o", str(case["folder"] / "x.onnx")]
    assert main([*base, "--precision", "int8", "--max-drop", "1"]) == 2
    assert "--max-drop needs --data" in capsys.readouterr().err
    assert main([*base, "--precision", "fp16", "--max-drop", "1", "--data", "d"]) == 2
    assert "not 'fp16'" in capsys.readouterr().err
    assert main([*base, "--precision", "int8", "--data", str(case["data"])]) == 2
    assert "--data goes with --max-drop" in capsys.readouterr().err


# ------------------------------------------------------------------------------ deploy


def test_deploy_fit_budget_needs_an_int8_variant(tmp_path):
    from axial_deploy.pipeline.deploy import DeployError, DeploySettings, deploy

    with pytest.raises(DeployError, match="--fit-budget searches int8"):
        deploy(DeploySettings(out=tmp_path / "out", precisions=("fp32", "fp16"), fit_budget=True))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_deploy_fit_budget_writes_the_graph_the_gate_measures(tmp_path):
    """The shipped classifier with a zero budget: each INT8 variant is the search's graph, and
    the gate measures the same drop on the same val images as the search did."""
    out = tmp_path / "deploy"
    code = main(["deploy", "--model", "axial26_tiny", "--precision", "fp32,int8", "--fit-budget",
                 "--max-drop", "0", "--eval-images", "20", "--calib-batches", "4",
                 "--iterations", "1", "--backend", "none", "-o", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    for variant in (v for v in report["variants"] if v["precision"] == "int8"):
        budget = variant["budget"]
        assert variant["drop"] == pytest.approx(budget["drop"], abs=1e-9)
        assert budget["met"] == (budget["drop"] <= 1e-9)
        record = json.loads(Path(budget["record"]).read_text())
        assert [layer["node"] for layer in record["kept"]] == budget["kept"]
    assert any("--fit-budget kept" in note for note in report["notes"])


def test_rtx_builds_the_mixed_precision_graph(sensitive_case, tmp_path):
    """The budget's graph (conv2 in FP32 between INT8 layers) is a valid strongly typed
    network: TensorRT-RTX builds it ahead of time on this CPU."""
    pytest.importorskip(
        "tensorrt_rtx", reason="TensorRT-RTX not installed: pip install 'axial-deploy[rtx]'"
    )
    from axial_deploy.engine.build import BuildOptions, build_engine

    case = sensitive_case
    out = tmp_path / "mixed.int8.onnx"
    settings = BudgetSettings(
        precision="int8",
        max_drop=1.0,
        data=case["data"],
        calib=str(case["calib"]),
        method="minmax",
        batches=4,
        rank_batches=2,
    )
    report = quantize_to_budget(case["model"], out, settings)
    assert [layer.node for layer in report.kept] == ["conv2"]
    engine = tmp_path / "mixed.engine"
    built = build_engine(out, engine, BuildOptions(backend="tensorrt-rtx", workspace_mb=64))
    assert engine.stat().st_size > 1000
    assert "int8" in built.precision
