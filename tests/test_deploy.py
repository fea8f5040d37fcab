"""The one-command pipeline (`axial-deploy deploy`), end to end on this CPU machine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from axial_deploy.cli import main
from axial_deploy.deploy import (
    DeployError,
    DeploySettings,
    choose_backend,
    deploy,
    parse_precisions,
)

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def test_parse_precisions_keeps_fp32_as_the_reference():
    assert parse_precisions("int8") == ("fp32", "int8")
    assert parse_precisions("FP16, fp32") == ("fp32", "fp16")
    with pytest.raises(DeployError, match="fp32,fp16,int8"):
        parse_precisions("fp8")


def test_backend_choice():
    assert choose_backend("none", None)[0] is None
    with pytest.raises(DeployError, match="use one of"):
        choose_backend("onnxruntime", None)
    backend, graph, _ = choose_backend("auto", None)
    if importlib.util.find_spec("tensorrt") is None:
        assert (backend, graph) == (("tensorrt-rtx", "plain") if HAS_RTX else (None, ""))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"checkpoint": "x.pt", "pretrained": True}, "not both"),
        ({"checkpoint": "missing.pt"}, "not found"),
        ({"model": "axial26s", "pretrained": True}, "no pretrained weights"),
        ({"eval_images": 0}, ">= 1"),
        ({"max_drop": -1.0}, ">= 0"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(DeployError, match=message):
        deploy(DeploySettings(out=tmp_path / "out", **kwargs))
    assert not (tmp_path / "out" / "report.json").exists()


def test_data_of_the_wrong_task_is_refused(tmp_path):
    from axial_deploy.synthetic import generate_classification

    generate_classification(tmp_path / "shapes", train=5, val=5, size=(32, 32), progress=False)
    with pytest.raises(DeployError, match="is a classification dataset"):
        deploy(DeploySettings(out=tmp_path / "out", data=str(tmp_path / "shapes")))


@pytest.mark.slow
def test_deploy_trained_panoptic_model_end_to_end(tmp_path):
    out = tmp_path / "deploy"
    code = main(
        [
            "deploy",
            "--out", str(out),
            "--eval-images", "8",
            "--calib-batches", "4",
            "--iterations", "3",
            "--panels", "2",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "axial_deeplab_tiny" and report["weights"] == "pretrained"
    assert report["rewrite"]["rewritten"] == 8 and not report["rewrite"]["left_intact"]
    assert report["verify"]["passed"] and report["verify"]["max_rel"] < 1e-4
    variants = {v["label"]: v for v in report["variants"]}
    assert set(variants) == {f"{p}{g}" for p in ("fp32", "fp16", "int8") for g in ("", "-plain")}

    # Task accuracy: the exported FP32 graphs score what PyTorch scores on the same images,
    # and FP16 stays within the gate; every variant has a PQ and a latency series.
    accuracy = report["accuracy"]
    assert accuracy["images"] == 8
    assert accuracy["pytorch"]["PQ"] > 50  # it learned (chance is near 0)
    for label in ("fp32", "fp32-plain"):
        assert abs(variants[label]["accuracy"]["PQ"] - accuracy["pytorch"]["PQ"]) < 0.5
    assert abs(variants["fp16"]["drop"]) < 1.0
    for v in variants.values():
        assert 0 <= v["accuracy"]["PQ"] <= 100 and len(v["cpu_latency"]["latencies_ms"]) == 3
        assert (v["max_rel_vs_fp32"] == 0) == (v["precision"] == "fp32")
    gate = accuracy["gate"]
    assert gate["metric"] == "PQ" and gate["reference"] == "fp32"
    assert len(accuracy["panels"]) == 2 and all((out / "panels").glob("panel_*.png"))

    if HAS_RTX and importlib.util.find_spec("tensorrt") is None:
        assert report["engine_backend"] == "tensorrt-rtx"
        for label, v in variants.items():
            if label.endswith("-plain"):
                manifest = json.loads(Path(v["engine"]["path"] + ".json").read_text())
                assert manifest["backend"] == "tensorrt-rtx"
                assert manifest["precision"].startswith(f"strongly-typed {v['precision']}")
                assert manifest["onnx_sha256"] and manifest["engine_sha256"]
            else:
                assert v["engine"] == {}  # the rewritten graph needs the TensorRT plugin
    page = (out / "report.html").read_text()
    assert "accuracy gate" in page and page.count("data:image/png;base64") == 2
    assert "fp16-plain" in page and "<svg" in page


@pytest.mark.slow
def test_strict_gate_fails_on_a_damaged_int8_calibration(tmp_path):
    # Calibrating on constant, far-out-of-range inputs gives INT8 scales that flatten the
    # real activations: PQ collapses, the gate flags INT8 and --strict exits 1 -- after the
    # report is written.
    bad = tmp_path / "bad_calibration.npy"
    np.save(bad, np.full((4, 3, 129, 129), 400.0, np.float32))
    out = tmp_path / "deploy"
    code = main(
        [
            "deploy",
            "--out", str(out),
            "--precision", "int8",
            "--calib", str(bad),
            "--calib-batches", "4",
            "--eval-images", "4",
            "--iterations", "1",
            "--panels", "0",
            "--backend", "none",
            "--strict",
        ]
    )  # fmt: skip
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    flagged = {v["label"]: v["flagged"] for v in report["variants"]}
    assert flagged["fp32"] is False and flagged["int8"] is True
    assert report["accuracy"]["gate"]["passed"] is False
    assert report["engine_backend"] is None


@pytest.mark.slow
def test_random_weights_skip_task_accuracy(tmp_path):
    out = tmp_path / "deploy"
    report = deploy(
        DeploySettings(
            out=out,
            pretrained=False,
            precisions=("fp32", "fp16"),
            iterations=2,
            backend="none",
            progress=False,
        )
    )
    assert report["weights"] == "random"
    assert report["accuracy"] == {"skipped": "random weights"}
    assert not (out / "data").exists()
    fp16 = next(v for v in report["variants"] if v["label"] == "fp16")
    assert 0 < fp16["max_rel_vs_fp32"] < 0.05 and fp16["drop"] is None
    assert any("random weights" in note for note in report["notes"])
