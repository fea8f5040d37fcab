"""Serving: a real Triton Inference Server for axial-deploy models, and what goes with it.

- `server`: `axial-deploy serve`, Triton through PyTriton, the model run by `runtime.Engine`.
- `triton_repo`: `axial-deploy triton-repo`, a model repository for the NGC Triton image.
- `client`, `loadtest`: `axial-deploy infer` and `axial-deploy loadtest` (tritonclient).
- `pipeline`: image preprocessing and panoptic post-processing shared by the server and the
  repository's Python-backend models.

PyTriton and tritonclient are optional (`pip install 'axial-deploy[serve]'`); they are
imported only where used, so the package imports without them.
"""

from __future__ import annotations


class ServeError(ValueError):
    """A serving request that cannot be met as asked (says why and the fix)."""


def require(module: str, what: str):
    """Imports an optional serving dependency, or says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ServeError(
            f"{what} needs {module.split('.')[0]} ({error}): pip install 'axial-deploy[serve]'"
        ) from error
