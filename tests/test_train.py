"""Training: Panoptic-DeepLab targets, a few steps that lower the loss, the `train` command,
and the shipped checkpoints reproducing the metrics recorded beside them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from axial_deploy.cli import main
from axial_deploy.datasets.synthetic import generate_classification, generate_panoptic
from axial_deploy.evaluation.evaluate import evaluate
from axial_deploy.models import (
    PretrainedConfig,
    PretrainedWeightsError,
    create_model,
    pretrained_models,
    pretrained_record,
)
from axial_deploy.models.postprocess import PanopticConfig
from axial_deploy.train import (
    ClassificationData,
    evaluate_classification,
    evaluate_panoptic,
    init_prediction_layers,
    load_image_folder,
    load_panoptic_split,
    panoptic_losses,
    panoptic_targets,
)


def test_panoptic_targets_of_a_small_map():
    ids = np.zeros((9, 12), np.int64)
    ids[:, :] = 1000  # stuff, category 1
    ids[1:4, 1:6] = 4001  # thing instance: rows 1-3, cols 1-5 -> center (2, 3)
    ids[6:8, 8:10] = 4000  # crowd of the same class
    ids[0, 11] = 0  # void
    segments = [
        {"id": 1000, "category_id": 1, "iscrowd": 0},
        {"id": 4001, "category_id": 4, "iscrowd": 0},
        {"id": 4000, "category_id": 4, "iscrowd": 1},
    ]
    category_index = {1: 0, 4: 3}
    sem, pan, heat, cw, off, ow, crowd = panoptic_targets(ids, segments, category_index, {3})
    assert sem[0, 0] == 0 and sem[2, 2] == 3 and sem[6, 8] == 3 and sem[0, 11] == 255
    assert pan[2, 2] == 3001 and pan[6, 8] == 3000 and pan[0, 0] == 0 and pan[0, 11] == -1
    assert crowd == [3000]
    assert heat.max() == pytest.approx(1.0) and np.unravel_index(heat.argmax(), heat.shape) == (
        2,
        3,
    )
    assert off[:, 1, 1].tolist() == [1.0, 2.0] and off[:, 3, 5].tolist() == [-1.0, -2.0]
    assert ow.sum() == 15 and ow[2, 2] == 1 and ow[6, 8] == 0
    assert cw[6, 8] == 0 and cw[0, 11] == 0 and cw[2, 2] == 1


@pytest.fixture(scope="module")
def tiny_panoptic(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    generate_panoptic(root, seed=5, train=8, val=2, size=(65, 65), progress=False)
    return root


def test_a_few_steps_lower_the_panoptic_loss(tiny_panoptic):
    torch.manual_seed(0)
    data = load_panoptic_split(tiny_panoptic, "train", (65, 65))
    model = create_model("axial_deeplab_tiny", num_classes=len(data.class_names))
    init_prediction_layers(model)
    model.train()
    batch = {
        "images": data.images[:4],
        "semantic": data.semantic[:4],
        "center": data.center[:4],
        "center_weight": data.center_weight[:4],
        "offset": data.offset[:4],
        "offset_weight": data.offset_weight[:4],
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(8):
        losses = panoptic_losses(model(batch["images"]), batch)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        totals.append(losses["total"].item())
    assert all(np.isfinite(totals))
    assert totals[-1] < 0.8 * totals[0], totals


def test_train_command_writes_checkpoint_and_record(tiny_panoptic, tmp_path, capsys):
    out = tmp_path / "tiny.pt"
    argv = ["train", "--model", "axial_deeplab_tiny", "--data", str(tiny_panoptic)]
    assert main([*argv, "--epochs", "1", "--batch-size", "4", "-o", str(out)]) == 0
    assert "trained in" in capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["command"] == "axial-deploy " + " ".join(
        [*argv, "--epochs", "1", "--batch-size", "4", "-o", str(out)]
    )
    assert record["steps"] == 2 and record["num_classes"] == 7 and record["dataset"]["seed"] == 5
    assert set(record["val_metrics"]) >= {"pq", "sq", "rq", "miou"}
    # what `train` writes is what the zoo reads back as a shipped model's typed record
    typed = PretrainedConfig.from_json(record)
    assert typed.dataset.seed == 5 and typed.input_size == tuple(record["input_size"])
    assert isinstance(typed.postprocess_config(), PanopticConfig) and not typed.extra
    assert all(v.dtype in (torch.float16, torch.int64) for v in torch.load(out).values())
    # a dataset that is not there: a clear error, exit status 2
    assert (
        main(
            [
                "train",
                "--model",
                "axial26_tiny",
                "--data",
                str(tmp_path / "none"),
                "-o",
                str(tmp_path / "x.pt"),
            ]
        )
        == 2
    )
    assert "generate the dataset first" in capsys.readouterr().err


def test_models_without_shipped_weights_say_so():
    with pytest.raises(PretrainedWeightsError, match="no pretrained weights ship for 'axial50s'"):
        create_model("axial50s", pretrained=True)


@pytest.mark.parametrize("name", ["axial_deeplab_tiny", "axial26_tiny"])
def test_shipped_checkpoint_reproduces_its_recorded_metric(tmp_path, name):
    assert name in pretrained_models()
    record = pretrained_record(name)
    dataset = record.dataset
    size = record.input_size
    n = record.eval_subset
    model = create_model(name, pretrained=True)
    assert not model.training
    with pytest.raises(PretrainedWeightsError, match="classes"):
        create_model(name, pretrained=True, num_classes=record.num_classes + 1)
    # The val split regenerated from the recorded seed: image i depends on (seed, split, i)
    # only, so its first n images are those the metric was recorded on.
    if record.task == "panoptic":
        generate_panoptic(
            tmp_path,
            seed=dataset.seed,
            train=0,
            val=n,
            size=dataset.size,
            progress=False,
        )
        data = load_panoptic_split(tmp_path, "val", size)
        metrics = evaluate_panoptic(model, data, record.postprocess_config())
        keys = ("pq", "sq", "rq", "miou")
    else:
        generate_classification(
            tmp_path,
            seed=dataset.seed,
            train=0,
            val=n,
            size=dataset.size,
            progress=False,
        )
        data = load_image_folder(tmp_path, "val", size)
        assert isinstance(data, ClassificationData) and data.class_names == record.class_names
        metrics = evaluate_classification(model, data)
        keys = ("top1",)
    recorded = record.val_subset_metrics
    # it really learned: far above chance (top-1 20 %) and an untrained model (PQ 0)
    assert record.val_metrics["pq" if record.task == "panoptic" else "top1"] > 60
    assert metrics["images"] == recorded["images"] == n
    for key in keys:
        # identical up to float summation order across machines
        assert metrics[key] == pytest.approx(recorded[key], abs=0.5), (key, metrics, recorded)
    # What users run (`axial-deploy evaluate NAME --pretrained`: COCO panoptic files, the
    # recorded post-processing) gives the recorded numbers too.
    result = evaluate(name, tmp_path, pretrained=True, progress=False)
    names = {"pq": "PQ", "sq": "SQ", "rq": "RQ", "miou": "mIoU", "top1": "top1"}
    for key in keys:
        assert result.metrics[names[key]] == pytest.approx(recorded[key], abs=0.5), key
