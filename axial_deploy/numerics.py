"""The error record that export, verify, quantize's accuracy report and the rewrite's per-layer
check all report, the one relative-error rule (`relative_error`, `max_relative_error`), and how
two models' outputs are paired. The comparison itself runs on Polygraphy
(`axial_deploy.checks.comparison`, which imports this module, never the other way).

Conventions: `max_rel` is max |actual - reference| / max |reference| (the scale of the whole
output, so near-zero elements do not blow it up). NaN or Inf on either side is never parity:
such an element's error is infinite, even where both sides agree (a model that computes NaN
is broken, however reproducibly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from axial_deploy.errors import AxialDeployError


class OutputMatchError(AxialDeployError, ValueError):
    """Two models' outputs cannot be paired."""


@dataclass(frozen=True)
class OutputError:
    name: str
    max_abs: float  # max |actual - reference|
    max_rel: float  # max_abs / max |reference|
    mean_abs: float
    max_ref: float = 0.0  # max finite |reference|, the scale of max_rel
    elements: int = 0

    def merged(self, other: OutputError) -> OutputError:
        """The error over both records' elements (e.g. over several batches)."""
        elements = self.elements + other.elements
        mean = (self.mean_abs * self.elements + other.mean_abs * other.elements) / max(elements, 1)
        max_abs, max_ref = max(self.max_abs, other.max_abs), max(self.max_ref, other.max_ref)
        relative = relative_error(max_abs, max_ref)
        return OutputError(self.name, max_abs, relative, mean, max_ref, elements)


def relative_error(max_abs: float, max_ref: float) -> float:
    """max_abs / max_ref; 0 when both are 0, infinite when only the scale is."""
    if max_ref > 0:
        return max_abs / max_ref
    return 0.0 if max_abs == 0 else float("inf")


def max_relative_error(reference: np.ndarray, actual: np.ndarray) -> float:
    """`relative_error` of two same-shape arrays, in float64: max |actual - reference| over
    max |reference|. NaN or Inf on either side is never parity: infinite."""
    reference = np.asarray(reference, np.float64)
    actual = np.asarray(actual, np.float64)
    if reference.size == 0:
        return 0.0
    if not (np.isfinite(reference).all() and np.isfinite(actual).all()):
        return float("inf")
    max_abs = float(np.abs(actual - reference).max())
    return relative_error(max_abs, float(np.abs(reference).max()))


def match_outputs(
    reference: list[str],
    candidate: list[str],
    labels: tuple[str, str] = ("the reference", "the candidate"),
) -> tuple[list[tuple[str, str]], str]:
    """Pairs (reference name, candidate name): by name when the name sets agree, else by
    position when the counts agree; and how they were matched ("name" or "position")."""
    if sorted(reference) == sorted(candidate):
        return [(name, name) for name in reference], "name"
    if len(reference) == len(candidate):
        return list(zip(reference, candidate, strict=True)), "position"
    raise OutputMatchError(
        f"outputs cannot be matched: {labels[0]} has {reference}, {labels[1]} has {candidate} "
        "(neither the same names nor the same count)"
    )
