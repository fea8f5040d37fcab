"""Compare two ONNX graphs on the same random inputs in ONNX Runtime (`axial-deploy verify`).

Model A is the reference, B the candidate (e.g. A = model.onnx, B = model.axial.onnx). Both run
through `create_session`, so graphs holding AxialAttention nodes run too. Inputs: every float
input gets N(0, 1) values from the seed; a symbolic first dimension is the batch (--batch); any
other symbolic dimension is refused, since the tool cannot guess sizes that make sense for the
model (re-export it with a fixed input size).

Pass rule, per output: max |B - A| <= atol + rtol * max |A|. The tolerance scales with the
output's largest magnitude, not with each element, so values near zero do not blow up a
relative error; max rel in the table is max |B - A| / max |A|.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axial_deploy.errors import AxialDeployError
from axial_deploy.graph import SymbolicDimensionError, static_shape
from axial_deploy.numerics import match_outputs, output_error

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6

_FLOAT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


class VerifyError(AxialDeployError, ValueError):
    """The two models cannot be compared (missing file, not ONNX, inputs or outputs differ)."""


@dataclass(frozen=True)
class OutputComparison:
    """One output of A against its match in B."""

    name: str  # A's output name
    name_b: str  # B's output name (differs when matched by position)
    shape: tuple[int, ...]
    max_abs: float  # max |B - A|
    max_rel: float  # max |B - A| / max |A|
    mean_abs: float
    max_ref: float  # max |A|, the scale of the tolerance
    passed: bool
    note: str = ""


@dataclass
class VerifyReport:
    """Everything `axial-deploy verify` prints: per-output rows and the settings they used."""

    model_a: str
    model_b: str
    rows: list[OutputComparison]
    inputs: dict[str, tuple[int, ...]]
    rtol: float
    atol: float
    seed: int
    matched_by: str  # "name" or "position"
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)


def _load_checked(path: str | Path, label: str) -> Path:
    """The path of a readable, valid ONNX model, or a VerifyError saying what is wrong."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise VerifyError(f"model {label} not found: {path}")
    try:
        onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends: not an ONNX file
        raise VerifyError(f"model {label} ({path}) is not an ONNX file: {error}") from error
    try:
        onnx.checker.check_model(str(path))  # the path form also checks >2 GiB external data
    except Exception as error:
        raise VerifyError(f"model {label} ({path}) fails onnx.checker: {error}") from error
    return path


def _session(path: Path, label: str):
    from axial_deploy.ort_ops import create_session

    try:
        return create_session(path)
    except (ImportError, ValueError) as error:
        raise VerifyError(f"model {label} ({path}): {error}") from error
    except Exception as error:  # ORT's own exceptions derive from Exception only
        raise VerifyError(f"ONNX Runtime cannot load model {label} ({path}): {error}") from error


