"""The precision stage: FP32 graph -> strongly typed FP16 graph or explicit INT8 / FP8 (Q/DQ)
graph.

    quantize_file(IN.onnx, OUT.onnx, precision="fp16" | "int8" | "fp8", calib=SRC, method=...)

1. reads calibration batches (`calibration.sources`: images with the model's preprocessing,
   .npy/.npz tensors, or synthetic inputs for smoke runs);
2. measures every activation's range on the FP32 graph in ONNX Runtime (`calibration.ranges`;
   AxialAttention nodes run through the reference op);
3. writes the FP16 graph (`calibration.fp16`) or the Q/DQ graph (`calibration.qdq`, INT8 or
   FP8 E4M3; FP8 first lifts the graph to opset 19, the first with float8 Q/DQ), atomically;
4. for INT8 also writes TensorRT's calibration cache (`calibration.cache`) from the same ranges,
   for the legacy implicit-INT8 build of the FP32 graph on TensorRT 10 (JetPack 6).

Activation thresholds per precision (`FORMAT_METHODS`): INT8 defaults to entropy (its 127
uniform steps make clipping rare outliers pay); FP8 to minmax (max |x|), with percentile as the
alternative. E4M3's steps grow with the value (3 mantissa bits: about 6% relative step from
2^-6 to 448), so a smaller threshold buys little resolution for the bulk of the values while
clipping costs the outliers all of theirs; the entropy method's KL divergence is measured
against 128 uniform levels, INT8's grid, not FP8's, so it is refused for FP8.

`accuracy_report` then compares FP32 with its FP16 / INT8 / FP8 versions on held-out inputs.
NVIDIA ModelOpt, when installed, is an alternative INT8 quantizer (`quantizer="modelopt"`).
"""

from __future__ import annotations

import collections
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from axial_deploy.artifacts import atomic_output, load_onnx
from axial_deploy.calibration.cache import METHOD_ALGORITHM, scales_from_amax, write_cache
from axial_deploy.calibration.fp16 import check_strongly_typed, convert_to_fp16
from axial_deploy.calibration.qdq import (
    ATTENTION_PRECISIONS,
    QuantizationError,
    quantize_int8,
    upgrade_opset,
)
from axial_deploy.calibration.ranges import METHODS, collect_ranges
from axial_deploy.calibration.sources import open_source
from axial_deploy.errors import AxialDeployError
from axial_deploy.numerics import OutputError, match_outputs
from axial_deploy.task import task_of

PRECISIONS = ("fp16", "int8", "fp8")
QDQ_PRECISIONS = ("int8", "fp8")  # written as Q/DQ graphs (calibration.qdq formats)
# Calibration methods per Q/DQ precision, the default first (why: see the module doc).
FORMAT_METHODS = {"int8": ("entropy", "percentile", "minmax"), "fp8": ("minmax", "percentile")}
QUANTIZERS = ("native", "modelopt")
MODELOPT_MISSING = (
    "--quantizer modelopt needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]' "
    "(or use the default --quantizer native, which needs nothing extra)"
)


class QuantizeError(AxialDeployError, ValueError):
    """A model or option the precision stage cannot work with."""


@dataclass
class QuantizeReport:
    source: str
    output: str
    precision: str
    quantizer: str
    method: str
    calibration: str
    batches: int
    batch_size: int
    seconds: float = 0.0
    ops: dict[str, int] = field(default_factory=dict)
    fp16_nodes: int = 0
    kept_fp32: dict[str, str] = field(default_factory=dict)
    casts: int = 0
    opset: int = 0  # default-domain opset of the written graph (FP8 lifts it to 19)
    # int8_*: the Q/DQ counts, for FP8 graphs too (the names predate FP8)
    int8_nodes: int = 0
    int8_weights: int = 0
    int8_activations: int = 0
    residual_adds: int = 0
    attention_precision: str | None = None
    cache: str | None = None
    cache_tensors: int = 0
    kept_nodes: list[str] = field(default_factory=list)  # int8: left unquantized, by request

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"{self.source} -> {self.output}: {self.precision} ({self.quantizer} quantizer) in "
            f"{self.seconds:.1f} s",
            f"  calibration: {self.calibration}, {self.batches} batch(es) of {self.batch_size}, "
            f"method {self.method}",
        ]
        if self.precision == "fp16":
            lines.append(
                f"  {self.fp16_nodes} nodes in FP16, {len(self.kept_fp32)} kept in FP32, "
                f"{self.casts} Casts"
            )
            lines += [f"    kept FP32: {node}: {why}" for node, why in self.kept_fp32.items()]
        else:
            kind = self.precision.upper()
            lines.append(
                f"  {self.int8_nodes} Conv/Gemm/MatMul with {kind} inputs, {self.int8_weights} "
                f"per-channel weights, {self.int8_activations} quantized activations "
                f"({self.residual_adds} residual Add inputs); AxialAttention in "
                f"{self.attention_precision or 'the quantizer default'}"
            )
            if self.kept_nodes:
                lines.append(f"  {len(self.kept_nodes)} node(s) kept unquantized (FP32)")
        ops = ", ".join(f"{op} {n}" for op, n in sorted(self.ops.items()))
        lines.append(f"  ops: {ops}")
        if self.cache:
            lines.append(
                f"  TensorRT calibration cache: {self.cache} ({self.cache_tensors} tensors)"
            )
        return "\n".join(lines)


