"""Export by a small trace (`export --trace-size`): two traces must give the same graph, parity
is checked at both trace sizes, and the written graph is the one a full-size export writes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from axial_deploy.cli import main
from axial_deploy.export import (
    ExportError,
    export_onnx,
    graph_difference,
    small_trace_export,
    write_at_size,
)
from axial_deploy.models import prepare_model


def input_dims(path) -> list[str | int]:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def test_cli_small_trace_writes_the_full_size_graph(tmp_path, capsys):
    """The tiny panoptic model traced at 33x49 (and 18x26) is written for 65x97; its nodes and
    weights equal, byte for byte, those of the export traced at 65x97 itself."""
    out = tmp_path / "tiny.onnx"
    args = ["export", "--model", "axial_deeplab_tiny", "--live-random-weights", "--seed", "3"]
    code = main([*args, "--input-shape", "1x3x65x97", "--trace-size", "33x49", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "1x3x33x49 and 1x3x18x26 give the same graph" in text
    assert "OK: ONNX Runtime matches PyTorch" in text
    assert text.count("1x3x18x26        ") == 3  # parity at the second size, every output
    assert input_dims(out) == ["batch", 3, 65, 97]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]

    model = prepare_model(
        "axial_deeplab_tiny",
        checkpoint=None,
        num_classes=None,
        live_random_weights=True,
        input_shape=(1, 3, 33, 49),  # the CLI measures live statistics at the trace size
        seed=3,
    )
    full = export_onnx(model, (1, 3, 65, 97), tmp_path / "full.onnx")
    assert graph_difference(out, full) is None
    assert input_dims(full) == input_dims(out)


class AddsWidth(nn.Module):
    """Tracing turns float(width) into a constant: the graph depends on the trace size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + float(x.shape[-1])


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu()


def test_a_graph_that_depends_on_the_trace_size_is_refused(tmp_path):
    refused = pytest.raises(ExportError, match=r"AddsWidth traced at 1x3x16x16 and 1x3x9x9")
    with refused, small_trace_export(AddsWidth(), (1, 3, 64, 64), (1, 3, 16, 16)):
        pass
    # graph_difference names what differs: here the baked width.
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_onnx(AddsWidth(), (1, 3, 16, 16), first, dynamic="batch,hw", second_size=False)
    export_onnx(AddsWidth(), (1, 3, 13, 13), second, dynamic="batch,hw", second_size=False)
    assert graph_difference(first, first) is None
    assert "differs" in graph_difference(first, second)


def test_trace_size_must_fit_in_the_input(tmp_path):
    too_big = small_trace_export(Conv(), (1, 3, 32, 32), (1, 3, 48, 16))
    with pytest.raises(ExportError, match="must not exceed"), too_big:
        pass
    other_batch = small_trace_export(Conv(), (2, 3, 32, 32), (1, 3, 16, 16))
    with pytest.raises(ExportError, match="batch and channels"), other_batch:
        pass
    # sides of 3 or less give a second trace no smaller than the first: nothing is shown
    too_small = small_trace_export(Conv(), (1, 3, 32, 32), (1, 3, 3, 16))
    with pytest.raises(ExportError, match="too small to trace twice"), too_small:
        pass


@pytest.mark.parametrize(
    ("dynamic", "dims"),
    [("batch", ["batch", 3, 40, 24]), ("none", [2, 3, 40, 24]), ("batch,hw", None)],
)
def test_write_at_size_declares_the_input_shape(tmp_path, dynamic, dims):
    model = Conv().eval()
    with small_trace_export(model, (2, 3, 40, 24), (2, 3, 12, 10)) as trace:
        assert trace.witness_shape == (2, 3, 7, 6)
        path = write_at_size(trace, tmp_path / "conv.onnx", (2, 3, 40, 24), dynamic)
        assert graph_difference(path, trace.dynamic_path) is None
    assert input_dims(path) == (dims or ["batch", 3, "height", "width"])
    x = torch.randn(2, 3, 40, 24)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_graph_difference_tells_weights_from_structure(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_onnx(Conv(), (1, 3, 8, 8), first)
    other = Conv()
    with torch.no_grad():
        other.conv.weight[0, 0, 0, 0] += 1.0  # one weight changed
    export_onnx(other, (1, 3, 8, 8), second)
    assert "initializer" in graph_difference(first, second)
    assert graph_difference(first, second, weights=False) is None
    assert "nodes" in graph_difference(first, _relu_less(tmp_path))


def _relu_less(tmp_path):
    """The Conv model without its Relu: one node fewer."""
    path = tmp_path / "c.onnx"
    export_onnx(Conv().conv, (1, 3, 8, 8), path)
    return path


def test_trace_size_auto_picks_a_small_trace_only_for_big_inputs():
    """The default: full size up to 1024x1024 pixels (S/M/L at 513x1025 and every classifier),
    about 1/16 of each side above (the panoptic default 1025x2049 -> 65x129)."""
    from axial_deploy.export import resolve_trace_size

    assert resolve_trace_size("auto", (1, 3, 1025, 2049)) == (65, 129)
    assert resolve_trace_size("auto", (1, 3, 513, 1025)) is None
    assert resolve_trace_size("auto", (1, 3, 224, 224)) is None
    assert resolve_trace_size("full", (1, 3, 1025, 2049)) is None
    assert resolve_trace_size((129, 257), (1, 3, 1025, 2049)) == (129, 257)
