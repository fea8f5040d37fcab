"""The zoo's registry: which models exist, their task and default input shape, and the typed
records of the weights that ship with some of them. Torch-free on purpose.

Each model family declares its variants beside their definitions (timm style):

    @register_model(task="classification", input_shape=(1, 3, 224, 224))
    def axial26s(num_classes: int = 1000, **kwargs) -> AxialAttentionNet: ...

Listing the zoo must not import torch (the command line lists it in `--help`), yet importing a
family module does. So the registry reads the decorators' literal arguments from the family
files' source (`ast`, a few milliseconds) and imports a family only when one of its factories
is called. When a family module is imported, `register_model` checks each decorated factory
against what was read, so a declaration the reader cannot see (a family missing from
`FAMILY_MODULES`, non-literal arguments) fails loudly instead of vanishing from the zoo.

Shipped weights: `pretrained/NAME.pt` (fp16 state_dict) beside `pretrained/NAME.json`, the
record of the command, seed, dataset and metrics that produced them, read into a
`PretrainedConfig`.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from axial_deploy.errors import AxialDeployError, first_line

MODELS_DIR = Path(__file__).parent
PRETRAINED_DIR = MODELS_DIR / "pretrained"
# The files that declare zoo models with @register_model, in listing order.
FAMILY_MODULES = ("axialnet", "axial_deeplab")
TASKS = ("classification", "panoptic")

F = TypeVar("F", bound=Callable[..., Any])


class UnknownModelError(AxialDeployError, ValueError):
    """A model name that is not in the zoo."""


class PretrainedWeightsError(AxialDeployError, ValueError):
    """A model asked for with pretrained=True that has no shipped weights."""


class RegistryError(AxialDeployError, RuntimeError):
    """A model declaration the registry cannot read (a bug in the zoo, not in user input)."""


@dataclass(frozen=True)
class ModelSpec:
    """One zoo model: its name (the factory's), task and default input shape (NCHW)."""

    name: str
    task: str
    input_shape: tuple[int, int, int, int]
    family: str  # module under axial_deploy.models that defines it

    def factory(self) -> Callable[..., Any]:
        """The factory function (imports the family module, hence torch)."""
        module = importlib.import_module(f"axial_deploy.models.{self.family}")
        return getattr(module, self.name)


def register_model(*, task: str, input_shape: tuple[int, int, int, int]) -> Callable[[F], F]:
    """Declares a zoo model: decorate its factory, named as the model, in a family module."""

    def check(factory: F) -> F:
        family = factory.__module__.rsplit(".", 1)[-1]
        declared = ModelSpec(factory.__name__, task, tuple(input_shape), family)
        if _specs().get(factory.__name__) != declared:
            raise RegistryError(
                f"@register_model on {factory.__module__}.{factory.__name__} is not what the "
                f"registry read from source ({_specs().get(factory.__name__)}): list its "
                "module in models.registry.FAMILY_MODULES and give literal arguments"
            )
        return factory

    return check


@functools.cache
def _specs() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for family in FAMILY_MODULES:
        source = (MODELS_DIR / f"{family}.py").read_text()
        for node in ast.parse(source).body:
            declaration = _declaration(node)
            if declaration is None:
                continue
            try:
                args = {k.arg: ast.literal_eval(k.value) for k in declaration.keywords}
                spec = ModelSpec(node.name, args["task"], tuple(args["input_shape"]), family)
            except (KeyError, ValueError, TypeError) as error:
                raise RegistryError(
                    f"models/{family}.py: @register_model on {node.name} needs literal task= "
                    f"and input_shape= arguments ({error})"
                ) from error
            if spec.task not in TASKS or len(spec.input_shape) != 4:
                raise RegistryError(f"models/{family}.py: bad declaration {spec}")
            specs[spec.name] = spec
    return specs


def _declaration(node: ast.stmt) -> ast.Call | None:
    """The `@register_model(...)` call decorating a top-level function, if any."""
    if not isinstance(node, ast.FunctionDef):
        return None
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == (
            "register_model"
        ):
            return decorator
    return None


def model_spec(name: str) -> ModelSpec:
    specs = _specs()
    if name not in specs:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(specs)}")
    return specs[name]


def list_models() -> list[str]:
    return list(_specs())


def model_task(name: str) -> str:
    return model_spec(name).task


def default_input_shape(name: str) -> tuple[int, int, int, int]:
    return model_spec(name).input_shape


# --------------------------------------------------------------------------------------
# Shipped weights and their typed records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRecord:
    """The synthetic dataset a shipped model was trained on (`axial-deploy dataset`): with
    `seed` and `size` its val split regenerates image for image."""

    generator: str
    kind: str
    seed: int
    size: tuple[int, int]
    counts: dict[str, dict[str, Any]]
    classes: list[Any]
    command: str
    label_divisor: int | None = None  # panoptic only
    void_semantic_value: int | None = None  # panoptic only


