"""The rewrite of a graph with symbolic height and width (issue 18): probed at one size, its
dynamic axes kept, and the rewritten graph equal to the PyTorch module in float64 at several."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from axial_deploy.export import export_onnx
from axial_deploy.graph import graph_input_dims
from axial_deploy.models import prepare_model
from axial_deploy.op.ort import create_session
from axial_deploy.rewrite import RewriteError, rewrite_file

PROBE = (1, 3, 129, 129)  # stride-16 lines of 9: the tiny model's span-17 window seen whole
SIZES = [PROBE, (1, 3, 97, 161), (2, 3, 161, 97)]  # smaller, larger and wider than the probe
FP32_RTOL = 1e-4  # float32 graph against the float64 module, whole network


@pytest.fixture(scope="module")
def dynamic_tiny(tmp_path_factory):
    """axial_deeplab_tiny (span 17, live random weights) exported with dynamic batch, H and W."""
    folder = tmp_path_factory.mktemp("dynamic")
    model = prepare_model("axial_deeplab_tiny", live_random_weights=True, input_shape=PROBE)
    source = export_onnx(model, (1, 3, 65, 97), folder / "tiny.onnx", dynamic="batch,hw")
    return model, source, folder


def test_dynamic_export_is_rewritten_and_equals_the_module_at_several_sizes(dynamic_tiny):
    model, source, folder = dynamic_tiny
    target = folder / "tiny.axial.onnx"
    report = rewrite_file(source, target, probe_shape=PROBE, check_shapes=[PROBE, (1, 3, 97, 161)])
    assert report.rewritten and not report.left, report.summary()
    assert report.probe_shape == PROBE and report.probe_shape_from == "--probe-shape"
    assert [c["shape"] for c in report.checks] == ["1x3x129x129", "1x3x97x161"]
    assert all(c["passed"] for c in report.checks), report.checks
    assert all(
        layer.attributes.span == 17 and layer.line_limit is None for layer in report.rewritten
    )
    assert graph_input_dims(onnx.load(target))["images"] == ["batch", 3, "height", "width"]

    session = create_session(target)
    names = [o.name for o in session.get_outputs()]
    module = model.double()
    for seed, shape in enumerate(SIZES):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = module(x.double())
        got = dict(zip(names, session.run(None, {"images": x.numpy()}), strict=True))
        for name, reference in expected.items():
            reference = reference.numpy()
            error = np.abs(got[name] - reference).max() / np.abs(reference).max()
            assert error < FP32_RTOL, (shape, name, error)


def test_bad_probe_shapes_are_refused_clearly(dynamic_tiny):
    _, source, folder = dynamic_tiny
    with pytest.raises(RewriteError, match=r"--probe-shape 1x4x65x65 does not fit .*images"):
        rewrite_file(source, folder / "bad.onnx", probe_shape=(1, 4, 65, 65))
    assert not (folder / "bad.onnx").exists()


def test_check_sizes_beyond_a_limited_layer_are_refused():
    """A global table probed on lines of 8 that had not reached its clamped ends is exact only
    up to 8: a larger check size is refused with the fix, a smaller one allowed."""
    from axial_deploy.rewrite.records import LayerRecord, RewriteReport
    from axial_deploy.rewrite.stage import check_sizes_allowed

    layer = LayerRecord(softmax="sm", rewritten=True, line_limit=8)
    report = RewriteReport("m.onnx", [layer], probe_shape=(1, 3, 8, 8))
    check_sizes_allowed(report, [(1, 3, 8, 8), (1, 3, 7, 5)])
    with pytest.raises(RewriteError, match=r"exact only on lines up to 8.*--probe-shape"):
        check_sizes_allowed(report, [(1, 3, 8, 9)])
