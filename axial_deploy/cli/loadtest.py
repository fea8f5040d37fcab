"""Load a Triton model with N concurrent clients and M requests, bounded in count and time.

Prints throughput and p50/p90/p95/p99 latency in perf_analyzer's terms and the server's
batch-size histogram (from Triton's statistics). Exits 1 on any failed request.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import Files, add_report, add_seed, positive_float, positive_int
from axial_deploy.cli.serving_args import add_client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", help="image or .npy to send (default: random)")
    add_client(parser)
    parser.add_argument(
        "--concurrency", type=positive_int, default=1, help="parallel clients (default 1)"
    )
    parser.add_argument(
        "--requests", type=positive_int, default=100, help="requests in all (default 100)"
    )
    parser.add_argument(
        "--time-limit", type=positive_float, default=60.0, help="stop after (s, default 60)"
    )
    add_seed(parser, what="random input")
    add_report(parser, "write the report to this JSON file", old_json=True)


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({"INPUT": args.input}, {"--report": args.report})


def run(args: argparse.Namespace) -> int:
    from axial_deploy.artifacts import write_json
    from axial_deploy.serving.client import TritonClient, input_for
    from axial_deploy.serving.loadtest import random_feed, run_load

    with TritonClient(args.url, allow_remote=args.allow_remote, timeout_s=args.timeout) as client:
        metadata = client.metadata(args.name)
    feed = input_for(args.input, metadata) if args.input else random_feed(metadata, args.seed)
    report = run_load(
        args.url,
        args.name,
        feed,
        concurrency=args.concurrency,
        requests=args.requests,
        time_limit_s=args.time_limit,
        timeout_s=args.timeout,
        allow_remote=args.allow_remote,
    )
    print(report.summary())
    if args.report:
        write_json(args.report, report.to_json())
        print(f"wrote {args.report}")
    return 1 if report.errors else 0
