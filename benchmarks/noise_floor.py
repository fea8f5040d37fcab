"""The noise-floor figures of `verify` on the chaotic test fixture (issue 18 item 4).

    .venv/bin/python benchmarks/noise_floor.py

Builds the six-layer axial-attention stack with similarity BatchNorm scales x 64
(tests/rewrite/test_gated_and_chaotic.py), exports and rewrites it, and prints `verify`'s
report for the correct rewrite and for one with a relative table off by 0.01, then A's 1-ulp
sensitivity and distance to float64, and each graph's distance to the PyTorch module in float64.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from rewrite.test_gated_and_chaotic import (
    CHAOTIC_SHAPE,
    _shift_table,
    chaotic_model,
    export,
)

from axial_deploy.checks import noise_floor
from axial_deploy.checks.comparison import seeded_feed
from axial_deploy.checks.verify import format_report, verify_models
from axial_deploy.op.ort import create_session
from axial_deploy.rewrite import rewrite_file


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        report(Path(folder))


def report(folder: Path) -> None:
    model = chaotic_model()
    source = export(model, CHAOTIC_SHAPE, folder / "chaos.onnx")
    target, broken = folder / "chaos.axial.onnx", folder / "chaos.broken.onnx"
    start = time.perf_counter()
    rewrite_file(source, target)
    print(f"rewrite: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    print(format_report(verify_models(source, target, noise_floor="always")))
    print(f"verify with the noise floor: {time.perf_counter() - start:.1f} s\n")
    _shift_table(target, broken, "rel_v", 1e-2)
    print(format_report(verify_models(source, broken)), "\n")

    session = create_session(source)
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    feed = seeded_feed({name: (np.float32, CHAOTIC_SHAPE)}, 0)
    fp32 = {output: session.run([output], feed)[0]}
    floor = noise_floor.measure(source, session, [output], feed, fp32)
    wide = floor.float64[output]
    distance = noise_floor.distance(fp32[output], wide)
    print(f"A: 1-ulp sensitivity {floor.ulp[output]:.2e}, |A - A64| {distance:.2e}")
    with torch.no_grad():
        x = torch.from_numpy(feed[name])
        torch32, torch64 = model(x).numpy(), model.double()(x.double()).numpy()
    rewritten = create_session(target).run(None, feed)[0]
    print(f"max |reference| {np.abs(torch64).max():.2f}; max abs against PyTorch float64:")
    for label, value in [("PyTorch fp32", torch32), ("export fp32 (A)", fp32[output]),
                         ("rewritten fp32 (B)", rewritten)]:  # fmt: skip
        print(f"  {label:<20} {np.abs(value - torch64).max():.2e}")


if __name__ == "__main__":
    main()
