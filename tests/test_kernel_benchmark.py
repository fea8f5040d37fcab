"""benchmarks/kernel.py without a GPU: shape derivation from the model and --dry-run."""

from __future__ import annotations

import importlib.util
import sys

from axial_deploy.kernel import REPO_ROOT


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "bench_kernel", REPO_ROOT / "benchmarks" / "kernel.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_stages_follow_the_model_strides(capsys):
    bench = load_benchmark()
    stages = bench.model_stages("axial_deeplab_s", 129, 257)
    # Axial-DeepLab-S: stride 4, 8 and 16 maps of a 129 x 257 input, span 65, 8 heads.
    sizes = {(s.height, s.width) for s in stages}
    assert sizes == {(33, 65), (17, 33), (9, 17)}
    assert {s.axis for s in stages} == {2, 3}
    assert all(s.span == 65 and s.table_length == 65 and s.num_heads == 8 for s in stages)
    assert {(s.key_depth, s.value_depth) for s in stages} == {(4, 8), (8, 16), (16, 32), (32, 64)}
    # 3 + 4 + 6 + 3 blocks, two attention layers each
    assert sum(s.layers for s in stages) == 2 * (3 + 4 + 6 + 3)
    stage = bench.Stage(5, 7, 3, 2, 4, 8, 3, 3, layers=1)
    # lines of 7 with radius 1: 5 windows of 3 and 2 clipped ones of 2 -> 19 pairs per line
    assert stage.pairs(batch=1) == 5 * 2 * 19
    assert bench.main(["--dry-run", "--input-shape", "129x257"]) == 0
    assert "33 x 65" in capsys.readouterr().out
