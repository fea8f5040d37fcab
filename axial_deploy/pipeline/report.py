"""Every report the toolkit writes: JSON for machines, one self-contained HTML file (inline
SVG) for people, and the console tables.

- `profile`: `write_json` / `write_html` of a `ProfileResult`;
- `deploy`: `write_deploy_report` (report.json from `DeployReport.to_json()`, report.html from
  `render_deploy_html`) and `deploy_summary_table`, the console table.

Both pages share `html_page`, `table_html` and `histogram_svg`.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from axial_deploy.artifacts import atomic_output, write_json
from axial_deploy.engine.profile import ProfileResult
from axial_deploy.progress import text_table

if TYPE_CHECKING:
    from axial_deploy.pipeline.records import DeployReport, EngineResult, Variant

WIDTH, HEIGHT, MARGIN = 640, 240, 40


def histogram_svg(latencies_ms: list[float], bins: int = 30) -> str:
    """Latency histogram as an inline SVG (x: ms, y: count)."""
    counts, edges = np.histogram(np.asarray(latencies_ms, dtype=np.float64), bins=bins)
    top = max(int(counts.max()), 1)
    bar_w = (WIDTH - 2 * MARGIN) / len(counts)
    rects = []
    for i, count in enumerate(counts):
        h = (HEIGHT - 2 * MARGIN) * count / top
        x = MARGIN + i * bar_w
        title = f"{edges[i]:.3f}-{edges[i + 1]:.3f} ms: {count}"
        rects.append(
            f'<rect x="{x:.1f}" y="{HEIGHT - MARGIN - h:.1f}" width="{bar_w - 1:.1f}" '
            f'height="{h:.1f}" fill="#4e79a7"><title>{title}</title></rect>'
        )
    labels = (
        f'<text x="{MARGIN}" y="{HEIGHT - 10}">{edges[0]:.3f} ms</text>'
        f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - 10}" text-anchor="end">{edges[-1]:.3f} ms</text>'
        f'<text x="{MARGIN}" y="{MARGIN - 10}">count (max {top})</text>'
    )
    return (
        f'<svg class="histogram" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" font-size="11">{"".join(rects)}{labels}</svg>'
    )


def bar_chart_svg(rows: list[tuple[str, float]], limit: int = 25) -> str:
    """Horizontal bars (name, ms), slowest first, as an inline SVG."""
    rows = rows[:limit]
    row_h, label_w = 18, 260
    height = row_h * len(rows) + 20
    top = max((ms for _, ms in rows), default=1.0) or 1.0
    parts = []
    for i, (name, ms) in enumerate(rows):
        y = 10 + i * row_h
        w = (WIDTH - label_w - 80) * ms / top
        color = "#e15759" if name == "AxialAttention" or "axial_attention" in name else "#59a14f"
        short = name if len(name) <= 40 else name[:37] + "..."
        parts.append(
            f'<text x="{label_w - 5}" y="{y + 12}" text-anchor="end">{html.escape(short)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h - 4}" fill="{color}">'
            f"<title>{html.escape(name)}: {ms:.4f} ms</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{ms:.3f} ms</text>'
        )
    return (
        f'<svg class="bars" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" font-size="11">{"".join(parts)}</svg>'
    )


def render_html(result: ProfileResult) -> str:
    stats = result.latency
    rows = [
        ("min", stats.min_ms),
        ("mean", stats.mean_ms),
        ("median", stats.median_ms),
        ("p90", stats.p90_ms),
        ("p95", stats.p95_ms),
        ("p99", stats.p99_ms),
        ("max", stats.max_ms),
    ]
    table = "".join(f"<tr><td>{k}</td><td>{v:.4f} ms</td></tr>" for k, v in rows)
    body = [
        f"<h1>Profile of {html.escape(result.model)}</h1>",
        f"<p>backend {html.escape(result.backend)}, batch {stats.batch}, {stats.count} runs "
        f"after {result.warmup_s:g} s warm-up; throughput "
        f"<b>{stats.throughput_per_s:.1f}</b> samples/s</p>",
        f"<table>{table}</table>",
        "<h2>Latency histogram</h2>",
        histogram_svg(result.latencies_ms),
    ]
    if result.split_ms:
        split = ", ".join(f"{k} {v:.4f} ms" for k, v in result.split_ms.items())
        body.append(f"<p>mean split: {html.escape(split)}</p>")
    if result.layers is not None:
        layers = result.layers
        body += [
            "<h2>Time per model block</h2>",
            f"<p>AxialAttention plugin: {layers.axial_attention_ms:.4f} ms of "
            f"{layers.total_ms:.4f} ms ({100 * layers.axial_attention_share:.1f} %)</p>",
            bar_chart_svg([(b, ms) for b, ms, _ in layers.blocks]),
            "<h2>Slowest layers</h2>",
            bar_chart_svg(layers.layers),
        ]
    for note in result.notes:
        body.append(f"<p><i>{html.escape(note)}</i></p>")
    return html_page("axial-deploy profile", body)


def html_page(title: str, body: list[str]) -> str:
    """One self-contained HTML page (the profile and deploy reports share its look)."""
    style = (
        "body{font-family:sans-serif;margin:2em}td,th{padding:2px 12px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}table{border-collapse:collapse}"
        "tr:nth-child(even){background:#f4f4f4}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_html(result: ProfileResult, path: str | os.PathLike) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(render_html(result))
    return Path(path)


def table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


# --------------------------------------------------------------------------------------
# The deploy report
# --------------------------------------------------------------------------------------


def write_deploy_report(report: DeployReport, out: str | os.PathLike) -> tuple[Path, Path]:
    """report.json and report.html in `out`, each written atomically."""
    json_path, html_path = Path(out) / "report.json", Path(out) / "report.html"
    write_json(json_path, report.to_json())
    with atomic_output(html_path) as tmp:
        tmp.write_text(render_deploy_html(report))
    return json_path, html_path


def _cell(value, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _primary(report: DeployReport) -> str:
    return "PQ" if report.plan.task == "panoptic" else "top1"


def deploy_rows(report: DeployReport) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: accuracy, its drop, output error and latency per variant."""
    primary = _primary(report)
    header = ["variant", primary, "drop", "gate", "max rel vs fp32", "CPU mean ms", "CPU p95 ms",
              "engine", f"engine {primary}", "engine ms"]  # fmt: skip
    return header, [_variant_row(v, primary) for v in report.variants]


