"""Which backend runs engines on which GPU: TensorRT-RTX only on the GPUs of its support
matrix (https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/support-matrix-1/1.5.html),
`auto` and `doctor` alike. Pure functions of (GPUs, installed backends): a table of GPUs."""

from __future__ import annotations

import pytest

from axial_deploy.doctor import backend_checks, format_checks
from axial_deploy.engine.backends import Gpu, choose_auto, rtx_refusal, runnable_backends
from axial_deploy.pipeline.deploy import choose_backend

X86, ARM = "Linux-x86_64", "Linux-aarch64"
BOTH = {"tensorrt", "tensorrt-rtx"}
RTX_ONLY = {"tensorrt-rtx"}

# (GPU, can TensorRT-RTX run engines there?) per the matrix: compute capability and platform
GPUS = [
    (Gpu("NVIDIA A100-SXM4-80GB", "8.0", X86), False),
    (Gpu("NVIDIA H100 80GB HBM3", "9.0", X86), False),
    (Gpu("NVIDIA H200", "9.0", X86), False),
    (Gpu("NVIDIA B200", "10.0", X86), False),
    (Gpu("NVIDIA L4", "8.9", X86), True),
    (Gpu("NVIDIA A10", "8.6", X86), True),
    (Gpu("NVIDIA GeForce RTX 2080 Ti", "7.5", X86), True),
    (Gpu("NVIDIA GeForce RTX 3090", "8.6", X86), True),
    (Gpu("NVIDIA GeForce RTX 4090", "8.9", "Windows-AMD64"), True),
    (Gpu("NVIDIA GeForce RTX 5090", "12.0", X86), True),
    (Gpu("NVIDIA Tesla V100", "7.0", X86), False),
    (Gpu("Orin (nvgpu)", "8.7", ARM), False),
    (Gpu("NVIDIA Thor", "11.0", ARM), False),
    (Gpu("NVIDIA GeForce RTX 3090", "8.6", ARM), False),  # listed SM, unlisted platform
]


@pytest.mark.parametrize(("gpu", "rtx_runs"), GPUS, ids=[f"{g.name}-{g.platform}" for g, _ in GPUS])
def test_rtx_follows_its_support_matrix(gpu: Gpu, rtx_runs: bool) -> None:
    refusal = rtx_refusal(gpu)
    assert (refusal is None) == rtx_runs
    if refusal is not None:
        assert "support-matrix" in refusal and (gpu.sm in refusal or gpu.platform in refusal)
    verdicts = runnable_backends(gpu, BOTH)
    assert verdicts["tensorrt"] is None
    assert (verdicts["tensorrt-rtx"] is None) == rtx_runs
    assert runnable_backends(gpu, set()) == {
        "tensorrt": "not installed",
        "tensorrt-rtx": "not installed",
    }

    # auto: TensorRT where installed; TensorRT-RTX alone only inside the matrix
    assert choose_auto([gpu], BOTH)[0] == "tensorrt"
    backend, why = choose_auto([gpu], RTX_ONLY)
    assert backend == ("tensorrt-rtx" if rtx_runs else None)
    if backend is None:
        assert "\n" not in why and gpu.name in why and "pip install tensorrt" in why


def test_auto_without_a_gpu_builds_ahead_of_time_with_rtx_only() -> None:
    assert choose_auto([], RTX_ONLY)[0] == "tensorrt-rtx"
    assert choose_auto([], BOTH)[0] == "tensorrt-rtx"  # TensorRT cannot build without a GPU
    backend, why = choose_auto([], {"tensorrt"})
    assert backend is None and "needs a GPU" in why
    backend, why = choose_auto([], set())
    assert backend is None and "neither" in why


def test_auto_decides_by_gpu_0_the_one_engines_run_on() -> None:
    h100, rtx = Gpu("NVIDIA H100", "9.0"), Gpu("NVIDIA GeForce RTX 4090", "8.9")
    assert choose_auto([rtx, h100], RTX_ONLY)[0] == "tensorrt-rtx"
    assert choose_auto([h100, rtx], RTX_ONLY)[0] is None


def test_deploy_auto_uses_the_choice() -> None:
    h100 = [Gpu("NVIDIA H100 80GB HBM3", "9.0")]
    backend, graph, why = choose_backend("auto", None, gpus=h100, installed=RTX_ONLY)
    assert (backend, graph) == (None, "") and "SM 9.0" in why
    backend, graph, _ = choose_backend(
        "auto", None, gpus=[Gpu("RTX 5090", "12.0")], installed=RTX_ONLY
    )
    assert (backend, graph) == ("tensorrt-rtx", "plain")


def test_doctor_lists_the_backends_of_each_gpu() -> None:
    gpus = [Gpu("NVIDIA H100 80GB HBM3", "9.0"), Gpu("NVIDIA GeForce RTX 4090", "8.9")]
    checks = backend_checks(gpus, BOTH)
    assert [c.name for c in checks] == ["engine backends GPU 0", "engine backends GPU 1"]
    assert "tensorrt: yes" in checks[0].detail and "tensorrt-rtx: no, SM 9.0" in checks[0].detail
    assert "tensorrt: yes; tensorrt-rtx: yes" in checks[1].detail
    rtx_only = backend_checks(gpus[:1], RTX_ONLY)[0]
    assert not rtx_only.ok and "pip install tensorrt" in format_checks([rtx_only])
    (none,) = backend_checks([], BOTH)
    assert not none.ok and none.detail.startswith("no GPU")


def test_build_auto_resolves_here(tmp_path, capsys):
    """`build --backend auto` on this machine: the same choice as `choose_auto` (no GPU and
    TensorRT-RTX installed: an ahead-of-time TensorRT-RTX build)."""
    from engine_helpers import conv_net

    from axial_deploy.cli import main
    from axial_deploy.engine.backends import installed_backends, local_gpus
    from axial_deploy.engine.manifest import read_manifest

    expected, _ = choose_auto(local_gpus(), installed_backends())
    model, engine = conv_net(tmp_path / "net.onnx"), tmp_path / "net.engine"
    code = main(["build", str(model), "--backend", "auto", "-o", str(engine)])
    out, err = capsys.readouterr()
    if expected is None:
        assert code == 2 and "--backend auto" in err and not engine.exists()
    else:
        assert code == 0 and f"building {model} with {expected}" in out
        assert read_manifest(engine).backend == expected