@dataclass(frozen=True)
class PretrainedConfig:
    """The record of a model's shipped weights (`pretrained/NAME.json`, written by `train`)."""

    model: str
    task: str
    num_classes: int
    class_names: list[str]
    input_size: tuple[int, int]  # height, width the weights were trained and measured at
    command: str
    seed: int
    dataset: DatasetRecord
    epochs: int
    steps: int
    batch_size: int
    lr: float
    threads: int
    train_time_s: float
    val_metrics: dict[str, float]
    val_subset_metrics: dict[str, float]  # on the first `eval_subset` val images
    eval_subset: int
    loss_log: list[dict[str, float]]
    weights: str
    torch: str
    python: str
    postprocess: dict[str, Any] | None = None  # panoptic: the PanopticConfig used for metrics
    loss_weights: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys a newer `train` added

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, *self.input_size)

    def postprocess_config(self):
        """The recorded panoptic post-processing as a `PanopticConfig` (None: classifier)."""
        if self.postprocess is None:
            return None
        from .panoptic_config import PanopticConfig

        return PanopticConfig(**self.postprocess)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "record") -> PretrainedConfig:
        """The record from its JSON object; a missing key, a key of the wrong type or sizes
        that are not [height, width] raise PretrainedWeightsError naming `source` and the key."""
        from axial_deploy.artifacts import check_fields

        known = [f for f in fields(cls) if f.name != "extra"]
        required = tuple(f.name for f in known if f.default is MISSING)
        check_fields(data, RECORD_TYPES, path=source, error=PretrainedWeightsError,
                     required=required, fix=RECORD_FIX)  # fmt: skip
        names = {f.name for f in known}
        values = {k: v for k, v in data.items() if k in names}
        values["input_size"] = _size(values["input_size"], source, "input_size")
        values["dataset"] = _dataset_record(values["dataset"], source)
        record = cls(**values, extra={k: v for k, v in data.items() if k not in names})
        try:  # checked here, where the file is known (found by test_fuzz_readers)
            record.postprocess_config()
        except (TypeError, ValueError) as error:
            raise PretrainedWeightsError(
                f"{source}: key 'postprocess' is not a valid PanopticConfig ({first_line(error)}); "
                f"{RECORD_FIX}"
            ) from None
        return record


RECORD_FIX = "retrain or fix the record"
_NONE = type(None)
# JSON types of the record's keys (an int is a JSON number too)
RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "task": (str,), "num_classes": (int,), "class_names": (list,),
    "input_size": (list,), "command": (str,), "seed": (int,), "dataset": (dict,),
    "epochs": (int,), "steps": (int,), "batch_size": (int,), "lr": (float,), "threads": (int,),
    "train_time_s": (float,), "val_metrics": (dict,), "val_subset_metrics": (dict,),
    "eval_subset": (int,), "loss_log": (list,), "weights": (str,), "torch": (str,),
    "python": (str,), "postprocess": (dict, _NONE), "loss_weights": (dict, _NONE),
}  # fmt: skip
DATASET_TYPES: dict[str, tuple[type, ...]] = {
    "generator": (str,), "kind": (str,), "seed": (int,), "size": (list,), "counts": (dict,),
    "classes": (list,), "command": (str,), "label_divisor": (int, _NONE),
    "void_semantic_value": (int, _NONE),
}  # fmt: skip


def _size(value: list, source: str, key: str) -> tuple[int, int]:
    """[height, width] of positive integers, as a tuple."""
    if len(value) != 2 or not all(type(v) is int and v > 0 for v in value):
        raise PretrainedWeightsError(
            f"{source}: key {key!r} must be [height, width] of positive integers, not "
            f"{value!r:.40}; {RECORD_FIX}"
        )
    return tuple(value)  # type: ignore[return-value]


def _dataset_record(data: dict[str, Any], source: str) -> DatasetRecord:
    from axial_deploy.artifacts import check_fields

    names = {f.name for f in fields(DatasetRecord)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise PretrainedWeightsError(f"{source}: unknown dataset keys {unknown}")
    required = tuple(f.name for f in fields(DatasetRecord) if f.default is MISSING)
    check_fields(data, DATASET_TYPES, path=source, error=PretrainedWeightsError,
                 required=required, where="dataset: ", fix=RECORD_FIX)  # fmt: skip
    return DatasetRecord(**{**data, "size": _size(data["size"], source, "dataset size")})


def read_record(path: Path) -> PretrainedConfig:
    """A trained model's record (`pretrained/NAME.json`, `train`'s CKPT.json) through the one
    JSON reader."""
    from axial_deploy.artifacts import read_json

    record = read_json(path, PretrainedWeightsError, "pretrained record", RECORD_FIX)
    return PretrainedConfig.from_json(record, source=str(path))


def pretrained_models() -> list[str]:
    """Zoo models with shipped trained weights."""
    return [name for name in _specs() if (PRETRAINED_DIR / f"{name}.pt").is_file()]


def pretrained_weights(name: str) -> Path:
    """The shipped weights file of `name` (after checking its record exists)."""
    pretrained_record(name)
    return PRETRAINED_DIR / f"{name}.pt"


def pretrained_record(name: str) -> PretrainedConfig:
    """The typed record of the shipped weights of `name`: command, seed, dataset, metrics,
    input size, class names and (panoptic) post-processing settings."""
    model_spec(name)
    path = PRETRAINED_DIR / f"{name}.json"
    if not path.is_file() or not (PRETRAINED_DIR / f"{name}.pt").is_file():
        available = ", ".join(pretrained_models()) or "none"
        raise PretrainedWeightsError(
            f"no pretrained weights ship for {name!r} (models with weights: {available}); "
            "use pretrained=False, train one with `axial-deploy train`, or load a checkpoint "
            "with load_checkpoint(model, path)"
        )
    return read_record(path)
