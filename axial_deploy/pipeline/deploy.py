"""`axial-deploy deploy`: the whole flow in one command, ending in one report.

    plan -> export -> rewrite -> verify -> precision -> build -> accuracy -> profile -> report

`run_pipeline` reads as that flow: each stage is a small function below, in flow order, that
returns a typed result (`ExportResult`, `RewriteStage`, `VerifyResult`, the `Variant`s with
their `EngineResult`s, `AccuracyResult`); `DeployReport` assembles them, and its `to_json()`
is report.json. Rendering (report.json, report.html, the console table) is in
`axial_deploy.pipeline.report`.

Two graphs per precision: the *rewritten* one (AxialAttention nodes; what TensorRT builds with
the plugin) and the *plain* export (no custom op; what TensorRT-RTX and plain ONNX Runtime
run). Task accuracy is measured on both, in ONNX Runtime, on a held-out split (generated
from the synthetic dataset when none is given); the gate compares each variant's primary
metric (PQ or top-1) with the FP32 rewritten graph's. Engines are built with TensorRT where it
is installed (with the plugin when `make plugins` built it), else with TensorRT-RTX on the
plain graphs, else the step is skipped with the reason. Latency: every ONNX variant in ONNX
Runtime on this machine's CPU (a reference, not the deployment target) and, on a GPU, every
engine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from axial_deploy.errors import AxialDeployError
from axial_deploy.pipeline.records import (  # noqa: F401 (re-exported: deploy.X keeps working)
    DEFAULT_MODEL,
    DEFAULT_PRECISIONS,
    PRECISIONS,
    AccuracyResult,
    BackendChoice,
    DeployPlan,
    DeployReport,
    DeploySettings,
    EngineResult,
    ExportResult,
    HostEnvironment,
    RewriteStage,
    Variant,
    VerifyResult,
)

if TYPE_CHECKING:
    from torch import nn

    from axial_deploy.engine.backends import Gpu
    from axial_deploy.evaluation.evaluate import EvaluationResult

QDQ_PRECISIONS = ("int8", "fp8")  # calibrated on the same images
BACKEND_CHOICES = ("auto", "tensorrt", "tensorrt-rtx", "none")
GRAPHS = ("axial", "plain")  # rewritten graph, plain export
CALIBRATION_IMAGES = 16  # train-split images generated for INT8 calibration
EXPORT_RTOL = 1e-3  # ONNX Runtime vs PyTorch, max relative error the export stage accepts


class DeployError(AxialDeployError, ValueError):
    """A stage of the pipeline cannot go on; the message names the stage and the fix."""


class _Stages:
    """Prints '[i/n] name ...' and keeps each stage's seconds."""

    def __init__(self, total: int):
        self.total, self.index, self.seconds = total, 0, {}
        self._name, self._start = "", 0.0

    def begin(self, name: str, text: str) -> None:
        self.end()
        self.index += 1
        self._name, self._start = name, time.perf_counter()
        print(f"[{self.index}/{self.total}] {text} ...", flush=True)

    def end(self) -> None:
        if self._name:
            self.seconds[self._name] = round(time.perf_counter() - self._start, 2)
            self._name = ""


def say(text: str) -> None:
    print(f"      {text}", flush=True)


def parse_precisions(text: str) -> tuple[str, ...]:
    """'fp32,fp16,int8' -> ('fp32', 'fp16', 'int8'); FP32 is always included (the reference).
    Any subset of PRECISIONS (fp32, fp16, int8, fp8), in that order."""
    items = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = sorted(set(items) - set(PRECISIONS))
    if unknown or not items:
        raise DeployError(
            f"--precision {text!r}: use a comma-separated subset of {','.join(PRECISIONS)}"
        )
    return tuple(p for p in PRECISIONS if p in items or p == "fp32")


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------


def deploy(settings: DeploySettings) -> dict[str, Any]:
    """Runs the pipeline into `settings.out`; returns the report as report.json holds it
    (`run_pipeline` returns the typed `DeployReport`). Raises DeployError when a stage cannot
    go on."""
    return run_pipeline(settings).to_json()


