"""Synthetic datasets, deterministic by seed: panoptic scenes and shape classification.

No public dataset can be downloaded on our machines, yet an accuracy number (FP32 vs FP16 vs
INT8) and a demo need a model that has really learned something. These generators make a
small, real dataset in seconds (numpy + PIL, every shape drawn as a vectorized mask):

* panoptic: "stuff" regions (sky with a vertical gradient, a textured wall, ground with
  stripes and a perspective gradient) below a wavy horizon, and "thing" instances of four
  shape classes (disc, box, triangle, ring) with varied size, rotation, color, texture,
  occlusion and pixel noise. Written in the COCO panoptic format (`coco_panoptic.py`),
  plus semantic (uint8 train ids, 255 = void) and instance (uint16, 0 = none) maps. Some
  pixels are void (an unlabeled clutter patch, instances occluded below a minimum area)
  and some images carry a crowd segment (``iscrowd: 1``: a cluster of small shapes of one
  class), so evaluators exercise void and crowd handling.
* classification: one shape (5 classes) on a random stuff background, ImageFolder layout.

Image i of split s is drawn from its own generator seeded by (seed, s, i): any image can be
regenerated alone, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import colorsys
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from axial_deploy.artifacts import (
    MAX_SIDE,  # the largest side any option takes
    atomic_output,
    check_fields,
    read_json,
    remove_stale_temporaries,
    write_json,
)
from axial_deploy.datasets.coco_panoptic import split_paths, write_segment_png
from axial_deploy.errors import AxialDeployError
from axial_deploy.progress import progress_bar

VOID = 255  # semantic-map value of void pixels
LABEL_DIVISOR = 1000  # panoptic segment id = category_id * LABEL_DIVISOR + instance
SPLITS = ("train", "val")
# Split index in the per-image seed: the val images never repeat train images.
_SPLIT_INDEX = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ClassInfo:
    name: str
    isthing: bool
    color: tuple[int, int, int]  # display color of the category (COCO "color")


# Train-id order: model class c is PANOPTIC_CLASSES[c]; its COCO category id is c + 1.
PANOPTIC_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo("sky", False, (70, 130, 180)),
    ClassInfo("wall", False, (102, 102, 156)),
    ClassInfo("ground", False, (152, 251, 152)),
    ClassInfo("disc", True, (220, 20, 60)),
    ClassInfo("box", True, (0, 0, 142)),
    ClassInfo("triangle", True, (250, 170, 30)),
    ClassInfo("ring", True, (119, 11, 32)),
)
TRAIN_ID = {c.name: train_id for train_id, c in enumerate(PANOPTIC_CLASSES)}
THING_SHAPES = ("disc", "box", "triangle", "ring")
CLASSIFICATION_CLASSES: tuple[str, ...] = ("disc", "box", "triangle", "ring", "cross")
# Each thing class leans towards a hue (colors vary around it), as real classes do.
_THING_HUE = {"disc": 0.0, "box": 0.6, "triangle": 0.15, "ring": 0.8, "cross": 0.35}
MIN_VISIBLE_AREA = 24  # instances occluded below this many pixels become void


class DatasetError(AxialDeployError, ValueError):
    """Bad generator arguments (sizes, counts)."""


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_INDEX[split], index])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return ys, xs


# ---------------------------------------------------------------- stuff ----------------


def _stuff_layout(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[H, W] stuff train ids: sky above a wavy horizon, ground below, a wall block on it."""
    ys, xs = _grid(height, width)
    horizon = height * rng.uniform(0.3, 0.6)
    tilt = rng.uniform(-0.25, 0.25)
    wave = rng.uniform(0, 0.06 * height) * np.sin(
        xs / width * rng.uniform(2, 9) + rng.uniform(0, 6)
    )
    line = horizon + tilt * (xs - width / 2) + wave
    stuff = np.where(ys < line, 0, 2).astype(np.uint8)
    if rng.random() < 0.75:  # a wall standing on the horizon over part of the width
        left = rng.uniform(-0.2, 0.6) * width
        right = left + rng.uniform(0.3, 0.8) * width
        top = horizon - rng.uniform(0.15, 0.35) * height
        wall = (xs >= left) & (xs < right) & (ys >= top) & (ys < line)
        stuff[wall] = 1
    return stuff


