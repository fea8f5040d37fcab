"""Quantization to an accuracy budget (issue 26 item 2): the table of budget, achieved drop,
layers kept and share of multiply-adds still quantized, on two cases.

    .venv/bin/python benchmarks/precision_budget.py [--eval-images 50] [-o out/precision-budget]

- **tiny**: the trained `axial_deeplab_tiny` (shipped weights), rewritten, on its held-out
  synthetic val split (generated as `deploy` generates it), INT8 calibrated on 16 train
  images as `deploy` does, with strict budgets (its plain INT8 drop is a fraction of a point).
- **range-sensitive**: the same trained model made range-sensitive on purpose, with known
  sensitive layers. For each of three Conv -> ReLU -> Conv pairs, a quarter of the first
  Conv's output channels is scaled by 1000 and the second Conv's weights on those channels
  divided by 1000. ReLU is positively homogeneous, so FP32 computes the same function (the
  FP32 PQ is the tiny model's), but one per-tensor INT8 scale for the second Conv's input
  can no longer resolve the other channels: the three second Convs are the layers to keep.

Each row is one `quantize_to_budget` run (calibration, FP32 and plain INT8 PQ, layer-wise
ranking, search), the same as `axial-deploy quantize --precision int8 --max-drop D --data DIR`
with the post-processing recorded with the shipped weights (as `deploy` evaluates them).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from axial_deploy.budget import BudgetReport, BudgetSettings, quantize_to_budget
from axial_deploy.progress import text_table

MODEL = "axial_deeplab_tiny"
# (first Conv, second Conv): the second reads the first's ReLU output and nothing else does.
SENSITIVE_PAIRS = (
    ("/backbone/stem/conv1/conv1.0/Conv", "/backbone/stem/conv2/conv2.0/Conv"),
    (
        "/semantic_decoder/fuse_s8/fuse_s8.0/fuse_s8.0.0/Conv",
        "/semantic_decoder/fuse_s8/fuse_s8.1/fuse_s8.1.0/Conv",
    ),
    ("/semantic_head/conv/conv.1/conv.1.0/Conv", "/semantic_head/predict/Conv"),
)
SCALE = 1000.0


def prepare(out: Path, eval_images: int) -> tuple[Path, Path, Path]:
    """(rewritten FP32 graph, dataset, calibration images), made by deploy's own stages."""
    from axial_deploy.pipeline.deploy import (
        DeploySettings,
        export_stage,
        plan_deploy,
        prepare_dataset,
        rewrite_stage,
        setup_model,
    )

    settings = DeploySettings(model=MODEL, out=out, eval_images=eval_images, progress=False)
    plan = plan_deploy(settings)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    data = prepare_dataset(settings, plan)
    graph = out / f"{MODEL}.axial.onnx"
    if not graph.is_file():
        model = setup_model(settings, plan, data, notes)
        export = export_stage(settings, plan, model)
        graph = rewrite_stage(settings, plan, export, notes).onnx
    return graph, data, data / "images" / "train"


def range_sensitive(source: Path, target: Path) -> list[str]:
    """Writes the range-sensitive variant (module doc); returns the second Convs."""
    model = onnx.load(str(source))
    nodes = {node.name: node for node in model.graph.node}
    weights = {init.name: init for init in model.graph.initializer}

    def scale(name: str, index, factor: float, axis: int) -> None:
        array = numpy_helper.to_array(weights[name]).copy()
        view = np.moveaxis(array, axis, 0)
        view[index] *= factor
        weights[name].CopyFrom(numpy_helper.from_array(array, name))

    for first, second in SENSITIVE_PAIRS:
        conv1, conv2 = nodes[first], nodes[second]
        if int(next((a.i for a in conv2.attribute if a.name == "group"), 1)) != 1:
            raise ValueError(f"{second} is a grouped Conv: pick another pair")
        channels = weights[conv1.input[1]].dims[0]
        outliers = np.arange(max(channels // 4, 1))
        scale(conv1.input[1], outliers, SCALE, 0)
        if len(conv1.input) > 2:
            scale(conv1.input[2], outliers, SCALE, 0)
        scale(conv2.input[1], outliers, 1 / SCALE, 1)
    onnx.save(model, str(target))
    return [second for _, second in SENSITIVE_PAIRS]


def cached_pq(data: Path, eval_images: int):
    """`budget.task_metric` (PQ, the recorded post-processing) memoized on the graph's bytes:
    the rows of one case share FP32, the plain INT8 graph (calibration is deterministic) and
    every prefix both searches try, so each distinct graph is evaluated once."""
    from axial_deploy.budget import task_metric
    from axial_deploy.models import pretrained_record

    postprocess = pretrained_record(MODEL).postprocess_config()
    metric, _ = task_metric(data, limit=eval_images, postprocess=postprocess)
    scores: dict[str, float] = {}

    def pq(path) -> float:
        key = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if key not in scores:
            scores[key] = metric(path)
        return scores[key]

    return pq


def run(case: str, graph: Path, data: Path, calib: Path, budget: float, out: Path, pq,
        eval_images: int) -> BudgetReport:  # fmt: skip
    tag = f"{budget:g}".replace(".", "p")
    settings = BudgetSettings(
        precision="int8",
        max_drop=budget,
        data=data,
        eval_images=eval_images,  # what `pq` evaluates; recorded
        calib=str(calib),
        batches=16,  # deploy's default calibration
        progress=True,
    )
    report = quantize_to_budget(
        graph, out / f"{case}.int8.budget{tag}.onnx", settings, metric=pq, metric_name="PQ"
    )
    print(report.summary(), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/precision-budget", type=Path)
    parser.add_argument("--eval-images", type=int, default=50)
    parser.add_argument("--tiny-budgets", default="0.1,0.02", help="comma-separated points")
    parser.add_argument("--sensitive-budgets", default="1,0.1", help="comma-separated points")
    args = parser.parse_args()
    start = time.perf_counter()
    graph, data, calib = prepare(args.output, args.eval_images)
    sensitive = args.output / f"{MODEL}.range_sensitive.axial.onnx"
    known = range_sensitive(graph, sensitive)
    pq = cached_pq(data, args.eval_images)
    cases = [("range-sensitive", sensitive, args.sensitive_budgets),
             ("tiny", graph, args.tiny_budgets)]  # fmt: skip
    rows = []
    for case, path, budgets in cases:
        for budget in (float(b) for b in budgets.split(",")):
            report = run(case, path, data, calib, budget, args.output, pq, args.eval_images)
            kept = [layer.node for layer in report.kept]
            found = sum(name in known for name in kept) if case == "range-sensitive" else None
            rows.append([
                case, f"{budget:g}", f"{report.reference:.2f}", f"{report.plain_drop:+.2f}",
                f"{report.drop:+.2f}", "yes" if report.met else "NO",
                f"{len(kept)}/{report.layers}"
                + (f" ({found} of {len(known)} known)" if found is not None else ""),
                f"{report.macs_quantized_plain / report.macs_total:.1%}",
                f"{report.share_quantized:.1%}", str(len(report.steps)),
                f"{report.seconds:.0f}",
            ])  # fmt: skip
    header = ["case", "budget", "FP32 PQ", "plain INT8 drop", "achieved drop", "met",
              "layers kept", "MACs INT8 (plain)", "MACs INT8 (budget)", "evals", "s"]  # fmt: skip
    print(f"\n{MODEL}, {args.eval_images} val images, PQ in points; MACs: Conv / Gemm / MatMul / "
          "AxialAttention multiply-adds (the attention never runs in INT8)")  # fmt: skip
    print(text_table(header, rows))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
