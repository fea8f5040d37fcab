"""Serving: a real Triton Inference Server for axial-deploy models, and what goes with it.

- `server`: `axial-deploy serve`, Triton through PyTriton, the model run by `runtime.Engine`.
- `triton_repo`: `axial-deploy triton-repo`, a model repository for the NGC Triton image.
- `client`, `loadtest`: `axial-deploy infer` and `axial-deploy loadtest` (tritonclient).
- `pipeline`: image preprocessing and panoptic post-processing shared by the server and the
  repository's Python-backend models.

PyTriton and tritonclient are optional (`pip install 'axial-deploy[serve]'`); they are
imported only where used (`axial_deploy.extras.require`), so the package imports without them.
"""

from __future__ import annotations

from axial_deploy.errors import AxialDeployError


class ServeError(AxialDeployError, ValueError):
    """A serving request that cannot be met as asked (says why and the fix)."""
