"""Stage 2: rewrite every axial-attention layer of an ONNX graph into one AxialAttention node.

A layer is found from what it computes, not from node names or one exporter's op patterns:

1. *Locate*: every Softmax is a candidate. Walking back from it, the first 1x1 Conv is the qkv
   projection; its input, walked back through layout ops (Reshape, Transpose, ...), is the layer
   input X (NCHW). Walking forward, the first Transpose that every path from the Softmax to the
   graph outputs goes through is the layer output Y (NCHW; stride pooling stays after it).
2. *Extract by probing*: the piece of graph from the qkv tensor to the Softmax input (logits)
   is linear in q and k plus one bilinear q.k term, and the piece from (qkv, attention weights)
   to Y is linear in v and the weights plus a bias. ONNX Runtime runs both pieces on probe
   inputs (each line of the batch of lines is an independent probe), which reveals each qkv
   channel's role (query, key, value) and head, the relative tables, the logit scales, the value
   scales and the output bias: the operator contract's constants, whatever ops the exporter
   chose (Einsum or MatMul, Gather, BatchNormalization folded or not).
3. *Verify*: the original layer (ONNX Runtime) and the extracted Conv + operator
   (`axial_attention_op`) must agree on a random input (fp32 max rel err < 1e-4); otherwise
   the layer is left intact and reported with the reason. A graph is never silently wrong.
4. *Replace* (onnx-graphsurgeon): X -> 1x1 Conv (blocked Q|K|V) -> AxialAttention -> Y, then
   one cleanup/toposort removes what became dead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from axial_deploy.artifacts import atomic_output, load_onnx
from axial_deploy.errors import AxialDeployError

RESHAPE_OPS = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}
SWAP_HW = [0, 1, 3, 2]
LINES_TO_NCHW = [0, 2, 1, 3]  # [N, other, C, L] <-> [N, C, other, L] (its own inverse)
PROBE_LINES = 32  # lines of a layer that probing and verification run (they are independent)
VERIFY_RTOL = 1e-4  # fp32: max abs error / max |reference| of the layer's output


class RewriteError(AxialDeployError, ValueError):
    """The input cannot be rewritten at all (not ONNX, unreadable, ...)."""


@dataclass
class LayerRecord:
    """One candidate attention layer (a Softmax) and what happened to it."""

    softmax: str
    rewritten: bool = False
    reason: str = ""
    axis: int | None = None
    num_heads: int | None = None
    key_depth: int | None = None
    value_depth: int | None = None
    span: int | None = None
    line_length: int | None = None
    table_length: int | None = None
    input: str | None = None
    output: str | None = None
    max_rel_err: float | None = None
    replaced_nodes: list[str] = field(default_factory=list)


@dataclass
class RewriteReport:
    source: str
    layers: list[LayerRecord]
    already_rewritten: int = 0
    seconds: float = 0.0

    @property
    def rewritten(self) -> list[LayerRecord]:
        return [layer for layer in self.layers if layer.rewritten]

    @property
    def left(self) -> list[LayerRecord]:
        return [layer for layer in self.layers if not layer.rewritten]

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "rewritten": len(self.rewritten),
                "left_intact": len(self.left),
                "already_rewritten": self.already_rewritten,
                "seconds": round(self.seconds, 2),
                "layers": [asdict(layer) for layer in self.layers],
            },
            indent=2,
        )

    def summary(self) -> str:
        lines = [
            f"{len(self.rewritten)} axial-attention layers rewritten, {len(self.left)} left "
            f"intact, {self.already_rewritten} AxialAttention nodes already present "
            f"({self.seconds:.1f} s)"
        ]
        for layer in self.layers:
            if layer.rewritten:
                lines.append(
                    f"  rewritten  axis={layer.axis} heads={layer.num_heads} "
                    f"Dq={layer.key_depth} Dv={layer.value_depth} span={layer.span} "
                    f"L={layer.line_length} T={layer.table_length} "
                    f"err={layer.max_rel_err:.1e} nodes={len(layer.replaced_nodes)} "
                    f"[{layer.softmax}]"
                )
            else:
                lines.append(f"  LEFT       {layer.softmax}: {layer.reason}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- graph helpers


class GraphIndex:
    """Producers and consumers of every tensor of an ONNX graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
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


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _find_qkv_conv(index: GraphIndex, softmax: onnx.NodeProto) -> onnx.NodeProto | None:
    """Nearest 1x1 Conv among the Softmax's data ancestors (breadth first)."""
    frontier = list(index.data_inputs(softmax))
    seen: set[str] = set()
    while frontier:
        tensor = frontier.pop(0)
        if tensor in seen:
            continue
        seen.add(tensor)
        node = index.producer.get(tensor)
        if node is None:
            continue
        if node.op_type == "Conv":
            kernel = _attribute(node, "kernel_shape") or []
            group = _attribute(node, "group", 1)
            if kernel and all(k == 1 for k in kernel) and group == 1:
                return node
        if node.op_type in ("Shape", "Size"):
            continue
        frontier.extend(index.data_inputs(node))
    return None


