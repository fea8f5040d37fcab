"""Old import paths of the modules that moved into packages (docs/architecture.md).

`import axial_deploy.build` (and every other old path below) still works for one release and
gives the module at its new place, the same object, with a DeprecationWarning naming the new
path. The finder is installed by axial_deploy/__init__.py; nothing inside the package uses an
old path (tests/test_moved_modules.py checks).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REMOVED_IN = "0.2"
MOVED: dict[str, str] = {
    "axial_deploy.op_spec": "axial_deploy.op.spec",
    "axial_deploy.op_reference": "axial_deploy.op.reference",
    "axial_deploy.ort_ops": "axial_deploy.op.ort",
    "axial_deploy.kernel": "axial_deploy.op.kernel",
    "axial_deploy.kernel_op": "axial_deploy.op.torch_op",
    "axial_deploy.build": "axial_deploy.engine.build",
    "axial_deploy.manifest": "axial_deploy.engine.manifest",
    "axial_deploy.runtime": "axial_deploy.engine.runtime",
    "axial_deploy.profile": "axial_deploy.engine.profile",
    "axial_deploy.backends": "axial_deploy.engine.backends",
    "axial_deploy.tensorrt_api": "axial_deploy.engine.tensorrt_api",
    "axial_deploy.platform_checks": "axial_deploy.engine.platform_checks",
    "axial_deploy.deploy": "axial_deploy.pipeline.deploy",
    "axial_deploy.deploy_records": "axial_deploy.pipeline.records",
    "axial_deploy.report": "axial_deploy.pipeline.report",
    "axial_deploy.evaluate": "axial_deploy.evaluation.evaluate",
    "axial_deploy.panels": "axial_deploy.evaluation.panels",
    "axial_deploy.coco_panoptic": "axial_deploy.datasets.coco_panoptic",
    "axial_deploy.synthetic": "axial_deploy.datasets.synthetic",
    "axial_deploy.comparison": "axial_deploy.checks.comparison",
    "axial_deploy.noise_floor": "axial_deploy.checks.noise_floor",
    "axial_deploy.verify": "axial_deploy.checks.verify",
    "axial_deploy.layerwise": "axial_deploy.checks.layerwise",
    "axial_deploy.sanitize": "axial_deploy.checks.sanitize",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module at its new path."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module) -> None:
        new = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {new}; the old path goes in axial-deploy {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        # The import system returns whatever sys.modules holds after exec_module: the real
        # module, whose own __spec__ and __name__ stay those of its new place.
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    """First on sys.meta_path: it answers only the old names above, before a path finder could
    take an unrelated folder of that name for a namespace package (an editable install puts
    the checkout, with its build/ folder, on axial_deploy.__path__)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
