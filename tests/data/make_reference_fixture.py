"""Regenerate the reference fixtures in tests/data from the reference implementation's own code.

The reference (csrhddlam/axial-deeplab) is not a dependency and none of its code is in this repo:
point this script at a checkout of it. It records, for each classification net, the reference's
state_dict keys and shapes and parameter count, and for axial26s the reference's logits for
weights drawn by tests/helpers.randomize_state(seed=0) on a seeded input, so the tests check our
nets against the reference without needing it. It also exports one of the reference's AxialBlocks
(height + strided width attention, random BatchNorm statistics) with both torch exporters, to
reference_axial_block.onnx (TorchScript-based) and reference_axial_block_dynamo.onnx, the graphs
the rewriter must recognize.

    python tests/data/make_reference_fixture.py /path/to/axial-deeplab
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from helpers import randomize_state  # noqa: E402

INPUT_SEED, WEIGHT_SEED, INPUT_SHAPE = 1, 0, (2, 3, 224, 224)


def load_reference_axialnet(root: Path) -> types.ModuleType:
    """Import lib/models/axialnet.py (and its utils) without the package's dataset imports."""
    package = types.ModuleType("refmodels")
    package.__path__ = [str(root / "lib" / "models")]
    sys.modules["refmodels"] = package
    for name in ("utils", "axialnet"):
        spec = importlib.util.spec_from_file_location(
            f"refmodels.{name}", root / "lib" / "models" / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["refmodels.axialnet"]


def main() -> None:
    reference = load_reference_axialnet(Path(sys.argv[1]))
    fixture = {
        "input_seed": INPUT_SEED,
        "weight_seed": WEIGHT_SEED,
        "input_shape": list(INPUT_SHAPE),
        "nets": {},
    }
    for name in ("axial26s", "axial50s", "axial50m", "axial50l"):
        net = getattr(reference, name)()
        fixture["nets"][name] = {
            "parameters": sum(p.numel() for p in net.parameters()),
            "state_dict": {k: list(v.shape) for k, v in net.state_dict().items()},
        }
    net = randomize_state(reference.axial26s(), WEIGHT_SEED).eval()
    images = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(INPUT_SEED))
    with torch.no_grad():
        fixture["axial26s_logits"] = net(images).tolist()
    (HERE / "reference_axialnet.json").write_text(json.dumps(fixture))
    export_reference_block(reference)


def export_reference_block(reference: types.ModuleType) -> None:
    from helpers import randomize_batchnorm

    torch.manual_seed(0)
    downsample = torch.nn.Sequential(reference.conv1x1(16, 16, 2), torch.nn.BatchNorm2d(16))
    block = reference.AxialBlock(16, 8, stride=2, downsample=downsample, groups=2, kernel_size=8)
    randomize_batchnorm(block, seed=1).eval()
    x = torch.randn(1, 16, 8, 8)
    names = {"input_names": ["x"], "output_names": ["y"]}
    torch.onnx.export(
        block,
        (x,),
        HERE / "reference_axial_block.onnx",
        dynamo=False,
        opset_version=17,
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        **names,
    )
    torch.onnx.export(
        block,
        (x,),
        HERE / "reference_axial_block_dynamo.onnx",
        dynamo=True,
        opset_version=18,
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}},
        external_data=False,
        **names,
    )


if __name__ == "__main__":
    main()
