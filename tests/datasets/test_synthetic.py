"""The synthetic dataset generators: deterministic by seed, valid COCO panoptic format,
consistent semantic / instance maps, void and crowd present, ImageFolder layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from axial_deploy.cli import main
from axial_deploy.datasets.coco_panoptic import load_split, read_segment_png, split_paths
from axial_deploy.datasets.synthetic import (
    CLASSIFICATION_CLASSES,
    PANOPTIC_CLASSES,
    DatasetError,
    generate_classification,
    generate_panoptic,
)

SIZE = (65, 81)  # non-square, so a transposed map would be caught


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def panoptic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("panoptic")
    generate_panoptic(root, seed=0, train=12, val=4, size=SIZE, progress=False)
    return root


def test_panoptic_is_deterministic_by_seed(tmp_path, panoptic):
    generate_panoptic(tmp_path / "same", seed=0, train=12, val=4, size=SIZE, progress=False)
    generate_panoptic(tmp_path / "other", seed=1, train=12, val=4, size=SIZE, progress=False)
    reference = files_of(panoptic)
    same = files_of(tmp_path / "same")
    other = files_of(tmp_path / "other")
    # dataset.json records the output path in its command; everything else is byte-identical
    assert same.keys() == reference.keys()
    for name, data in reference.items():
        if name != "dataset.json":
            assert same[name] == data, name
    assert other.keys() == reference.keys()
    images = [n for n in reference if n.startswith("images/")]
    assert all(other[n] != reference[n] for n in images)
    # image i of a split does not depend on how many images the split has
    generate_panoptic(tmp_path / "fewer", seed=0, train=0, val=2, size=SIZE, progress=False)
    for name in ("val_00000.png", "val_00001.png"):
        assert (tmp_path / "fewer/images/val" / name).read_bytes() == reference[
            f"images/val/{name}"
        ]


@pytest.mark.parametrize("split", ["train", "val"])
def test_panoptic_format_is_valid(panoptic, split):
    json_path, segments_dir, images_dir = split_paths(panoptic, split)
    data = load_split(json_path)
    raw = json.loads(json_path.read_text())
    categories = data.categories
    assert [c["name"] for c in categories] == [c.name for c in PANOPTIC_CLASSES]
    assert [c["isthing"] for c in categories] == [int(c.isthing) for c in PANOPTIC_CLASSES]
    assert all(set(c) == {"id", "name", "isthing", "color", "supercategory"} for c in categories)
    by_id = {c["id"]: (train_id, c) for train_id, c in enumerate(categories)}
    assert len(raw["images"]) == len(data.annotations) == (12 if split == "train" else 4)
    image_ids = {image["id"] for image in raw["images"]}
    for image, annotation in zip(raw["images"], data.annotations, strict=True):
        assert annotation["image_id"] == image["id"] and image["id"] in image_ids
        assert (image["height"], image["width"]) == SIZE
        name = annotation["file_name"]
        assert image["file_name"] == name
        with Image.open(images_dir / name) as rgb:
            assert rgb.mode == "RGB" and (rgb.height, rgb.width) == SIZE
        ids = read_segment_png(segments_dir / name)
        segments = annotation["segments_info"]
        present = set(np.unique(ids).tolist()) - {0}
        assert present == {s["id"] for s in segments}
        semantic = np.asarray(Image.open(panoptic / "semantic" / split / name))
        instance = np.asarray(Image.open(panoptic / "instance" / split / name))
        assert semantic.dtype == np.uint8 and instance.dtype == np.uint16
        assert np.array_equal(semantic == 255, ids == 0)  # void agrees
        for segment in segments:
            mask = ids == segment["id"]
            assert segment["area"] == int(mask.sum())
            rows, cols = np.nonzero(mask)
            x, y, w, h = segment["bbox"]
            assert (x, y, w, h) == (
                cols.min(),
                rows.min(),
                cols.max() - cols.min() + 1,
                rows.max() - rows.min() + 1,
            )
            train_id, category = by_id[segment["category_id"]]
            assert (semantic[mask] == train_id).all()
            assert segment["iscrowd"] in (0, 1)
            if segment["iscrowd"]:
                assert category["isthing"]
            ins = np.unique(instance[mask])
            if category["isthing"] and not segment["iscrowd"]:
                assert ins.size == 1 and ins[0] > 0  # one instance id per thing segment
            else:
                assert (ins == 0).all()


def test_panoptic_has_void_crowd_and_every_class(panoptic):
    json_path, segments_dir, _ = split_paths(panoptic, "train")
    data = load_split(json_path)
    segments = [s for a in data.annotations for s in a["segments_info"]]
    assert any(s["iscrowd"] for s in segments)
    assert {s["category_id"] for s in segments} == {c["id"] for c in data.categories}
    void = sum(
        int((read_segment_png(segments_dir / a["file_name"]) == 0).sum()) for a in data.annotations
    )
    assert void > 0
    record = json.loads((panoptic / "dataset.json").read_text())
    assert record["seed"] == 0 and record["size"] == list(SIZE)
    assert record["counts"]["train"]["images"] == 12
    assert [c["isthing"] for c in record["classes"]] == [c.isthing for c in PANOPTIC_CLASSES]
    assert record["command"].startswith("axial-deploy dataset panoptic")


def test_classification_layout_and_determinism(tmp_path):
    a = generate_classification(tmp_path / "a", seed=3, train=10, val=5, progress=False)
    generate_classification(tmp_path / "b", seed=3, train=10, val=5, progress=False)
    assert a["counts"]["train"]["per_class"] == [2] * len(CLASSIFICATION_CLASSES)
    for split, n in (("train", 10), ("val", 5)):
        folders = sorted(p.name for p in (tmp_path / "a" / split).iterdir())
        assert folders == sorted(CLASSIFICATION_CLASSES)
        pngs = list((tmp_path / "a" / split).rglob("*.png"))
        assert len(pngs) == n
        for png in pngs:
            with Image.open(png) as image:
                assert image.mode == "RGB" and image.size == (64, 64)
            assert (
                png.read_bytes() == (tmp_path / "b" / png.relative_to(tmp_path / "a")).read_bytes()
            )
    assert json.loads((tmp_path / "a/dataset.json").read_text())["classes"] == list(
        CLASSIFICATION_CLASSES
    )


def test_dataset_cli_and_bad_arguments(tmp_path, capsys):
    assert (
        main(
            [
                "dataset",
                "panoptic",
                "-o",
                str(tmp_path / "p"),
                "--train",
                "2",
                "--val",
                "1",
                "--size",
                "48x64",
            ]
        )
        == 0
    )
    assert "train: 2 images" in capsys.readouterr().out
    with Image.open(tmp_path / "p/images/val/val_00000.png") as image:
        assert image.size == (64, 48)
    assert main(["dataset", "panoptic", "-o", str(tmp_path / "q"), "--size", "8x8"]) == 2
    assert "must lie within" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="--train must be >= 0"):
        generate_panoptic(tmp_path / "r", train=-1, progress=False)
