"""The one-command pipeline (`axial-deploy deploy`), end to end on this CPU machine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from axial_deploy.cli import main
from axial_deploy.pipeline.deploy import (
    DeployError,
    DeploySettings,
    choose_backend,
    deploy,
    parse_precisions,
    run_pipeline,
)

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def test_parse_precisions_keeps_fp32_as_the_reference():
    assert parse_precisions("int8") == ("fp32", "int8")
    assert parse_precisions("FP16, fp32") == ("fp32", "fp16")
    assert parse_precisions("fp8,int8") == ("fp32", "int8", "fp8")
    with pytest.raises(DeployError, match="fp32,fp16,int8,fp8"):
        parse_precisions("bf16")


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
    from axial_deploy.datasets.synthetic import generate_classification

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
    precisions = ("fp32", "fp16", "int8", "fp8")
    assert set(variants) == {f"{p}{g}" for p in precisions for g in ("", "-plain")}

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
    # the flagged variant's note names the layer-wise comparison that locates the damage
    assert any("int8 flagged" in n and "compare --layerwise" in n for n in report["notes"])


@pytest.mark.slow
def test_random_weights_skip_task_accuracy(tmp_path):
    out = tmp_path / "deploy"
    typed = run_pipeline(
        DeploySettings(
            out=out,
            pretrained=False,
            precisions=("fp32", "fp16"),
            iterations=2,
            backend="none",
            progress=False,
        )
    )
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(typed.to_json(), default=str))
    assert typed.gate_passed is None and typed.plan.weights == "random"
    assert report["weights"] == "random"
    assert report["accuracy"] == {"skipped": "random weights"}
    assert not (out / "data").exists()
    fp16 = next(v for v in report["variants"] if v["label"] == "fp16")
    assert 0 < fp16["max_rel_vs_fp32"] < 0.05 and fp16["drop"] is None
    assert any("random weights" in note for note in report["notes"])


def _typed_report(tmp_path: Path):
    """A DeployReport assembled from typed stage results (no pipeline run): three variants,
    one engine built and timed, one failed, one graph not built."""
    from axial_deploy.engine.profile import ProfileResult, latency_stats
    from axial_deploy.evaluation.evaluate import GateReport, GateRow
    from axial_deploy.pipeline.deploy import (
        AccuracyResult,
        BackendChoice,
        DeployPlan,
        DeployReport,
        EngineResult,
        ExportResult,
        HostEnvironment,
        RewriteStage,
        Variant,
        VerifyResult,
    )  # fmt: skip

    def timed(ms: list[float]) -> ProfileResult:
        return ProfileResult("m.onnx", "onnxruntime", latency_stats(ms), ms, 0.2)

    for name in ("m.onnx", "m.axial.onnx", "m.axial.int8.onnx"):
        (tmp_path / name).write_bytes(b"x" * 2048)
    plan = DeployPlan(
        "axial_deeplab_tiny", "panoptic", "pretrained", True, (1, 3, 129, 129),
        BackendChoice("tensorrt-rtx", "plain", "TensorRT-RTX on the plain graphs"),
    )  # fmt: skip
    built = EngineResult(
        "tensorrt-rtx", path="m.engine", build_s=2.5, size_mb=1.25, precision="fp32",
        accuracy={"PQ": 70.0}, drop=0.5, flagged=False, latency=timed([0.5, 0.7]),
    )  # fmt: skip
    variants = [
        Variant("fp32", "axial", tmp_path / "m.axial.onnx", 0.0, {"PQ": 70.5}, 0.0, False,
                timed([3.0, 4.0])),
        Variant("fp32", "plain", tmp_path / "m.onnx", 0.0, {"PQ": 70.5}, 0.0, False,
                timed([2.0, 2.5]), built),
        Variant("int8", "axial", tmp_path / "m.axial.int8.onnx", 0.2, {"PQ": 60.0}, 10.5, True,
                timed([1.0, 1.5]), EngineResult("tensorrt-rtx", error="no plugins")),
    ]  # fmt: skip
    gate = GateReport("PQ", "fp32", 1.0, [
        GateRow("fp32", 70.5, 0.0, False), GateRow("fp32-plain", 70.5, 0.0, False),
        GateRow("int8", 60.0, 10.5, True), GateRow("fp32-plain-engine", 70.0, 0.5, False),
    ])  # fmt: skip
    return DeployReport(
        settings=DeploySettings(out=tmp_path, precisions=("fp32", "int8")),
        plan=plan,
        export=ExportResult(tmp_path / "m.onnx", 1e-6),
        rewrite=RewriteStage(tmp_path / "m.axial.onnx", 8, [("softmax_3", "odd span")]),
        verify=VerifyResult(True, 2e-7, 1e-4),
        variants=variants,
        accuracy=AccuracyResult(data=tmp_path, images=4, pytorch={"PQ": 70.5}, gate=gate),
        environment=HostEnvironment("3.11", "2.13", "1.22", "x86_64", 2),
        stages_s={"export": 1.0, "rewrite": 0.5},
        notes=["accuracy gate FAILED: a drop above 1 points"],
    )


def test_report_json_and_html_from_typed_stage_results(tmp_path):
    from axial_deploy.pipeline.report import deploy_summary_table, write_deploy_report

    report = _typed_report(tmp_path)
    assert report.gate_passed is False and report.engine_backend == "tensorrt-rtx"
    json_path, html_path = write_deploy_report(report, tmp_path)
    data = json.loads(json_path.read_text())
    assert list(data) == [
        "model", "task", "weights", "input_shape", "precisions", "settings", "export",
        "rewrite", "verify", "engine_backend", "accuracy", "stages_s", "variants",
        "environment", "notes",
    ]  # fmt: skip
    assert data["rewrite"]["left_intact"] == [{"layer": "softmax_3", "reason": "odd span"}]
    assert data["accuracy"]["gate"]["passed"] is False and "panels" not in data["accuracy"]
    assert data["input_shape"] == [1, 3, 129, 129] and data["precisions"] == ["fp32", "int8"]
    assert list(data["environment"]) == ["python", "torch", "onnxruntime", "cpu", "cpu_count"]
    fp32, plain, int8 = data["variants"]
    assert fp32["engine"] == {} and fp32["onnx_mb"] == round(2048 / 2**20, 3)
    assert int8["engine"] == {"backend": "tensorrt-rtx", "error": "no plugins"}
    assert list(plain["engine"]) == [
        "backend", "path", "build_s", "size_mb", "precision", "accuracy", "drop", "flagged",
        "latency",
    ]  # fmt: skip
    assert plain["engine"]["latency"]["latencies_ms"] == [0.5, 0.7]
    assert plain["cpu_latency"]["latency"]["mean_ms"] == pytest.approx(2.25)

    table = deploy_summary_table(report).splitlines()
    assert table[0].split()[:3] == ["variant", "PQ", "drop"]
    assert "FLAGGED" in table[3] and "failed" in table[3] and "+10.50" in table[3]
    assert "1.2 MiB, 2.5 s" in table[2] and "0.600" in table[2]
    page = html_path.read_text()
    assert "accuracy gate: PQ drop vs fp32" in page and "<b>FAILED</b>" in page
    assert page.count("<svg") == 4 and "int8" in page and "softmax" not in page
