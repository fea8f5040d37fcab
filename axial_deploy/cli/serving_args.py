"""Flags shared by the serving commands (serve, triton-repo, infer, loadtest).

`--name` is the Triton model name in all four; batching and panoptic flags mean the same in
`serve` and `triton-repo`; the client flags the same in `infer` and `loadtest`.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import non_negative_int, positive_float, positive_int


def parse_sizes(text: str) -> list[int]:
    """Comma-separated positive sizes, e.g. 4,8."""
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = [0]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must be positive sizes like 4,8")
    return values


def add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="axial", help="Triton model name (default axial)")


def add_batching(parser: argparse.ArgumentParser, default_max: int | None) -> None:
    parser.add_argument(
        "--max-batch",
        type=non_negative_int,
        default=default_max,
        help="Triton's max_batch_size: the dynamic batcher merges requests up to this batch"
        + (f" (default {default_max}; 0 disables batching)" if default_max is not None else ""),
    )
    parser.add_argument(
        "--queue-delay-us",
        type=non_negative_int,
        default=2000,
        help="how long the batcher may hold a request to form a larger batch (default 2000 us)",
    )
    parser.add_argument(
        "--preferred-batch", type=parse_sizes, default=[], help="preferred batch sizes, e.g. 4,8"
    )
    parser.add_argument(
        "--instances", type=positive_int, default=1, help="model instances (default 1)"
    )


def add_panoptic(parser: argparse.ArgumentParser) -> None:
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


def panoptic_settings(args: argparse.Namespace, model: str):
    """The panoptic post-processing settings the flags ask for, or None without --panoptic."""
    if not args.panoptic:
        return None
    from axial_deploy.models import list_models
    from axial_deploy.serving.pipeline import panoptic_settings_for

    record = args.panoptic_record or (model if model in list_models() else None)
    return panoptic_settings_for(record, args.thing_ids)


def add_client(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="http://HOST:PORT or grpc://HOST:PORT "
        "(default http://127.0.0.1:8000; loopback only unless --allow-remote)",
    )  # fmt: skip
    add_name(parser)
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
    parser.add_argument(
        "--timeout", type=positive_float, default=30.0, help="per-request timeout (s, default 30)"
    )
