"""Writes tests/data/entropy_thresholds.npz: histograms and the entropy thresholds that the
per-candidate loop of calibration/ranges.py at commit b834c85 (before the vectorized search)
computes for them. tests/calibration/test_calibration.py pins the current search to these
thresholds.

    python tests/data/make_entropy_fixture.py HISTOGRAMS.pkl

HISTOGRAMS.pkl: a pickled list of (histogram, bin_width, threshold) recorded by wrapping
`entropy_threshold` during `collect_ranges(method="entropy")` of the trained axial_deeplab_tiny
export on the 16 calibration images of `make demo` (129x129). A few of them are kept (the most
and least spread ones, every 150th), plus synthetic edge cases; every threshold is recomputed
with the old code, read from git.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

OLD_COMMIT = "b834c85"
HERE = Path(__file__).resolve().parent


def old_entropy_threshold():
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:calibration/ranges.py"],
        cwd=HERE,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("old_ranges")
    sys.modules["old_ranges"] = module  # dataclasses look their module up
    exec(compile(source, f"{OLD_COMMIT}:calibration/ranges.py", "exec"), module.__dict__)
    return module.entropy_threshold


def synthetic(rng: np.random.Generator) -> list[np.ndarray]:
    bins = 2048
    cases = []
    sparse = np.zeros(bins, np.int64)
    sparse[rng.choice(bins, 40, replace=False)] = rng.integers(1, 500, 40)
    cases.append(sparse)  # few non-empty bins, empty groups everywhere
    low = np.zeros(bins, np.int64)
    low[:100] = rng.integers(0, 1000, 100)
    cases.append(low)  # every count below the first candidate
    spike = np.zeros(bins, np.int64)
    spike[-1] = 7
    cases.append(spike)  # all counts in the last bin
    one = np.zeros(bins, np.int64)
    one[0] = 1000
    cases.append(one)  # all counts in the first bin
    heavy = np.histogram(rng.lognormal(0, 1.5, 200_000), bins, range=(0, 60))[0]
    cases.append(heavy)  # a long tail
    cases.append(np.full(bins, 3, np.int64))  # flat
    return cases


def main() -> None:
    with open(sys.argv[1], "rb") as file:
        recorded = pickle.load(file)
    spread = [int((h > 0).sum()) for h, _, _ in recorded]
    picks = sorted({int(np.argmax(spread)), int(np.argmin(spread)), *range(0, len(recorded), 150)})
    histograms = [recorded[i][0].astype(np.int64) for i in picks if recorded[i][0].sum() > 0]
    histograms += synthetic(np.random.default_rng(0))
    widths = np.array([0.5 ** (k % 7) for k in range(len(histograms))])
    old = old_entropy_threshold()
    thresholds = np.array([old(h, w) for h, w in zip(histograms, widths, strict=True)])
    np.savez_compressed(
        HERE / "entropy_thresholds.npz",
        histograms=np.stack(histograms).astype(np.int32),  # counts < 2^31 here
        widths=widths,
        thresholds=thresholds,
    )
    print(f"{len(histograms)} histograms, thresholds {thresholds}")


if __name__ == "__main__":
    main()
