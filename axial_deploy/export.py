"""Export a PyTorch model to ONNX and check the ONNX model against PyTorch in ONNX Runtime.

Stage 1 of the flow (export -> rewrite -> precision -> build -> run/profile). Two exporters:

* "torchscript" (`torch.onnx.export(..., dynamo=False)`): traces the model; fast, opset >= 17.
* "dynamo" (`torch.export.export` + `torch.onnx.export(program, ...)`): captures the graph with
  symbolic shapes; opset >= 18 (torch 2.13 builds opset 18 graphs and ONNX has no adapter that
  takes its Split nodes down to 17); 5-50x slower to export.

The artifact is written atomically: a failed export never leaves a half-written model.onnx
behind, and the .onnx file is self-contained (weights inside) unless its weights exceed
protobuf's 2 GiB limit, where they go to `<name>.data` next to it (moved into place first).
A graph with dynamic height / width is only written after ONNX Runtime reproduced PyTorch at a
second input size: a graph that baked the export size in is refused, never written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from axial_deploy.artifacts import atomic_output
from axial_deploy.errors import AxialDeployError
from axial_deploy.numerics import OutputError

DEFAULT_OPSET = 17  # the TorchScript-based exporter's default
DYNAMO_MIN_OPSET = 18
EXPORTERS = ("torchscript", "dynamo")
DYNAMIC_MODES = ("batch", "batch,hw", "none")  # symbolic axes of the graph's input
# The second-size check of a dynamic height / width graph catches graphs that baked the export
# size in: those are off by O(1) or fail to run. The tight parity check is the caller's.
SECOND_SIZE_RTOL = 1e-3


class ExportError(AxialDeployError, RuntimeError):
    """The model could not be exported or the exported graph is unusable."""


def default_opset(exporter: str) -> int:
    return DYNAMO_MIN_OPSET if exporter == "dynamo" else DEFAULT_OPSET


def output_names_of(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names for the graph outputs: the keys of a dict output, else output0, output1, ..."""
    with torch.no_grad():
        out = model(example)
    if isinstance(out, dict):
        return list(out)
    if isinstance(out, (tuple, list)):
        return [f"output{i}" for i in range(len(out))]
    return ["logits" if out.dim() == 2 else "output"]


