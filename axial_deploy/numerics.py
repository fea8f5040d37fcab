"""Output comparison, written once: the error record that export, verify, quantize's accuracy
report and the rewrite's per-layer check all report.

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
        return OutputError(self.name, max_abs, _relative(max_abs, max_ref), mean, max_ref, elements)


def _relative(max_abs: float, max_ref: float) -> float:
    if max_ref > 0:
        return max_abs / max_ref
    return 0.0 if max_abs == 0 else float("inf")


def output_error(name: str, reference: np.ndarray, actual: np.ndarray) -> OutputError:
    """Errors of `actual` against `reference` (same shape; the caller checks shapes)."""
    ref, act = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    finite = np.isfinite(ref) & np.isfinite(act)
    with np.errstate(invalid="ignore"):
        diff = np.where(finite, np.abs(act - ref), np.inf)
    scale = np.abs(ref[np.isfinite(ref)])
    max_ref = float(scale.max()) if scale.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    mean_abs = float(diff.mean()) if diff.size else 0.0
    return OutputError(name, max_abs, _relative(max_abs, max_ref), mean_abs, max_ref, diff.size)


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
