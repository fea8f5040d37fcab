"""Raw image -> network input, and network outputs -> COCO panoptic segments, for serving.

One implementation for `axial-deploy serve --panoptic` (in the server's process) and for the
Python-backend models of a generated Triton repository, so both answer the same request with
the same segments. The steps reuse the project's own definitions: `models.preprocess`
(resize + ImageNet normalization), `models.postprocess.PanopticPostProcessor` and
`evaluate.panoptic_to_coco` (segment ids and segments_info).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from axial_deploy.serving import ServeError


def preprocess_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> float32 [3, h, w] at the network's `hw` (the zoo's panoptic
    preprocessing: resize to exactly `hw`, scale to [0, 1], ImageNet normalization)."""
    from PIL import Image

    from axial_deploy.models.preprocess import preprocess_for

    if image.dtype != np.uint8:
        raise ServeError(f"image must be uint8 RGB pixels, got {image.dtype}: send HxWx3 uint8")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ServeError(f"image must be HxWx3 RGB, got shape {list(image.shape)}")
    return preprocess_for("panoptic", hw)(Image.fromarray(image, mode="RGB"))


@dataclass(frozen=True)
class PanopticSettings:
    """What the post-processing needs besides the network outputs: its config (thing ids,
    thresholds) and the categories whose `id` the segments_info reports."""

    thing_ids: tuple[int, ...]
    categories: tuple[dict, ...] = ()  # [{"id", "name", "isthing"}] by train id; empty: id = index
    overrides: dict = field(default_factory=dict)  # PanopticConfig fields, e.g. a recorded top_k

    def to_json(self) -> dict:
        return {**asdict(self), "categories": list(self.categories)}

    @classmethod
    def from_json(cls, data: dict) -> PanopticSettings:
        return cls(
            tuple(data["thing_ids"]), tuple(data.get("categories", ())), data.get("overrides", {})
        )


def panoptic_settings_for(record_name: str | None, thing_ids: str | None) -> PanopticSettings:
    """Settings from a zoo model's shipped record (its classes and recorded post-processing)
    or from explicit `thing_ids` ("3,4,5,6")."""
    if thing_ids:
        try:
            ids = tuple(int(v) for v in thing_ids.split(","))
        except ValueError:
            raise ServeError(f"--thing-ids {thing_ids!r} must be integers, e.g. 3,4,5,6") from None
        return PanopticSettings(ids)
    if record_name is None:
        raise ServeError(
            "panoptic post-processing needs the thing classes: pass --thing-ids 3,4,5,6 or "
            "--panoptic-record NAME (a zoo model with shipped weights, e.g. axial_deeplab_tiny)"
        )
    from axial_deploy.models import pretrained_record

    record = pretrained_record(record_name)
    classes = record.dataset.classes
    categories = tuple(
        {"id": int(c["train_id"]), "name": c["name"], "isthing": int(bool(c["isthing"]))}
        for c in classes
    )
    recorded = dict(record.postprocess or {})
    ids = tuple(recorded.pop("thing_ids", [c["id"] for c in categories if c["isthing"]]))
    return PanopticSettings(ids, categories, recorded)


class PanopticStep:
    """semantic [N, K, h, w], center [N, 1, h, w], offset [N, 2, h, w] -> per image: COCO
    segment ids (int32, resized to the image's own size) and segments_info."""

    def __init__(self, settings: PanopticSettings):
        self.settings = settings
        self._post: dict[tuple[int, int, int], object] = {}  # (classes, h, w) -> processor

    def _processor(self, num_classes: int, hw: tuple[int, int]):
        # PyTorch's post-processor where torch is installed, else its numpy form (equal maps,
        # tests/models/test_postprocess_numpy.py): the Triton image then needs no torch.
        from axial_deploy.evaluation.evaluate import _panoptic_postprocessor
        from axial_deploy.models.panoptic_config import scaled_config

        key = (num_classes, *hw)
        if key not in self._post:
            bad = [c for c in self.settings.thing_ids if c >= num_classes]
            if bad:
                raise ServeError(f"thing ids {bad} are not below the model's {num_classes} classes")
            config = scaled_config(self.settings.thing_ids, hw, **self.settings.overrides)
            self._post[key] = _panoptic_postprocessor(num_classes, config)
        return self._post[key]

    def __call__(
        self, semantic: np.ndarray, center: np.ndarray, offset: np.ndarray, sizes: np.ndarray
    ) -> list[tuple[np.ndarray, list[dict]]]:
        from axial_deploy.evaluation.evaluate import panoptic_to_coco, resize_nearest

        num_classes, hw = semantic.shape[1], tuple(semantic.shape[2:])
        post = self._processor(num_classes, hw)
        maps = (np.ascontiguousarray(a, np.float32) for a in (semantic, center, offset))
        panoptic = post(*maps)[0]
        categories = list(self.settings.categories) or [
            {"id": i, "name": f"class_{i}", "isthing": int(i in self.settings.thing_ids)}
            for i in range(num_classes)
        ]
        results = []
        for index, size in enumerate(np.asarray(sizes).reshape(-1, 2)):
            resized = resize_nearest(panoptic[index], (int(size[0]), int(size[1])))
            ids, segments = panoptic_to_coco(resized, categories, post.config.label_divisor)
            results.append((ids.astype(np.int32), segments))
        return results
