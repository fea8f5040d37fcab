"""Locate: the candidate layers' boundaries and the graph facts they rest on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axial_deploy.rewrite.locate import (
    GraphIndex,
    constant_values,
    locate_layers,
    region_nodes,
    static_input_shapes,
    tensor_shapes,
)
from axial_deploy.rewrite.records import Refusal, RewriteError

DATA = Path(__file__).parent.parent / "data"


def test_layers_of_the_reference_block():
    """The recorded reference AxialBlock: height then width attention, each found whole."""
    model = onnx.load(DATA / "reference_axial_block.onnx")
    index = GraphIndex(model.graph)
    records, candidates = locate_layers(index)
    assert len(records) == len(candidates) == 2
    assert [c.record for c in candidates] == records and not any(r.reason for r in records)
    shapes = tensor_shapes(model, [r.input for r in records])
    for candidate in candidates:
        conv, record = candidate.conv, candidate.record
        assert conv.op_type == "Conv" and record.softmax == candidate.softmax.name
        # The lines [N, other, C, L] of the 8-channel 8x8 attention input (the bottleneck of the
        # 16-channel block) at batch 1.
        assert shapes[record.input] == (1, 8, 8, 8)
        region = region_nodes(index, record.input, record.output)
        assert conv in region and candidate.softmax in region
        assert all(
            node.op_type != "Transpose" or node.output[0] != record.output for node in region
        )


def tiny(nodes, initializers=()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], list(initializers)))


def test_softmax_without_a_layer_is_reported():
    weight = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    no_conv = tiny([helper.make_node("Softmax", ["x"], ["y"], name="lonely")])
    records, candidates = locate_layers(GraphIndex(no_conv.graph))
    assert not candidates and records[0].softmax == "lonely"
    assert records[0].reason.startswith("no 1x1 Conv (qkv projection) feeds this Softmax")

    no_transpose = tiny(
        [
            helper.make_node("Conv", ["x", "w"], ["qkv"], kernel_shape=[1, 1]),
            helper.make_node("Softmax", ["qkv"], ["y"]),  # unnamed: reported by its output
        ],
        [weight],
    )
    records, candidates = locate_layers(GraphIndex(no_transpose.graph))
    assert not candidates and records[0].softmax == "y"
    assert "no NCHW Transpose after the Softmax" in records[0].reason


def test_input_shapes_allow_only_a_symbolic_batch():
    model = onnx.load(DATA / "reference_axial_block.onnx")
    assert static_input_shapes(model) == {"x": (1, 16, 8, 8)}
    assert static_input_shapes(model, batch=3) == {"x": (3, 16, 8, 8)}
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(RewriteError, match=r"symbolic dimension 2 \(height\).*--probe-shape"):
        static_input_shapes(model)


def test_constant_values_follow_identities_and_constant_nodes():
    bias = numpy_helper.from_array(np.arange(3, dtype=np.float32), "bias")
    model = tiny(
        [
            helper.make_node("Identity", ["bias"], ["shared_bias"]),
            helper.make_node(
                "Constant", [], ["scale"], value=numpy_helper.from_array(np.float32(2.0))
            ),
            helper.make_node("Relu", ["x"], ["y"]),
        ],
        [bias],
    )
    values = constant_values(model)
    np.testing.assert_array_equal(values("shared_bias"), [0.0, 1.0, 2.0])
    assert values("scale") == 2.0
    with pytest.raises(Refusal, match="tensor y is not a constant"):
        values("y")
    index = GraphIndex(model.graph)
    assert index.is_constant("shared_bias") and not index.is_constant("y")
