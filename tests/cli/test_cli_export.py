"""The `axial-deploy` CLI and the ONNX export stage (ONNX Runtime vs PyTorch)."""

from __future__ import annotations

import onnx
import pytest
import torch

from axial_deploy.cli import main
from axial_deploy.export import ExportError, compare_with_onnxruntime, export_onnx
from axial_deploy.models import create_model

from helpers import calibrate_batchnorm


def test_help_explains_the_stages(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "export" in text and "models" in text and "stages:" in text


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name in ("axial26s", "axial50l", "axial_deeplab_s", "axial_deeplab_xl"):
        assert name in text
    assert "5.94" in text  # axial26s parameters (M)


def test_export_command_checks_parity(tmp_path, capsys):
    out = tmp_path / "net.onnx"
    code = main(
        [
            "export",
            "--model",
            "axial26s",
            "--num-classes",
            "10",
            "--input-shape",
            "2x3x64x64",
            "-o",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert "OK: ONNX Runtime matches PyTorch" in text
    graph = onnx.load(out).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in graph.output] == ["logits"]


def test_export_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", "axial26s", "--input-shape", "1x3x22", "-o", "x.onnx"])
    assert exit_info.value.code == 2
    assert "must be NxCxHxW" in capsys.readouterr().err

    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    code = main(
        ["export", "--model", "axial26s", "--checkpoint", str(bad), "-o", str(tmp_path / "x.onnx")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "does not match" in err and "wrong shape" in err
    assert not (tmp_path / "x.onnx").exists()


def test_failed_export_leaves_nothing_behind(tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(create_model("axial26s"), (1, 3, 32, 32), out, opset=16)
    with pytest.raises(ExportError, match="failed"):
        export_onnx(create_model("axial26s"), (1, 5, 32, 32), out)  # wrong channel count
    assert list(tmp_path.iterdir()) == []


def test_panoptic_export_matches_pytorch_with_live_attention(tmp_path):
    """Random BatchNorm statistics and non-zero residual branches: every attention layer
    contributes to the outputs that ONNX Runtime must reproduce (fp32, max rel < 1e-4)."""
    torch.manual_seed(0)
    model = calibrate_batchnorm(
        create_model("axial_deeplab_s", num_classes=5), torch.randn(2, 3, 65, 97)
    )
    path = export_onnx(model, (1, 3, 65, 97), tmp_path / "s.onnx")
    errors = compare_with_onnxruntime(model, path, torch.randn(2, 3, 65, 97))
    assert [e.name for e in errors] == ["semantic", "center", "offset"]
    assert all(e.max_rel < 1e-4 for e in errors), errors


def test_live_random_weights_flag(tmp_path, capsys):
    """The flag runs end to end and changes the exported weights (that attention then matters
    is tested on models.random_init in test_random_weights_make_attention_matter)."""
    import onnx
    import onnxruntime as ort

    outputs = {}
    for flag in ([], ["--live-random-weights"]):
        path = tmp_path / f"m{len(flag)}.onnx"
        args = [
            "export",
            "--model",
            "axial26s",
            "--num-classes",
            "10",
            "--input-shape",
            "1x3x32x32",
            "-o",
            str(path),
            *flag,
        ]
        assert main(args) == 0, capsys.readouterr().out
        session = ort.InferenceSession(onnx.load(path).SerializeToString())
        outputs[len(flag)] = session.run(None, {"images": torch.ones(1, 3, 32, 32).numpy()})[0]
    assert not torch.allclose(torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1]))


@torch.no_grad()
def test_random_weights_make_attention_matter():
    """Fresh zoo models zero their residual branches, so attention cannot change the output and
    export / rewrite parity checks would pass trivially; calibrate_batchnorm must not."""
    from axial_deploy.models.random_init import calibrate_batchnorm

    x = torch.randn(1, 3, 32, 32)

    def output_moves_with_a_relative_table(model) -> bool:
        model.eval()
        before = model(x)
        model.layer3[1].hight_block.relative.add_(1.0)
        return not torch.allclose(before, model(x))

    assert not output_moves_with_a_relative_table(create_model("axial26s", num_classes=10))
    live = calibrate_batchnorm(create_model("axial26s", num_classes=10), torch.randn(2, 3, 32, 32))
    assert output_moves_with_a_relative_table(live)