def _variant_row(v: Variant, primary: str) -> list[str]:
    cpu = v.cpu_latency.latency if v.cpu_latency else None
    gate = "-" if v.drop is None else ("FLAGGED" if v.flagged else "ok")
    return [
        v.label, _cell(v.accuracy.get(primary)), _cell(v.drop, "{:+.2f}"), gate,
        _cell(v.max_rel_vs_fp32, "{:.1e}"), _cell(cpu.mean_ms if cpu else None),
        _cell(cpu.p95_ms if cpu else None), *_engine_cells(v.engine, primary),
    ]  # fmt: skip


def _engine_cells(engine: EngineResult | None, primary: str) -> list[str]:
    if engine is None:
        return ["-", "-", "-"]
    built = (
        f"{engine.size_mb:.1f} MiB, {engine.build_s:.1f} s"
        if engine.path
        else ("failed" if engine.error else "-")
    )
    latency = engine.latency.latency.mean_ms if engine.latency else None
    return [built, _cell((engine.accuracy or {}).get(primary)), _cell(latency, "{:.3f}")]


def deploy_summary_table(report: DeployReport) -> str:
    return text_table(*deploy_rows(report))


def render_deploy_html(report: DeployReport) -> str:
    env = report.environment
    body = [
        f"<h1>axial-deploy: {html.escape(report.plan.model)}</h1>",
        _deploy_intro(report),
        *(f"<p><b>note:</b> {html.escape(note)}</p>" for note in report.notes),
        "<h2>Accuracy and latency per variant</h2>",
        table_html(*deploy_rows(report)),
        "<p>variant: precision of the rewritten graph (AxialAttention nodes, what TensorRT "
        "builds with the plugin); '-plain': the same precision of the plain export (what "
        "TensorRT-RTX builds). FP8 (E4M3) engines need a GPU of compute capability 8.9 or "
        "newer (Ada, Hopper, Blackwell, Thor). CPU latency: ONNX Runtime on "
        f"{html.escape(str(env.cpu))} ({env.cpu_count} cores), a reference only; "
        "rewritten graphs run the AxialAttention reference op there (plain ONNX ops, unfused), "
        "so their CPU time says nothing about the plugin. Engine columns: TensorRT / "
        "TensorRT-RTX engines, evaluated and timed only where a GPU is present.</p>",
        *_accuracy_html(report),
        "<h2>CPU latency histograms (ONNX Runtime)</h2>",
    ]
    for v in report.variants:
        if v.cpu_latency:
            body.append(f"<h3>{html.escape(v.label)}</h3>")
            body.append(histogram_svg(v.cpu_latency.latencies_ms))
        if v.engine and v.engine.latency:
            body.append(f"<h3>{html.escape(v.label)} engine</h3>")
            body.append(histogram_svg(v.engine.latency.latencies_ms))
    stage_rows = [[k, f"{s:.1f}"] for k, s in report.stages_s.items()]
    body += ["<h2>Stages</h2>", table_html(["stage", "seconds"], stage_rows)]
    env_rows = [[k, str(v)] for k, v in env.to_json().items()]
    body += ["<h2>Environment</h2>", table_html(["", ""], env_rows)]
    return html_page(f"axial-deploy {report.plan.model}", body)


def _deploy_intro(report: DeployReport) -> str:
    plan = report.plan
    shape = "x".join(map(str, plan.input_shape))
    return (
        f"<p>{html.escape(plan.task)} model, {html.escape(plan.weights)} weights, "
        f"input {shape}; rewrite: {report.rewrite.rewritten} AxialAttention layers, "
        f"verify max rel {report.verify.max_rel:.1e}; engines: "
        f"{html.escape(str(report.engine_backend or 'not built'))}</p>"
    )


def _accuracy_html(report: DeployReport) -> list[str]:
    """The gate's verdict and the prediction panels (nothing when accuracy was skipped)."""
    from axial_deploy.evaluation.panels import panels_html

    accuracy, parts = report.accuracy, []
    if accuracy.gate is not None:
        gate = accuracy.gate
        verdict = "PASSED" if gate.passed else "FAILED"
        parts.append(
            f"<p>accuracy gate: {gate.metric} drop vs {gate.reference} &le; "
            f"{gate.max_drop:g} points on {accuracy.images} held-out images: "
            f"<b>{verdict}</b>; PyTorch FP32: "
            + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.pytorch.items())
            + "</p>"
        )
    if accuracy.panels:
        title = "Input, ground truth and prediction per precision"
        parts.append(panels_html([str(p) for p in accuracy.panels], title))
    return parts