def second_shape(input_shape: tuple[int, ...], dynamic: str) -> tuple[int, ...] | None:
    """Another input shape that exercises every dynamic axis (None when there is none): batch
    + 1 and, for "batch,hw", about 3/4 of the height and width, parity flipped (odd sizes
    exercise ceil-mode pooling), smaller so that the check costs less than the export size's."""
    if dynamic == "none":
        return None
    n, c, *spatial = input_shape
    if dynamic == "batch,hw":
        spatial = [size - size // 4 + 1 for size in spatial]
    return (n + 1, c, *spatial)


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | os.PathLike,
    *,
    opset: int | None = None,
    dynamic: str = "batch",
    exporter: str = "torchscript",
    input_name: str = "images",
) -> Path:
    """Export `model` (switched to eval mode) for NCHW inputs of `input_shape` to `path`.

    `dynamic`: "batch" makes the first axis of the input and of every output symbolic
    ("batch"), "batch,hw" also the input's height and width ("height", "width"), "none" keeps
    every axis static. `opset` defaults to 17 (torchscript) or 18 (dynamo, its lowest).
    Raises ExportError when the model cannot be exported as asked, e.g. when it cannot keep
    its height and width dynamic; the error names the model and the reason.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}: use one of {', '.join(EXPORTERS)}")
    if dynamic not in DYNAMIC_MODES:
        raise ExportError(f"unknown --dynamic {dynamic!r}: use one of {', '.join(DYNAMIC_MODES)}")
    opset = default_opset(exporter) if opset is None else opset
    if opset < DEFAULT_OPSET:
        raise ExportError(f"opset {opset} is not supported: use --opset 17 or newer")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ExportError(
            f"the dynamo exporter cannot write opset {opset}: torch 2.13 builds opset 18 graphs "
            "and ONNX has no adapter from Split-18 down to 17; use --opset 18 or newer, or "
            "--exporter torchscript"
        )
    path = Path(path)
    name = type(model).__name__
    model = model.eval()
    example = torch.randn(input_shape)
    try:
        with atomic_output(path) as tmp:
            outputs = output_names_of(model, example)
            if exporter == "torchscript":
                _export_torchscript(model, example, tmp, input_name, outputs, dynamic, opset)
            else:
                _export_dynamo(model, example, tmp, input_name, outputs, dynamic, opset)
            import onnx

            onnx.checker.check_model(str(tmp))
            _check_graph_input(tmp, dynamic, opset, exporter)
            if dynamic == "batch,hw":
                _check_second_size(model, tmp, input_shape, exporter)
    except ExportError as error:
        raise ExportError(f"{name}: {error}") from error
    except Exception as error:
        hint = " (dynamic height/width was asked: try --dynamic batch)" if "hw" in dynamic else ""
        raise ExportError(
            f"exporting {name} to ONNX ({exporter} exporter) failed{hint}: {error}"
        ) from error
    return path


def _export_torchscript(
    model: nn.Module,
    example: torch.Tensor,
    tmp: Path,
    input_name: str,
    outputs: list[str],
    dynamic: str,
    opset: int,
) -> None:
    dynamic_axes = None
    if dynamic != "none":
        dynamic_axes = {name: {0: "batch"} for name in [input_name, *outputs]}
        if dynamic == "batch,hw":
            dynamic_axes[input_name].update({2: "height", 3: "width"})
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing warns about Python values taken from shapes; the dynamic axes declared above
        # are checked afterwards (second input size), the others are static by design.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=[input_name],
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )


def _export_dynamo(
    model: nn.Module,
    example: torch.Tensor,
    tmp: Path,
    input_name: str,
    outputs: list[str],
    dynamic: str,
    opset: int,
) -> None:
    axes = {"none": {}, "batch": {0: "batch"}, "batch,hw": {0: "batch", 2: "height", 3: "width"}}
    names = axes[dynamic]
    dynamic_shapes = None
    if names:
        # Dim.DYNAMIC raises if the model specializes an axis to a constant (e.g. a Python
        # branch on a size), where torch.onnx.export would silently fall back to a static axis.
        dynamic_shapes = ({axis: torch.export.Dim.DYNAMIC for axis in names},)
        # torch.export specializes axes of size 1 (broadcasting): trace with batch >= 2.
        example = example.expand(max(2, example.shape[0]), *example.shape[1:]).contiguous()
    with warnings.catch_warnings(), _quiet_loggers("onnxscript", "torch.onnx"):
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(
                model, (example,), dynamic_shapes=dynamic_shapes, strict=False
            )
        except Exception as error:  # torch raises UserError / ValueError with the guards
            axes = ", ".join(names.values())
            raise ExportError(
                f"torch.export cannot keep {axes} dynamic: {_export_reasons(error, names)}"
            ) from None
        onnx_program = torch.onnx.export(
            program,
            (example,),
            input_names=[input_name],
            output_names=outputs,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    graph_input = onnx_program.model.graph.inputs[0]
    onnx_program.rename_axes({graph_input.shape[axis]: name for axis, name in names.items()})
    # Self-contained unless over protobuf's 2 GiB, where save() writes <name>.data beside it.
    onnx_program.save(str(tmp))


def _export_reasons(error: Exception, names: dict[int, str]) -> str:
    """torch.export's reasons (one line per specialized axis), with the input's axes named and
    without its advice on its own API."""
    lines = str(error).splitlines()
    reasons = [
        line.strip(" -").split(" If you're using")[0].rstrip(".")
        for line in lines
        if "  - " in line
    ]
    text = "; ".join(reasons[:4]) or " ".join(lines[:2])
    # L['x'].size()[3] / inputs['x'].shape[3] -> width
    return re.sub(
        r"\w+\['\w+'\]\.(?:size\(\)|shape)\[(\d)\]",
        lambda m: names.get(int(m.group(1)), m.group(0)),
        text,
    )


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The dynamo exporter logs a warning per unfoldable Split and version-conversion
    tracebacks that are not errors of ours (the opset actually written is checked after)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _check_graph_input(path: Path, dynamic: str, opset: int, exporter: str) -> None:
    """The written graph has the requested opset and symbolic input axes."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    written = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:
        raise ExportError(f"the {exporter} exporter wrote opset {written}, not the asked {opset}")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    wanted = {"none": [], "batch": [0], "batch,hw": [0, 2, 3]}[dynamic]
    static = [axis for axis in wanted if not dims[axis].dim_param]
    if static:
        raise ExportError(f"the {exporter} exporter made input axes {static} static")