def _stuff_texture(
    rng: np.random.Generator, stuff: np.ndarray, image: np.ndarray, ys: np.ndarray, xs: np.ndarray
) -> None:
    """Paints each stuff class with its own kind of texture into `image` [H, W, 3] in [0, 1]."""
    height = stuff.shape[0]
    # sky: a vertical gradient between two blue-ish colors
    top = _hsv(rng.uniform(0.52, 0.66), rng.uniform(0.3, 0.8), rng.uniform(0.6, 1.0))
    bottom = _hsv(rng.uniform(0.5, 0.62), rng.uniform(0.1, 0.4), rng.uniform(0.8, 1.0))
    t = (ys / height)[..., None]
    sky = top * (1 - t) + bottom * t
    # wall: bricks (rows of offset rectangles) with mortar lines
    brick = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.3, 0.7), rng.uniform(0.4, 0.8))
    mortar = _hsv(0.1, 0.1, rng.uniform(0.6, 0.9))
    bh = rng.uniform(5, 10)
    bw = bh * rng.uniform(1.8, 2.6)
    row = np.floor(ys / bh)
    shifted = xs + (row % 2) * bw / 2
    is_mortar = ((ys % bh) < 1.2) | ((shifted % bw) < 1.2)
    wall = np.where(is_mortar[..., None], mortar, brick)
    # ground: a perspective gradient with diagonal stripes
    near = _hsv(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6))
    far = _hsv(rng.uniform(0.08, 0.2), rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.8))
    ground = far * (1 - t) + near * t
    period = rng.uniform(6, 14)
    stripes = 0.12 * np.sin((xs + rng.uniform(-1, 1) * ys) * (2 * np.pi / period))
    ground = ground * (1 + stripes[..., None])
    for cls, layer in ((0, sky), (1, wall), (2, ground)):
        mask = stuff == cls
        image[mask] = layer[mask]


# ---------------------------------------------------------------- things ---------------


def _shape_mask(
    shape: str, ys: np.ndarray, xs: np.ndarray, cy: float, cx: float, r: float, angle: float
) -> np.ndarray:
    """Boolean mask of a shape of radius ~r centred at (cy, cx), rotated by `angle`."""
    dy, dx = ys - cy, xs - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u = cos * dx + sin * dy  # rotated coordinates
    v = -sin * dx + cos * dy
    if shape == "disc":
        return (u / r) ** 2 + (v / (0.8 * r)) ** 2 <= 1.0
    if shape == "box":
        return (np.abs(u) <= r * 0.9) & (np.abs(v) <= r * 0.65)
    if shape == "triangle":  # equilateral: three half-planes at 120 degrees
        inside = np.ones(ys.shape, bool)
        for k in range(3):
            a = angle + k * 2 * np.pi / 3
            inside &= (np.cos(a) * dx + np.sin(a) * dy) <= 0.5 * r
        return inside
    if shape == "ring":
        d = (u / r) ** 2 + (v / r) ** 2
        return (d <= 1.0) & (d >= 0.3)
    if shape == "cross":
        return ((np.abs(u) <= r) & (np.abs(v) <= 0.3 * r)) | (
            (np.abs(v) <= r) & (np.abs(u) <= 0.3 * r)
        )
    raise ValueError(f"unknown shape {shape!r}")


def _thing_color(
    rng: np.random.Generator, shape: str, ys: np.ndarray, xs: np.ndarray, r: float
) -> np.ndarray:
    """[H, W, 3] appearance of a thing: a hue near its class's, a gradient and a texture."""
    hue = _THING_HUE[shape] + rng.normal(0, 0.05)
    base = _hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))
    gy, gx = rng.normal(0, 1, 2)
    gradient = 1 + 0.25 * (gy * ys + gx * xs - (gy * ys + gx * xs).mean()) / (4 * r)
    texture = rng.integers(3)
    if texture == 1:  # stripes
        period = rng.uniform(3, 7)
        gradient = gradient * (1 + 0.2 * np.sign(np.sin((xs + ys) * 2 * np.pi / period)))
    elif texture == 2:  # dots
        period = rng.uniform(4, 7)
        dots = (np.sin(xs * 2 * np.pi / period) * np.sin(ys * 2 * np.pi / period)) > 0.6
        gradient = gradient * np.where(dots, 0.7, 1.0)
    return base * np.clip(gradient, 0.5, 1.5)[..., None]


