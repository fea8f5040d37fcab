"""`axial-deploy deploy`: the whole flow in one command, ending in one report.

export -> rewrite -> verify -> precision -> accuracy (task metric + gate + panels) -> build ->
profile -> report (JSON + HTML).

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

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axial_deploy.artifacts import atomic_output
from axial_deploy.errors import AxialDeployError

DEFAULT_MODEL = "axial_deeplab_tiny"
PRECISIONS = ("fp32", "fp16", "int8")
BACKEND_CHOICES = ("auto", "tensorrt", "tensorrt-rtx", "none")
GRAPHS = ("axial", "plain")  # rewritten graph, plain export
CALIBRATION_IMAGES = 16  # train-split images generated for INT8 calibration


class DeployError(AxialDeployError, ValueError):
    """A stage of the pipeline cannot go on; the message names the stage and the fix."""


@dataclass
class DeploySettings:
    model: str = DEFAULT_MODEL
    out: Path = Path("out/deploy")
    checkpoint: str | None = None
    # None: the shipped weights when the model has them and no checkpoint is given.
    pretrained: bool | None = None
    num_classes: int | None = None
    input_hw: tuple[int, int] | None = None  # default: the weights' training size, else zoo's
    precisions: tuple[str, ...] = PRECISIONS
    calib: str | None = None  # default: the dataset's train images (INT8 only)
    calib_method: str = "entropy"
    calib_batches: int = 16
    data: str | None = None  # default: generate the model's synthetic dataset under OUT/data
    eval_images: int = 100
    max_drop: float = 1.0
    panels: int = 4
    backend: str = "auto"
    plugin_library: str | None = None
    iterations: int = 50
    seed: int = 0
    progress: bool = True


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
    cpu_latency: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.precision if self.graph == "axial" else f"{self.precision}-plain"

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
            "cpu_latency": self.cpu_latency,
            "engine": self.engine,
        }


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
    """'fp32,fp16,int8' -> ('fp32', 'fp16', 'int8'); FP32 is always included (the reference)."""
    items = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = sorted(set(items) - set(PRECISIONS))
    if unknown or not items:
        raise DeployError(
            f"--precision {text!r}: use a comma-separated subset of {','.join(PRECISIONS)}"
        )
    return tuple(p for p in PRECISIONS if p in items or p == "fp32")


# --------------------------------------------------------------------------------------
# Stage helpers
# --------------------------------------------------------------------------------------


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
        return (1, 3, *pretrained_record(settings.model)["input_size"])
    return default_input_shape(settings.model)


def _dataset(settings: DeploySettings, task: str, hw: tuple[int, int]) -> Path:
    """The evaluation data: --data, else the synthetic dataset of the model's task (with the
    seed of the shipped weights' dataset, so its val split is the held-out one)."""
    from axial_deploy.evaluate import dataset_task
    from axial_deploy.models import pretrained_models, pretrained_record
    from axial_deploy.synthetic import generate_classification, generate_panoptic

    if settings.data:
        data = Path(settings.data)
        try:
            found = dataset_task(data, "val")
        except ValueError as error:
            raise DeployError(f"--data {data}: {error}") from error
        if found != task:
            raise DeployError(f"--data {data} is a {found} dataset but {settings.model} is {task}")
        return data
    seed, size = 0, hw
    if settings.model in pretrained_models():
        recorded = pretrained_record(settings.model)["dataset"]
        seed, size = recorded["seed"], tuple(recorded["size"])
    data = settings.out / "data"
    counts = {"train": CALIBRATION_IMAGES, "val": settings.eval_images}
    record = data / "dataset.json"
    if record.is_file():  # a rerun into the same folder: same seed, size and enough images
        old = json.loads(record.read_text())
        if (
            old.get("kind") == task
            and old.get("seed") == seed
            and tuple(old.get("size", ())) == size
            and old["counts"]["val"]["images"] >= settings.eval_images
        ):
            say(f"reusing the synthetic dataset in {data}")
            return data
    generate = generate_panoptic if task == "panoptic" else generate_classification
    generate(data, seed=seed, size=size, progress=settings.progress, **counts)
    say(f"generated a synthetic {task} dataset in {data} (seed {seed}, {size[0]}x{size[1]})")
    return data


