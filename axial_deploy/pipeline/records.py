"""The records of `axial-deploy deploy`: its settings, its plan and each stage's typed result,
assembled in `DeployReport` (whose `to_json()` is report.json).

They sit below both the pipeline (`pipeline.deploy`, which fills them) and the rendering
(`pipeline.report`, which reads them), so neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from axial_deploy.engine.manifest import Environment

if TYPE_CHECKING:
    from axial_deploy.engine.profile import ProfileResult
    from axial_deploy.evaluation.evaluate import GateReport

DEFAULT_MODEL = "axial_deeplab_tiny"
PRECISIONS = ("fp32", "fp16", "int8", "fp8")
DEFAULT_PRECISIONS = ("fp32", "fp16", "int8", "fp8")  # `make demo`'s (see docs/precision.md)


@dataclass
class DeploySettings:
    model: str = DEFAULT_MODEL
    out: Path = Path("out/deploy")
    checkpoint: str | None = None
    # None: the shipped weights when the model has them and no checkpoint is given.
    pretrained: bool | None = None
    num_classes: int | None = None
    input_hw: tuple[int, int] | None = None  # default: the weights' training size, else zoo's
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    calib: str | None = None  # default: the dataset's train images (INT8 and FP8)
    calib_method: str = "entropy"  # INT8's; FP8 uses its default (max |x|, see quantize)
    calib_batches: int = 16
    data: str | None = None  # default: generate the model's synthetic dataset under OUT/data
    eval_images: int = 100
    max_drop: float = 1.0
    fit_budget: bool = False  # INT8: keep layers in FP32 until within max_drop (budget.py)
    panels: int = 4
    backend: str = "auto"
    plugin_library: str | None = None
    iterations: int = 100
    seed: int = 0
    progress: bool = True

    def to_json(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


# --------------------------------------------------------------------------------------
# Typed stage results (each `to_json` is its section of report.json)
# --------------------------------------------------------------------------------------


class BackendChoice(NamedTuple):
    """The engine builder (None: no engines) and the graph it builds ("axial" or "plain"),
    and why."""

    backend: str | None
    graph: str
    reason: str


@dataclass
class DeployPlan:
    """What the settings resolve to, checked before any work."""

    model: str
    task: str
    weights: str  # "pretrained", a checkpoint path, or "random"
    meaningful: bool  # whether task accuracy can mean anything (trained weights)
    input_shape: tuple[int, int, int, int]
    engines: BackendChoice
    # FP8 asked for on a GPU without FP8: the one line saying so (FP8 engines are skipped)
    fp8_problem: str | None = None

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.input_shape[2], self.input_shape[3]


@dataclass
class ExportResult:
    onnx: Path
    max_rel_vs_pytorch: float

    def to_json(self) -> dict[str, Any]:
        return {"onnx": str(self.onnx), "max_rel_vs_pytorch": self.max_rel_vs_pytorch}


@dataclass
class RewriteStage:
    onnx: Path
    rewritten: int  # AxialAttention nodes written
    left_intact: list[tuple[str, str]]  # (layer, reason) of attention layers not rewritten

    def to_json(self) -> dict[str, Any]:
        return {
            "onnx": str(self.onnx),
            "rewritten": self.rewritten,
            "left_intact": [{"layer": layer, "reason": why} for layer, why in self.left_intact],
        }


@dataclass
class VerifyResult:
    passed: bool
    max_rel: float
    rtol: float

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "max_rel": self.max_rel, "rtol": self.rtol}


@dataclass
class EngineResult:
    """One variant's engine: built (path, size, time) or failed (error); then, on a GPU, its
    accuracy against the gate and its latency."""

    backend: str
    path: str | None = None
    build_s: float | None = None
    size_mb: float | None = None
    precision: str | None = None
    error: str | None = None
    accuracy: dict[str, float] | None = None
    drop: float | None = None
    flagged: bool | None = None
    latency: ProfileResult | None = None
    latency_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"backend": self.backend}
        if self.path is not None:
            data.update(
                path=self.path, build_s=self.build_s, size_mb=self.size_mb, precision=self.precision
            )
        if self.error is not None:
            data["error"] = self.error
        if self.accuracy is not None:
            data.update(accuracy=self.accuracy, drop=self.drop, flagged=self.flagged)
        if self.latency is not None:
            data["latency"] = self.latency.to_dict()
        if self.latency_error is not None:
            data["latency_error"] = self.latency_error
        return data


@dataclass
class Variant:
    """One deployable graph: a precision of the rewritten or the plain export."""

    precision: str
    graph: str  # "axial" or "plain"
    onnx: Path
    max_rel_vs_fp32: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    drop: float | None = None
    flagged: bool = False
    cpu_latency: ProfileResult | None = None
    engine: EngineResult | None = None  # None: this variant's graph is not the one built
    budget: dict[str, Any] | None = None  # --fit-budget: the search's record, in short

    @property
    def label(self) -> str:
        return self.precision if self.graph == "axial" else f"{self.precision}-plain"

    @property
    def engine_path(self) -> str | None:
        return self.engine.path if self.engine else None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "precision": self.precision,
            "graph": self.graph,
            "onnx": str(self.onnx),
            "onnx_mb": round(self.onnx.stat().st_size / 2**20, 3),
            "max_rel_vs_fp32": self.max_rel_vs_fp32,
            "accuracy": self.accuracy,
            "drop": self.drop,
            "flagged": self.flagged,
            "cpu_latency": self.cpu_latency.to_dict() if self.cpu_latency else {},
            "engine": self.engine.to_json() if self.engine else {},
            **({"budget": self.budget} if self.budget is not None else {}),
        }


@dataclass
class AccuracyResult:
    """The accuracy stage: PyTorch's metrics, the gate over the variants, the panels; or the
    reason it was skipped."""

    skipped: str | None = None
    data: Path | None = None
    images: int = 0
    pytorch: dict[str, float] = field(default_factory=dict)
    gate: GateReport | None = None
    panels: list[Path] | None = None  # None: not drawn (classification, or --panels 0)

    def to_json(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        data: dict[str, Any] = {
            "data": str(self.data),
            "images": self.images,
            "pytorch": self.pytorch,
            "gate": self.gate.to_json() if self.gate else None,
        }
        if self.panels is not None:
            data["panels"] = [str(p) for p in self.panels]
        return data


@dataclass
class HostEnvironment:
    """The machine the pipeline ran on, and (when a backend was chosen) what its engines depend
    on: the one engine-environment record, `manifest.Environment`."""

    python: str
    torch: str
    onnxruntime: str
    cpu: str
    cpu_count: int | None
    engine: Environment | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "python": self.python,
            "torch": self.torch,
            "onnxruntime": self.onnxruntime,
            "cpu": self.cpu,
            "cpu_count": self.cpu_count,
        }
        if self.engine is not None:  # report.json's flat engine fields, as before
            data.update(
                engine_backend=self.engine.backend,
                tensorrt_version=self.engine.tensorrt_version,
                cuda_version=self.engine.cuda_version,
                gpu=self.engine.gpu_name,
                sm=self.engine.sm,
            )
        return data


@dataclass
class DeployReport:
    """Every stage's result; `to_json()` is report.json."""

    settings: DeploySettings
    plan: DeployPlan
    export: ExportResult
    rewrite: RewriteStage
    verify: VerifyResult
    variants: list[Variant]
    accuracy: AccuracyResult
    environment: HostEnvironment
    stages_s: dict[str, float]
    notes: list[str]

    @property
    def engine_backend(self) -> str | None:
        return self.plan.engines.backend

    @property
    def gate_passed(self) -> bool | None:
        """The accuracy gate's verdict; None when accuracy was not measured."""
        return None if self.accuracy.gate is None else self.accuracy.gate.passed

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.plan.model,
            "task": self.plan.task,
            "weights": self.plan.weights,
            "input_shape": list(self.plan.input_shape),
            "precisions": list(self.settings.precisions),
            "settings": self.settings.to_json(),
            "export": self.export.to_json(),
            "rewrite": self.rewrite.to_json(),
            "verify": self.verify.to_json(),
            "engine_backend": self.engine_backend,
            "accuracy": self.accuracy.to_json(),
            "stages_s": self.stages_s,
            "variants": [v.to_json() for v in self.variants],
            "environment": self.environment.to_json(),
            "notes": self.notes,
        }
