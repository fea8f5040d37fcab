"""Send one image or .npy array to a Triton server and print the outputs.

Images go to an image model (NAME_panoptic) as uint8 pixels, or are preprocessed to the
model's input size for a tensor model; .npy arrays are sent as they are.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import Files, add_output
from axial_deploy.cli.serving_args import add_client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="an image (PNG/JPEG) or a .npy array")
    add_client(parser)
    add_output(parser, "write the outputs to this .npz", required=False, metavar="FILE.npz")


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({"INPUT": args.input}, {"-o": args.output})


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from axial_deploy.artifacts import atomic_output
    from axial_deploy.serving.client import TritonClient, describe, input_for

    with TritonClient(args.url, allow_remote=args.allow_remote, timeout_s=args.timeout) as client:
        feed = input_for(args.input, client.metadata(args.name))
        outputs = client.infer(args.name, feed)
    print(f"{args.name} at {args.url}:")
    print("\n".join(describe(outputs)))
    if args.output:
        with atomic_output(args.output) as tmp, open(tmp, "wb") as stream:
            np.savez(stream, **outputs)
        print(f"wrote {args.output}")
    return 0
