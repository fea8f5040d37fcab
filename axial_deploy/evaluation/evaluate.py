"""Task accuracy of a model in every form it takes: PyTorch, ONNX (any precision), engine.

- `pq_compute_files` scores COCO-panoptic prediction files against ground-truth files with
  the rules of the COCO panoptic API (cocodataset/panopticapi `pq_compute`), sharing the
  matching core (`models.metrics.match_segments`) with the in-memory `PanopticQuality`.
- `evaluate` runs one target over a dataset split: panoptic PQ/SQ/RQ (all, things, stuff)
  and mIoU, or top-1 / top-5 for classifiers.
- `evaluate_many` + `accuracy_gate`: precision variants side by side, flagged when their
  metric drops more than `max_drop` points below the reference (FP32).

Panoptic predictions are made at the model's input size and nearest-upsampled to the
ground-truth resolution before scoring (the standard protocol: ground truth is never
resampled, so the numbers compare with published ones).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from axial_deploy.artifacts import write_json
from axial_deploy.datasets.coco_panoptic import (
    VOID_ID,
    PanopticFormatError,
    load_split,
    read_segment_png,
    split_paths,
    write_segment_png,
)
from axial_deploy.errors import AxialDeployError
from axial_deploy.models.metrics import (
    ConfusionMatrix,
    PanopticQuality,
    SegmentTable,
    TopKAccuracy,
    match_segments,
)
from axial_deploy.models.preprocess import open_image

if TYPE_CHECKING:  # torch only where a torch model is evaluated
    import torch


class EvaluationError(AxialDeployError, ValueError):
    """A target or dataset that cannot be evaluated as asked."""


# --------------------------------------------------------------------------------------
# File-based panoptic quality (COCO panoptic API semantics)
# --------------------------------------------------------------------------------------


def _gt_table(
    ids: np.ndarray, segments: list[dict], cat_index: dict[int, int], where: str
) -> tuple[np.ndarray, SegmentTable]:
    """Segment index map and table of one ground-truth image.

    Segments come from the JSON (with its areas, as pq_compute uses them) and from the PNG
    (ids absent from the JSON are neither matched nor counted; 0 is void). Only the last
    crowd segment of a category excuses false positives (pq_compute keeps one per category).
    """
    json_ids = np.asarray([s["id"] for s in segments], np.int64)
    all_ids, inverse = np.unique(np.concatenate([ids.reshape(-1), json_ids]), return_inverse=True)
    index = inverse[: ids.size]
    n = all_ids.size
    category = np.full(n, -1, np.int64)
    area = np.zeros(n, np.float64)
    crowd = np.zeros(n, bool)
    known = np.zeros(n, bool)
    last_crowd: dict[int, int] = {}
    position = np.searchsorted(all_ids, json_ids)
    for pos, segment in zip(position, segments, strict=True):
        if segment["category_id"] not in cat_index:
            raise PanopticFormatError(
                f"{where}: segment {segment['id']} has category {segment['category_id']}, "
                "which is not among the ground truth's categories"
            )
        category[pos] = cat_index[segment["category_id"]]
        area[pos] = float(segment["area"])
        known[pos] = True
        if segment.get("iscrowd", 0) == 1:
            crowd[pos] = True
            last_crowd[category[pos]] = pos
    is_void = all_ids == VOID_ID
    known &= ~is_void
    excuses = np.zeros(n, bool)
    excuses[list(last_crowd.values())] = True
    table = SegmentTable(
        category=np.where(known, category, -1),
        area=area,
        is_void=is_void,
        matchable=known & ~crowd,
        counts_fn=known & ~crowd,
        excuses=excuses & known,
    )
    return index, table


def _pred_table(
    ids: np.ndarray, segments: list[dict], cat_index: dict[int, int], where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index map, category, area, is_segment) of one predicted image; the PNG and the JSON
    must list the same non-void ids, as pq_compute demands."""
    unique, index, area = np.unique(ids.reshape(-1), return_inverse=True, return_counts=True)
    by_id = {int(s["id"]): s for s in segments}
    in_png = {int(i) for i in unique} - {VOID_ID}
    if missing := sorted(in_png - set(by_id)):
        raise PanopticFormatError(f"{where}: segment ids {missing} are in the PNG but not the JSON")
    if absent := sorted(set(by_id) - in_png - {VOID_ID}):
        raise PanopticFormatError(f"{where}: segment ids {absent} are in the JSON but not the PNG")
    category = np.full(unique.size, -1, np.int64)
    for i, segment_id in enumerate(unique):
        if segment_id == VOID_ID:
            continue
        category_id = by_id[int(segment_id)]["category_id"]
        if category_id not in cat_index:
            raise PanopticFormatError(
                f"{where}: segment {segment_id} has unknown category {category_id}"
            )
        category[i] = cat_index[category_id]
    return index.reshape(-1), category, area.astype(np.float64), unique != VOID_ID