def run_pipeline(settings: DeploySettings) -> DeployReport:
    """Runs the pipeline into `settings.out` and writes report.json / report.html there."""
    from axial_deploy.pipeline.report import deploy_summary_table, write_deploy_report

    plan = plan_deploy(settings)
    notes = []
    if plan.fp8_problem:  # before any work, one line
        say(plan.fp8_problem)
        notes.append(plan.fp8_problem)
    settings.out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(8)
    stages.begin("export", f"export {plan.model} ({plan.weights} weights) at {_dims(plan)}")
    data = prepare_dataset(settings, plan) if plan.meaningful else None
    model = setup_model(settings, plan, data, notes)
    export = export_stage(settings, plan, model)
    stages.begin("rewrite", "rewrite axial-attention layers into AxialAttention nodes")
    rewrite = rewrite_stage(settings, plan, export, notes)
    stages.begin("verify", "verify the rewritten graph against the export (ONNX Runtime)")
    verify = verify_stage(settings, export, rewrite)
    stages.begin("precision", f"precision: {', '.join(settings.precisions)}")
    variants = precision_stage(settings, plan, data, export, rewrite, notes)
    stages.begin("build", f"build engines: {plan.engines.reason}")
    gpu = build_stage(settings, plan, variants, notes)
    stages.begin("accuracy", "task accuracy per variant and the accuracy gate")
    accuracy = accuracy_stage(settings, plan, model, data, variants, notes, run_engines=bool(gpu))
    stages.begin("profile", "profile latency (ONNX Runtime on this CPU; engines on a GPU)")
    profile_stage(settings, variants, gpu)
    stages.begin("report", "write the report")
    stages.end()
    report = DeployReport(
        settings, plan, export, rewrite, verify, variants, accuracy,
        environment(plan.engines.backend), stages.seconds, notes,
    )  # fmt: skip
    json_path, html_path = write_deploy_report(report, settings.out)
    print(deploy_summary_table(report))
    say(f"wrote {json_path} and {html_path}")
    return report


def _dims(plan: DeployPlan) -> str:
    return "x".join(map(str, plan.input_shape))


# --------------------------------------------------------------------------------------
# Plan: the settings checked and resolved before any work
# --------------------------------------------------------------------------------------


def plan_deploy(settings: DeploySettings) -> DeployPlan:
    from axial_deploy.task import task_of

    if settings.eval_images < 1 or settings.iterations < 1:
        raise DeployError("--eval-images and --iterations must be >= 1")
    if settings.max_drop < 0:
        raise DeployError(f"--max-drop must be >= 0, got {settings.max_drop}")
    from axial_deploy.budget import BUDGET_PRECISIONS  # lazily: it imports onnx

    if settings.fit_budget and not set(BUDGET_PRECISIONS) & set(settings.precisions):
        raise DeployError(
            f"--fit-budget searches {', '.join(BUDGET_PRECISIONS)} variants: add one to --precision"
        )
    task = task_of(settings.model)
    weights, meaningful = _weights(settings)
    return DeployPlan(
        model=settings.model,
        task=task,
        weights=weights,
        meaningful=meaningful,
        input_shape=_input_shape(settings, weights),
        engines=choose_backend(settings.backend, settings.plugin_library),
        fp8_problem=_fp8_problem(settings.precisions),
    )


def _fp8_problem(precisions: tuple[str, ...]) -> str | None:
    """When FP8 is asked for and this machine's GPU has no FP8: the line saying that its FP8
    graphs are measured in ONNX Runtime but get no engine here. No GPU: None (TensorRT-RTX
    builds for its portable set, FP8 GPUs among them)."""
    from axial_deploy.engine.build import fp8_support_problem
    from axial_deploy.engine.environment import cuda_device_info

    if "fp8" not in precisions:
        return None
    _, gpu, sm = cuda_device_info()
    problem = fp8_support_problem(sm, gpu) if sm else None
    if problem is None:
        return None
    return f"fp8: {problem}: FP8 graphs are measured in ONNX Runtime, their engines skipped"


