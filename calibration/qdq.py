"""Explicit INT8 / FP8: QuantizeLinear / DequantizeLinear pairs placed where TensorRT fuses them.

TensorRT builds Q/DQ graphs as strongly typed networks and fuses a DQ feeding a Conv / Gemm /
MatMul, and a Q after it, into an INT8 (or FP8) kernel. Following its placement
recommendations, the same for both formats (`format="int8"` or `"fp8"`, see `QDQ_FORMATS`):

- every activation input of Conv, Gemm and MatMul gets a Q/DQ pair (per-tensor scale
  amax / 127, zero point INT8 0: symmetric INT8; FP8: amax / 448, zero point FLOAT8E4M3FN 0);
  a tensor read by several such ops gets one shared pair;
- weights are per output channel (Conv: axis 0; Gemm: axis 0 with transB, else 1; MatMul: 1)
  and stored pre-quantized: an INT8 (FP8) initializer feeding a DequantizeLinear. TensorRT accepts
  this and FP32 weights + Q/DQ alike (it quantizes FP32 weights with the Q scale at build
  time); INT8 initializers make the file 4x smaller and fix the rounding in the artifact;
- no bias is quantized (TensorRT folds it in high precision), and no Conv output either;
- residual Add: TensorRT fuses `Conv -> Add` into the Conv's epilogue when the Add's other input
  is INT8. Rule: for an Add of two activations, if one is the sole-consumer output of a Conv,
  the other input gets a Q/DQ pair (when both are, the second one does); an Add with no Conv
  input is left in float.
- `skip_nodes` (node names, e.g. the layers an accuracy budget keeps at high precision): no
  Q/DQ on their inputs, weights stay float, and a skipped Conv feeding a residual Add is no
  INT8 Conv whose epilogue could take the Add, so that Add gets no Q/DQ for it either.
- AxialAttention (a plugin with FP32/FP16 I/O, no INT8) stays in float: with
  `attention_precision="fp16"` its qkv is cast to FP16 and its output back to FP32, so the
  plugin runs with FP16 I/O; "fp32" leaves it as is.

Everything else runs in FP32, as the FP32 graph said: a strongly typed network needs no flag.
The result still runs in ONNX Runtime (QuantizeLinear/DequantizeLinear are standard ops; ONNX
Runtime runs their FLOAT8E4M3FN form on the CPU).

FP8 (E4M3FN: 4 exponent bits, 3 mantissa bits, largest finite value 448, no infinities) is
TensorRT's FP8 type: "quantized values are represented in signed INT8, FP8E4M3 ... quantization
uses the reciprocal scale, followed by clamping and rounding (for integers) or casting (for
FP8)" (https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html).
An FP8 QuantizeLinear needs ONNX opset 19 (the first with float8 types): `upgrade_opset` lifts
the opset-17 exports to it. The placement rules are the ones NVIDIA ModelOpt's ONNX FP8 mode
uses (Conv, Gemm, MatMul and residual Add;
https://nvidia.github.io/TensorRT-Model-Optimizer/reference/generated/modelopt.onnx.quantization.fp8.html).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, version_converter

from axial_deploy.errors import AxialDeployError
from axial_deploy.graph import (
    attribute,
    consumers,
    label,
    producers,
    replace_nodes,
    unique_name,
    used_names,
)
from axial_deploy.op.spec import OP_TYPE

from .fp16 import constants_to_initializers
from .ranges import TensorRange, weight_scales

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
MIN_OPSET = 13  # per-channel DequantizeLinear (axis attribute)
ATTENTION_PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class QdqFormat:
    """What one quantized type needs: its ONNX type, the largest value it represents (a scale
    is amax / max_value), and the lowest opset whose QuantizeLinear has it."""

    name: str
    onnx_type: int
    max_value: float
    min_opset: int

    def encode(self, scaled: np.ndarray) -> np.ndarray:
        """Values already divided by their scale -> the stored type (INT8: rounded and clipped
        to +-127, symmetric; FP8: clipped to +-448, then rounded to nearest E4M3)."""
        clipped = np.clip(scaled, -self.max_value, self.max_value)
        if self.onnx_type == TensorProto.INT8:
            return np.round(clipped).astype(np.int8)
        return clipped.astype(ml_dtypes.float8_e4m3fn)

    def zeros(self, count: int | None = None) -> np.ndarray:
        """The zero point (symmetric: 0), a scalar or one per channel."""
        return self.encode(np.zeros(() if count is None else count, np.float32))


QDQ_FORMATS = {
    "int8": QdqFormat("int8", TensorProto.INT8, 127.0, MIN_OPSET),
    # opset 19: the first whose QuantizeLinear / DequantizeLinear take float8 types
    "fp8": QdqFormat("fp8", TensorProto.FLOAT8E4M3FN, 448.0, 19),
}


class QuantizationError(AxialDeployError, ValueError):
    """A graph or a set of ranges that cannot be quantized as asked."""


@dataclass
class QdqResult:
    model: onnx.ModelProto
    quantized_nodes: list[str] = field(default_factory=list)  # Conv/Gemm/MatMul, quantized inputs
    activation_scales: dict[str, float] = field(default_factory=dict)  # tensor -> scale
    weights: int = 0
    residual_adds: int = 0
    attention_casts: int = 0


def _weight_axis(node: onnx.NodeProto, position: int, rank: int) -> int | None:
    """The output-channel axis of a weight input, or None when the input is not a weight."""
    if node.op_type == "Conv" and position == 1:
        return 0
    if node.op_type == "Gemm" and position == 1 and rank == 2:
        return 0 if attribute(node, "transB", 0) else 1
    if node.op_type == "MatMul" and position == 1 and rank == 2:
        return 1
    return None


def _opset(model: onnx.ModelProto) -> int:
    return next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model: onnx.ModelProto, format: str) -> onnx.ModelProto:
    """`model` with its default-domain opset lifted to what `format`'s Q/DQ needs (ONNX's
    version converter; custom domains such as AxialAttention's are left as they are), or
    `model` itself when it already imports that opset or newer."""
    needed = QDQ_FORMATS[format].min_opset
    if _opset(model) >= needed:
        return model
    try:
        upgraded = version_converter.convert_version(model, needed)
        onnx.checker.check_model(upgraded)
    except Exception as error:  # the converter raises assorted errors on ops it cannot adapt
        raise QuantizationError(
            f"{format.upper()} Q/DQ needs opset >= {needed} and ONNX's version converter could "
            f"not lift this opset-{_opset(model)} graph ({error}): re-export it with "
            f"--opset {needed}"
        ) from error
    return upgraded


def quantize_int8(
    model: onnx.ModelProto,
    ranges: Mapping[str, TensorRange],
    *,
    attention_precision: str = "fp16",
    skip_nodes: Iterable[str] = (),
    format: str = "int8",
) -> QdqResult:
    """An explicit-INT8 (or, with `format="fp8"`, FP8 E4M3) copy of the FP32 `model` with Q/DQ
    placed by the rules of the module doc; `ranges` are the calibrated activation ranges (amax
    set); `skip_nodes` (node names, as `graph.label` gives them) stay in float. A name that is
    no node of the graph is an error. FP8 needs an opset-19 model (`upgrade_opset`)."""
    if format not in QDQ_FORMATS:
        raise QuantizationError(f"format must be one of {tuple(QDQ_FORMATS)}, got {format!r}")
    qdq = QDQ_FORMATS[format]
    if attention_precision not in ATTENTION_PRECISIONS:
        raise QuantizationError(
            f"attention precision must be one of {ATTENTION_PRECISIONS}, "
            f"got {attention_precision!r}"
        )
    if _opset(model) < qdq.min_opset:
        raise QuantizationError(
            f"explicit {format.upper()} needs default-domain opset >= {qdq.min_opset} "
            f"({'per-channel DequantizeLinear' if format == 'int8' else 'float8 Q/DQ'}); this "
            f"model imports {_opset(model)}: re-export it"
        )
    skip = set(skip_nodes)
    unknown = skip - {label(node) for node in model.graph.node}
    if unknown:
        raise QuantizationError(
            f"nodes to keep unquantized are not in the graph: {sorted(unknown)[:5]} (use the "
            "node names of this graph, as `compare --layerwise` prints them)"
        )
    placement = _Placement(model, ranges, skip, qdq)
    activation_uses, weight_uses = placement.weighted_op_uses()
    activation_uses += placement.residual_add_uses()
    placement.insert_activation_pairs(activation_uses)
    placement.insert_weight_dequantizers(weight_uses)
    if attention_precision == "fp16":
        placement.cast_attention_to_fp16()
    placement.finish()
    return placement.result


class _Placement:
    """The placement's steps over one copy of the model: which inputs read INT8, then the
    nodes inserted before (and after) each original node, spliced in by `finish`."""

    def __init__(
        self,
        model: onnx.ModelProto,
        ranges: Mapping[str, TensorRange],
        skip: set[str],
        qdq: QdqFormat = QDQ_FORMATS["int8"],
    ) -> None:
        quantized = onnx.ModelProto()
        quantized.CopyFrom(model)
        constants_to_initializers(quantized)
        self.graph = graph = quantized.graph
        self.ranges, self.skip, self.qdq = ranges, skip, qdq
        self.initializers = {init.name: init for init in graph.initializer}
        self.result = QdqResult(quantized)
        self.taken = used_names(graph)
        # Held, so that each node keeps one Python wrapper and its id() stays valid.
        self.nodes = list(graph.node)
        self.node_index = {id(node): index for index, node in enumerate(self.nodes)}
        self.inserted_before: dict[int, list[onnx.NodeProto]] = defaultdict(list)
        self.appended_after: dict[int, list[onnx.NodeProto]] = defaultdict(list)

    def unique(self, base: str) -> str:
        return unique_name(base, self.taken)

    def weighted_op_uses(self) -> tuple[list[tuple[onnx.NodeProto, int]], list[tuple]]:
        """1. The (node, input position) pairs of Conv / Gemm / MatMul that read INT8:
        activations, and weights (with their per-channel axis)."""
        activation_uses: list[tuple[onnx.NodeProto, int]] = []
        weight_uses: list[tuple[onnx.NodeProto, int, int]] = []
        for node in self.nodes:
            if node.op_type not in WEIGHTED_OPS or label(node) in self.skip:
                continue
            activations, weights = [], []
            for position in (0, 1):
                name = node.input[position]
                if name in self.initializers:
                    axis = _weight_axis(node, position, len(self.initializers[name].dims))
                    if axis is None:  # a constant we cannot quantize per channel: stays float
                        break
                    weights.append((node, position, axis))
                else:
                    activations.append((node, position))
            else:
                activation_uses.extend(activations)
                weight_uses.extend(weights)
                self.result.quantized_nodes.append(label(node))
        return activation_uses, weight_uses

    def residual_add_uses(self) -> list[tuple[onnx.NodeProto, int]]:
        """The Add inputs read as INT8 so that TensorRT fuses the other (a Conv's) into the
        Conv's epilogue (see the module doc)."""
        producer, readers = producers(self.graph), consumers(self.graph)
        graph_outputs = {o.name for o in self.graph.output}

        def fusable_conv_output(name: str) -> bool:
            node = producer.get(name)
            return (
                node is not None
                and node.op_type == "Conv"
                and label(node) not in self.skip  # a float Conv fuses no INT8 Add
                and len(readers.get(name, [])) == 1
                and name not in graph_outputs
            )

        uses = []
        for node in self.nodes:
            if node.op_type != "Add" or label(node) in self.skip or len(node.input) != 2:
                continue
            if any(name in self.initializers or not name for name in node.input):
                continue
            conv_inputs = [fusable_conv_output(name) for name in node.input]
            if not any(conv_inputs):
                continue
            other = 1 if conv_inputs[0] else 0  # both Conv outputs: the second is read as INT8
            uses.append((node, other))
            self.result.residual_adds += 1
        return uses

    def insert_activation_pairs(self, uses: list[tuple[onnx.NodeProto, int]]) -> None:
        """2. One Q/DQ pair per activation tensor, before its first INT8 use, shared by all."""
        dequantized: dict[str, str] = {}
        for node, position in uses:
            name = node.input[position]
            if name not in dequantized:
                if name not in self.ranges:
                    raise QuantizationError(
                        f"no calibrated range for tensor {name} (input of {label(node)}): were "
                        "the ranges collected on this graph?"
                    )
                first_use = min(self.node_index[id(user)] for user, _ in _uses_of(name, uses))
                dequantized[name] = self._activation_pair(name, first_use)
            node.input[position] = dequantized[name]

    def _activation_pair(self, name: str, before: int) -> str:
        """QuantizeLinear -> DequantizeLinear of `name` (per-tensor scale amax / the format's
        largest value, zero point 0) inserted before node `before`; returns the dequantized
        tensor."""
        unique = self.unique
        # for INT8 exactly TensorRange.scale (the calibration cache's scale)
        scale = max(float(self.ranges[name].amax), 1e-8) / self.qdq.max_value
        self.result.activation_scales[name] = scale
        scale_name, zero_name = unique(f"{name}/scale"), unique(f"{name}/zero_point")
        self.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                numpy_helper.from_array(self.qdq.zeros(), zero_name),
            ]
        )
        q_out, dq_out = unique(f"{name}/quantized"), unique(f"{name}/dequantized")
        quantize = onnx.helper.make_node(
            "QuantizeLinear",
            [name, scale_name, zero_name],
            [q_out],
            name=unique(f"{name}/QuantizeLinear"),
        )
        dequantize = onnx.helper.make_node(
            "DequantizeLinear",
            [q_out, scale_name, zero_name],
            [dq_out],
            name=unique(f"{name}/DequantizeLinear"),
        )
        self.inserted_before[before].extend([quantize, dequantize])
        return dq_out

    def insert_weight_dequantizers(self, uses: list[tuple[onnx.NodeProto, int, int]]) -> None:
        """3. Weights: INT8 (FP8) initializer -> per-channel DequantizeLinear (one per weight)."""
        weight_outputs: dict[str, str] = {}
        for node, position, axis in uses:
            name = node.input[position]
            if name not in weight_outputs:
                weight_outputs[name] = self._weight_dequantizer(name, axis, node)
                self.result.weights += 1
            node.input[position] = weight_outputs[name]

    def _weight_dequantizer(self, name: str, axis: int, user: onnx.NodeProto) -> str:
        unique = self.unique
        weight = numpy_helper.to_array(self.initializers[name]).astype(np.float32)
        scales = weight_scales(weight, axis, self.qdq.max_value)
        shape = [1] * weight.ndim
        shape[axis] = -1
        values = self.qdq.encode(weight / scales.reshape(shape))
        int8_name, scale_name = unique(f"{name}_{self.qdq.name}"), unique(f"{name}/scale")
        zero_name, dq_out = unique(f"{name}/zero_point"), unique(f"{name}/dequantized")
        self.graph.initializer.extend(
            [
                numpy_helper.from_array(values, int8_name),
                numpy_helper.from_array(scales, scale_name),
                numpy_helper.from_array(self.qdq.zeros(len(scales)), zero_name),
            ]
        )
        self.inserted_before[self.node_index[id(user)]].append(
            onnx.helper.make_node(
                "DequantizeLinear",
                [int8_name, scale_name, zero_name],
                [dq_out],
                name=unique(f"{name}/DequantizeLinear"),
                axis=axis,
            )
        )
        return dq_out

    def cast_attention_to_fp16(self) -> None:
        """4. AxialAttention keeps float I/O: its qkv cast to FP16, its output back to FP32."""
        unique = self.unique
        for index, node in enumerate(self.nodes):
            if node.op_type != OP_TYPE:
                continue
            qkv, y = node.input[0], node.output[0]
            qkv16, y16 = unique(f"{qkv}/fp16"), unique(f"{y}/fp16")
            self.inserted_before[index].append(
                onnx.helper.make_node(
                    "Cast", [qkv], [qkv16], name=unique(f"{qkv}/Cast_fp16"), to=TensorProto.FLOAT16
                )
            )
            node.input[0], node.output[0] = qkv16, y16
            self.appended_after[index].append(
                onnx.helper.make_node(
                    "Cast", [y16], [y], name=unique(f"{y}/Cast_fp32"), to=TensorProto.FLOAT
                )
            )
            self.result.attention_casts += 2
            self._type_fp16(((qkv, qkv16), (y, y16)))

    def _type_fp16(self, renamed_pairs) -> None:
        """Type the node's new FP16 tensors (ONNX cannot infer a custom op's output)."""
        known = {info.name: info for info in self.graph.value_info}
        for original, renamed in renamed_pairs:
            info = onnx.ValueInfoProto()
            if original in known:
                info.CopyFrom(known[original])
            else:
                info.type.tensor_type.SetInParent()
            info.name = renamed
            info.type.tensor_type.elem_type = TensorProto.FLOAT16
            self.graph.value_info.append(info)

    def finish(self) -> None:
        """Splice the inserted nodes around the originals; drop the replaced FP32 weights."""
        nodes = []
        for index, node in enumerate(self.nodes):
            nodes.extend(self.inserted_before[index])
            nodes.append(node)
            nodes.extend(self.appended_after[index])
        replace_nodes(self.graph, nodes)


def _uses_of(name: str, uses: list[tuple[onnx.NodeProto, int]]):
    return [(node, position) for node, position in uses if node.input[position] == name]
