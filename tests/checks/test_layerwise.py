"""`compare --layerwise`: tensors of FP16 / INT8 graphs made by our own precision stage map
back to the reference's names, real ONNX Runtime runs (AxialAttention nodes through our op)
find a deliberately perturbed node first, and chunked marking gives the same errors.

Tolerances: the unperturbed layers of the perturbed graph carry error <= 1e-6 (FP32 vs FP32,
same ops); the FP16 graph's tensors stay below 1e-2 relative RMS error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axial_deploy.checks.layerwise import (
    LayerwiseError,
    TensorMatch,
    layerwise_command,
    layerwise_compare,
    match_tensors,
    plan_chunks,
)
from axial_deploy.cli import main
from axial_deploy.op import spec as op_spec
from axial_deploy.quantize import quantize_file

CHANNELS, SIDE = 8, 8


def conv(name: str, source: str, target: str, weight: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [source, weight], [target], name=name, pads=[1, 1, 1, 1])


def weights(rng: np.random.Generator, out: int, inp: int, name: str) -> onnx.TensorProto:
    value = rng.normal(0, 1 / np.sqrt(9 * inp), (out, inp, 3, 3)).astype(np.float32)
    return numpy_helper.from_array(value, name)


def chain(scale_conv2: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """images -> conv1 -> relu1 -> conv2 -> relu2 -> conv3 -> out; conv2's weights times
    `scale_conv2` (1: the reference)."""
    rng = np.random.default_rng(seed)
    w1, w2, w3 = (weights(rng, CHANNELS, c, n) for c, n in ((3, "w1"), (CHANNELS, "w2"),
                                                              (CHANNELS, "w3")))  # fmt: skip
    if scale_conv2 != 1.0:
        noise = 1 + scale_conv2 * rng.normal(size=numpy_helper.to_array(w2).shape)
        w2 = numpy_helper.from_array((numpy_helper.to_array(w2) * noise).astype(np.float32), "w2")
    nodes = [
        conv("conv1", "images", "c1", "w1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        conv("conv2", "r1", "c2", "w2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        conv("conv3", "r2", "out", "w3"),
    ]
    return _model(nodes, [w1, w2, w3], CHANNELS)


def _model(nodes, initializers, out_channels: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "layerwise_test",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", out_channels, SIDE, SIDE])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    op_spec.opset_import()])  # fmt: skip
    onnx.checker.check_model(model)
    return model


def attention_block(seed: int = 0) -> onnx.ModelProto:
    """images -> stem Conv -> Relu -> qkv Conv -> AxialAttention (height) -> proj Conv ->
    Add (residual) -> Relu -> head Conv -> Softmax over channels -> out: Conv, residual Add,
    our custom node and a precision-sensitive op, in 11 nodes."""
    rng = np.random.default_rng(seed)
    groups, dq, dv = 2, 2, 4
    tables = {
        "rel_q": 0.5 * rng.normal(size=(groups, dq, 2 * SIDE - 1)),
        "rel_k": 0.5 * rng.normal(size=(groups, dq, 2 * SIDE - 1)),
        "rel_v": rng.normal(size=(groups, dv, 2 * SIDE - 1)),
        "logit_scale": 0.5 + rng.random(groups),
        "out_bias": 0.1 * rng.normal(size=groups * dv),
    }
    attributes = op_spec.AxialAttentionAttributes(2, groups, dq, dv, 0)
    qkv_channels = attributes.qkv_channels
    nodes = [
        conv("stem", "images", "s", "w_stem"),
        helper.make_node("Relu", ["s"], ["sr"], name="stem_relu"),
        conv("qkv_conv", "sr", "qkv", "w_qkv"),
        op_spec.make_node("qkv", "attn", name="attention", **tables, attributes=attributes),
        conv("proj", "attn", "p", "w_proj"),
        helper.make_node("Add", ["p", "sr"], ["res"], name="residual"),
        helper.make_node("Relu", ["res"], ["rr"], name="res_relu"),
        conv("head", "rr", "logits", "w_head"),
        helper.make_node("Softmax", ["logits"], ["out"], name="softmax", axis=1),
    ]
    initializers = [
        weights(rng, CHANNELS, 3, "w_stem"),
        weights(rng, qkv_channels, CHANNELS, "w_qkv"),
        weights(rng, CHANNELS, groups * dv, "w_proj"),
        weights(rng, 5, CHANNELS, "w_head"),
    ]
    model = _model(nodes, initializers, 5)
    # Typed like the rewrite types them (ONNX cannot infer a custom op's output)
    model.graph.value_info.append(
        helper.make_tensor_value_info("attn", TensorProto.FLOAT, ["N", groups * dv, SIDE, SIDE])
    )
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------ perturbed node


def test_a_perturbed_node_is_named_first(tmp_path):
    reference = save(chain(), tmp_path / "ref.onnx")
    candidate = save(chain(scale_conv2=0.1), tmp_path / "cand.onnx")
    report = layerwise_compare(reference, candidate, batches=2, seed=3)
    errors = {row.node: row.error for row in report.rows}
    assert set(errors) == {"conv1", "relu1", "conv2", "relu2", "conv3"}
    assert errors["conv1"] <= 1e-6 and errors["relu1"] <= 1e-6  # upstream: untouched
    assert errors["conv2"] > 1e-2 and errors["conv3"] > 1e-2  # the error flows downstream
    assert report.first_past.node == "conv2"
    ranked = report.ranked()
    assert ranked[0].node == "conv2"
    assert ranked[0].jump == pytest.approx(ranked[0].error - errors["relu1"])
    conv3 = next(row for row in report.rows if row.node == "conv3")
    assert conv3.input_error == pytest.approx(errors["relu2"])  # what reached it: relu2's
    assert report.unmatched == [] and report.runs == 1
    text = report.summary()
    assert "first layer past 1.0e-02: conv2 (Conv)" in text


def test_cli_writes_the_json_report_and_chunks_give_the_same_errors(tmp_path, capsys):
    reference = save(chain(), tmp_path / "ref.onnx")
    candidate = save(chain(scale_conv2=0.1), tmp_path / "cand.onnx")
    whole, chunked = tmp_path / "whole.json", tmp_path / "chunked.json"
    for path, chunk_mb in ((whole, "64"), (chunked, "0.0001")):
        code = main(["compare", "--layerwise", str(reference), f"noisy={candidate}",
                     "--batches", "2", "--chunk-mb", chunk_mb, "--report", str(path)])  # fmt: skip
        assert code == 0
    printed = capsys.readouterr().out
    assert "layers ranked by jump" in printed and f"wrote {chunked}" in printed
    one, many = json.loads(whole.read_text()), json.loads(chunked.read_text())
    assert one["label"] == "noisy" and one["runs"] == 1 and many["runs"] == 5  # a tensor each
    assert one["first_past_threshold"]["node"] == "conv2" and one["ranked"][0] == "c2"
    assert [r["error"] for r in one["rows"]] == pytest.approx([r["error"] for r in many["rows"]])


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    reference = save(chain(), tmp_path / "ref.onnx")
    second = save(chain(), tmp_path / "second.onnx")
    code = main(["compare", "--layerwise", str(reference), str(reference), str(second)])
    assert code == 2 and "one candidate" in capsys.readouterr().err
    unrelated = chain()
    for node in unrelated.graph.node:  # same computation, no shared name
        node.name = "other_" + node.name
        node.output[0] = "x_" + node.output[0]
        node.input[0] = node.input[0] if node.input[0] == "images" else "x_" + node.input[0]
    unrelated.graph.output[0].name = "x_out"
    other = save(unrelated, tmp_path / "other.onnx")
    with pytest.raises(SystemExit):
        main(["compare", "--layerwise", str(reference), str(second), "--val-range=1,0"])
    assert "LO < HI" in capsys.readouterr().err
    with pytest.raises(LayerwiseError, match="shares no intermediate tensor"):
        layerwise_compare(reference, other)


def test_chunks_fit_the_budget():
    matches = [TensorMatch(f"t{i}", f"r{i // 2}", "name", f"n{i}", "Conv", "fp32")
               for i in range(6)]  # fmt: skip
    sizes = {"r0": 100, "r1": 100, "r2": 300}
    # r0 twice: 200 + 100; r1: 200 + 100 -> 600 fits; r2 (600) starts a new chunk
    chunks = plan_chunks(matches, sizes, budget_bytes=600)
    assert [[m.candidate for m in c] for c in chunks] == [["t0", "t1", "t2", "t3"], ["t4"],
                                                           ["t5"]]  # fmt: skip
    assert len(plan_chunks(matches, sizes, budget_bytes=10**9)) == 1


# ------------------------------------------------------------------------------ our precisions


@pytest.fixture(scope="module")
def block(tmp_path_factory) -> dict[str, Path]:
    """The attention block and its INT8 and FP16 versions, made by `quantize_file`."""
    folder = tmp_path_factory.mktemp("layerwise")
    paths = {"fp32": save(attention_block(), folder / "block.onnx")}
    for precision in ("int8", "fp16"):
        paths[precision] = folder / f"block.{precision}.onnx"
        quantize_file(paths["fp32"], paths[precision], precision=precision, method="minmax",
                      batches=2, seed=0)  # fmt: skip
    return paths


def test_int8_tensors_map_back_to_the_reference(block):
    reference, int8 = onnx.load(str(block["fp32"])), onnx.load(str(block["int8"]))
    matches = {m.candidate: m for m in match_tensors(reference, int8)}
    qdq = {m.reference for m in matches.values() if m.how == "qdq"}
    assert qdq == {"images", "sr", "attn", "rr"}  # every Conv input; sr is also the Add's
    for match in matches.values():
        if match.how == "qdq":
            assert match.op == "DequantizeLinear" and match.candidate.endswith("/dequantized")
    # AxialAttention runs with FP16 I/O: its renamed output is the node's, its inputs a Cast
    renamed = [m for m in matches.values() if m.node == "attention"]
    assert len(renamed) == 1 and renamed[0].how == "node" and renamed[0].reference == "attn"
    assert renamed[0].dtype == "fp16"
    assert any(m.how == "cast" and m.reference == "qkv" for m in matches.values())
    reference_tensors = {o for n in reference.graph.node for o in n.output} | {"images"}
    assert {m.reference for m in matches.values()} == reference_tensors  # all, and the input


def test_int8_layerwise_runs_with_our_op(block):
    report = layerwise_compare(block["fp32"], block["int8"], batches=2, seed=5)
    rows = {row.tensor: row for row in report.rows}
    assert report.unmatched == []
    assert all(np.isfinite(row.error) for row in report.rows)
    quantized = [row for row in report.rows if row.how == "qdq"]
    assert quantized and all(0 < row.error < 0.05 for row in quantized)  # 8-bit rounding
    for row in quantized:  # what reached the Q/DQ pair is the tensor it quantizes
        wrapped = rows[row.reference].error if row.reference != "images" else 0.0
        assert row.input_error == pytest.approx(wrapped) and row.jump > 0
    assert rows["attn"].error > 0 and rows["out"].error > 0
    assert report.islands() == []  # an INT8 graph has no FP16 islands to report


def test_chunks_do_not_change_int8_numbers(block):
    """Each chunk marks other tensors; ONNX Runtime must not fuse or move Q/DQ nodes around
    the unmarked ones (its default optimizations do), or the errors would depend on chunking."""
    whole = layerwise_compare(block["fp32"], block["int8"], batches=1, seed=2)
    one_each = layerwise_compare(block["fp32"], block["int8"], batches=1, seed=2, chunk_mb=1e-6)
    assert one_each.runs == len(one_each.rows) > whole.runs == 1
    assert [r.error for r in one_each.rows] == [r.error for r in whole.rows]


def test_fp16_islands_are_the_precision_sensitive_ops(block):
    reference, fp16 = onnx.load(str(block["fp32"])), onnx.load(str(block["fp16"]))
    matches = match_tensors(reference, fp16)
    computed = {o for n in reference.graph.node for o in n.output}
    assert {m.reference for m in matches} == computed | {"images"}  # the input's Cast to FP16
    # our calibration sources feed it too (normalized random images here)
    report = layerwise_compare(block["fp32"], block["fp16"], inputs="synthetic", batches=2)
    assert report.inputs.startswith("synthetic (2 random images, seed 1)")
    islands = report.islands()
    assert [row.node for row in islands] == ["softmax"]
    assert all(row.error < 1e-2 for row in report.rows)
    assert all(row.dtype == "fp16" for row in report.rows if row.op == "Conv")
    assert "FP32 islands: 1 layers (Softmax 1)" in report.summary()


# ------------------------------------------------------------------------------ deploy


def test_deploy_names_the_command_for_a_flagged_variant(tmp_path):
    from axial_deploy.pipeline.deploy import Variant, layerwise_notes

    variants = [
        Variant("fp32", "axial", tmp_path / "m.axial.onnx"),
        Variant("int8", "axial", tmp_path / "m axial.int8.onnx", flagged=True),
        Variant("fp16", "axial", tmp_path / "m.axial.fp16.onnx"),
        Variant("fp32", "plain", tmp_path / "m.onnx"),
        Variant("int8", "plain", tmp_path / "m.int8.onnx", flagged=True),
    ]
    notes = layerwise_notes(variants)
    assert len(notes) == 2
    assert notes[0].startswith("int8 flagged") and notes[0].endswith(
        layerwise_command(tmp_path / "m.axial.onnx", tmp_path / "m axial.int8.onnx")
    )
    assert f"'{tmp_path / 'm axial.int8.onnx'}'" in notes[0]  # quoted for the shell
    assert notes[1].endswith(f"--layerwise {tmp_path / 'm.onnx'} {tmp_path / 'm.int8.onnx'}")
