"""Writes tests/data/fuzz/: the seed corpus of the reader fuzz tests (test_fuzz_readers.py),
valid files made by the project itself. Rerun after a format changes:

    .venv/bin/python tests/data/make_fuzz_corpus.py
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from axial_deploy.datasets.synthetic import generate_panoptic
from axial_deploy.engine.manifest import Manifest, TensorInfo, write_engine
from axial_deploy.models.registry import PRETRAINED_DIR

OUT = Path(__file__).parent / "fuzz"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_panoptic(data, seed=0, train=0, val=2, size=(32, 32), progress=False)
        shutil.copy(data / "dataset.json", OUT / "dataset.json")
        shutil.copy(data / "panoptic_val.json", OUT / "panoptic_val.json")
        png = sorted((data / "panoptic_val").glob("*.png"))[0]
        shutil.copy(png, OUT / "segments.png")
        image = sorted((data / "images" / "val").glob("*"))[0]
        shutil.copy(image, OUT / f"image{image.suffix}")
        engine = Path(tmp) / "m.engine"
        tensors = [TensorInfo("x", "float32", [1, 3, 8, 8], "input"),
                   TensorInfo("y", "float32", [1, 4, 8, 8], "output")]  # fmt: skip
        engine_sha256 = hashlib.sha256(b"engine").hexdigest()
        manifest = Manifest("tensorrt-rtx", "1.7.1.116", "13.0", "NVIDIA H100", "9.0", "fp16",
                            [{"x": [[1, 3, 8, 8]] * 3}], tensors[:1], tensors[1:], "0" * 64,
                            engine_sha256, "libaxial.so", "1" * 64)  # fmt: skip
        write_engine(b"engine", manifest, engine)
        shutil.copy(engine.with_name("m.engine.json"), OUT / "manifest.json")
    # the record `train` writes beside a checkpoint (the shipped weights' own)
    shutil.copy(PRETRAINED_DIR / "axial_deeplab_tiny.json", OUT / "record.json")
    np.save(OUT / "array.npy", np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4))
    weights = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              OUT / "model.onnx")  # fmt: skip


if __name__ == "__main__":
    main()
