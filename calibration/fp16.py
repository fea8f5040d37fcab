"""FP32 -> strongly typed FP16 graph.

TensorRT 11 (and TensorRT 10 with the STRONGLY_TYPED network flag) takes precision from the
graph's tensor types: no builder flag picks FP16 any more, and an op never mixes input types
implicitly. So the conversion decides, per node, FP16 or FP32, then makes every edge agree:

- a node runs in FP16 unless its op type is precision-sensitive (`KEEP_FP32_OPS`: exponentials,
  powers and reductions that overflow or lose digits in FP16) or calibration measured a value
  beyond `FP16_LIMIT` on one of its float inputs or outputs;
- float weights of FP16 nodes become FP16 initializers (a copy when an FP32 node shares them);
- where a tensor's type differs from what its consumer runs in, one Cast per (tensor, type) is
  inserted right before the first consumer that needs it;
- only the inputs that carry an op's compute type are cast (`TYPED_INPUTS`): Resize's scales
  stay float32, Reshape's shape stays int64, Shape reads any type;
- graph inputs and outputs keep FP32 (Casts at the edges) unless `keep_io_fp32=False`.

AxialAttention nodes run with FP16 I/O (the plugin computes in float32 inside, per its spec).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from axial_deploy.graph import attribute, label, replace_nodes, unique_name, used_names

from .ranges import TensorRange, float_tensor_types

FP16_LIMIT = 60000.0  # FP16 max is 65504: keep a margin for values beyond the calibration set
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16

# Precision-sensitive ops: exponentials overflow, long reductions lose digits in FP16.
KEEP_FP32_OPS = frozenset(
    {
        "Exp",
        "Log",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceLogSumExp",
        "ReduceProd",
        "LayerNormalization",
        "InstanceNormalization",
    }
)
# Ops whose inputs carry no compute type (they read shapes or any type).
TYPELESS_OPS = frozenset({"Shape", "Size", "Cast"})
# Input positions that must hold the op's compute type; absent ops: every input.
TYPED_INPUTS: dict[str, tuple[int, ...]] = {
    "Resize": (0,),
    "Upsample": (0,),
    "CastLike": (1,),  # its output takes the type of input 1
    "Reshape": (0,),
    "Slice": (0,),
    "Gather": (0,),
    "GatherElements": (0,),
    "GatherND": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Split": (0,),
    "Pad": (0, 2),
    "Where": (1, 2),
    "ConstantOfShape": (),
    "Range": (),
    "TopK": (0,),
    "ArgMax": (0,),
    "ArgMin": (0,),
}


@dataclass
class Fp16Result:
    model: onnx.ModelProto
    fp16_nodes: int = 0
    kept_fp32: dict[str, str] = field(default_factory=dict)  # node -> reason
    casts: int = 0


def _typed_inputs(node: onnx.NodeProto) -> list[int]:
    if node.op_type in TYPELESS_OPS:
        return []
    positions = TYPED_INPUTS.get(node.op_type, tuple(range(len(node.input))))
    return [p for p in positions if p < len(node.input) and node.input[p]]


def constants_to_initializers(model: onnx.ModelProto) -> None:
    """Constant nodes holding a tensor become initializers, so one rule converts all weights."""
    kept = []
    for node in model.graph.node:
        value = attribute(node, "value")
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def convert_to_fp16(
    model: onnx.ModelProto,
    ranges: Mapping[str, TensorRange] | None = None,
    *,
    keep_io_fp32: bool = True,
    keep_nodes: Iterable[str] = (),
    limit: float = FP16_LIMIT,
) -> Fp16Result:
    """A strongly typed FP16 copy of the FP32 `model` (see the module doc). `ranges` (from
    calibration) keeps nodes that would overflow in FP32; `keep_nodes` names more to keep."""
    conversion = _Fp16Conversion(model, ranges or {}, set(keep_nodes), limit)
    io_type = FLOAT if keep_io_fp32 else FLOAT16
    precision = conversion.decide()
    conversion.retype(precision, io_type)
    nodes = conversion.agree(precision)
    conversion.cast_outputs(nodes, io_type)
    graph = conversion.graph
    replace_nodes(graph, nodes)
    for info in graph.value_info:
        if info.name in conversion.dtype:
            info.type.tensor_type.elem_type = conversion.dtype[info.name]
    return conversion.result


class _Fp16Conversion:
    """The conversion's steps over one copy of the model, sharing its tensor types, the names
    taken, the new type of each float tensor (`dtype`) and the Casts made."""

    def __init__(
        self,
        model: onnx.ModelProto,
        ranges: Mapping[str, TensorRange],
        keep_nodes: set[str],
        limit: float,
    ) -> None:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        constants_to_initializers(copy)
        self.graph = copy.graph
        self.types = float_tensor_types(copy)
        self.ranges, self.keep_nodes, self.limit = ranges, keep_nodes, limit
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.taken = used_names(self.graph)
        self.result = Fp16Result(copy)
        self.dtype: dict[str, int] = {}
        self.casts: dict[tuple[str, int], str] = {}
        self.fp16_weights: dict[str, str] = {}

    def is_float32(self, name: str) -> bool:
        return self.types.get(name) == FLOAT

    def too_large(self, name: str) -> bool:
        if name in self.initializers and self.is_float32(name):
            weight = numpy_helper.to_array(self.initializers[name])
            return float(np.abs(weight).max(initial=0)) > self.limit
        measured = self.ranges.get(name)
        return measured is not None and measured.absmax > self.limit

    def decide(self) -> dict[int, int | None]:
        """1. Each node's precision: node index -> FLOAT16 / FLOAT / None (not float)."""
        precision: dict[int, int | None] = {}
        for index, node in enumerate(self.graph.node):
            typed = [node.input[p] for p in _typed_inputs(node) if self.is_float32(node.input[p])]
            outputs = [name for name in node.output if self.is_float32(name)]
            if node.op_type == "Cast":
                outputs = node.output if attribute(node, "to") == FLOAT else []
            if not typed and not outputs:
                precision[index] = None
                continue
            reason = self._keep_reason(node, typed, outputs)
            if reason:
                self.result.kept_fp32[label(node)] = reason
                precision[index] = FLOAT
            else:
                precision[index] = FLOAT16
                self.result.fp16_nodes += 1
        return precision

    def _keep_reason(self, node: onnx.NodeProto, typed: list[str], outputs) -> str | None:
        """Why a float node stays FP32, or None when it runs in FP16."""
        if node.op_type in KEEP_FP32_OPS:
            return f"{node.op_type} is precision-sensitive"
        if label(node) in self.keep_nodes:
            return "asked"
        if not typed and node.op_type != "Cast":
            return "creates float values from attributes (kept as written)"
        if node.op_type not in TYPELESS_OPS or node.op_type == "Cast":
            large = [name for name in [*typed, *outputs] if self.too_large(name)]
            if large:
                return f"{large[0]} exceeds the FP16 range (|x| > {self.limit:g})"
        return None

    def retype(self, precision: dict[int, int | None], io_type: int) -> None:
        """2. The type each float tensor has in the new graph (Casts to FLOAT follow their
        node's precision)."""
        for graph_input in self.graph.input:
            if self.is_float32(graph_input.name) and graph_input.name not in self.initializers:
                self.dtype[graph_input.name] = io_type
                graph_input.type.tensor_type.elem_type = io_type
        for index, node in enumerate(self.graph.node):
            if precision[index] is None:
                continue
            if node.op_type == "Cast":
                for entry in node.attribute:
                    if entry.name == "to" and entry.i == FLOAT:
                        entry.i = precision[index]
            for name in node.output:
                if self.is_float32(name):
                    self.dtype[name] = precision[index]

    def agree(self, precision: dict[int, int | None]) -> list[onnx.NodeProto]:
        """3. Every typed edge made to agree, converting weights and inserting Casts; returns
        the new node list."""
        nodes: list[onnx.NodeProto] = []
        for index, node in enumerate(self.graph.node):
            want = precision[index]
            for position in _typed_inputs(node) if want is not None else []:
                name = node.input[position]
                if not self.is_float32(name):
                    continue
                if name in self.initializers:
                    if want == FLOAT16:
                        node.input[position] = self._fp16_weight(name)
                elif self.dtype.get(name, FLOAT) != want:
                    node.input[position] = self._cast(name, want, nodes)
            nodes.append(node)
        return nodes

    def _fp16_weight(self, name: str) -> str:
        """The FP16 copy of initializer `name` (made once)."""
        if name not in self.fp16_weights:
            array = numpy_helper.to_array(self.initializers[name]).astype(np.float16)
            self.fp16_weights[name] = unique_name(f"{name}_fp16", self.taken)
            self.graph.initializer.append(numpy_helper.from_array(array, self.fp16_weights[name]))
        return self.fp16_weights[name]

    def _cast(self, name: str, to: int, before: list[onnx.NodeProto]) -> str:
        """`name` cast to `to`: one Cast per (tensor, type), appended to `before` once."""
        key = (name, to)
        if key not in self.casts:
            suffix = "fp16" if to == FLOAT16 else "fp32"
            self.casts[key] = unique_name(f"{name}/cast_{suffix}", self.taken)
            cast_name = unique_name(f"{name}/Cast_{suffix}", self.taken)
            before.append(
                onnx.helper.make_node("Cast", [name], [self.casts[key]], name=cast_name, to=to)
            )
            self.result.casts += 1
        return self.casts[key]

    def cast_outputs(self, nodes: list[onnx.NodeProto], io_type: int) -> None:
        """4. Graph outputs keep their type (FP32 by default): cast what an FP16 node produced."""
        dtype = self.dtype
        for graph_output in self.graph.output:
            name = graph_output.name
            if name not in dtype or dtype[name] == io_type:
                if name in dtype:
                    graph_output.type.tensor_type.elem_type = dtype[name]
                continue
            suffix = "fp16" if dtype[name] == FLOAT16 else "fp32"
            inner = unique_name(f"{name}/{suffix}", self.taken)
            for node in nodes:
                _rename(node.input, name, inner)
                _rename(node.output, name, inner)
            for (source, to), target in list(self.casts.items()):
                if source == name:
                    self.casts[(inner, to)] = target
            cast_name = unique_name(f"{name}/Cast_out", self.taken)
            nodes.append(onnx.helper.make_node("Cast", [inner], [name], name=cast_name, to=io_type))
            self.result.casts += 1
            dtype[inner], dtype[name] = dtype[name], io_type
            graph_output.type.tensor_type.elem_type = io_type


def _rename(names, old: str, new: str) -> None:
    """Every `old` in a node's input or output list becomes `new`."""
    for position, value in enumerate(names):
        if value == old:
            names[position] = new


def check_strongly_typed(model: onnx.ModelProto) -> list[str]:
    """Nodes whose typed inputs (see TYPED_INPUTS) do not share one float type: what a strongly
    typed TensorRT network refuses. Empty when the graph is consistent."""
    types = float_tensor_types(model)
    problems = []
    for node in model.graph.node:
        found = {
            types[node.input[p]]
            for p in _typed_inputs(node)
            if types.get(node.input[p]) in (FLOAT, FLOAT16)
        }
        if len(found) > 1:
            problems.append(f"{label(node)} ({node.op_type}) mixes FLOAT and FLOAT16 inputs")
    return problems