def _layer_input(index: GraphIndex, conv: onnx.NodeProto) -> str:
    """The layer's input lines [N, other, C, L]: the qkv Conv's input walked back through the
    reshapes that fold the lines into a batch (Transposes stay outside: exporters merge the
    permutes of consecutive layers into one)."""
    tensor = conv.input[0]
    while True:
        node = index.producer.get(tensor)
        if node is None or node.op_type not in RESHAPE_OPS:
            return tensor
        tensor = node.input[0]


def _layer_output(index: GraphIndex, softmax: onnx.NodeProto) -> str | None:
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
        if candidate.op_type != "Transpose" or len(_attribute(candidate, "perm", [])) != 4:
            continue
        if _post_dominates(index, softmax, candidate):
            return candidate.input[0]
    return None


def _post_dominates(index: GraphIndex, start: onnx.NodeProto, gate: onnx.NodeProto) -> bool:
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


def _region_nodes(index: GraphIndex, x: str, y: str) -> list[onnx.NodeProto]:
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


# ---------------------------------------------------------------------------- probing helpers


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
                raise _Refuse(f"tensor {tensor} cannot be computed from {inputs}")
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
        import onnxruntime as ort

        model = extractor.extract_model(inputs, outputs)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = outputs

    def __call__(self, **feeds: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {k: v for k, v in feeds.items() if k in self.inputs})


@dataclass
class Extracted:
    weight: np.ndarray  # [G*(2Dq+Dv), Cin] blocked Q|K|V, value scales folded
    bias: np.ndarray
    rel_q: np.ndarray
    rel_k: np.ndarray
    rel_v: np.ndarray
    logit_scale: np.ndarray
    out_bias: np.ndarray
    axis: int
    num_heads: int
    key_depth: int
    value_depth: int
    span: int


def _conv_affine(
    index: GraphIndex, conv: onnx.NodeProto, values
) -> tuple[np.ndarray, np.ndarray, str]:
    """The qkv projection as (W [Cout, Cin], b [Cout], qkv tensor name), folding a
    BatchNormalization that directly follows the Conv (exporters that did not fold it)."""
    weight = values(conv.input[1])
    weight = weight.reshape(weight.shape[0], -1).astype(np.float64)
    bias = (
        values(conv.input[2]).astype(np.float64)
        if len(conv.input) > 2 and conv.input[2]
        else (np.zeros(weight.shape[0]))
    )
    out = conv.output[0]
    consumers = index.consumers.get(out, [])
    if len(consumers) == 1 and consumers[0].op_type == "BatchNormalization":
        bn = consumers[0]
        scale, shift, mean, var = (values(name).astype(np.float64) for name in bn.input[1:5])
        factor = scale / np.sqrt(var + _attribute(bn, "epsilon", 1e-5))
        weight = weight * factor[:, None]
        bias = (bias - mean) * factor + shift
        out = bn.output[0]
    return weight, bias, out


def _window_keys(length: int, width: int, is_global: bool) -> np.ndarray:
    """Key position of each (query, slot) of the logits' last axis; -1 outside the line."""
    query = np.arange(length)[:, None]
    slot = np.arange(width)[None, :]
    keys = (
        np.broadcast_to(slot, (length, width)).copy()
        if is_global
        else query + slot - (width - 1) // 2
    )
    keys[(keys < 0) | (keys >= length)] = -1
    return keys