def _input_specs(session, label: str, batch: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (static shape, ORT type) of a session's inputs, the batch axis resolved."""
    specs = {}
    for meta in session.get_inputs():
        try:
            shape = static_shape(meta.shape, batch)
        except SymbolicDimensionError as error:
            raise VerifyError(
                f"model {label}: input {meta.name!r} has symbolic dimension {error.dim!r} at "
                f"axis {error.axis}; verify needs static dimensions except the batch (axis 0): "
                "export the model at a fixed input size"
            ) from None
        if meta.type not in _FLOAT_TYPES:
            raise VerifyError(
                f"model {label}: input {meta.name!r} is {meta.type}; verify feeds random floats "
                "and supports float, float16 and double inputs only"
            )
        specs[meta.name] = (shape, meta.type)
    return specs


def _random_inputs(
    specs: dict[str, tuple[tuple[int, ...], str]], seed: int
) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    return {
        name: generator.standard_normal(shape).astype(_FLOAT_TYPES[kind])
        for name, (shape, kind) in specs.items()
    }


def compare_output(
    name: str, name_b: str, a: np.ndarray, b: np.ndarray, rtol: float, atol: float
) -> OutputComparison:
    """Errors of B against reference A, and whether max |B - A| <= atol + rtol * max |A|."""
    if a.shape != b.shape:
        note = f"shape differs: A {list(a.shape)}, B {list(b.shape)}"
        nan = float("nan")
        return OutputComparison(name, name_b, a.shape, nan, nan, nan, nan, False, note)
    error = output_error(name, a, b)
    passed = bool(error.max_abs <= atol + rtol * error.max_ref)
    note = "NaN or Inf in the outputs" if np.isinf(error.max_abs) else ""
    return OutputComparison(
        name, name_b, a.shape, error.max_abs, error.max_rel, error.mean_abs, error.max_ref, passed,
        note,
    )  # fmt: skip


def verify_models(
    a: str | Path,
    b: str | Path,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    batch: int = 1,
) -> VerifyReport:
    """Run ONNX models `a` (reference) and `b` on the same random inputs and compare outputs.

    Outputs match by name, or by position when the names differ but the counts agree. Raises
    VerifyError when the models cannot be compared; a comparison that fails is a report whose
    `passed` is False.
    """
    if batch < 1:
        raise VerifyError(f"batch must be >= 1, got {batch}")
    path_a, path_b = _load_checked(a, "A"), _load_checked(b, "B")
    session_a, session_b = _session(path_a, "A"), _session(path_b, "B")
    specs_a = _input_specs(session_a, "A", batch)
    specs_b = _input_specs(session_b, "B", batch)
    if specs_a != specs_b:
        raise VerifyError(
            "the models' inputs differ (name: shape, type):\n"
            f"  A: {_describe(specs_a)}\n  B: {_describe(specs_b)}"
        )
    names_a = [meta.name for meta in session_a.get_outputs()]
    names_b = [meta.name for meta in session_b.get_outputs()]
    pairs, matched_by = match_outputs(names_a, names_b, ("A", "B"))

    feed = _random_inputs(specs_a, seed)
    outputs_a = _run(session_a, names_a, feed, "A")
    outputs_b = _run(session_b, names_b, feed, "B")
    rows = [
        compare_output(name_a, name_b, outputs_a[name_a], outputs_b[name_b], rtol, atol)
        for name_a, name_b in pairs
    ]
    notes = []
    if matched_by == "position":
        notes.append("output names differ: outputs matched by position")
    return VerifyReport(
        model_a=str(path_a),
        model_b=str(path_b),
        rows=rows,
        inputs={name: shape for name, (shape, _) in specs_a.items()},
        rtol=rtol,
        atol=atol,
        seed=seed,
        matched_by=matched_by,
        notes=notes,
    )


def _run(session, names: list[str], feed: dict[str, np.ndarray], label: str):
    try:
        return dict(zip(names, session.run(names, feed), strict=True))
    except Exception as error:  # ORT's own exceptions derive from Exception only
        raise VerifyError(f"ONNX Runtime failed to run model {label}: {error}") from error


def _describe(specs: dict[str, tuple[tuple[int, ...], str]]) -> str:
    return ", ".join(f"{name}: {list(shape)} {kind}" for name, (shape, kind) in specs.items())


def format_report(report: VerifyReport) -> str:
    """The report as the table `axial-deploy verify` prints."""
    inputs = ", ".join(
        f"{name} {'x'.join(map(str, shape))}" for name, shape in report.inputs.items()
    )
    lines = [
        f"A (reference): {report.model_a}",
        f"B:             {report.model_b}",
        f"inputs (N(0, 1), seed {report.seed}): {inputs}",
        *report.notes,
        f"pass rule: max abs <= atol + rtol * max |A| (atol {report.atol:.0e}, rtol "
        f"{report.rtol:.0e})",
    ]
    width = max([len("output"), *(len(_row_name(row)) for row in report.rows)])
    lines.append(f"{'output':<{width}}  {'max abs':>10} {'max rel':>10} {'mean abs':>10}  result")
    for row in report.rows:
        result = "PASS" if row.passed else "FAIL"
        if row.note:
            result += f" ({row.note})"
        lines.append(
            f"{_row_name(row):<{width}}  {row.max_abs:>10.2e} {row.max_rel:>10.2e} "
            f"{row.mean_abs:>10.2e}  {result}"
        )
    failed = sum(not row.passed for row in report.rows)
    if failed:
        lines.append(f"FAILED: {failed} of {len(report.rows)} outputs exceed the tolerance")
    else:
        lines.append(f"OK: all {len(report.rows)} outputs within the tolerance")
    return "\n".join(lines)


def _row_name(row: OutputComparison) -> str:
    return row.name if row.name == row.name_b else f"{row.name} / {row.name_b}"
