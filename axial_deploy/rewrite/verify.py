"""Verify one layer: the original layer (ONNX Runtime) and the extracted Conv + operator
(`axial_attention_op`) must agree on a random input, else the layer is left intact."""

from __future__ import annotations

import numpy as np
import onnx

from axial_deploy.numerics import max_relative_error

from .layout import LINES_TO_NCHW
from .pieces import PieceExtractor, SubModel
from .probe import Extracted
from .records import Refusal

VERIFY_RTOL = 1e-4  # fp32: max abs error / max |reference| of the layer's output
# Whole graphs (symbolic sizes, checked at several): errors compound over the layers in fp32.
GRAPH_RTOL = 1e-3


def verify_layer(
    extractor: PieceExtractor,
    x_name: str,
    x_shape: tuple[int, ...],
    y_name: str,
    layer: Extracted,
    seed: int = 0,
) -> float:
    """Max relative error of Conv + AxialAttention against the original layer on a random X."""
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)
    expected = SubModel(extractor, [x_name], [y_name])(**{x_name: x})[0].astype(np.float64)
    got = operator_output(x, layer)
    if got.shape != expected.shape:
        return float("inf")
    return max_relative_error(expected, got)


def operator_output(x_lines: np.ndarray, layer: Extracted) -> np.ndarray:
    """What the replacement computes on lines [N, other, C, L]: the lines viewed as NCHW, the
    1x1 Conv (float64) and `axial_attention_op` (the reference, float32), viewed back as lines. In
    the torch-free install, the numpy form of the same operator (`op_reference`)."""
    try:
        import torch
    except ModuleNotFoundError:
        return _operator_output_numpy(x_lines, layer)

    from axial_deploy.models.axial_attention import axial_attention_op

    with torch.no_grad():
        x = torch.from_numpy(x_lines).double().permute(*LINES_TO_NCHW)
        weight = torch.from_numpy(layer.weight)[:, :, None, None]
        qkv = torch.nn.functional.conv2d(x, weight, torch.from_numpy(layer.bias))
        # The operator in float32, as the contract computes it (several times faster than
        # float64 here; its rounding, ~1e-6, stays far below VERIFY_RTOL).
        qkv = qkv.float()
        tables = (torch.from_numpy(table).float() for table in layer.tables())
        y = axial_attention_op(qkv, *tables, layer.attributes)
        return y.double().permute(*LINES_TO_NCHW).numpy()


def check_reproduces(error: float) -> None:
    """Refusal unless the extracted operator reproduces the layer within VERIFY_RTOL."""
    if not error < VERIFY_RTOL:
        raise Refusal(
            f"extracted operator does not reproduce the layer (max rel err {error:.2e} "
            f">= {VERIFY_RTOL:.0e}): not an axial-attention layer this rewriter understands"
        )


def _operator_output_numpy(x_lines: np.ndarray, layer: Extracted) -> np.ndarray:
    from axial_deploy.op.reference import axial_attention_numpy

    x = x_lines.astype(np.float64).transpose(LINES_TO_NCHW)
    qkv = np.einsum("oc,nchw->nohw", np.asarray(layer.weight, np.float64), x)
    qkv += np.asarray(layer.bias, np.float64)[:, None, None]
    tables = (np.asarray(table, np.float64) for table in layer.tables())
    y = axial_attention_numpy(qkv, *tables, layer.attributes)
    return y.transpose(LINES_TO_NCHW)


def check_graph(
    original: onnx.ModelProto, rewritten: onnx.ModelProto, shape: tuple[int, ...], seed: int = 0
) -> dict:
    """The rewritten graph against the original (both in ONNX Runtime, AxialAttention by the
    reference op) on one random input of `shape`: max rel err over the outputs."""
    from axial_deploy.op.ort import create_session

    sessions = [create_session(model) for model in (original, rewritten)]
    name = sessions[0].get_inputs()[0].name
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    expected, got = (session.run(None, {name: x}) for session in sessions)
    error = 0.0
    for a, b in zip(expected, got, strict=True):
        if a.shape != b.shape:
            error = float("inf")
            break
        error = max(error, max_relative_error(a, b))
    text = "x".join(map(str, shape))
    return {"shape": text, "max_rel_err": error, "rtol": GRAPH_RTOL, "passed": error < GRAPH_RTOL}