def extract_layer(
    extractor: PieceExtractor,
    index: GraphIndex,
    conv: onnx.NodeProto,
    x_name: str,
    x_shape: tuple[int, ...],
    y_name: str,
    softmax: onnx.NodeProto,
    values: Callable[[str], np.ndarray],
) -> tuple[Extracted, dict]:
    """Probe the layer's two linear pieces in ONNX Runtime and return the contract's constants."""
    weight, bias, qkv_name = _conv_affine(index, conv, values)
    logits_name, weights_name = softmax.input[0], softmax.output[0]
    softmax_axis = _attribute(softmax, "axis", -1)

    x_zero = np.zeros(x_shape, np.float32)
    shapes_model = SubModel(extractor, [x_name], [qkv_name, logits_name, y_name])
    qkv0, logits_shape_probe, y0_full = shapes_model(**{x_name: x_zero})
    if qkv0.ndim != 3:
        raise _Refuse(
            f"the qkv projection gives a rank-{qkv0.ndim} tensor, expected lines [B, C, L]"
        )
    lines, channels, length = qkv0.shape
    if logits_shape_probe.ndim != 4 or softmax_axis not in (-1, 3):
        raise _Refuse("the Softmax does not normalise the last axis of [lines, heads, L, keys]")
    _, heads, length_q, width = logits_shape_probe.shape
    if length_q != length or lines != logits_shape_probe.shape[0]:
        raise _Refuse("the logits are not [lines, heads, L, keys] of the qkv lines")

    to_logits = SubModel(extractor, [x_name, qkv_name], [logits_name])
    to_output = SubModel(extractor, [x_name, qkv_name, weights_name], [y_name])

    def logits_of(qkv: np.ndarray, keep_mask: bool = False) -> np.ndarray:
        """Logits for a qkv probe; masked (-inf) entries read 0 unless `keep_mask`."""
        out = to_logits(**{x_name: x_zero, qkv_name: qkv.astype(np.float32)})[0]
        out = out.astype(np.float64)
        return out if keep_mask else np.where(np.isfinite(out), out, 0.0)

    def output_of(qkv: np.ndarray, attn: np.ndarray) -> np.ndarray:
        feeds = {
            x_name: x_zero,
            qkv_name: qkv.astype(np.float32),
            weights_name: attn.astype(np.float32),
        }
        return to_output(**feeds)[0].astype(np.float64)

    # Input and output lines are [N, other, C, L]; the batch of lines is N * other.
    if y0_full.ndim != 4 or y0_full.shape[0] * y0_full.shape[1] != lines:
        raise _Refuse("the layer output is not lines [N, other, C, L] of the qkv lines")
    if y0_full.shape[3] != length:
        raise _Refuse("the layer output's last axis is not the attended line")

    def y_lines(y: np.ndarray) -> np.ndarray:
        return y.reshape(lines, -1, length)

    zero_qkv = np.zeros((lines, channels, length))
    valid = np.isfinite(logits_of(zero_qkv, keep_mask=True)[0, 0])  # -inf outside windows
    base = logits_of(zero_qkv)  # BatchNorm shifts only
    is_global = bool(valid.all()) and width == length
    keys = _window_keys(length, width, is_global)
    if not np.array_equal(valid, keys >= 0):
        raise _Refuse("the logits' masking does not match a (clipped) window around each query")
    span = 0 if is_global else width
    # Offsets a query can reach on this line: the table needs no more (a window wider than
    # the line is clipped by it; offsets beyond a table clamp to its ends).
    radius = min(length - 1, (width - 1) // 2) if not is_global else length - 1
    offsets = np.arange(-radius, radius + 1)
    middle = length // 2
    # One probe in the middle sees every offset when the window fits; else probe both ends.
    centred = middle - radius >= 0 and middle + radius <= length - 1
    probe_positions = [middle] if centred else [0, length - 1]

    # Roles: a channel set at one position moves logits of one query row (q), of one key column
    # (k), or no logits at all (v). Each line is one probe.
    role, head_of = np.full(channels, "", dtype=object), np.full(channels, -1)
    for start in range(0, channels, lines):
        count = min(lines, channels - start)
        probe = np.zeros((lines, channels, length))
        probe[np.arange(count), start + np.arange(count), middle] = 1.0
        delta = logits_of(probe) - base
        delta[:, :, ~valid] = 0.0
        for line in range(count):
            changed = np.abs(delta[line]) > 1e-7 * max(1.0, np.abs(delta[line]).max())
            channel = start + line
            if not changed.any():
                role[channel] = "v"
                continue
            hit_heads = np.flatnonzero(changed.any(axis=(1, 2)))
            if len(hit_heads) != 1:
                raise _Refuse(f"qkv channel {channel} feeds the logits of several heads")
            head_of[channel] = hit_heads[0]
            rows = np.flatnonzero(changed[hit_heads[0]].any(axis=1))
            role[channel] = "q" if np.array_equal(rows, [middle]) else "k"
    q_channels = [np.flatnonzero((role == "q") & (head_of == g)) for g in range(heads)]
    k_channels = [np.flatnonzero((role == "k") & (head_of == g)) for g in range(heads)]
    v_channels = np.flatnonzero(role == "v")
    key_depth = len(q_channels[0])
    if any(len(c) != key_depth for c in q_channels + k_channels) or key_depth == 0:
        raise _Refuse("heads do not have equal numbers of query and key channels")
    if len(v_channels) % heads:
        raise _Refuse("value channels do not split evenly over the heads")
    value_depth = len(v_channels) // heads

    # Relative terms: a query (key) channel alone at one position gives scale * table column
    # for each offset key - query its window reaches. Probe near both ends of the line so a
    # global table is seen at every offset.
    rel_q = np.zeros((heads, key_depth, len(offsets)))
    rel_k = np.zeros((heads, key_depth, len(offsets)))
    seen_q = np.zeros(len(offsets), bool)
    for table, channels_of, is_query in ((rel_q, q_channels, True), (rel_k, k_channels, False)):
        flat = [(g, c, ch) for g in range(heads) for c, ch in enumerate(channels_of[g])]
        for position in probe_positions:
            for start in range(0, len(flat), lines):
                chunk = flat[start : start + lines]
                probe = np.zeros((lines, channels, length))
                for line, (_, _, ch) in enumerate(chunk):
                    probe[line, ch, position] = 1.0
                delta = logits_of(probe) - base
                for line, (g, c, _) in enumerate(chunk):
                    if is_query:  # row `position`: every key of its window
                        for slot in np.flatnonzero(keys[position] >= 0):
                            d = keys[position, slot] - position
                            table[g, c, d + radius] = delta[line, g, position, slot]
                            seen_q[d + radius] = True
                    else:  # column: every query whose window holds key `position`
                        for query in range(length):
                            slot = np.flatnonzero(keys[query] == position)
                            if len(slot):
                                d = position - query
                                table[g, c, d + radius] = delta[line, g, query, slot[0]]
    if not seen_q.all():
        raise _Refuse("could not observe every relative offset of the tables")

    # q.k scale per head: q_a at one position and k_a at another, minus both linear parts.
    logit_scale = np.zeros(heads)
    query, key = (0, min(1, length - 1)) if is_global else (middle, min(middle + 1, length - 1))
    slot = int(np.flatnonzero(keys[query] == key)[0])
    probe = np.zeros((lines, channels, length))
    for g in range(heads):
        line = g % lines
        probe[line, q_channels[g][0], query] = 1.0
        probe[line, k_channels[g][0], key] = 1.0
        if line == lines - 1 or g == heads - 1:
            delta = logits_of(probe) - base
            for h in range(g - line, g + 1):
                d = key - query
                linear = rel_q[h, 0, d + radius] + rel_k[h, 0, d + radius]
                logit_scale[h] = delta[h % lines, h, query, slot] - linear
            probe[:] = 0.0
    for g in range(heads):  # the paired q / k channels must give the same scale
        for a in range(1, key_depth):
            probe = np.zeros((lines, channels, length))
            probe[0, q_channels[g][a], query] = 1.0
            probe[0, k_channels[g][a], key] = 1.0
            delta = logits_of(probe) - base
            d = key - query
            got = delta[0, g, query, slot] - rel_q[g, a, d + radius] - rel_k[g, a, d + radius]
            if not np.isclose(got, logit_scale[g], rtol=1e-3, atol=1e-6):
                raise _Refuse("query and key channels of a head do not pair up in order")
        break  # one head checked for pairing is enough to catch a different layout

    # Output side: attention weights fed directly. All-zero weights give the output bias; a
    # one-hot weight at offset d gives scale_sve * r^v(d) (+ bias); a value channel added at
    # that key gives its value scale on its output channel.
    zero_attn = np.zeros((lines, heads, length, width))
    out_bias_lines = y_lines(output_of(zero_qkv, zero_attn))[0]  # [C, L]
    out_bias = out_bias_lines[:, 0]
    if not np.allclose(
        out_bias_lines, out_bias[:, None], atol=1e-5 * max(1, np.abs(out_bias).max())
    ):
        raise _Refuse("the output bias varies along the line")
    out_channels = out_bias.shape[0]
    if out_channels != heads * value_depth:
        raise _Refuse("output channels != heads x value depth")

    # The output at query i reads only row i of the weights, so one run holds a one-hot row
    # per (line, query): every offset gets its own row, in as few runs as needed.
    rel_v = np.zeros((heads, value_depth, len(offsets)))
    pending = list(range(len(offsets)))
    while pending:
        attn = np.zeros((lines, heads, length, width))
        used = np.zeros((lines, length), bool)
        placed = []
        for t in pending:
            d = offsets[t]
            rows = np.arange(max(0, -d), min(length, length - d))  # queries with key in line
            for line in range(lines):
                free = rows[~used[line, rows]]
                if len(free):
                    query = int(free[0])
                    slot = int(np.flatnonzero(keys[query] == query + d)[0])
                    attn[line, :, query, slot] = 1.0
                    used[line, query] = True
                    placed.append((t, line, query))
                    break
        if not placed:
            raise _Refuse("some relative offsets of the value table cannot be probed")
        y = y_lines(output_of(zero_qkv, attn))
        for t, line, query in placed:
            rel_v[:, :, t] = (y[line, :, query] - out_bias).reshape(heads, value_depth)
        pending = [t for t in pending if t not in {p[0] for p in placed}]

    value_scale = np.zeros(out_channels)
    v_for_output = np.full(out_channels, -1)
    attn = np.zeros((lines, heads, length, width))
    query, slot = middle, int(np.flatnonzero(keys[middle] == middle)[0])
    attn[:, :, query, slot] = 1.0
    base_y = y_lines(output_of(zero_qkv, attn))[0][:, query]
    for start in range(0, len(v_channels), lines):
        chunk = v_channels[start : start + lines]
        probe = np.zeros((lines, channels, length))
        probe[np.arange(len(chunk)), chunk, middle] = 1.0
        ys = y_lines(output_of(probe, attn))[:, :, query] - base_y
        for line, ch in enumerate(chunk):
            hit = np.flatnonzero(np.abs(ys[line]) > 1e-7 * max(1.0, np.abs(ys[line]).max()))
            if len(hit) != 1:
                raise _Refuse(f"value channel {ch} reaches {len(hit)} output channels, not one")
            v_for_output[hit[0]] = ch
            value_scale[hit[0]] = ys[line, hit[0]]
    if (v_for_output < 0).any():
        raise _Refuse("some output channels are not fed by any value channel")

    q_rows = np.concatenate(q_channels)
    k_rows = np.concatenate(k_channels)
    rows = np.concatenate([q_rows, k_rows, v_for_output])
    new_weight = weight[rows].copy()
    new_bias = bias[rows].copy()
    v_block = slice(2 * heads * key_depth, None)
    new_weight[v_block] *= value_scale[:, None]
    new_bias[v_block] *= value_scale
    extracted = Extracted(
        weight=new_weight,
        bias=new_bias,
        rel_q=rel_q,
        rel_k=rel_k,
        rel_v=rel_v,
        logit_scale=logit_scale,
        out_bias=out_bias,
        axis=3,  # on the lines viewed as [N, C, other, L]; see normalize_layout
        num_heads=heads,
        key_depth=key_depth,
        value_depth=value_depth,
        span=span,
    )
    return extracted, {"line_length": length}


class _Refuse(Exception):
    """A candidate layer that is not rewritten; the message is the reason reported."""


# ------------------------------------------------------------------------------ verification


def verify_layer(
    extractor: PieceExtractor,
    x_name: str,
    x_shape: tuple[int, ...],
    y_name: str,
    layer: Extracted,
    seed: int = 0,
) -> float:
    """Max relative error of Conv + AxialAttention against the original layer on a random X."""
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)
    expected = SubModel(extractor, [x_name], [y_name])(**{x_name: x})[0].astype(np.float64)
    try:
        import torch
    except ModuleNotFoundError:  # the torch-free install: the numpy form of the same op
        got = _replacement_numpy(x, layer)
        if got.shape != expected.shape:
            return float("inf")
        return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))

    from axial_deploy.models.axial_attention import axial_attention_op

    with torch.no_grad():
        xt = torch.from_numpy(x).double().permute(*LINES_TO_NCHW)
        weight = torch.from_numpy(layer.weight)[:, :, None, None]
        qkv = torch.nn.functional.conv2d(xt, weight, torch.from_numpy(layer.bias))
        got = axial_attention_op(
            qkv,
            torch.from_numpy(layer.rel_q),
            torch.from_numpy(layer.rel_k),
            torch.from_numpy(layer.rel_v),
            torch.from_numpy(layer.logit_scale),
            torch.from_numpy(layer.out_bias),
            axis=layer.axis,
            num_heads=layer.num_heads,
            key_depth=layer.key_depth,
            value_depth=layer.value_depth,
            span=layer.span,
        )
        got = got.permute(*LINES_TO_NCHW).numpy()
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))