def _weights(settings: DeploySettings) -> tuple[str, bool]:
    """('pretrained' | checkpoint path | 'random', whether accuracy can mean anything)."""
    from axial_deploy.models import pretrained_models

    if settings.checkpoint and settings.pretrained:
        raise DeployError("give --checkpoint or --pretrained, not both")
    if settings.checkpoint:
        if not Path(settings.checkpoint).is_file():
            raise DeployError(f"checkpoint {settings.checkpoint} not found")
        return settings.checkpoint, True
    shipped = settings.model in pretrained_models()
    if settings.pretrained and not shipped:
        raise DeployError(
            f"no pretrained weights ship for {settings.model} (models with weights: "
            f"{', '.join(pretrained_models())}); pass --checkpoint PATH"
        )
    if settings.pretrained or (settings.pretrained is None and shipped):
        return "pretrained", True
    return "random", False


def _input_shape(settings: DeploySettings, weights: str) -> tuple[int, int, int, int]:
    from axial_deploy.models import default_input_shape, pretrained_record

    if settings.input_hw:
        return (1, 3, *settings.input_hw)
    if weights == "pretrained":
        return pretrained_record(settings.model).input_shape
    return default_input_shape(settings.model)


def choose_backend(
    requested: str,
    plugin_library: str | None,
    gpus: list[Gpu] | None = None,
    installed: set[str] | None = None,
) -> BackendChoice:
    """(backend or None, which graph it builds, why). `auto` follows `backends.choose_auto`
    (TensorRT on a GPU; TensorRT-RTX only on GPUs of its support matrix, or ahead of time
    without a GPU); TensorRT builds the rewritten graph when the plugin library exists, else
    the plain one; TensorRT-RTX the plain one. A backend asked for by name must be installed
    (`environment.import_backend`'s error says how). `gpus` / `installed`: this
    machine's when None."""
    from axial_deploy.engine.backends import choose_auto, installed_backends, local_gpus
    from axial_deploy.engine.build import hosts_plugins
    from axial_deploy.engine.environment import BuildError, import_backend
    from axial_deploy.native import PLUGIN, locate

    if requested not in BACKEND_CHOICES:
        raise DeployError(f"--backend {requested!r}: use one of {', '.join(BACKEND_CHOICES)}")
    if requested == "none":
        return BackendChoice(None, "", "engine step skipped (--backend none)")
    if requested == "auto":
        installed = installed_backends() if installed is None else installed
        backend, why = choose_auto(local_gpus() if gpus is None else gpus, installed)
        if backend is None:
            return BackendChoice(None, "", why)
    else:
        try:
            import_backend(requested)
        except BuildError as error:
            raise DeployError(f"--backend {requested}: {error}") from error
        backend, why = requested, f"{requested} (--backend)"
    # build.refuse_plugin_graph's feature check: a backend without plugin layers gets the plain
    # graphs (and build_engine refuses anything else through that same guard).
    try:
        plugin_layers = hosts_plugins(import_backend(backend))
    except BuildError:  # `installed` names a backend this interpreter cannot import (planning)
        plugin_layers = backend != "tensorrt-rtx"
    if not plugin_layers:
        return BackendChoice(backend, "plain", f"{why}, on the plain graphs (it has no plugins)")
    plugin = Path(plugin_library) if plugin_library else locate(PLUGIN).path
    if plugin and plugin.is_file():
        return BackendChoice(backend, "axial", f"{why}, with the AxialAttention plugin ({plugin})")
    missing = plugin or locate(PLUGIN).describe()
    return BackendChoice(
        backend,
        "plain",
        f"{why}, on the plain graphs: plugin library {missing} ({PLUGIN.build_hint})",
    )


