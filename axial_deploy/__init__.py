"""axial-deploy: deploy Axial-DeepLab / Axial-ResNet models to TensorRT."""

__version__ = "0.1.0"
