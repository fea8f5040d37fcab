"""Layout: transpose folding and moving the operator onto the NCHW tensor, checked on small
graphs by structure and, where the graph runs, by ONNX Runtime against the unfolded graph."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

from axial_deploy.rewrite.layout import LINES_TO_NCHW, SWAP_HW, fold_transposes, normalize_layout


def transposes(perms: list[list[int]], then_relu: bool = True) -> gs.Graph:
    """x -> Transpose(perm) -> ... [-> Relu] -> y."""
    x = gs.Variable("x", dtype=np.float32, shape=(2, 3, 4, 5))
    graph = gs.Graph(inputs=[x], opset=17)
    tensor = x
    for number, perm in enumerate(perms):
        [tensor] = graph.layer(
            op="Transpose",
            name=f"t{number}",
            attrs={"perm": perm},
            inputs=[tensor],
            outputs=[f"t{number}_out"],
        )
    if then_relu:
        [tensor] = graph.layer(op="Relu", inputs=[tensor], outputs=["y"])
    tensor.dtype = np.float32
    graph.outputs = [tensor]
    return graph


def run(graph: gs.Graph, x: np.ndarray) -> np.ndarray:
    model = gs.export_onnx(graph.cleanup().toposort())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def ops(graph: gs.Graph) -> list[str]:
    return [node.op for node in graph.nodes]


def test_chains_compose_and_identities_vanish():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    cancelling = transposes([LINES_TO_NCHW, LINES_TO_NCHW])  # its own inverse
    expected = run(cancelling, x)
    fold_transposes(cancelling)
    assert ops(cancelling) == ["Relu"]
    np.testing.assert_array_equal(run(cancelling, x), expected)

    chain = transposes([SWAP_HW, LINES_TO_NCHW, [3, 2, 1, 0]])
    expected = run(chain, x)
    fold_transposes(chain)
    assert ops(chain) == ["Transpose", "Relu"]
    np.testing.assert_array_equal(run(chain, x), expected)


def test_an_identity_transpose_that_is_a_graph_output_stays():
    graph = transposes([SWAP_HW, SWAP_HW], then_relu=False)
    fold_transposes(graph)
    assert ops(graph) == ["Transpose"] and graph.nodes[0].attrs["perm"] == [0, 1, 2, 3]


def test_operator_moves_onto_the_nchw_tensor():
    """X -> Transpose(swap H/W) -> Conv -> AxialAttention(axis 3) -> Y reads X directly,
    attending along axis 2, with the swap moved after it."""
    x = gs.Variable("x", dtype=np.float32, shape=(1, 4, 6, 5))
    graph = gs.Graph(inputs=[x], opset=17)
    [swapped] = graph.layer(op="Transpose", attrs={"perm": SWAP_HW}, inputs=[x], outputs=["xs"])
    weight = gs.Constant("w", np.ones((4, 4, 1, 1), np.float32))
    [qkv] = graph.layer(op="Conv", inputs=[swapped, weight], outputs=["qkv"])
    [y] = graph.layer(
        op="AxialAttention", name="attn", attrs={"axis": 3}, inputs=[qkv], outputs=["y"]
    )
    y.dtype = np.float32
    graph.outputs = [y]
    normalize_layout(graph, "AxialAttention")
    graph.cleanup().toposort()
    assert ops(graph) == ["Conv", "AxialAttention", "Transpose"]
    conv, attention, swap = graph.nodes
    assert conv.inputs[0] is x and attention.attrs["axis"] == 2
    assert swap.attrs["perm"] == SWAP_HW and swap.outputs[0] is y