def _calibration_source(settings: DeploySettings, data: Path | None, task: str) -> str | None:
    if settings.calib:
        return settings.calib
    if data is None:
        return None  # quantize's synthetic source
    train = data / "images" / "train" if task == "panoptic" else data / "train"
    return str(train) if train.is_dir() else None


def choose_backend(requested: str, plugin_library: str | None) -> tuple[str | None, str, str]:
    """(backend or None, which graph it builds, why): TensorRT (rewritten graph when the plugin
    library exists, else the plain one), else TensorRT-RTX (plain graphs), else None. A backend
    asked for by name must be installed (`build.import_backend`'s error says how)."""
    from axial_deploy.build import BuildError, import_backend
    from axial_deploy.native import PLUGIN, locate

    if requested not in BACKEND_CHOICES:
        raise DeployError(f"--backend {requested!r}: use one of {', '.join(BACKEND_CHOICES)}")
    if requested == "none":
        return None, "", "engine step skipped (--backend none)"
    for backend in ("tensorrt", "tensorrt-rtx"):
        if requested not in ("auto", backend):
            continue
        try:
            import_backend(backend)
        except BuildError as error:
            if requested == backend:
                raise DeployError(f"--backend {backend}: {error}") from error
            continue
        if backend == "tensorrt-rtx":
            return backend, "plain", "TensorRT-RTX on the plain graphs (it has no plugins)"
        plugin = Path(plugin_library) if plugin_library else locate(PLUGIN).path
        if plugin and plugin.is_file():
            return backend, "axial", f"TensorRT with the AxialAttention plugin ({plugin})"
        missing = plugin or locate(PLUGIN).describe()
        return (
            backend,
            "plain",
            f"TensorRT on the plain graphs: plugin library {missing} ({PLUGIN.build_hint})",
        )
    return (
        None,
        "",
        (
            "engine step skipped: neither TensorRT nor TensorRT-RTX is installed (pip install "
            "tensorrt on a GPU machine, or pip install '.[rtx]')"
        ),
    )


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------