def _draw_panoptic(rng: np.random.Generator, height: int, width: int):
    """One scene: (image uint8 [H, W, 3], semantic uint8 [H, W], instance uint16 [H, W],
    crowd mask bool [H, W])."""
    ys, xs = _grid(height, width)
    image = np.zeros((height, width, 3), np.float32)
    semantic = _stuff_layout(rng, height, width)
    _stuff_texture(rng, semantic, image, ys, xs)
    instance = np.zeros((height, width), np.int32)  # provisional: drawing order + 1
    crowd = np.zeros((height, width), bool)
    void = np.zeros((height, width), bool)
    scale = min(height, width)

    count = int(rng.integers(2, 8))
    shapes = [THING_SHAPES[i] for i in rng.integers(len(THING_SHAPES), size=count)]
    for index, shape in enumerate(shapes, start=1):
        r = scale * rng.uniform(0.07, 0.2)
        cy, cx = rng.uniform(0.1, 0.95) * height, rng.uniform(0.05, 0.95) * width
        mask = _shape_mask(shape, ys, xs, cy, cx, r, rng.uniform(0, 2 * np.pi))
        color = _thing_color(rng, shape, ys, xs, r)
        image[mask] = color[mask]
        semantic[mask] = TRAIN_ID[shape]
        instance[mask] = index  # later shapes occlude earlier ones
        crowd[mask] = False
        void[mask] = False

    if rng.random() < 0.3:  # a crowd: a cluster of small shapes of one class, one segment
        shape = THING_SHAPES[int(rng.integers(len(THING_SHAPES)))]
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        for _ in range(int(rng.integers(4, 9))):
            r = scale * rng.uniform(0.03, 0.05)
            oy, ox = rng.normal(0, scale * 0.06, 2)
            mask = _shape_mask(shape, ys, xs, cy + oy, cx + ox, r, rng.uniform(0, 2 * np.pi))
            color = _thing_color(rng, shape, ys, xs, r)
            image[mask] = color[mask]
            semantic[mask] = TRAIN_ID[shape]
            instance[mask] = 0
            crowd[mask] = True
            void[mask] = False

    if rng.random() < 0.5:  # unlabeled clutter: a noisy gray patch, void in the labels
        h, w = rng.uniform(0.08, 0.18, 2) * scale
        top, left = rng.uniform(0, height - h), rng.uniform(0, width - w)
        mask = (ys >= top) & (ys < top + h) & (xs >= left) & (xs < left + w)
        gray = rng.uniform(0.2, 0.8) + 0.15 * rng.standard_normal((height, width))
        image[mask] = np.clip(gray[mask], 0, 1)[:, None]
        void |= mask
        crowd &= ~mask
        instance[mask] = 0

    # Instances occluded below a minimum visible area are too small to label: void.
    areas = np.bincount(instance.ravel(), minlength=count + 1)
    tiny = np.flatnonzero((areas > 0) & (areas < MIN_VISIBLE_AREA))
    tiny = tiny[tiny > 0]
    void |= np.isin(instance, tiny)
    instance[void] = 0
    semantic[void] = VOID

    # Renumber the surviving instances 1..n in drawing order.
    survivors = np.unique(instance[instance > 0])
    lookup = np.zeros(count + 1, np.int32)
    lookup[survivors] = np.arange(1, survivors.size + 1)
    instance = lookup[instance]

    image += rng.normal(0, 0.03, image.shape).astype(np.float32)  # sensor noise
    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return pixels, semantic, instance.astype(np.uint16), crowd