# --------------------------------------------------------------------------------------
# 1. Export: data, model, ONNX (checked against PyTorch)
# --------------------------------------------------------------------------------------


def prepare_dataset(settings: DeploySettings, plan: DeployPlan) -> Path:
    """The evaluation data: --data, else the synthetic dataset of the model's task (with the
    seed of the shipped weights' dataset, so its val split is the held-out one)."""
    from axial_deploy.datasets.synthetic import generate_classification, generate_panoptic
    from axial_deploy.evaluation.evaluate import dataset_task
    from axial_deploy.models import pretrained_models, pretrained_record

    task = plan.task
    if settings.data:
        data = Path(settings.data)
        try:
            found = dataset_task(data, "val")
        except ValueError as error:
            raise DeployError(f"--data {data}: {error}") from error
        if found != task:
            raise DeployError(f"--data {data} is a {found} dataset but {settings.model} is {task}")
        return data
    seed, size = 0, plan.input_hw
    if settings.model in pretrained_models():
        recorded = pretrained_record(settings.model).dataset
        seed, size = recorded.seed, recorded.size
    data = settings.out / "data"
    if _reusable_dataset(data / "dataset.json", task, seed, size, settings.eval_images):
        say(f"reusing the synthetic dataset in {data}")
        return data
    generate = generate_panoptic if task == "panoptic" else generate_classification
    counts = {"train": CALIBRATION_IMAGES, "val": settings.eval_images}
    generate(data, seed=seed, size=size, progress=settings.progress, **counts)
    say(f"generated a synthetic {task} dataset in {data} (seed {seed}, {size[0]}x{size[1]})")
    return data


def _reusable_dataset(record: Path, task: str, seed: int, size: tuple, images: int) -> bool:
    """A rerun into the same folder: same kind, seed, size and enough val images."""
    from axial_deploy.datasets.synthetic import DatasetError, read_dataset_record

    if not record.is_file():
        return False
    try:
        old = read_dataset_record(record.parent)
        val_images = old["counts"]["val"]["images"]
    except (DatasetError, KeyError, TypeError):  # damaged or foreign: generate it again
        return False
    return (
        old.get("kind") == task
        and old.get("seed") == seed
        and tuple(old.get("size", ())) == tuple(size)
        and val_images >= images
    )


def setup_model(
    settings: DeploySettings, plan: DeployPlan, data: Path | None, notes: list[str]
) -> nn.Module:
    """The model to export (`models.prepare_model`): shipped weights, the checkpoint, or live
    random weights (then task accuracy is not measured)."""
    from axial_deploy.export import resolve_trace_size
    from axial_deploy.models import prepare_model

    num_classes = settings.num_classes
    if plan.weights != "pretrained" and num_classes is None and data is not None:
        num_classes = _dataset_classes(data, plan.task)
    if plan.weights == "random":
        notes.append(
            "random weights (no --checkpoint and no shipped weights): task accuracy is "
            "not measured, only numerical agreement with FP32"
        )
    # live random weights measure BatchNorm statistics at the size the export traces at
    trace_size = resolve_trace_size("auto", plan.input_shape)
    traced = (*plan.input_shape[:2], *trace_size) if trace_size else plan.input_shape
    return prepare_model(
        plan.model,
        checkpoint=settings.checkpoint,
        pretrained=plan.weights == "pretrained",
        live_random_weights=plan.weights == "random",
        input_shape=traced,
        seed=settings.seed,
        # the shipped weights bring their own class count (settings.num_classes is ignored)
        num_classes=None if plan.weights == "pretrained" else num_classes,
    )


def _dataset_classes(data: Path, task: str) -> int:
    from axial_deploy.datasets.coco_panoptic import load_split, split_paths
    from axial_deploy.evaluation.evaluate import classification_samples

    if task == "panoptic":
        return len(load_split(split_paths(data, "val")[0]).categories)
    return len(classification_samples(data, "val")[1])


