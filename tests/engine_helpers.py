"""Small ONNX graphs for the build / runtime / profile tests (built with onnx.helper: no torch,
milliseconds to make)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from axial_deploy.op import spec as op_spec


def conv_net(
    path: Path, *, batch: int | str = "N", seed: int = 0, dtype: type = np.float32
) -> Path:
    """input [batch, 3, 16, 16] -> Conv 3x3 (8) -> Relu -> Conv 1x1 (4) -> logits; names carry
    the exporters' scope paths (/stem/..., /head/...) so layers attribute to blocks. `dtype`
    float16 makes a strongly typed FP16 graph (FP16 weights, inputs and outputs)."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(dtype), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(dtype), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(dtype), "w2"),
    ]
    elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["h"], "/stem/conv/Conv", pads=[1] * 4),
        helper.make_node("Relu", ["h"], ["r"], "/stem/relu/Relu"),
        helper.make_node("Conv", ["r", "w2"], ["logits"], "/head/conv/Conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("input", elem_type, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", elem_type, [batch, 4, 16, 16])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def axial_net(path: Path) -> Path:
    """A rewritten-style graph: one AxialAttention node named like the rewriter names them."""
    rng = np.random.default_rng(0)
    groups, dq, dv, span, table = 2, 2, 4, 0, 15  # global span: table 2 * 8 - 1
    node = op_spec.make_node(
        "qkv",
        "y",
        name="axial_attention_0",
        rel_q=rng.normal(size=(groups, dq, table)),
        rel_k=rng.normal(size=(groups, dq, table)),
        rel_v=rng.normal(size=(groups, dv, table)),
        logit_scale=np.ones(groups),
        out_bias=np.zeros(groups * dv),
        attributes=op_spec.AxialAttentionAttributes(3, groups, dq, dv, span),
    )
    channels = groups * (2 * dq + dv)
    graph = helper.make_graph(
        [node],
        "axial_net",
        [helper.make_tensor_value_info("qkv", TensorProto.FLOAT, [1, channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, groups * dv, 8, 8])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), op_spec.opset_import()]
    )
    onnx.save(model, path)
    return path
