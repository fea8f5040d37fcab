"""Compare two ONNX graphs on the same seeded inputs in ONNX Runtime (`axial-deploy verify`).

Model A is the reference, B the candidate (e.g. A = model.onnx, B = model.axial.onnx). Both run
through `create_session` (graphs holding AxialAttention nodes run too) as Polygraphy runners;
the comparison is Polygraphy's (`axial_deploy.checks.comparison`). Inputs: Polygraphy's seeded data
loader, uniform in [-2, 2]; a symbolic first dimension is the batch (--batch-size); any other
symbolic dimension is refused, since the tool cannot guess sizes that make sense for the model
(re-export it with a fixed input size).

Pass rule, per output: max |B - A| <= max(atol + rtol * max |A|, F * noise floor). The plain
tolerance scales with the output's largest magnitude, not with each element, so values near
zero do not blow up a relative error (max rel in the table is max |B - A| / max |A|); it is
also the floor's lower bound, so a broken rewrite of a well-conditioned model always fails.
The noise floor (`axial_deploy.checks.noise_floor`) is A's own fp32 spread: its change under a 1-ulp
input change and its distance to A run in float64. It is measured when an output exceeds the
plain tolerance (noise_floor="auto"), always, or never ("off"); the report says which judgement
passed or failed each output, and when B is closer to float64 than A is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axial_deploy.checks.comparison import INPUT_RANGE, errors, onnxrt_runner, run, seeded_feed
from axial_deploy.errors import AxialDeployError
from axial_deploy.graph import SymbolicDimensionError, static_shape
from axial_deploy.numerics import OutputError, match_outputs

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6
DEFAULT_NOISE_FACTOR = 4.0  # two correct fp32 results differ by up to ~2 floors; 2x margin
NOISE_MODES = ("auto", "always", "off")

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
    noise_floor: float | None = None  # A's own fp32 spread (None: not measured)
    judgement: str = ""  # "within tolerance", "within noise floor x F", "beyond ..."
    a_vs_float64: float | None = None  # max |A - A in float64|
    b_vs_float64: float | None = None  # max |B - A in float64|


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
    noise_factor: float = DEFAULT_NOISE_FACTOR
    noise_floor: str = "auto"  # the mode asked for
    float64_by: str = ""  # how A ran in float64 ("" when it did not)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    @property
    def floor_measured(self) -> bool:
        return any(row.noise_floor is not None for row in self.rows)


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
    from axial_deploy.op.ort import create_session

    try:
        return create_session(path)
    except (ImportError, ValueError) as error:
        raise VerifyError(f"model {label} ({path}): {error}") from error
    except Exception as error:  # ORT's own exceptions derive from Exception only
        raise VerifyError(f"ONNX Runtime cannot load model {label} ({path}): {error}") from error


def _input_specs(
    session, label: str, batch: int, sizes: tuple[int, ...] | None = None
) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (static shape, ORT type) of a session's inputs: the batch axis is `batch`, other
    symbolic axes come from `sizes` (an input shape; None: they are refused)."""
    specs = {}
    for meta in session.get_inputs():
        if sizes is not None and len(sizes) != len(meta.shape):
            raise VerifyError(
                f"model {label}: input {meta.name!r} has rank {len(meta.shape)}, the input "
                f"shape given has {len(sizes)} dimensions"
            )
        try:
            shape = static_shape(meta.shape, batch, sizes)
        except SymbolicDimensionError as error:
            raise VerifyError(
                f"model {label}: input {meta.name!r} has symbolic dimension {error.dim!r} at "
                f"axis {error.axis}: pass the size to check at (--input-shape NxCxHxW), or "
                "export the model at a fixed input size"
            ) from None
        if sizes is not None and tuple(sizes) != shape:
            raise VerifyError(
                f"model {label}: input {meta.name!r} is {list(meta.shape)}, which "
                f"{'x'.join(map(str, sizes))} does not fit: give a shape within its fixed axes"
            )
        if meta.type not in _FLOAT_TYPES:
            raise VerifyError(
                f"model {label}: input {meta.name!r} is {meta.type}; verify feeds random floats "
                "and supports float, float16 and double inputs only"
            )
        specs[meta.name] = (shape, meta.type)
    return specs


def _plain_tolerance(rtol: float, atol: float):
    return lambda _name, max_ref: atol + rtol * max_ref