def _load(path: str | os.PathLike, label: str = "model") -> onnx.ModelProto:
    return load_onnx(path, QuantizeError, label)


def _single_input(model: onnx.ModelProto, path) -> onnx.ValueInfoProto:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise QuantizeError(f"{path}: expected one image input, the graph has {names}")
    return inputs[0]


def input_shape(info: onnx.ValueInfoProto) -> tuple:
    """NCHW shape of a graph input; symbolic dims become their names (strings)."""
    dims = info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def _check_fp32(model: onnx.ModelProto, path) -> None:
    ops = {node.op_type for node in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv"}:
        raise QuantizeError(
            f"{path} is already quantized (it holds Q/DQ nodes): pass the FP32 graph"
        )
    elem = _single_input(model, path).type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise QuantizeError(
            f"{path}: input type is {onnx.TensorProto.DataType.Name(elem)}, expected FLOAT: "
            "pass the FP32 graph (from axial-deploy export / rewrite)"
        )
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT16:
            raise QuantizeError(
                f"{path} holds FP16 weights ({tensor.name}): it is already an FP16 graph; pass "
                "the FP32 graph (from axial-deploy export / rewrite)"
            )
        floats = tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
        if floats and not np.isfinite(onnx.numpy_helper.to_array(tensor)).all():
            raise QuantizeError(
                f"{path}: weight {tensor.name} holds NaN or infinite values; the model is "
                "broken (check the checkpoint it was exported from)"
            )


def _calibration_batches(model, path, calib, batches, batch_size, seed):
    if batches < 1:
        raise QuantizeError(f"the number of batches must be >= 1, got {batches}")
    info = _single_input(model, path)
    shape = input_shape(info)
    if len(shape) == 4 and isinstance(shape[0], int) and shape[0] != batch_size:
        raise QuantizeError(
            f"{path} has a static batch of {shape[0]}: use --batch-size {shape[0]} "
            "(or export with --dynamic batch)"
        )
    source = open_source(
        calib,
        shape,
        task=task_of(model),
        seed=seed,
        batch_size=batch_size,
        samples=batches * batch_size,
    )
    return source, source.take(batches), info.name


@dataclass
class Calibration:
    """An FP32 graph and the activation ranges measured on it: what every quantized version
    (`quantized_graph`, with any set of nodes kept in float) is made from."""

    model: onnx.ModelProto
    ranges: dict
    report: QuantizeReport  # filled up to the calibration; the graph's counts come later


def calibrate(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    precision: str,
    calib: str | None = None,
    method: str | None = None,
    batches: int = 8,
    batch_size: int = 1,
    seed: int = 0,
    quantizer: str = "native",
    progress: bool = False,
) -> Calibration:
    """Checks the FP32 graph at `model_path` and measures its activation ranges (step 1-2 of
    the module doc) with the native quantizer; FP8 first lifts the graph to opset 19, so the
    ranges name the lifted graph's tensors. `method` defaults per precision."""
    method = _check_choices(precision, method, quantizer, "fp16")
    model = _load(model_path)
    _check_fp32(model, model_path)
    if precision == "fp8":
        try:  # float8 Q/DQ needs opset 19
            model = upgrade_opset(model, "fp8")
        except QuantizationError as error:
            raise QuantizeError(f"{model_path}: {error}") from error
    source, batch_list, _ = _calibration_batches(
        model, model_path, calib, batches, batch_size, seed
    )
    report = QuantizeReport(
        source=str(model_path),
        output=str(output_path),
        precision=precision,
        quantizer=quantizer,
        method=method,
        calibration=source.description,
        batches=len(batch_list),
        batch_size=batch_size,
    )
    # FP16 only needs to know what would overflow: plain min/max.
    ranges = collect_ranges(model, batch_list, method=report.method, progress=progress)
    return Calibration(model, ranges, report)


def quantized_graph(
    calibration: Calibration,
    *,
    keep_nodes: Iterable[str] = (),
    keep_io_fp32: bool = True,
    attention_precision: str = "fp16",
) -> onnx.ModelProto:
    """The FP16 or Q/DQ graph of a calibrated FP32 graph (step 3); `keep_nodes` (INT8 / FP8:
    node names) get no Q/DQ and compute in FP32. Fills the calibration's report with the counts."""
    report = calibration.report
    keep = sorted(set(keep_nodes))
    if report.precision == "fp16":
        if keep:
            raise QuantizeError("keep_nodes applies to Q/DQ precisions (int8, fp8), not fp16")
        return _to_fp16(calibration.model, calibration.ranges, keep_io_fp32, report)
    try:
        result = _to_qdq(calibration.model, calibration.ranges, attention_precision, report, keep)
    except QuantizationError as error:
        raise QuantizeError(str(error)) from error
    report.kept_nodes = keep
    return result


def write_graph(result: onnx.ModelProto, output_path: str | os.PathLike, precision: str) -> None:
    """Checks `result` and writes it atomically."""
    try:
        onnx.checker.check_model(result)
    except onnx.checker.ValidationError as error:
        raise QuantizeError(f"the {precision} graph is not valid ONNX: {error}") from error
    with atomic_output(output_path) as tmp:
        onnx.save(result, str(tmp))


def quantize_file(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    precision: str,
    calib: str | None = None,
    method: str | None = None,
    batches: int = 8,
    batch_size: int = 1,
    seed: int = 0,
    cache_path: str | os.PathLike | None = None,
    keep_io_fp32: bool = True,
    attention_precision: str = "fp16",
    quantizer: str = "native",
    keep_nodes: Iterable[str] = (),
    progress: bool = False,
) -> QuantizeReport:
    """Write the FP16, INT8 or FP8 version of the FP32 graph at `model_path` to `output_path`
    (atomically) and, for INT8 or when `cache_path` is given, TensorRT's calibration cache
    (default: OUT with suffix .calib). `method` defaults per precision (see the module doc).
    `keep_nodes` (INT8 / FP8): node names left unquantized (no Q/DQ around them), e.g. what
    `axial_deploy.budget` chose. See the module doc."""
    start = time.perf_counter()
    method = _check_choices(precision, method, quantizer, attention_precision)
    if precision == "fp8" and cache_path is not None:
        raise QuantizeError(
            "--cache writes TensorRT's INT8 calibration cache; an FP8 graph carries its scales "
            "in its Q/DQ nodes: drop --cache"
        )
    if quantizer == "modelopt":
        if list(keep_nodes):
            raise QuantizeError("keep_nodes needs the native quantizer (--quantizer native)")
        model = _load(model_path)
        _check_fp32(model, model_path)
        source, batch_list, input_name = _calibration_batches(
            model, model_path, calib, batches, batch_size, seed
        )
        report = QuantizeReport(
            str(model_path), str(output_path), precision, quantizer, method,
            source.description, len(batch_list), batch_size,
        )  # fmt: skip
        result = _quantize_modelopt(
            model_path, precision, method, batch_list, input_name, attention_precision
        )
        ranges = None
    else:
        calibration = calibrate(
            model_path, output_path, precision=precision, calib=calib, method=method,
            batches=batches, batch_size=batch_size, seed=seed, progress=progress,
        )  # fmt: skip
        report, ranges = calibration.report, calibration.ranges
        result = quantized_graph(
            calibration,
            keep_nodes=keep_nodes,
            keep_io_fp32=keep_io_fp32,
            attention_precision=attention_precision,
        )
    write_graph(result, output_path, precision)
    report.ops = dict(collections.Counter(node.op_type for node in result.graph.node))
    report.opset = next((e.version for e in result.opset_import if e.domain in ("", "ai.onnx")), 0)

    if ranges is not None and (precision == "int8" or cache_path is not None):
        cache_path = Path(cache_path) if cache_path else Path(output_path).with_suffix(".calib")
        write_calibration_cache(ranges, cache_path, report)
    report.seconds = time.perf_counter() - start
    return report


def write_calibration_cache(ranges: dict, cache_path: str | os.PathLike, report) -> None:
    """TensorRT's calibration cache (step 4) from the ranges, noted in `report`."""
    scales = scales_from_amax({name: r.amax for name, r in ranges.items()})
    write_cache(cache_path, scales, algorithm=METHOD_ALGORITHM[report.method])
    report.cache, report.cache_tensors = str(cache_path), len(scales)


def _check_choices(
    precision: str, method: str | None, quantizer: str, attention_precision: str
) -> str:
    """Refuses unknown choices; returns the calibration method (default per precision; FP16
    finds overflows with plain min/max whatever is asked)."""
    if precision not in PRECISIONS:
        raise QuantizeError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if method is not None and method not in METHODS:
        raise QuantizeError(f"method must be one of {METHODS}, got {method!r}")
    if precision == "fp16":
        method = "minmax"  # FP16 only needs to know what would overflow
    methods = FORMAT_METHODS.get(precision, METHODS)
    if method is None:
        method = methods[0]
    if method not in methods:
        raise QuantizeError(
            f"--method {method} does not fit {precision}: its KL divergence is measured against "
            f"INT8's 128 uniform levels, not FP8's floating-point grid; use --method "
            f"{' or '.join(methods)} (default {methods[0]})"
        )
    if quantizer not in QUANTIZERS:
        raise QuantizeError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    if attention_precision not in ATTENTION_PRECISIONS:
        raise QuantizeError(f"attention precision must be one of {ATTENTION_PRECISIONS}")
    return method


def _to_fp16(model, ranges, keep_io_fp32: bool, report: QuantizeReport) -> onnx.ModelProto:
    converted = convert_to_fp16(model, ranges, keep_io_fp32=keep_io_fp32)
    problems = check_strongly_typed(converted.model)
    if problems:  # a bug of ours, never the user's: refuse to write a broken graph
        raise QuantizeError("FP16 conversion left mixed types: " + "; ".join(problems))
    report.fp16_nodes, report.kept_fp32 = converted.fp16_nodes, converted.kept_fp32
    report.casts = converted.casts
    return converted.model


def _to_qdq(
    model, ranges, attention_precision: str, report: QuantizeReport, keep: list[str] = ()
) -> onnx.ModelProto:
    quantized = quantize_int8(
        model,
        ranges,
        attention_precision=attention_precision,
        skip_nodes=keep,
        format=report.precision,
    )
    report.int8_nodes = len(quantized.quantized_nodes)
    report.int8_weights = quantized.weights
    report.int8_activations = len(quantized.activation_scales)
    report.residual_adds = quantized.residual_adds
    report.attention_precision = attention_precision
    return quantized.model


def _quantize_modelopt(
    model_path, precision, method, batch_list, input_name, attention_precision
) -> onnx.ModelProto:
    """INT8 Q/DQ by NVIDIA ModelOpt (`modelopt.onnx.quantization.quantize`, its documented
    API). Graphs with AxialAttention nodes need ModelOpt to run the plugin during calibration
    (its trt_plugins option / TensorRT execution provider): we do not emulate that."""
    if precision != "int8":
        raise QuantizeError("--quantizer modelopt supports --precision int8 only")
    try:
        from modelopt.onnx.quantization import quantize as modelopt_quantize
    except ImportError as error:
        raise QuantizeError(MODELOPT_MISSING) from error
    modelopt_methods = {"entropy": "entropy", "minmax": "max"}
    if method not in modelopt_methods:
        raise QuantizeError(f"ModelOpt calibrates with entropy or minmax, not {method}")
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "modelopt.onnx"
        modelopt_quantize(
            onnx_path=str(model_path),
            quantize_mode="int8",
            calibration_data={input_name: np.concatenate(batch_list)},
            calibration_method=modelopt_methods[method],
            high_precision_dtype=attention_precision,
            output_path=str(output),
        )
        return onnx.load(str(output))


# ---------------------------------------------------------------------------- accuracy report


@dataclass
class CandidateAccuracy:
    path: str
    outputs: dict[str, OutputError] = field(default_factory=dict)
    top1_agreement: float | None = None  # classification
    pixel_agreement: float | None = None  # segmentation: argmax over classes, per pixel
    miou: float | None = None  # IoU between the two predictions, averaged over classes


@dataclass
class AccuracyReport:
    reference: str
    inputs: str
    batches: int
    task: str | None
    candidates: dict[str, CandidateAccuracy] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        width = max([5, *(len(label) for label in self.candidates)])
        lines = [
            f"reference {self.reference} on {self.inputs} ({self.batches} batch(es)), "
            f"task {self.task or 'unknown'}",
            f"  {'model':<{width}} {'output':<10} {'max abs':>10} {'mean abs':>10} "
            f"{'max rel':>10}  agreement",
        ]
        for label, result in self.candidates.items():
            agreement = ""
            if result.top1_agreement is not None:
                agreement = f"top-1 {result.top1_agreement:.1%}"
            elif result.pixel_agreement is not None:
                agreement = f"pixels {result.pixel_agreement:.1%}, mIoU {result.miou:.3f}"
            for number, (name, error) in enumerate(result.outputs.items()):
                lines.append(
                    f"  {label:<{width}} {name:<10} {error.max_abs:>10.2e} {error.mean_abs:>10.2e} "
                    f"{error.max_rel:>10.2e}  {agreement if number == 0 else ''}"
                )
        return "\n".join(lines)


def accuracy_report(
    reference_path: str | os.PathLike,
    candidates: Mapping[str, str | os.PathLike],
    *,
    inputs: str | None = None,
    batches: int = 4,
    seed: int = 1,
    task: str | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> AccuracyReport:
    """Compare each candidate graph with the reference in ONNX Runtime on the same inputs
    (`inputs`: a calibration-source spec; default synthetic with `seed`, which the default
    calibration seed 0 never saw). The graphs run as Polygraphy runners (an FP16 graph's
    inputs are cast by Polygraphy) and Polygraphy's comparator gives, per output, max / mean
    abs error and max rel error; per task: top-1 agreement (classification) or pixel agreement
    and mIoU between the argmax predictions of the `semantic` output (panoptic /
    segmentation)."""
    from axial_deploy.checks.comparison import onnxrt_runner, run
    from axial_deploy.op.ort import create_session
    from axial_deploy.progress import progress_bar

    reference = _load(reference_path, "reference")
    task = task or task_of(reference)
    if task not in ("classification", "panoptic", "segmentation"):
        raise QuantizeError(f"task must be classification, panoptic or segmentation, got {task}")
    source, batch_list, input_name = _calibration_batches(
        reference, reference_path, inputs, batches, batch_size, seed
    )
    report = AccuracyReport(str(reference_path), source.description, len(batch_list), task)
    feeds = [{input_name: batch} for batch in batch_list]
    ref_session = create_session(reference)
    names = [o.name for o in ref_session.get_outputs()]
    ref_outputs = run([onnxrt_runner(ref_session, "reference")], feeds)["reference"]
    for label, path in progress_bar(
        candidates.items(), desc="candidates", disable=not progress, leave=False
    ):
        _load(path, f"candidate {label}")
        session = create_session(str(path))
        cand_names = [o.name for o in session.get_outputs()]
        pairs, _ = match_outputs(names, cand_names, ("the reference", str(path)))
        outputs = run([onnxrt_runner(session, "candidate")], feeds)["candidate"]
        report.candidates[label] = _candidate_accuracy(str(path), task, pairs, ref_outputs, outputs)
    return report


def _candidate_accuracy(path: str, task: str, pairs, ref_outputs, outputs) -> CandidateAccuracy:
    """Errors merged over the batches (Polygraphy's comparator) and the task agreement."""
    from axial_deploy.checks.comparison import errors

    names = [name for name, _ in pairs]
    # The output whose argmax over axis 1 is the prediction: logits, or semantic scores.
    scores = "semantic" if task != "classification" and "semantic" in names else names[0]
    result = CandidateAccuracy(path)
    agree = total = 0
    confusion = None
    for expected, actual in zip(ref_outputs, outputs, strict=True):
        for name, (error, _) in errors(expected, actual, pairs).items():
            if error is None:
                raise QuantizeError(f"{path}: output {name} has another shape than the reference's")
            result.outputs[name] = (
                result.outputs[name].merged(error) if name in result.outputs else error
            )
        want_out, got_out = expected[scores], actual[dict(pairs)[scores]]
        want_pred, got_pred = want_out.argmax(axis=1), got_out.argmax(axis=1)
        agree += int((want_pred == got_pred).sum())
        total += want_pred.size
        if task != "classification":
            classes = want_out.shape[1]
            cells = want_pred.reshape(-1) * classes + got_pred.reshape(-1)
            counts = np.bincount(cells, minlength=classes * classes).reshape(classes, classes)
            confusion = counts if confusion is None else confusion + counts
    if task == "classification":
        result.top1_agreement = agree / max(total, 1)
    else:
        result.pixel_agreement = agree / max(total, 1)
        result.miou = _miou(confusion)
    return result


def _miou(confusion: np.ndarray) -> float:
    """Mean IoU between two label maps over the classes either one predicts."""
    hits = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    present = union > 0
    return float((hits[present] / union[present]).mean()) if present.any() else 1.0
