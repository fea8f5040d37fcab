"""Argument groups and value types shared by the commands: each flag is defined once here, so a
flag name means the same thing in every command that has it.

- `-o/--output PATH`: where the command writes its main result (a file, or a folder for
  `dataset` and `deploy`);
- `--report FILE.json`: a JSON report of what the command did (`profile` writes FILE.html too);
- `--seed N`: the seed of everything random the command makes (inputs, weights, order);
- `--plugins LIB`: the AxialAttention TensorRT plugin library;
- `--model NAME` / `--checkpoint` / `--pretrained` / `--num-classes`: a zoo model and its weights;
- `--max-drop` / `--strict`: the accuracy gate;
- `--cuda`: the CUDA binding of the TensorRT runtime.

Old spellings (`--out`, `--json`, deploy's `--panels N`) are accepted for one release as
hidden aliases, with a note on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

# Largest batch and height/width a shape option takes: far above any deployment (Axial-DeepLab
# runs at 1025x2049), far below sizes that would exhaust memory before any check runs.
MAX_BATCH, MAX_SIDE = 256, 8192


class Files(NamedTuple):
    """What a command reads and writes, each `{label for messages: path or None}`; `folders`
    names the outputs that are folders. Every command module has `files(args) -> Files`, and
    `cli.main` checks them all (distinct, writable, no input overwritten) before any work."""

    reads: dict[str, object]
    writes: dict[str, object]
    folders: tuple[str, ...] = ()


def _dims(text: str, count: int) -> tuple[int, ...] | None:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        return None
    if len(dims) != count or not all(d > 0 for d in dims):
        return None
    if max(dims[-2:]) > MAX_SIDE or (count == 4 and dims[0] > MAX_BATCH):
        return None
    return dims


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """NxCxHxW with positive sizes and 3 channels, e.g. 1x3x224x224."""
    dims = _dims(text, 4)
    if dims is None or dims[1] != 3:
        raise argparse.ArgumentTypeError(
            f"input shape {text!r} must be NxCxHxW with C = 3, 1 <= N <= {MAX_BATCH} and "
            f"1 <= H, W <= {MAX_SIDE}, e.g. 1x3x224x224"
        )
    return dims  # type: ignore[return-value]


def parse_size(text: str) -> tuple[int, int]:
    """HxW with positive sizes, e.g. 257x513."""
    dims = _dims(text, 2)
    if dims is None:
        raise argparse.ArgumentTypeError(
            f"size {text!r} must be HxW with 1 <= H, W <= {MAX_SIDE}, e.g. 257x513"
        )
    return dims  # type: ignore[return-value]


def positive_int(text: str) -> int:
    return _bounded_int(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _bounded_int(text, 0, "a non-negative integer")


def _bounded_int(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def add_seed(parser: argparse.ArgumentParser, default: int = 0, what: str = "random inputs"):
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=default,
        help=f"seed of the {what} (default: {default})",
    )


def add_output(parser: argparse.ArgumentParser, what: str, *, required: bool = True, **extra):
    """`-o/--output`; `extra` may set default and metavar."""
    parser.add_argument("-o", "--output", required=required, help=what, **extra)


def add_output_folder(parser: argparse.ArgumentParser, what: str, default: str | None = None):
    """`-o/--output DIR` for commands that write a folder (old spelling `--out`)."""
    parser.add_argument(
        "-o", "--output", "--out", dest="output", metavar="DIR", required=default is None,
        default=default, action=OldSpelling, old=("--out",),
        help=what + (f" (default: {default})" if default else ""),
    )  # fmt: skip


def add_report(parser: argparse.ArgumentParser, what: str, *, old_json: bool = False):
    names = ["--report", "--json"] if old_json else ["--report"]
    parser.add_argument(
        *names, dest="report", metavar="FILE.json", help=what, action=OldSpelling, old=("--json",)
    )


def add_plugins(parser: argparse.ArgumentParser, what: str = "AxialAttention plugin library"):
    parser.add_argument("--plugins", metavar="LIB", help=what)


def add_cuda_binding(parser: argparse.ArgumentParser):
    parser.add_argument(
        "--cuda",
        choices=["cuda-python", "pycuda", "polygraphy"],  # runtime.CUDA_LIBRARIES (imports numpy)
        default="cuda-python",
        help="CUDA binding of the TensorRT runtime: cuda-python (default), pycuda, or "
        "polygraphy (Polygraphy's ctypes wrapper over the CUDA runtime: nothing more to install)",
    )


def add_zoo_model(parser: argparse.ArgumentParser, *, default: str | None = None, what: str = ""):
    from axial_deploy.models import list_models  # the registry: torch-free, --help stays fast

    names = list_models()
    parser.add_argument(
        "--model",
        required=default is None,
        default=default,
        choices=names,
        metavar="NAME",
        help=(what or "zoo model") + f": {', '.join(names)}",
    )


def add_checkpoint(parser: argparse.ArgumentParser, what: str):
    parser.add_argument("--checkpoint", metavar="FILE.pt", help=what)


def add_num_classes(parser: argparse.ArgumentParser, what: str):
    parser.add_argument("--num-classes", type=positive_int, help=what)


def add_gate(parser: argparse.ArgumentParser, what: str):
    parser.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="accuracy gate: largest allowed drop of the primary metric, in points "
        "(PQ 0-100 / top-1 %%; default 1.0)",
    )
    parser.add_argument("--strict", action="store_true", help=f"exit 1 when {what}")


class OldSpelling(argparse.Action):
    """Stores like "store", with a note on stderr when an old spelling in `old` was used."""

    def __init__(self, option_strings, dest, old: tuple[str, ...] = (), **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.old = old

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.old:
            new = next(o for o in self.option_strings if o.startswith("--") and o not in self.old)
            print(
                f"note: {option_string} is an old spelling of {new}; it goes in the next release",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)
