"""Profile reports: JSON for machines, one self-contained HTML file (inline SVG) for people."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from axial_deploy.artifacts import atomic_output
from axial_deploy.profile import ProfileResult

WIDTH, HEIGHT, MARGIN = 640, 240, 40


def write_json(result: ProfileResult, path: str | os.PathLike) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return Path(path)


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
