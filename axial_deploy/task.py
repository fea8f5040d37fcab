"""Which task a graph or engine serves, from its output names: one rule for every command."""

from __future__ import annotations

from collections.abc import Iterable

# Axial-DeepLab's heads (Panoptic-DeepLab): semantic scores, instance centers and offsets.
PANOPTIC_OUTPUTS = frozenset({"semantic", "center", "offset"})


def task_from_outputs(names: Iterable[str]) -> str:
    """'panoptic' when any Panoptic-DeepLab head is among the outputs, else 'classification'."""
    return "panoptic" if PANOPTIC_OUTPUTS & set(names) else "classification"
