"""Axial-ResNet classification nets against the reference implementation (recorded by
tests/data/make_reference_fixture.py from the reference's own code) and checkpoint loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from axial_deploy.models import CheckpointError, create_model, load_checkpoint

from helpers import max_rel_err, randomize_state

FIXTURE = json.loads((Path(__file__).parents[1] / "data" / "reference_axialnet.json").read_text())
NETS = ["axial26s", "axial50s", "axial50m", "axial50l"]


@pytest.mark.parametrize(
    "name,expected",
    [
        ("axial26s", 5_944_936),
        ("axial50s", 11_586_216),
        ("axial50m", 25_179_400),
        ("axial50l", 43_973_480),
    ],
)
def test_parameter_counts_equal_the_reference(name, expected):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert FIXTURE["nets"][name]["parameters"] == expected


@pytest.mark.parametrize("name", NETS)
def test_state_dict_keys_and_shapes_equal_the_reference(name):
    with torch.device("meta"):
        model = create_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == FIXTURE["nets"][name]["state_dict"]


def reference_inputs():
    shape = FIXTURE["input_shape"]
    generator = torch.Generator().manual_seed(FIXTURE["input_seed"])
    return torch.randn(shape, generator=generator)


def seeded_axial26s():
    return randomize_state(create_model("axial26s"), FIXTURE["weight_seed"]).eval()


def test_logits_equal_the_reference_at_224():
    model = seeded_axial26s()
    with torch.no_grad():
        logits = model(reference_inputs())
    expected = torch.tensor(FIXTURE["axial26s_logits"])
    assert max_rel_err(logits, expected) < 1e-4


@pytest.mark.parametrize("size", [(160, 192), (256, 256), (97, 131)])
def test_runs_at_other_input_sizes(size):
    model = seeded_axial26s()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *size))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_plain_state_dict_round_trip(tmp_path):
    model = seeded_axial26s()
    path = tmp_path / "plain.pth"
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint(create_model("axial26s"), path).eval()
    x = reference_inputs()[:1]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_reference_train_py_checkpoint(tmp_path):
    """The reference's train.py saves {'net': DataParallel state_dict, 'optim': ..., 'epoch'}."""
    model = seeded_axial26s()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "12.pth"
    torch.save({"net": state, "optim": optimizer.state_dict(), "epoch": 12}, path)
    loaded = load_checkpoint(create_model("axial26s"), path).eval()
    x = reference_inputs()[:1]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_mismatch_names_missing_unexpected_and_wrong_shape_keys(tmp_path, capsys):
    state = seeded_axial26s().state_dict()
    del state["layer1.0.hight_block.relative"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(create_model("axial26s", num_classes=10), path)
    text = str(error.value)
    assert "1 missing keys" in text and "layer1.0.hight_block.relative" in text
    assert "1 unexpected keys" in text and "extra.weight" in text
    assert "wrong shape" in text
    assert "fc.weight: checkpoint (1000, 1024) vs model (10, 1024)" in text

    # strict=False loads what matches and reports the rest.
    model = create_model("axial26s", num_classes=10)
    load_checkpoint(model, path, strict=False)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert "missing" in capsys.readouterr().out


class Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_refuses_pickled_code_and_bad_files(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(create_model("axial26s"), evil)
    assert "unpickled code ran" not in capsys.readouterr().out

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(create_model("axial26s"), tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(create_model("axial26s"), junk)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_checkpoint(create_model("axial26s"), listing)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'axial99'.*axial26s"):
        create_model("axial99")
