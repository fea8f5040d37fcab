"""The rewrite on layers as other code bases write them (tests/rewrite/user_layers.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from axial_deploy.cli import main
from axial_deploy.graph import attribute
from axial_deploy.op.ort import create_session
from axial_deploy.rewrite import RewriteError, rewrite_file

from .user_layers import LinearAxialAttention, LineAttention, Stack, export


def wrong_axis_stack(layers: int, shape: tuple[int, int, int, int]) -> Stack:
    """Softmax over the queries (not the keys): not the operator, left with one reason. The
    sizes are baked in and there are more lines than probing runs, so the first probe of
    each layer fails inside ONNX Runtime (a Reshape) before the full-size retry."""
    n, c, h, w = shape
    return Stack(
        *(
            LineAttention(
                c if i == 0 else 6, axis=2, softmax_dim=2, baked=(n, c if i == 0 else 6, h, w)
            )
            for i in range(layers)
        )
    )


def test_nothing_rewritten_is_said_plainly_and_quietly(tmp_path, capfd):
    shape = (1, 4, 6, 40)  # height attention: 40 lines of 6, probing runs 32
    source = export(wrong_axis_stack(3, shape), shape, tmp_path / "wrong.onnx")
    capfd.readouterr()
    report = rewrite_file(source, tmp_path / "out.onnx")
    assert not report.rewritten and len(report.left) == 3
    summary = report.summary()
    assert summary.startswith("nothing rewritten: 3 attention layer(s) found")
    # Three identical reasons are one line with a count.
    [left_line] = [line for line in summary.splitlines() if "LEFT" in line]
    assert "LEFT x3" in left_line and "does not normalise the last axis" in left_line
    # ONNX Runtime's failing Reshape was not printed: failures surface as exceptions only.
    assert "onnxruntime" not in capfd.readouterr().err

    strict_out = tmp_path / "strict.onnx"
    with pytest.raises(RewriteError, match=r"--strict: nothing rewritten, 3 layer\(s\).*3 x the"):
        rewrite_file(source, strict_out, strict=True)
    assert main(["rewrite", str(source), "-o", str(strict_out), "--strict"]) == 2
    assert not strict_out.exists()
    assert "nothing rewritten" in capfd.readouterr().err


def test_attention_behind_a_stem_names_its_own_projection(tmp_path):
    """lucidrains-style layers (Linear projections per line) behind a 1x1 Conv stem: the walk
    back from each Softmax stops at its own projections and names them, never the stem."""
    stem = nn.Conv2d(3, 8, 1)
    model = Stack(stem, LinearAxialAttention(8, axis=2), LinearAxialAttention(8, axis=3))
    source = export(model, (1, 3, 6, 5), tmp_path / "lucid.onnx")
    report = rewrite_file(source, tmp_path / "out.onnx")
    assert len(report.left) == 2 and not report.rewritten
    for number, layer in enumerate(report.left, start=1):
        assert "no 1x1 Conv (qkv projection) feeds this Softmax" in layer.reason
        assert f"MatMul /layers/layers.{number}/to_q/MatMul" in layer.reason
        assert "layers.0" not in layer.reason and "rank-4" not in layer.reason


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    """The graph in ONNX Runtime (fp32; AxialAttention nodes by the reference op)."""
    session = create_session(path)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("baked", [False, True])
def test_position_free_layers_are_rewritten(tmp_path, baked):
    """MedT's local branch: axial attention without relative positions, height then width, is
    the operator with zero tables; rewritten, verified and equal to the module in float64."""
    shape = (1, 4, 6, 5)
    sizes = [(1, 4, 6, 5), (1, 6, 6, 5)] if baked else [None, None]
    model = Stack(
        LineAttention(4, axis=2, baked=sizes[0]), LineAttention(6, axis=3, baked=sizes[1])
    )
    source = export(model, shape, tmp_path / "free.onnx")
    target = tmp_path / "free.axial.onnx"
    report = rewrite_file(source, target)
    assert len(report.rewritten) == 2 and not report.left, report.summary()
    nodes = [n for n in onnx.load(target).graph.node if n.op_type == "AxialAttention"]
    assert [attribute(n, "axis") for n in nodes] == [2, 3]
    assert [attribute(n, "table_length") for n in nodes] == [11, 9]  # 2L - 1, global
    tables = {t.name: numpy_helper.to_array(t) for t in onnx.load(target).graph.initializer}
    for node in nodes:
        for name in node.input[1:4]:  # rel_q, rel_k, rel_v
            assert tables[name].shape[-1] == attribute(node, "table_length")
            assert not tables[name].any()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.double()(x.double()).numpy()
    got = run_onnx(target, x)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4