def deploy(settings: DeploySettings) -> dict[str, Any]:
    """Runs the pipeline into `settings.out`; returns the report (also written as
    report.json / report.html). Raises DeployError when a stage cannot go on."""
    import torch

    from axial_deploy.build import cuda_device_info
    from axial_deploy.export import compare_with_onnxruntime, export_onnx
    from axial_deploy.models import create_model, load_checkpoint, model_task
    from axial_deploy.quantize import quantize_file
    from axial_deploy.rewrite import rewrite_file
    from axial_deploy.verify import verify_models

    if settings.eval_images < 1 or settings.iterations < 1:
        raise DeployError("--eval-images and --iterations must be >= 1")
    if settings.max_drop < 0:
        raise DeployError(f"--max-drop must be >= 0, got {settings.max_drop}")
    task = model_task(settings.model)
    weights, meaningful = _weights(settings)
    shape = _input_shape(settings, weights)
    hw = (shape[2], shape[3])
    backend, build_graph, backend_reason = choose_backend(settings.backend, settings.plugin_library)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    name = settings.model
    stages = _Stages(8)
    notes: list[str] = []
    report: dict[str, Any] = {
        "model": name,
        "task": task,
        "weights": weights,
        "input_shape": list(shape),
        "precisions": list(settings.precisions),
        "settings": {k: str(v) for k, v in settings.__dict__.items()},
    }

    # 1. export (and check ONNX Runtime against PyTorch)
    stages.begin("export", f"export {name} ({weights} weights) at {'x'.join(map(str, shape))}")
    data = _dataset(settings, task, hw) if meaningful else None
    num_classes = settings.num_classes
    if weights == "pretrained":
        model = create_model(name, pretrained=True)
    else:
        if num_classes is None and data is not None:
            num_classes = _dataset_classes(data, task)
        model = create_model(name, **({"num_classes": num_classes} if num_classes else {}))
        if weights == "random":
            from axial_deploy.models.random_init import calibrate_batchnorm

            generator = torch.Generator().manual_seed(settings.seed)
            with torch.no_grad():
                calibration = torch.randn((2, *shape[1:]), generator=generator)
                calibrate_batchnorm(model, calibration, seed=settings.seed, residual_gain=0.1)
            notes.append(
                "random weights (no --checkpoint and no shipped weights): task accuracy is "
                "not measured, only numerical agreement with FP32"
            )
        else:
            load_checkpoint(model, weights)
    model.eval()
    plain = export_onnx(model, shape, out / f"{name}.onnx")
    inputs = torch.randn(shape, generator=torch.Generator().manual_seed(settings.seed))
    export_error = max(e.max_rel for e in compare_with_onnxruntime(model, plain, inputs))
    say(f"wrote {plain}; ONNX Runtime vs PyTorch max rel {export_error:.2e}")
    if export_error > 1e-3:
        raise DeployError(f"export: ONNX Runtime differs from PyTorch (max rel {export_error:.2e})")
    report["export"] = {"onnx": str(plain), "max_rel_vs_pytorch": export_error}

    # 2. rewrite
    stages.begin("rewrite", "rewrite axial-attention layers into AxialAttention nodes")
    axial = out / f"{name}.axial.onnx"
    rewrite = rewrite_file(plain, axial, report_path=out / f"{name}.rewrite.json")
    say(rewrite.summary().splitlines()[0])
    report["rewrite"] = {
        "onnx": str(axial),
        "rewritten": len(rewrite.rewritten),
        "left_intact": [{"layer": r.softmax, "reason": r.reason} for r in rewrite.left],
    }
    if rewrite.left:
        notes.append(f"{len(rewrite.left)} attention layer(s) left intact (see rewrite.json)")

    # 3. verify
    stages.begin("verify", "verify the rewritten graph against the export (ONNX Runtime)")
    check = verify_models(plain, axial, seed=settings.seed)
    worst = max(row.max_rel for row in check.rows)
    report["verify"] = {"passed": check.passed, "max_rel": worst, "rtol": check.rtol}
    say(f"{'passed' if check.passed else 'FAILED'}: max rel {worst:.2e} (tolerance {check.rtol:g})")
    if not check.passed:
        raise DeployError(
            f"verify: the rewritten graph {axial} differs from {plain} (max rel {worst:.2e}); "
            "report it with both files"
        )

    # 4. precision: every precision of both graphs
    stages.begin("precision", f"precision: {', '.join(settings.precisions)}")
    calib = _calibration_source(settings, data, task)
    if "int8" in settings.precisions and calib is None:
        notes.append(
            "INT8 calibrated on synthetic random inputs (no --calib and no train images): "
            "pass --calib DIR with real images for meaningful INT8 ranges"
        )
    variants: list[Variant] = []
    for precision in settings.precisions:
        for graph, source in (("axial", axial), ("plain", plain)):
            if precision == "fp32":
                variants.append(Variant(precision, graph, source))
                continue
            suffix = ".axial" if graph == "axial" else ""
            target = out / f"{name}{suffix}.{precision}.onnx"
            quantized = quantize_file(
                source,
                target,
                precision=precision,
                calib=calib if precision == "int8" else None,
                method=settings.calib_method,
                batches=settings.calib_batches,
                seed=settings.seed,
                progress=settings.progress,
            )
            say(quantized.summary().splitlines()[0])
            variants.append(Variant(precision, graph, target))
    references = {v.graph: v.onnx for v in variants if v.precision == "fp32"}
    for v in variants:
        if v.precision != "fp32":
            rows = verify_models(references[v.graph], v.onnx, seed=settings.seed).rows
            v.max_rel_vs_fp32 = max(row.max_rel for row in rows)
        else:
            v.max_rel_vs_fp32 = 0.0

    # 5. build
    stages.begin("build", f"build engines: {backend_reason}")
    report["engine_backend"] = backend
    if backend is not None:
        _build(settings, backend, build_graph, variants, out, name)
    gpu = cuda_device_info()[1]
    if any(v.engine.get("path") for v in variants) and gpu is None:
        notes.append(
            "engines built but not run: no GPU on this machine (run `axial-deploy evaluate` "
            "and `axial-deploy profile` on the engines on the target)"
        )

    # 6. accuracy: task metric per variant (and engine, on a GPU), the gate, panels
    stages.begin("accuracy", "task accuracy per variant and the accuracy gate")
    report["accuracy"] = _accuracy(
        settings, task, weights, model, data, variants, report, notes, run_engines=bool(gpu)
    )

    # 7. profile
    stages.begin("profile", "profile latency (ONNX Runtime on this CPU; engines on a GPU)")
    _profile(settings, variants, gpu)

    # 8. report
    stages.begin("report", "write the report")
    stages.end()
    report["stages_s"] = stages.seconds
    report["variants"] = [v.to_json() for v in variants]
    report["environment"] = _environment(backend)
    report["notes"] = notes
    json_path, html_path = out / "report.json", out / "report.html"
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    with atomic_output(html_path) as tmp:
        tmp.write_text(render_report_html(report))
    print(summary_table(report))
    say(f"wrote {json_path} and {html_path}")
    return report