def _row(name, name_b, a, b, error: OutputError | None, passed: bool, **floor) -> OutputComparison:
    if error is None:
        note = f"shape differs: A {list(a.shape)}, B {list(b.shape)}"
        nan = float("nan")
        return OutputComparison(name, name_b, a.shape, nan, nan, nan, nan, False, note, **floor)
    note = "NaN or Inf in the outputs" if np.isinf(error.max_abs) else ""
    return OutputComparison(
        name, name_b, a.shape, error.max_abs, error.max_rel, error.mean_abs, error.max_ref,
        passed, note, **floor,
    )  # fmt: skip


def compare_output(
    name: str, name_b: str, a: np.ndarray, b: np.ndarray, rtol: float, atol: float
) -> OutputComparison:
    """Errors of B against reference A, and whether max |B - A| <= atol + rtol * max |A|."""
    error, passed = errors({name: a}, {name_b: b}, [(name, name_b)], _plain_tolerance(rtol, atol))[
        name
    ]
    return _row(name, name_b, a, b, error, passed)


def verify_models(
    a: str | Path,
    b: str | Path,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    batch: int = 1,
    noise_floor: str = "auto",
    noise_factor: float = DEFAULT_NOISE_FACTOR,
    input_shape: tuple[int, ...] | None = None,
) -> VerifyReport:
    """Run ONNX models `a` (reference) and `b` on the same seeded inputs and compare outputs.

    Outputs match by name, or by position when the names differ but the counts agree. Raises
    VerifyError when the models cannot be compared; a comparison that fails is a report whose
    `passed` is False. `noise_floor` ("auto", "always", "off") and `noise_factor`: see the
    module doc. `input_shape` sets the symbolic axes of graphs with dynamic sizes (and the
    batch); a static axis it contradicts is refused.
    """
    if batch < 1:
        raise VerifyError(f"batch must be >= 1, got {batch}")
    if noise_floor not in NOISE_MODES:
        raise VerifyError(
            f"noise_floor must be one of {', '.join(NOISE_MODES)}, got {noise_floor!r}"
        )
    if not noise_factor >= 1:
        raise VerifyError(f"the noise factor must be >= 1, got {noise_factor}")
    path_a, path_b = _load_checked(a, "A"), _load_checked(b, "B")
    session_a, session_b = _session(path_a, "A"), _session(path_b, "B")
    if input_shape is not None:
        if batch not in (1, input_shape[0]):
            raise VerifyError(
                f"batch {batch} contradicts the input shape's batch {input_shape[0]}: give one"
            )
        batch = input_shape[0]
    specs_a = _input_specs(session_a, "A", batch, input_shape)
    specs_b = _input_specs(session_b, "B", batch, input_shape)
    if specs_a != specs_b:
        raise VerifyError(
            "the models' inputs differ (name: shape, type):\n"
            f"  A: {_describe(specs_a)}\n  B: {_describe(specs_b)}"
        )
    names_a = [meta.name for meta in session_a.get_outputs()]
    names_b = [meta.name for meta in session_b.get_outputs()]
    pairs, matched_by = match_outputs(names_a, names_b, ("A", "B"))

    feed = seeded_feed({n: (_FLOAT_TYPES[t], s) for n, (s, t) in specs_a.items()}, seed)
    outputs_a = _run(session_a, feed, "A")
    outputs_b = _run(session_b, feed, "B")
    report = VerifyReport(
        model_a=str(path_a),
        model_b=str(path_b),
        rows=[],
        inputs={name: shape for name, (shape, _) in specs_a.items()},
        rtol=rtol,
        atol=atol,
        seed=seed,
        matched_by=matched_by,
        noise_factor=noise_factor,
        noise_floor=noise_floor,
    )
    if matched_by == "position":
        report.notes.append("output names differ: outputs matched by position")
    plain = errors(outputs_a, outputs_b, pairs, _plain_tolerance(rtol, atol))
    report.rows = [
        _row(name, name_b, outputs_a[name], outputs_b[name_b], *plain[name])
        for name, name_b in pairs
    ]
    if noise_floor == "always" or (noise_floor == "auto" and not report.passed):
        _judge_with_floor(report, path_a, session_a, feed, pairs, outputs_a, outputs_b)
    return report


