"""`axial-deploy verify`: two ONNX models on the same random inputs in ONNX Runtime."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from axial_deploy.checks.verify import VerifyError, compare_output, verify_models
from axial_deploy.cli import main
from axial_deploy.models.axial_attention import AxialAttention, fold_axial_attention
from axial_deploy.op import spec as op_spec

from helpers import randomize_batchnorm


def conv_model(height: int = 4, output_names=("y", "s"), weight_shift: float = 0.0):
    """x [batch, 3, H, 4] -> y = Relu(Conv(x)), s = Sigmoid(x)."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    weight[0, 0, 1, 1] += weight_shift
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], [output_names[0]]),
    ]
    outputs = [
        helper.make_tensor_value_info(output_names[0], TensorProto.FLOAT, ["batch", 2, height, 4])
    ]
    if len(output_names) > 1:
        nodes.append(helper.make_node("Sigmoid", ["x"], [output_names[1]]))
        outputs.append(
            helper.make_tensor_value_info(
                output_names[1], TensorProto.FLOAT, ["batch", 3, height, 4]
            )
        )
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, height, 4])],
        outputs,
        initializer=[onnx.numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def save(tmp_path):
    def write(model: onnx.ModelProto, name: str):
        path = tmp_path / name
        onnx.save(model, path)
        return str(path)

    return write


def test_identical_models_pass(save, capsys):
    a, b = save(conv_model(), "a.onnx"), save(conv_model(), "b.onnx")
    report = verify_models(a, b)
    assert report.passed and report.matched_by == "name"
    assert [row.name for row in report.rows] == ["y", "s"]
    assert all(row.max_abs == 0.0 for row in report.rows)

    assert main(["verify", a, b, "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "x 3x3x4x4" in out and "OK: all 2 outputs" in out
    assert out.count("PASS") == 2


def test_a_perturbed_weight_fails_with_status_1(save, capsys):
    a, b = save(conv_model(), "a.onnx"), save(conv_model(weight_shift=0.01), "b.onnx")
    assert main(["verify", a, b, "--seed", "3"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("y ", "s "))}
    # y is beyond the tolerance and the noise floor (measured since y failed); s is identical.
    assert rows["y"].endswith("FAIL (beyond noise floor x 4)")
    assert rows["s"].endswith("PASS (within tolerance)")
    assert "noise floor: A's fp32 spread" in out
    assert "FAILED: 1 of 2 outputs" in out
    # A looser tolerance accepts the same difference.
    assert main(["verify", a, b, "--seed", "3", "--rtol", "0.1"]) == 0


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_extensions") is None,
    reason="needs onnxruntime-extensions (pip install onnxruntime-extensions)",
)
def test_the_rewritten_pattern_matches_the_exported_layer(save, tmp_path):
    """A: the folded layer exported to standard ops; B: 1x1 Conv + one AxialAttention node."""
    torch.manual_seed(0)
    layer = randomize_batchnorm(AxialAttention(8, 8, groups=2, kernel_size=5, span=3))
    folded = fold_axial_attention(layer.eval())
    exported = tmp_path / "a.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes taken as constants
        torch.onnx.export(
            folded,
            (torch.randn(1, 8, 6, 7),),
            exported,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    tables = {
        name: getattr(folded, name).numpy()
        for name in ("rel_q", "rel_k", "rel_v", "logit_scale", "out_bias")
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["qkv"]),
            op_spec.make_node("qkv", "y", name="attention", **tables, attributes=folded.attributes),
        ],
        "rewritten",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 6, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 6, 7])],
        initializer=[
            onnx.numpy_helper.from_array(folded.qkv.weight.detach().numpy(), "w"),
            onnx.numpy_helper.from_array(folded.qkv.bias.detach().numpy(), "b"),
        ],
    )
    rewritten = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), op_spec.opset_import()]
    )
    report = verify_models(exported, save(rewritten, "b.onnx"), rtol=1e-5, batch=2)
    assert report.passed, report.rows
    assert report.inputs == {"x": (2, 8, 6, 7)}


def test_renamed_outputs_match_by_position(save, capsys):
    a = save(conv_model(), "a.onnx")
    b = save(conv_model(output_names=("logits", "probs")), "b.onnx")
    report = verify_models(a, b)
    assert report.passed and report.matched_by == "position"
    assert main(["verify", a, b]) == 0
    out = capsys.readouterr().out
    assert "matched by position" in out and "y / logits" in out


def test_outputs_that_cannot_be_matched(save, capsys):
    a, b = save(conv_model(), "a.onnx"), save(conv_model(output_names=("z",)), "b.onnx")
    assert main(["verify", a, b]) == 2
    assert "outputs cannot be matched: A has ['y', 's'], B has ['z']" in capsys.readouterr().err


def test_input_mismatch_is_a_usage_error(save, capsys):
    a, b = save(conv_model(), "a.onnx"), save(conv_model(height=5), "b.onnx")
    assert main(["verify", a, b]) == 2
    err = capsys.readouterr().err
    assert "axial-deploy verify: error: the models' inputs differ" in err
    assert "A: x: [1, 3, 4, 4] tensor(float)" in err and "B: x: [1, 3, 5, 4]" in err


def test_not_an_onnx_file(save, tmp_path, capsys):
    a = save(conv_model(), "a.onnx")
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    assert main(["verify", a, str(text)]) == 2
    assert f"model B ({text}) is not an ONNX file" in capsys.readouterr().err


