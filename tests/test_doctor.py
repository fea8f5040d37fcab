"""`axial-deploy doctor` reports every item, with a fix for each missing one."""

from __future__ import annotations

from axial_deploy.cli import main
from axial_deploy.doctor import run_checks
from axial_deploy.engine.backends import local_gpus


def test_doctor_reports_each_item(capsys, tmp_path):
    missing = tmp_path / "libnone.so"
    checks = {c.name: c for c in run_checks(missing)}
    gpus = local_gpus()
    # the platform lines appear only on a Jetson or with a mismatch
    # (tests/engine/test_platform_checks.py)
    platform_lines = {"JetPack", "numpy / torch", "cuda-python / driver"}
    assert set(checks) - platform_lines == {
        "torch",
        "ONNX Runtime",
        "onnxruntime-extensions",
        "TensorRT",
        "TensorRT-RTX",
        "cuda-python",
        "CUDA runtime",
        "GPU",
        "kernel library",
        "plugin library",
        "axial_attention_cpu",
        "axial_calibration",
    } | ({f"engine backends GPU {i}" for i in range(len(gpus))} if gpus else {"engine backends"})
    assert checks["torch"].ok and checks["ONNX Runtime"].ok
    if not gpus:
        assert checks["engine backends"].detail.startswith("no GPU")
    assert not checks["plugin library"].ok and "make plugins" in checks["plugin library"].fix
    assert all(c.fix for c in checks.values() if not c.ok)

    broken = tmp_path / "libbroken.so"
    broken.write_bytes(b"not a library")
    assert "does not load" in {c.name: c for c in run_checks(broken)}["plugin library"].detail

    assert main(["doctor", "--plugins", str(missing)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n[") + 1 == len(checks) and "-> make plugins" in out
