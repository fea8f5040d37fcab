"""Optional parts of axial-deploy (pip extras) and the one-line error that names the extra.

The base install is the deploy side: build, run, profile, verify, compare, quantize, evaluate of
ONNX files and engines, doctor, dataset. PyTorch comes with the `torch` extra (export, train,
the model zoo, deploy), TensorRT-RTX with `rtx`, cuda-python with `gpu`. A command that reaches
a missing optional module fails with `MissingExtraError`, which says what to install.
"""

from __future__ import annotations

from types import ModuleType

from axial_deploy.errors import AxialDeployError

PACKAGE = "axial-deploy"

# top-level module -> (extra that installs it, what it is)
EXTRA_OF_MODULE: dict[str, tuple[str, str]] = {
    "torch": ("torch", "PyTorch"),
    "torchvision": ("torch", "PyTorch"),
    "onnxscript": ("torch", "onnxscript (the dynamo ONNX exporter)"),
    "tensorrt_rtx": ("rtx", "TensorRT-RTX"),
    "cuda": ("gpu", "cuda-python"),
    "pytriton": ("serve", "PyTriton (nvidia-pytriton)"),
    "tritonclient": ("serve", "tritonclient"),
}


class MissingExtraError(AxialDeployError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


def install_hint(extra: str) -> str:
    return f"pip install '{PACKAGE}[{extra}]'"


def missing_extra(error: ImportError, what: str = "this command") -> MissingExtraError | None:
    """The one-line error for `error` when it is a missing optional module, else None."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if name not in EXTRA_OF_MODULE or not isinstance(error, ModuleNotFoundError):
        return None
    extra, label = EXTRA_OF_MODULE[name]
    hint = f"{what} needs {label}, which is not installed here: {install_hint(extra)}"
    if extra == "torch":
        hint += " (build, run, profile, verify and quantize work without it)"
    return MissingExtraError(hint)


def require(module: str, what: str) -> ModuleType:
    """The optional `module`, imported; MissingExtraError naming the pip extra when it (or a
    module it needs) is missing. The one `require` of the package."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        converted = missing_extra(error, what)
        top = module.split(".")[0]
        if converted is None and top in EXTRA_OF_MODULE:  # a dependency of an optional module
            extra, label = EXTRA_OF_MODULE[top]
            converted = MissingExtraError(
                f"{what} needs {label}, which does not import here ({error}): {install_hint(extra)}"
            )
        if converted is None:
            raise
        raise converted from error