def pq_compute_files(
    gt_json: str | Path,
    gt_dir: str | Path | None,
    pred_json: str | Path,
    pred_dir: str | Path | None,
) -> dict[str, Any]:
    """PQ / SQ / RQ in [0, 1] of predictions against ground truth, both in COCO panoptic
    format, with the COCO panoptic API's rules (same numbers as panopticapi `pq_compute`).

    Returns {"all", "things", "stuff": {"pq", "sq", "rq", "n"}, "per_class": {category_id:
    {...}}, "images": count}. A split with no category present gives zeros (pq_compute
    divides by zero there). Folders default to the JSON path without ".json".
    """
    gt = load_split(gt_json, gt_dir)
    pred = load_split(pred_json, pred_dir)
    categories = gt.categories
    cat_index = {int(c["id"]): i for i, c in enumerate(categories)}
    things = [i for i, c in enumerate(categories) if c.get("isthing", 0) == 1]
    metric = PanopticQuality(len(categories), things)
    pred_by_image = {a["image_id"]: a for a in pred.annotations}
    for gt_ann in gt.annotations:
        image_id = gt_ann["image_id"]
        if image_id not in pred_by_image:
            raise PanopticFormatError(f"{pred.json_path} has no prediction for image {image_id}")
        pred_ann = pred_by_image[image_id]
        gt_ids = read_segment_png(gt.segment_png(gt_ann))
        pred_ids = read_segment_png(pred.segment_png(pred_ann))
        if gt_ids.shape != pred_ids.shape:
            raise PanopticFormatError(
                f"image {image_id}: prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]} "
                f"but ground truth is {gt_ids.shape[1]}x{gt_ids.shape[0]} (W x H)"
            )
        where = f"image {image_id}"
        gt_index, gt_table = _gt_table(gt_ids, gt_ann["segments_info"], cat_index, where)
        pred_index, pred_cat, pred_area, pred_seg = _pred_table(
            pred_ids, pred_ann["segments_info"], cat_index, where
        )
        counts = match_segments(
            gt_index, pred_index, gt_table, pred_cat, pred_area, pred_seg, len(categories)
        )
        metric.add(counts)
    result = metric.compute()
    result["per_class"] = {
        int(categories[c]["id"]): values for c, values in result["per_class"].items()
    }
    result["images"] = len(gt.annotations)
    return result


