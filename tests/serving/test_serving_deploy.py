"""deploy/k8s: the manifests parse and agree with what `triton-repo` writes (mount point,
plugin option, launch arguments) and with Triton's health endpoints. No cluster here: this
checks what can be checked without one."""

from __future__ import annotations

from pathlib import Path

import yaml

from axial_deploy.serving.triton_repo import MOUNT, launch_line

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def documents() -> dict[str, dict]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_triton_deployment_matches_the_repository_layout_and_health_endpoints():
    docs = documents()
    deployment = docs["Deployment/axial-triton"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    # the same arguments as triton-repo's launch line for an engine with the plugin
    line = launch_line("25.02", Path("libaxial_attention_plugin.so"), False, "tensorrt_plan")
    for arg in line.split("tritonserver ", 1)[1].replace("\\\n", " ").split():
        assert arg in args
    # the tag is the release triton-repo printed, set in kustomization.yaml's images:
    assert container["image"] == "nvcr.io/nvidia/tritonserver"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    tags = {i["name"]: i.get("newTag") for i in kustomization["images"]}
    assert tags["nvcr.io/nvidia/tritonserver"].endswith("-py3")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["repository"]["mountPath"] == MOUNT and mounts["repository"]["readOnly"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    exit_timeout = int(next(a for a in args if a.startswith("--exit-timeout-secs=")).split("=")[1])
    assert pod["terminationGracePeriodSeconds"] > exit_timeout  # drain before SIGKILL
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert docs["HorizontalPodAutoscaler/axial-triton"]["spec"]["minReplicas"] > 1


def test_services_select_the_triton_pods_and_expose_its_ports():
    docs = documents()
    labels = docs["Deployment/axial-triton"]["spec"]["template"]["metadata"]["labels"]
    ports = {
        p["name"]: p["containerPort"]
        for p in docs["Deployment/axial-triton"]["spec"]["template"]["spec"]["containers"][0][
            "ports"
        ]
    }
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    for name in ("Service/axial-triton", "Service/axial-triton-headless"):
        service = docs[name]["spec"]
        assert service["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["ports"]} <= set(ports)
    # the repository volume: a per-pod emptyDir the init container fills (no claim to bind)
    pod = docs["Deployment/axial-triton"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["repository"]
    assert not [d for d in docs if d.startswith("PersistentVolumeClaim/")]
    (init,) = pod["initContainers"]
    assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["repository"] == MOUNT
    assert docs["HorizontalPodAutoscaler/axial-triton"]["spec"]["scaleTargetRef"]["name"] == (
        "axial-triton"
    )
