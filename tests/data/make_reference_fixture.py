"""Regenerate tests/data/reference_axialnet.json from the reference implementation's own code.

The reference (csrhddlam/axial-deeplab) is not a dependency and none of its code is in this repo:
point this script at a checkout of it. It records, for each classification net, the reference's
state_dict keys and shapes and parameter count, and for axial26s the reference's logits for
weights drawn by tests/helpers.randomize_state(seed=0) on a seeded input, so the tests check our
nets against the reference without needing it.

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


if __name__ == "__main__":
    main()
