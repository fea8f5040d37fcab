"""Evaluation metrics: panoptic quality (PQ), mean IoU and top-k accuracy.

``PanopticQuality`` follows the definition of Kirillov et al., "Panoptic Segmentation"
(CVPR 2019), with the counting rules of the COCO panoptic API (``pq_compute``):

- a segment is a distinct id of a panoptic map (``class * label_divisor + instance``);
- a predicted and a ground-truth segment of the same class match when IoU > 0.5, where
  the union leaves out the part of the prediction that lies on ground-truth void;
- unmatched ground-truth segments are false negatives (crowd segments never are);
- unmatched predictions are false positives unless more than half of their area lies on
  ground-truth void plus ground-truth crowd regions of their own class;
- ``PQ = sum(IoU of matches) / (TP + FP / 2 + FN / 2)`` per class, averaged over the
  classes that occur (TP + FP + FN > 0).

The per-image counting is vectorised numpy: ids are compacted with a lookup table (or
``np.unique`` when their range is huge) and segment pairs are counted with ``bincount``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is optional: the metrics take numpy arrays without it
    import torch

    ArrayLike = np.ndarray | torch.Tensor
else:
    ArrayLike = Any


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch.Tensor (torch is imported only where tensors exist)
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _unique_inverse_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same result as ``np.unique(values, return_inverse=True, return_counts=True)``.

    Panoptic ids span a small range, so a lookup table does it in O(pixels) instead of a
    sort; very sparse ranges fall back to ``np.unique``.
    """
    if values.size == 0:
        return values.copy(), np.zeros(0, np.int64), np.zeros(0, np.int64)
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span > max(4 * values.size, 1 << 16):
        unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        return unique, inverse.reshape(-1), counts
    shifted = values - low
    counts_by_value = np.bincount(shifted, minlength=span)
    present = np.flatnonzero(counts_by_value)
    index_of_value = np.zeros(span, np.int64)
    index_of_value[present] = np.arange(present.size)
    return present + low, index_of_value[shifted], counts_by_value[present]


@dataclass
class SegmentTable:
    """Per-segment attributes of one image's ground truth, indexed like its segment index map.

    `category` is -1 for void and unknown ids. `matchable`: may match a prediction (not
    void, not crowd); `counts_fn`: a false negative when unmatched; `excuses`: a crowd
    region whose overlap with an unmatched prediction of its category excuses it.
    """

    category: np.ndarray
    area: np.ndarray
    is_void: np.ndarray
    matchable: np.ndarray
    counts_fn: np.ndarray
    excuses: np.ndarray


