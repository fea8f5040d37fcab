"""Training the small zoo models on CPU: Panoptic-DeepLab targets and losses, a classifier loop.

Panoptic (Cheng et al., "Panoptic-DeepLab", CVPR 2020, Sec. 3), for Axial-DeepLab:

* semantic: cross-entropy with void ignored, bootstrapped (only the hardest 20 % of the
  pixels of a batch count);
* center: MSE against a heatmap of 2-D Gaussians at each instance's center of mass
  (sigma 8 px at 1025 x 2049 in the paper; `CENTER_SIGMA` px here, our images are ~8x
  smaller), void and crowd pixels left out;
* offset: L1 on the per-pixel (dy, dx) to the instance's center, on thing instance pixels.

Loss weights 1 / 200 / 0.1. The paper's offset weight is 0.01 for a 90k-iteration schedule;
our runs are ~1000 steps, and at 0.01 the offsets barely move in that time, so it is raised
10x (see `LOSS_WEIGHTS`). Adam at 1e-3 with a poly schedule as in Panoptic-DeepLab.

Inputs go through `models.preprocess.preprocess_for(task, size)`, the one normalization that
evaluation and deployment use too. Data is read from the COCO panoptic layout
(`coco_panoptic.py`) or an ImageFolder tree (classification), all held in memory: the
synthetic datasets are a few hundred small images.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from axial_deploy.artifacts import atomic_output, write_json
from axial_deploy.datasets.coco_panoptic import load_split, read_segment_png, split_paths
from axial_deploy.errors import AxialDeployError
from axial_deploy.models.metrics import ConfusionMatrix, PanopticQuality, TopKAccuracy
from axial_deploy.models.postprocess import (
    PanopticConfig,
    PanopticPostProcessor,
    scaled_config,
)
from axial_deploy.models.preprocess import preprocess_for
from axial_deploy.progress import progress_bar

VOID = 255
LABEL_DIVISOR = 1000
CENTER_SIGMA = 3.0  # px at ~129 x 129 (Panoptic-DeepLab: 8 px at 1025 x 2049)
LOSS_WEIGHTS = {"semantic": 1.0, "center": 200.0, "offset": 0.1}
TOP_K_PERCENT = 0.2  # bootstrapped cross-entropy: the hardest 20 % of pixels


class TrainingError(AxialDeployError, ValueError):
    """A dataset or setting the trainer cannot use."""


# ---------------------------------------------------------------- panoptic data --------


@dataclass
class PanopticTargets:
    """One split in memory: inputs and Panoptic-DeepLab targets (N first everywhere)."""

    images: Tensor  # [N, 3, H, W] float32, normalized
    semantic: Tensor  # [N, H, W] int64, VOID = ignored
    center: Tensor  # [N, 1, H, W] float32 heatmap
    center_weight: Tensor  # [N, 1, H, W] float32: 0 on void and crowd
    offset: Tensor  # [N, 2, H, W] float32 (dy, dx) to the instance center
    offset_weight: Tensor  # [N, 1, H, W] float32: 1 on thing instance pixels
    panoptic: Tensor  # [N, H, W] int64 ground truth: class * 1000 + instance, -1 void
    crowd_ids: list[list[int]]  # per image: panoptic ids of crowd segments
    thing_ids: tuple[int, ...]  # train ids of thing classes
    class_names: list[str]


def _gaussian_heatmap(
    centers: list[tuple[float, float]], height: int, width: int, sigma: float
) -> np.ndarray:
    """Max over 2-D Gaussians (peak 1) at each center."""
    heat = np.zeros((height, width), np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    for cy, cx in centers:
        g = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
        np.maximum(heat, g, out=heat)
    return heat


def panoptic_targets(
    ids: np.ndarray, segments: list[dict], category_index: dict[int, int], thing: set[int]
):
    """A segment-id map and its segments_info -> (semantic, panoptic, targets, crowd ids).

    Thing instances are numbered 1.. in segments_info order; stuff and crowd segments get
    instance 0 (one segment per class).
    """
    height, width = ids.shape
    semantic = np.full((height, width), VOID, np.int64)
    panoptic = np.full((height, width), -1, np.int64)
    offset = np.zeros((2, height, width), np.float32)
    offset_weight = np.zeros((height, width), np.float32)
    center_weight = np.ones((height, width), np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    centers, crowd_ids = [], []
    instance = 0
    for segment in segments:
        mask = ids == segment["id"]
        if not mask.any():
            continue
        if segment["category_id"] not in category_index:
            raise TrainingError(
                f"segment {segment['id']} has category {segment['category_id']}, which is not "
                "in the JSON's categories"
            )
        train_id = category_index[segment["category_id"]]
        semantic[mask] = train_id
        if train_id in thing and segment.get("iscrowd", 0):
            panoptic[mask] = train_id * LABEL_DIVISOR
            crowd_ids.append(train_id * LABEL_DIVISOR)
            center_weight[mask] = 0.0
        elif train_id in thing:
            instance += 1
            panoptic[mask] = train_id * LABEL_DIVISOR + instance
            cy, cx = ys[mask].mean(), xs[mask].mean()  # center of mass
            centers.append((cy, cx))
            offset[0][mask] = cy - ys[mask]
            offset[1][mask] = cx - xs[mask]
            offset_weight[mask] = 1.0
        else:
            panoptic[mask] = train_id * LABEL_DIVISOR
    center_weight[semantic == VOID] = 0.0
    heat = _gaussian_heatmap(centers, height, width, CENTER_SIGMA)
    return semantic, panoptic, heat, center_weight, offset, offset_weight, crowd_ids


def load_panoptic_split(
    root: str | Path, split: str, size: tuple[int, int], limit: int | None = None
) -> PanopticTargets:
    """Reads split `split` of a COCO-panoptic dataset directory into memory with targets.

    Images and labels must already be `size` (H, W): labels are never resampled.
    """
    json_path, segments_dir, images_dir = split_paths(root, split)
    data = load_split(json_path, segments_dir)
    categories = data.categories
    category_index = {c["id"]: i for i, c in enumerate(categories)}
    thing = {i for i, c in enumerate(categories) if c.get("isthing")}
    annotations = data.annotations[:limit] if limit is not None else data.annotations
    if not annotations:
        raise TrainingError(f"{json_path} has no annotations")
    preprocess = preprocess_for("panoptic", size)
    fields: dict[str, list] = {k: [] for k in ("img", "sem", "pan", "heat", "cw", "off", "ow")}
    crowd: list[list[int]] = []
    for annotation in annotations:
        ids = read_segment_png(data.segment_png(annotation))
        if ids.shape != tuple(size):
            raise TrainingError(
                f"{annotation['file_name']} is {ids.shape[0]}x{ids.shape[1]}, the model is "
                f"trained at {size[0]}x{size[1]}: regenerate the dataset with --size "
                f"{size[0]}x{size[1]}"
            )
        sem, pan, heat, cw, off, ow, crowd_ids = panoptic_targets(
            ids, annotation["segments_info"], category_index, thing
        )
        fields["img"].append(preprocess.load(data.image_file(images_dir, annotation)))
        for key, value in zip(
            ("sem", "pan", "heat", "cw", "off", "ow"), (sem, pan, heat, cw, off, ow), strict=True
        ):
            fields[key].append(value)
        crowd.append(crowd_ids)
    stack = {k: torch.from_numpy(np.stack(v)) for k, v in fields.items()}
    return PanopticTargets(
        images=stack["img"],
        semantic=stack["sem"],
        center=stack["heat"].unsqueeze(1),
        center_weight=stack["cw"].unsqueeze(1),
        offset=stack["off"],
        offset_weight=stack["ow"].unsqueeze(1),
        panoptic=stack["pan"],
        crowd_ids=crowd,
        thing_ids=tuple(sorted(thing)),
        class_names=[c["name"] for c in categories],
    )


# ---------------------------------------------------------------- losses ---------------


def panoptic_losses(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The three Panoptic-DeepLab losses (unweighted) and their weighted sum, "total"."""
    ce = F.cross_entropy(
        outputs["semantic"], batch["semantic"], ignore_index=VOID, reduction="none"
    )
    ce = ce.flatten()[batch["semantic"].flatten() != VOID]
    k = max(1, int(TOP_K_PERCENT * ce.numel()))
    semantic = ce.topk(k).values.mean() if ce.numel() else ce.sum()
    center_w = batch["center_weight"]
    center = ((outputs["center"] - batch["center"]) ** 2 * center_w).sum() / center_w.sum().clamp(
        min=1
    )
    offset_w = batch["offset_weight"]
    offset = ((outputs["offset"] - batch["offset"]).abs() * offset_w).sum() / offset_w.sum().clamp(
        min=1
    )
    losses = {"semantic": semantic, "center": center, "offset": offset}
    losses["total"] = sum(LOSS_WEIGHTS[name] * value for name, value in losses.items())
    return losses


