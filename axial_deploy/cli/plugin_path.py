"""Print the AxialAttention TensorRT plugin library path for trtexec, Polygraphy and Triton.

The library is looked for where every command looks: $AXIAL_DEPLOY_PLUGIN_LIB, then the
installed package (axial_deploy/lib/, what `pip install .` compiled where nvcc and TensorRT
were found), then a checkout's build/lib/ (`make plugins`). Never the current folder.

examples:
  trtexec --onnx=model.axial.onnx --dynamicPlugins=$(axial-deploy plugin-path --format path)
  polygraphy run model.axial.onnx --trt $(axial-deploy plugin-path --format polygraphy)
  tritonserver --model-repository=models $(axial-deploy plugin-path --format triton)

Exits with status 2, saying how to build the library, when there is none.
"""

from __future__ import annotations

import argparse
import shlex

from axial_deploy.cli.args import Files
from axial_deploy.errors import AxialDeployError

FORMATS = ("all", "path", "trtexec", "polygraphy", "triton")


class PluginNotFoundError(AxialDeployError, FileNotFoundError):
    """No plugin library where the resolver looks."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="all",
        help="what to print: the bare path, or the option of one tool (trtexec "
        "--dynamicPlugins=, Polygraphy --plugins, Triton --backend-config); default: all of "
        "them, with where the library was found",
    )


def forms(path: str) -> dict[str, str]:
    """The option each tool takes to load the plugin library at `path`."""
    quoted = shlex.quote(path)
    return {
        "path": path,
        "trtexec": f"--dynamicPlugins={quoted}",
        "polygraphy": f"--plugins {quoted}",
        # Triton's TensorRT backend loads plugins named here (';' separates several);
        # LD_PRELOAD=PATH tritonserver ... works with every Triton version.
        "triton": f"--backend-config=tensorrt,plugins={quoted}",
    }


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    return Files({}, {})


def run(args: argparse.Namespace) -> int:
    from axial_deploy.native import PLUGIN, locate

    found = locate(PLUGIN)
    if found.path is None:
        raise PluginNotFoundError(
            f"{PLUGIN.name} {found.describe()}: {PLUGIN.build_hint}, or set {PLUGIN.env}=PATH"
        )
    path = str(found.path)
    options = forms(path)
    if args.format != "all":
        print(options[args.format])
        return 0
    print(f"{PLUGIN.name}: {path} ({found.source})")
    print(f"  trtexec:    trtexec --onnx=MODEL.onnx {options['trtexec']}")
    print(f"  polygraphy: polygraphy run MODEL.onnx --trt {options['polygraphy']}")
    print(f"  triton:     tritonserver --model-repository=REPO {options['triton']}")
    print(f"              (or: LD_PRELOAD={shlex.quote(path)} tritonserver ...)")
    return 0
