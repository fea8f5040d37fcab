"""The settings of the Panoptic-DeepLab post-processing, importable without torch.

`PanopticConfig` and `scaled_config` are shared by the PyTorch post-processor
(models/postprocess.py, which re-exports them) and its numpy form (models/postprocess_numpy.py,
what `evaluate` runs where torch is not installed).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

CITYSCAPES_THING_IDS: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)


@dataclass(frozen=True)
class PanopticConfig:
    """Hyper-parameters of the post-processing (defaults follow Panoptic-DeepLab)."""

    thing_ids: tuple[int, ...] = CITYSCAPES_THING_IDS  # train ids of "thing" classes
    center_threshold: float = 0.1
    nms_kernel: int = 13  # odd, so the max-pool window is centred on the pixel
    top_k: int = 200
    stuff_area_limit: int = 2048  # stuff segments with fewer pixels become void
    label_divisor: int = 1000
    void_label: int = -1  # panoptic id written for void pixels

    def __post_init__(self) -> None:
        # Accept any iterable of integers (lists, numpy ints) but store a hashable tuple.
        try:
            thing_ids = tuple(operator.index(c) for c in self.thing_ids)
        except TypeError as exc:
            raise ValueError(f"thing_ids must be integers, got {self.thing_ids!r}") from exc
        object.__setattr__(self, "thing_ids", thing_ids)
        if any(c < 0 for c in thing_ids):
            raise ValueError(f"thing_ids must be non-negative, got {thing_ids}")
        if len(set(thing_ids)) != len(thing_ids):
            raise ValueError(f"thing_ids contains duplicates: {thing_ids}")
        if not 0.0 <= self.center_threshold < 1.0:
            raise ValueError(f"center_threshold must be in [0, 1), got {self.center_threshold}")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"nms_kernel must be a positive odd integer, got {self.nms_kernel}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.stuff_area_limit < 0:
            raise ValueError(f"stuff_area_limit must be >= 0, got {self.stuff_area_limit}")
        if self.label_divisor <= self.top_k:
            # Instance ids run up to top_k; they must not spill into the class part.
            raise ValueError(
                f"label_divisor ({self.label_divisor}) must be greater than top_k "
                f"({self.top_k}), the largest instance id"
            )
        if self.void_label >= 0:
            # Non-negative ids are class * label_divisor + instance; void must not clash.
            raise ValueError(f"void_label must be negative, got {self.void_label}")

    def thing_mask(self, num_classes: int) -> list[bool]:
        """Per class, whether it is a thing: the lookup both post-processors (torch and numpy)
        use; refuses a class count the thing ids do not fit."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        bad = [c for c in self.thing_ids if c >= num_classes]
        if bad:
            raise ValueError(f"thing_ids {bad} are not below num_classes ({num_classes})")
        return [c in self.thing_ids for c in range(num_classes)]


def scaled_config(
    thing_ids: tuple[int, ...], input_hw: tuple[int, int], **overrides
) -> PanopticConfig:
    """Panoptic-DeepLab's settings for an input of `input_hw`: its stuff area limit (2048 px at
    1025 x 2049) scaled with the image area, so small inputs keep their stuff segments;
    `overrides` replace other fields (e.g. a trained model's recorded NMS kernel)."""
    area = input_hw[0] * input_hw[1] / (1025 * 2049)
    limit = max(1, round(PanopticConfig.stuff_area_limit * area))
    return PanopticConfig(thing_ids=tuple(thing_ids), **{"stuff_area_limit": limit, **overrides})
