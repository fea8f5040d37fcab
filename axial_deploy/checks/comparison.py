"""Running models and comparing their outputs, on Polygraphy (`polygraphy.comparator`).

Every comparison of the toolkit (export's parity check, `verify`, `compare` / the precision
accuracy report) runs here the way `polygraphy run` does it:

- runners: `OnnxrtRunner` over OUR ONNX Runtime sessions (`ort_ops.create_session`, so graphs
  holding AxialAttention nodes run through the registered op), `TorchRunner` (Polygraphy's
  `PytRunner` on the model's own device) for PyTorch, and Polygraphy's TensorRT runner where
  TensorRT exists (`tensorrt_runner`);
- inputs: Polygraphy's seeded `DataLoader` (uniform in INPUT_RANGE) or any list of feed dicts;
- `Comparator.run` to run them, `Comparator.compare_accuracy` with `SimpleCompareFunc`
  (CompareFunc.simple's class; "max" statistic) for the error statistics and the tolerance check.

What Polygraphy lacks stays ours: the scale of a relative error (max |reference| of the whole
output, so near-zero elements do not blow it up; Polygraphy divides element-wise by the second
output), the per-output tolerance atol + rtol * max |reference| (given to Polygraphy as its
absolute tolerance), and the rule that NaN or Inf is never parity (Polygraphy already fails a
NaN difference; we report it as an infinite error). Polygraphy's own logging is silenced; its
fatal errors become one-line `ComparisonError`s. AXIAL_DEPLOY_DEBUG=1 shows its log.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from axial_deploy.errors import AxialDeployError, first_line
from axial_deploy.numerics import OutputError, OutputMatchError, relative_error

# Seeded inputs are uniform in this range: about the range of ImageNet-normalised pixels
# ((0 - 0.485) / 0.229 = -2.1 to (1 - 0.406) / 0.225 = 2.6), non-zero almost everywhere.
INPUT_RANGE = (-2.0, 2.0)


class ComparisonError(AxialDeployError, RuntimeError):
    """A runner failed or Polygraphy refused the comparison (one line, from its message)."""


@contextlib.contextmanager
def quiet_polygraphy() -> Iterator[None]:
    """Polygraphy logs every run, comparison and warning: keep it out of the user's terminal
    (AXIAL_DEPLOY_DEBUG=1 shows it). Its fatal errors still raise PolygraphyException."""
    from polygraphy.logger import G_LOGGER

    severity = G_LOGGER.INFO if os.environ.get("AXIAL_DEPLOY_DEBUG") else G_LOGGER.CRITICAL + 10
    with G_LOGGER.verbosity(severity):
        yield


def onnxrt_runner(session, name: str):
    """Polygraphy's ONNX Runtime runner over one of our sessions (AxialAttention registered)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    return OnnxrtRunner(session, name=name)


def torch_runner(model, input_metadata: dict[str, tuple[np.dtype, tuple]], outputs: list[str]):
    """Polygraphy's PyTorch runner for `model` (eval mode, no grad) on its own device."""
    from polygraphy.backend.pyt import PytRunner
    from polygraphy.common import TensorMetadata

    class TorchRunner(PytRunner):
        # Polygraphy 0.53.6's PytRunner.infer_impl moves inputs to CUDA, returns a tuple
        # (outputs, time) and zips output names with a single tensor's batch rows: run on the
        # model's device and accept a tensor, a tuple/list or a dict of tensors.
        def infer_impl(self, feed_dict):
            import torch

            device = next(self.model.parameters(), torch.empty(0)).device
            inputs = [torch.from_numpy(np.asarray(v)).to(device) for v in feed_dict.values()]
            start = time.perf_counter()
            with torch.no_grad():
                out = self.model(*inputs)
            self.inference_time = time.perf_counter() - start
            tensors = list(out.values()) if isinstance(out, dict) else out
            tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
            arrays = (np.ascontiguousarray(t.detach().cpu().numpy()) for t in tensors)
            return OrderedDict(zip(self.output_names, arrays, strict=True))

    meta = TensorMetadata()
    for name, (dtype, shape) in input_metadata.items():
        meta.add(name, dtype=dtype, shape=shape)
    # A Module is callable: Polygraphy would call it as a loader, so hand it a loader.
    return TorchRunner(lambda: model, meta, outputs, name="pytorch")


def tensorrt_runner(engine_path: str, plugins: Sequence[str] = (), name: str = "tensorrt"):
    """Polygraphy's TensorRT runner for a serialized engine, the plugin libraries (e.g. our
    AxialAttention plugin, `axial-deploy plugin-path`) loaded before it is deserialized;
    ComparisonError where TensorRT is not installed."""
    try:
        import tensorrt
    except ImportError as error:
        raise ComparisonError(
            "comparing a TensorRT engine needs TensorRT (the tensorrt package); it is not "
            "installed here: compare the ONNX graphs in ONNX Runtime instead"
        ) from error
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, LoadPlugins, TrtRunner

    from axial_deploy.engine.build import BuildError, refuse_plugin_graph

    try:  # the guard every path to a TensorRT backend goes through
        refuse_plugin_graph("tensorrt", ["AxialAttention"] if plugins else [], tensorrt)
    except BuildError as error:
        raise ComparisonError(str(error)) from error

    engine = EngineFromBytes(BytesFromPath(str(engine_path)))
    return TrtRunner(LoadPlugins(plugins=list(plugins), obj=engine), name=name)


