"""Panoptic-DeepLab post-processing in numpy: what `evaluate` runs where torch is not installed.

The same six steps as `PanopticPostProcessor` (models/postprocess.py, the reference), on numpy
arrays, for inference only: argmax semantics; centers by threshold, max-pool NMS and top-k;
each thing pixel to the nearest valid center of its predicted center; majority-vote class per
instance; stuff below the area limit becomes void; ids `class * label_divisor + instance`.
tests/models/test_postprocess_numpy.py checks it against the torch form on random maps.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .panoptic_config import PanopticConfig


class PanopticPostProcessorNumpy:
    """`__call__(semantic_logits [N, K, H, W], center_heatmap [N, 1, H, W], offsets [N, 2, H, W])`
    returns `(panoptic, semantic, instance, centers)` like `PanopticPostProcessor.forward`:
    int64 [N, H, W] maps and float [N, top_k, 3] centers `(y, x, score)`."""

    def __init__(self, num_classes: int, config: PanopticConfig | None = None) -> None:
        config = PanopticConfig() if config is None else config
        self.is_thing_class = np.asarray(config.thing_mask(num_classes), dtype=bool)
        self.num_classes = num_classes
        self.config = config

    def __call__(
        self, semantic_logits: np.ndarray, center_heatmap: np.ndarray, offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self._check_inputs(semantic_logits, center_heatmap, offsets)
        cfg = self.config
        n, _, h, w = semantic_logits.shape
        semantic = semantic_logits.argmax(axis=1).astype(np.int64)  # [N, H, W]
        center_yx, center_scores, center_valid = self._find_centers(center_heatmap)
        instance = self._assign_instances(semantic, offsets, center_yx, center_valid)
        instance_class = self._majority_vote(semantic, instance)

        sem_flat = semantic.reshape(n, h * w)
        is_thing = self.is_thing_class[sem_flat]
        stuff_kept = self._stuff_kept(sem_flat, is_thing)
        panoptic = np.full_like(sem_flat, cfg.void_label)
        panoptic = np.where(stuff_kept, sem_flat * cfg.label_divisor, panoptic)
        panoptic = np.where(instance > 0, instance_class * cfg.label_divisor + instance, panoptic)

        center_yx = np.where(center_valid[..., None], center_yx, -1.0).astype(center_yx.dtype)
        scores = np.where(center_valid, center_scores, 0.0).astype(center_scores.dtype)
        centers = np.concatenate([center_yx, scores[..., None]], axis=-1)
        return panoptic.reshape(n, h, w), semantic, instance.reshape(n, h, w), centers

    def _check_inputs(self, logits: np.ndarray, heatmap: np.ndarray, offsets: np.ndarray) -> None:
        if logits.ndim != 4 or heatmap.ndim != 4 or offsets.ndim != 4:
            raise ValueError("semantic_logits, center_heatmap and offsets must all be 4-D")
        n, k, h, w = logits.shape
        if k != self.num_classes:
            raise ValueError(f"semantic_logits has {k} classes, expected {self.num_classes}")
        if heatmap.shape != (n, 1, h, w):
            raise ValueError(f"center_heatmap shape {heatmap.shape} != {(n, 1, h, w)}")
        if offsets.shape != (n, 2, h, w):
            raise ValueError(f"offsets shape {offsets.shape} != {(n, 2, h, w)}")

    def _find_centers(self, center_heatmap: np.ndarray):
        """Center coordinates [N, k, 2] (y, x), scores [N, k] and validity [N, k]."""
        cfg = self.config
        n, _, h, w = center_heatmap.shape
        dtype = center_heatmap.dtype
        heat = center_heatmap[:, 0]
        heat = np.where(heat > cfg.center_threshold, heat, -1.0).astype(dtype)
        pad = cfg.nms_kernel // 2
        # max_pool2d with padding: the pad never wins (-inf), stride 1 keeps H x W.
        padded = np.pad(heat, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
        windows = sliding_window_view(padded, (cfg.nms_kernel, cfg.nms_kernel), axis=(1, 2))
        pooled = windows.max(axis=(-2, -1))
        keep = (heat == pooled) & (heat > cfg.center_threshold)
        scores = np.where(keep, heat, -1.0).astype(dtype).reshape(n, h * w)
        filler = np.full((n, cfg.top_k), -1.0, dtype=dtype)
        padded_scores = np.concatenate([scores, filler], axis=1)
        # Highest first; among equal scores the lower index first (what torch's topk gives
        # for distinct peaks; equal float peaks do not occur on real heatmaps).
        top_index = np.argsort(-padded_scores, axis=1, kind="stable")[:, : cfg.top_k]
        top_scores = np.take_along_axis(padded_scores, top_index, axis=1)
        valid = top_scores > cfg.center_threshold
        ys = top_index // w
        xs = top_index - ys * w
        return np.stack([ys, xs], axis=-1).astype(dtype), top_scores, valid

    def _assign_instances(self, semantic, offsets, center_yx, center_valid) -> np.ndarray:
        """Instance id per pixel [N, HW]: 1 + index of the nearest valid center, 0 if none."""
        n, h, w = semantic.shape
        dtype = offsets.dtype
        rows = np.arange(h, dtype=dtype).reshape(1, h, 1)
        cols = np.arange(w, dtype=dtype).reshape(1, 1, w)
        pred_y = (rows + offsets[:, 0]).reshape(n, h * w, 1)
        pred_x = (cols + offsets[:, 1]).reshape(n, h * w, 1)
        center_yx = np.where(center_valid[..., None], center_yx, np.inf).astype(dtype)
        dy = pred_y - center_yx[:, None, :, 0]  # [N, HW, k]
        dx = pred_x - center_yx[:, None, :, 1]
        nearest = (dy * dy + dx * dx).argmin(axis=-1).astype(np.int64)
        is_thing = self.is_thing_class[semantic.reshape(n, h * w)]
        has_center = center_valid.any(axis=1, keepdims=True)
        return np.where(is_thing & has_center, nearest + 1, 0)

    def _majority_vote(self, semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
        """Class per pixel [N, HW]: the most frequent thing class of the pixel's instance."""
        n = semantic.shape[0]
        k = self.num_classes
        slots = self.config.top_k + 1
        key = instance * k + semantic.reshape(n, -1)
        voting = instance > 0
        counts = np.zeros((n, slots * k), dtype=np.float32)
        for image in range(n):  # bincount per image: exact integer counts
            counts[image] = np.bincount(key[image][voting[image]], minlength=slots * k)
        counts = counts.reshape(n, slots, k)
        counts[:, :, ~self.is_thing_class] = -1.0
        instance_class = counts.argmax(axis=-1)  # [N, slots]
        return np.take_along_axis(instance_class, instance, axis=1)

    def _stuff_kept(self, sem_flat: np.ndarray, is_thing: np.ndarray) -> np.ndarray:
        """Stuff pixels [N, HW] whose class covers at least stuff_area_limit pixels."""
        is_stuff = ~is_thing
        kept = np.zeros_like(is_stuff)
        for image in range(sem_flat.shape[0]):
            area = np.bincount(sem_flat[image][is_stuff[image]], minlength=self.num_classes)
            kept[image] = is_stuff[image] & (area[sem_flat[image]] >= self.config.stuff_area_limit)
        return kept