def panoptic_segments(
    semantic: np.ndarray, instance: np.ndarray, crowd: np.ndarray
) -> tuple[np.ndarray, list[dict]]:
    """Semantic/instance/crowd maps -> (segment-id map, COCO segments_info).

    Stuff and crowd regions are one segment per class (id = category_id * 1000, crowd
    thing segments marked iscrowd = 1), thing instances category_id * 1000 + instance.
    """
    category = semantic.astype(np.int64) + 1
    ids = np.where(semantic == VOID, 0, category * LABEL_DIVISOR + instance)
    segments = []
    for segment_id in np.unique(ids):
        if segment_id == 0:
            continue
        mask = ids == segment_id
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        train_id = int(segment_id // LABEL_DIVISOR) - 1
        isthing = PANOPTIC_CLASSES[train_id].isthing
        segments.append(
            {
                "id": int(segment_id),
                "category_id": train_id + 1,
                "area": int(mask.sum()),
                "bbox": [
                    int(cols[0]),
                    int(rows[0]),
                    int(cols[-1] - cols[0] + 1),
                    int(rows[-1] - rows[0] + 1),
                ],
                "iscrowd": int(isthing and segment_id % LABEL_DIVISOR == 0 and crowd[mask].all()),
            }
        )
    return ids, segments


def panoptic_categories() -> list[dict]:
    """COCO categories in train-id order (category id = train id + 1)."""
    return [
        {
            "id": train_id + 1,
            "name": c.name,
            "isthing": int(c.isthing),
            "color": list(c.color),
            "supercategory": "thing" if c.isthing else "stuff",
        }
        for train_id, c in enumerate(PANOPTIC_CLASSES)
    ]


def _save_png(path: Path, array: np.ndarray) -> None:
    """uint8 [H, W, 3] -> RGB, uint8 [H, W] -> L, uint16 [H, W] -> 16-bit gray PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _check_args(counts: dict[str, int], size: tuple[int, int], minimum: int) -> None:
    for split, n in counts.items():
        if n < 0:
            raise DatasetError(f"--{split} must be >= 0 images, got {n}")
    if min(size) < minimum or max(size) > 4096:
        raise DatasetError(
            f"image size {size[0]}x{size[1]} must lie within [{minimum}, 4096] pixels per side"
        )


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["axial-deploy", *sys.argv[1:]])


def generate_panoptic(
    out: str | Path,
    seed: int = 0,
    train: int = 500,
    val: int = 100,
    size: tuple[int, int] = (129, 129),
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Writes the synthetic panoptic dataset under `out`; returns its dataset.json record."""
    counts = {"train": train, "val": val}
    _check_args(counts, size, minimum=32)
    with dataset_folder(out) as folder:
        return _write_panoptic(folder, Path(out), seed, counts, size, command, progress)


def _write_panoptic(out, final, seed, counts, size, command, progress) -> dict:
    height, width = size
    categories = panoptic_categories()
    totals = {}
    for split, n in counts.items():
        json_path, segments_dir, images_dir = split_paths(out, split)
        images, annotations = [], []
        segment_count = crowd_count = 0
        for index in progress_bar(
            range(n), desc=f"panoptic {split}", unit="img", disable=not progress
        ):
            name = f"{split}_{index:05d}"
            pixels, semantic, instance, crowd = _draw_panoptic(_rng(seed, split, index), *size)
            ids, segments = panoptic_segments(semantic, instance, crowd)
            _save_png(images_dir / f"{name}.png", pixels)
            segments_dir.mkdir(parents=True, exist_ok=True)
            write_segment_png(segments_dir / f"{name}.png", ids)
            _save_png(out / "semantic" / split / f"{name}.png", semantic)
            _save_png(out / "instance" / split / f"{name}.png", instance)
            images.append(
                {"id": index, "file_name": f"{name}.png", "height": height, "width": width}
            )
            annotations.append(
                {"image_id": index, "file_name": f"{name}.png", "segments_info": segments}
            )
            segment_count += len(segments)
            crowd_count += sum(s["iscrowd"] for s in segments)
        document = {"images": images, "annotations": annotations, "categories": categories}
        write_json(json_path, document, indent=None)  # compact: hundreds of annotations
        totals[split] = {"images": n, "segments": segment_count, "crowd_segments": crowd_count}
    record = {
        "generator": "axial_deploy.datasets.synthetic.generate_panoptic",
        "kind": "panoptic",
        "seed": seed,
        "size": [height, width],
        "counts": totals,
        "label_divisor": LABEL_DIVISOR,
        "void_semantic_value": VOID,
        "classes": [
            {"train_id": i, "name": c.name, "isthing": c.isthing}
            for i, c in enumerate(PANOPTIC_CLASSES)
        ],
        "command": command
        or f"axial-deploy dataset panoptic -o {final} --seed {seed} --train {counts['train']} "
        f"--val {counts['val']} --size {height}x{width}",
    }
    write_json(out / "dataset.json", record)
    return record


# ---------------------------------------------------------------- classification -------


def _draw_classification(rng: np.random.Generator, label: int, height: int, width: int):
    ys, xs = _grid(height, width)
    image = np.zeros((height, width, 3), np.float32)
    stuff = _stuff_layout(rng, height, width)
    _stuff_texture(rng, stuff, image, ys, xs)
    shape = CLASSIFICATION_CLASSES[label]
    scale = min(height, width)
    r = scale * rng.uniform(0.2, 0.35)
    cy, cx = (0.5 + rng.uniform(-0.15, 0.15, 2)) * (height, width)
    mask = _shape_mask(shape, ys, xs, cy, cx, r, rng.uniform(0, 2 * np.pi))
    # Hue is random here: the class is the shape alone.
    color = _thing_color(rng, shape, ys, xs, r)
    color = np.roll(color, int(rng.integers(3)), axis=-1)
    image[mask] = color[mask]
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate_classification(
    out: str | Path,
    seed: int = 0,
    train: int = 4000,
    val: int = 500,
    size: tuple[int, int] = (64, 64),
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Writes the shape classification dataset (ImageFolder layout) under `out`."""
    counts = {"train": train, "val": val}
    _check_args(counts, size, minimum=16)
    with dataset_folder(out) as folder:
        return _write_classification(folder, Path(out), seed, counts, size, command, progress)


def _write_classification(out, final, seed, counts, size, command, progress) -> dict:
    height, width = size
    per_class: dict[str, list[int]] = {}
    for split, n in counts.items():
        tally = [0] * len(CLASSIFICATION_CLASSES)
        for index in progress_bar(
            range(n), desc=f"classification {split}", unit="img", disable=not progress
        ):
            label = index % len(CLASSIFICATION_CLASSES)  # balanced classes
            pixels = _draw_classification(_rng(seed, split, index), label, *size)
            name = CLASSIFICATION_CLASSES[label]
            _save_png(out / split / name / f"{split}_{index:05d}.png", pixels)
            tally[label] += 1
        for name in CLASSIFICATION_CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)  # even when empty
        per_class[split] = tally
    record = {
        "generator": "axial_deploy.datasets.synthetic.generate_classification",
        "kind": "classification",
        "seed": seed,
        "size": [height, width],
        "counts": {
            split: {"images": n, "per_class": per_class[split]} for split, n in counts.items()
        },
        "classes": list(CLASSIFICATION_CLASSES),
        "command": command
        or f"axial-deploy dataset classification -o {final} --seed {seed} "
        f"--train {counts['train']} --val {counts['val']} --size {height}x{width}",
    }
    write_json(out / "dataset.json", record)
    return record


# Keys of DIR/dataset.json that readers use, and their JSON types
RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "seed": (int,), "size": (list,), "counts": (dict,), "command": (str,),
}  # fmt: skip


def read_dataset_record(root: str | Path) -> dict:
    """DIR/dataset.json of a generated dataset: one clear error naming the file and the key
    when it is missing, unreadable, or lacks a key (or has one of the wrong type)."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DatasetError(
            f"{path} not found: generate the dataset first, e.g. "
            f"`axial-deploy dataset panoptic -o {root}`"
        )
    fix = "regenerate the dataset with `axial-deploy dataset`"
    record = read_json(path, DatasetError, "dataset record", fix)
    check_fields(record, RECORD_TYPES, path=path, error=DatasetError, fix=fix,
                 required=("kind", "size"))  # fmt: skip
    size = record["size"]
    if not (
        len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in size)
    ):
        raise DatasetError(
            f"{path}: key 'size' must be [height, width] with 1 <= each <= {MAX_SIDE}, not "
            f"{json.dumps(size)[:40]}; {fix}"
        )
    return record


@contextlib.contextmanager
def dataset_folder(out: str | Path) -> Iterator[Path]:
    """A temporary sibling of `out` to write a dataset into, swapped in for `out` on success
    (its old contents go) and removed on failure, so a killed run never mixes old and new
    files. A lock beside `out` refuses a second writer while one is active."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file: give a folder for the dataset")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(
                f"another run is writing the dataset {out}: wait for it or choose another -o"
            ) from None
        remove_stale_temporaries(out)
        folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp",
                                       dir=out.parent))  # fmt: skip
        try:
            yield folder
            _swap(folder, out)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _swap(new: Path, out: Path) -> None:
    if not out.exists():
        os.replace(new, out)
        return
    old = out.parent / f".{out.name}.{os.getpid()}.old.tmp"
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