def _replacement_numpy(x: np.ndarray, layer: Extracted) -> np.ndarray:
    """The 1x1 Conv + AxialAttention replacement of `layer` on `x`, in float64 numpy."""
    from axial_deploy.op_reference import axial_attention_numpy

    xt = x.astype(np.float64).transpose(LINES_TO_NCHW)
    weight = np.asarray(layer.weight, np.float64)
    qkv = np.einsum("oc,nchw->nohw", weight, xt) + np.asarray(layer.bias, np.float64)[:, None, None]
    tables = (layer.rel_q, layer.rel_k, layer.rel_v, layer.logit_scale, layer.out_bias)
    got = axial_attention_numpy(
        qkv, *(np.asarray(t, np.float64) for t in tables), axis=layer.axis,
        num_heads=layer.num_heads, key_depth=layer.key_depth, value_depth=layer.value_depth,
        span=layer.span,
    )  # fmt: skip
    return got.transpose(LINES_TO_NCHW)


# ------------------------------------------------------------------------------- the rewrite


def _constant_values(model: onnx.ModelProto) -> Callable[[str], np.ndarray]:
    from onnx import numpy_helper

    table = {t.name: t for t in model.graph.initializer}
    constants = {
        node.output[0]: node
        for node in model.graph.node
        if node.op_type == "Constant" and _attribute(node, "value") is not None
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
            return numpy_helper.to_array(_attribute(constants[name], "value"))
        raise _Refuse(f"tensor {name} is not a constant")

    return values


def _static_input_shapes(model: onnx.ModelProto, batch: int = 1) -> dict[str, tuple[int, ...]]:
    shapes = {}
    initializers = {t.name for t in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        dims = []
        for position, dim in enumerate(graph_input.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            elif position == 0:
                dims.append(batch)  # a symbolic batch: probe with batch 1
            else:
                raise RewriteError(
                    f"graph input {graph_input.name!r} has a symbolic dimension {position} "
                    f"({dim.dim_param or '?'}): rewriting probes each layer at fixed sizes; "
                    "export with static height and width (dynamic batch is fine)"
                )
        shapes[graph_input.name] = tuple(dims)
    return shapes


def _tensor_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Static shapes (batch 1) of the named tensors: by ONNX shape inference with the inputs
    made static, else by running the graph once on zeros (costly for big inputs)."""
    static = onnx.ModelProto()
    static.CopyFrom(model)
    input_shapes = _static_input_shapes(model)
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
    return _run_for_shapes(model, names)


def _run_for_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, ...]]:
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {}
    for name, shape in _static_input_shapes(model).items():
        elem = next(i for i in model.graph.input if i.name == name).type.tensor_type.elem_type
        feeds[name] = np.zeros(shape, onnx.helper.tensor_dtype_to_np_dtype(elem))
    results = session.run(names, feeds)
    return {name: tuple(value.shape) for name, value in zip(names, results, strict=True)}


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    return load_onnx(path, RewriteError)


def rewrite(
    model: onnx.ModelProto, source: str = "<model>"
) -> tuple[onnx.ModelProto, RewriteReport]:
    """Rewrite every recognized axial-attention layer; returns the new model and the report."""
    import onnx_graphsurgeon as gs

    from axial_deploy.op_spec import (
        DOMAIN,
        OP_TYPE,
        axial_attention_node_attributes,
        opset_import,
    )

    start = time.perf_counter()
    index = GraphIndex(model.graph)
    values = _constant_values(model)
    already = sum(1 for node in model.graph.node if node.op_type == OP_TYPE)
    softmaxes = [node for node in model.graph.node if node.op_type == "Softmax"]
    records: list[LayerRecord] = []
    located = []
    for softmax in softmaxes:
        record = LayerRecord(softmax=softmax.name or softmax.output[0])
        records.append(record)
        conv = _find_qkv_conv(index, softmax)
        if conv is None:
            record.reason = "no 1x1 Conv (qkv projection) feeds this Softmax"
            continue
        y_name = _layer_output(index, softmax)
        if y_name is None:
            record.reason = "no NCHW Transpose after the Softmax that all its paths go through"
            continue
        record.input, record.output = _layer_input(index, conv), y_name
        located.append((record, softmax, conv))

    if located:
        shapes = _tensor_shapes(model, sorted({record.input for record, _, _ in located}))
        extractor = PieceExtractor(model)
    accepted = []
    for record, softmax, conv in located:
        x_shape = shapes[record.input]
        if len(x_shape) != 4:
            record.reason = f"layer input {record.input} is rank {len(x_shape)}, not NCHW"
            continue
        # Lines are independent: probe a few of them (fast, small) when the graph computes its
        # reshapes from the input's shape; graphs with baked-in sizes get the full layer.
        few_lines = (1, min(x_shape[1], PROBE_LINES), *x_shape[2:])
        attempts = [few_lines, x_shape] if few_lines != tuple(x_shape) else [x_shape]
        for attempt, probe_shape in enumerate(attempts):
            try:
                layer, info = extract_layer(
                    extractor,
                    index,
                    conv,
                    record.input,
                    probe_shape,
                    record.output,
                    softmax,
                    values,
                )
                error = verify_layer(extractor, record.input, probe_shape, record.output, layer)
                break
            except _Refuse as refusal:
                record.reason = str(refusal)
                break
            except Exception as failure:  # ORT could not run a piece: report, never guess
                if attempt == len(attempts) - 1:
                    record.reason = f"probing failed: {type(failure).__name__}: {failure}"
        if record.reason:
            continue
        record.max_rel_err = error
        if not error < VERIFY_RTOL:
            record.reason = (
                f"extracted operator does not reproduce the layer (max rel err {error:.2e} "
                f">= {VERIFY_RTOL:.0e}): not an axial-attention layer this rewriter understands"
            )
            continue
        record.axis, record.num_heads = layer.axis, layer.num_heads
        record.key_depth, record.value_depth = layer.key_depth, layer.value_depth
        record.span, record.line_length = layer.span, info["line_length"]
        record.table_length = layer.rel_q.shape[-1]
        record.replaced_nodes = [
            node.name or node.output[0]
            for node in _region_nodes(index, record.input, record.output)
        ]
        accepted.append((record, layer))

    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    record_of: dict[str, LayerRecord] = {}
    for number, (record, layer) in enumerate(accepted):
        # The layer is cut at its lines [N, other, C, L]; viewed as NCHW [N, C, other, L] the
        # operator attends along axis 3. normalize_layout then folds these transposes into the
        # exporter's own and moves the node onto the real NCHW tensor where it can.
        x_lines, y_lines = tensors[record.input], tensors[record.output]
        y_lines.inputs.clear()  # disconnect the old layer; cleanup removes what became dead
        prefix = f"axial_attention_{number}"
        record_of[prefix] = record
        x = gs.Variable(f"{prefix}/input", dtype=np.float32)
        qkv = gs.Variable(f"{prefix}/qkv", dtype=np.float32)
        y = gs.Variable(f"{prefix}/output", dtype=np.float32)
        weight = layer.weight[:, :, None, None].astype(np.float32)
        attrs = axial_attention_node_attributes(
            layer.rel_q.astype(np.float32),
            layer.rel_k.astype(np.float32),
            layer.rel_v.astype(np.float32),
            layer.logit_scale.astype(np.float32),
            layer.out_bias.astype(np.float32),
            axis=layer.axis,
            num_heads=layer.num_heads,
            key_depth=layer.key_depth,
            value_depth=layer.value_depth,
            span=layer.span,
        )
        graph.nodes.extend(
            [
                gs.Node("Transpose", f"{prefix}/to_nchw", {"perm": LINES_TO_NCHW}, [x_lines], [x]),
                gs.Node(
                    "Conv",
                    f"{prefix}/qkv_conv",
                    {"kernel_shape": [1, 1]},
                    [
                        x,
                        gs.Constant(f"{prefix}/qkv_weight", weight),
                        gs.Constant(f"{prefix}/qkv_bias", layer.bias.astype(np.float32)),
                    ],
                    [qkv],
                ),
                gs.Node(OP_TYPE, prefix, attrs, [qkv], [y], domain=DOMAIN),
                gs.Node("Transpose", f"{prefix}/to_lines", {"perm": LINES_TO_NCHW}, [y], [y_lines]),
            ]
        )
        record.rewritten = True
    graph.cleanup().toposort()
    normalize_layout(graph, OP_TYPE)
    graph.cleanup().toposort()
    for node in graph.nodes:  # the attended axis of the real NCHW tensor, once normalized
        if node.op == OP_TYPE and node.name in record_of:
            record_of[node.name].axis = int(node.attrs["axis"])
    result = gs.export_onnx(graph)
    if accepted and not any(entry.domain == DOMAIN for entry in result.opset_import):
        result.opset_import.append(opset_import())
    report = RewriteReport(source, records, already, time.perf_counter() - start)
    return result, report


def normalize_layout(graph, op_type: str) -> None:
    """Fold chains of Transposes (dropping identities) and move each AxialAttention node from
    an H/W-swapped view onto the NCHW tensor itself (flipping its axis), so that a rewritten
    graph holds no more transposes than the exporter's and the node reads real NCHW tensors."""
    import onnx_graphsurgeon as gs

    def fold() -> None:
        changed = True
        while changed:
            changed = False
            for node in list(graph.nodes):
                if node.op != "Transpose" or "perm" not in node.attrs or not node.inputs:
                    continue
                source = node.inputs[0]
                if len(source.inputs) == 1 and source.inputs[0].op == "Transpose":
                    previous = source.inputs[0]
                    if "perm" not in previous.attrs:
                        continue
                    node.attrs["perm"] = [previous.attrs["perm"][i] for i in node.attrs["perm"]]
                    node.inputs[0] = previous.inputs[0]
                    changed = True
            for node in list(graph.nodes):
                perm = list(node.attrs.get("perm", [])) if node.op == "Transpose" else []
                if not perm or perm != list(range(len(perm))):
                    continue
                out, source = node.outputs[0], node.inputs[0]
                if out in graph.outputs:
                    continue
                for consumer in list(out.outputs):
                    for position, tensor in enumerate(consumer.inputs):
                        if tensor is out:
                            consumer.inputs[position] = source
                node.outputs.clear()
                changed = True
            graph.cleanup()

    def move_onto_nchw(node) -> bool:
        if node.op != op_type or len(node.inputs[0].inputs) != 1:
            return False
        qkv = node.inputs[0]
        conv = qkv.inputs[0]
        if conv.op != "Conv" or len(qkv.outputs) != 1:
            return False
        x = conv.inputs[0]
        if len(x.inputs) != 1 or x.inputs[0].op != "Transpose" or len(x.outputs) != 1:
            return False
        swap = x.inputs[0]
        if list(swap.attrs.get("perm", [])) != SWAP_HW:
            return False
        conv.inputs[0] = swap.inputs[0]
        node.attrs["axis"] = 5 - int(node.attrs["axis"])  # 2 <-> 3
        y = node.outputs[0]
        nchw = gs.Variable(f"{node.name}/nchw_output", dtype=y.dtype)
        node.outputs.clear()
        node.outputs.append(nchw)
        graph.nodes.append(
            gs.Node("Transpose", f"{node.name}/swap_hw", {"perm": SWAP_HW}, [nchw], [y])
        )
        return True

    # One node at a time, in graph order, folding after each move: a swap moved out of one
    # layer then cancels the swap in front of the next instead of being moved again.
    fold()
    moved = True
    while moved:
        graph.toposort()
        moved = any(move_onto_nchw(node) for node in graph.nodes)
        if moved:
            graph.cleanup()
            fold()


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write the model atomically (see artifacts.atomic_output)."""
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)


def rewrite_file(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    report_path: str | os.PathLike | None = None,
    strict: bool = False,
) -> RewriteReport:
    """Rewrite `source` into `target` (and the JSON report). With `strict`, fail (writing
    nothing) when any candidate layer is left intact."""
    model = load_model(source)
    result, report = rewrite(model, str(source))
    if strict and report.left:
        reasons = "; ".join(f"{r.softmax}: {r.reason}" for r in report.left)
        raise RewriteError(f"--strict: {len(report.left)} layer(s) left intact: {reasons}")
    if not report.layers and not report.already_rewritten:
        raise RewriteError(
            f"{source} holds no attention (no Softmax and no AxialAttention node): nothing to "
            "rewrite. Is this an Axial-DeepLab / Axial-ResNet export?"
        )
    save_model(result, target)
    if report_path is not None:
        with atomic_output(report_path) as tmp:
            tmp.write_text(report.to_json())
    return report
