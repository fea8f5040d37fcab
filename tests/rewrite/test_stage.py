"""The graph rewrite: every axial-attention layer becomes one AxialAttention node, provably
equivalent (ONNX Runtime with the reference op), from either exporter and from graphs exported
from the reference implementation's code."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch

from axial_deploy.checks.verify import verify_models
from axial_deploy.cli import main
from axial_deploy.export import export_onnx
from axial_deploy.models import create_model
from axial_deploy.models.axial_attention import AxialAttention
from axial_deploy.rewrite import RewriteError, load_model, rewrite, rewrite_file

from helpers import calibrate_batchnorm

DATA = Path(__file__).parent.parent / "data"
FP32_RTOL = 1e-4


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def exported(tmp_path: Path, name: str, shape: tuple[int, ...], exporter: str = "torchscript"):
    """A well-conditioned zoo model (every attention layer contributes) exported to ONNX."""
    torch.manual_seed(0)
    calibration = torch.randn(2, *shape[1:])
    model = calibrate_batchnorm(create_model(name, num_classes=5), calibration, residual_gain=0.1)
    layers = sum(isinstance(m, AxialAttention) for m in model.modules())
    path = export_onnx(model, shape, tmp_path / f"{name}.onnx", exporter=exporter)
    return path, layers


def check_rewrite(source: Path, target: Path, layers: int, batch: int = 2) -> None:
    report = rewrite_file(source, target, report_path=target.with_suffix(".json"))
    counts = op_counts(onnx.load(target))
    assert counts["AxialAttention"] == layers == len(report.rewritten)
    assert not report.left
    for op in ("Softmax", "Einsum"):
        assert counts[op] == 0, counts
    onnx.checker.check_model(str(target))
    result = verify_models(source, target, rtol=FP32_RTOL, atol=1e-6, seed=1, batch=batch)
    assert result.passed, result
    saved = json.loads(target.with_suffix(".json").read_text())
    assert saved["rewritten"] == layers and saved["left_intact"] == 0


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize(
    "name,shape",
    [("axial26s", (1, 3, 64, 64)), ("axial_deeplab_s", (1, 3, 65, 97))],
)
def test_zoo_models_rewrite_and_verify(tmp_path, name, shape, exporter):
    source, layers = exported(tmp_path, name, shape, exporter)
    check_rewrite(source, tmp_path / f"{name}.axial.onnx", layers)


# Both exporters are covered on every layer shape by the two models above; the bigger zoo
# models alternate exporters so CI stays within its time budget on 2 cores.
@pytest.mark.slow
@pytest.mark.parametrize(
    "name,exporter",
    [
        ("axial50s", "dynamo"),
        ("axial50m", "torchscript"),
        ("axial50l", "dynamo"),
        ("axial_deeplab_m", "dynamo"),
        ("axial_deeplab_l", "torchscript"),
        ("axial_deeplab_xl", "dynamo"),
    ],
)
def test_every_other_zoo_model(tmp_path, name, exporter):
    shape = (1, 3, 64, 64) if name.startswith("axial5") else (1, 3, 65, 65)
    source, layers = exported(tmp_path, name, shape, exporter)
    check_rewrite(source, tmp_path / f"{name}.axial.onnx", layers, batch=1)


@pytest.mark.parametrize(
    "fixture", ["reference_axial_block.onnx", "reference_axial_block_dynamo.onnx"]
)
def test_graphs_from_the_reference_implementation(tmp_path, fixture):
    """Recorded by tests/data/make_reference_fixture.py from the reference's own AxialBlock
    (height + strided width attention) with both exporters: Einsum-based, unlike ours."""
    check_rewrite(DATA / fixture, tmp_path / "block.axial.onnx", layers=2)
    attrs = [
        {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for node in onnx.load(tmp_path / "block.axial.onnx").graph.node
        if node.op_type == "AxialAttention"
    ]
    assert [a["axis"] for a in attrs] == [2, 3]
    assert all(a["num_heads"] == 2 and a["key_depth"] == 2 and a["value_depth"] == 4 for a in attrs)
    assert all(a["span"] == 0 and a["table_length"] == 15 for a in attrs)


def test_rewritten_graph_keeps_only_the_exporters_transposes(tmp_path):
    source, _ = exported(tmp_path, "axial26s", (1, 3, 64, 64))
    rewritten, _ = rewrite(load_model(source))
    counts = op_counts(rewritten)
    assert counts["Transpose"] == 0  # every node reads and writes real NCHW tensors
    axes = [
        onnx.helper.get_attribute_value(a)
        for node in rewritten.graph.node
        if node.op_type == "AxialAttention"
        for a in node.attribute
        if a.name == "axis"
    ]
    assert axes == [2, 3] * 8  # height then width attention in every block


def test_idempotent(tmp_path):
    source, layers = exported(tmp_path, "axial26s", (1, 3, 32, 32))
    once = tmp_path / "once.onnx"
    rewrite_file(source, once)
    again, report = rewrite(load_model(once))
    assert report.already_rewritten == layers and not report.layers
    assert op_counts(again) == op_counts(onnx.load(once))


def square_one_softmax(path: Path, target: Path) -> str:
    """Alter one attention layer: its weights become softmax(x) ** 2 (not attention)."""
    graph = gs.import_onnx(onnx.load(path))
    softmax = next(node for node in graph.nodes if node.op == "Softmax")
    weights = softmax.outputs[0]
    raw = gs.Variable("raw_weights", dtype=np.float32)
    softmax.outputs = [raw]
    graph.nodes.append(gs.Node("Mul", "square_weights", inputs=[raw, raw], outputs=[weights]))
    onnx.save(gs.export_onnx(graph.cleanup().toposort()), target)
    return softmax.name


def test_altered_layer_is_left_intact_and_reported(tmp_path, capsys):
    source, layers = exported(tmp_path, "axial26s", (1, 3, 32, 32))
    altered = tmp_path / "altered.onnx"
    name = square_one_softmax(source, altered)
    out = tmp_path / "out.onnx"
    report = rewrite_file(altered, out)
    assert len(report.rewritten) == layers - 1
    [left] = report.left
    assert left.softmax == name and "does not reproduce the layer" in left.reason
    counts = op_counts(onnx.load(out))
    assert counts["Softmax"] == 1 and counts["AxialAttention"] == layers - 1
    assert verify_models(altered, out, rtol=FP32_RTOL, atol=1e-6, seed=0, batch=1).passed

    strict_out = tmp_path / "strict.onnx"
    code = main(["rewrite", str(altered), "-o", str(strict_out), "--strict"])
    assert code == 2 and not strict_out.exists()
    assert "left intact" in capsys.readouterr().err


def test_bad_inputs_give_clear_messages(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    assert main(["rewrite", str(junk), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert main(["rewrite", str(tmp_path / "missing.onnx"), "-o", "o.onnx"]) == 2
    assert "no such file" in capsys.readouterr().err

    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    path = tmp_path / "plain.onnx"
    torch.onnx.export(plain, (torch.randn(1, 3, 8, 8),), path, dynamo=False)
    with pytest.raises(RewriteError, match="holds no attention"):
        rewrite_file(path, tmp_path / "plain.axial.onnx")
    assert not (tmp_path / "plain.axial.onnx").exists()


def test_rewrite_command_defaults_to_the_stage_verification_lines():
    from axial_deploy.cli import rewrite as rewrite_command
    from axial_deploy.rewrite.stage import VERIFY_LINES

    assert rewrite_command.VERIFY_LINES == VERIFY_LINES
