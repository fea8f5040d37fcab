"""Panoptic-DeepLab post-processing as pure, ONNX-exportable tensor ops.

Panoptic-DeepLab (Cheng et al., CVPR 2020) predicts three maps per image: semantic logits,
a class-agnostic instance-center heatmap and, for every pixel, the offset to the center
of its instance. This module turns them into a panoptic id map:

1. ``semantic`` is the argmax over classes.
2. Centers are heatmap pixels above a threshold that survive a max-pool "NMS"; the
   ``top_k`` best are kept, ordered by score (instance id 1 is the highest score).
3. Every "thing" pixel is assigned to the valid center nearest to its predicted center
   ``(y + dy, x + dx)``.
4. Each instance takes the most frequent thing class among its pixels (majority vote).
5. Stuff pixels form one segment per class; classes smaller than ``stuff_area_limit``
   pixels become void.
6. ``panoptic = class * label_divisor + instance`` (things), ``class * label_divisor``
   (stuff), ``void_label`` (void, including thing pixels without any center).

Everything is batched tensor code with no data-dependent Python control flow, so
``torch.onnx.export`` (TorchScript tracing, opset >= 16 for ScatterElements with
``reduction="add"``) produces a graph equivalent to eager PyTorch. The nearest-center
search materialises a ``[N, H*W, top_k]`` distance tensor, which is the price of
avoiding data-dependent shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The settings live in a torch-free module (the numpy post-processor uses them too).
from .panoptic_config import CITYSCAPES_THING_IDS, PanopticConfig, scaled_config

__all__ = [
    "CITYSCAPES_THING_IDS",
    "OUTPUT_NAMES",
    "PanopticConfig",
    "PanopticPostProcessor",
    "outputs_as_dict",
    "scaled_config",
]

# Names of the tensors returned by PanopticPostProcessor.forward, in order; handy as
# ONNX output names.
OUTPUT_NAMES: tuple[str, str, str, str] = ("panoptic", "semantic", "instance", "centers")


def outputs_as_dict(outputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """Names the tuple returned by PanopticPostProcessor.forward (see OUTPUT_NAMES)."""
    return dict(zip(OUTPUT_NAMES, outputs, strict=True))


class PanopticPostProcessor(nn.Module):
    """Turns Panoptic-DeepLab head outputs into panoptic, semantic and instance maps.

    ``forward(semantic_logits [N, K, H, W], center_heatmap [N, 1, H, W],
    offsets [N, 2, H, W])`` returns the tuple ``(panoptic, semantic, instance, centers)``:

    - ``panoptic`` [N, H, W] int64: ``class * label_divisor + instance`` or ``void_label``;
    - ``semantic`` [N, H, W] int64: raw argmax of the logits (before majority vote);
    - ``instance`` [N, H, W] int64: 1-based instance id, 0 for stuff and unassigned pixels;
    - ``centers`` [N, top_k, 3] float: ``(y, x, score)`` per slot, ``(-1, -1, 0)`` if empty.

    Offsets: channel 0 is dy (rows), channel 1 is dx (columns), in pixels.
    """

    def __init__(self, num_classes: int, config: PanopticConfig | None = None) -> None:
        super().__init__()
        # None instead of a PanopticConfig() default: no shared instance in the signature.
        config = PanopticConfig() if config is None else config
        is_thing = torch.tensor(config.thing_mask(num_classes), dtype=torch.bool)
        self.num_classes = num_classes
        self.config = config
        # Class -> is-thing lookup table; exported as a constant of the graph.
        self.register_buffer("is_thing_class", is_thing, persistent=False)

    def forward(
        self, semantic_logits: Tensor, center_heatmap: Tensor, offsets: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if not torch.jit.is_tracing():
            # Shape checks are Python decisions; skip them while tracing for export.
            self._check_inputs(semantic_logits, center_heatmap, offsets)
        cfg = self.config
        n, _, h, w = semantic_logits.shape

        semantic = semantic_logits.argmax(dim=1)  # [N, H, W]
        center_yx, center_scores, center_valid = self._find_centers(center_heatmap)
        instance = self._assign_instances(semantic, offsets, center_yx, center_valid)
        instance_class = self._majority_vote(semantic, instance)

        sem_flat = semantic.reshape(n, h * w)
        is_thing = self.is_thing_class[sem_flat]  # [N, HW]
        stuff_kept = self._stuff_kept(sem_flat, is_thing)

        thing_ids = instance_class * cfg.label_divisor + instance
        stuff_ids = sem_flat * cfg.label_divisor
        panoptic = torch.full_like(sem_flat, cfg.void_label)
        panoptic = torch.where(stuff_kept, stuff_ids, panoptic)
        # Only thing pixels carry an instance > 0; those with none stay void.
        panoptic = torch.where(instance > 0, thing_ids, panoptic)

        empty = torch.full_like(center_yx, -1.0)
        center_yx = torch.where(center_valid.unsqueeze(-1), center_yx, empty)
        scores = torch.where(center_valid, center_scores, torch.zeros_like(center_scores))
        centers = torch.cat([center_yx, scores.unsqueeze(-1)], dim=-1)

        return (
            panoptic.reshape(n, h, w),
            semantic,
            instance.reshape(n, h, w),
            centers,
        )

    def _check_inputs(self, logits: Tensor, heatmap: Tensor, offsets: Tensor) -> None:
        if logits.dim() != 4 or heatmap.dim() != 4 or offsets.dim() != 4:
            raise ValueError("semantic_logits, center_heatmap and offsets must all be 4-D")
        n, k, h, w = logits.shape
        if k != self.num_classes:
            raise ValueError(f"semantic_logits has {k} classes, expected {self.num_classes}")
        if tuple(heatmap.shape) != (n, 1, h, w):
            raise ValueError(f"center_heatmap shape {tuple(heatmap.shape)} != {(n, 1, h, w)}")
        if tuple(offsets.shape) != (n, 2, h, w):
            raise ValueError(f"offsets shape {tuple(offsets.shape)} != {(n, 2, h, w)}")

    def _find_centers(self, center_heatmap: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns center coordinates [N, k, 2] (y, x), scores [N, k] and validity [N, k]."""
        cfg = self.config
        w = center_heatmap.shape[-1]
        heat = center_heatmap[:, 0]  # [N, H, W]
        # Values at or below the threshold can never be centers; -1 keeps them below any
        # score that can be, so they also never win a max-pool window.
        heat = torch.where(heat > cfg.center_threshold, heat, torch.full_like(heat, -1.0))
        pad = cfg.nms_kernel // 2
        pooled = F.max_pool2d(heat.unsqueeze(1), cfg.nms_kernel, stride=1, padding=pad)
        keep = (heat == pooled.squeeze(1)) & (heat > cfg.center_threshold)
        scores = torch.where(keep, heat, torch.full_like(heat, -1.0)).flatten(1)  # [N, HW]
        # Append top_k invalid slots so topk also works on images with < top_k pixels.
        filler = torch.full_like(scores[:, :1], -1.0).expand(-1, cfg.top_k)
        top_scores, top_index = torch.cat([scores, filler], dim=1).topk(cfg.top_k, dim=1)
        valid = top_scores > cfg.center_threshold
        ys = torch.div(top_index, w, rounding_mode="floor")
        xs = top_index - ys * w
        center_yx = torch.stack([ys, xs], dim=-1).to(center_heatmap.dtype)
        return center_yx, top_scores, valid

    def _assign_instances(
        self, semantic: Tensor, offsets: Tensor, center_yx: Tensor, center_valid: Tensor
    ) -> Tensor:
        """Instance id per pixel [N, HW]: 1 + index of the nearest valid center, 0 if none."""
        n, h, w = semantic.shape
        rows = torch.arange(h, dtype=offsets.dtype, device=offsets.device).view(1, h, 1)
        cols = torch.arange(w, dtype=offsets.dtype, device=offsets.device).view(1, 1, w)
        pred_y = (rows + offsets[:, 0]).reshape(n, h * w, 1)
        pred_x = (cols + offsets[:, 1]).reshape(n, h * w, 1)
        # Invalid centers move to infinity, so their squared distance is +inf without a
        # masking pass over the big [N, HW, k] tensor.
        far = torch.full_like(center_yx, float("inf"))
        center_yx = torch.where(center_valid.unsqueeze(-1), center_yx, far)
        # Pixel-major layout: the argmin reduces over the contiguous last axis (faster).
        dy = pred_y - center_yx[:, :, 0].unsqueeze(1)  # [N, HW, k]
        dx = pred_x - center_yx[:, :, 1].unsqueeze(1)
        nearest = (dy * dy + dx * dx).argmin(dim=-1)  # [N, HW]

        is_thing = self.is_thing_class[semantic.reshape(n, h * w)]
        has_center = center_valid.any(dim=1, keepdim=True)  # [N, 1]
        return torch.where(is_thing & has_center, nearest + 1, torch.zeros_like(nearest))

    def _majority_vote(self, semantic: Tensor, instance: Tensor) -> Tensor:
        """Class per pixel [N, HW]: the most frequent thing class of the pixel's instance."""
        n = semantic.shape[0]
        k = self.num_classes
        slots = self.config.top_k + 1  # instance ids 0..top_k
        sem_flat = semantic.reshape(n, -1)
        # One count table row per image: cell (instance, class) at instance * K + class.
        key = instance * k + sem_flat
        weight = (instance > 0).to(torch.float32)  # only thing pixels with an instance vote
        # Built from an input tensor (not torch.zeros(n, ...)) so that the batch size
        # stays dynamic in the exported graph.
        counts = torch.zeros_like(weight[:, :1]).expand(-1, slots * k).contiguous()
        counts = counts.scatter_add(1, key, weight).reshape(n, slots, k)
        # Stuff classes never win (their count is 0 anyway; -1 also beats ties with 0).
        counts = counts.masked_fill(~self.is_thing_class, -1.0)
        instance_class = counts.argmax(dim=-1)  # [N, slots]
        return instance_class.gather(1, instance)

    def _stuff_kept(self, sem_flat: Tensor, is_thing: Tensor) -> Tensor:
        """Stuff pixels [N, HW] whose class covers at least stuff_area_limit pixels."""
        is_stuff = ~is_thing
        # float32 counts are exact up to 2**24 pixels per class, far beyond any image here.
        weight = is_stuff.to(torch.float32)
        area = torch.zeros_like(weight[:, :1]).expand(-1, self.num_classes).contiguous()
        area = area.scatter_add(1, sem_flat, weight)
        return is_stuff & (area.gather(1, sem_flat) >= self.config.stuff_area_limit)
