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

Big inputs export by a small trace (`small_trace_export`, `write_at_size`): traced at a small
size and at about half of it, refused unless both traces wrote the same graph byte for byte,
checked in ONNX Runtime at both sizes, written with the full input size declared.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    second_size: bool = True,
) -> Path:
    """Export `model` (switched to eval mode) for NCHW inputs of `input_shape` to `path`.

    `dynamic`: "batch" makes the first axis of the input and of every output symbolic
    ("batch"), "batch,hw" also the input's height and width ("height", "width"), "none" keeps
    every axis static. `opset` defaults to 17 (torchscript) or 18 (dynamo, its lowest).
    Raises ExportError when the model cannot be exported as asked, e.g. when it cannot keep
    its height and width dynamic; the error names the model and the reason. `second_size`
    False skips the ONNX Runtime run at a second size of a "batch,hw" graph, for a caller that
    checks parity at a second size itself (`small_trace_export`).
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
            if dynamic == "batch,hw" and second_size:
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

    from axial_deploy.checks.comparison import seeded_feed

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

    from axial_deploy.checks.comparison import errors, onnxrt_runner, run, torch_runner
    from axial_deploy.op.ort import create_session

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


# ------------------------------------------------------------------ export by a small trace
# A full-size trace runs the model's un-chunked windowed attention on the full input
# (Axial-DeepLab-L at 1025x2049: ~13 min and ~19 GB on 2 cores), and ONNX Runtime cannot run
# that graph in 24 GB at all. The tracer records sizes as Shape ops, so the graph traced at a
# small size is the same graph; this path traces small, shows that with a second trace, checks
# parity at both small sizes, and writes the graph with the full size declared.


def witness_shape(trace_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The second trace size: about half the height and width (a trace costs about its pixel
    count), parity flipped (ceil-mode and centred pooling round differently), same batch."""
    n, c, *spatial = trace_shape
    return (n, c, *(size // 2 + (1 if size % 2 == 0 else 2) for size in spatial))


def graph_difference(
    first: str | os.PathLike, second: str | os.PathLike, *, weights: bool = True
) -> str | None:
    """None when two ONNX files hold the same graph (nodes in order with their inputs, outputs
    and attributes; initializers with names, dims and bytes; opsets), else the first difference.
    Graph input and output dims are not compared: they are what a trace size may change.
    `weights` False compares initializers by name, type and dims only (other weights)."""
    import onnx

    a, b = onnx.load(str(first)), onnx.load(str(second))
    if not weights:
        values = ("raw_data", "float_data", "int32_data", "int64_data", "double_data")
        for initializer in [*a.graph.initializer, *b.graph.initializer]:
            for field in values:
                initializer.ClearField(field)
    if list(a.opset_import) != list(b.opset_import):
        return "opset imports differ"
    if len(a.graph.node) != len(b.graph.node):
        return f"{len(a.graph.node)} nodes against {len(b.graph.node)}"
    for index, (x, y) in enumerate(zip(a.graph.node, b.graph.node, strict=True)):
        if x != y:
            return f"node {index} differs: {_node_text(x)} against {_node_text(y)}"
    if len(a.graph.initializer) != len(b.graph.initializer):
        return f"{len(a.graph.initializer)} initializers against {len(b.graph.initializer)}"
    for x, y in zip(a.graph.initializer, b.graph.initializer, strict=True):
        if x != y:
            return f"initializer {x.name} differs from {y.name} (dims {x.dims} / {y.dims})"
    if [i.name for i in a.graph.input] != [i.name for i in b.graph.input]:
        return "graph inputs differ"
    if [o.name for o in a.graph.output] != [o.name for o in b.graph.output]:
        return "graph outputs differ"
    return None


def _node_text(node) -> str:
    import onnx

    attributes = ", ".join(onnx.helper.printable_attribute(a) for a in node.attribute)
    return f"{node.op_type}({', '.join(node.input)}) [{attributes[:120]}]"


def count_graph(path: str | os.PathLike) -> tuple[int, int]:
    """(nodes, bytes of initializers and Constant values) of an ONNX file."""
    import onnx

    model = onnx.load(str(path))
    constants = sum(
        len(a.t.raw_data) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
    )
    return len(model.graph.node), constants + sum(len(t.raw_data) for t in model.graph.initializer)


@dataclass
class SmallTrace:
    """A graph traced at `trace_shape` with symbolic batch, height and width, shown to be the
    same graph when traced at `witness_shape` (`graph_difference` is None)."""

    dynamic_path: Path
    trace_shape: tuple[int, ...]
    witness_shape: tuple[int, ...]
    nodes: int
    graph_bytes: int

    @property
    def parity_shapes(self) -> list[tuple[int, ...]]:
        return [self.trace_shape, self.witness_shape]


@contextlib.contextmanager
def small_trace_export(
    model: nn.Module,
    input_shape: tuple[int, ...],
    trace_shape: tuple[int, ...],
    *,
    opset: int | None = None,
    exporter: str = "torchscript",
    input_name: str = "images",
) -> Iterator[SmallTrace]:
    """Trace `model` at `trace_shape` and at `witness_shape(trace_shape)` with dynamic batch,
    height and width; refuse unless both traces wrote the same graph. Yields the graph (in a
    temporary folder, removed on exit) for a parity check at both sizes and `write_at_size`."""
    dims = "x".join(map(str, input_shape))
    if len(trace_shape) != 4 or tuple(trace_shape[:2]) != tuple(input_shape[:2]):
        raise ExportError(f"--trace-size needs the batch and channels of --input-shape {dims}")
    if any(t > s for t, s in zip(trace_shape[2:], input_shape[2:], strict=True)):
        raise ExportError(f"--trace-size must not exceed the input's height and width ({dims})")
    witness = witness_shape(trace_shape)
    if any(w >= t for w, t in zip(witness[2:], trace_shape[2:], strict=True)):
        # sides <= 3 give a witness no smaller than the trace: the comparison would prove nothing
        raise ExportError(
            f"--trace-size {'x'.join(map(str, trace_shape[2:]))} is too small to trace twice at "
            "two sizes: use at least 5x5"
        )
    kwargs = {"opset": opset, "exporter": exporter, "input_name": input_name}
    with tempfile.TemporaryDirectory(prefix="axial-deploy-trace-") as folder:
        first, second = Path(folder, "trace.onnx"), Path(folder, "witness.onnx")
        export_onnx(model, trace_shape, first, dynamic="batch,hw", second_size=False, **kwargs)
        export_onnx(model, witness, second, dynamic="batch,hw", second_size=False, **kwargs)
        difference = graph_difference(first, second)
        if difference is not None:
            sizes = f"{'x'.join(map(str, trace_shape))} and {'x'.join(map(str, witness))}"
            raise ExportError(
                f"{type(model).__name__} traced at {sizes} gives two different graphs "
                f"({difference}): the graph depends on the trace size, so a small trace "
                f"cannot stand for {dims}; export at full size (--trace-size full)"
            )
        second.unlink()
        yield SmallTrace(first, tuple(trace_shape), witness, *count_graph(first))


def write_at_size(
    trace: SmallTrace, path: str | os.PathLike, input_shape: tuple[int, ...], dynamic: str
) -> Path:
    """Write the traced graph to `path` with the input declared at `input_shape`: its height
    and width fixed unless `dynamic` is "batch,hw", its batch fixed (outputs too) for "none".
    Nodes and initializers are written unchanged."""
    import onnx

    if dynamic not in DYNAMIC_MODES:
        raise ExportError(f"unknown --dynamic {dynamic!r}: use one of {', '.join(DYNAMIC_MODES)}")
    model = onnx.load(str(trace.dynamic_path))
    fixed = {"none": (0, 2, 3), "batch": (2, 3), "batch,hw": ()}[dynamic]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis in fixed:
        dims[axis].dim_value = input_shape[axis]  # clears the dim_param (a oneof)
    if dynamic == "none":
        for output in model.graph.output:
            output.type.tensor_type.shape.dim[0].dim_value = input_shape[0]
    path = Path(path)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    with atomic_output(path) as tmp:
        external = model.ByteSize() > 2**31 - 2**20  # protobuf's 2 GiB limit
        onnx.save(model, str(tmp), save_as_external_data=external, location=f"{path.name}.data")
        onnx.checker.check_model(str(tmp))
        _check_graph_input(tmp, dynamic, opset, "small-trace")
    return path


# ------------------------------------------------------------------ the export policy
# Which size to trace at, and the checked export that follows it: the CLI (`axial-deploy
# export`) and `deploy` both call `resolve_trace_size` and `export_checked`.

# Above this many input pixels a full-size trace of Axial-DeepLab costs minutes and tens of GB
# (L at 1025x2049: ~12 min, ~19 GB) and its graph does not fit ONNX Runtime in 24 GB.
AUTO_TRACE_PIXELS = 1024 * 1024
AUTO_TRACE_STRIDE = 16  # the auto trace size: (side - 1) / 16 + 1, e.g. 1025x2049 -> 65x129


def resolve_trace_size(
    trace_size: tuple[int, int] | str, shape: tuple[int, ...]
) -> tuple[int, int] | None:
    """The size to trace at (None: the input shape itself): 'auto' picks a small trace only
    for inputs above AUTO_TRACE_PIXELS, 'full' never; an explicit (height, width) is kept."""
    if trace_size == "full":
        return None
    if trace_size != "auto":
        return trace_size  # type: ignore[return-value]
    height, width = shape[2], shape[3]
    if height * width <= AUTO_TRACE_PIXELS:
        return None
    return tuple(max(33, (side - 1) // AUTO_TRACE_STRIDE + 1) for side in (height, width))


def auto_trace_note(shape: tuple[int, ...], trace_size: tuple[int, int]) -> str:
    """Why 'auto' chose a small trace, for the log."""
    return (
        f"--trace-size auto: {_dims(shape[2:])} is above {AUTO_TRACE_PIXELS:,} pixels, so the "
        f"graph is traced at {_dims(trace_size)} (--trace-size full: at full size)"
    )


@dataclass
class CheckedExport:
    """What `export_checked` did: the graph, the parity checks (shape, errors per output) and
    whether they passed `rtol` (a small-trace graph that fails is not written)."""

    path: Path
    checks: list[tuple[tuple[int, ...], list[OutputError]]]
    rtol: float
    written: bool = True

    @property
    def max_rel(self) -> float:
        return max((e.max_rel for _, errors in self.checks for e in errors), default=0.0)

    @property
    def passed(self) -> bool:
        return self.max_rel <= self.rtol


def export_checked(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | os.PathLike,
    *,
    trace_size: tuple[int, int] | None,
    rtol: float,
    opset: int | None = None,
    dynamic: str = "batch",
    exporter: str = "torchscript",
    seed: int = 0,
    name: str | None = None,
    log: Callable[[str], None] | None = None,
) -> CheckedExport:
    """Export `model` for `input_shape` to `path` and check ONNX Runtime against PyTorch:
    at full size (`trace_size` None: the export shape and, for dynamic axes, a second one), or
    by a small trace at `trace_size` (`small_trace_export`; parity at both trace sizes; the
    graph is written, with `input_shape` declared, only when it passes `rtol`). `log` gets
    each step and the parity table (None: silent)."""
    say = log or (lambda _text: None)
    name = name or type(model).__name__
    opset = default_opset(exporter) if opset is None else opset
    if trace_size is None:
        return _export_at_full_size(
            model, input_shape, Path(path), opset, dynamic, exporter, seed, rtol, name, say
        )
    return _export_by_small_trace(
        model, input_shape, Path(path), trace_size, opset, dynamic, exporter, seed, rtol, name, say
    )


def _export_at_full_size(
    model, shape, path: Path, opset, dynamic, exporter, seed, rtol, name, say
) -> CheckedExport:
    start = time.perf_counter()
    say(
        f"[1/2] exporting {name} at {_dims(shape)} (opset {opset}, {exporter} exporter, "
        f"dynamic {dynamic}) ..."
    )
    path = export_onnx(model, shape, path, opset=opset, dynamic=dynamic, exporter=exporter)
    size_mb = path.stat().st_size / 2**20
    say(f"      wrote {path} ({size_mb:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    say("[2/2] checking ONNX Runtime against PyTorch on random inputs ...")
    checks = list(check_parity(model, path, parity_shapes(shape, dynamic), seed))
    result = CheckedExport(path, checks, rtol)
    _log_parity(result, say)
    return result


def _export_by_small_trace(
    model, shape, path: Path, trace_size, opset, dynamic, exporter, seed, rtol, name, say
) -> CheckedExport:
    trace_shape = (*shape[:2], *trace_size)
    start = time.perf_counter()
    say(
        f"[1/3] tracing {name} at {_dims(trace_shape)} and at about half of it (opset {opset}, "
        f"{exporter} exporter, symbolic batch, height and width) ..."
    )
    with small_trace_export(model, shape, trace_shape, opset=opset, exporter=exporter) as trace:
        say(
            f"      {_dims(trace.trace_shape)} and {_dims(trace.witness_shape)} give the same "
            f"graph ({trace.nodes} nodes, {trace.graph_bytes / 2**20:.1f} MiB of weights and "
            f"constants, byte for byte) in {time.perf_counter() - start:.1f} s: no size is "
            "baked in, every size is computed from the input's shape"
        )
        say(
            "[2/3] checking ONNX Runtime against PyTorch on random inputs at both trace sizes "
            f"(not at {_dims(shape)}: that is the same graph, see above) ..."
        )
        checks = list(check_parity(model, trace.dynamic_path, trace.parity_shapes, seed))
        result = CheckedExport(path, checks, rtol, written=False)
        _log_parity(result, say)
        if not result.passed:
            say(f"      {path} not written")
            return result
        write_at_size(trace, path, shape, dynamic)
        result.written = True
    size_mb = path.stat().st_size / 2**20
    say(
        f"[3/3] wrote {path} ({size_mb:.1f} MiB): the checked graph, input declared "
        f"{_dims(shape)} (dynamic {dynamic}), in {time.perf_counter() - start:.1f} s"
    )
    return result


def _log_parity(result: CheckedExport, say: Callable[[str], None]) -> None:
    """The errors of each (shape, errors) check, then OK or FAILED against the tolerance."""
    say(f"      {'input':<16} {'output':<10} {'max abs':>10} {'max rel':>10} {'mean abs':>10}")
    for check, errors in result.checks:
        for e in errors:
            say(
                f"      {_dims(check):<16} {e.name:<10} {e.max_abs:>10.2e} {e.max_rel:>10.2e} "
                f"{e.mean_abs:>10.2e}"
            )
    worst, rtol = result.max_rel, result.rtol  # NaN in one side only is infinite
    if not result.passed:
        say(f"FAILED: max relative error {worst:.2e} exceeds --rtol {rtol:.0e}")
    else:
        say(f"OK: ONNX Runtime matches PyTorch (max rel {worst:.2e} <= {rtol:.0e})")


def _dims(shape) -> str:
    return "x".join(map(str, shape))
