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
    result_model = onnx.ModelProto()
    result_model.CopyFrom(model)
    graph = result_model.graph
    constants_to_initializers(result_model)
    types = float_tensor_types(result_model)
    ranges = ranges or {}
    initializers = {init.name: init for init in graph.initializer}
    keep_nodes = set(keep_nodes)
    taken = used_names(graph)

    def is_float32(name: str) -> bool:
        return types.get(name) == FLOAT

    def too_large(name: str) -> bool:
        if name in initializers and is_float32(name):
            return float(np.abs(numpy_helper.to_array(initializers[name])).max(initial=0)) > limit
        measured = ranges.get(name)
        return measured is not None and measured.absmax > limit

    # 1. Decide each node's precision.
    precision: dict[int, int | None] = {}  # node index -> FLOAT16 / FLOAT / None (not float)
    result = Fp16Result(result_model)
    for index, node in enumerate(graph.node):
        typed = [node.input[p] for p in _typed_inputs(node) if is_float32(node.input[p])]
        outputs = [name for name in node.output if is_float32(name)]
        if node.op_type == "Cast":
            to = attribute(node, "to")
            outputs = node.output if to == FLOAT else []
        if not typed and not outputs:
            precision[index] = None
            continue
        reason = None
        if node.op_type in KEEP_FP32_OPS:
            reason = f"{node.op_type} is precision-sensitive"
        elif label(node) in keep_nodes:
            reason = "asked"
        elif not typed and node.op_type != "Cast":
            reason = "creates float values from attributes (kept as written)"
        elif node.op_type not in TYPELESS_OPS or node.op_type == "Cast":
            large = [name for name in [*typed, *outputs] if too_large(name)]
            if large:
                reason = f"{large[0]} exceeds the FP16 range (|x| > {limit:g})"
        if reason:
            result.kept_fp32[label(node)] = reason
            precision[index] = FLOAT
        else:
            precision[index] = FLOAT16
            result.fp16_nodes += 1

    # 2. The type each float tensor has in the new graph.
    dtype: dict[str, int] = {}
    io_type = FLOAT if keep_io_fp32 else FLOAT16
    for graph_input in graph.input:
        if is_float32(graph_input.name) and graph_input.name not in initializers:
            dtype[graph_input.name] = io_type
            graph_input.type.tensor_type.elem_type = io_type
    for index, node in enumerate(graph.node):
        if precision[index] is None:
            continue
        if node.op_type == "Cast":
            for entry in node.attribute:
                if entry.name == "to" and entry.i == FLOAT:
                    entry.i = precision[index]
        for name in node.output:
            if is_float32(name):
                dtype[name] = precision[index]

    # 3. Make every typed edge agree, converting weights and inserting Casts.
    fp16_weights: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int, before: list[onnx.NodeProto]) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == FLOAT16 else "fp32"
            casts[key] = unique_name(f"{name}/cast_{suffix}", taken)
            before.append(
                onnx.helper.make_node(
                    "Cast",
                    [name],
                    [casts[key]],
                    name=unique_name(f"{name}/Cast_{suffix}", taken),
                    to=to,
                )
            )
            result.casts += 1
        return casts[key]

    for index, node in enumerate(graph.node):
        want = precision[index]
        if want is not None:
            for position in _typed_inputs(node):
                name = node.input[position]
                if not is_float32(name):
                    continue
                if name in initializers:
                    if want == FLOAT16:
                        if name not in fp16_weights:
                            array = numpy_helper.to_array(initializers[name]).astype(np.float16)
                            fp16_weights[name] = unique_name(f"{name}_fp16", taken)
                            graph.initializer.append(
                                numpy_helper.from_array(array, fp16_weights[name])
                            )
                        node.input[position] = fp16_weights[name]
                elif dtype.get(name, FLOAT) != want:
                    node.input[position] = cast(name, want, nodes)
        nodes.append(node)

    # 4. Graph outputs keep their type (FP32 by default): cast what an FP16 node produced.
    for graph_output in graph.output:
        name = graph_output.name
        if name not in dtype or dtype[name] == io_type:
            if name in dtype:
                graph_output.type.tensor_type.elem_type = dtype[name]
            continue
        inner = unique_name(f"{name}/{'fp16' if dtype[name] == FLOAT16 else 'fp32'}", taken)
        for node in nodes:
            for position, value in enumerate(node.input):
                if value == name:
                    node.input[position] = inner
            for position, value in enumerate(node.output):
                if value == name:
                    node.output[position] = inner
        for (source, to), target in list(casts.items()):
            if source == name:
                casts[(inner, to)] = target
        nodes.append(
            onnx.helper.make_node(
                "Cast", [inner], [name], name=unique_name(f"{name}/Cast_out", taken), to=io_type
            )
        )
        result.casts += 1
        dtype[inner], dtype[name] = dtype[name], io_type
        graph_output.type.tensor_type.elem_type = io_type

    replace_nodes(graph, nodes)
    for info in graph.value_info:
        if info.name in dtype:
            info.type.tensor_type.elem_type = dtype[info.name]
    return result


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