def _dataset_classes(data: Path, task: str) -> int:
    from axial_deploy.coco_panoptic import load_split, split_paths
    from axial_deploy.evaluate import classification_samples

    if task == "panoptic":
        return len(load_split(split_paths(data, "val")[0]).categories)
    return len(classification_samples(data, "val")[1])


def _accuracy(
    settings, task, weights, model, data, variants, report, notes, run_engines: bool
) -> dict[str, Any]:
    """Evaluates PyTorch, every variant and (on a GPU) every engine on the val split; gate
    and panels into the report."""
    from axial_deploy.evaluate import accuracy_gate, comparison_table, evaluate
    from axial_deploy.models import pretrained_record
    from axial_deploy.models.postprocess import PanopticConfig

    if data is None:
        say("skipped: random weights (pass --checkpoint or use a model with shipped weights)")
        return {"skipped": "random weights"}
    postprocess = None
    if task == "panoptic" and weights == "pretrained":  # the settings its PQ was recorded with
        recorded = pretrained_record(settings.model).get("postprocess")
        postprocess = PanopticConfig(**recorded) if recorded else None
    predictions = settings.out / "predictions"
    common = dict(
        limit=settings.eval_images,
        input_hw=tuple(report["input_shape"][2:]),
        postprocess=postprocess,
        progress=settings.progress,
    )
    targets = [("pytorch", model)] + [(v.label, v.onnx) for v in variants]
    if run_engines:
        built = [v for v in variants if v.engine.get("path")]
        targets += [(f"{v.label}-engine", v.engine["path"]) for v in built]
    results = {}
    for label, target in targets:
        try:
            results[label] = evaluate(target, data, predictions_dir=predictions / label, **common)
        except (ImportError, RuntimeError, ValueError) as error:
            if not label.endswith("-engine"):
                raise
            notes.append(f"{label}: not evaluated: {error}")
    print(comparison_table(results))
    gate = accuracy_gate(results, reference="fp32", max_drop=settings.max_drop)
    print(gate.summary())
    rows = {row.label: row for row in gate.rows}
    for v in variants:
        v.accuracy = results[v.label].metrics
        v.drop, v.flagged = rows[v.label].drop, rows[v.label].flagged
        if f"{v.label}-engine" in results:
            row = rows[f"{v.label}-engine"]
            v.engine.update(accuracy=results[row.label].metrics, drop=row.drop, flagged=row.flagged)
    section: dict[str, Any] = {
        "data": str(data),
        "images": results["fp32"].images,
        "pytorch": results["pytorch"].metrics,
        "gate": gate.to_json(),
    }
    if task == "panoptic" and settings.panels > 0:
        from axial_deploy.panels import render_panels

        shown = [v.label for v in variants if v.graph == "axial"]
        paths = render_panels(
            data,
            {label: predictions / label for label in shown},
            settings.out / "panels",
            count=settings.panels,
        )
        section["panels"] = [str(p) for p in paths]
        say(f"wrote {len(paths)} prediction panels to {settings.out / 'panels'}")
    if not gate.passed:
        notes.append(f"accuracy gate FAILED: a drop above {settings.max_drop:g} points")
    return section