# --------------------------------------------------------------------------------------
# Results and the accuracy gate
# --------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """Metrics of one target on one split. Panoptic metrics are in points (0..100), as
    papers report them; top-1 / top-5 in percent."""

    target: str
    task: str
    metrics: dict[str, float]
    images: int
    details: dict[str, Any] = field(default_factory=dict)
    predictions_dir: Path | None = None

    @property
    def primary(self) -> str:
        return "PQ" if self.task == "panoptic" else "top1"

    def summary(self) -> str:
        values = "  ".join(f"{k} {v:.2f}" for k, v in self.metrics.items())
        return f"{self.target} ({self.task}, {self.images} images): {values}"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "task": self.task,
            "primary": self.primary,
            "metrics": self.metrics,
            "images": self.images,
            "details": self.details,
        }


@dataclass
class GateRow:
    label: str
    metric: float
    drop: float  # reference minus this, in points (positive = worse)
    flagged: bool


@dataclass
class GateReport:
    """Each variant's primary metric beside the reference's, flagged above `max_drop`."""

    metric: str
    reference: str
    max_drop: float
    rows: list[GateRow]

    @property
    def passed(self) -> bool:
        return not any(row.flagged for row in self.rows)

    def summary(self) -> str:
        lines = [f"accuracy gate: {self.metric} drop vs {self.reference} <= {self.max_drop:g}"]
        for row in self.rows:
            mark = "FLAGGED" if row.flagged else "ok"
            lines.append(f"  {row.label:<16} {row.metric:>8.2f}  drop {row.drop:>+7.2f}  {mark}")
        lines.append("PASSED" if self.passed else "FAILED: some variant drops too far")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "reference": self.reference,
            "max_drop": self.max_drop,
            "passed": self.passed,
            "rows": [row.__dict__ for row in self.rows],
        }


def accuracy_gate(
    results: Mapping[str, EvaluationResult], reference: str = "fp32", max_drop: float = 1.0
) -> GateReport:
    """Compares every result's primary metric (points) with `results[reference]`'s."""
    if reference not in results:
        raise EvaluationError(
            f"reference {reference!r} is not among the results ({', '.join(results)}); "
            "name it with --labels / --reference"
        )
    if max_drop < 0:
        raise EvaluationError(f"max_drop must be >= 0, got {max_drop}")
    ref = results[reference]
    tasks = {r.task for r in results.values()}
    if len(tasks) != 1:
        raise EvaluationError(f"cannot compare results of different tasks: {sorted(tasks)}")
    metric = ref.primary
    rows = []
    for label, result in results.items():
        drop = ref.metrics[metric] - result.metrics[metric]
        # A tiny epsilon keeps float noise from tripping a gate exactly at the threshold; a NaN
        # metric is always flagged.
        flagged = not drop <= max_drop + 1e-9
        rows.append(GateRow(label, result.metrics[metric], drop, flagged))
    return GateReport(metric, reference, max_drop, rows)


def comparison_table(results: Mapping[str, EvaluationResult]) -> str:
    """The results side by side: one row per target, one column per metric."""
    keys: list[str] = []
    for result in results.values():
        keys += [k for k in result.metrics if k not in keys]
    width = max([len(label) for label in results] + [6])
    lines = [f"{'target':<{width}} " + " ".join(f"{k:>8}" for k in keys)]
    for label, result in results.items():
        cells = [f"{result.metrics[k]:>8.2f}" if k in result.metrics else f"{'-':>8}" for k in keys]
        lines.append(f"{label:<{width}} " + " ".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Runners: one callable per target form, images [N, 3, H, W] float32 -> named outputs
# --------------------------------------------------------------------------------------

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class _Target:
    name: str
    run: Runner
    input_hw: tuple[int, int] | None  # fixed by the graph, or None (any size)
    zoo_name: str | None = None


def _torch_runner(model: torch.nn.Module) -> Runner:
    import torch

    model.eval()

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(images))
        if isinstance(out, dict):
            return {k: v.float().numpy() for k, v in out.items()}
        return {"logits": out.float().numpy()}

    return run


def _static_hw(shape: list) -> tuple[int, int] | None:
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return int(shape[2]), int(shape[3])
    return None


def _runtime_target(path: Path) -> _Target:
    """A .onnx file (ONNX Runtime, AxialAttention through the reference op) or an engine
    (TensorRT / TensorRT-RTX, manifest-checked), both through `runtime.Engine`, which casts
    the images to the input's dtype (FP16-input graphs take half)."""
    from axial_deploy.engine.runtime import Engine

    engine = Engine(path)
    meta = engine.inputs[0]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = engine.infer({meta.name: images})
        return {k: np.asarray(v, np.float32) for k, v in outputs.items()}

    return _Target(str(path), run, _static_hw(list(meta.shape)))


