"""Loading checkpoints, including those of the reference implementation's train.py."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from axial_deploy.errors import AxialDeployError

# Keys under which training scripts nest the weights: the reference's train.py writes
# {'net': state_dict, 'optim': ..., 'epoch': ...}.
_NESTED_KEYS = ("net", "state_dict", "model")
# Prefixes added by wrappers: DataParallel / DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(AxialDeployError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def extract_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint, with wrapper prefixes removed."""
    state = checkpoint
    for key in _NESTED_KEYS:
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    clean = {}
    for name, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        clean[name] = value
    return clean


def _non_finite(value) -> bool:
    return torch.is_tensor(value) and value.is_floating_point() and not value.isfinite().all()


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load weights from `path` into `model` and return it.

    Accepts a plain state_dict or a training checkpoint ({'net': ...} from the reference's train.py,
    with or without DataParallel's 'module.' prefix). Reads with weights_only=True: never unpickles
    code. Reports missing, unexpected and wrong-shape keys; with strict=True any of them fails,
    with strict=False the matching tensors are loaded and the rest is reported.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unreadable files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {error}. Expected a file written by torch.save "
            "holding a state_dict (tensors only)."
        ) from error
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state_dict"
        )
    state = extract_state_dict(checkpoint)
    broken = [name for name, value in state.items() if _non_finite(value)]
    if broken:
        raise CheckpointError(
            f"checkpoint {path} holds NaN or infinite values in {len(broken)} tensor(s) "
            f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}): the weights are "
            "broken (a diverged training run?); use another checkpoint"
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in set(state) & set(expected)
        if state[name].shape != expected[name].shape
    )
    problems = []
    for title, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", wrong_shape),
    ):
        if items:
            shown = "\n    ".join(items[:20])
            more = f"\n    ... and {len(items) - 20} more" if len(items) > 20 else ""
            problems.append(f"  {len(items)} {title} keys:\n    {shown}{more}")
    if problems:
        report = f"checkpoint {path} does not match {type(model).__name__}:\n" + "\n".join(problems)
        if strict:
            raise CheckpointError(
                report + "\nPick the matching model (and num_classes), or pass strict=False "
                "to load only the matching tensors."
            )
        print(report + "\nLoading the matching tensors only (strict=False).")
    loadable = {
        name: value
        for name, value in state.items()
        if name in expected and value.shape == expected[name].shape
    }
    model.load_state_dict(loadable, strict=False)
    return model
