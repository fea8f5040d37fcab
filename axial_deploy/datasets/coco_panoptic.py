"""The COCO panoptic file format (what COCO and Cityscapes panoptic use), read and written.

A dataset split ``S`` in a directory ``DIR`` (the layout our synthetic generator writes and
``axial-deploy evaluate`` reads):

    DIR/panoptic_S.json      {"images": [...], "annotations": [...], "categories": [...]}
    DIR/panoptic_S/NAME.png  RGB segment-id map: id = R + 256 G + 256^2 B, 0 = void
    DIR/images/S/NAME.png    the RGB input image of annotation NAME

Each annotation is ``{"image_id", "file_name", "segments_info": [{"id", "category_id",
"area", "bbox", "iscrowd"}]}``; each category ``{"id", "name", "isthing", "color",
"supercategory"}``. Categories are listed in train-id order: a model's class c is
``categories[c]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from axial_deploy.artifacts import atomic_output, check_fields, read_json
from axial_deploy.errors import AxialDeployError

VOID_ID = 0


class PanopticFormatError(AxialDeployError, ValueError):
    """A panoptic JSON or PNG that does not follow the COCO panoptic format."""


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 colors -> int64 segment ids (R + 256 G + 256^2 B)."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """int segment ids -> [..., 3] uint8 colors; inverse of rgb_to_id for ids < 256^3."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise PanopticFormatError("segment ids must lie in [0, 256^3)")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_segment_png(path: str | Path) -> np.ndarray:
    """An RGB segment-id PNG -> [H, W] int64 segment ids."""
    from axial_deploy.models.preprocess import ImageError, open_image

    try:
        with open_image(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except ImageError as error:
        raise PanopticFormatError(f"panoptic PNG: {error}") from None
    return rgb_to_id(rgb)


def write_segment_png(path: str | Path, ids: np.ndarray) -> None:
    """[H, W] segment ids -> an RGB PNG, written atomically."""
    with atomic_output(path) as tmp:
        Image.fromarray(id_to_rgb(ids), mode="RGB").save(tmp, format="PNG")


@dataclass
class PanopticSplit:
    """One split's JSON, with the paths that resolve its file names."""

    json_path: Path
    segments_dir: Path
    data: dict

    @property
    def categories(self) -> list[dict]:
        return self.data["categories"]

    @property
    def annotations(self) -> list[dict]:
        return self.data["annotations"]

    def segment_png(self, annotation: dict) -> Path:
        """The segment-id PNG of an annotation, inside the split's segment folder."""
        return file_inside(self.segments_dir, annotation["file_name"], self.json_path)

    def image_file(self, images_dir: Path, annotation: dict) -> Path:
        """The input image of an annotation: IMAGES/NAME.png (NAME of its PNG), else the file
        name of its `images` entry; both must stay inside `images_dir`."""
        name = Path(annotation["file_name"]).with_suffix(".png").name
        candidates = [file_inside(images_dir, name, self.json_path)]
        entry = self._images_by_id().get(annotation["image_id"])
        if entry is not None and "file_name" in entry:
            candidates.append(file_inside(images_dir, entry["file_name"], self.json_path))
        for path in candidates:
            if path.is_file():
                return path
        raise PanopticFormatError(
            f"no input image for {annotation['file_name']}: looked for {candidates[0]}"
        )

    def _images_by_id(self) -> dict:
        return {image.get("id"): image for image in self.data.get("images", [])}


def file_inside(folder: Path, name: str, listed_in: Path) -> Path:
    """`folder`/`name`, refused when `name` leaves `folder` (../, absolute paths, links out):
    a dataset's JSON may only name files inside the dataset."""
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise PanopticFormatError(
            f"{listed_in} names {name!r}, which leaves {folder}: file names in a dataset "
            "must stay inside its folders; fix the JSON"
        )
    return path


def split_paths(root: str | Path, split: str) -> tuple[Path, Path, Path]:
    """(panoptic JSON, segment PNG folder, image folder) of split `split` under `root`."""
    root = Path(root)
    return root / f"panoptic_{split}.json", root / f"panoptic_{split}", root / "images" / split


def load_split(json_path: str | Path, segments_dir: str | Path | None = None) -> PanopticSplit:
    """Reads a panoptic JSON (segments_dir defaults to the folder named like the JSON)."""
    json_path = Path(json_path)
    data = read_json(json_path, PanopticFormatError, "panoptic JSON", "give a COCO panoptic JSON")
    _check_split(json_path, data)
    if segments_dir is None:
        segments_dir = json_path.with_suffix("")
    return PanopticSplit(json_path=json_path, segments_dir=Path(segments_dir), data=data)


# The keys every reader of a COCO panoptic JSON relies on, and their JSON types
CATEGORY_TYPES = {"id": (int,), "name": (str,), "isthing": (int, bool), "color": (list,)}
ANNOTATION_TYPES = {"image_id": (int, str), "file_name": (str,), "segments_info": (list,)}
SEGMENT_TYPES = {"id": (int,), "category_id": (int,), "area": (int, float), "iscrowd": (int, bool)}
COCO_FIX = "fix the JSON (COCO panoptic format)"


def _check_split(json_path: Path, data) -> None:
    """The keys every reader relies on, so a malformed JSON is one clear error up front naming
    the key, where it is and the type expected."""
    fields = {"annotations": (list,), "categories": (list,)}
    check_fields(data, fields, path=json_path, error=PanopticFormatError, fix=COCO_FIX,
                 required=tuple(fields))  # fmt: skip
    known = set()
    for number, category in enumerate(data["categories"]):
        check_fields(category, CATEGORY_TYPES, path=json_path, error=PanopticFormatError,
                     fix=COCO_FIX, required=("id",), where=f"category {number}: ")  # fmt: skip
        known.add(category["id"])
    for number, ann in enumerate(data["annotations"]):
        check_fields(ann, ANNOTATION_TYPES, path=json_path, error=PanopticFormatError,
                     fix=COCO_FIX, required=tuple(ANNOTATION_TYPES),
                     where=f"annotation {number}: ")  # fmt: skip
        for index, segment in enumerate(ann["segments_info"]):
            where = f"annotation {number} ({ann['file_name']}) segment {index}: "
            check_fields(segment, SEGMENT_TYPES, path=json_path, error=PanopticFormatError,
                         fix=COCO_FIX, required=("id",), where=where)  # fmt: skip
            if segment.get("category_id") not in known:
                raise PanopticFormatError(
                    f"{json_path}: {where}category_id {segment.get('category_id')!r} is not "
                    f"among the 'categories'; {COCO_FIX}"
                )
