"""The `axial-deploy` command line: one module per command in this package.

Each command module has a docstring (its description in `--help`, first line = its one-line
help), `add_arguments(parser)` and `run(args) -> int`; it parses and calls library functions,
importing heavy libraries (torch, onnxruntime, tensorrt) only inside `run`. A command whose
module fails to import is still listed and says why when run, so the others keep working.

Errors: every error the toolkit raises on purpose derives from `AxialDeployError` and is
printed here as one line, `axial-deploy CMD: error: ...`, with its exit code (2 bad input,
1 failed check).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from axial_deploy.errors import BAD_INPUT, AxialDeployError

# Command name -> module in this package, in the order of the flow.
COMMANDS = {
    "deploy": "deploy",
    "models": "models",
    "export": "export",
    "rewrite": "rewrite",
    "verify": "verify",
    "quantize": "quantize",
    "compare": "compare",
    "build": "build",
    "run": "run",
    "profile": "profile",
    "evaluate": "evaluate",
    "dataset": "dataset",
    "train": "train",
    "serve": "serve",
    "triton-repo": "triton_repo",
    "infer": "infer",
    "loadtest": "loadtest",
    "doctor": "doctor",
    "plugin-path": "plugin_path",
}

EPILOG = """\
stages: export -> rewrite -> quantize (precision) -> build -> run / verify / profile; `deploy`
runs them all. Every stage reads and writes files, so you can stop after any of them, inspect
the artifact (Netron, polygraphy) and go on elsewhere. `axial-deploy COMMAND --help` for more.

examples:
  axial-deploy deploy                       (the whole flow on the built-in trained model)
  axial-deploy export --model axial_deeplab_s --input-shape 1x3x513x1025 -o out/s.onnx
  axial-deploy rewrite out/s.onnx -o out/s.axial.onnx --report out/s.rewrite.json
  axial-deploy verify out/s.onnx out/s.axial.onnx
  axial-deploy quantize out/s.axial.onnx --precision int8 --calib data/images -o out/s.int8.onnx
  axial-deploy build out/s.axial.onnx -o out/s.engine
  axial-deploy profile out/s.engine --iterations 200 --report out/s.profile.json
"""


def _load(module: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{module}")


def _help_of(module: ModuleType) -> tuple[str, str]:
    doc = (module.__doc__ or "").strip()
    summary = doc.split("\n", 1)[0].rstrip(".")
    if summary[1:2].isupper() or summary[1:2].isdigit():  # an acronym: "FP32 graph", "ONNX"
        return summary, doc
    return summary[:1].lower() + summary[1:], doc


def _broken(name: str, error: Exception):
    def run(args: argparse.Namespace) -> int:
        print(f"axial-deploy {name}: cannot load this command: {error}", file=sys.stderr)
        return BAD_INPUT

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="axial-deploy",
        description="Deploy Axial-DeepLab / Axial-ResNet models: export to ONNX, rewrite "
        "axial attention into one fused TensorRT plugin node, build FP16/INT8/FP8 engines, "
        "run, verify and profile them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = _load(module_name)
        except Exception as error:  # one broken command must not take the others down
            broken = sub.add_parser(name, help=f"(unavailable: {error})")
            broken.set_defaults(run=_broken(name, error))
            continue
        summary, description = _help_of(module)
        command = sub.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run, files=module.files)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by `train`
    try:
        if getattr(args, "files", None) is not None:  # not for a command that failed to load
            from axial_deploy.artifacts import check_distinct

            check_distinct(*args.files(args))  # every written path, before any work
        return args.run(args)
    except AxialDeployError as error:
        print(f"axial-deploy {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except ModuleNotFoundError as error:  # an optional part (torch, ...) not installed
        from axial_deploy.extras import missing_extra

        converted = missing_extra(error, args.command)
        if converted is None:
            raise
        print(f"axial-deploy {args.command}: error: {converted}", file=sys.stderr)
        return converted.exit_code
    except (ValueError, OSError) as error:  # library checks that are not ours yet
        if os.environ.get("AXIAL_DEPLOY_DEBUG"):
            raise  # the traceback, to tell a bug of ours from bad input
        print(f"axial-deploy {args.command}: error: {_describe(error)}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print(f"axial-deploy {args.command}: interrupted", file=sys.stderr)
        return 130


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror or error}: {error.filename}"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
