"""The shared ONNX graph helpers (axial_deploy.graph) on small hand-built graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from axial_deploy.graph import (
    SymbolicDimensionError,
    attribute,
    consumers,
    drop_unused_initializers,
    graph_input_dims,
    is_static,
    label,
    producers,
    replace_nodes,
    static_shape,
    unique_name,
    used_names,
)


def small_model() -> onnx.ModelProto:
    """x [batch, 3, H, 4] -> Conv(w) -> conv_out -> Relu -> y, and conv_out -> Sigmoid -> z."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv_out"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["conv_out"], ["y"]),  # unnamed: exporters leave some so
        helper.make_node("Sigmoid", ["conv_out"], ["z"], name="sigmoid"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "", 4])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "z")]
    weights = [
        numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.zeros(2, np.float32), "unused"),
    ]
    graph = helper.make_graph(nodes, "small", [x], outputs, weights)
    graph.value_info.append(helper.make_tensor_value_info("typed", TensorProto.FLOAT, [1]))
    return helper.make_model(graph)


def test_attribute_and_label():
    conv, relu, _ = small_model().graph.node
    assert attribute(conv, "kernel_shape") == [1, 1]
    assert attribute(conv, "group", 1) == 1  # absent: the default
    assert attribute(relu, "alpha") is None
    assert label(conv) == "conv" and label(relu) == "y"


def test_unique_names_avoid_everything_the_graph_uses():
    graph = small_model().graph
    taken = used_names(graph)
    assert {"conv", "x", "w", "unused", "conv_out", "y", "z", "typed"} <= taken
    assert unique_name("fresh", taken) == "fresh"
    assert unique_name("conv_out", taken) == "conv_out_1"
    assert unique_name("conv_out", taken) == "conv_out_2"  # each name is reserved once given
    assert unique_name("typed", taken) == "typed_1"  # value_info names count too
    assert {"fresh", "conv_out_1", "conv_out_2", "typed_1"} <= taken


def test_producers_and_consumers():
    graph = small_model().graph
    conv, relu, sigmoid = graph.node
    assert producers(graph) == {"conv_out": conv, "y": relu, "z": sigmoid}
    readers = consumers(graph)
    assert readers["conv_out"] == [relu, sigmoid]
    assert readers["x"] == [conv] and "y" not in readers


def test_replace_nodes_drops_unread_initializers():
    model = small_model()
    graph = model.graph
    replace_nodes(graph, [graph.node[0], graph.node[1]])
    assert [node.op_type for node in graph.node] == ["Conv", "Relu"]
    assert [tensor.name for tensor in graph.initializer] == ["w"]
    graph.node.pop(0)
    drop_unused_initializers(graph)
    assert not graph.initializer


def test_input_dims_and_static_shapes():
    model = small_model()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3, 1, 1]))
    assert graph_input_dims(model) == {"x": ["batch", 3, "?", 4]}  # initializers are not inputs
    assert static_shape([5, 3, 8, 8], batch=2) == (5, 3, 8, 8)
    assert static_shape(["batch", 3, 8, 8], batch=2) == (2, 3, 8, 8)
    assert static_shape([-1, 3, -1, 8], batch=2, sizes=(4, 3, 16, 8)) == (2, 3, 16, 8)
    with pytest.raises(SymbolicDimensionError) as error:
        static_shape(["batch", 3, "?", 4], batch=1)
    assert (error.value.axis, error.value.dim) == (2, "?")
    assert is_static(0) and is_static(np.int64(3))
    assert not any(is_static(dim) for dim in (-1, None, "h", True))