def _zoo_target(
    name: str, task: str, num_classes: int, checkpoint: str | Path | None, pretrained: bool
) -> _Target:
    from axial_deploy.models import create_model, load_checkpoint, model_task

    if model_task(name) != task:
        raise EvaluationError(f"{name} is a {model_task(name)} model but the dataset is {task}")

    if checkpoint is None and not pretrained:
        raise EvaluationError(
            f"{name} has random weights: pass --checkpoint PATH (or --pretrained) to evaluate "
            "a trained model"
        )
    if pretrained:
        try:
            model = create_model(name, pretrained=True, num_classes=num_classes)
        except TypeError as error:
            raise EvaluationError(
                f"this model zoo has no pretrained weights for {name}; use --checkpoint"
            ) from error
    else:
        model = create_model(name, num_classes=num_classes)
        load_checkpoint(model, checkpoint)
    return _Target(name, _torch_runner(model), None, zoo_name=name)


def _resolve_target(
    target: str | Path | torch.nn.Module,
    task: str,
    num_classes: int,
    checkpoint: str | Path | None,
    pretrained: bool,
) -> _Target:
    # torch is loaded when the caller holds a torch module; ONNX files and engines need none.
    if "torch" in sys.modules and isinstance(target, sys.modules["torch"].nn.Module):
        return _Target(type(target).__name__, _torch_runner(target), None)
    text = str(target)
    path = Path(text)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise EvaluationError(f"ONNX file {path} does not exist")
        return _runtime_target(path)
    if path.suffix in (".engine", ".plan"):
        if not path.is_file():
            raise EvaluationError(f"engine file {path} does not exist")
        return _runtime_target(path)
    from axial_deploy.models import list_models

    if text in list_models():
        return _zoo_target(text, task, num_classes, checkpoint, pretrained)
    raise EvaluationError(
        f"unknown target {text!r}: give a zoo model name ({', '.join(list_models())}), "
        "a .onnx file or a .engine file"
    )


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------


def dataset_task(data_dir: str | Path, split: str) -> str:
    """'panoptic' when DIR/panoptic_SPLIT.json exists, 'classification' for DIR/SPLIT/."""
    data_dir = Path(data_dir)
    if split_paths(data_dir, split)[0].is_file():
        return "panoptic"
    if (data_dir / split).is_dir():
        return "classification"
    raise EvaluationError(
        f"{data_dir} holds no split {split!r}: expected panoptic_{split}.json (COCO panoptic) "
        f"or an image folder {split}/CLASS/*.png (classification)"
    )


def classification_samples(data_dir: str | Path, split: str) -> tuple[list[str], list]:
    """(class names, [(image path, class index)]) of an ImageFolder split DIR/SPLIT/CLASS/*.

    Classes in sorted folder-name order (torchvision's ImageFolder rule, and what
    `axial-deploy train` learns); samples sorted by file name, so a limit takes the same
    images in training and evaluation."""
    root = Path(data_dir) / split
    if not root.is_dir():
        raise EvaluationError(f"{root} does not exist: expected DIR/{split}/CLASS_NAME/*.png")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise EvaluationError(f"{root} has no class folders")
    samples = sorted(
        ((path, index) for index, name in enumerate(classes) for path in (root / name).glob("*")
         if path.suffix.lower() in (".png", ".jpg", ".jpeg")),
        key=lambda sample: (sample[0].name, sample[1]),
    )  # fmt: skip
    if not samples:
        raise EvaluationError(f"{root} has no .png/.jpg images in its class folders")
    return classes, samples


