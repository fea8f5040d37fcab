"""Visual panels: for a few held-out images, the input, the ground truth and each target's
predicted panoptic segmentation side by side, so a precision's damage is seen at a glance.

One PNG per image: [input | ground truth | prediction of target 1 | ...], each tile captioned
in a strip above it. Segments are drawn in their category's color, instances of a thing
category in lighter / darker shades of it, over the dimmed input, with white boundaries.
`panels_html` embeds the PNGs (base64) in a small HTML fragment the deploy report includes.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from axial_deploy.artifacts import atomic_output
from axial_deploy.datasets.coco_panoptic import VOID_ID, load_split, read_segment_png, split_paths
from axial_deploy.models.preprocess import open_image

CAPTION_HEIGHT = 14  # pixels of the caption strip above each tile
ALPHA = 0.6  # weight of the segment color over the input image


def _category_color(category: dict, index: int) -> np.ndarray:
    if "color" in category:
        return np.asarray(category["color"][:3], np.float64)
    # No color in the JSON: a fixed, well-spread hue per category index.
    rng = np.random.default_rng(index)
    return rng.integers(40, 256, 3).astype(np.float64)


def overlay(image: np.ndarray, ids: np.ndarray, segments: list[dict], categories: list[dict]):
    """[H, W, 3] uint8 image, [H, W] COCO segment ids -> the colored overlay (uint8)."""
    by_id = {int(c["id"]): (i, c) for i, c in enumerate(categories)}
    colors = np.zeros((*ids.shape, 3), np.float64)
    painted = np.zeros(ids.shape, bool)
    instance_count: dict[int, int] = {}
    for segment in segments:
        mask = ids == segment["id"]
        if segment["category_id"] not in by_id or not mask.any():
            continue
        index, category = by_id[segment["category_id"]]
        color = _category_color(category, index)
        if category.get("isthing", 0):
            # Instance k of a category: alternate lighter and darker shades of its color.
            k = instance_count.get(index, 0)
            instance_count[index] = k + 1
            shade = (0.0, 0.35, -0.35, 0.6, -0.6)[k % 5]
            color = color + shade * (255 - color) if shade > 0 else color * (1 + shade)
        colors[mask] = color
        painted |= mask
    base = image.astype(np.float64) * 0.5  # dim the input so the colors stand out
    out = np.where(painted[..., None], (1 - ALPHA) * image + ALPHA * colors, base)
    edge = np.zeros(ids.shape, bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    out[edge] = 255
    return out.clip(0, 255).astype(np.uint8)


def _tile(image: np.ndarray, caption: str) -> Image.Image:
    height, width = image.shape[:2]
    tile = Image.new("RGB", (width, height + CAPTION_HEIGHT), (32, 32, 32))
    tile.paste(Image.fromarray(image), (0, CAPTION_HEIGHT))
    ImageDraw.Draw(tile).text((2, 1), caption, fill=(255, 255, 255))
    return tile


def render_panels(
    data_dir: str | Path,
    predictions: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    split: str = "val",
    count: int = 4,
) -> list[Path]:
    """Writes `out_dir`/panel_NAME.png for the first `count` images of the split.

    `predictions` maps a label (e.g. "fp32") to a folder holding `panoptic_pred.json` and
    `panoptic_pred/` (what `evaluate(..., predictions_dir=...)` writes). Each PNG is
    (2 + len(predictions)) ground-truth widths wide and the ground-truth height plus a
    caption strip high.
    """
    json_path, segments_dir, images_dir = split_paths(data_dir, split)
    gt = load_split(json_path, segments_dir)
    preds = {}
    for label, folder in predictions.items():
        split_data = load_split(Path(folder) / "panoptic_pred.json")
        preds[label] = (split_data, {a["image_id"]: a for a in split_data.annotations})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ann in gt.annotations[:count]:
        gt_ids = read_segment_png(gt.segment_png(ann))
        height, width = gt_ids.shape
        with open_image(gt.image_file(images_dir, ann)) as image:
            rgb = np.asarray(image.convert("RGB").resize((width, height)))
        tiles = [
            _tile(rgb, "input"),
            _tile(overlay(rgb, gt_ids, ann["segments_info"], gt.categories), "ground truth"),
        ]
        for label, (split_data, by_image) in preds.items():
            pred_ann = by_image.get(ann["image_id"])
            if pred_ann is None:
                pred_ids, segments = np.full(gt_ids.shape, VOID_ID), []
            else:
                pred_ids = read_segment_png(split_data.segment_png(pred_ann))
                segments = pred_ann["segments_info"]
            tiles.append(_tile(overlay(rgb, pred_ids, segments, gt.categories), label))
        row = Image.new("RGB", (width * len(tiles), height + CAPTION_HEIGHT))
        for i, tile in enumerate(tiles):
            row.paste(tile, (i * width, 0))
        path = out_dir / f"panel_{Path(ann['file_name']).stem}.png"
        with atomic_output(path) as tmp:
            row.save(tmp, format="PNG")
        written.append(path)
    return written


def panels_html(paths: Sequence[str | Path], title: str = "Predictions") -> str:
    """An HTML fragment showing the panel PNGs, embedded as base64 (self-contained)."""
    parts = [f"<section class='panels'><h2>{html.escape(title)}</h2>"]
    for path in paths:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        name = html.escape(Path(path).stem.removeprefix("panel_"))
        parts.append(
            f"<figure><img alt='{name}' src='data:image/png;base64,{data}' "
            f"style='max-width:100%;image-rendering:pixelated'><figcaption>{name}</figcaption>"
            "</figure>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def write_panels_html(paths: Sequence[str | Path], out: str | Path, title: str) -> Path:
    """A standalone HTML page around `panels_html`, written atomically."""
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body>{panels_html(paths, title)}</body></html>\n"
    )
    with atomic_output(out) as tmp:
        tmp.write_text(page)
    return Path(out)
