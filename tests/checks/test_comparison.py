"""checks.comparison: Polygraphy's runners, data loader and comparator, used quietly."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from axial_deploy.checks.comparison import (
    INPUT_RANGE,
    ComparisonError,
    errors,
    onnxrt_runner,
    run,
    seeded_feed,
    tensorrt_runner,
    torch_runner,
)
from axial_deploy.export import check_parity
from axial_deploy.op.ort import create_session


class TwoHeads(nn.Module):
    """A dict of two outputs, one of them a single tensor per batch row."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = torch.relu(self.conv(x))
        return {"features": y, "logits": y.mean(dim=(2, 3))}


def export(model: nn.Module, shape, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.randn(shape),), str(path), input_names=["images"],
            output_names=["features", "logits"], dynamo=False, opset_version=17,
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return str(path)


def test_seeded_inputs_are_reproducible_and_in_range():
    meta = {"x": (np.float32, (2, 3, 4, 5))}
    first, again, other = seeded_feed(meta, 7), seeded_feed(meta, 7), seeded_feed(meta, 8)
    assert first["x"].dtype == np.float32 and first["x"].shape == (2, 3, 4, 5)
    assert np.array_equal(first["x"], again["x"]) and not np.array_equal(first["x"], other["x"])
    low, high = INPUT_RANGE
    assert low <= first["x"].min() < -1 and 1 < first["x"].max() <= high
    assert seeded_feed({"x": (np.float16, (3,))}, 0)["x"].dtype == np.float16


def test_pytorch_and_onnxruntime_runners_on_the_same_inputs(tmp_path, capfd):
    torch.manual_seed(0)
    model = TwoHeads()
    path = export(model, (1, 3, 6, 5), tmp_path / "two.onnx")
    checks = list(check_parity(model, path, [(1, 3, 6, 5), (2, 3, 6, 5)], seed=3))
    assert [shape for shape, _ in checks] == [(1, 3, 6, 5), (2, 3, 6, 5)]
    for _, found in checks:
        assert [e.name for e in found] == ["features", "logits"]
        assert all(0 <= e.max_rel < 1e-5 and e.max_ref > 0 for e in found)
    # Polygraphy's log (runner activation, comparisons, "values are 0" warnings) stays quiet.
    assert capfd.readouterr() == ("", "")

    # Both runners see the very same feed; a perturbed model is caught by the comparator.
    feed = seeded_feed({"images": (np.float32, (1, 3, 6, 5))}, 0)
    runners = [
        torch_runner(model, {"images": (np.float32, (1, 3, 6, 5))}, ["features", "logits"]),
        onnxrt_runner(create_session(path), "onnxrt"),
    ]
    outputs = run(runners, [feed])
    with torch.no_grad():
        model.conv.bias.add_(1e-3)
    changed = run(runners[:1], [feed])["pytorch"][0]
    same = errors(outputs["pytorch"][0], outputs["onnxrt"][0], tolerance=lambda _, m: 1e-6 * m)
    moved = errors(outputs["onnxrt"][0], changed, tolerance=lambda _, m: 1e-6 * m)
    assert all(passed for _, passed in same.values())
    assert not any(passed for _, passed in moved.values())
    assert moved["features"][0].max_abs == pytest.approx(1e-3, rel=0.01)


def test_shapes_nan_and_tolerance():
    a = {"y": np.array([1.0, -2.0], np.float32), "z": np.zeros(3, np.float32)}
    b = {"y": np.array([1.0, -2.0 + 1e-4], np.float32), "w": np.zeros(4, np.float32)}
    found = errors(a, b, [("y", "y"), ("z", "w")], tolerance=lambda _, m: 1e-4 * m)
    error, passed = found["y"]
    assert passed and error.max_ref == 2.0 and error.max_rel == pytest.approx(error.max_abs / 2)
    assert found["z"] == (None, False)  # shapes differ: never parity
    nan = {"y": np.array([np.nan, 1.0])}
    error, passed = errors(nan, nan)["y"]
    assert not passed and error.max_abs == error.mean_abs == float("inf")


def test_polygraphy_refusals_are_one_line_errors(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    runner = onnxrt_runner(create_session(path), "relu")
    with pytest.raises(ComparisonError, match=r"^Polygraphy: Input tensor: x") as error:
        run([runner], [{"x": np.zeros((2, 5), np.float32)}])
    assert "\n" not in str(error.value)


def test_debug_shows_polygraphy_log(monkeypatch, capfd):
    monkeypatch.setenv("AXIAL_DEPLOY_DEBUG", "1")
    errors({"y": np.zeros(2)}, {"y": np.zeros(2)})
    assert "Comparing Output: 'y'" in capfd.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT present")
def test_tensorrt_runner_says_tensorrt_is_missing(tmp_path):
    with pytest.raises(ComparisonError, match="needs TensorRT"):
        tensorrt_runner(str(tmp_path / "model.engine"))


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_against_onnxruntime(tmp_path):
    """Where TensorRT and a GPU exist: an engine of a small conv net, Polygraphy's TensorRT
    runner against its ONNX Runtime runner on the same seeded feed (5e-3: TensorRT may use
    TF32 for fp32 convolutions)."""
    pytest.importorskip("tensorrt", reason="needs TensorRT (not installable here)")
    from engine_helpers import conv_net

    from axial_deploy.engine.build import BuildOptions, build_engine

    onnx_path = conv_net(tmp_path / "net.onnx", batch=1)
    engine = tmp_path / "net.engine"
    build_engine(onnx_path, engine, BuildOptions("tensorrt"))
    feed = seeded_feed({"input": (np.float32, (1, 3, 16, 16))}, 0)
    outputs = run(
        [onnxrt_runner(create_session(onnx_path), "onnxrt"), tensorrt_runner(str(engine))], [feed]
    )
    found = errors(outputs["onnxrt"][0], outputs["tensorrt"][0], tolerance=lambda _, m: 5e-3 * m)
    assert all(passed for _, passed in found.values()), found


def test_non_contiguous_outputs_compare():
    """PyTorch outputs are often permuted views; Polygraphy's comparator needs contiguous data."""
    a = np.arange(24.0).reshape(2, 3, 4).transpose(2, 0, 1)
    b = a.copy()
    b[0, 0, 0] += 0.5
    error, passed = errors({"y": a}, {"y": b})["y"]
    assert not passed and error.max_abs == 0.5 and error.max_ref == 23.0
