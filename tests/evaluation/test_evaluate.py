"""Evaluation: COCO-panoptic PQ on files, `evaluate` on models, the accuracy gate."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from axial_deploy.datasets.coco_panoptic import read_segment_png, write_segment_png
from axial_deploy.evaluation.evaluate import (
    EvaluationError,
    EvaluationResult,
    accuracy_gate,
    comparison_table,
    evaluate,
    pq_compute_files,
)
from axial_deploy.models.metrics import PanopticQuality

CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0, "color": [128, 64, 128], "supercategory": "s"},
    {"id": 3, "name": "car", "isthing": 1, "color": [0, 0, 142], "supercategory": "t"},
    {"id": 11, "name": "person", "isthing": 1, "color": [220, 20, 60], "supercategory": "t"},
]


def segments_of(ids: np.ndarray, cats: dict[int, int], crowd=()) -> list[dict]:
    """segments_info for the non-zero ids of a map, areas counted from the pixels."""
    out = []
    for segment_id in sorted(cats):
        area = int((ids == segment_id).sum())
        out.append(
            {
                "id": segment_id,
                "category_id": cats[segment_id],
                "area": area,
                "bbox": [0, 0, 1, 1],
                "iscrowd": int(segment_id in crowd),
            }
        )
    return out


def write_split(folder: Path, name: str, images: list[tuple[np.ndarray, list[dict]]]) -> Path:
    """Writes NAME.json + NAME/*.png in COCO panoptic format; returns the JSON path."""
    annotations = []
    for i, (ids, segments) in enumerate(images):
        write_segment_png(folder / name / f"img{i}.png", ids)
        annotations.append({"image_id": i, "file_name": f"img{i}.png", "segments_info": segments})
    info = [{"id": i, "file_name": f"img{i}.png", "height": ids.shape[0], "width": ids.shape[1]}
            for i, (ids, _) in enumerate(images)]  # fmt: skip
    path = folder / f"{name}.json"
    path.write_text(
        json.dumps({"images": info, "annotations": annotations, "categories": CATEGORIES})
    )
    return path


def score(tmp_path: Path, gt_images, pred_images) -> dict:
    gt = write_split(tmp_path, "gt", gt_images)
    pred = write_split(tmp_path, "pred", pred_images)
    return pq_compute_files(gt, None, pred, None)


# ---------------------------------------------------------------- hand-made cases


def test_perfect_match_is_pq_one(tmp_path):
    ids = np.zeros((8, 8), np.int64)
    ids[:, :4] = 1
    ids[2:6, 5:7] = 2
    cats = {1: 7, 2: 3}
    r = score(tmp_path, [(ids, segments_of(ids, cats))], [(ids, segments_of(ids, cats))])
    assert r["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert r["things"]["n"] == 1 and r["stuff"]["n"] == 1


def test_iou_06_match_gives_sq_06_rq_1(tmp_path):
    gt = np.zeros((1, 10), np.int64)
    gt[0, :6] = 5
    pred = np.zeros((1, 10), np.int64)
    pred[0, :10] = 9  # intersection 6, union 10 -> IoU 0.6
    r = score(tmp_path, [(gt, segments_of(gt, {5: 3}))], [(pred, segments_of(pred, {9: 3}))])
    # gt void is column 6..9: the prediction's part on void (4 px) leaves the union -> 6/6
    assert r["all"]["sq"] == pytest.approx(1.0)
    gt[0, 6:] = 6  # now a stuff segment there: no void, IoU = 6 / 10
    r = score(
        tmp_path,
        [(gt, segments_of(gt, {5: 3, 6: 7}))],
        [(pred, segments_of(pred, {9: 3}))],
    )
    car = r["per_class"][3]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 0, 0)
    assert car["sq"] == pytest.approx(0.6) and car["rq"] == 1.0 and car["pq"] == pytest.approx(0.6)
    road = r["per_class"][7]
    assert (road["tp"], road["fn"], road["pq"]) == (0, 1, 0.0)
    assert r["all"]["pq"] == pytest.approx(0.3)


def test_one_tp_one_fp_gives_rq_two_thirds(tmp_path):
    gt = np.full((4, 8), 1, np.int64)  # road everywhere
    gt[:, :3] = 2  # one car
    pred = gt.copy()
    pred[0, 7] = 3  # a tiny extra car on road: FP (road still matches, IoU 31/32)
    r = score(
        tmp_path,
        [(gt, segments_of(gt, {1: 7, 2: 3}))],
        [(pred, segments_of(pred, {1: 7, 2: 3, 3: 3}))],
    )
    car = r["per_class"][3]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 1, 0)
    assert car["rq"] == pytest.approx(2 / 3) and car["sq"] == 1.0
    assert r["per_class"][7]["sq"] == pytest.approx(19 / 20)
    assert r["things"]["pq"] == pytest.approx(2 / 3)


def test_iou_exactly_half_does_not_match(tmp_path):
    gt = np.full((1, 4), 1, np.int64)
    gt[0, :2] = 2
    pred = np.full((1, 4), 3, np.int64)  # car over all 4: IoU with gt car = 2/4
    r = score(
        tmp_path,
        [(gt, segments_of(gt, {1: 7, 2: 3}))],
        [(pred, segments_of(pred, {3: 3}))],
    )
    car = r["per_class"][3]
    assert (car["tp"], car["fp"], car["fn"]) == (0, 1, 1)


def test_crowd_and_void_excuse_false_positives(tmp_path):
    gt = np.full((4, 10), 1, np.int64)  # road
    gt[:, 6:] = 4  # a crowd of cars
    gt[:, 5] = 0  # void
    pred = np.full((4, 10), 1, np.int64)
    pred[:, 5:8] = 8  # car: 4 px on void, 8 on crowd, 0 elsewhere -> excused
    pred[:, 8:] = 9  # person on the car crowd: not its class -> FP
    r = score(
        tmp_path,
        [(gt, segments_of(gt, {1: 7, 4: 3}, crowd={4}))],
        [(pred, segments_of(pred, {1: 7, 8: 3, 9: 11}))],
    )
    car, person = r["per_class"][3], r["per_class"][11]
    assert (car["tp"], car["fp"], car["fn"]) == (0, 0, 0)  # crowd is never a FN
    assert (person["tp"], person["fp"], person["fn"]) == (0, 1, 0)
    assert r["all"]["n"] == 2  # road and person; car is absent from the average


def test_pred_png_and_json_must_agree(tmp_path):
    gt = np.ones((2, 2), np.int64)
    pred = np.ones((2, 2), np.int64)
    pred[0, 0] = 2
    with pytest.raises(ValueError, match="in the PNG but not the JSON"):
        score(tmp_path, [(gt, segments_of(gt, {1: 7}))], [(pred, segments_of(pred, {1: 7}))])


# ---------------------------------------------------- independent reference implementation


def reference_pq(gt_json: Path, pred_json: Path) -> dict:
    """The COCO panoptic API's published definition, transcribed as plain loops over
    dictionaries (no shared code with the vectorised evaluator)."""
    gt_data = json.loads(gt_json.read_text())
    pred_data = json.loads(pred_json.read_text())
    categories = {c["id"]: c for c in gt_data["categories"]}
    stat = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
    preds = {a["image_id"]: a for a in pred_data["annotations"]}
    for gt_ann in gt_data["annotations"]:
        pred_ann = preds[gt_ann["image_id"]]
        pan_gt = read_segment_png(gt_json.with_suffix("") / gt_ann["file_name"])
        pan_pred = read_segment_png(pred_json.with_suffix("") / pred_ann["file_name"])
        gt_segms = {s["id"]: dict(s) for s in gt_ann["segments_info"]}
        pred_segms = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
        for label in pred_segms:
            pred_segms[label]["area"] = 0
        for y in range(pan_pred.shape[0]):
            for x in range(pan_pred.shape[1]):
                if pan_pred[y, x] != 0:
                    pred_segms[int(pan_pred[y, x])]["area"] += 1
        pair = defaultdict(int)
        for y in range(pan_gt.shape[0]):
            for x in range(pan_gt.shape[1]):
                pair[(int(pan_gt[y, x]), int(pan_pred[y, x]))] += 1
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in pair.items():
            if g not in gt_segms or p not in pred_segms or gt_segms[g]["iscrowd"] == 1:
                continue
            if gt_segms[g]["category_id"] != pred_segms[p]["category_id"]:
                continue
            union = pred_segms[p]["area"] + gt_segms[g]["area"] - inter - pair.get((0, p), 0)
            iou = inter / union
            if iou > 0.5:
                stat[gt_segms[g]["category_id"]]["tp"] += 1
                stat[gt_segms[g]["category_id"]]["iou"] += iou
                gt_matched.add(g)
                pred_matched.add(p)
        crowd_of = {}
        for g, info in gt_segms.items():
            if g in gt_matched:
                continue
            if info["iscrowd"] == 1:
                crowd_of[info["category_id"]] = g
                continue
            stat[info["category_id"]]["fn"] += 1
        for p, info in pred_segms.items():
            if p in pred_matched:
                continue
            excused = pair.get((0, p), 0)
            if info["category_id"] in crowd_of:
                excused += pair.get((crowd_of[info["category_id"]], p), 0)
            if excused / info["area"] > 0.5:
                continue
            stat[info["category_id"]]["fp"] += 1

    def average(isthing):
        pq = sq = rq = 0.0
        n = 0
        for cat_id, cat in categories.items():
            if isthing is not None and (cat["isthing"] == 1) != isthing:
                continue
            s = stat[cat_id]
            if s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            n += 1
            pq += s["iou"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
            sq += s["iou"] / s["tp"] if s["tp"] else 0.0
            rq += s["tp"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n} if n else None

    return {"all": average(None), "things": average(True), "stuff": average(False)}


def random_image(rng: np.random.Generator, shape=(12, 14), pred=False):
    """Random blocky segmentation with void, several categories, crowd (gt only)."""
    n_segments = int(rng.integers(1, 7))
    coarse = rng.integers(0, n_segments + 1, size=(shape[0] // 2, shape[1] // 2))
    ids = np.kron(coarse, np.ones((2, 2), np.int64))
    ids[rng.random(shape) < 0.08] = int(rng.integers(0, n_segments + 1))  # speckle
    present = [int(i) for i in np.unique(ids) if i != 0]
    remap = {i: int(rng.integers(1, 4000)) * 7 + i for i in present}  # big, sparse ids
    out = np.zeros(shape, np.int64)
    for old, new in remap.items():
        out[ids == old] = new
    cats = {new: int(rng.choice([7, 3, 11])) for new in remap.values()}
    crowd = set() if pred else {s for s in cats if cats[s] != 7 and rng.random() < 0.25}
    return out, segments_of(out, cats, crowd)


def perturb(rng, ids, segments):
    """A prediction near the ground truth: same map with blocks relabelled, crowd dropped."""
    pred = ids.copy()
    for _ in range(int(rng.integers(0, 4))):
        y, x = rng.integers(0, ids.shape[0] - 3), rng.integers(0, ids.shape[1] - 3)
        pred[y : y + 4, x : x + 4] = int(rng.choice([0, 3333, *(s["id"] for s in segments)]))
    cats = {s["id"]: s["category_id"] for s in segments}
    cats[3333] = int(rng.choice([7, 3, 11]))
    if rng.random() < 0.3:  # flip a category: matched segments become FP + FN
        flip = int(rng.choice(list(cats)))
        cats[flip] = {7: 3, 3: 11, 11: 7}[cats[flip]]
    present = {int(i) for i in np.unique(pred)} - {0}
    return pred, segments_of(pred, {i: cats[i] for i in present})


@pytest.mark.parametrize("seed", range(40))
def test_matches_reference_definition_on_random_segmentations(tmp_path, seed):
    rng = np.random.default_rng(seed)
    gt_images, pred_images = [], []
    for _ in range(3):
        ids, segments = random_image(rng)
        gt_images.append((ids, segments))
        if rng.random() < 0.5:
            pred_images.append(perturb(rng, ids, segments))
        else:
            pred_images.append(random_image(rng, pred=True))
    gt = write_split(tmp_path, "gt", gt_images)
    pred = write_split(tmp_path, "pred", pred_images)
    ours = pq_compute_files(gt, None, pred, None)
    expected = reference_pq(gt, pred)
    for split in ("all", "things", "stuff"):
        if expected[split] is None:  # the API divides by zero there; we report zeros
            assert ours[split]["n"] == 0
            continue
        for key in ("pq", "sq", "rq"):
            assert ours[split][key] == pytest.approx(expected[split][key], abs=1e-12)
        assert ours[split]["n"] == expected[split]["n"]


def test_in_memory_metric_agrees_with_files(tmp_path):
    """PanopticQuality (class * divisor + instance maps) and the file path share one core."""
    rng = np.random.default_rng(5)
    metric = PanopticQuality(3, thing_ids=[1, 2], label_divisor=1000)
    gt_images, pred_images = [], []
    cat_index = {7: 0, 3: 1, 11: 2}
    for _ in range(4):
        gt_ids, gt_segments = random_image(rng, pred=True)  # no crowd: same rules both ways
        pred_ids, pred_segments = perturb(rng, gt_ids, gt_segments)
        gt_images.append((gt_ids, gt_segments))
        pred_images.append((pred_ids, pred_segments))

        def to_panoptic(ids, segments):
            out = np.full(ids.shape, -1, np.int64)
            for s in segments:
                out[ids == s["id"]] = cat_index[s["category_id"]] * 1000 + s["id"] % 1000
            return out

        metric.update(to_panoptic(pred_ids, pred_segments), to_panoptic(gt_ids, gt_segments))
    files = score(tmp_path, gt_images, pred_images)
    memory = metric.compute()
    for split in ("all", "things", "stuff"):
        assert files[split]["pq"] == pytest.approx(memory[split]["pq"], abs=1e-12)


# ---------------------------------------------------------------- gate


def result(pq: float, label="x") -> EvaluationResult:
    return EvaluationResult(label, "panoptic", {"PQ": pq, "mIoU": 50.0}, 4)


def test_gate_flags_drops_above_threshold():
    report = accuracy_gate({"fp32": result(60.0), "fp16": result(59.5), "int8": result(58.7)})
    assert not report.passed
    flags = {row.label: row.flagged for row in report.rows}
    assert flags == {"fp32": False, "fp16": False, "int8": True}
    assert "FLAGGED" in report.summary()
    assert accuracy_gate({"fp32": result(60.0), "int8": result(58.7)}, max_drop=1.5).passed
    with pytest.raises(EvaluationError, match="reference"):
        accuracy_gate({"a": result(1.0)})
    assert "PQ" in comparison_table({"fp32": result(60.0), "int8": result(58.7)})
    assert not accuracy_gate({"fp32": result(60.0), "int8": result(float("nan"))}).passed


def test_gate_trips_on_damaged_predictions_scored_from_files(tmp_path):
    """A good prediction set passes, the same set with an object erased fails."""
    rng = np.random.default_rng(1)
    gt_images = [random_image(rng, pred=True) for _ in range(3)]
    gt = write_split(tmp_path, "gt", gt_images)
    good = write_split(tmp_path, "good", gt_images)
    damaged_images = []
    for ids, segments in gt_images:
        ids = ids.copy()
        ids[ids == segments[0]["id"]] = 0  # the model "misses" one segment per image
        damaged_images.append((ids, segments[1:]))
    bad = write_split(tmp_path, "bad", damaged_images)
    results = {}
    for label, pred in (("fp32", good), ("int8", bad)):
        pq = pq_compute_files(gt, None, pred, None)
        results[label] = EvaluationResult(label, "panoptic", {"PQ": 100 * pq["all"]["pq"]}, 3)
    assert results["fp32"].metrics["PQ"] == 100.0
    report = accuracy_gate(results)
    assert not report.passed and report.rows[1].flagged


# ---------------------------------------------------------------- end to end on models

STUFF_CATEGORIES = [
    {"id": 1, "name": "red", "isthing": 0, "color": [200, 0, 0], "supercategory": "s"},
    {"id": 2, "name": "green", "isthing": 0, "color": [0, 200, 0], "supercategory": "s"},
    {"id": 3, "name": "thing", "isthing": 1, "color": [0, 0, 200], "supercategory": "t"},
]


def make_color_dataset(root: Path, count: int = 3, hw=(24, 32)) -> Path:
    """Images whose pixel color is the class (red / green stuff), blocky random layouts."""
    rng = np.random.default_rng(0)
    annotations, images = [], []
    for i in range(count):
        coarse = rng.integers(0, 2, size=(-(-hw[0] // 8), -(-hw[1] // 8)))
        coarse[0, 0], coarse[-1, -1] = 0, 1  # both classes in every image
        classes = np.kron(coarse, np.ones((8, 8), np.int64))[: hw[0], : hw[1]]
        rgb = np.zeros((*hw, 3), np.uint8)
        rgb[classes == 0] = (255, 0, 0)
        rgb[classes == 1] = (0, 255, 0)
        name = f"im{i}"
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "images" / "val" / f"{name}.png")
        ids = classes + 10  # segment ids 10 (red) and 11 (green)
        write_segment_png(root / "panoptic_val" / f"{name}.png", ids)
        segments = segments_of(ids, {10: 1, 11: 2})
        annotations.append({"image_id": i, "file_name": f"{name}.png", "segments_info": segments})
        images.append({"id": i, "file_name": f"{name}.png", "height": hw[0], "width": hw[1]})
    data = {"images": images, "annotations": annotations, "categories": STUFF_CATEGORIES}
    (root / "panoptic_val.json").write_text(json.dumps(data))
    return root


class ColorModel(torch.nn.Module):
    """A hand-set 'trained' panoptic model: red / green pixels -> class 0 / 1 (exact)."""

    def __init__(self) -> None:
        super().__init__()
        self.semantic = torch.nn.Conv2d(3, 3, 1)
        self.aux = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.semantic.weight.zero_()
            self.semantic.weight[0, 0] = 1.0  # normalised R
            self.semantic.weight[1, 1] = 1.0  # normalised G
            self.semantic.bias.copy_(torch.tensor([0.0, 0.0, -10.0]))
            self.aux.weight.zero_()
            self.aux.bias.zero_()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        aux = self.aux(images)
        return {"semantic": self.semantic(images), "center": aux[:, :1], "offset": aux[:, 1:]}


@pytest.fixture(scope="module")
def color_setup(tmp_path_factory):
    import onnx
    from onnx import numpy_helper

    from axial_deploy.export import export_onnx

    root = make_color_dataset(tmp_path_factory.mktemp("data"))
    good = export_onnx(ColorModel(), (1, 3, 24, 32), root / "model.onnx")
    model = onnx.load(good)
    weight = next(i for i in model.graph.initializer if i.name == "semantic.weight")
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    damaged = root / "damaged.onnx"
    onnx.save(model, damaged)
    return root, good, damaged


def test_evaluate_pytorch_and_onnx_agree_and_gate_trips_on_damage(color_setup, tmp_path):
    from axial_deploy.evaluation.evaluate import evaluate_many

    root, good, damaged = color_setup
    results = evaluate_many(
        {"pytorch": ColorModel(), "fp32": good, "damaged": damaged},
        root,
        predictions_root=tmp_path / "pred",
        progress=False,
    )
    assert results["pytorch"].metrics == results["fp32"].metrics
    assert results["fp32"].metrics["PQ"] == 100.0 and results["fp32"].metrics["mIoU"] == 100.0
    assert results["damaged"].metrics["PQ"] < 50.0
    assert all(np.isfinite(v) for r in results.values() for v in r.metrics.values())
    report = accuracy_gate(results, reference="fp32")
    assert not report.passed
    assert [row.flagged for row in report.rows] == [False, False, True]
    assert json.loads(json.dumps(results["fp32"].to_json()))["primary"] == "PQ"
    # The predictions written are valid COCO panoptic files that score the same.
    again = pq_compute_files(
        root / "panoptic_val.json", None, tmp_path / "pred" / "fp32" / "panoptic_pred.json", None
    )
    assert again["all"]["pq"] == 1.0


def test_panels_have_one_tile_per_target(color_setup, tmp_path):
    from axial_deploy.evaluation.evaluate import evaluate_many
    from axial_deploy.evaluation.panels import CAPTION_HEIGHT, panels_html, render_panels

    root, good, damaged = color_setup
    evaluate_many(
        {"fp32": good, "int8": damaged}, root, predictions_root=tmp_path / "p", progress=False
    )
    paths = render_panels(
        root, {"fp32": tmp_path / "p" / "fp32", "int8": tmp_path / "p" / "int8"},
        tmp_path / "panels", count=2,
    )  # fmt: skip
    assert len(paths) == 2
    with Image.open(paths[0]) as panel:
        assert panel.size == (4 * 32, 24 + CAPTION_HEIGHT)
        pixels = np.asarray(panel.convert("RGB"))
    tiles = [pixels[CAPTION_HEIGHT:, i * 32 : (i + 1) * 32] for i in range(4)]
    assert np.array_equal(tiles[1], tiles[2])  # a perfect prediction looks like the truth
    assert not np.array_equal(tiles[1], tiles[3])  # the damaged one does not
    page = panels_html(paths)
    assert page.count("data:image/png;base64,") == 2


def test_zoo_model_from_checkpoint(tmp_path):
    from axial_deploy.models import create_model

    root = make_color_dataset(tmp_path / "data", count=1, hw=(33, 33))
    model = create_model("axial_deeplab_s", num_classes=3)
    checkpoint = tmp_path / "s.pt"
    torch.save(model.state_dict(), checkpoint)
    with pytest.raises(EvaluationError, match="--checkpoint"):
        evaluate("axial_deeplab_s", root, progress=False)
    with pytest.raises(EvaluationError, match="classification model"):
        evaluate("axial26s", root, checkpoint=checkpoint, progress=False)
    result = evaluate("axial_deeplab_s", root, checkpoint=checkpoint, progress=False)
    assert result.primary == "PQ" and result.images == 1
    assert all(np.isfinite(v) and 0 <= v <= 100 for v in result.metrics.values())


def test_classification_top1(tmp_path):
    for index, color in enumerate([(255, 0, 0), (0, 255, 0)]):
        folder = tmp_path / "val" / f"class{index}"
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), color).save(folder / f"{i}.png")

    class Classifier(torch.nn.Module):
        def forward(self, images):
            return images.mean(dim=(2, 3))[:, :2]  # red -> class 0, green -> class 1

    result = evaluate(Classifier(), tmp_path, input_hw=(32, 32), progress=False)
    assert result.primary == "top1" and result.metrics == {"top1": 100.0}
    swapped = evaluate(lambda_model(), tmp_path, input_hw=(32, 32), progress=False)
    assert swapped.metrics["top1"] == 0.0


def lambda_model():
    class Swapped(torch.nn.Module):
        def forward(self, images):
            return images.mean(dim=(2, 3))[:, [1, 0]]

    return Swapped()


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(EvaluationError, match="holds no split"):
        evaluate("axial26s", tmp_path)
    make_color_dataset(tmp_path, count=1)
    with pytest.raises(EvaluationError, match="unknown target"):
        evaluate("nope", tmp_path)
    with pytest.raises(EvaluationError, match="does not exist"):
        evaluate(tmp_path / "missing.onnx", tmp_path)


def test_cli_strict_gate_json_and_panels(color_setup, tmp_path, capsys):
    from axial_deploy.cli import main

    root, good, damaged = color_setup
    out = tmp_path / "acc.json"
    args = ["evaluate", str(good), str(damaged), "--labels", "fp32", "int8", "--data", str(root)]
    extra = ["--json", str(out), "--panels", str(tmp_path / "panels"), "--panel-count", "2"]
    assert main([*args, *extra]) == 0  # flagged but not --strict
    printed = capsys.readouterr().out
    assert "FLAGGED" in printed and "PQ" in printed
    document = json.loads(out.read_text())
    assert document["gate"]["passed"] is False
    assert document["results"]["fp32"]["metrics"]["PQ"] == 100.0
    assert len(list((tmp_path / "panels").glob("panel_*.png"))) == 2
    assert "base64" in (tmp_path / "panels" / "index.html").read_text()
    assert main([*args, "--strict"]) == 1
    assert main(["evaluate", str(good), "--data", str(root), "--strict"]) == 0
    assert main(["evaluate", "nope", "--data", str(root)]) == 2
    assert "unknown target" in capsys.readouterr().err


def test_panoptic_to_coco_segments():
    from axial_deploy.evaluation.evaluate import panoptic_to_coco

    panoptic = np.array([[-1, 1001, 1001], [0, 0, 2003], [0, 2003, 2003]])
    ids, segments = panoptic_to_coco(panoptic, CATEGORIES, 1000)
    assert ids.tolist() == [[0, 2, 2], [1, 1, 3], [1, 3, 3]]
    assert segments == [
        {"id": 1, "category_id": 7, "area": 3, "bbox": [0, 1, 2, 2], "iscrowd": 0},
        {"id": 2, "category_id": 3, "area": 2, "bbox": [1, 0, 2, 1], "iscrowd": 0},
        {"id": 3, "category_id": 11, "area": 3, "bbox": [1, 1, 2, 2], "iscrowd": 0},
    ]


def test_files_of_a_shipped_model_share_its_recorded_postprocessing(tmp_path):
    """evaluate of the shipped tiny model next to its own ONNX export: both use the
    post-processing recorded with the weights, so equal outputs give equal PQ (with the generic
    settings for the file the gate would compare post-processing, not models)."""
    from axial_deploy.datasets.synthetic import generate_panoptic
    from axial_deploy.evaluation.evaluate import evaluate_with_gate, recorded_postprocess
    from axial_deploy.export import export_onnx
    from axial_deploy.models import prepare_model

    generate_panoptic(tmp_path / "data", seed=3, train=1, val=3, progress=False)
    model = prepare_model("axial_deeplab_tiny", pretrained=True)
    onnx_path = export_onnx(model, (1, 3, 129, 129), tmp_path / "tiny.onnx")
    targets = {"pytorch": "axial_deeplab_tiny", "onnx": str(onnx_path)}
    run = evaluate_with_gate(targets, tmp_path / "data", pretrained=True, progress=False)
    assert any("recorded with axial_deeplab_tiny" in note for note in run.notes)
    pq = {label: result.metrics["PQ"] for label, result in run.results.items()}
    assert pq["pytorch"] == pytest.approx(pq["onnx"], abs=1e-6), pq
    # the file alone, told whose settings to use, scores the same
    alone = evaluate_with_gate(
        {"onnx": str(onnx_path)}, tmp_path / "data", progress=False,
        postprocess=recorded_postprocess("axial_deeplab_tiny"),
    )  # fmt: skip
    assert alone.results["onnx"].metrics["PQ"] == pytest.approx(pq["onnx"], abs=1e-6)
    with pytest.raises(ValueError, match="no pretrained weights ship"):
        recorded_postprocess("axial_deeplab_s")
