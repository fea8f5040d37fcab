"""Our artifacts through the real Polygraphy CLI (the venv's `polygraphy`, as a subprocess).

- `polygraphy inspect model X.axial.onnx --show layers attrs` lists every AxialAttention node
  of a graph the rewriter produced, with its attributes (what a user checks first).
- `axial-deploy run --save-inputs/--save-outputs` writes files that `polygraphy run --onnxrt
  --load-inputs/--load-outputs` accepts and compares against. Polygraphy's ONNX Runtime
  backend registers no custom ops, so it cannot load a graph holding AxialAttention nodes: this
  runs on a plain graph; on a GPU the same files feed `polygraphy run model.engine --trt`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from engine_helpers import conv_net

DATA = Path(__file__).parents[1] / "data"
POLYGRAPHY = Path(sys.executable).with_name("polygraphy")


def polygraphy(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    if not POLYGRAPHY.is_file():
        pytest.skip(f"no polygraphy CLI beside {sys.executable}: pip install polygraphy")
    return subprocess.run(
        [str(POLYGRAPHY), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def rewritten_block(tmp_path_factory) -> Path:
    """The reference implementation's AxialBlock (2 attention layers), through our rewriter."""
    from axial_deploy.rewrite import load_model, rewrite, save_model

    model, report = rewrite(load_model(DATA / "reference_axial_block.onnx"))
    assert len(report.rewritten) == 2
    return save_model(model, tmp_path_factory.mktemp("block") / "block.axial.onnx")


def test_inspect_lists_axial_attention_nodes_with_attributes(rewritten_block):
    result = polygraphy("inspect", "model", str(rewritten_block), "--show", "layers", "attrs")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"Other Opsets: \{'axial_deploy': 1\}", out), out[:2000]
    nodes = [n for n in onnx.load(rewritten_block).graph.node if n.op_type == "AxialAttention"]
    listed = re.findall(r"Node \d+\s+\| (\S+) \[Op: AxialAttention\]", out)
    assert listed == [n.name for n in nodes]
    for node in nodes:
        for attribute in node.attribute:  # every attribute, by name, under its node
            assert f"{node.name}.{attribute.name} = " in out, (node.name, attribute.name)
        axis = next(a.i for a in node.attribute if a.name == "axis")
        assert f"{node.name}.axis = {axis}\n" in out


def test_run_saves_inputs_and_outputs_polygraphy_loads(tmp_path, capsys):
    from axial_deploy.cli import main

    model = conv_net(tmp_path / "net.onnx", batch=1)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    inputs, outputs = tmp_path / "in.json", tmp_path / "ref.json"
    args = ["run", str(model), "--input", str(tmp_path / "x.npy")]
    assert main([*args, "--save-inputs", str(inputs), "--save-outputs", str(outputs)]) == 0
    assert "(Polygraphy RunResults)" in capsys.readouterr().out

    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    np.testing.assert_array_equal(load_json(inputs)[0]["input"], x)
    ((runner, iterations),) = RunResults.load(str(outputs)).items()
    assert runner == "axial-deploy-onnxruntime" and iterations[0]["logits"].shape == (1, 4, 16, 16)

    # a wrong reference must fail the comparison, or the passing run below proves nothing
    bad = tmp_path / "bad.json"
    from axial_deploy.inputs import save_polygraphy_outputs

    logits = np.asarray(iterations[0]["logits"])
    save_polygraphy_outputs(bad, [{"logits": logits + 1e-2}], "bad", 0.0)
    common = ["run", str(model), "--onnxrt", "--load-inputs", str(inputs), "--atol", "1e-5"]
    result = polygraphy(*common, "--rtol", "1e-5", "--load-outputs", str(outputs), str(bad))
    text = result.stdout + result.stderr
    assert "Loading input data from" in text and str(inputs) in text, text[-3000:]
    # Polygraphy compares the results in order: its run vs ours, then ours vs the wrong one
    summary = r"Accuracy Summary \| {} vs\. {} \| Passed: {}/1 iterations"
    assert re.search(summary.format(r"onnxrt-runner\S*", "axial-deploy-onnxruntime", 1), text)
    assert re.search(summary.format("axial-deploy-onnxruntime", "bad", 0), text), text[-3000:]
    assert result.returncode != 0
