"""`axial-deploy serve` on a real Triton (PyTriton's bundled tritonserver) on 127.0.0.1.

One server per module (the trained axial_deeplab_tiny exported at 33x33: milliseconds per
inference), on free loopback ports, always stopped. Every client loop is bounded in count and
time. Outputs through Triton are compared with the same model run locally by runtime.Engine.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="needs the [serve] extra (nvidia-pytriton)")
pytest.importorskip("tritonclient.http", reason="needs the [serve] extra (tritonclient)")

from axial_deploy.engine.runtime import Engine, EngineError
from axial_deploy.serving import ServeError
from axial_deploy.serving.client import TritonClient, batch_histogram, parse_url
from axial_deploy.serving.loadtest import run_load
from axial_deploy.serving.pipeline import (
    PanopticStep,
    panoptic_settings_for,
    preprocess_image,
)
from axial_deploy.serving.server import ServeSettings, start_server

HW = (33, 33)
MAX_BATCH = 8


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def settings_for(model: Path, **overrides) -> ServeSettings:
    http_port, grpc_port, metrics_port = free_ports(3)
    values = dict(
        model=str(model),
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        max_batch=MAX_BATCH,
        queue_delay_us=5000,  # long enough on 2 cores for concurrent requests to meet
        drain_timeout_s=10,
        startup_timeout_s=90,
    )
    values.update(overrides)
    return ServeSettings(**values)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    from axial_deploy.export import export_onnx
    from axial_deploy.models import create_model

    model = create_model("axial_deeplab_tiny", pretrained=True)
    path = tmp_path_factory.mktemp("serve") / "tiny.onnx"
    return export_onnx(model, (1, 3, *HW), path, dynamic="batch")


@pytest.fixture(scope="module")
def server(tiny_onnx):
    panoptic = panoptic_settings_for("axial_deeplab_tiny", None)
    running = start_server(settings_for(tiny_onnx, panoptic=panoptic))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def local(tiny_onnx) -> Engine:
    return Engine(tiny_onnx)


def random_images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, *HW)).astype(np.float32)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_outputs_through_triton_equal_the_local_engine(server, local, protocol):
    images = random_images(3, seed=1)
    expected = local.infer({"images": images})
    url = server.http_url if protocol == "http" else server.grpc_url
    with TritonClient(url) as client:
        got = client.infer("axial", {"images": images})
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].shape == value.shape and got[name].dtype == np.float32
        # fp32, same ONNX Runtime graph on both sides: equal up to batch-order effects
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5)
    assert np.abs(expected["semantic"]).max() > 0  # a real, non-trivial output


def test_eight_clients_get_correct_answers_and_the_batcher_forms_batches(server, local):
    image = random_images(1, seed=2)
    expected = local.infer({"images": image})

    def check(outputs: dict) -> None:
        for name, value in expected.items():
            np.testing.assert_allclose(outputs[name], value, rtol=1e-5, atol=1e-5)

    report = run_load(
        server.http_url, "axial", {"images": image}, concurrency=8, requests=200,
        time_limit_s=60, timeout_s=20, check=check,
    )  # fmt: skip
    assert report.errors == 0, report.error_samples
    assert report.requests_sent == 200
    assert report.latency_us["p50"] <= report.latency_us["p99"]
    # Triton's statistics: every request executed, and some executions held > 1 request
    assert sum(size * count for size, count in report.batch_histogram.items()) == 200
    assert max(report.batch_histogram) > 1, report.batch_histogram


def _post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    port = int(server.http_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def _json_request(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def _tensor(name="images", shape=(1, 3, *HW), datatype="FP32", data=None) -> dict:
    count = int(np.prod(shape))
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": data or [0.5] * count}


# case -> (body, HTTP status, words of Triton's error). Triton 2.51 answers a body that is
# not JSON with 500 (its JSON parser's failure), every other refusal with 400.
BAD_REQUESTS = {
    "wrong shape": (_json_request([_tensor(shape=(1, 3, 16, 16))]), 400, "unexpected shape"),
    "wrong dtype": (
        _json_request([_tensor(datatype="INT32", data=[1] * 3267)]),
        400,
        "expects 'FP32'",
    ),
    "missing input": (_json_request([]), 400, "expected 1 inputs but got 0"),
    "batch above max": (
        _json_request([_tensor(shape=(9, 3, *HW))]),
        400,
        "batch-size must be <= 8",
    ),
    "garbage bytes": (b"\x00\xffnot json{{", 500, "failed to parse the request JSON buffer"),
    "unknown input": (_json_request([_tensor(name="pixels")]), 400, "unexpected inference input"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(server, local, case):
    body, expected_status, message = BAD_REQUESTS[case]
    status, text = _post(server, "/v2/models/axial/infer", body)
    assert status == expected_status, (status, text)
    assert message in json.loads(text)["error"], text
    image = random_images(1, seed=3)
    with TritonClient(server.http_url) as client:  # the next good request is served
        got = client.infer("axial", {"images": image})
    np.testing.assert_allclose(
        got["center"], local.infer({"images": image})["center"], rtol=1e-5, atol=1e-5
    )


def test_an_oversize_payload_is_refused_and_the_server_keeps_serving(server):
    # Binary body announcing one [1, 3, 33, 33] tensor but carrying 16 MiB of extra bytes.
    header = json.dumps(
        {"inputs": [{**_tensor(), "data": None, "parameters": {"binary_data_size": 13068}}]}
    ).replace(', "data": null', "")
    body = header.encode() + bytes(13068 + (16 << 20))
    headers = {"Inference-Header-Content-Length": str(len(header))}
    status, text = _post(server, "/v2/models/axial/infer", body, headers)
    assert status == 400, (status, text[:200])
    assert "unexpected additional input data" in text or "size" in text, text[:300]
    with TritonClient(server.http_url) as client:
        assert client.ready("axial")


def test_client_errors_are_one_line_serve_errors(server):
    with TritonClient(server.http_url) as client, pytest.raises(ServeError, match="unknown model"):
        client.infer("no_such_model", {"images": random_images(1, 0)})
    with pytest.raises(ServeError, match="not a loopback address"):
        parse_url("http://192.0.2.1:8000")
    with pytest.raises(ServeError, match="cannot reach"), TritonClient(
        f"http://127.0.0.1:{free_ports(1)[0]}", timeout_s=5
    ) as client:  # fmt: skip
        client.metadata("axial")


def test_health_statistics_and_metrics_endpoints(server):
    for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/axial/ready"):
        with urllib.request.urlopen(server.http_url + path, timeout=10) as response:
            assert response.status == 200
    with TritonClient(server.http_url) as client:
        client.infer("axial", {"images": random_images(1, seed=4)})
        assert sum(batch_histogram(client.statistics("axial")).values()) >= 1
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    assert 'nv_inference_request_success{model="axial"' in metrics


def test_panoptic_model_returns_the_local_segments(server, local):
    image = (np.random.default_rng(5).random((41, 52, 3)) * 255).astype(np.uint8)
    with TritonClient(server.grpc_url) as client:
        got = client.infer("axial_panoptic", {"image": image[None]})
    outputs = local.infer({"images": preprocess_image(image, HW)[None]})
    step = PanopticStep(panoptic_settings_for("axial_deeplab_tiny", None))
    ids, segments = step(outputs["semantic"], outputs["center"], outputs["offset"], [(41, 52)])[0]
    assert got["panoptic"].shape == (1, 41, 52) and got["panoptic"].dtype == np.int32
    np.testing.assert_array_equal(got["panoptic"][0], ids)
    assert json.loads(got["segments_info"].reshape(-1)[0]) == segments
    assert segments and {s["category_id"] for s in segments} <= set(range(7))


def test_infer_and_loadtest_commands(server, tmp_path, capsys):
    from PIL import Image

    from axial_deploy.cli import main

    picture = tmp_path / "street.png"
    Image.fromarray((np.random.default_rng(6).random((40, 48, 3)) * 255).astype(np.uint8)).save(
        picture
    )
    assert (
        main(["infer", str(picture), "--url", server.http_url, "-o", str(tmp_path / "o.npz")]) == 0
    )
    with np.load(tmp_path / "o.npz") as saved:
        assert saved["semantic"].shape == (1, 7, *HW)
    assert main(["infer", str(picture), "--url", server.grpc_url, "--name", "axial_panoptic"]) == 0
    assert "segments" in capsys.readouterr().out
    report_path = tmp_path / "load.json"
    argv = ["loadtest", "--url", server.grpc_url, "--concurrency", "2", "--requests", "6"]
    assert main([*argv, "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["requests_sent"] == 6 and report["errors"] == 0
    assert {"p50", "p90", "p99"} <= set(report["latency_us"])


def test_a_model_that_cannot_load_fails_fast_with_a_clear_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    settings = settings_for(broken)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"broken\.onnx"):
        start_server(settings)
    assert time.monotonic() - started < 30
    with socket.socket() as probe:  # nothing was left listening
        assert probe.connect_ex(("127.0.0.1", settings.http_port)) != 0


def test_a_config_triton_refuses_gives_tritons_reason_not_a_hang(tiny_onnx):
    # Triton itself validates the model config: a preferred batch above the max batch size.
    settings = settings_for(tiny_onnx, preferred_batch=[16], startup_timeout_s=60)
    started = time.monotonic()
    with pytest.raises(ServeError, match="preferred size must be <= max batch size"):
        start_server(settings)
    assert time.monotonic() - started < 60
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", settings.http_port)) != 0


@pytest.mark.slow
def test_sigterm_during_load_drains_and_exits_zero(tiny_onnx):
    http_port, grpc_port, metrics_port = free_ports(3)
    command = [
        sys.executable, "-m", "axial_deploy.cli", "serve", str(tiny_onnx),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--metrics-port", str(metrics_port), "--queue-delay-us", "5000", "--drain-timeout", "20",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 90
        with TritonClient(url, timeout_s=5) as client:
            while not client.ready("axial"):
                assert process.poll() is None and time.monotonic() < deadline, (
                    "server did not start"
                )
                time.sleep(0.5)
        import threading

        image = random_images(1, seed=7)
        killed_at: list[float] = []

        def terminate() -> None:
            killed_at.append(time.monotonic())
            os.kill(process.pid, signal.SIGTERM)

        killer = threading.Timer(1.0, terminate)
        killer.start()
        report = run_load(url, "axial", {"images": image}, concurrency=4, requests=400,
                          time_limit_s=60, timeout_s=20)  # fmt: skip
        load_ended = time.monotonic()
        killer.join()
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert killed_at and killed_at[0] < load_ended, "SIGTERM came after the load: raise requests"
    assert "SIGTERM: draining" in output, output[-2000:]
    assert process.returncode == 0, output[-2000:]
    # Requests sent while draining on open connections were still answered
    assert report.errors == 0, report.error_samples
    assert report.requests_sent == 400
