"""Print the AxialAttention TensorRT plugin library path for trtexec, Polygraphy and Triton.

The library is looked for where every command looks: $AXIAL_DEPLOY_PLUGIN_LIB, then the
installed package (axial_deploy/lib/, what `pip install .` compiled where nvcc and TensorRT
were found), then a checkout's build/lib/ (`make plugins`). Never the current folder.

The library registers its creator both ways TensorRT consumers load plugins: through
IPluginRegistry::loadLibrary (trtexec --dynamicPlugins), and when it is merely opened, with the
TensorRT library the process already holds (Triton's plugins=, trtexec --staticPlugins,
DeepStream custom-lib-path). Polygraphy opens plugins before it imports TensorRT, so TensorRT is
preloaded for it; docs/plugin-loading.md lists each consumer and the test that covers it.

examples:
  trtexec --onnx=model.axial.onnx --dynamicPlugins=$(axial-deploy plugin-path --format path)
  LD_PRELOAD=$(axial-deploy plugin-path --format preload) polygraphy run model.axial.onnx \
      --trt $(axial-deploy plugin-path --format polygraphy)
  tritonserver --model-repository=models $(axial-deploy plugin-path --format triton)

Exits with status 2, saying how to build the library, when there is none.
"""

from __future__ import annotations

import argparse
import ctypes.util
import importlib.util
import shlex
from pathlib import Path

from axial_deploy.cli.args import Files
from axial_deploy.errors import AxialDeployError

FORMATS = ("all", "path", "trtexec", "polygraphy", "triton", "preload")


class PluginNotFoundError(AxialDeployError, FileNotFoundError):
    """No plugin library where the resolver looks."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="all",
        help="what to print: the bare path, the option of one tool (trtexec "
        "--dynamicPlugins=, Polygraphy --plugins, Triton --backend-config), or the LD_PRELOAD "
        "value (TensorRT's library, then the plugin); default: all of them, with where the "
        "library was found",
    )


def tensorrt_library() -> str:
    """The TensorRT library an LD_PRELOAD lists before the plugin (the plugin registers on open
    only with a TensorRT library already in the process): the pip wheel's file, else the name
    the dynamic loader resolves (system, JetPack and NGC installs), libnvinfer.so.10 if none."""
    spec = importlib.util.find_spec("tensorrt_libs")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("libnvinfer.so.[0-9]*"), key=lambda p: len(p.name))
        if found:
            return str(found[0])
    return ctypes.util.find_library("nvinfer") or "libnvinfer.so.10"


def forms(path: str) -> dict[str, str]:
    """The option each tool takes to load the plugin library at `path` (each one a loading
    path of tests/plugins/test_plugin_loading.py)."""
    quoted = shlex.quote(path)
    return {
        "path": path,
        # IPluginRegistry::loadLibrary
        "trtexec": f"--dynamicPlugins={quoted}",
        # ctypes.CDLL, before Polygraphy imports TensorRT: needs the "preload" form
        "polygraphy": f"--plugins {quoted}",
        # the TensorRT backend (linked to libnvinfer) opens the library: registers on open
        "triton": f"--backend-config=tensorrt,plugins={quoted}",
        # TensorRT first, so that it is in the process when the plugin is opened
        "preload": shlex.quote(f"{tensorrt_library()}:{path}"),
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
    preload = f"LD_PRELOAD={options['preload']}"
    print(f"  trtexec:    trtexec --onnx=MODEL.onnx {options['trtexec']}")
    print(f"              (or: trtexec --onnx=MODEL.onnx --staticPlugins={shlex.quote(path)})")
    print(f"  polygraphy: {preload} polygraphy run MODEL.onnx --trt {options['polygraphy']}")
    print(f"  triton:     tritonserver --model-repository=REPO {options['triton']}")
    print(f"              (or: {preload} tritonserver --model-repository=REPO)")
    print(f"  deepstream: custom-lib-path={path} in the [property] group of the nvinfer config")
    return 0
