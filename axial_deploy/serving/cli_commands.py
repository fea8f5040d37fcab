"""The serving subcommands (serve, triton-repo, infer, loadtest), each an
`add_*_arguments(parser)` + `run_*(args) -> int` pair whose function docstring is its help.

Heavy and optional libraries (torch, PyTriton, tritonclient) are imported inside `run_*`, so
`axial-deploy --help` stays fast and works without the [serve] extra.
"""

from __future__ import annotations

import argparse
import json


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be HxW, e.g. 129x129") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive")
    return h, w


def _sizes(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be sizes like 4,8") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return values


def _write_json(path: str, document: dict) -> None:
    from axial_deploy.artifacts import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")


def _add_batching(parser: argparse.ArgumentParser, default_max: int | None) -> None:
    parser.add_argument(
        "--max-batch",
        type=int,
        default=default_max,
        help="Triton's max_batch_size: the dynamic batcher merges requests up to this batch"
        + (f" (default {default_max}; 0 disables batching)" if default_max is not None else ""),
    )
    parser.add_argument(
        "--queue-delay-us",
        type=int,
        default=2000,
        help="how long the batcher may hold a request to form a larger batch (default 2000 us)",
    )
    parser.add_argument(
        "--preferred-batch", type=_sizes, default=[], help="preferred batch sizes, e.g. 4,8"
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="model instances (parallel executions, default 1)"
    )


def _add_panoptic(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--panoptic",
        action="store_true",
        help="also serve NAME_panoptic: a raw uint8 RGB image in, COCO segment ids and "
        "segments_info (JSON) out",
    )
    parser.add_argument(
        "--panoptic-record",
        metavar="ZOO_NAME",
        help="take the classes and post-processing settings from this zoo model's shipped "
        "record (default: MODEL itself when it is a zoo name)",
    )
    parser.add_argument(
        "--thing-ids", help="thing classes (train ids) instead of a record, e.g. 3,4,5,6"
    )


def _panoptic(args: argparse.Namespace, model: str):
    if not args.panoptic:
        return None
    from axial_deploy.models import list_models
    from axial_deploy.serving.pipeline import panoptic_settings_for

    record = args.panoptic_record or (model if model in list_models() else None)
    return panoptic_settings_for(record, args.thing_ids)


# ---------------------------------------------------------------------------------- serve


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="a .engine (with its manifest), an .onnx file, or a zoo model with shipped "
        "weights (exported to ONNX at its trained size, e.g. axial_deeplab_tiny)",
    )  # fmt: skip
    parser.add_argument("--name", default="axial", help="Triton model name (default axial)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    parser.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)"
    )
    _add_batching(parser, 8)
    _add_panoptic(parser)
    parser.add_argument("--input-size", type=_hw, help="HxW for a zoo MODEL (default: trained)")
    parser.add_argument(
        "--drain-timeout", type=int, default=30, help="seconds to finish in-flight requests on "
        "SIGTERM/Ctrl-C before exiting (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--startup-timeout", type=float, default=120.0, help="give up starting after (s)"
    )
    parser.add_argument("--plugins", help="AxialAttention plugin library (engines)")
    parser.add_argument("--cuda", choices=["cuda-python", "pycuda"], default="cuda-python")
    parser.add_argument("--verbose", action="store_true", help="print Triton's log")