def _flip(batch: dict[str, Tensor], flip: Tensor) -> dict[str, Tensor]:
    """Horizontal flip of the images in `flip` [B] bool; dx offsets change sign."""
    out = {}
    for key, value in batch.items():
        flipped = value.flip(-1)
        if key == "offset":
            flipped = flipped * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
        shape = (-1,) + (1,) * (value.dim() - 1)
        out[key] = torch.where(flip.view(shape), flipped, value)
    return out


# ---------------------------------------------------------------- evaluation -----------


def postprocess_config(thing_ids: tuple[int, ...], size: tuple[int, int]) -> PanopticConfig:
    """Post-processing of the synthetic-data models: Panoptic-DeepLab's, scaled to `size`, with
    NMS kernel 7 (13 at full size; our objects are ~10-25 px) and at most 50 instances."""
    return scaled_config(thing_ids, size, nms_kernel=7, top_k=50, label_divisor=LABEL_DIVISOR)


@torch.no_grad()
def evaluate_panoptic(
    model: nn.Module, data: PanopticTargets, config: PanopticConfig, batch_size: int = 8
) -> dict:
    """PQ / SQ / RQ (all, things, stuff) and mIoU in percent on `data`."""
    model.eval()
    num_classes = len(data.class_names)
    post = PanopticPostProcessor(num_classes, config)
    pq = PanopticQuality(num_classes, data.thing_ids, label_divisor=LABEL_DIVISOR)
    miou = ConfusionMatrix(num_classes, ignore_label=VOID)
    for start in range(0, len(data.images), batch_size):
        out = model(data.images[start : start + batch_size])
        panoptic, semantic, _, _ = post(out["semantic"], out["center"], out["offset"])
        for i in range(panoptic.shape[0]):
            index = start + i
            pq.update(panoptic[i], data.panoptic[index], gt_crowd_ids=data.crowd_ids[index])
            miou.update(semantic[i], data.semantic[index])
    result = pq.compute()

    def pct(x: float) -> float:
        return round(100 * x, 2)

    return {
        "pq": pct(result["all"]["pq"]),
        "sq": pct(result["all"]["sq"]),
        "rq": pct(result["all"]["rq"]),
        "pq_things": pct(result["things"]["pq"]),
        "pq_stuff": pct(result["stuff"]["pq"]),
        "miou": pct(miou.compute()["miou"]),
        "images": len(data.images),
    }


