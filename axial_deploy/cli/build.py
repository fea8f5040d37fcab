"""Build a TensorRT / TensorRT-RTX engine from an ONNX graph.

Builds with TensorRT 10/11 (strongly typed: the graph's types from the precision stage decide)
or TensorRT-RTX (ahead of time, also on CPU-only machines; no plugins, so only graphs without
AxialAttention nodes). One optimization profile: from --shapes, else from the graph (a dynamic
batch axis gets 1/1/8). Writes ENGINE and ENGINE.json (versions, GPU, profiles, I/O, sha256s).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from axial_deploy.cli.args import Files, add_output, add_plugins, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="graph to build")
    add_output(parser, "path of the engine")
    parser.add_argument(
        "--backend",
        choices=["auto", "tensorrt", "tensorrt-rtx"],
        default="auto",
        help="auto (default, as deploy: TensorRT on a GPU, TensorRT-RTX on GPUs of its support "
        "matrix or ahead of time without a GPU), tensorrt (GPU, plugins) or tensorrt-rtx "
        "(plugin-free graphs, CPU build)",
    )
    add_plugins(
        parser,
        "AxialAttention plugin library (default: the one `make plugins` built, when it exists)",
    )
    parser.add_argument(
        "--serialize-plugin",
        action="store_true",
        help="build a version-compatible engine that carries the plugin library (no library "
        "needed where it runs; loads in this TensorRT or a later one; may run slower)",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=[],
        metavar="NAME:MIN/OPT/MAX",
        help="profile shapes per input, e.g. input:1x3x224x224/4x3x224x224/8x3x224x224",
    )
    parser.add_argument(
        "--workspace", type=positive_int, metavar="MB", help="builder workspace limit"
    )
    parser.add_argument(
        "--timing-cache", metavar="FILE", help="read (when it exists) and update this cache"
    )
    parser.add_argument(
        "--fp16", action="store_true", help="TensorRT 10 only, legacy weakly typed FP16"
    )
    parser.add_argument(
        "--int8", action="store_true", help="TensorRT 10 only, legacy INT8 (needs --calib-cache)"
    )
    parser.add_argument("--calib-cache", metavar="FILE", help="INT8 calibration cache (legacy)")
    parser.add_argument(
        "--compute-capability",
        metavar="X.Y",
        help="tensorrt-rtx: the GPU to build for ahead of time, e.g. 8.9 (Ada) or 12.0 "
        "(Blackwell RTX); needed for FP8 graphs on a machine without such a GPU (default: "
        "TensorRT-RTX's portable set)",
    )


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    from axial_deploy.engine.manifest import manifest_path, pending_path

    reads = {"MODEL.onnx": args.model, "--plugins": args.plugins, "--calib-cache": args.calib_cache}
    written = {"-o": args.output, "the manifest": manifest_path(args.output),
               "the pending manifest": pending_path(args.output),
               "--timing-cache": args.timing_cache}  # fmt: skip
    return Files(reads, written)


def run(args: argparse.Namespace) -> int:
    from axial_deploy.engine.build import BuildOptions, build_engine, parse_shape_spec

    backend = args.backend
    if backend == "auto":
        from axial_deploy.engine.backends import choose_auto, installed_backends, local_gpus
        from axial_deploy.engine.build import BuildError

        chosen, why = choose_auto(local_gpus(), installed_backends())
        if chosen is None:
            raise BuildError(why.replace("engine step skipped", "--backend auto"))
        print(f"--backend auto: {why}", flush=True)
        backend = chosen
    options = BuildOptions(
        backend=backend,
        plugin_library=args.plugins,
        serialize_plugin=args.serialize_plugin,
        shapes=dict(parse_shape_spec(spec) for spec in args.shapes),
        workspace_mb=args.workspace,
        timing_cache=args.timing_cache,
        fp16=args.fp16,
        int8=args.int8,
        calib_cache=args.calib_cache,
        progress=True,
        compute_capability=args.compute_capability,
    )
    print(f"building {args.model} with {backend} ...", flush=True)
    manifest = build_engine(args.model, args.output, options)
    size_mb = Path(args.output).stat().st_size / 2**20
    print(
        f"wrote {args.output} ({size_mb:.1f} MiB, {manifest.precision}, built in "
        f"{manifest.build_seconds:.1f} s) and {args.output}.json"
    )
    for name, (low, opt, high) in manifest.profiles[0].items():
        print(f"  profile {name}: min {low} opt {opt} max {high}")
    for key, note in manifest.extra.items():
        print(f"  note ({key}): {note}")
    return 0
