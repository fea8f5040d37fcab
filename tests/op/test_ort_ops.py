"""AxialAttention nodes in ONNX Runtime through the reference op (onnxruntime-extensions)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from axial_deploy.models.axial_attention import (
    AxialAttention,
    axial_attention_op,
    fold_axial_attention,
)
from axial_deploy.op import spec as op_spec
from axial_deploy.op.ort import (
    MISSING_EXTENSIONS,
    REFERENCE_DOMAIN,
    create_session,
    to_onnxruntime_view,
)
from axial_deploy.op.spec import AxialAttentionAttributes

from helpers import randomize_batchnorm

# Tests that run AxialAttention nodes need onnxruntime-extensions; the others run without it.
needs_extensions = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_extensions") is None,
    reason="needs onnxruntime-extensions (pip install onnxruntime-extensions)",
)

FP32_TOL = op_spec.TOLERANCES["float32"]
FP16_TOL = op_spec.TOLERANCES["float16"]
TABLES = ("rel_q", "rel_k", "rel_v", "logit_scale", "out_bias")


def loop_reference(qkv, rel_q, rel_k, rel_v, logit_scale, out_bias, attributes):
    """The contract's math, one query at a time in float64 (independent of the torch code)."""
    axis, span = attributes.axis, attributes.span
    groups, dq, dv = attributes.num_heads, attributes.key_depth, attributes.value_depth
    x = qkv.astype(np.float64)
    if axis == 3:  # attend along axis 2 below
        x = x.transpose(0, 1, 3, 2)
    batch, _, length, other = x.shape
    q = x[:, : groups * dq].reshape(batch, groups, dq, length, other)
    k = x[:, groups * dq : 2 * groups * dq].reshape(batch, groups, dq, length, other)
    v = x[:, 2 * groups * dq :].reshape(batch, groups, dv, length, other)
    table = rel_q.shape[-1]
    radius = length if span == 0 else (span - 1) // 2
    y = np.zeros((batch, groups, dv, length, other))
    for n in range(batch):
        for o in range(other):
            for g in range(groups):
                for i in range(length):
                    keys = [j for j in range(length) if abs(j - i) <= radius]
                    cols = [min(max(j - i + (table - 1) // 2, 0), table - 1) for j in keys]
                    qi = q[n, g, :, i, o]
                    logits = np.array(
                        [
                            logit_scale[g] * qi @ k[n, g, :, j, o]
                            + qi @ rel_q[g, :, t]
                            + k[n, g, :, j, o] @ rel_k[g, :, t]
                            for j, t in zip(keys, cols, strict=True)
                        ]
                    )
                    weights = np.exp(logits - logits.max())
                    weights /= weights.sum()
                    for w, j, t in zip(weights, keys, cols, strict=True):
                        y[n, g, :, i, o] += w * (v[n, g, :, j, o] + rel_v[g, :, t])
                    y[n, g, :, i, o] += out_bias[g * dv : (g + 1) * dv]
    y = y.reshape(batch, groups * dv, length, other)
    return y.transpose(0, 1, 3, 2) if axis == 3 else y


def random_case(axis, groups, dq, dv, span, table, shape, seed=0):
    rng = np.random.default_rng(seed)
    tables = {
        "rel_q": 0.5 * rng.normal(size=(groups, dq, table)),
        "rel_k": 0.5 * rng.normal(size=(groups, dq, table)),
        "rel_v": rng.normal(size=(groups, dv, table)),
        "logit_scale": 0.5 + rng.random(groups),
        "out_bias": rng.normal(size=groups * dv),
    }
    attributes = AxialAttentionAttributes(axis, groups, dq, dv, span)
    qkv = rng.normal(size=(shape[0], attributes.qkv_channels, *shape[1:]))
    return tables, attributes, qkv


def one_node_model(tables, attributes, qkv_shape, elem_type=TensorProto.FLOAT):
    node = op_spec.make_node("qkv", "y", name="attention", **tables, attributes=attributes)
    _, _, h, w = qkv_shape
    out_channels = attributes.out_channels
    graph = helper.make_graph(
        [node],
        "one_node",
        [helper.make_tensor_value_info("qkv", elem_type, ["N", qkv_shape[1], h, w])],
        [helper.make_tensor_value_info("y", elem_type, ["N", out_channels, h, w])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), op_spec.opset_import()]
    )
    onnx.checker.check_model(model)
    return model


def torch_reference(qkv, tables, attributes):
    arrays = [torch.from_numpy(np.asarray(tables[n], dtype=np.float32)) for n in TABLES]
    return axial_attention_op(torch.from_numpy(qkv), *arrays, attributes).numpy()


def max_rel(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return np.abs(actual - expected).max() / np.abs(expected).max()


CASES = {
    # name: axis, G, Dq, Dv, span, T, (N, H, W)
    "height-global-full-table": (2, 1, 2, 3, 0, 9, (2, 5, 4)),
    "width-local": (3, 2, 3, 2, 3, 3, (2, 4, 7)),
    "height-local-table-shorter-than-span": (2, 3, 1, 4, 5, 3, (2, 9, 3)),
    "width-global-table-shorter-than-line": (3, 2, 4, 2, 0, 5, (2, 3, 8)),
    "height-span-longer-than-line": (2, 3, 2, 2, 7, 7, (2, 3, 2)),
    "width-span-one": (3, 1, 1, 1, 1, 1, (2, 2, 3)),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@needs_extensions
def test_onnxruntime_matches_the_reference_and_the_loop(case):
    tables, attributes, qkv = random_case(*case)
    qkv = qkv.astype(np.float32)
    session = create_session(one_node_model(tables, attributes, qkv.shape))
    (y,) = session.run(None, {"qkv": qkv})
    assert y.dtype == np.float32
    assert y.shape == (qkv.shape[0], attributes.out_channels, *qkv.shape[2:])
    assert max_rel(y, torch_reference(qkv, tables, attributes)) < FP32_TOL
    tables32 = {name: np.asarray(t, np.float32) for name, t in tables.items()}
    assert max_rel(y, loop_reference(qkv, **tables32, attributes=attributes)) < FP32_TOL


@needs_extensions
def test_float16_graphs_compute_in_float32():
    tables, attributes, qkv = random_case(3, 2, 3, 2, 3, 5, (2, 4, 6), seed=1)
    qkv = qkv.astype(np.float16)
    model = one_node_model(tables, attributes, qkv.shape, TensorProto.FLOAT16)
    (y,) = create_session(model).run(None, {"qkv": qkv})
    assert y.dtype == np.float16
    assert max_rel(y, torch_reference(qkv, tables, attributes)) < FP16_TOL
    tables32 = {name: np.asarray(t, np.float32) for name, t in tables.items()}
    assert max_rel(y, loop_reference(qkv, **tables32, attributes=attributes)) < FP16_TOL


@needs_extensions
def test_conv_plus_node_matches_the_folded_torch_layer():
    """The rewriter's pattern: 1x1 Conv (folded BatchNorms) feeding one AxialAttention node."""
    torch.manual_seed(0)
    layer = randomize_batchnorm(AxialAttention(8, 8, groups=2, kernel_size=5, width=True))
    folded = fold_axial_attention(layer.eval())
    weight = folded.qkv.weight.detach().numpy()
    bias = folded.qkv.bias.detach().numpy()
    conv = helper.make_node("Conv", ["x", "w", "b"], ["qkv"], name="qkv_conv")
    tables = {name: getattr(folded, name).numpy() for name in TABLES}
    node = op_spec.make_node("qkv", "y", name="attention", **tables, attributes=folded.attributes)
    graph = helper.make_graph(
        [conv, node],
        "folded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 7])],
        initializer=[
            onnx.numpy_helper.from_array(weight, "w"),
            onnx.numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), op_spec.opset_import()]
    )
    x = torch.randn(2, 8, 6, 7)
    (y,) = create_session(model).run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = folded(x).numpy()
    assert max_rel(y, expected) < FP32_TOL


@needs_extensions
def test_two_nodes_on_one_input_get_distinct_names():
    tables, attributes, qkv = random_case(2, 2, 2, 3, 3, 3, (1, 5, 4))
    other = dataclasses.replace(attributes, axis=3, span=0)
    first = op_spec.make_node(
        "qkv", "y_h", **tables, attributes=attributes
    )  # unnamed: named by output
    second = op_spec.make_node("qkv", "y_w", **tables, attributes=other)
    graph = helper.make_graph(
        [first, second],
        "two",
        [helper.make_tensor_value_info("qkv", TensorProto.FLOAT, list(qkv.shape))],
        [
            helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("y_w", TensorProto.FLOAT, None),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), op_spec.opset_import()]
    )
    qkv = qkv.astype(np.float32)
    y_h, y_w = create_session(model).run(None, {"qkv": qkv})
    assert max_rel(y_h, torch_reference(qkv, tables, attributes)) < FP32_TOL
    assert max_rel(y_w, torch_reference(qkv, tables, other)) < FP32_TOL


@needs_extensions
def test_view_is_in_memory_and_the_file_is_untouched(tmp_path):
    tables, attributes, qkv = random_case(3, 2, 3, 2, 3, 3, (2, 4, 5))
    model = one_node_model(tables, attributes, qkv.shape)
    before = model.SerializeToString()
    view = to_onnxruntime_view(model)
    assert model.SerializeToString() == before  # the caller's model is not modified
    assert {entry.domain for entry in view.opset_import} == {"", REFERENCE_DOMAIN}
    assert [node.op_type for node in view.graph.node] == [
        "Cast",
        "AxialAttentionReference",
        "CastLike",
    ]

    path = tmp_path / "attention.onnx"
    onnx.save(model, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (y,) = create_session(path).run(None, {"qkv": qkv.astype(np.float32)})
    assert max_rel(y, torch_reference(qkv.astype(np.float32), tables, attributes)) < FP32_TOL
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _relu_model():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_graphs_without_the_node_run_unchanged_without_extensions(monkeypatch, tmp_path):
    model = _relu_model()
    assert to_onnxruntime_view(model) is model
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # as if not installed
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], np.float32)
    (y,) = create_session(model).run(None, {"x": x})
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    path = tmp_path / "relu.onnx"
    onnx.save(model, path)
    (y,) = create_session(path).run(None, {"x": x})
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_missing_extensions_names_the_pip_command(monkeypatch):
    tables, attributes, qkv = random_case(2, 1, 1, 1, 0, 3, (1, 3, 3))
    model = one_node_model(tables, attributes, qkv.shape)
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)
    with pytest.raises(ImportError, match="pip install onnxruntime-extensions") as info:
        create_session(model)
    assert str(info.value) == MISSING_EXTENSIONS


def test_inconsistent_node_is_named_before_any_run():
    tables, attributes, qkv = random_case(2, 2, 2, 2, 3, 3, (1, 4, 4))
    model = one_node_model(tables, attributes, qkv.shape)
    node = model.graph.node[0]
    for attribute in node.attribute:
        if attribute.name == "rel_v":
            del attribute.floats[-1]
    with pytest.raises(ValueError, match=r"AxialAttention node 'attention': rel_v holds 11"):
        create_session(model)


def test_qkv_with_wrong_channels_is_refused_before_any_run():
    tables, attributes, _ = random_case(2, 2, 2, 2, 3, 3, (1, 4, 4))
    model = one_node_model(tables, attributes, (1, 13, 4, 4))
    with pytest.raises(ValueError, match=r"'attention': qkv has 13 channels, but .* = 12"):
        create_session(model)
