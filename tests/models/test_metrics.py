"""Tests of PQ, mIoU and top-k accuracy on hand-made cases and against a brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axial_deploy.models.metrics import (
    ConfusionMatrix,
    MeanIoU,
    PanopticQuality,
    TopKAccuracy,
    top1_accuracy,
    topk_accuracy,
)

VOID = -1
ROAD = 0  # stuff class 0: panoptic id 0
SKY = 2000  # stuff class 2
# Thing ids: class 1 ("person") and class 3 ("car"), instance after the label divisor.
P1, P2, P3 = 1001, 1002, 1003
C1 = 3001


def row(*runs: tuple[int, int]) -> np.ndarray:
    """A 1 x W panoptic map from (id, length) runs, e.g. row((P1, 4), (ROAD, 6))."""
    return np.concatenate([np.full(length, value, np.int64) for value, length in runs])[None]


def make_pq(**kwargs) -> PanopticQuality:
    return PanopticQuality(num_classes=4, thing_ids=(1, 3), **kwargs)


def test_perfect_match() -> None:
    gt = row((ROAD, 10), (P1, 5), (P2, 5), (SKY, 4), (C1, 6))
    pq = make_pq()
    pq.update(gt.copy(), gt)
    result = pq.compute()
    for group in ("all", "things", "stuff"):
        assert result[group]["pq"] == result[group]["sq"] == result[group]["rq"] == 1.0
    assert result["n"] == 4 and result["things"]["n"] == 2 and result["stuff"]["n"] == 2
    assert result["per_class"][1]["tp"] == 2


def test_iou_of_exactly_half_is_not_a_match() -> None:
    gt = row((P1, 4), (ROAD, 12))
    pred = row((P1, 2), (ROAD, 14))  # IoU(P1) = 2 / 4
    pq = make_pq()
    pq.update(pred, gt)
    person = pq.compute()["per_class"][1]
    assert (person["tp"], person["fp"], person["fn"]) == (0, 1, 1)
    assert person["pq"] == 0.0

    pred = row((P1, 3), (ROAD, 13))  # IoU = 3 / 4 > 0.5
    pq.reset()
    pq.update(pred, gt)
    person = pq.compute()["per_class"][1]
    assert (person["tp"], person["fp"], person["fn"]) == (1, 0, 0)
    assert person["pq"] == pytest.approx(0.75)


def test_one_tp_one_fp_one_fn() -> None:
    gt = row((P1, 10), (P2, 5), (ROAD, 15))
    # P1 covers 8 of the 10 pixels of gt P1 (IoU 0.8); P3 lies on road (FP); gt P2 is missed.
    pred = row((P1, 8), (ROAD, 2), (ROAD, 5), (P3, 3), (ROAD, 12))
    pq = make_pq()
    pq.update(pred, gt)
    result = pq.compute()
    person = result["per_class"][1]
    assert (person["tp"], person["fp"], person["fn"]) == (1, 1, 1)
    assert person["iou_sum"] == pytest.approx(0.8)
    assert person["pq"] == pytest.approx(0.8 / (1 + 0.5 + 0.5))  # 0.4
    assert person["sq"] == pytest.approx(0.8)
    assert person["rq"] == pytest.approx(0.5)
    # Road: gt 15 px, pred 2 + 5 + 12 = 19 px, intersection 12 -> IoU 12 / 22.
    road_iou = 12 / 22
    assert result["per_class"][0]["pq"] == pytest.approx(road_iou)
    assert result["things"] == pytest.approx({"pq": 0.4, "sq": 0.8, "rq": 0.5, "n": 1})
    assert result["stuff"] == pytest.approx({"pq": road_iou, "sq": road_iou, "rq": 1.0, "n": 1})
    assert result["all"]["pq"] == pytest.approx((0.4 + road_iou) / 2)


def test_void_pixels_leave_the_union() -> None:
    # Without the void rule IoU would be 4 / 8 = 0.5 (no match); with it, 4 / 4.
    gt = row((P1, 4), (VOID, 4), (ROAD, 10))
    pred = row((P1, 8), (ROAD, 10))
    pq = make_pq()
    pq.update(pred, gt)
    person = pq.compute()["per_class"][1]
    assert (person["tp"], person["fp"], person["fn"]) == (1, 0, 0)
    assert person["iou_sum"] == pytest.approx(1.0)

    # Partial overlap: P1 covers 5 gt P1 pixels and 3 void pixels.
    # IoU = 5 / (8 + 6 - 5 - 3) = 5 / 6, where plain IoU would be 5 / 9.
    gt = row((P1, 6), (VOID, 4), (ROAD, 10))
    pred = row((ROAD, 1), (P1, 8), (ROAD, 11))
    pq.reset()
    pq.update(pred, gt)
    assert pq.compute()["per_class"][1]["iou_sum"] == pytest.approx(5 / 6)


def test_ignore_label_class_is_void() -> None:
    ignored = 3000 + 7  # class 3 is ignored here
    gt = row((P1, 4), (ignored, 4), (ROAD, 10))
    pred = row((P1, 8), (ROAD, 10))
    pq = PanopticQuality(num_classes=4, thing_ids=(1, 3), ignore_label=3)
    pq.update(pred, gt)
    result = pq.compute()
    assert result["per_class"][1]["iou_sum"] == pytest.approx(1.0)
    assert 3 not in result["per_class"]  # the ignored class is not a class
    assert result["n"] == 2


def test_false_positive_on_void_is_excused() -> None:
    gt = row((ROAD, 10), (VOID, 10))
    pred = row((ROAD, 10), (P1, 10))  # entirely on void
    pq = make_pq()
    pq.update(pred, gt)
    result = pq.compute()
    assert result["per_class"][1]["fp"] == 0
    assert result["n"] == 1 and result["all"]["pq"] == 1.0

    # Exactly half of the prediction on void is not enough to excuse it.
    gt = row((ROAD, 20), (VOID, 5))
    pred = row((ROAD, 15), (P1, 10))  # P1: 5 px on road, 5 px on void
    pq.reset()
    pq.update(pred, gt)
    result = pq.compute()
    assert result["per_class"][1]["fp"] == 1
    assert result["per_class"][0]["tp"] == 1  # road IoU 15 / 20


def test_crowd_excuses_false_positives_of_its_class_only() -> None:
    crowd = 1000  # gt crowd region of class 1
    gt = row((ROAD, 10), (crowd, 10))
    pred = row((ROAD, 10), (P1, 10))
    pq = make_pq()
    pq.update(pred, gt, gt_crowd_ids=[crowd])
    person = pq.compute()["per_class"][1]
    # The crowd is neither matched nor missed; the prediction on it is ignored.
    assert (person["tp"], person["fp"], person["fn"]) == (0, 0, 0)

    pq.reset()
    pq.update(row((ROAD, 10), (C1, 10)), gt, gt_crowd_ids=[crowd])  # a car on a person crowd
    result = pq.compute()["per_class"]
    assert result[3]["fp"] == 1
    assert result[1]["fn"] == 0

    # Without the crowd flag the same gt segment is an ordinary match.
    pq.reset()
    pq.update(pred, gt)
    assert pq.compute()["per_class"][1]["tp"] == 1


def test_void_and_crowd_overlap_add_up() -> None:
    crowd = 1000
    gt = row((ROAD, 10), (VOID, 3), (crowd, 3), (ROAD, 4))
    pred = row((ROAD, 10), (P1, 10))  # 3 on void + 3 on crowd = 0.6 of its area
    pq = make_pq()
    pq.update(pred, gt, gt_crowd_ids={crowd})
    assert pq.compute()["per_class"][1]["fp"] == 0

    pred = row((ROAD, 10), (P1, 3), (P1 + 1, 7))
    pq.reset()
    pq.update(pred, gt, gt_crowd_ids={crowd})
    # P1 lies fully on void (excused); P2 has 3 / 7 on crowd -> FP.
    assert pq.compute()["per_class"][1]["fp"] == 1


def test_absent_classes_are_not_averaged_and_split_by_kind() -> None:
    gt = row((ROAD, 20), (P1, 10), (P2, 5), (ROAD, 5))
    pred = row((ROAD, 20), (P1, 8), (ROAD, 7), (P3, 5))  # P1 IoU 0.8; P2 missed; P3 on road
    pq = PanopticQuality(num_classes=10, thing_ids=(1, 3, 5))
    pq.update(pred, gt)
    result = pq.compute()
    assert result["n"] == 2  # 8 of 10 classes never occur
    assert result["things"]["n"] == 1 and result["stuff"]["n"] == 1
    # Road: gt 25, pred 27, intersection 20 -> IoU 20 / 32.
    assert result["stuff"]["pq"] == pytest.approx(20 / 32)
    assert result["things"]["pq"] == pytest.approx(0.4)
    assert result["all"]["pq"] == pytest.approx((0.4 + 20 / 32) / 2)
    assert result["per_class"][7] == {
        "pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0, "iou_sum": 0.0
    }  # fmt: skip


def test_empty_metric() -> None:
    result = make_pq().compute()
    assert result["n"] == 0 and result["all"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_accepts_torch_tensors_and_2d_maps() -> None:
    gt = np.array([[ROAD, ROAD, P1], [ROAD, P1, P1]])
    pq = make_pq()
    pq.update(torch.from_numpy(gt), torch.from_numpy(gt))
    assert pq.compute()["all"]["pq"] == 1.0


def test_input_errors() -> None:
    pq = make_pq()
    with pytest.raises(ValueError, match="shape"):
        pq.update(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="num_classes"):
        pq.update(row((7001, 3)), row((ROAD, 3)))
    with pytest.raises(ValueError, match="negative"):
        pq.update(row((-5, 3)), row((ROAD, 3)))
    with pytest.raises(ValueError, match="thing_ids"):
        PanopticQuality(num_classes=4, thing_ids=(4,))


# ---------------------------------------------------------------------------------------
# Brute force, written independently: loops over segment pairs with boolean masks.


def brute_force_pq(preds, gts, crowds, num_classes, thing_ids, divisor, ignore):
    def is_void(value: int) -> bool:
        return value == VOID or (ignore is not None and value >= 0 and value // divisor == ignore)

    stats = {c: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0} for c in range(num_classes)}
    for pred, gt, crowd in zip(preds, gts, crowds, strict=True):
        gt_void = np.vectorize(is_void)(gt)
        gt_segments = [int(s) for s in np.unique(gt) if not is_void(int(s))]
        pred_segments = [int(s) for s in np.unique(pred) if not is_void(int(s))]
        matched_gt: set[int] = set()
        matched_pred: set[int] = set()
        for g in gt_segments:
            if g in crowd:
                continue
            for p in pred_segments:
                if g // divisor != p // divisor:
                    continue
                g_mask, p_mask = gt == g, pred == p
                intersection = np.sum(g_mask & p_mask)
                union = np.sum(g_mask | p_mask) - np.sum(p_mask & gt_void)
                if intersection / union > 0.5:
                    stats[g // divisor]["tp"] += 1
                    stats[g // divisor]["iou"] += intersection / union
                    matched_gt.add(g)
                    matched_pred.add(p)
        for g in gt_segments:
            if g not in crowd and g not in matched_gt:
                stats[g // divisor]["fn"] += 1
        for p in pred_segments:
            if p in matched_pred:
                continue
            p_mask = pred == p
            ignored = np.sum(p_mask & gt_void)
            for g in crowd:
                if g // divisor == p // divisor:
                    ignored += np.sum(p_mask & (gt == g))
            if ignored / np.sum(p_mask) <= 0.5:
                stats[p // divisor]["fp"] += 1

    def average(classes):
        values = []
        for c in classes:
            s = stats[c]
            if s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            pq = s["iou"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
            values.append(pq)
        return float(np.mean(values)) if values else 0.0

    classes = [c for c in range(num_classes) if c != ignore]
    things = [c for c in classes if c in thing_ids]
    stuff = [c for c in classes if c not in thing_ids]
    return stats, {"all": average(classes), "things": average(things), "stuff": average(stuff)}


def random_scene(rng: np.random.Generator, h: int = 16, w: int = 20):
    """Blocky stuff, rectangular things, void, an ignored class and a crowd; a perturbed
    prediction with shifted, relabelled, missing and extra segments."""
    stuff_classes, thing_classes, ignore_class, divisor = (0, 2, 4), (1, 3, 5), 6, 1000
    gt = np.repeat(np.repeat(rng.choice(stuff_classes, (h // 4, w // 4)), 4, 0), 4, 1) * divisor
    pred = gt.copy()
    pred[rng.random((h, w)) < 0.15] = rng.choice(stuff_classes) * divisor  # stuff noise
    boxes = []
    for instance in range(1, rng.integers(3, 8)):
        y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
        bh, bw = rng.integers(2, 7), rng.integers(2, 7)
        cls = int(rng.choice(thing_classes))
        boxes.append((cls * divisor + instance, y, x, bh, bw))
        gt[y : y + bh, x : x + bw] = cls * divisor + instance
    for segment_id, y, x, bh, bw in boxes:
        if rng.random() < 0.15:
            continue  # missed
        dy, dx = rng.integers(-2, 3, 2)
        cls = segment_id // divisor if rng.random() < 0.85 else int(rng.choice(thing_classes))
        pred_id = cls * divisor + rng.integers(1, 50)
        pred[max(y + dy, 0) : y + dy + bh, max(x + dx, 0) : x + dx + bw] = pred_id
    for _ in range(rng.integers(0, 3)):  # extra predictions
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        pred[y : y + 3, x : x + 3] = rng.choice(thing_classes) * divisor + rng.integers(50, 60)
    for target, value in ((gt, VOID), (gt, ignore_class * divisor + 3), (pred, VOID)):
        if rng.random() < 0.6:
            y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
            target[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = value
    thing_ids_present = [int(s) for s in np.unique(gt) if s % divisor > 0]
    crowd = set(rng.choice(thing_ids_present, rng.integers(0, 3)).tolist())
    return pred, gt, crowd


def test_matches_brute_force_on_random_scenes() -> None:
    rng = np.random.default_rng(1234)
    scenes = [random_scene(rng) for _ in range(20)]
    num_classes, thing_ids, ignore = 7, (1, 3, 5), 6
    metric = PanopticQuality(num_classes, thing_ids, ignore_label=ignore)
    totals = {"tp": 0, "fp": 0, "fn": 0}
    for pred, gt, crowd in scenes:
        metric.update(pred, gt, gt_crowd_ids=crowd)
        one = PanopticQuality(num_classes, thing_ids, ignore_label=ignore)
        one.update(pred, gt, gt_crowd_ids=crowd)
        stats, averages = brute_force_pq([pred], [gt], [crowd], num_classes, thing_ids, 1000, 6)
        result = one.compute()
        for c, s in stats.items():
            if c == ignore:
                continue
            got = result["per_class"][c]
            assert (got["tp"], got["fp"], got["fn"]) == (s["tp"], s["fp"], s["fn"])
            assert got["iou_sum"] == pytest.approx(s["iou"], abs=1e-12)
            for key in totals:
                totals[key] += s[key]
        for group, value in averages.items():
            assert result[group]["pq"] == pytest.approx(value, abs=1e-12)

    # The scenes exercise every kind of outcome.
    assert all(count > 10 for count in totals.values()), totals
    preds, gts, crowds = zip(*scenes, strict=True)
    _, averages = brute_force_pq(preds, gts, crowds, num_classes, thing_ids, 1000, ignore)
    result = metric.compute()
    for group, value in averages.items():
        assert result[group]["pq"] == pytest.approx(value, abs=1e-12)


def test_accumulating_two_images_equals_one_image_holding_both() -> None:
    rng = np.random.default_rng(7)
    (pred_a, gt_a, crowd_a), (pred_b, gt_b, crowd_b) = random_scene(rng), random_scene(rng)

    def shifted(ids: np.ndarray) -> np.ndarray:
        # New instance numbers keep image b's segments apart from image a's.
        return np.where(ids == VOID, VOID, ids + 500)

    separate = PanopticQuality(7, (1, 3, 5), ignore_label=6)
    separate.update(pred_a, gt_a, gt_crowd_ids=crowd_a)
    separate.update(pred_b, gt_b, gt_crowd_ids=crowd_b)
    together = PanopticQuality(7, (1, 3, 5), ignore_label=6)
    together.update(
        np.concatenate([pred_a, shifted(pred_b)], axis=1),
        np.concatenate([gt_a, shifted(gt_b)], axis=1),
        gt_crowd_ids=crowd_a | {c + 500 for c in crowd_b},
    )
    result_separate, result_together = separate.compute(), together.compute()
    for group in ("all", "things", "stuff"):
        assert result_separate[group] == pytest.approx(result_together[group])
    np.testing.assert_array_equal(separate.tp, together.tp)
    np.testing.assert_array_equal(separate.fp, together.fp)
    np.testing.assert_array_equal(separate.fn, together.fn)
    np.testing.assert_allclose(separate.iou_sum, together.iou_sum)


def test_large_sparse_ids_use_the_unique_path() -> None:
    gt = row((ROAD, 10), (P1, 10))
    pred = row((ROAD, 10), (P1, 10))
    pq = PanopticQuality(num_classes=4, thing_ids=(1,), label_divisor=10**9)
    pq.update(pred // 1000 * 10**9 + pred % 1000, gt // 1000 * 10**9 + gt % 1000)
    assert pq.compute()["all"]["pq"] == 1.0


# ---------------------------------------------------------------------------------------
# mIoU and top-k accuracy.


def test_mean_iou_known_case() -> None:
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    metric = ConfusionMatrix(num_classes=4)
    metric.update(pred, gt)
    result = metric.compute()
    # class 0: tp 1, union 3; class 1: tp 2, union 3; class 2: tp 1, union 2; class 3 absent.
    assert result["iou_per_class"][:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(result["iou_per_class"][3])
    assert result["miou"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(4 / 6)


def test_mean_iou_ignore_label_and_pred_only_class() -> None:
    gt = np.array([[0, 0, 255], [1, 1, 255]])
    pred = np.array([[0, 0, 99], [1, 2, 1]])  # anything may be predicted on ignored pixels
    metric = MeanIoU(num_classes=3, ignore_label=255)
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = metric.compute()
    # class 2 is only predicted: IoU 0 and it counts in the mean.
    assert result["iou_per_class"] == pytest.approx([1.0, 0.5, 0.0])
    assert result["miou"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="outside"):
        metric.update(np.array([0]), np.array([3]))


def test_mean_iou_accumulates_and_resets() -> None:
    metric = ConfusionMatrix(num_classes=2)
    metric.update(np.array([0, 1]), np.array([0, 0]))
    metric.update(np.array([1, 1]), np.array([1, 1]))
    # class 0: tp 1, union 2; class 1: tp 2, union 3.
    assert metric.compute()["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    metric.reset()
    assert metric.compute()["miou"] == 0.0


def test_top1_and_topk_accuracy() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([1, 1, 1, 1])
    # The tie in the last row goes to the lower index (0), like argmax.
    assert top1_accuracy(logits, labels) == pytest.approx(2 / 4)
    assert topk_accuracy(logits.numpy(), labels.numpy(), k=2) == pytest.approx(1.0)
    acc = TopKAccuracy(k=1)
    acc.update(logits[:2], labels[:2])
    acc.update(logits[2:], labels[2:])
    assert acc.compute() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k must"):
        topk_accuracy(logits, labels, k=4)