def seeded_inputs(
    input_metadata: dict[str, tuple[np.dtype, tuple[int, ...]]],
    seed: int,
    iterations: int = 1,
    val_range: tuple[float, float] = INPUT_RANGE,
):
    """Polygraphy's DataLoader: per iteration i, inputs drawn from RandomState(seed + i),
    uniform in `val_range`, of the given static shapes and dtypes (reproducible)."""
    from polygraphy.common import TensorMetadata
    from polygraphy.comparator import DataLoader

    meta = TensorMetadata()
    for name, (dtype, shape) in input_metadata.items():
        meta.add(name, dtype=dtype, shape=shape)
    with quiet_polygraphy():
        return DataLoader(
            seed=seed, iterations=iterations, input_metadata=meta, val_range=val_range
        )


def seeded_feed(
    input_metadata: dict[str, tuple[np.dtype, tuple[int, ...]]], seed: int
) -> dict[str, np.ndarray]:
    """The first feed dict of `seeded_inputs` (inputs of one run)."""
    loader = seeded_inputs(input_metadata, seed)
    with quiet_polygraphy():
        return dict(loader[0])


def run(runners: Sequence, data_loader: Iterable) -> dict[str, list[dict[str, np.ndarray]]]:
    """Comparator.run: runner name -> outputs per iteration (every runner gets the same inputs).
    A runner's own exception propagates; Polygraphy's refusals become ComparisonError."""
    from polygraphy.comparator import Comparator
    from polygraphy.exception import PolygraphyException

    try:
        with quiet_polygraphy():
            results = Comparator.run(list(runners), data_loader=data_loader)
    except PolygraphyException as error:
        raise ComparisonError(f"Polygraphy: {first_line(error)}") from None
    return {name: [dict(it) for it in iterations] for name, iterations in results}


def errors(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    pairs: Sequence[tuple[str, str]] | None = None,
    tolerance: Callable[[str, float], float] | None = None,
) -> dict[str, tuple[OutputError | None, bool]]:
    """Each reference output against its candidate (pairs of names; default: same names),
    by Polygraphy's SimpleCompareFunc on the "max" statistic: name -> (error, passed).

    `tolerance(name, max_ref)` is the largest max |candidate - reference| that passes (default
    0: only identical outputs pass). The error is None when the shapes differ (never passes).
    """
    from polygraphy.comparator import Comparator, IterationResult, RunResults
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.exception import PolygraphyException

    pairs = list(pairs) if pairs is not None else [(name, name) for name in reference]
    names = dict(pairs)
    scales = {name: _max_finite(reference[name]) for name in names}
    limits = {name: (tolerance or (lambda *_: 0.0))(name, scales[name]) for name in names}
    func = SimpleCompareFunc(
        atol=limits,
        rtol=0.0,  # the relative leg is inside `limits` (scaled by max |reference|)
        check_error_stat="max",
        find_output_func=lambda name, _index, _result: [names[name]] if name in names else None,
    )
    results = RunResults()
    # Polygraphy views the outputs (`util.array.view`), which needs contiguous arrays.
    ref = {n: np.ascontiguousarray(reference[n]) for n in names}
    cand = {n: np.ascontiguousarray(v) for n, v in candidate.items()}
    results.append(("reference", [IterationResult(ref, 0.0)]))
    results.append(("candidate", [IterationResult(cand, 0.0)]))
    try:
        with quiet_polygraphy(), np.errstate(all="ignore"):  # NaN - NaN is reported, not warned
            accuracy = Comparator.compare_accuracy(results, compare_func=func)
    except PolygraphyException as error:
        raise ComparisonError(f"Polygraphy: {first_line(error)}") from None
    [matches] = accuracy[0][("reference", "candidate")]
    return {
        name: (
            _record(name, matches[name], scales[name], reference[name].size),
            bool(matches[name]),
        )
        for name in names
    }


def output_error(name: str, reference: np.ndarray, actual: np.ndarray) -> OutputError:
    """Errors of `actual` against `reference` (same shape; the caller checks shapes), computed
    by Polygraphy's comparator (`errors`)."""
    error, _ = errors({name: np.asarray(reference)}, {name: np.asarray(actual)})[name]
    if error is None:
        raise OutputMatchError(
            f"output {name}: shapes differ ({list(np.shape(reference))} against "
            f"{list(np.shape(actual))})"
        )
    return error


def _max_finite(array: np.ndarray) -> float:
    values = np.abs(np.asarray(array, np.float64))
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else 0.0


def _record(name: str, result, max_ref: float, elements: int) -> OutputError | None:
    """Polygraphy's OutputCompareResult as our OutputError; NaN statistics (a NaN or Inf met)
    are an infinite error."""
    if isinstance(result, bool):  # Polygraphy's answer for different shapes
        return None
    max_abs, mean_abs = result.max_absdiff, result.mean_absdiff
    if not np.isfinite(max_abs):
        max_abs = mean_abs = float("inf")
    return OutputError(name, max_abs, relative_error(max_abs, max_ref), mean_abs, max_ref, elements)
