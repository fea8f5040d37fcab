"""Export a PyTorch model to ONNX and check the ONNX model against PyTorch in ONNX Runtime.

Stage 1 of the flow (export -> rewrite -> precision -> build -> run/profile). The artifact is
written atomically: a failed export never leaves a half-written model.onnx behind.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """The model could not be exported or the exported graph is unusable."""


def output_names_of(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names for the graph outputs: the keys of a dict output, else output0, output1, ..."""
    with torch.no_grad():
        out = model(example)
    if isinstance(out, dict):
        return list(out)
    if isinstance(out, (tuple, list)):
        return [f"output{i}" for i in range(len(out))]
    return ["logits" if out.dim() == 2 else "output"]


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    input_name: str = "images",
) -> Path:
    """Export an eval-mode copy of `model` for inputs of `input_shape` to `path` (atomically).

    Uses the TorchScript-based exporter (`dynamo=False`), whose graphs ONNX Runtime and the
    TensorRT ONNX parser both take. With `dynamic_batch`, the first axis of the input and of
    every output is symbolic ("batch").
    """
    if opset < 17:
        raise ExportError(f"opset {opset} is not supported: use --opset 17 or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.randn(input_shape)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        outputs = output_names_of(model, example)
        dynamic_axes = None
        if dynamic_batch:
            dynamic_axes = {name: {0: "batch"} for name in [input_name, *outputs]}
        with warnings.catch_warnings(), torch.no_grad():
            # Tracing warns about Python values taken from shapes; those are static here
            # except the batch axis, which is declared dynamic above.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                tmp,
                input_names=[input_name],
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
        import onnx

        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    except Exception as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, ExportError):
            raise
        raise ExportError(f"exporting {type(model).__name__} to ONNX failed: {error}") from error
    return path


@dataclass(frozen=True)
class OutputError:
    name: str
    max_abs: float
    max_rel: float  # max abs error / max |reference|
    mean_abs: float


def compare_with_onnxruntime(
    model: nn.Module, onnx_path: str | os.PathLike, inputs: torch.Tensor
) -> list[OutputError]:
    """Run `model` (PyTorch) and the ONNX file (ONNX Runtime, CPU) on `inputs`: errors per
    output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    got = session.run(None, feed)
    with torch.no_grad():
        expected = model.eval()(inputs)
    if isinstance(expected, dict):
        expected = list(expected.values())
    elif isinstance(expected, torch.Tensor):
        expected = [expected]
    errors = []
    for meta, actual, reference in zip(session.get_outputs(), got, expected, strict=True):
        reference = reference.numpy().astype(np.float64)
        diff = np.abs(actual.astype(np.float64) - reference)
        scale = max(float(np.abs(reference).max()), 1e-30)
        errors.append(
            OutputError(meta.name, float(diff.max()), float(diff.max()) / scale, float(diff.mean()))
        )
    return errors