@dataclass
class MatchCounts:
    """Per-class TP / FP / FN counts and the sum of matched IoUs of one image."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou_sum: np.ndarray


def match_segments(
    gt_index: np.ndarray,
    pred_index: np.ndarray,
    gt: SegmentTable,
    pred_category: np.ndarray,
    pred_area: np.ndarray,
    pred_is_segment: np.ndarray,
    num_classes: int,
) -> MatchCounts:
    """The COCO panoptic matching rules on one image, shared by the in-memory metric and
    the file-based `pq_compute_files`.

    `gt_index` / `pred_index` are per-pixel indices into the gt table and the prediction
    arrays. A pair matches when both are segments of the same category, the gt one is
    matchable and IoU > 0.5 with IoU = inter / (pred area + gt area - inter - the
    prediction's area on gt void). An unmatched prediction is a false positive unless more
    than half its area lies on gt void plus the excusing crowd region of its category.
    """
    n_pred = pred_area.size
    pair_ids, _, pair_area = _unique_inverse_counts(gt_index * n_pred + pred_index)
    pair_gt = pair_ids // n_pred
    pair_pred = pair_ids % n_pred
    pair_area = pair_area.astype(np.float64)

    # Area of each predicted segment that lies on ground-truth void.
    on_void = gt.is_void[pair_gt]
    void_area = np.bincount(pair_pred[on_void], weights=pair_area[on_void], minlength=n_pred)

    same_class = gt.category[pair_gt] == pred_category[pair_pred]
    pair_ok = pred_is_segment[pair_pred] & same_class & ~gt.is_void[pair_gt]
    candidate = pair_ok & gt.matchable[pair_gt]
    g = pair_gt[candidate]
    p = pair_pred[candidate]
    inter = pair_area[candidate]
    iou = inter / (pred_area[p] + gt.area[g] - inter - void_area[p])
    is_match = iou > 0.5
    k = num_classes
    match_class = gt.category[g[is_match]]
    tp = np.bincount(match_class, minlength=k)
    iou_sum = np.bincount(match_class, weights=iou[is_match], minlength=k)
    gt_matched = np.zeros(gt.category.size, bool)
    gt_matched[g[is_match]] = True
    pred_matched = np.zeros(n_pred, bool)
    pred_matched[p[is_match]] = True

    fn = np.bincount(gt.category[gt.counts_fn & ~gt_matched], minlength=k)

    on_crowd = pair_ok & gt.excuses[pair_gt]
    crowd_area = np.bincount(pair_pred[on_crowd], weights=pair_area[on_crowd], minlength=n_pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        excused = (void_area + crowd_area) / pred_area > 0.5
    is_fp = pred_is_segment & ~pred_matched & ~excused
    fp = np.bincount(pred_category[is_fp], minlength=k)
    return MatchCounts(tp=tp[:k], fp=fp[:k], fn=fn[:k], iou_sum=iou_sum[:k])


class PanopticQuality:
    """Accumulates PQ over images exactly as defined by Kirillov et al. (CVPR 2019) and
    implemented by the COCO panoptic API (panopticapi ``pq_compute``).

    Maps hold ``class * label_divisor + instance`` ids; ``void_label`` marks void pixels
    and, when ``ignore_label`` is set, ground-truth (and predicted) pixels of class
    ``ignore_label`` are void too. Void predictions are not segments.
    """

    def __init__(
        self,
        num_classes: int,
        thing_ids: Iterable[int],
        label_divisor: int = 1000,
        void_label: int = -1,
        ignore_label: int | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if label_divisor < 1:
            raise ValueError(f"label_divisor must be >= 1, got {label_divisor}")
        self.thing_ids = tuple(sorted({int(c) for c in thing_ids}))
        bad = [c for c in self.thing_ids if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"thing_ids {bad} are outside [0, {num_classes})")
        self.num_classes = num_classes
        self.label_divisor = label_divisor
        self.void_label = void_label
        self.ignore_label = ignore_label
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        self.tp = np.zeros(k, np.int64)
        self.fp = np.zeros(k, np.int64)
        self.fn = np.zeros(k, np.int64)
        self.iou_sum = np.zeros(k, np.float64)

    def _void_mask(self, ids: np.ndarray) -> np.ndarray:
        void = ids == self.void_label
        if self.ignore_label is not None:
            void |= (ids >= 0) & (ids // self.label_divisor == self.ignore_label)
        return void

    def _check_ids(self, ids: np.ndarray, void: np.ndarray, name: str) -> None:
        segment_ids = ids[~void]
        if segment_ids.size == 0:
            return
        if segment_ids.min() < 0:
            raise ValueError(f"{name} has negative ids other than void_label={self.void_label}")
        top_class = int(segment_ids.max()) // self.label_divisor
        if top_class >= self.num_classes:
            raise ValueError(f"{name} has class {top_class} >= num_classes={self.num_classes}")

    def update(
        self, pred: ArrayLike, gt: ArrayLike, gt_crowd_ids: Iterable[int] | None = None
    ) -> None:
        """Adds one image: panoptic id maps ``pred`` and ``gt`` of the same shape.

        ``gt_crowd_ids`` are ids of ground-truth crowd segments: they are never matched or
        counted as false negatives; they only excuse false positives of their class.
        """
        pred = _to_numpy(pred).astype(np.int64, copy=False)
        gt = _to_numpy(gt).astype(np.int64, copy=False)
        if pred.shape != gt.shape:
            raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
        pred = pred.reshape(-1)
        gt = gt.reshape(-1)
        gt_void = self._void_mask(gt)
        pred_void = self._void_mask(pred)
        self._check_ids(gt, gt_void, "gt")
        self._check_ids(pred, pred_void, "pred")

        # Void becomes id -1 (sorted first); every other id is a segment.
        gt_ids, gt_index, gt_area = _unique_inverse_counts(np.where(gt_void, -1, gt))
        pred_ids, pred_index, pred_area = _unique_inverse_counts(np.where(pred_void, -1, pred))
        gt_is_void = gt_ids == -1
        crowd = np.asarray(list(gt_crowd_ids) if gt_crowd_ids is not None else [], np.int64)
        gt_is_crowd = np.isin(gt_ids, crowd) & ~gt_is_void
        gt = SegmentTable(
            category=np.where(gt_is_void, -1, gt_ids // self.label_divisor),
            area=gt_area.astype(np.float64),
            is_void=gt_is_void,
            matchable=~gt_is_void & ~gt_is_crowd,
            counts_fn=~gt_is_void & ~gt_is_crowd,
            excuses=gt_is_crowd,
        )
        pred_is_void = pred_ids == -1
        counts = match_segments(
            gt_index,
            pred_index,
            gt,
            np.where(pred_is_void, -1, pred_ids // self.label_divisor),
            pred_area.astype(np.float64),
            ~pred_is_void,
            self.num_classes,
        )
        self.add(counts)

    def add(self, counts: MatchCounts) -> None:
        """Adds the per-class counts of one image (from `match_segments`)."""
        self.tp += counts.tp
        self.fp += counts.fp
        self.fn += counts.fn
        self.iou_sum += counts.iou_sum

    def _classes(self) -> list[int]:
        return [c for c in range(self.num_classes) if c != self.ignore_label]

    def _average(self, classes: Iterable[int]) -> dict[str, float | int]:
        pq = sq = rq = 0.0
        n = 0
        for c in classes:
            tp, fp, fn = int(self.tp[c]), int(self.fp[c]), int(self.fn[c])
            if tp + fp + fn == 0:
                continue  # classes absent from both gt and pred do not count
            n += 1
            denominator = tp + 0.5 * fp + 0.5 * fn
            pq += float(self.iou_sum[c]) / denominator
            sq += (float(self.iou_sum[c]) / tp) if tp else 0.0
            rq += tp / denominator
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}

    def compute(self) -> dict[str, Any]:
        """PQ/SQ/RQ (in [0, 1]) for "all", "things", "stuff", plus "per_class" and "n"."""
        classes = self._classes()
        things = [c for c in classes if c in self.thing_ids]
        stuff = [c for c in classes if c not in self.thing_ids]
        per_class: dict[int, dict[str, float | int]] = {}
        for c in classes:
            tp, fp, fn = int(self.tp[c]), int(self.fp[c]), int(self.fn[c])
            iou_sum = float(self.iou_sum[c])
            denominator = tp + 0.5 * fp + 0.5 * fn
            per_class[c] = {
                "pq": iou_sum / denominator if denominator else 0.0,
                "sq": iou_sum / tp if tp else 0.0,
                "rq": tp / denominator if denominator else 0.0,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "iou_sum": iou_sum,
            }
        result_all = self._average(classes)
        return {
            "all": result_all,
            "things": self._average(things),
            "stuff": self._average(stuff),
            "per_class": per_class,
            "n": result_all["n"],
        }


class ConfusionMatrix:
    """Accumulates a [gt, pred] pixel confusion matrix over class maps for mIoU.

    Pixels whose ground truth is ``ignore_label`` are left out. The mean IoU averages the
    classes present in ground truth or prediction (union > 0).
    """

    def __init__(self, num_classes: int, ignore_label: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.reset()

    def reset(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        pred = _to_numpy(pred).astype(np.int64, copy=False)
        gt = _to_numpy(gt).astype(np.int64, copy=False)
        if pred.shape != gt.shape:
            raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
        keep = np.ones(gt.shape, bool) if self.ignore_label is None else gt != self.ignore_label
        gt = gt[keep]
        pred = pred[keep]
        k = self.num_classes
        for name, labels in (("gt", gt), ("pred", pred)):
            if labels.size and (labels.min() < 0 or labels.max() >= k):
                raise ValueError(f"{name} has labels outside [0, {k}) on non-ignored pixels")
        self.matrix += np.bincount(gt * k + pred, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, Any]:
        """{"miou", "iou_per_class" (NaN where union is 0), "pixel_accuracy"}."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - tp
        present = union > 0
        iou = np.full(self.num_classes, np.nan)
        iou[present] = tp[present] / union[present]
        total = int(self.matrix.sum())
        return {
            "miou": float(iou[present].mean()) if present.any() else 0.0,
            "iou_per_class": iou.tolist(),
            "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        }


# The mIoU metric is exactly the confusion-matrix accumulator; both names are offered.
MeanIoU = ConfusionMatrix


def _topk_correct(logits: ArrayLike, labels: ArrayLike, k: int) -> tuple[int, int]:
    logits = _to_numpy(logits)
    labels = _to_numpy(labels).astype(np.int64, copy=False).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected logits [N, C] and labels [N], got {logits.shape} and {labels.shape}"
        )
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be in [1, {logits.shape[1]}], got {k}")
    # Stable sort: among tied scores the lower class index ranks first, like argmax.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    correct = int((top == labels[:, None]).any(axis=1).sum())
    return correct, labels.shape[0]


def topk_accuracy(logits: ArrayLike, labels: ArrayLike, k: int = 1) -> float:
    """Fraction of rows of ``logits`` [N, C] whose label is among the k highest scores."""
    correct, total = _topk_correct(logits, labels, k)
    if total == 0:
        raise ValueError("top-k accuracy of an empty batch is undefined")
    return correct / total


def top1_accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of rows of ``logits`` [N, C] whose argmax equals the label."""
    return topk_accuracy(logits, labels, k=1)


class TopKAccuracy:
    """Accumulates top-k accuracy over batches."""

    def __init__(self, k: int = 1) -> None:
        self.k = k
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, logits: ArrayLike, labels: ArrayLike) -> None:
        correct, total = _topk_correct(logits, labels, self.k)
        self.correct += correct
        self.total += total

    def compute(self) -> float:
        return self.correct / self.total if self.total else 0.0
