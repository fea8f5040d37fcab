"""Pieces of a graph (the nodes computing some tensors from others) cut out and run in ONNX
Runtime: what probing and the per-layer check execute."""

from __future__ import annotations

import numpy as np
import onnx

from .locate import GraphIndex, quiet_session
from .records import Refusal


class PieceExtractor:
    """Cuts pieces out of a graph: the nodes computing some tensors from others.

    (onnx.utils.Extractor needs shape-inferred value_info for every cut tensor, which
    reshapes computed from Shape ops often defeat; the cut only needs the node list.)
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.index = GraphIndex(model.graph)
        self.initializers = {t.name: t for t in model.graph.initializer}

    def extract_model(self, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
        nodes: list[onnx.NodeProto] = []
        seen: set[int] = set()
        used_initializers: set[str] = set()
        stack = list(outputs)
        stop = set(inputs)
        while stack:
            tensor = stack.pop()
            if tensor in stop or not tensor:
                continue
            if tensor in self.initializers:
                used_initializers.add(tensor)
                continue
            node = self.index.producer.get(tensor)
            if node is None:
                raise Refusal(f"tensor {tensor} cannot be computed from {inputs}")
            if id(node) in seen:
                continue
            seen.add(id(node))
            nodes.append(node)
            stack.extend(node.input)
        order = {id(node): position for position, node in enumerate(self.model.graph.node)}
        nodes.sort(key=lambda node: order[id(node)])

        def info(name: str) -> onnx.ValueInfoProto:
            return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)

        graph = onnx.helper.make_graph(
            nodes,
            "piece",
            [info(name) for name in inputs],
            [info(name) for name in outputs],
            [self.initializers[name] for name in sorted(used_initializers)],
        )
        piece = onnx.helper.make_model(graph, opset_imports=self.model.opset_import)
        piece.ir_version = self.model.ir_version
        return piece


class SubModel:
    """A piece of the graph (given inputs -> outputs) run by ONNX Runtime."""

    def __init__(self, extractor: PieceExtractor, inputs: list[str], outputs: list[str]):
        self.session = quiet_session(extractor.extract_model(inputs, outputs))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = outputs

    def __call__(self, **feeds: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {k: v for k, v in feeds.items() if k in self.inputs})
