"""Replace: the registered graph function wires Transpose -> Conv -> AxialAttention ->
Transpose in place of a layer; the result runs in ONNX Runtime (reference op) and matches the
operator computed in PyTorch (`verify.operator_output`)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from axial_deploy.op.ort import create_session
from axial_deploy.op.spec import AxialAttentionAttributes, opset_import, read_node
from axial_deploy.rewrite.probe import Extracted
from axial_deploy.rewrite.verify import operator_output

N, OTHER, C, L = 1, 3, 6, 5  # lines [N, other, C, L]
HEADS, DQ, DV = 2, 1, 3  # C = HEADS * DV


def random_layer(rng: np.random.Generator) -> Extracted:
    def draw(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    return Extracted(
        weight=draw(HEADS * (2 * DQ + DV), C),
        bias=draw(HEADS * (2 * DQ + DV)),
        rel_q=draw(HEADS, DQ, 2 * L - 1),
        rel_k=draw(HEADS, DQ, 2 * L - 1),
        rel_v=draw(HEADS, DV, 2 * L - 1),
        logit_scale=0.5 + rng.random(HEADS),
        out_bias=draw(HEADS * DV),
        attributes=AxialAttentionAttributes(
            axis=3, num_heads=HEADS, key_depth=DQ, value_depth=DV, span=0
        ),
    )


def test_registered_replacement_computes_the_operator():
    rng = np.random.default_rng(0)
    layer = random_layer(rng)
    x_lines = gs.Variable("x", dtype=np.float32, shape=(N, OTHER, C, L))
    graph = gs.Graph(inputs=[x_lines], opset=17)
    [y_lines] = graph.layer(op="Relu", name="old_layer", inputs=[x_lines], outputs=["y"])
    y_lines.dtype = np.float32
    graph.outputs = [y_lines]

    node = graph.replace_with_axial_attention(x_lines, y_lines, layer, "axial_attention_0")
    graph.cleanup().toposort()
    assert [n.op for n in graph.nodes] == ["Transpose", "Conv", "AxialAttention", "Transpose"]
    assert node.name == "axial_attention_0" and "old_layer" not in [n.name for n in graph.nodes]

    model = gs.export_onnx(graph)
    model.opset_import.append(opset_import())
    tables, attributes = read_node(model.graph.node[2])
    assert attributes == layer.attributes
    for read, table in zip(tables.values(), layer.tables(), strict=True):
        np.testing.assert_allclose(read, table.astype(np.float32))

    x = rng.standard_normal((N, OTHER, C, L)).astype(np.float32)
    got = create_session(model).run(None, {"x": x})[0]
    expected = operator_output(x, layer)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)  # fp32 graph vs fp64
