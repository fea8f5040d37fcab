"""A model's own fp32 noise floor: how far its fp32 outputs move for reasons that are not errors.

Some models are numerically chaotic in fp32 (sharp attention: large BatchNorm scales on the
similarity terms make softmax amplify rounding), so two correct fp32 implementations differ by
far more than a fixed 1e-4. `verify` judges such a difference against two measurements of the
REFERENCE graph A on the same inputs:

- its sensitivity: max |A(x + 1 ulp) - A(x)|, every input element moved one ulp up; rounding
  inside the graph perturbs it about as much, so this is the spread of fp32 results;
- its float64 error, when A can run in float64: max |A_fp32(x) - A_fp64(x)|, A converted to
  float64 (every float tensor, initializer and Cast) and run in ONNX Runtime, or in ONNX's numpy
  reference evaluator where ONNX Runtime has no float64 kernel (it has none for Conv).

The floor of an output is the larger of the two. Polygraphy has no such measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from axial_deploy.errors import first_line

# onnx.reference is pure numpy, ~60-200x slower than ONNX Runtime's fp32 run (measured on the
# tests' fixtures): use it for the float64 run only when A's fp32 run took less than this, so
# it costs seconds; larger models keep the 1-ulp measurement only.
REFERENCE_EVALUATOR_MAX_FP32_SECONDS = 0.05
FLOAT = TensorProto.FLOAT
# Ops ONNX Runtime's CPU provider has no float64 kernel for (NOT_IMPLEMENTED on 1.32).
NO_ORT_FLOAT64 = frozenset({"Conv", "ConvTranspose", "AveragePool", "GlobalAveragePool", "Erf"})


@dataclass
class NoiseFloor:
    """Per output of A: the 1-ulp sensitivity, and A's outputs in float64 (if it ran)."""

    ulp: dict[str, float]
    float64: dict[str, np.ndarray] | None = None
    float64_by: str = ""  # "ONNX Runtime" or "onnx.reference"
    notes: list[str] = field(default_factory=list)

    def floor(self, name: str, fp32: np.ndarray) -> float:
        """The larger of the 1-ulp sensitivity and A's own distance to float64."""
        floor = self.ulp[name]
        if self.float64 is not None:
            floor = max(floor, distance(fp32, self.float64[name]))
        return floor


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float64; infinite where either side is not finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


def one_ulp_up(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float input element moved to the next representable value towards +inf."""
    return {
        name: np.nextafter(x, np.array(np.inf, x.dtype))
        if np.issubdtype(x.dtype, np.floating)
        else x
        for name, x in feed.items()
    }


def measure(
    model_path, session, names: list[str], feed: dict[str, np.ndarray], outputs: dict
) -> NoiseFloor:
    """The noise floor of the graph at `model_path` (its fp32 `session`, whose `outputs` on
    `feed` are known) at the input `feed`."""
    start = time.perf_counter()
    moved = dict(zip(names, session.run(names, one_ulp_up(feed)), strict=True))
    seconds = time.perf_counter() - start
    result = NoiseFloor({name: distance(outputs[name], moved[name]) for name in names})
    model = onnx.load(str(model_path))
    if any(node.domain not in ("", "ai.onnx") for node in model.graph.node):
        result.notes.append("float64 reference: not run (the graph holds custom-domain nodes)")
        return result
    slow = seconds > REFERENCE_EVALUATOR_MAX_FP32_SECONDS
    if slow and any(node.op_type in NO_ORT_FLOAT64 for node in model.graph.node):
        # ONNX Runtime would refuse the float64 graph and the numpy evaluator is too slow for
        # it: skip the float64 copy of the whole model altogether
        result.notes.append(
            "float64 reference: not run (ONNX Runtime has no float64 kernel for some of its ops "
            "and the model is too large for ONNX's numpy reference evaluator)"
        )
        return result
    wide = to_float64(model)
    feed64 = {k: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v
              for k, v in feed.items()}  # fmt: skip
    try:
        result.float64, result.float64_by = _run_onnxruntime(wide, names, feed64), "ONNX Runtime"
    except Exception as error:  # ORT's NOT_IMPLEMENTED (no float64 kernel) and friends
        if slow:
            result.notes.append(
                f"float64 reference: not run (ONNX Runtime: {first_line(error)[:120]}; the "
                "model is too large for ONNX's numpy reference evaluator)"
            )
            return result
        try:
            result.float64 = _run_reference(wide, names, feed64)
        except Exception as reference_error:  # an op or type the numpy reference lacks
            result.notes.append(f"float64 reference: not run ({first_line(reference_error)[:120]})")
            return result
        result.float64_by = "onnx.reference"
    return result


def _run_onnxruntime(model: onnx.ModelProto, names, feed) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a missing float64 kernel raises; do not also log it
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, feed), strict=True))


def _run_reference(model: onnx.ModelProto, names, feed) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    with np.errstate(all="ignore"):
        return dict(zip(names, ReferenceEvaluator(model).run(names, feed), strict=True))


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing in float64: float32 inputs, outputs, value infos,
    initializers, Constant values and Cast targets become double."""
    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    graph = wide.graph
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT:
            info.type.tensor_type.elem_type = TensorProto.DOUBLE
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            graph.initializer[index].CopyFrom(_double(tensor))
    for node in graph.node:
        for attribute in node.attribute:
            is_tensor = attribute.type == onnx.AttributeProto.TENSOR
            if is_tensor and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(_double(attribute.t))
            elif node.op_type == "Cast" and attribute.name == "to" and attribute.i == FLOAT:
                attribute.i = TensorProto.DOUBLE
    return wide


def _double(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)
