"""Locate: the graph index and each candidate layer's boundaries.

Every Softmax is a candidate. Walking back from it, the first 1x1 Conv is the qkv projection;
its input, walked back through reshapes, is the layer input X (lines [N, other, C, L]). Walking
forward, the first 4-D Transpose that every path from the Softmax to the graph outputs goes
through is the layer output Y (its input, lines again; stride pooling stays after it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from axial_deploy.graph import (
    SymbolicDimensionError,
    attribute,
    consumers,
    graph_input_dims,
    label,
    producers,
    static_shape,
)

from .records import LayerRecord, Refusal, RewriteError

RESHAPE_OPS = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


class GraphIndex:
    """Producers and consumers of every tensor of an ONNX graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer = producers(graph)
        self.consumers = consumers(graph)
        self.initializers = {t.name for t in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input}
        self.graph_outputs = {o.name for o in graph.output}

    def is_constant(self, name: str) -> bool:
        """A tensor computed from initializers and Constant nodes only."""
        seen: set[str] = set()
        stack = [name]
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor == "" or tensor in self.initializers:
                continue
            seen.add(tensor)
            if tensor in self.graph_inputs:
                return False
            node = self.producer.get(tensor)
            if node is None:
                return False
            if node.op_type in ("Shape", "Size"):
                return False
            stack.extend(node.input)
        return True

    def data_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if name and not self.is_constant(name)]


@dataclass
class Candidate:
    """A Softmax whose layer boundaries were found (its record names X and Y)."""

    record: LayerRecord
    softmax: onnx.NodeProto
    conv: onnx.NodeProto


def locate_layers(index: GraphIndex) -> tuple[list[LayerRecord], list[Candidate]]:
    """A record for every Softmax, and the candidates whose qkv Conv, X and Y were found (the
    others' records say why not)."""
    records: list[LayerRecord] = []
    candidates: list[Candidate] = []
    for softmax in (node for node in index.graph.node if node.op_type == "Softmax"):
        record = LayerRecord(softmax=label(softmax))
        records.append(record)
        conv, reason = search_qkv_conv(index, softmax)
        if conv is None:
            record.reason = reason
            continue
        y_name = layer_output(index, softmax)
        if y_name is None:
            record.reason = "no NCHW Transpose after the Softmax that all its paths go through"
            continue
        record.input, record.output = layer_input(index, conv), y_name
        candidates.append(Candidate(record, softmax, conv))
    return records, candidates


# How far (in nodes) the qkv projection may lie before the Softmax: the exporters' logits
# take at most ~12 nodes from the projection (BatchNorm, split, per-head reshapes, the q.k
# and relative terms); farther is another layer's.
QKV_SEARCH_DEPTH = 24

# Ops that project channels with constant weights: the walk back from a Softmax stops at the
# first one on each path (the layer's projection); past it lies the previous layer.
PROJECTION_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"}


def find_qkv_conv(index: GraphIndex, softmax: onnx.NodeProto) -> onnx.NodeProto | None:
    """The layer's 1x1 Conv: the nearest among the Softmax's data ancestors (breadth first)."""
    conv, _ = search_qkv_conv(index, softmax)
    return conv


def search_qkv_conv(
    index: GraphIndex, softmax: onnx.NodeProto
) -> tuple[onnx.NodeProto | None, str]:
    """(the qkv 1x1 Conv, "") or (None, what was found instead). The walk back is bounded to
    the layer: it stops at each path's first projection (a node with constant weights) and
    after QKV_SEARCH_DEPTH nodes, so it never names an unrelated conv before the layer."""
    frontier = [(tensor, 1) for tensor in index.data_inputs(softmax)]
    seen: set[str] = set()
    stopped_at: list[onnx.NodeProto] = []
    while frontier:
        tensor, depth = frontier.pop(0)
        node = index.producer.get(tensor)
        if tensor in seen or node is None or depth > QKV_SEARCH_DEPTH:
            continue
        seen.add(tensor)
        if is_qkv_conv(node):
            return node, ""
        if node.op_type in PROJECTION_OPS and len(index.data_inputs(node)) < len(
            [name for name in node.input if name]
        ):
            stopped_at.append(node)
            continue
        if node.op_type not in ("Shape", "Size"):
            frontier.extend((name, depth + 1) for name in index.data_inputs(node))
    return None, _no_qkv_reason(stopped_at)


def is_qkv_conv(node: onnx.NodeProto) -> bool:
    kernel = attribute(node, "kernel_shape") or []
    return (
        node.op_type == "Conv"
        and bool(kernel)
        and all(k == 1 for k in kernel)
        and attribute(node, "group", 1) == 1
    )


def _no_qkv_reason(stopped_at: list[onnx.NodeProto]) -> str:
    """What the bounded walk found instead of a 1x1 Conv, named."""
    if not stopped_at:
        return f"no 1x1 Conv (qkv projection) feeds this Softmax within {QKV_SEARCH_DEPTH} nodes"
    found = ", ".join(f"{node.op_type} {label(node)}" for node in stopped_at[:3])
    return (
        "no 1x1 Conv (qkv projection) feeds this Softmax: its q / k come from "
        f"{found} (a projection with constant weights that is not an ungrouped 1x1 Conv)"
    )


def layer_input(index: GraphIndex, conv: onnx.NodeProto) -> str:
    """The layer's input lines [N, other, C, L]: the qkv Conv's input walked back through the
    reshapes that fold the lines into a batch (Transposes stay outside: exporters merge the
    permutes of consecutive layers into one)."""
    tensor = conv.input[0]
    while True:
        node = index.producer.get(tensor)
        if node is None or node.op_type not in RESHAPE_OPS:
            return tensor
        tensor = node.input[0]