def _judge_with_floor(report, path_a, session_a, feed, pairs, outputs_a, outputs_b) -> None:
    """Measure A's noise floor and judge every output against max(plain, F * floor)."""
    from axial_deploy.checks import noise_floor

    names = [name for name, _ in pairs]
    floor = noise_floor.measure(path_a, session_a, names, feed, outputs_a)
    report.notes.extend(floor.notes)
    report.float64_by = floor.float64_by
    floors = {name: floor.floor(name, outputs_a[name]) for name in names}
    plain = _plain_tolerance(report.rtol, report.atol)
    factor = report.noise_factor

    def tolerance(name: str, max_ref: float) -> float:
        return max(plain(name, max_ref), factor * floors[name])

    judged = errors(outputs_a, outputs_b, pairs, tolerance)
    rows = []
    for name, name_b in pairs:
        error, passed = judged[name]
        within_plain = error is not None and error.max_abs <= plain(name, error.max_ref)
        judgement = "within tolerance" if within_plain else f"noise floor x {factor:g}"
        if not within_plain:
            judgement = ("within " if passed else "beyond ") + judgement
        extra = {"noise_floor": floors[name], "judgement": judgement}
        if floor.float64 is not None:
            wide = floor.float64[name]
            extra["a_vs_float64"] = noise_floor.distance(outputs_a[name], wide)
            extra["b_vs_float64"] = noise_floor.distance(outputs_b[name_b], wide)
        rows.append(_row(name, name_b, outputs_a[name], outputs_b[name_b], error, passed, **extra))
    report.rows = rows


def _run(session, feed: dict[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    """One model on `feed` through Polygraphy's ONNX Runtime runner."""
    try:
        [outputs] = run([onnxrt_runner(session, f"model {label}")], [feed])[f"model {label}"]
    except AxialDeployError:
        raise
    except Exception as error:  # ORT's own exceptions derive from Exception only
        raise VerifyError(f"ONNX Runtime failed to run model {label}: {error}") from error
    return outputs


def _describe(specs: dict[str, tuple[tuple[int, ...], str]]) -> str:
    return ", ".join(f"{name}: {list(shape)} {kind}" for name, (shape, kind) in specs.items())


def format_report(report: VerifyReport) -> str:
    """The report as the table `axial-deploy verify` prints."""
    inputs = ", ".join(
        f"{name} {'x'.join(map(str, shape))}" for name, shape in report.inputs.items()
    )
    low, high = INPUT_RANGE
    lines = [
        f"A (reference): {report.model_a}",
        f"B:             {report.model_b}",
        f"inputs (uniform [{low:g}, {high:g}], seed {report.seed}): {inputs}",
        *report.notes,
        f"pass rule: max abs <= atol + rtol * max |A| (atol {report.atol:.0e}, rtol "
        f"{report.rtol:.0e}), or <= {report.noise_factor:g} x A's fp32 noise floor if larger",
        _floor_line(report),
    ]
    width = max([len("output"), *(len(_row_name(row)) for row in report.rows)])
    lines.append(
        f"{'output':<{width}}  {'max abs':>10} {'max rel':>10} {'mean abs':>10} "
        f"{'noise floor':>11}  result"
    )
    for row in report.rows:
        result = "PASS" if row.passed else "FAIL"
        details = [text for text in (row.judgement, row.note) if text]
        if details:
            result += f" ({'; '.join(details)})"
        floor = "-" if row.noise_floor is None else f"{row.noise_floor:.2e}"
        lines.append(
            f"{_row_name(row):<{width}}  {row.max_abs:>10.2e} {row.max_rel:>10.2e} "
            f"{row.mean_abs:>10.2e} {floor:>11}  {result}"
        )
    lines.extend(_float64_lines(report))
    failed = sum(not row.passed for row in report.rows)
    if failed:
        lines.append(f"FAILED: {failed} of {len(report.rows)} outputs exceed the tolerance")
    else:
        lines.append(f"OK: all {len(report.rows)} outputs within the tolerance")
    return "\n".join(lines)


def _floor_line(report: VerifyReport) -> str:
    if report.floor_measured:
        return "noise floor: A's fp32 spread, max of |A(x + 1 ulp) - A(x)| and |A - A in float64|"
    if report.noise_floor == "off":
        return "noise floor: not measured (--noise-floor off)"
    return "noise floor: not measured (all outputs within the plain tolerance)"


def _float64_lines(report: VerifyReport) -> list[str]:
    """max |A - A64| against max |B - A64| per output, and which is closer to float64."""
    rows = [row for row in report.rows if row.a_vs_float64 is not None]
    if not rows:
        return []
    lines = [f"against A in float64 ({report.float64_by}): max |A - A64|, max |B - A64|"]
    for row in rows:
        a64, b64 = row.a_vs_float64, row.b_vs_float64
        verdict = "B is closer to float64 than A" if b64 < a64 else "A is closer to float64"
        verdict = "equally close" if b64 == a64 else verdict
        lines.append(f"  {_row_name(row)}: {a64:.2e}, {b64:.2e}  {verdict}")
    return lines


def _row_name(row: OutputComparison) -> str:
    return row.name if row.name == row.name_b else f"{row.name} / {row.name_b}"