# ---------------------------------------------------------------- classification data --


@dataclass
class ClassificationData:
    images: Tensor  # [N, 3, H, W] normalized
    labels: Tensor  # [N] int64
    class_names: list[str]


def load_image_folder(
    root: str | Path, split: str, size: tuple[int, int], limit: int | None = None
) -> ClassificationData:
    """DIR/split/CLASS/*.png, read as `axial-deploy evaluate` reads it (one class order)."""
    from axial_deploy.evaluation.evaluate import classification_samples

    class_names, samples = classification_samples(root, split)
    samples = samples[:limit] if limit is not None else samples
    preprocess = preprocess_for("classification", size)
    images = torch.from_numpy(np.stack([preprocess.load(path) for path, _ in samples]))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return ClassificationData(images, labels, class_names)


@torch.no_grad()
def evaluate_classification(model: nn.Module, data: ClassificationData, batch_size: int = 64):
    model.eval()
    top1 = TopKAccuracy(1)
    for start in range(0, len(data.images), batch_size):
        top1.update(
            model(data.images[start : start + batch_size]), data.labels[start : start + batch_size]
        )
    return {"top1": round(100 * top1.compute(), 2), "images": len(data.images)}


# ---------------------------------------------------------------- the loop -------------


@dataclass
class TrainSettings:
    model: str
    data: str
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    threads: int = 2
    size: tuple[int, int] | None = None  # default: the dataset's image size
    eval_subset: int = 16  # also record the metric on the first N val images (fast tests)

    @classmethod
    def for_model(cls, model: str, data: str, **given) -> TrainSettings:
        """Settings with the task's defaults for what `given` leaves out (or sets to None)."""
        from axial_deploy.models import model_task

        defaults = TASK_DEFAULTS[model_task(model)]
        chosen = {k: v for k, v in given.items() if v is not None}
        return cls(model=model, data=data, **{**defaults, **chosen})


