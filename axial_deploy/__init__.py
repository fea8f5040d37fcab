"""axial-deploy: deploy Axial-DeepLab / Axial-ResNet models to TensorRT."""

__version__ = "0.1.0"

# Modules that moved into packages keep their old import paths until 0.2 (axial_deploy/_moved.py).
from axial_deploy import _moved

_moved.install()
