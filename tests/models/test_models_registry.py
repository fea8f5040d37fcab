"""The zoo's registry (declarations beside the models, typed pretrained records), the one task
rule, and `prepare_model`, the model setup every stage shares."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from axial_deploy.models import (
    PretrainedConfig,
    PretrainedWeightsError,
    UnknownModelError,
    create_model,
    default_input_shape,
    list_models,
    model_task,
    prepare_model,
    pretrained_models,
    pretrained_record,
    register_model,
)
from axial_deploy.models.axialnet import AxialBlock
from axial_deploy.models.registry import PRETRAINED_DIR, RegistryError, model_spec
from axial_deploy.task import TaskError, task_of, task_of_outputs


def test_listing_the_zoo_does_not_import_torch():
    code = (
        "import sys\n"
        "from axial_deploy.models import list_models, model_task, default_input_shape, "
        "pretrained_models, pretrained_record\n"
        "from axial_deploy.task import task_of\n"
        "names = list_models()\n"
        "print([(n, model_task(n), default_input_shape(n), task_of(n)) for n in names])\n"
        "print([pretrained_record(n).input_size for n in pretrained_models()])\n"
        "assert 'torch' not in sys.modules, 'the registry imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "axial_deeplab_tiny" in done.stdout


@pytest.mark.parametrize("name", list_models())
def test_each_declaration_names_its_factory(name):
    # The factory is the decorated function of that name in its family module; the module's
    # import re-checks every @register_model against what the registry read from source.
    spec = model_spec(name)
    factory = spec.factory()
    assert factory.__name__ == name and factory.__module__.endswith(spec.family)
    assert model_task(name) in ("classification", "panoptic")
    assert len(default_input_shape(name)) == 4 and default_input_shape(name)[1] == 3


def test_declarations_in_the_expected_families():
    assert model_task("axial26s") == "classification"
    assert model_spec("axial26s").family == "axialnet"
    assert default_input_shape("axial_deeplab_s") == (1, 3, 1025, 2049)
    assert model_spec("axial_deeplab_tiny").family == "axial_deeplab"
    with pytest.raises(UnknownModelError, match="unknown model 'resnet50'; available: axial26s"):
        model_task("resnet50")


def test_a_declaration_the_registry_cannot_see_fails_loudly():
    with pytest.raises(RegistryError, match="FAMILY_MODULES"):

        @register_model(task="classification", input_shape=(1, 3, 32, 32))
        def not_in_a_family_module():  # pragma: no cover - never registered
            return None


@pytest.mark.parametrize("name", pretrained_models())
def test_pretrained_records_are_typed_and_complete(name):
    record = pretrained_record(name)
    raw = json.loads((PRETRAINED_DIR / f"{name}.json").read_text())
    assert isinstance(record, PretrainedConfig) and record.model == name
    assert record.task == model_task(name) and record.num_classes == len(record.class_names)
    assert record.input_shape == (1, 3, *raw["input_size"]) and record.dataset.seed == 0
    assert record.dataset.size == tuple(raw["dataset"]["size"]) and not record.extra
    if record.task == "panoptic":
        assert record.postprocess_config().label_divisor == raw["postprocess"]["label_divisor"]
    else:
        assert record.postprocess is None and record.postprocess_config() is None


def test_incomplete_records_are_refused():
    raw = json.loads((PRETRAINED_DIR / "axial26_tiny.json").read_text())
    del raw["num_classes"]
    with pytest.raises(PretrainedWeightsError, match=r"x\.json: missing key 'num_classes'"):
        PretrainedConfig.from_json(raw, source="x.json")
    raw = json.loads((PRETRAINED_DIR / "axial26_tiny.json").read_text())
    raw["added_later"] = 1  # kept, not lost, when a newer `train` writes more
    assert PretrainedConfig.from_json(raw).extra == {"added_later": 1}
    with pytest.raises(PretrainedWeightsError, match="no pretrained weights ship for 'axial50s'"):
        pretrained_record("axial50s")


def _graph(outputs: list[str]) -> onnx.ModelProto:
    nodes = [helper.make_node("Identity", ["x"], [name]) for name in outputs]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3]) for name in outputs],
    )
    return helper.make_model(graph)


def test_one_task_rule_for_names_graphs_and_files(tmp_path):
    assert task_of_outputs(["logits"]) == "classification"
    assert task_of_outputs(["semantic", "center", "offset"]) == "panoptic"
    assert task_of_outputs(["center"]) == "panoptic"  # any Panoptic-DeepLab head
    assert task_of("axial26_tiny") == "classification"
    assert task_of("axial_deeplab_tiny") == "panoptic"
    assert task_of(_graph(["semantic", "center", "offset"])) == "panoptic"
    path = tmp_path / "net.onnx"
    onnx.save(_graph(["logits"]), path)
    assert task_of(path) == "classification" and task_of(str(path)) == "classification"
    with pytest.raises(TaskError, match="no such file"):
        task_of(tmp_path / "missing.onnx")
    with pytest.raises(UnknownModelError, match="available"):
        task_of("model.pt")


def test_prepare_model_live_random_weights_are_seeded_and_live():
    def prepare(seed: int):
        torch.manual_seed(seed + 10)  # the global generator does not decide the weights
        return prepare_model("axial26_tiny", live_random_weights=True, seed=3 if seed < 2 else 4)

    fresh = create_model("axial26_tiny")
    live, again, other = prepare(0), prepare(1), prepare(2)
    assert not live.training
    gains = [m.bn2.weight for m in live.modules() if isinstance(m, AxialBlock)]
    assert all(0 < g.abs().max() <= 0.1 for g in gains)  # residual branches live, gain <= 0.1
    assert all(m.bn2.weight.abs().max() == 0 for m in fresh.modules() if isinstance(m, AxialBlock))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(live(x), again(x)) and not torch.equal(live(x), other(x))


def test_prepare_model_weights_sources(tmp_path):
    trained = prepare_model("axial26_tiny", pretrained=True)
    path = tmp_path / "w.pt"
    torch.save(trained.state_dict(), path)
    loaded = prepare_model("axial26_tiny", checkpoint=str(path), live_random_weights=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(trained(x), loaded(x))  # the checkpoint wins over random weights
    with pytest.raises(PretrainedWeightsError, match="not both"):
        prepare_model("axial26_tiny", pretrained=True, checkpoint=str(path))