def export_stage(settings: DeploySettings, plan: DeployPlan, model: nn.Module) -> ExportResult:
    """The export with `export`'s policy (`resolve_trace_size`: a small trace above
    AUTO_TRACE_PIXELS) and its parity check against PyTorch, as `axial-deploy export` runs it."""
    from axial_deploy.export import auto_trace_note, export_checked, resolve_trace_size

    trace_size = resolve_trace_size("auto", plan.input_shape)
    if trace_size:
        say(auto_trace_note(plan.input_shape, trace_size))
    result = export_checked(
        model,
        plan.input_shape,
        settings.out / f"{plan.model}.onnx",
        trace_size=trace_size,
        rtol=EXPORT_RTOL,
        seed=settings.seed,
        name=plan.model,
    )
    if not result.passed:
        raise DeployError(
            f"export: ONNX Runtime differs from PyTorch (max rel {result.max_rel:.2e})"
        )
    say(f"wrote {result.path}; ONNX Runtime vs PyTorch max rel {result.max_rel:.2e}")
    return ExportResult(result.path, result.max_rel)


# --------------------------------------------------------------------------------------
# 2-3. Rewrite and verify
# --------------------------------------------------------------------------------------


def rewrite_stage(
    settings: DeploySettings, plan: DeployPlan, export: ExportResult, notes: list[str]
) -> RewriteStage:
    from axial_deploy.rewrite import rewrite_file

    axial = settings.out / f"{plan.model}.axial.onnx"
    result = rewrite_file(
        export.onnx, axial, report_path=settings.out / f"{plan.model}.rewrite.json"
    )
    say(result.summary().splitlines()[0])
    if result.left:
        notes.append(f"{len(result.left)} attention layer(s) left intact (see rewrite.json)")
    left = [(r.softmax, r.reason) for r in result.left]
    return RewriteStage(axial, len(result.rewritten), left)


def verify_stage(
    settings: DeploySettings, export: ExportResult, rewrite: RewriteStage
) -> VerifyResult:
    from axial_deploy.checks.verify import verify_models

    check = verify_models(export.onnx, rewrite.onnx, seed=settings.seed)
    worst = max(row.max_rel for row in check.rows)
    say(f"{'passed' if check.passed else 'FAILED'}: max rel {worst:.2e} (tolerance {check.rtol:g})")
    if not check.passed:
        raise DeployError(
            f"verify: the rewritten graph {rewrite.onnx} differs from {export.onnx} (max rel "
            f"{worst:.2e}); report it with both files"
        )
    return VerifyResult(check.passed, worst, check.rtol)


# --------------------------------------------------------------------------------------
# 4. Precision: every precision of both graphs
# --------------------------------------------------------------------------------------


