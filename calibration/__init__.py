"""FP16 / INT8 precision: calibration data readers (`sources`), range collection (`ranges`),
Q/DQ placement (`qdq`), FP16 conversion (`fp16`) and TensorRT's calibration cache (`cache`).
`axial_deploy.quantize` ties them together."""

from .sources import CalibrationDataError, CalibrationSource, open_source

__all__ = ["CalibrationDataError", "CalibrationSource", "open_source"]
