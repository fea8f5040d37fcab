"""Forward-pass time and peak memory of zoo models on this machine's CPU.

Each (model, size) runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own.
Usage:  python benchmarks/forward_cpu.py [--models axial_deeplab_s axial_deeplab_l]
                                         [--sizes 1025x2049 513x1025 641x641] [--repeats 1]
Prints a table: parameters, multiply-adds, seconds per forward (best of --repeats after one
warm-up-free first run), peak RSS in GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from axial_deploy.models import create_model
from axial_deploy.models.complexity import count_madds, count_parameters
name, h, w, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = create_model(name).eval()
madds = count_madds(model, (1, 3, h, w))
x = torch.randn(1, 3, h, w)
times = []
with torch.inference_mode():
    for _ in range(repeats):
        start = time.perf_counter()
        out = model(x)
        times.append(time.perf_counter() - start)
shapes = {k: list(v.shape) for k, v in out.items()} if isinstance(out, dict) else list(out.shape)
print(json.dumps({"params": count_parameters(model), "madds": madds, "seconds": min(times),
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "threads": torch.get_num_threads(), "outputs": shapes}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["axial_deeplab_s", "axial_deeplab_l"])
    parser.add_argument("--sizes", nargs="+", default=["1025x2049"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    header = f"| {'model':<18} | {'input':>10} | {'params (M)':>10} | {'M-Adds (B)':>10} |"
    header += f" {'seconds':>8} | {'peak RSS (GiB)':>14} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name in args.models:
        for size in args.sizes:
            h, w = (int(v) for v in size.split("x"))
            run = subprocess.run(
                [sys.executable, "-c", CHILD, name, str(h), str(w), str(args.repeats)],
                capture_output=True,
                text=True,
            )
            if run.returncode != 0:
                print(f"| {name:<18} | {size:>10} | failed: {run.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            print(
                f"| {name:<18} | {size:>10} | {r['params'] / 1e6:>10.2f} |"
                f" {r['madds'] / 1e9:>10.1f} |"
                f" {r['seconds']:>8.1f} | {r['peak_gib']:>14.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