# epochs, batch size and Adam learning rate that train each tiny zoo model here in minutes
TASK_DEFAULTS = {
    "panoptic": {"epochs": 16, "batch_size": 8, "lr": 1e-3},
    "classification": {"epochs": 6, "batch_size": 32, "lr": 2e-3},
}


def init_prediction_layers(model: nn.Module) -> None:
    """Panoptic-DeepLab's init of the last 1x1 conv of each head: N(0, 0.001), zero bias.

    The zoo's He init gives center and offset outputs of order 1-10 at the start, where a
    center loss weighted 200x makes the first steps explode.
    """
    for head in ("semantic_head", "center_head", "offset_head"):
        predict = getattr(model, head).predict
        nn.init.normal_(predict.weight, 0.0, 0.001)
        nn.init.zeros_(predict.bias)


def _poly(step: int, total: int) -> float:
    return (1 - step / total) ** 0.9


def save_compact(model: nn.Module, path: str | Path) -> None:
    """state_dict with float tensors in fp16 (half the size), written atomically."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def train(settings: TrainSettings, output: str | Path, command: str = "") -> dict:
    """Trains `settings.model` on `settings.data`, saves CKPT (fp16) and CKPT.json; returns
    the record (metrics measured on the saved fp16 weights, reloaded)."""
    from axial_deploy.datasets.synthetic import read_dataset_record
    from axial_deploy.models import create_model, model_task

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    task = model_task(settings.model)
    dataset = read_dataset_record(settings.data)
    size = tuple(settings.size or dataset["size"])
    load = load_panoptic_split if task == "panoptic" else load_image_folder
    train_data, val_data = load(settings.data, "train", size), load(settings.data, "val", size)
    num_classes = len(train_data.class_names)
    model = create_model(settings.model, num_classes=num_classes)
    if task == "panoptic":
        init_prediction_layers(model)
    start = time.perf_counter()
    log, steps = _fit(model, train_data, task, settings)
    train_time = time.perf_counter() - start

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_compact(model, output)
    metrics, subset, extra = _evaluate_saved(settings, output, num_classes, val_data, train_data)
    record = {
        "model": settings.model,
        "task": task,
        "num_classes": num_classes,
        "class_names": train_data.class_names,
        "input_size": list(size),
        "command": command,
        "seed": settings.seed,
        "dataset": dataset,
        "epochs": settings.epochs,
        "steps": steps,
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "threads": settings.threads,
        "train_time_s": round(train_time, 1),
        "val_metrics": metrics,
        "val_subset_metrics": subset,
        "eval_subset": settings.eval_subset,
        "loss_log": log,
        "weights": "fp16 state_dict (metrics measured on these fp16 weights in an fp32 model)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        **extra,
    }
    write_json(output.with_suffix(".json"), record)
    return record


def _fit(model: nn.Module, data, task: str, settings: TrainSettings) -> tuple[list[dict], int]:
    """Adam with a poly schedule over `settings.epochs`; returns the per-epoch loss log and the
    number of steps. The seeded generator draws each epoch's order, then each step's flips."""
    train_len = len(data.images)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    steps_per_epoch = max(1, train_len // settings.batch_size)
    total = settings.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _poly(s, total))
    generator = torch.Generator().manual_seed(settings.seed)
    log = []
    progress = progress_bar(total=total, desc=f"train {settings.model}", unit="step")
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(train_len, generator=generator)
        running: dict[str, float] = {}
        for step in range(steps_per_epoch):
            index = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            flip = torch.rand(len(index), generator=generator) < 0.5
            losses = _step_losses(model, data, task, index, flip)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            scheduler.step()
            for name, value in losses.items():
                running[name] = running.get(name, 0.0) + value.item() / steps_per_epoch
            progress.update(1)
            progress.set_postfix(loss=f"{losses['total'].item():.3f}", epoch=epoch + 1)
        log.append({"epoch": epoch + 1, **{k: round(v, 4) for k, v in running.items()}})
        progress.write(
            f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in running.items())
        )
    progress.close()
    return log, total


def _step_losses(model: nn.Module, data, task: str, index: Tensor, flip: Tensor) -> dict:
    """The losses of one step on the samples `index`, horizontally flipped where `flip`."""
    if task != "panoptic":
        images = _flip({"images": data.images[index]}, flip)["images"]
        return {"total": F.cross_entropy(model(images), data.labels[index])}
    fields = ("images", "semantic", "center", "center_weight", "offset", "offset_weight")
    batch = _flip({name: getattr(data, name)[index] for name in fields}, flip)
    return panoptic_losses(model(batch["images"]), batch)


def _evaluate_saved(settings: TrainSettings, output: Path, num_classes: int, val_data, train_data):
    """(val metrics, val-subset metrics, task extras) of the file as shipped: the fp16 weights,
    loaded back into an fp32 model."""
    from axial_deploy.models import create_model, load_checkpoint

    model = load_checkpoint(create_model(settings.model, num_classes=num_classes), output)
    if isinstance(val_data, PanopticTargets):
        config = postprocess_config(train_data.thing_ids, tuple(val_data.images.shape[2:]))
        metrics = evaluate_panoptic(model, val_data, config)
        subset = evaluate_panoptic(model, _subset(val_data, settings.eval_subset), config)
        return metrics, subset, {"postprocess": asdict(config), "loss_weights": LOSS_WEIGHTS}
    n = settings.eval_subset
    head = ClassificationData(val_data.images[:n], val_data.labels[:n], val_data.class_names)
    return evaluate_classification(model, val_data), evaluate_classification(model, head), {}


def _subset(data: PanopticTargets, n: int) -> PanopticTargets:
    return PanopticTargets(
        images=data.images[:n],
        semantic=data.semantic[:n],
        center=data.center[:n],
        center_weight=data.center_weight[:n],
        offset=data.offset[:n],
        offset_weight=data.offset_weight[:n],
        panoptic=data.panoptic[:n],
        crowd_ids=data.crowd_ids[:n],
        thing_ids=data.thing_ids,
        class_names=data.class_names,
    )