def run_serve(args: argparse.Namespace) -> int:
    """Serve a model on a real Triton Inference Server (PyTriton) until SIGTERM/Ctrl-C.

    Runs the model through runtime.Engine (ONNX Runtime on a CPU, TensorRT on a GPU), one
    engine per instance, behind Triton's dynamic batcher; HTTP/gRPC on 127.0.0.1, health at
    /v2/health/ready and /v2/health/live, statistics at /v2/models/NAME/stats, Prometheus
    metrics on the metrics port. On SIGTERM or Ctrl-C, in-flight requests finish (up to
    --drain-timeout) and the command exits 0. Needs pip install 'axial-deploy[serve]'.
    """
    from axial_deploy.serving.server import ServeSettings, serve_until_signal

    settings = ServeSettings(
        model=args.model,
        name=args.name,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        preferred_batch=args.preferred_batch,
        instances=args.instances,
        panoptic=_panoptic(args, args.model),
        input_size=args.input_size,
        drain_timeout_s=args.drain_timeout,
        startup_timeout_s=args.startup_timeout,
        cuda=args.cuda,
        plugins=args.plugins,
        allow_remote=args.allow_remote,
        verbose=args.verbose,
    )

    def ready(server) -> None:
        print(f"serving {', '.join(server.models)} (started in {server.start_seconds:.1f} s)")
        print(f"  HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
        if server.log_file is not None:
            print(f"  Triton's log: {server.log_file} (--verbose prints it)")
        print(f"  ready: {server.http_url}/v2/health/ready   Ctrl-C or SIGTERM stops", flush=True)

    return serve_until_signal(settings, ready)


# ----------------------------------------------------------------------------- triton-repo


def add_triton_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a TensorRT .engine (with its manifest) or an .onnx file")
    parser.add_argument("--out", required=True, metavar="DIR", help="repository folder to write")
    parser.add_argument("--name", default="axial", help="model name (default axial)")
    _add_batching(parser, None)
    parser.add_argument(
        "--kind", choices=["KIND_GPU", "KIND_CPU"], default="KIND_GPU", help="instance kind"
    )
    parser.add_argument("--release", help="NGC Triton release, e.g. 25.01 (default: matched)")
    parser.add_argument("--plugins", help="plugin library (default: the manifest's)")
    parser.add_argument("--ort-op-library", help="ONNX Runtime custom-op library (ONNX models)")
    _add_panoptic(parser)
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def run_triton_repo(args: argparse.Namespace) -> int:
    """Write a Triton model repository for a GPU fleet running the NGC Triton image.

    For an engine: a tensorrt_plan model whose config.pbtxt comes from the engine manifest
    (tensors, dtypes, dims, max batch from the profile, dynamic batching, instance groups),
    the plugin library beside it and the exact launch line with the plugin option; the
    manifest's TensorRT version picks the matching Triton release (warning when none
    matches). For an ONNX file: an onnxruntime_onnx model. --panoptic adds Python-backend
    pre/post-processing and an ensemble NAME_panoptic that takes raw images.
    """
    from axial_deploy.serving.triton_repo import RepoOptions, write_repository

    options = RepoOptions(
        name=args.name,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        preferred_batch=args.preferred_batch,
        instances=args.instances,
        kind=args.kind,
        release=args.release,
        plugins=args.plugins,
        ort_op_library=args.ort_op_library,
        panoptic=_panoptic(args, ""),
        force=args.force,
    )
    report = write_repository(args.model, args.out, options)
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(f"wrote {report.out}: models {', '.join(report.models)} (Triton {report.release})")
    print(f"launch (also in {report.out}/launch.sh, with OUT={report.out}):\n  {report.launch}")
    return 0


# ----------------------------------------------------------------------------------- infer


def _add_client(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="http://HOST:PORT or grpc://HOST:PORT "
        "(default http://127.0.0.1:8000; loopback only unless --allow-remote)",
    )  # fmt: skip
    parser.add_argument("--model", default="axial", help="Triton model name (default axial)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")


def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="an image (PNG/JPEG) or a .npy array")
    _add_client(parser)
    parser.add_argument("-o", "--output", help="write the outputs to this .npz")


def run_infer(args: argparse.Namespace) -> int:
    """Send one image or .npy array to a Triton server and print the outputs.

    Images go to an image model (NAME_panoptic) as uint8 pixels, or are preprocessed to the
    model's input size for a tensor model; .npy arrays are sent as they are.
    """
    import numpy as np

    from axial_deploy.serving.client import TritonClient, describe, input_for

    with TritonClient(args.url, allow_remote=args.allow_remote, timeout_s=args.timeout) as client:
        feed = input_for(args.input, client.metadata(args.model))
        outputs = client.infer(args.model, feed)
    print(f"{args.model} at {args.url}:")
    print("\n".join(describe(outputs)))
    if args.output:
        from axial_deploy.artifacts import atomic_output

        with atomic_output(args.output) as tmp, open(tmp, "wb") as stream:
            np.savez(stream, **outputs)
        print(f"wrote {args.output}")
    return 0


# -------------------------------------------------------------------------------- loadtest


def add_loadtest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", help="image or .npy to send (default: random)")
    _add_client(parser)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="parallel clients (closed loop, default 1)"
    )
    parser.add_argument("--requests", type=int, default=100, help="requests in all (default 100)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="stop after (s, default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input")
    parser.add_argument("--json", help="write the report to this JSON file")


def run_loadtest(args: argparse.Namespace) -> int:
    """Load a Triton model with N concurrent clients and M requests (both bounded, and a time
    limit), then print throughput and p50/p90/p95/p99 latency in perf_analyzer's terms and
    the server's batch-size histogram (from Triton's statistics). Exit 1 on any error."""
    from axial_deploy.serving.client import TritonClient, input_for
    from axial_deploy.serving.loadtest import random_feed, run_load

    with TritonClient(args.url, allow_remote=args.allow_remote, timeout_s=args.timeout) as client:
        metadata = client.metadata(args.model)
    feed = input_for(args.input, metadata) if args.input else random_feed(metadata, args.seed)
    report = run_load(
        args.url,
        args.model,
        feed,
        concurrency=args.concurrency,
        requests=args.requests,
        time_limit_s=args.time_limit,
        timeout_s=args.timeout,
        allow_remote=args.allow_remote,
    )
    print(report.summary())
    if args.json:
        _write_json(args.json, report.to_json())
    return 1 if report.errors else 0
