"""The one rule that says which task a model serves: "classification" or "panoptic".

A zoo model declares its task beside its factory (`models.registry`); an ONNX graph or an
engine carries no such record, so its task is read from its output names: any of the
Panoptic-DeepLab heads (`semantic`, `center`, `offset`, the names Axial-DeepLab's dict output
gives the exported graph) makes it panoptic, anything else is a classifier. Every stage that
needs a task (quantize's calibration and accuracy checks, deploy, the CLI's `run`) asks here,
so the rule cannot drift between them. Torch-free, and onnx is imported only for a graph.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from axial_deploy.errors import AxialDeployError

if TYPE_CHECKING:
    import onnx

TASKS = ("classification", "panoptic")
PANOPTIC_OUTPUTS = ("semantic", "center", "offset")


class TaskError(AxialDeployError, ValueError):
    """The task of an .onnx file cannot be read (missing or unreadable file)."""


def task_of_outputs(names: Iterable[str]) -> str:
    """'panoptic' when the outputs include a Panoptic-DeepLab head, else 'classification'."""
    return "panoptic" if set(PANOPTIC_OUTPUTS) & set(names) else "classification"


def task_of(target: str | os.PathLike | onnx.ModelProto) -> str:
    """The task of a zoo model name, an ONNX graph, or an .onnx file (its graph only is read,
    external weights stay on disk)."""
    if isinstance(target, (str, os.PathLike)):
        from axial_deploy.models import model_task

        if Path(target).suffix != ".onnx":
            return model_task(str(target))  # unknown names: UnknownModelError lists the zoo
        from axial_deploy.artifacts import load_onnx

        target = load_onnx(target, TaskError, load_external_data=False)
    return task_of_outputs(output.name for output in target.graph.output)
