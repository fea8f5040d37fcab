"""List the model zoo with parameters and multiply-adds.

Task, parameters and multiply-adds of each zoo model at its default input size (counted on
PyTorch's meta device: instant, no memory).
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import Files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({}, {})


def run(args: argparse.Namespace) -> int:
    from axial_deploy.models.complexity import zoo_complexity

    print(f"{'model':<18} {'task':<15} {'params (M)':>10} {'input':>16} {'M-Adds (B)':>11}")
    for row in zoo_complexity():
        dims = "x".join(map(str, row.input_shape))
        print(
            f"{row.name:<18} {row.task:<15} {row.parameters / 1e6:>10.2f} "
            f"{dims:>16} {row.madds / 1e9:>11.1f}"
        )
    return 0