def precision_stage(
    settings: DeploySettings,
    plan: DeployPlan,
    data: Path | None,
    export: ExportResult,
    rewrite: RewriteStage,
    notes: list[str],
) -> list[Variant]:
    from axial_deploy.budget import BUDGET_PRECISIONS
    from axial_deploy.checks.verify import verify_models
    from axial_deploy.quantize import quantize_file

    calib = _calibration_source(settings, data, plan.task)
    quantized = [p.upper() for p in settings.precisions if p in QDQ_PRECISIONS]
    if quantized and calib is None:
        names = "/".join(quantized)
        notes.append(
            f"{names} calibrated on synthetic random inputs (no --calib and no train images): "
            f"pass --calib DIR with real images for meaningful {names} ranges"
        )
    references = {"axial": rewrite.onnx, "plain": export.onnx}
    variants: list[Variant] = []
    for precision in settings.precisions:
        for graph, source in references.items():
            if precision == "fp32":
                variants.append(Variant(precision, graph, source))
                continue
            suffix = ".axial" if graph == "axial" else ""
            target = settings.out / f"{plan.model}{suffix}.{precision}.onnx"
            if settings.fit_budget and precision in BUDGET_PRECISIONS:
                variant = Variant(precision, graph, target)
                variant.budget = budget = _budget_variant(
                    settings, plan, data, calib, precision, source, target
                )
                notes.append(
                    f"{variant.label}: --fit-budget kept {len(budget['kept'])} layer(s) in FP32, "
                    f"drop {budget['drop']:+.2f} (plain {budget['plain_drop']:+.2f}), "
                    f"{budget['share_macs_quantized']:.0%} of multiply-adds in {precision.upper()}"
                    + ("" if budget["met"] else ": budget NOT met with every layer kept")
                    + f"; record {budget['record']}"
                )
                variants.append(variant)
                continue
            quantized = quantize_file(
                source,
                target,
                precision=precision,
                calib=calib if precision in QDQ_PRECISIONS else None,
                # FP8 takes its own default (max |x|): entropy models INT8's levels
                method=settings.calib_method if precision == "int8" else None,
                batches=settings.calib_batches,
                seed=settings.seed,
                progress=settings.progress,
            )
            say(quantized.summary().splitlines()[0])
            variants.append(Variant(precision, graph, target))
    for v in variants:  # each graph's output error against its FP32 reference
        v.max_rel_vs_fp32 = 0.0
        if v.precision != "fp32":
            # only the error is read (precision is judged by the task gate): no noise floor
            report = verify_models(
                references[v.graph], v.onnx, seed=settings.seed, noise_floor="off"
            )
            rows = report.rows
            v.max_rel_vs_fp32 = max(row.max_rel for row in rows)
    return variants


def _budget_variant(
    settings: DeploySettings,
    plan: DeployPlan,
    data: Path | None,
    calib: str | None,
    precision: str,
    source: Path,
    target: Path,
) -> dict[str, Any]:
    """--fit-budget: the Q/DQ graph with the fewest layers kept in FP32 (budget.py) for its PQ
    / top-1 on the val images to be within --max-drop of FP32; the record's gist."""
    from axial_deploy.budget import BudgetSettings, quantize_to_budget
    from axial_deploy.models import pretrained_record

    if data is None:
        raise DeployError(
            "--fit-budget measures task accuracy: it needs trained weights (--checkpoint, or a "
            "model with shipped weights)"
        )
    postprocess = None
    if plan.task == "panoptic" and plan.weights == "pretrained":  # as _evaluate_targets
        postprocess = pretrained_record(plan.model).postprocess_config()
    budget = BudgetSettings(
        precision=precision, max_drop=settings.max_drop, data=data,
        eval_images=settings.eval_images, calib=calib, method=settings.calib_method,
        batches=settings.calib_batches, seed=settings.seed, postprocess=postprocess,
        progress=settings.progress,
    )  # fmt: skip
    report = quantize_to_budget(source, target, budget)
    say(report.summary().splitlines()[2].strip())
    return {
        "record": report.record,
        "met": report.met,
        "drop": report.drop,
        "plain_drop": report.plain_drop,
        "kept": [layer.node for layer in report.kept],
        "share_macs_quantized": report.share_quantized,
        "evaluations": len(report.steps),
    }


def _calibration_source(settings: DeploySettings, data: Path | None, task: str) -> str | None:
    if settings.calib:
        return settings.calib
    if data is None:
        return None  # quantize's synthetic source
    train = data / "images" / "train" if task == "panoptic" else data / "train"
    return str(train) if train.is_dir() else None


# --------------------------------------------------------------------------------------
# 5. Build
# --------------------------------------------------------------------------------------


def build_stage(
    settings: DeploySettings, plan: DeployPlan, variants: list[Variant], notes: list[str]
) -> str | None:
    """Builds an engine per variant of the chosen graph; returns this machine's GPU (None:
    none, so the engines are built but not run here)."""
    from axial_deploy.engine.environment import cuda_device_info

    backend = plan.engines.backend
    if backend is not None:
        for v in variants:
            if v.graph != plan.engines.graph:
                continue
            if v.precision == "fp8" and plan.fp8_problem:
                v.engine = EngineResult(backend, error=plan.fp8_problem)
                continue
            v.engine = _build_engine(settings, backend, v, plan.model)
    gpu = cuda_device_info()[1]
    if any(v.engine_path for v in variants) and gpu is None:
        notes.append(
            "engines built but not run: no GPU on this machine (run `axial-deploy evaluate` "
            "and `axial-deploy profile` on the engines on the target)"
        )
    return gpu


