"""Gated positional terms (MedT) and a numerically chaotic model: rewritten, checked against the
PyTorch module in float64, and `verify` telling fp32 noise from a broken rewrite."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import onnx
import pytest
import torch

from axial_deploy.checks import noise_floor
from axial_deploy.checks.verify import format_report, verify_models
from axial_deploy.cli import main
from axial_deploy.models.axial_attention import AxialAttention
from axial_deploy.op.ort import create_session
from axial_deploy.rewrite import rewrite_file

from .user_layers import GatedAxialAttention, Stack, sharpen_attention
from helpers import randomize_state

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_extensions") is None,
    reason="needs onnxruntime-extensions (pip install onnxruntime-extensions)",
)

CHAOTIC_SHAPE = (1, 8, 8, 8)
CHAOTIC_SCALE = 64.0  # similarity BatchNorm scales x 64: fp32 and float64 differ by ~1e-3


def export(model: torch.nn.Module, shape: tuple[int, ...], path, fold: bool = True) -> str:
    """TorchScript export at opset 17 of the model as it is (weights already set); `fold`:
    constant folding (which rounds folded constants to float32)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes taken as constants
        torch.onnx.export(
            model.eval(), (x,), str(path), dynamo=False, opset_version=17,
            do_constant_folding=fold,
        )  # fmt: skip
    return str(path)


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = create_session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def float64_module(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.double()(torch.from_numpy(x).double()).numpy()


def test_gated_positional_terms_are_folded_exactly(tmp_path):
    """MedT-style gates on qr, kr, sv and sve, height then width, non-square: both layers are
    rewritten and the graph equals the module run in float64."""
    model = Stack(
        GatedAxialAttention(8, axis=2, kernel_size=6), GatedAxialAttention(8, axis=3, kernel_size=5)
    )
    randomize_state(model, 0).eval()
    source = export(model, (1, 8, 6, 5), tmp_path / "gated.onnx")
    target = tmp_path / "gated.axial.onnx"
    report = rewrite_file(source, target)
    assert len(report.rewritten) == 2 and not report.left, report.summary()
    assert [n.op_type for n in onnx.load(target).graph.node].count("AxialAttention") == 2
    x = np.random.default_rng(1).uniform(-2, 2, (1, 8, 6, 5)).astype(np.float32)
    expected = float64_module(model, x)
    got = run_onnx(target, x)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5
    # A broken fold of a well-conditioned model fails verify: its noise floor is far below
    # the plain tolerance, which stays the lower bound.
    broken = tmp_path / "gated.broken.onnx"
    _shift_table(target, broken, "rel_v", 1e-3)
    check = verify_models(source, broken, batch=1)
    [row] = check.rows
    assert not check.passed and row.judgement == "beyond noise floor x 4"
    assert row.noise_floor < 1e-5 < 1e-3 < row.max_abs


def _shift_table(source, target, table: str, amount: float) -> None:
    """Copy the rewritten graph with the first AxialAttention node's `table` off by `amount`."""
    model = onnx.load(source)
    node = next(n for n in model.graph.node if n.op_type == "AxialAttention")
    attribute = next(a for a in node.attribute if a.name == table)
    values = [value + amount for value in attribute.floats]
    del attribute.floats[:]
    attribute.floats.extend(values)
    onnx.save(model, target)


def chaotic_model() -> Stack:
    """Six axial-attention layers (height, width, ...) with sharp similarity BatchNorms."""
    _, c, h, w = CHAOTIC_SHAPE
    layers = [
        AxialAttention(c, c, groups=2, kernel_size=w if i % 2 else h, width=bool(i % 2))
        for i in range(6)
    ]
    return sharpen_attention(randomize_state(Stack(*layers), 0).eval(), CHAOTIC_SCALE)


def test_verify_tells_fp32_noise_from_a_broken_rewrite(tmp_path, capsys):
    model = chaotic_model()
    source = export(model, CHAOTIC_SHAPE, tmp_path / "chaos.onnx")
    target = tmp_path / "chaos.axial.onnx"
    assert len(rewrite_file(source, target).rewritten) == 6

    # The plain 1e-4 alone fails the correct rewrite: the model is chaotic in fp32.
    plain = verify_models(source, target, noise_floor="off")
    assert not plain.passed and plain.rows[0].max_rel > 1e-4
    # Against the measured noise floor it passes, and the report says why.
    report = verify_models(source, target)
    [row] = report.rows
    assert report.passed and row.judgement == "within noise floor x 4", format_report(report)
    assert row.max_abs > 1e-4 * row.max_ref and row.max_abs <= 4 * row.noise_floor
    # The rewritten graph is closer to float64 than the fp32 export is (as in issue 18).
    assert row.b_vs_float64 < row.a_vs_float64 <= row.noise_floor
    assert main(["verify", source, str(target)]) == 0
    out = capsys.readouterr().out
    assert "PASS (within noise floor x 4)" in out and "B is closer to float64 than A" in out

    # A table off by 0.01 is far beyond the floor, chaotic model or not.
    broken = tmp_path / "chaos.broken.onnx"
    _shift_table(target, broken, "rel_v", 1e-2)
    failed = verify_models(source, broken)
    assert not failed.passed and failed.rows[0].judgement == "beyond noise floor x 4"
    assert failed.rows[0].max_abs > 100 * failed.rows[0].noise_floor
    assert main(["verify", source, str(broken)]) == 1
    assert "FAIL (beyond noise floor x 4)" in capsys.readouterr().out


def test_float64_reference_is_the_module_in_float64(tmp_path):
    """The noise floor's float64 run of the exported graph (ONNX's reference evaluator, since
    ONNX Runtime has no float64 Conv) is the PyTorch module in float64; fp32 is not. (Without
    constant folding: folded constants are rounded to float32, which the chaos amplifies.)"""
    model = chaotic_model()
    source = export(model, CHAOTIC_SHAPE, tmp_path / "chaos.onnx", fold=False)
    session = create_session(source)
    name = session.get_inputs()[0].name
    output = session.get_outputs()[0].name
    x = np.random.default_rng(2).uniform(-2, 2, CHAOTIC_SHAPE).astype(np.float32)
    fp32 = {output: session.run([output], {name: x})[0]}
    floor = noise_floor.measure(source, session, [output], {name: x}, fp32)
    assert floor.float64_by == "onnx.reference"
    expected = float64_module(model, x)
    scale = np.abs(expected).max()
    # Even float64 rounding is amplified by the chaos (~1e-9 here); fp32 is 1e5 times worse.
    assert np.abs(floor.float64[output] - expected).max() / scale < 1e-7
    assert np.abs(fp32[output] - expected).max() / scale > 1e-4  # chaotic in fp32
    assert floor.ulp[output] > 0
