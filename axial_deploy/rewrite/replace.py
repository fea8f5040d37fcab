"""Replace: each verified layer becomes X -> 1x1 Conv (blocked Q|K|V) -> AxialAttention -> Y.

As in onnx-graphsurgeon's examples/08_replacing_a_subgraph, the replacement is a registered
graph function: it disconnects the old layer from its output tensor and inserts the new nodes
between the layer's input and output; one `cleanup().toposort()` after all replacements removes
what became dead. The layout step then folds the transposes the cut added (see layout.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from axial_deploy.op.spec import (
    DOMAIN,
    OP_TYPE,
    AxialAttentionAttributes,
    axial_attention_node_attributes,
    opset_import,
)

from .layout import LINES_TO_NCHW, normalize_layout
from .probe import Extracted
from .records import LayerRecord


@gs.Graph.register()
def replace_with_axial_attention(
    self: gs.Graph, x_lines: gs.Variable, y_lines: gs.Variable, layer: Extracted, prefix: str
) -> gs.Node:
    """Compute `y_lines` from `x_lines` by Transpose -> Conv -> AxialAttention -> Transpose
    instead of by the nodes that computed it (left for cleanup); returns the new operator node.

    The layer is cut at its lines [N, other, C, L]; viewed as NCHW [N, C, other, L] the operator
    attends along axis 3 (`layer.attributes.axis`)."""
    y_lines.inputs.clear()  # disconnect the old layer; cleanup removes what became dead
    weight = layer.weight[:, :, None, None].astype(np.float32)
    channels = (weight.shape[1], weight.shape[0], layer.attributes.out_channels)
    # NCHW shapes of the new tensors (rank 4 always; sizes where the cut's shape knows them), so
    # tools such as `polygraphy inspect model` show them instead of an empty shape.
    x, qkv, y = (
        gs.Variable(f"{prefix}/{name}", dtype=np.float32, shape=_nchw(x_lines.shape, c))
        for name, c in zip(("input", "qkv", "output"), channels, strict=True)
    )
    tables = (table.astype(np.float32) for table in layer.tables())
    attrs = axial_attention_node_attributes(*tables, layer.attributes)
    conv_inputs = [
        x,
        gs.Constant(f"{prefix}/qkv_weight", weight),
        gs.Constant(f"{prefix}/qkv_bias", layer.bias.astype(np.float32)),
    ]
    operator = gs.Node(OP_TYPE, prefix, attrs, [qkv], [y], domain=DOMAIN)
    self.nodes.extend(
        [
            gs.Node("Transpose", f"{prefix}/to_nchw", {"perm": LINES_TO_NCHW}, [x_lines], [x]),
            gs.Node("Conv", f"{prefix}/qkv_conv", {"kernel_shape": [1, 1]}, conv_inputs, [qkv]),
            operator,
            gs.Node("Transpose", f"{prefix}/to_lines", {"perm": LINES_TO_NCHW}, [y], [y_lines]),
        ]
    )
    return operator


def _nchw(lines_shape, channels: int) -> list:
    """[N, C, other, L] of a layer cut at lines [N, other, C', L] (unknown sizes: None)."""
    n, other, _, length = (
        lines_shape if lines_shape is not None and len(lines_shape) == 4 else [None] * 4
    )
    return [n, channels, other, length]


def replace_layers(
    model: onnx.ModelProto, accepted: list[tuple[LayerRecord, Extracted]]
) -> onnx.ModelProto:
    """The model with every accepted layer replaced and the layout normalized; each record is
    marked rewritten and given its node's attributes (the axis it attends on the real NCHW
    tensor)."""
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    record_of: dict[str, LayerRecord] = {}
    for number, (record, layer) in enumerate(accepted):
        prefix = f"axial_attention_{number}"
        graph.replace_with_axial_attention(
            tensors[record.input], tensors[record.output], layer, prefix
        )
        record_of[prefix] = record
        record.rewritten = True
    graph.cleanup().toposort()
    normalize_layout(graph, OP_TYPE)
    graph.cleanup().toposort()
    for node in graph.nodes:  # the attributes on the real NCHW tensor, once normalized
        if node.op == OP_TYPE and node.name in record_of:
            record_of[node.name].attributes = AxialAttentionAttributes.from_mapping(node.attrs)
    result = gs.export_onnx(graph)
    if accepted and not any(entry.domain == DOMAIN for entry in result.opset_import):
        result.opset_import.append(opset_import())
    return result