def _progress(batches: list[list], desc: str, show: bool):
    """Yields the batches, with a progress bar counting images."""
    if not show:
        yield from batches
        return
    from axial_deploy.progress import progress_bar

    with progress_bar(
        total=sum(len(b) for b in batches), desc=desc, unit="img", leave=False
    ) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def evaluate(
    target: str | Path | torch.nn.Module,
    data_dir: str | Path,
    *,
    split: str = "val",
    limit: int | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = False,
    batch_size: int = 1,
    input_hw: tuple[int, int] | None = None,
    predictions_dir: str | Path | None = None,
    postprocess=None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluates `target` (zoo model name, nn.Module, .onnx or .engine) on `data_dir`/`split`.

    Panoptic: images are resized to `input_hw` (default: the graph's fixed size, else each
    image's own size), predictions nearest-upsampled to the ground truth and written in COCO
    panoptic format to `predictions_dir` (a temporary folder when None), then scored with
    `pq_compute_files`; mIoU from the semantic argmax. Classification: top-1 (and top-5).
    """
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be >= 1, got {limit}")
    task = dataset_task(data_dir, split)
    if task == "panoptic":
        return _evaluate_panoptic(
            target, Path(data_dir), split, limit, checkpoint, pretrained, batch_size,
            input_hw, predictions_dir, postprocess, progress,
        )  # fmt: skip
    return _evaluate_classification(
        target, Path(data_dir), split, limit, checkpoint, pretrained, batch_size, input_hw,
        progress,
    )  # fmt: skip


def _evaluate_classification(
    target, data_dir, split, limit, checkpoint, pretrained, batch_size, input_hw, progress
) -> EvaluationResult:
    from axial_deploy.models.preprocess import preprocess_for

    classes, samples = classification_samples(data_dir, split)
    samples = samples[:limit] if limit else samples
    resolved = _resolve_target(target, "classification", len(classes), checkpoint, pretrained)
    # A classifier's accuracy depends on the size it was trained at: a zoo model runs at its
    # zoo default (64 x 64 for the shipped tiny one), never at an unrelated fixed size.
    zoo_hw = None
    if resolved.zoo_name:
        from axial_deploy.models import default_input_shape

        zoo_hw = default_input_shape(resolved.zoo_name)[2:]
    hw = resolved.input_hw or input_hw or zoo_hw or (224, 224)
    if input_hw and resolved.input_hw and input_hw != resolved.input_hw:
        raise EvaluationError(f"{resolved.name} takes {resolved.input_hw}, not {input_hw}")
    preprocess = preprocess_for("classification", hw)
    top1, top5 = TopKAccuracy(1), TopKAccuracy(5)
    for batch in _progress(list(_batches(samples, batch_size)), resolved.name, progress):
        images = np.stack([preprocess.load(path) for path, _ in batch])
        labels = np.asarray([label for _, label in batch])
        logits = next(iter(resolved.run(images).values()))
        if logits.ndim != 2 or logits.shape[1] != len(classes):
            raise EvaluationError(
                f"{resolved.name} outputs {logits.shape}, expected [N, {len(classes)}] logits "
                f"for the {len(classes)} classes of {data_dir / split}"
            )
        top1.update(logits, labels)
        if len(classes) >= 5:
            top5.update(logits, labels)
    metrics = {"top1": 100.0 * top1.compute()}
    if len(classes) >= 5:
        metrics["top5"] = 100.0 * top5.compute()
    return EvaluationResult(resolved.name, "classification", metrics, len(samples))


def _semantic_gt(ids: np.ndarray, segments: list[dict], cat_index: dict[int, int]) -> np.ndarray:
    """Per-pixel class index from a panoptic id map; -1 for void and unlisted ids."""
    unique, inverse = np.unique(ids, return_inverse=True)
    lookup = np.full(unique.size, -1, np.int64)
    category_of = {int(s["id"]): cat_index[s["category_id"]] for s in segments}
    for i, segment_id in enumerate(unique):
        lookup[i] = category_of.get(int(segment_id), -1) if segment_id != VOID_ID else -1
    return lookup[inverse.reshape(ids.shape)]


def resize_nearest(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest resize of an integer [H, W] map (PIL's nearest: pixel centers)."""
    if array.shape == hw:
        return array
    image = Image.fromarray(array.astype(np.int32), mode="I")
    return np.asarray(image.resize((hw[1], hw[0]), Image.Resampling.NEAREST)).astype(np.int64)


def panoptic_to_coco(
    panoptic: np.ndarray, categories: list[dict], label_divisor: int
) -> tuple[np.ndarray, list[dict]]:
    """A `class * label_divisor + instance` map (negative = void) -> COCO segment ids
    (1, 2, ... in id order; 0 = void) and their segments_info."""
    values, inverse, area = np.unique(panoptic, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(panoptic.shape)
    segment_of_value = np.cumsum(values >= 0) * (values >= 0)  # 0 for void values
    ids = segment_of_value[inverse]
    # Bounding boxes by scattering each pixel's row / column into its segment's min / max.
    rows, cols = np.indices(panoptic.shape)
    n = values.size
    y0, x0 = np.full(n, panoptic.shape[0]), np.full(n, panoptic.shape[1])
    y1, x1 = np.full(n, -1), np.full(n, -1)
    np.minimum.at(y0, inverse.ravel(), rows.ravel())
    np.minimum.at(x0, inverse.ravel(), cols.ravel())
    np.maximum.at(y1, inverse.ravel(), rows.ravel())
    np.maximum.at(x1, inverse.ravel(), cols.ravel())
    segments = [
        {
            "id": int(segment_of_value[i]),
            "category_id": int(categories[int(values[i]) // label_divisor]["id"]),
            "area": int(area[i]),
            "bbox": [int(x0[i]), int(y0[i]), int(x1[i] - x0[i] + 1), int(y1[i] - y0[i] + 1)],
            "iscrowd": 0,
        }
        for i in range(n)
        if values[i] >= 0
    ]
    return ids, segments


def _postprocess_config(target, pretrained: bool, things: list[int], hw: tuple[int, int]):
    """A shipped model's recorded settings (so evaluation reproduces its recorded PQ), else
    Panoptic-DeepLab's scaled to the input size."""
    from axial_deploy.models.panoptic_config import scaled_config

    source = shared_postprocess_source({"target": target}, pretrained)
    return recorded_postprocess(source) if source else scaled_config(things, hw)


def recorded_postprocess(model: str):
    """The panoptic post-processing recorded with zoo `model`'s shipped weights."""
    from axial_deploy.models import pretrained_record

    config = pretrained_record(model).postprocess_config()
    if config is None:
        raise EvaluationError(f"{model} is not a panoptic model: it records no post-processing")
    return config


def shared_postprocess_source(targets: Mapping[str, Any], pretrained: bool) -> str | None:
    """The zoo model whose recorded post-processing every target of one evaluation uses: the
    first zoo target evaluated with its shipped weights (None: none is)."""
    from axial_deploy.models import pretrained_models

    if not pretrained:
        return None
    shipped = set(pretrained_models())
    return next((t for t in targets.values() if isinstance(t, str) and t in shipped), None)


def _panoptic_postprocessor(num_classes: int, config) -> Callable:
    """(semantic, center, offset) numpy maps -> (panoptic, semantic) numpy id maps, with
    `.config`: the PyTorch post-processor where torch is installed, else its numpy form (equal
    maps, tests/models/test_postprocess_numpy.py)."""
    try:
        import torch

        from axial_deploy.models.postprocess import PanopticPostProcessor
    except ModuleNotFoundError:
        from axial_deploy.models.postprocess_numpy import PanopticPostProcessorNumpy

        numpy_post = PanopticPostProcessorNumpy(num_classes, config)

        def run_numpy(*maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            panoptic, semantic, _, _ = numpy_post(*(np.asarray(m, np.float32) for m in maps))
            return panoptic, semantic

        run_numpy.config = numpy_post.config  # type: ignore[attr-defined]
        return run_numpy

    torch_post = PanopticPostProcessor(num_classes, config)

    def run_torch(*maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            panoptic, semantic, _, _ = torch_post(*(torch.from_numpy(m) for m in maps))
        return panoptic.numpy(), semantic.numpy()

    run_torch.config = torch_post.config  # type: ignore[attr-defined]
    return run_torch


def _evaluate_panoptic(
    target, data_dir, split, limit, checkpoint, pretrained, batch_size, input_hw,
    predictions_dir, postprocess, progress,
) -> EvaluationResult:  # fmt: skip
    json_path, segments_dir, images_dir = split_paths(data_dir, split)
    gt = load_split(json_path, segments_dir)
    categories = gt.categories
    cat_index = {int(c["id"]): i for i, c in enumerate(categories)}
    things = [i for i, c in enumerate(categories) if c.get("isthing", 0) == 1]
    annotations = gt.annotations[:limit] if limit else gt.annotations
    if not annotations:
        raise EvaluationError(f"{json_path} has no annotations")
    resolved = _resolve_target(target, "panoptic", len(categories), checkpoint, pretrained)
    if input_hw and resolved.input_hw and tuple(input_hw) != resolved.input_hw:
        raise EvaluationError(f"{resolved.name} takes {resolved.input_hw}, not {input_hw}")
    fixed_hw = resolved.input_hw or (tuple(input_hw) if input_hw else None)

    temporary = None
    if predictions_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="axial-eval-")
        predictions_dir = temporary.name
    out_dir = Path(predictions_dir)
    out_segments = out_dir / "panoptic_pred"
    out_segments.mkdir(parents=True, exist_ok=True)
    confusion = ConfusionMatrix(len(categories), ignore_label=-1)
    pred_annotations = []
    postprocessors: dict[tuple[int, int], Callable] = {}
    try:
        for batch in _progress(list(_batches(annotations, batch_size)), resolved.name, progress):
            images, hw = _panoptic_batch(gt, images_dir, batch, fixed_hw)
            outputs = _panoptic_outputs(resolved, images)
            if hw not in postprocessors:
                config = postprocess or _postprocess_config(target, pretrained, things, hw)
                postprocessors[hw] = _panoptic_postprocessor(len(categories), config)
            post = postprocessors[hw]
            panoptic, semantic = post(*(outputs[k] for k in ("semantic", "center", "offset")))
            for i, ann in enumerate(batch):
                gt_ids = read_segment_png(gt.segment_png(ann))
                gt_hw = gt_ids.shape
                pan = resize_nearest(panoptic[i], gt_hw)
                sem = resize_nearest(semantic[i], gt_hw)
                confusion.update(sem, _semantic_gt(gt_ids, ann["segments_info"], cat_index))
                ids, segments = panoptic_to_coco(pan, categories, post.config.label_divisor)
                name = Path(ann["file_name"]).with_suffix(".png").name
                write_segment_png(out_segments / name, ids)
                pred_annotations.append(
                    {"image_id": ann["image_id"], "file_name": name, "segments_info": segments}
                )
        pred_json = out_dir / "panoptic_pred.json"
        write_json(pred_json, {"annotations": pred_annotations, "categories": categories}, None)
        subset = out_dir / "panoptic_gt_subset.json"
        write_json(subset, {**gt.data, "annotations": annotations}, None)
        pq = pq_compute_files(subset, segments_dir, pred_json, out_segments)
    finally:
        if temporary is not None:
            temporary.cleanup()
    metrics, details = _panoptic_metrics(pq, confusion.compute())
    return EvaluationResult(
        resolved.name,
        "panoptic",
        metrics,
        len(annotations),
        details,
        None if temporary is not None else out_dir,
    )


def _panoptic_batch(gt, images_dir: Path, batch: list[dict], fixed_hw) -> tuple[np.ndarray, tuple]:
    """The preprocessed images of `batch` and their size (the graph's fixed one, else each
    image's own, which must then agree across the batch)."""
    from axial_deploy.models.preprocess import preprocess_for

    inputs, hws = [], []
    for ann in batch:
        image_path = gt.image_file(images_dir, ann)
        with open_image(image_path) as image:
            hw = fixed_hw or (image.height, image.width)
        hws.append(hw)
        inputs.append(preprocess_for("panoptic", hw).load(image_path))
    if len(set(hws)) > 1:
        raise EvaluationError(
            "images of different sizes cannot share a batch: use batch_size=1 or --input-size HxW"
        )
    return np.stack(inputs), hws[0]


def _panoptic_outputs(resolved: _Target, images: np.ndarray) -> dict[str, np.ndarray]:
    outputs = resolved.run(images)
    missing = {"semantic", "center", "offset"} - set(outputs)
    if missing:
        raise EvaluationError(
            f"{resolved.name} has no output(s) {sorted(missing)}: a panoptic model "
            f"returns 'semantic', 'center' and 'offset' (it has {sorted(outputs)})"
        )
    return outputs


def _panoptic_metrics(pq: dict, miou: dict) -> tuple[dict, dict]:
    """(PQ / SQ / RQ / PQ_th / PQ_st / mIoU in points, details) from the scores."""
    metrics = {
        "PQ": 100 * pq["all"]["pq"],
        "SQ": 100 * pq["all"]["sq"],
        "RQ": 100 * pq["all"]["rq"],
    }
    # Things / stuff PQ only where such categories occur (0 would read as a total failure).
    for key, split_name in (("PQ_th", "things"), ("PQ_st", "stuff")):
        if pq[split_name]["n"]:
            metrics[key] = 100 * pq[split_name]["pq"]
    metrics["mIoU"] = 100 * miou["miou"]
    return metrics, {"pq": {k: pq[k] for k in ("all", "things", "stuff")}, "miou": miou}


def evaluate_many(
    targets: Mapping[str, str | Path | torch.nn.Module],
    data_dir: str | Path,
    *,
    predictions_root: str | Path | None = None,
    **kwargs: Any,
) -> dict[str, EvaluationResult]:
    """`evaluate` for each labelled target (e.g. {"fp32": a.onnx, "fp16": b.onnx}), same
    data and options; predictions of target LABEL go to `predictions_root`/LABEL when given.
    `comparison_table` of the result is the side-by-side view."""
    results = {}
    for label, target in targets.items():
        out = None if predictions_root is None else Path(predictions_root) / label
        results[label] = evaluate(target, data_dir, predictions_dir=out, **kwargs)
    return results


def labelled_targets(targets: list[str], labels: list[str] | None) -> dict[str, str]:
    """{label: target}: the given labels, else fp32 for the first target and file stems after."""
    labels = labels or ["fp32" if i == 0 else Path(t).stem for i, t in enumerate(targets)]
    if len(labels) != len(targets) or len(set(labels)) != len(labels):
        raise EvaluationError("--labels needs one distinct label per TARGET")
    return dict(zip(labels, targets, strict=True))


@dataclass
class EvaluationRun:
    """`evaluate_with_gate`'s result: metrics per target, the gate, and the panels written."""

    results: dict[str, EvaluationResult]
    gate: GateReport | None = None
    panels: list[Path] = field(default_factory=list)
    panels_page: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "results": {label: r.to_json() for label, r in self.results.items()},
            "gate": self.gate.to_json() if self.gate else None,
        }


def evaluate_with_gate(
    targets: Mapping[str, str | Path],
    data_dir: str | Path,
    *,
    reference: str | None = None,
    max_drop: float = 1.0,
    panels_dir: str | Path | None = None,
    panel_count: int = 4,
    split: str = "val",
    **kwargs: Any,
) -> EvaluationRun:
    """Every target on the same split; with several, the accuracy gate against `reference`
    (default: the first); with `panels_dir` (panoptic data only), prediction panels there."""
    from axial_deploy.evaluation.panels import render_panels, write_panels_html

    panoptic = dataset_task(data_dir, split) == "panoptic"
    notes = []
    if panoptic and kwargs.get("postprocess") is None:
        # One post-processing for every target, or the gate would compare settings, not models.
        source = shared_postprocess_source(targets, kwargs.get("pretrained", False))
        if source is not None:
            kwargs["postprocess"] = recorded_postprocess(source)
            notes.append(
                f"post-processing: the settings recorded with {source}'s shipped weights, "
                "for every target"
            )
    with tempfile.TemporaryDirectory(prefix="axial-eval-") as scratch:
        keep = panels_dir is not None and panoptic
        root = Path(panels_dir) / "predictions" if keep else Path(scratch)
        results = evaluate_many(targets, data_dir, predictions_root=root, split=split, **kwargs)
    run = EvaluationRun(results, notes=notes)
    if len(results) > 1:
        run.gate = accuracy_gate(results, reference or next(iter(results)), max_drop)
    if panels_dir is not None and panoptic:
        predictions = {label: root / label for label in results}
        run.panels = render_panels(
            data_dir, predictions, panels_dir, split=split, count=panel_count
        )
        run.panels_page = write_panels_html(
            run.panels, Path(panels_dir) / "index.html", "Predictions"
        )
    elif panels_dir is not None:
        run.notes.append("--panels: only panoptic datasets have panels; none written")
    return run