def _build(settings, backend, build_graph, variants, out, name) -> None:
    from axial_deploy.build import BuildError, BuildOptions, build_engine

    for v in variants:
        if v.graph != build_graph:
            continue
        engine = out / f"{name}.{v.label}.{backend}.engine"
        options = BuildOptions(
            backend=backend,
            plugin_library=settings.plugin_library,  # build_engine defaults it
            progress=settings.progress,
        )
        try:
            manifest = build_engine(v.onnx, engine, options)
        except BuildError as error:
            v.engine = {"backend": backend, "error": str(error)}
            say(f"{v.label}: not built: {error}")
            continue
        size_mb = engine.stat().st_size / 2**20
        v.engine = {
            "backend": backend,
            "path": str(engine),
            "build_s": manifest.build_seconds,
            "size_mb": round(size_mb, 3),
            "precision": manifest.precision,
        }
        say(f"{v.label}: {engine.name} ({size_mb:.1f} MiB) in {manifest.build_seconds:.1f} s")


def _profile(settings, variants, gpu: str | None) -> None:
    from axial_deploy.profile import profile_engine
    from axial_deploy.runtime import Engine, EngineError

    for v in variants:
        with Engine(v.onnx) as engine:  # closed before the next one opens
            result = profile_engine(
                engine,
                warmup_s=0.2,
                iterations=settings.iterations,
                seed=settings.seed,
                progress=False,
            )
        v.cpu_latency = result.to_dict()
        say(f"{v.label:<12} ONNX Runtime CPU mean {result.latency.mean_ms:8.2f} ms")
    engines = [v for v in variants if v.engine.get("path")]
    if engines and gpu is None:
        say("engines not profiled: no GPU here")
        return
    for v in engines:
        try:
            # closed (device/pinned buffers, stream) before the next engine opens
            with Engine(v.engine["path"]) as engine:
                result = profile_engine(
                    engine,
                    warmup_s=1.0,
                    iterations=max(settings.iterations, 100),
                    progress=False,
                )
        except (EngineError, ImportError, RuntimeError) as error:
            v.engine["latency_error"] = str(error)
            say(f"{v.label}: engine not profiled: {error}")
            continue
        v.engine["latency"] = result.to_dict()
        say(f"{v.label:<12} {v.engine['backend']} on {gpu} mean {result.latency.mean_ms:.3f} ms")


def _environment(backend: str | None) -> dict[str, Any]:
    import platform

    import onnxruntime
    import torch

    from axial_deploy.build import running_environment

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if backend:
        info = running_environment(backend)
        env.update(
            engine_backend=backend,
            tensorrt_version=info.tensorrt_version,
            cuda_version=info.cuda_version,
            gpu=info.gpu_name,
            sm=info.sm,
        )
    return env


# --------------------------------------------------------------------------------------
# Report rendering
# --------------------------------------------------------------------------------------