def test_checker_failure_is_reported(save, capsys):
    model = conv_model()
    model.graph.node[1].input[0] = "missing_tensor"  # a node reads a tensor nobody writes
    a, b = save(conv_model(), "a.onnx"), save(model, "b.onnx")
    assert main(["verify", a, b]) == 2
    assert "fails onnx.checker" in capsys.readouterr().err


def test_missing_file(save, tmp_path, capsys):
    a = save(conv_model(), "a.onnx")
    assert main(["verify", str(tmp_path / "nope.onnx"), a]) == 2
    assert "model A not found:" in capsys.readouterr().err


def test_symbolic_non_batch_dimension_is_refused(save):
    model = conv_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    a = save(model, "a.onnx")
    with pytest.raises(VerifyError, match="symbolic dimension 'height' at axis 2"):
        verify_models(a, a)


def test_pass_rule_scales_with_the_reference():
    a = np.array([1.0, -2.0], np.float32)
    b = np.array([1.0, -2.0 + 1e-4], np.float32)
    row = compare_output("y", "y", a, b, rtol=1e-4, atol=1e-6)
    assert row.passed and row.max_ref == 2.0
    assert row.max_rel == pytest.approx(row.max_abs / 2.0)
    assert not compare_output("y", "y", a, b, rtol=1e-5, atol=1e-6).passed
    nan_both = np.array([np.nan, 1.0])
    both = compare_output("y", "y", nan_both, nan_both, 1e-4, 0.0)
    assert not both.passed and both.note == "NaN or Inf in the outputs"  # NaN is never parity
    nan_b = compare_output("y", "y", np.array([0.5, 1.0]), nan_both, 1e-4, 0.0)
    assert not nan_b.passed and nan_b.note == "NaN or Inf in the outputs"
    shape = compare_output("y", "y", np.zeros(2), np.zeros(3), 1e-4, 0.0)
    assert not shape.passed and "shape differs" in shape.note


def test_runtime_failure_is_reported(save, capsys):
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, "rest"])],
        initializer=[onnx.numpy_helper.from_array(np.array([5, -1], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    a = save(model, "a.onnx")
    assert main(["verify", a, a]) == 2
    assert "ONNX Runtime failed to run model A" in capsys.readouterr().err


def test_missing_extensions_is_a_clear_usage_error(save, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    node = op_spec.make_node(
        "qkv",
        "y",
        rel_q=rng.normal(size=(1, 1, 3)),
        rel_k=rng.normal(size=(1, 1, 3)),
        rel_v=rng.normal(size=(1, 1, 3)),
        logit_scale=np.ones(1),
        out_bias=np.zeros(1),
        attributes=op_spec.AxialAttentionAttributes(2, 1, 1, 1, 0),
    )
    graph = helper.make_graph(
        [node],
        "one_node",
        [helper.make_tensor_value_info("qkv", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), op_spec.opset_import()]
    )
    a = save(model, "a.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # as if not installed
    assert main(["verify", a, a]) == 2
    assert "pip install onnxruntime-extensions" in capsys.readouterr().err


def test_noise_floor_modes(save, capsys):
    a, b = save(conv_model(), "a.onnx"), save(conv_model(), "b.onnx")
    # always: the floor is measured and shown even when everything passes plainly.
    assert main(["verify", a, b, "--noise-floor", "always"]) == 0
    out = capsys.readouterr().out
    assert "noise floor: A's fp32 spread" in out and out.count("PASS (within tolerance)") == 2
    report = verify_models(a, b, noise_floor="always")
    assert all(row.noise_floor is not None and row.noise_floor > 0 for row in report.rows)
    assert all(row.a_vs_float64 is not None for row in report.rows)  # small: numpy float64
    # off: the plain tolerance alone decides, nothing is measured.
    broken = save(conv_model(weight_shift=0.01), "broken.onnx")
    assert main(["verify", a, broken, "--noise-floor", "off"]) == 1
    out = capsys.readouterr().out
    assert "noise floor: not measured (--noise-floor off)" in out and "FAIL" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", a, b, "--noise-factor", "0.5"])
    assert exit_info.value.code == 2
    assert "--noise-factor: must be a number >= 1" in capsys.readouterr().err


def test_graphs_with_symbolic_sizes_are_verified_at_a_given_shape(tmp_path):
    """A dynamic height/width export: refused without a size (naming --input-shape), verified
    at two sizes with one, and a shape that contradicts a fixed axis is refused."""
    import torch

    from axial_deploy.export import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    path = export_onnx(model, (1, 3, 16, 16), tmp_path / "dyn.onnx", dynamic="batch,hw")
    with pytest.raises(VerifyError, match="--input-shape"):
        verify_models(path, path)
    for shape in [(1, 3, 16, 16), (2, 3, 12, 20)]:
        report = verify_models(path, path, input_shape=shape)
        assert report.passed and report.rows[0].shape == (shape[0], 4, *shape[2:])
    with pytest.raises(VerifyError, match="fixed axes"):
        verify_models(path, path, input_shape=(1, 5, 16, 16))
    with pytest.raises(VerifyError, match="batch 4 contradicts"):
        verify_models(path, path, batch=4, input_shape=(2, 3, 16, 16))
