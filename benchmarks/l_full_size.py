"""Axial-DeepLab-L at its full 1025x2049, end to end on this CPU: export (small trace, proven
the same graph), rewrite, then the rewritten graph in ONNX Runtime (native CPU AxialAttention
op) against the PyTorch model at full size. Prints one table; needs `make cpu-libs` and ~4 GB.

    python benchmarks/l_full_size.py [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL, SHAPE = "axial_deeplab_l", (1, 3, 1025, 2049)


def timed_command(*args: str) -> float:
    """Runs `axial-deploy ARGS` in its own process; wall seconds (raises on failure)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "axial_deploy.cli", *args], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def child_peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="l-full-")))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    from axial_deploy.models import prepare_model
    from axial_deploy.op.ort import create_session, op_implementation

    plain, axial = args.out / "l.onnx", args.out / "l.axial.onnx"
    seed = str(args.seed)
    export_s = timed_command("export", "--model", MODEL, "--live-random-weights", "--seed", seed,
                             "-o", str(plain))  # fmt: skip
    rewrite_s = timed_command("rewrite", str(plain), "-o", str(axial))
    tools_peak = child_peak_gib()
    # the weights the export used: live statistics measured at its automatic trace size
    model = prepare_model(MODEL, live_random_weights=True, input_shape=(1, 3, 65, 129),
                          seed=args.seed).eval()  # fmt: skip
    x = np.random.default_rng(args.seed).uniform(-2, 2, SHAPE).astype(np.float32)
    start = time.perf_counter()
    with torch.no_grad():
        reference = model(torch.from_numpy(x))
    torch_s = time.perf_counter() - start
    session = create_session(axial)
    start = time.perf_counter()
    got = session.run(None, {session.get_inputs()[0].name: x})
    ort_s = time.perf_counter() - start
    print("| step | time | note |\n| --- | --- | --- |")
    print(f"| export ({MODEL}, 1025x2049, auto trace) | {export_s:.1f} s | |")
    print(f"| rewrite | {rewrite_s:.1f} s | peak RSS of export/rewrite {tools_peak:.2f} GiB |")
    print(f"| PyTorch forward, full size | {torch_s:.1f} s | |")
    print(f"| ONNX Runtime, rewritten graph ({op_implementation()} op) | {ort_s:.1f} s | |")
    for meta, actual in zip(session.get_outputs(), got, strict=True):
        expected = reference[meta.name].numpy()
        worst = float(np.abs(actual - expected).max())
        print(f"| {meta.name}: max abs / max rel vs PyTorch | {worst:.2e} / "
              f"{worst / float(np.abs(expected).max()):.2e} | |")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"| this process's peak RSS (PyTorch + ONNX Runtime) | {peak:.2f} GiB | |")


if __name__ == "__main__":
    main()