def _check_second_size(
    model: nn.Module, path: Path, input_shape: tuple[int, ...], exporter: str
) -> None:
    """Refuse a dynamic height / width graph that does not reproduce PyTorch at another size."""
    shape = second_shape(input_shape, "batch,hw")
    dims = "x".join(map(str, shape))
    try:
        errors = compare_with_onnxruntime(model, path, torch.randn(shape))
    except Exception as error:
        raise ExportError(
            f"cannot have dynamic height/width with the {exporter} exporter: the graph "
            f"exported at {'x'.join(map(str, input_shape))} fails at {dims} in ONNX Runtime "
            f"({str(error).strip()[:300]}); export with --dynamic batch at the size you run"
        ) from None
    worst = max(e.max_rel for e in errors)
    if worst > SECOND_SIZE_RTOL:
        raise ExportError(
            f"cannot have dynamic height/width with the {exporter} exporter: the graph "
            f"exported at {'x'.join(map(str, input_shape))} is wrong at {dims} (max rel error "
            f"{worst:.1e} against PyTorch), it baked sizes in; export with --dynamic batch at "
            "the size you run"
        )


def parity_shapes(input_shape: tuple[int, ...], dynamic: str) -> list[tuple[int, ...]]:
    """The shapes a parity check runs: the export shape and, for dynamic axes, a second one, so
    a graph that baked a size in fails."""
    second = second_shape(input_shape, dynamic)
    return [tuple(input_shape), *([second] if second else [])]


def check_parity(
    model: nn.Module, onnx_path: str | os.PathLike, shapes: list[tuple[int, ...]], seed: int = 0
) -> Iterator[tuple[tuple[int, ...], list[OutputError]]]:
    """ONNX Runtime against PyTorch on seeded inputs of each shape: (shape, errors). Inputs
    come from Polygraphy's data loader (shape i: seed + i, uniform in [-2, 2])."""
    import numpy as np

    from axial_deploy.comparison import seeded_feed

    for index, shape in enumerate(shapes):
        feed = seeded_feed({"input": (np.float32, tuple(shape))}, seed + index)
        yield shape, compare_with_onnxruntime(model, onnx_path, torch.from_numpy(feed["input"]))


def compare_with_onnxruntime(
    model: nn.Module, onnx_path: str | os.PathLike, inputs: torch.Tensor
) -> list[OutputError]:
    """Run `model` (Polygraphy's PyTorch runner) and the ONNX file (its ONNX Runtime runner,
    CPU) on `inputs`: errors per output, by Polygraphy's comparator. Raises ExportError when an
    output's shape differs from PyTorch's."""
    import numpy as np
    import onnxruntime as ort

    from axial_deploy.comparison import errors, onnxrt_runner, run, torch_runner
    from axial_deploy.ort_ops import create_session

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing run raises with the message it would also log
    session = create_session(onnx_path, session_options=options)
    name = session.get_inputs()[0].name
    outputs = [meta.name for meta in session.get_outputs()]
    metadata = {name: (np.float32, tuple(inputs.shape))}
    runners = [torch_runner(model.eval(), metadata, outputs), onnxrt_runner(session, "onnxrt")]
    results = run(runners, [{name: inputs.numpy()}])
    expected, got = results["pytorch"][0], results["onnxrt"][0]
    found = []
    for output, (error, _) in errors(expected, got).items():
        if error is None:  # numpy would broadcast some mismatches silently
            raise ExportError(
                f"output {output} has shape {list(got[output].shape)} in ONNX Runtime, "
                f"{list(expected[output].shape)} in PyTorch"
            )
        found.append(error)
    return found