def layer_output(index: GraphIndex, softmax: onnx.NodeProto) -> str | None:
    """The layer's output lines [N, other, C, L]: the input of the first 4-D Transpose that
    post-dominates the Softmax (every path from it to the graph outputs crosses it)."""
    order: list[onnx.NodeProto] = []
    seen: set[int] = set()
    frontier = [softmax]
    while frontier:  # breadth-first over descendants, nearest first
        node = frontier.pop(0)
        for name in node.output:
            for consumer in index.consumers.get(name, []):
                if id(consumer) not in seen:
                    seen.add(id(consumer))
                    order.append(consumer)
                    frontier.append(consumer)
    for candidate in order:
        if candidate.op_type != "Transpose" or len(attribute(candidate, "perm", [])) != 4:
            continue
        if post_dominates(index, softmax, candidate):
            return candidate.input[0]
    return None


def post_dominates(index: GraphIndex, start: onnx.NodeProto, gate: onnx.NodeProto) -> bool:
    """True when every path from `start` to a graph output passes through `gate`."""
    stack = [start]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node is gate:
            continue
        for name in node.output:
            if name in index.graph_outputs:
                return False
            stack.extend(index.consumers.get(name, []))
    return id(gate) in seen


def region_nodes(index: GraphIndex, x: str, y: str) -> list[onnx.NodeProto]:
    """Nodes that compute Y from X (ancestors of Y down to X, constants and shape helpers)."""
    nodes: list[onnx.NodeProto] = []
    seen: set[int] = set()
    stack = [y]
    while stack:
        tensor = stack.pop()
        if tensor == x or tensor in index.initializers or tensor in index.graph_inputs:
            continue
        node = index.producer.get(tensor)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(name for name in node.input if name)
    return nodes


def constant_values(model: onnx.ModelProto) -> Callable[[str], np.ndarray]:
    """name -> value of a constant tensor (initializer or Constant node); Refusal otherwise."""
    from onnx import numpy_helper

    table = {t.name: t for t in model.graph.initializer}
    constants = {
        node.output[0]: node
        for node in model.graph.node
        if node.op_type == "Constant" and attribute(node, "value") is not None
    }

    # Exporters share equal constants between nodes through Identity nodes (e.g. an all-zero
    # conv bias and an all-zero BatchNorm shift): follow them to the initializer.
    identities = {
        node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "Identity"
    }

    def values(name: str) -> np.ndarray:
        while name in identities and name not in table:
            name = identities[name]
        if name in table:
            return numpy_helper.to_array(table[name])
        if name in constants:
            return numpy_helper.to_array(attribute(constants[name], "value"))
        raise Refusal(f"tensor {name} is not a constant")

    return values


# ------------------------------------------------------------------- shapes of the boundaries


def static_input_shapes(
    model: onnx.ModelProto, batch: int = 1, sizes: tuple[int, ...] | None = None
) -> dict[str, tuple[int, ...]]:
    """The graph inputs' shapes with a symbolic batch set to `batch` and other symbolic axes
    (height, width) taken from `sizes` (probing runs fixed sizes)."""
    shapes = {}
    for name, dims in graph_input_dims(model).items():
        try:
            shapes[name] = static_shape(dims, batch, sizes)
        except SymbolicDimensionError as error:
            raise RewriteError(
                f"graph input {name!r} has a symbolic dimension {error.axis} "
                f"({error.dim}): rewriting probes each layer at fixed sizes; give them "
                "with --probe-shape NxCxHxW (or export with static height and width)"
            ) from None
    return shapes


def tensor_shapes(
    model: onnx.ModelProto,
    names: list[str],
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Static shapes of the named tensors for `input_shapes` (default: the graph's, batch 1): by
    ONNX shape inference with the inputs made static, else by running the graph once on zeros
    (costly for big inputs)."""
    static = onnx.ModelProto()
    static.CopyFrom(model)
    input_shapes = input_shapes or static_input_shapes(model)
    for graph_input in static.graph.input:
        if graph_input.name in input_shapes:
            for dim, size in zip(
                graph_input.type.tensor_type.shape.dim, input_shapes[graph_input.name], strict=True
            ):
                dim.dim_value = size
    try:
        inferred = onnx.shape_inference.infer_shapes(static, data_prop=True)
        known = {}
        for info in inferred.graph.value_info:
            dims = info.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
                known[info.name] = tuple(d.dim_value for d in dims)
        if all(name in known for name in names):
            return {name: known[name] for name in names}
    except Exception:  # shape inference is best effort; running the graph always works
        pass
    return _run_for_shapes(model, names, input_shapes)


# ONNX Runtime logs a failing node at ERROR (3) before raising: probing expects such failures
# (a reshape with sizes baked in) and reports them through Python exceptions, so probe sessions
# log only FATAL (4) and the user's terminal stays clean.
QUIET_LOG_SEVERITY = 4


def quiet_session(model: onnx.ModelProto):
    """A CPU InferenceSession that raises on failure without printing ORT's error lines."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = QUIET_LOG_SEVERITY
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _run_for_shapes(
    model: onnx.ModelProto, names: list[str], input_shapes: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = quiet_session(probe)
    feeds = {}
    for name, shape in input_shapes.items():
        elem = next(i for i in model.graph.input if i.name == name).type.tensor_type.elem_type
        feeds[name] = np.zeros(shape, onnx.helper.tensor_dtype_to_np_dtype(elem))
    results = session.run(names, feeds)
    return {name: tuple(value.shape) for name, value in zip(names, results, strict=True)}