def _cell(value, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _report_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: accuracy, its drop, output error and latency per variant."""
    primary = "PQ" if report["task"] == "panoptic" else "top1"
    header = ["variant", primary, "drop", "gate", "max rel vs fp32", "CPU mean ms", "CPU p95 ms",
              "engine", f"engine {primary}", "engine ms"]  # fmt: skip
    rows = []
    for v in report["variants"]:
        engine = v["engine"]
        built = (
            f"{engine['size_mb']:.1f} MiB, {engine['build_s']:.1f} s"
            if engine.get("path")
            else ("failed" if engine.get("error") else "-")
        )
        latency = engine["latency"]["latency"]["mean_ms"] if "latency" in engine else None
        cpu = v["cpu_latency"]["latency"]
        gate = "-" if v["drop"] is None else ("FLAGGED" if v["flagged"] else "ok")
        rows.append([
            v["label"], _cell(v["accuracy"].get(primary)), _cell(v["drop"], "{:+.2f}"), gate,
            _cell(v["max_rel_vs_fp32"], "{:.1e}"), _cell(cpu["mean_ms"]),
            _cell(cpu["p95_ms"]), built,
            _cell(engine.get("accuracy", {}).get(primary)), _cell(latency, "{:.3f}"),
        ])  # fmt: skip
    return header, rows


def summary_table(report: dict[str, Any]) -> str:
    header, rows = _report_rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        rest = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report_html(report: dict[str, Any]) -> str:
    from axial_deploy.panels import panels_html
    from axial_deploy.report import histogram_svg, html_page

    shape = "x".join(map(str, report["input_shape"]))
    env = report["environment"]
    accuracy = report.get("accuracy", {})
    body = [
        f"<h1>axial-deploy: {html.escape(report['model'])}</h1>",
        f"<p>{html.escape(report['task'])} model, {html.escape(report['weights'])} weights, "
        f"input {shape}; rewrite: {report['rewrite']['rewritten']} AxialAttention layers, "
        f"verify max rel {report['verify']['max_rel']:.1e}; engines: "
        f"{html.escape(str(report['engine_backend'] or 'not built'))}</p>",
        *(f"<p><b>note:</b> {html.escape(note)}</p>" for note in report["notes"]),
        "<h2>Accuracy and latency per variant</h2>",
        _table_html(*_report_rows(report)),
        "<p>variant: precision of the rewritten graph (AxialAttention nodes, what TensorRT "
        "builds with the plugin); '-plain': the same precision of the plain export (what "
        "TensorRT-RTX builds). CPU latency: ONNX Runtime on "
        f"{html.escape(str(env.get('cpu')))} ({env.get('cpu_count')} cores), a reference only; "
        "rewritten graphs run the AxialAttention reference op there (plain ONNX ops, unfused), "
        "so their CPU time says nothing about the plugin. Engine columns: TensorRT / "
        "TensorRT-RTX engines, evaluated and timed only where a GPU is present.</p>",
    ]
    if "gate" in accuracy:
        gate = accuracy["gate"]
        verdict = "PASSED" if gate["passed"] else "FAILED"
        body.append(
            f"<p>accuracy gate: {gate['metric']} drop vs {gate['reference']} &le; "
            f"{gate['max_drop']:g} points on {accuracy['images']} held-out images: "
            f"<b>{verdict}</b>; PyTorch FP32: "
            + ", ".join(f"{k} {v:.2f}" for k, v in accuracy["pytorch"].items())
            + "</p>"
        )
    if accuracy.get("panels"):
        title = "Input, ground truth and prediction per precision"
        body.append(panels_html(accuracy["panels"], title))
    body.append("<h2>CPU latency histograms (ONNX Runtime)</h2>")
    for v in report["variants"]:
        body.append(f"<h3>{html.escape(v['label'])}</h3>")
        body.append(histogram_svg(v["cpu_latency"]["latencies_ms"]))
        if "latency" in v["engine"]:
            body.append(f"<h3>{html.escape(v['label'])} engine</h3>")
            body.append(histogram_svg(v["engine"]["latency"]["latencies_ms"]))
    stage_rows = [[k, f"{s:.1f}"] for k, s in report["stages_s"].items()]
    body += ["<h2>Stages</h2>", _table_html(["stage", "seconds"], stage_rows)]
    env_rows = [[k, str(v)] for k, v in env.items()]
    body += ["<h2>Environment</h2>", _table_html(["", ""], env_rows)]
    return html_page(f"axial-deploy {report['model']}", body)
