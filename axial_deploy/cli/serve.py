"""Serve a model on a real Triton Inference Server (PyTriton) until SIGTERM/Ctrl-C.

Runs the model through runtime.Engine (ONNX Runtime on a CPU, TensorRT on a GPU), one engine
per instance, behind Triton's dynamic batcher; HTTP/gRPC on 127.0.0.1, health at
/v2/health/ready and /v2/health/live, statistics at /v2/models/NAME/stats, Prometheus metrics
on the metrics port. On SIGTERM or Ctrl-C, in-flight requests finish (up to --drain-timeout)
and the command exits 0. Needs pip install 'axial-deploy[serve]'.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import (
    Files,
    add_cuda_binding,
    add_plugins,
    non_negative_int,
    parse_size,
    positive_float,
)
from axial_deploy.cli.serving_args import add_batching, add_name, add_panoptic, panoptic_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="a .engine (with its manifest), an .onnx file, or a zoo model with shipped "
        "weights (exported to ONNX at its trained size, e.g. axial_deeplab_tiny)",
    )  # fmt: skip
    add_name(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument(
        "--http-port", type=non_negative_int, default=8000, help="HTTP port (default 8000)"
    )
    parser.add_argument(
        "--grpc-port", type=non_negative_int, default=8001, help="gRPC port (default 8001)"
    )
    parser.add_argument(
        "--metrics-port", type=non_negative_int, default=8002, help="metrics port (default 8002)"
    )
    add_batching(parser, 8)
    add_panoptic(parser)
    parser.add_argument(
        "--input-size", type=parse_size, help="HxW for a zoo MODEL (default: trained)"
    )
    parser.add_argument(
        "--drain-timeout", type=non_negative_int, default=30, help="seconds to finish in-flight "
        "requests on SIGTERM/Ctrl-C before exiting (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--startup-timeout", type=positive_float, default=120.0, help="give up starting after (s)"
    )
    add_plugins(parser, "AxialAttention plugin library (engines)")
    add_cuda_binding(parser)
    parser.add_argument("--verbose", action="store_true", help="print Triton's log")


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({"MODEL": args.model, "--plugins": args.plugins}, {})


def run(args: argparse.Namespace) -> int:
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
        panoptic=panoptic_settings(args, args.model),
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