def _build_engine(settings: DeploySettings, backend: str, v: Variant, name: str) -> EngineResult:
    from axial_deploy.engine.build import BuildError, BuildOptions, build_engine

    engine = settings.out / f"{name}.{v.label}.{backend}.engine"
    options = BuildOptions(
        backend=backend,
        plugin_library=settings.plugin_library,  # build_engine defaults it
        progress=settings.progress,
    )
    try:
        manifest = build_engine(v.onnx, engine, options)
    except BuildError as error:
        say(f"{v.label}: not built: {error}")
        return EngineResult(backend, error=str(error))
    size_mb = engine.stat().st_size / 2**20
    say(f"{v.label}: {engine.name} ({size_mb:.1f} MiB) in {manifest.build_seconds:.1f} s")
    return EngineResult(
        backend,
        path=str(engine),
        build_s=manifest.build_seconds,
        size_mb=round(size_mb, 3),
        precision=manifest.precision,
    )


# --------------------------------------------------------------------------------------
# 6. Accuracy: task metric per variant (and engine, on a GPU), the gate, panels
# --------------------------------------------------------------------------------------


def accuracy_stage(
    settings: DeploySettings,
    plan: DeployPlan,
    model: nn.Module,
    data: Path | None,
    variants: list[Variant],
    notes: list[str],
    run_engines: bool,
) -> AccuracyResult:
    """Evaluates PyTorch, every variant and (on a GPU) every engine on the val split, then
    the gate; each variant gets its metrics, drop and flag."""
    from axial_deploy.evaluation.evaluate import accuracy_gate, comparison_table

    if data is None:
        say("skipped: random weights (pass --checkpoint or use a model with shipped weights)")
        return AccuracyResult(skipped="random weights")
    results = _evaluate_targets(settings, plan, model, data, variants, notes, run_engines)
    print(comparison_table(results))
    gate = accuracy_gate(results, reference="fp32", max_drop=settings.max_drop)
    print(gate.summary())
    rows = {row.label: row for row in gate.rows}
    for v in variants:
        v.accuracy = results[v.label].metrics
        v.drop, v.flagged = rows[v.label].drop, rows[v.label].flagged
        if f"{v.label}-engine" in results and v.engine is not None:
            row = rows[f"{v.label}-engine"]
            v.engine.accuracy = results[row.label].metrics
            v.engine.drop, v.engine.flagged = row.drop, row.flagged
    result = AccuracyResult(
        data=data, images=results["fp32"].images, pytorch=results["pytorch"].metrics, gate=gate
    )
    if plan.task == "panoptic" and settings.panels > 0:
        result.panels = _panels(settings, data, variants)
    if not gate.passed:
        notes.append(f"accuracy gate FAILED: a drop above {settings.max_drop:g} points")
    for note in layerwise_notes(variants):
        say(note)
        notes.append(note)
    return result


def layerwise_notes(variants: list[Variant]) -> list[str]:
    """For each variant the gate flagged: the command that shows where its precision breaks."""
    from axial_deploy.checks.layerwise import layerwise_command

    fp32 = {v.graph: v.onnx for v in variants if v.precision == "fp32"}
    return [
        f"{v.label} flagged: see where its precision breaks, layer by layer: "
        f"{layerwise_command(fp32[v.graph], v.onnx)}"
        for v in variants
        if v.flagged and v.precision != "fp32" and v.graph in fp32
    ]


