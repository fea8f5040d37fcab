"""Panoptic Axial-DeepLab: sizes against the paper, feature strides, outputs, folding."""

from __future__ import annotations

import pytest
import torch

from axial_deploy.models import create_model
from axial_deploy.models.axial_attention import AxialAttention, fold_axial_layers
from axial_deploy.models.complexity import attended_pairs, count_madds, count_parameters

from helpers import calibrate_batchnorm, max_rel_err, randomize_batchnorm

# Paper Table 6 (Cityscapes, 19 classes, 1025 x 2049): parameters (M) and M-Adds (B).
PAPER = {
    "axial_deeplab_s": (12.1, 220.8),
    "axial_deeplab_m": (25.9, 419.6),
    "axial_deeplab_l": (44.9, 687.4),
    "axial_deeplab_xl": (173.0, 2446.8),
}


def meta_model(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize("name", list(PAPER))
def test_parameters_within_3_percent_of_the_paper(name):
    params = count_parameters(meta_model(name)) / 1e6
    assert abs(params - PAPER[name][0]) / PAPER[name][0] < 0.03, params


@pytest.mark.parametrize("name", list(PAPER))
def test_multiply_adds_at_1025x2049_near_the_paper(name):
    madds = count_madds(meta_model(name), (1, 3, 1025, 2049)) / 1e9
    assert abs(madds - PAPER[name][1]) / PAPER[name][1] < 0.03, madds


def test_count_madds_on_a_hand_computed_net():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), AxialAttention(8, 8, groups=2, span=3)
    )
    conv = 8 * 5 * 6 * 3 * 9
    # Height attention: 6 lines of 5, span 3 -> 13 pairs per line; 2 heads; 3*Dq + 2*Dv = 14.
    attention = 6 * 2 * 13 * (3 * 2 + 2 * 4)
    qkv = 16 * 5 * 6 * 8
    assert count_madds(net, (1, 3, 5, 6)) == conv + attention + qkv
    assert attended_pairs(5, 3) == 13 and attended_pairs(5, 0) == 25


def test_feature_strides_at_cityscapes_size():
    """1025 x 2049 gives 513, 257 (stride 4), 129 (stride 8) and 65 x 129 (stride 16)."""
    model = meta_model("axial_deeplab_s")
    feats = model.backbone(torch.empty(1, 3, 1025, 2049, device="meta"))
    assert feats["s4"].shape[-2:] == (257, 513)
    assert feats["s8"].shape[-2:] == (129, 257)
    assert feats["s16"].shape[-2:] == (65, 129)
    assert all(m.span == 65 for m in model.modules() if isinstance(m, AxialAttention))
    outputs = model(torch.empty(2, 3, 1025, 2049, device="meta"))
    assert outputs["semantic"].shape == (2, 19, 1025, 2049)
    assert outputs["center"].shape == (2, 1, 1025, 2049)
    assert outputs["offset"].shape == (2, 2, 1025, 2049)


@pytest.mark.parametrize("size", [(65, 129), (96, 80), (33, 47)])
def test_forward_at_small_sizes(size):
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("axial_deeplab_s", num_classes=7)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out["semantic"].shape == (1, 7, *size)
    assert out["center"].shape == (1, 1, *size)
    assert out["offset"].shape == (1, 2, *size)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_folded_model_matches_in_fp32():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 65, 97)
    model = calibrate_batchnorm(create_model("axial_deeplab_s"), torch.randn(2, 3, 65, 97))
    with torch.no_grad():
        expected = model(x)
        got = fold_axial_layers(model)(x)
    for key in expected:
        assert max_rel_err(got[key], expected[key]) < 1e-4, key


def test_folded_model_is_exact_in_fp64():
    torch.manual_seed(2)
    calib = torch.randn(2, 3, 49, 65, dtype=torch.float64)
    model = calibrate_batchnorm(create_model("axial_deeplab_s").double(), calib, seed=4)
    x = torch.randn(1, 3, 49, 65, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        got = fold_axial_layers(model)(x)
    for key in expected:
        assert max_rel_err(got[key], expected[key]) < 1e-10, key


def test_trains_one_step():
    model = create_model("axial_deeplab_s", num_classes=3).train()
    out = model(torch.randn(2, 3, 33, 33))
    loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_forward_at_1025x2049_in_bounded_memory():
    """A real forward pass of Axial-DeepLab-S at Cityscapes size, in a fresh process so its
    peak resident memory is its own: windowed, chunked attention keeps it small (a dense
    L x L formulation would not fit this 24 GB machine for the L model)."""
    import json
    import subprocess
    import sys

    child = (
        "import json, torch\n"
        "from axial_deploy.models import create_model\n"
        "torch.manual_seed(0)\n"
        "model = create_model('axial_deeplab_s').eval()\n"
        "with torch.inference_mode():\n"
        "    out = model(torch.randn(1, 3, 1025, 2049))\n"
        # VmHWM is this process's own peak: ru_maxrss would carry over the (large) pytest
        # parent's peak across fork + exec
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(json.dumps({'shapes': {k: list(v.shape) for k, v in out.items()},\n"
        "    'finite': all(bool(torch.isfinite(v).all()) for v in out.values()),\n"
        "    'peak_gib': int(hwm.split()[1]) / 2**20}))\n"
    )
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["shapes"]["semantic"] == [1, 19, 1025, 2049]
    assert result["shapes"]["offset"] == [1, 2, 1025, 2049]
    assert result["finite"]
    assert result["peak_gib"] < 4.0, result
