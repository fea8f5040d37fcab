"""Both ONNX exporters (TorchScript-based and dynamo) on the zoo's two model families: parity in
ONNX Runtime, dynamic batch, dynamic height / width (or a clear refusal), the CLI path.

Models are calibrated (`helpers.calibrate_batchnorm`) so that every attention layer contributes
to the outputs. Residual gains of 0.1 keep the deeper nets well-conditioned in float32: at 0.3,
axial_deeplab_s differs from its own float64 run by 7e-5 and axial50s's ONNX Runtime error
reaches 1.2e-4 with either exporter, too close to the 1e-4 bar for parity to mean anything.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from axial_deploy.artifacts import atomic_output
from axial_deploy.cli import main
from axial_deploy.export import (
    ExportError,
    compare_with_onnxruntime,
    export_onnx,
    second_shape,
)
from axial_deploy.models import create_model
from axial_deploy.models.axial_attention import AxialAttention

from helpers import calibrate_batchnorm, randomize_batchnorm

CLASSIFIER_SHAPE = (1, 3, 64, 64)
PANOPTIC_SHAPE = (1, 3, 65, 97)  # odd sizes: centered pooling, 17 x 25 lines at stride 4
RTOL = 1e-4


def calibrated(name: str, shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    return calibrate_batchnorm(model, torch.randn(2, *shape[1:]), residual_gain=0.1)


def input_dims(path) -> list[str | int]:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def assert_parity(model: nn.Module, path, shapes) -> None:
    for shape in shapes:
        errors = compare_with_onnxruntime(model, path, torch.randn(shape))
        assert all(e.max_rel < RTOL for e in errors), (shape, errors)


@pytest.mark.parametrize("name", ["axial26s", "axial50s", "axial50m", "axial50l"])
def test_torchscript_classifiers_keep_height_and_width_dynamic(tmp_path, name):
    model = calibrated(name, CLASSIFIER_SHAPE)
    path = export_onnx(model, CLASSIFIER_SHAPE, tmp_path / "net.onnx", dynamic="batch,hw")
    assert input_dims(path) == ["batch", 3, "height", "width"]
    assert_parity(model, path, [CLASSIFIER_SHAPE, (2, 3, 49, 49), (1, 3, 96, 80)])


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_global_attention_exported_at_its_table_size_stays_dynamic(tmp_path, exporter):
    """Lines as long as the global tables (kernel_size; 224 inputs for the classifiers), where
    eager mode reads the stored reference index: an exported graph must compute the index from
    the line length, or tracing bakes the size in and torch.export specializes it."""
    torch.manual_seed(0)
    model = randomize_batchnorm(
        nn.Sequential(
            AxialAttention(16, 16, groups=2, kernel_size=8),
            AxialAttention(16, 16, groups=2, kernel_size=8, width=True),
        )
    ).eval()
    shape = (1, 16, 8, 8)
    path = export_onnx(model, shape, tmp_path / "a.onnx", dynamic="batch,hw", exporter=exporter)
    assert_parity(model, path, [shape, (2, 16, 7, 11), (1, 16, 12, 5)])


def test_dynamic_batch_keeps_height_and_width_static(tmp_path):
    model = calibrated("axial26s", CLASSIFIER_SHAPE)
    path = export_onnx(model, CLASSIFIER_SHAPE, tmp_path / "net.onnx")  # dynamic="batch"
    assert input_dims(path) == ["batch", 3, 64, 64]
    assert_parity(model, path, [(2, 3, 64, 64), (3, 3, 64, 64)])
    assert second_shape(CLASSIFIER_SHAPE, "batch") == (2, 3, 64, 64)
    assert second_shape(CLASSIFIER_SHAPE, "none") is None


@pytest.mark.parametrize(
    "exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)]
)
def test_panoptic_parity_with_dynamic_height_and_width(tmp_path, exporter):
    model = calibrated("axial_deeplab_s", PANOPTIC_SHAPE)
    path = export_onnx(
        model, PANOPTIC_SHAPE, tmp_path / "s.onnx", dynamic="batch,hw", exporter=exporter
    )
    assert input_dims(path) == ["batch", 3, "height", "width"]
    for output in onnx.load(str(path)).graph.output:  # resized to the input's size
        dims = [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]
        assert dims[0] == "batch" and all(isinstance(d, str) for d in dims[2:]), dims
    # Lines shorter than the span (65) at stride 4, and longer (289 -> 73) in the last shape.
    assert_parity(model, path, [PANOPTIC_SHAPE, (2, 3, 49, 73), (1, 3, 289, 33)])


@pytest.mark.slow
def test_cli_dynamo_exporter_with_dynamic_height_and_width(tmp_path, capsys):
    """The CLI path end to end on a calibrated checkpoint: export, self-contained file,
    opset 18, parity at the export shape and at a second batch and size."""
    checkpoint = tmp_path / "calibrated.pth"
    torch.save(calibrated("axial26s", CLASSIFIER_SHAPE).state_dict(), checkpoint)
    out = tmp_path / "out" / "net.onnx"
    code = main(
        [
            "export",
            "--model",
            "axial26s",
            "--num-classes",
            "5",
            "--checkpoint",
            str(checkpoint),
            "--input-shape",
            "1x3x64x64",
            "--dynamic",
            "batch,hw",
            "--exporter",
            "dynamo",
            "-o",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert "dynamo exporter" in text and "opset 18" in text
    assert "1x3x64x64" in text and "2x3x49x49" in text  # both shapes checked
    assert "OK: ONNX Runtime matches PyTorch" in text
    assert [p.name for p in out.parent.iterdir()] == ["net.onnx"]  # no .data, no temp file
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    assert input_dims(out) == ["batch", 3, "height", "width"]
    assert [o.name for o in model.graph.output] == ["logits"]


class BakesWidth(nn.Module):
    """A Python branch on the width: tracing bakes the branch taken at the export size in,
    torch.export specializes the width to it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.shape[-1] == 16 else x - 1


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_graphs_that_bake_the_size_in_are_refused(tmp_path, exporter):
    out = tmp_path / "net.onnx"
    with pytest.raises(ExportError, match=r"BakesWidth.*(height/width|dynamic)"):
        export_onnx(BakesWidth(), (1, 3, 16, 16), out, dynamic="batch,hw", exporter=exporter)
    assert list(tmp_path.iterdir()) == []
    # The same model with a static size exports fine.
    path = export_onnx(BakesWidth(), (1, 3, 16, 16), out, exporter=exporter)
    assert_parity(BakesWidth(), path, [(2, 3, 16, 16)])


def test_dynamo_exporter_needs_opset_18(tmp_path):
    with pytest.raises(ExportError, match="opset 18"):
        export_onnx(BakesWidth(), (1, 3, 8, 8), tmp_path / "x.onnx", opset=17, exporter="dynamo")
    with pytest.raises(ExportError, match="unknown exporter"):
        export_onnx(BakesWidth(), (1, 3, 8, 8), tmp_path / "x.onnx", exporter="jit")
    assert list(tmp_path.iterdir()) == []


def test_external_data_moves_into_place_with_the_model(tmp_path):
    """Models over protobuf's 2 GiB keep their weights in <name>.data, which must land beside
    the .onnx file (its recorded location), before it, with no temporary folder left."""
    weights = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [weights],
    )
    target = tmp_path / "big.onnx"
    with atomic_output(target) as tmp:
        onnx.save(
            helper.make_model(graph),
            str(tmp),
            save_as_external_data=True,
            location=f"{tmp.name}.data",
            size_threshold=0,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.ones((2, 3), np.float32)})
    assert y.tolist() == [[1, 2, 3], [4, 5, 6]]