def _evaluate_targets(
    settings: DeploySettings,
    plan: DeployPlan,
    model: nn.Module,
    data: Path,
    variants: list[Variant],
    notes: list[str],
    run_engines: bool,
) -> dict[str, EvaluationResult]:
    """label -> EvaluationResult for PyTorch, each variant and (run_engines) each engine; an
    engine that cannot run here is noted, not fatal."""
    from axial_deploy.evaluation.evaluate import evaluate
    from axial_deploy.models import pretrained_record

    postprocess = None
    if plan.task == "panoptic" and plan.weights == "pretrained":  # the settings of its PQ
        postprocess = pretrained_record(plan.model).postprocess_config()
    common = dict(
        limit=settings.eval_images,
        input_hw=plan.input_hw,
        postprocess=postprocess,
        progress=settings.progress,
    )
    targets = [("pytorch", model)] + [(v.label, v.onnx) for v in variants]
    if run_engines:
        targets += [(f"{v.label}-engine", v.engine_path) for v in variants if v.engine_path]
    predictions = settings.out / "predictions"
    results = {}
    for label, target in targets:
        try:
            results[label] = evaluate(target, data, predictions_dir=predictions / label, **common)
        except (ImportError, RuntimeError, ValueError) as error:
            if not label.endswith("-engine"):
                raise
            notes.append(f"{label}: not evaluated: {error}")
    return results


def _panels(settings: DeploySettings, data: Path, variants: list[Variant]) -> list[Path]:
    from axial_deploy.evaluation.panels import render_panels

    predictions = settings.out / "predictions"
    shown = [v.label for v in variants if v.graph == "axial"]
    paths = render_panels(
        data,
        {label: predictions / label for label in shown},
        settings.out / "panels",
        count=settings.panels,
    )
    say(f"wrote {len(paths)} prediction panels to {settings.out / 'panels'}")
    return list(paths)


# --------------------------------------------------------------------------------------
# 7. Profile, and the environment the report records
# --------------------------------------------------------------------------------------


def profile_stage(settings: DeploySettings, variants: list[Variant], gpu: str | None) -> None:
    """Every variant in ONNX Runtime on this CPU; every engine too where a GPU is present."""
    from axial_deploy.engine.profile import profile_engine
    from axial_deploy.engine.runtime import Engine, EngineError
    from axial_deploy.op.ort import op_implementation

    if op_implementation() == "native":
        say("AxialAttention runs the native CPU op in ONNX Runtime")
    else:  # the rewritten graphs' CPU times then say nothing of the op's speed
        say("AxialAttention runs the Python reference op in ONNX Runtime, slower than the plain "
            "graph: `make cpu-libs` builds the native one")  # fmt: skip
    for v in variants:
        with Engine(v.onnx) as engine:  # closed before the next one opens
            result = profile_engine(
                engine,
                warmup_s=0.2,
                iterations=settings.iterations,
                seed=settings.seed,
                progress=False,
            )
        v.cpu_latency = result
        say(f"{v.label:<12} ONNX Runtime CPU mean {result.latency.mean_ms:8.2f} ms")
    engines = [v for v in variants if v.engine is not None and v.engine.path]
    if engines and gpu is None:
        say("engines not profiled: no GPU here")
        return
    for v in engines:
        try:
            # closed (device/pinned buffers, stream) before the next engine opens
            with Engine(v.engine.path) as engine:
                result = profile_engine(
                    engine,
                    warmup_s=1.0,
                    iterations=max(settings.iterations, 100),
                    progress=False,
                )
        except (EngineError, ImportError, RuntimeError) as error:
            v.engine.latency_error = str(error)
            say(f"{v.label}: engine not profiled: {error}")
            continue
        v.engine.latency = result
        say(f"{v.label:<12} {v.engine.backend} on {gpu} mean {result.latency.mean_ms:.3f} ms")


def environment(backend: str | None) -> HostEnvironment:
    import platform

    import onnxruntime
    import torch

    from axial_deploy.engine.build import running_environment

    return HostEnvironment(
        python=platform.python_version(),
        torch=torch.__version__,
        onnxruntime=onnxruntime.__version__,
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        engine=running_environment(backend) if backend else None,
    )
