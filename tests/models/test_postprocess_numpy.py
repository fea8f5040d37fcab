"""The numpy Panoptic-DeepLab post-processing (what `evaluate` runs without torch) against the
PyTorch one on random head outputs: every returned map equal, centers within float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axial_deploy.models.panoptic_config import PanopticConfig
from axial_deploy.models.postprocess import PanopticPostProcessor
from axial_deploy.models.postprocess_numpy import PanopticPostProcessorNumpy

NUM_CLASSES = 7
THINGS = (3, 4, 6)


def _heads(seed: int, n: int, h: int, w: int, peak_scale: float = 1.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, NUM_CLASSES, h, w)).astype(np.float32)
    # Smooth-ish heatmap with a few strong peaks, like a trained center head.
    heat = rng.uniform(0.0, 0.3, size=(n, 1, h, w)).astype(np.float32)
    for image in range(n):
        for _ in range(6):
            y, x = rng.integers(0, h), rng.integers(0, w)
            heat[image, 0, y, x] = rng.uniform(0.5, 1.0)
    heat *= peak_scale
    offsets = rng.normal(scale=4.0, size=(n, 2, h, w)).astype(np.float32)
    return logits, heat, offsets


CASES = [
    # seed, N, H, W, config overrides
    (0, 2, 33, 47, {}),
    (1, 1, 40, 40, {"top_k": 3, "nms_kernel": 5}),  # more peaks than top_k
    (2, 2, 3, 4, {"top_k": 20, "nms_kernel": 3}),  # fewer pixels than top_k
    (3, 1, 25, 31, {"center_threshold": 0.99}),  # no center: thing pixels stay void
    (4, 2, 30, 20, {"stuff_area_limit": 1, "nms_kernel": 1}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}-{c[1]}x{c[2]}x{c[3]}")
def test_numpy_post_processing_matches_torch(case):
    seed, n, h, w, overrides = case
    config = PanopticConfig(
        thing_ids=THINGS, **{"top_k": 8, "stuff_area_limit": 60, "nms_kernel": 7, **overrides}
    )
    logits, heat, offsets = _heads(seed, n, h, w)
    with torch.no_grad():
        expected = PanopticPostProcessor(NUM_CLASSES, config)(
            *(torch.from_numpy(a) for a in (logits, heat, offsets))
        )
    got = PanopticPostProcessorNumpy(NUM_CLASSES, config)(logits, heat, offsets)
    for name, mine, theirs in zip(
        ("panoptic", "semantic", "instance"), got[:3], expected[:3], strict=True
    ):
        assert mine.dtype == np.int64 and mine.shape == (n, h, w), name
        np.testing.assert_array_equal(mine, theirs.numpy(), err_msg=name)
    np.testing.assert_allclose(got[3], expected[3].numpy(), rtol=0, atol=1e-6)
    # The cases are not trivial: some things, some stuff, some void (where the config says).
    panoptic = got[0]
    assert (panoptic >= 0).any()
    if overrides.get("center_threshold", 0) < 0.9:
        assert (got[2] > 0).any()


def test_numpy_post_processing_refuses_bad_shapes():
    post = PanopticPostProcessorNumpy(NUM_CLASSES, PanopticConfig(thing_ids=THINGS))
    logits, heat, offsets = _heads(0, 1, 8, 8)
    with pytest.raises(ValueError, match="classes"):
        post(logits[:, :3], heat, offsets)
    with pytest.raises(ValueError, match="offsets shape"):
        post(logits, heat, offsets[:, :1])
    with pytest.raises(ValueError, match="not below num_classes"):
        PanopticPostProcessorNumpy(3, PanopticConfig(thing_ids=THINGS))
