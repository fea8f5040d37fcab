"""Check torch, ONNX Runtime, TensorRT, CUDA, GPU and the plugin library.

Reports what this machine has for each stage and what to do for what is missing. Exits with
status 1 when something the CPU flow needs is missing.
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import Files, add_plugins


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plugins(parser, "plugin library to check")


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({"--plugins": args.plugins}, {})


def run(args: argparse.Namespace) -> int:
    from axial_deploy.doctor import format_checks, run_checks

    checks = run_checks(args.plugins)
    print(format_checks(checks))
    return 1 if any(c.required and not c.ok for c in checks) else 0
