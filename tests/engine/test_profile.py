"""Profile statistics on known series, block attribution, and the JSON / HTML reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from engine_helpers import conv_net

from axial_deploy.cli import main
from axial_deploy.engine.profile import ProfileResult, block_of, latency_stats, layer_table
from axial_deploy.pipeline.report import render_html


def test_statistics_of_a_known_series():
    # 1, 2, ..., 100 ms shuffled: order must not matter.
    series = np.random.default_rng(0).permutation(np.arange(1, 101, dtype=float))
    stats = latency_stats(series, batch=4)
    assert (stats.count, stats.min_ms, stats.max_ms) == (100, 1.0, 100.0)
    assert stats.mean_ms == 50.5 and stats.median_ms == 50.5
    # linear interpolation: rank q * (n - 1) between sorted neighbours
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p95_ms == pytest.approx(95.05)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.std_ms == pytest.approx(np.sqrt((100**2 - 1) / 12))
    # 400 samples in 5.05 s of back-to-back inference
    assert stats.throughput_per_s == pytest.approx(400 / 5.05)


def test_constant_series_and_bad_series():
    stats = latency_stats([2.0] * 7)
    assert stats.min_ms == stats.p99_ms == stats.max_ms == 2.0 and stats.std_ms == 0
    assert stats.throughput_per_s == pytest.approx(500.0)
    for bad in ([], [1.0, -1.0], [float("nan")]):
        with pytest.raises(ValueError):
            latency_stats(bad)


def test_layers_attribute_to_blocks():
    assert block_of("/layer1/layer1.0/conv1/Conv + /layer1/layer1.0/relu/Relu") == "layer1"
    assert block_of("axial_attention_12") == "AxialAttention"
    assert block_of("/stem/conv/Conv + axial_attention_3") == "AxialAttention"
    assert block_of("Reformatting CopyNode for Input Tensor 0 to /stem/conv/Conv") == "(reformat)"
    table = layer_table(
        {
            "/stem/conv/Conv": [1.0, 3.0],
            "axial_attention_0": [4.0, 4.0],
            "axial_attention_1": [2.0],
            "/layer1/conv/Conv": [0.5, 0.5],
        }
    )
    assert table.total_ms == 8.5
    assert table.axial_attention_ms == 6.0
    assert table.axial_attention_share == pytest.approx(6 / 8.5)
    assert [b for b, _, _ in table.blocks] == ["AxialAttention", "stem", "layer1"]
    assert table.layers[0] == ("axial_attention_0", 4.0)


def test_plugin_layers_count_in_their_block_and_as_the_plugin_share():
    blocks = {"axial_attention_0": "layer1", "axial_attention_1": "layer2"}
    assert block_of("axial_attention_0", blocks) == "layer1"
    assert block_of("axial_attention_1/qkv_conv", blocks) == "layer2"
    assert block_of("axial_attention_7/qkv_conv") == "AxialAttention"
    table = layer_table(
        {
            "/layer1/conv/Conv": [1.0],
            "axial_attention_0/qkv_conv": [0.5],
            "axial_attention_0": [2.0],
            "axial_attention_1": [4.0],
            "/fc/Gemm": [0.5],
        },
        blocks,
    )
    assert dict((b, ms) for b, ms, _ in table.blocks) == {"layer1": 3.5, "layer2": 4.0, "fc": 0.5}
    assert table.axial_attention_ms == 6.0 and table.axial_attention_share == 0.75


def test_html_report_has_both_charts():
    result = ProfileResult(
        "m.engine", "tensorrt", latency_stats([1.0, 2.0, 2.5]), [1.0, 2.0, 2.5], 1.0
    )
    result.layers = layer_table({"axial_attention_0": [1.5], "/stem/conv/Conv": [0.5]})
    page = render_html(result)
    assert page.count("<svg") == 3 and 'class="histogram"' in page and 'class="bars"' in page
    assert "AxialAttention plugin: 1.5000 ms of 2.0000 ms (75.0 %)" in page
    assert json.loads(json.dumps(result.to_dict()))["layers"]["axial_attention_share"] == 0.75


def test_cli_profile_of_an_onnx_model_writes_reports(tmp_path, capsys):
    model = conv_net(tmp_path / "net.onnx")
    prefix = tmp_path / "reports" / "net"
    args = ["profile", str(model), "--warmup", "0", "--iterations", "25", "--batch-size", "2"]
    assert main([*args, "--report", str(prefix)]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime, batch 2, 25 runs" in out and "p99" in out
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["latency"]["count"] == len(report["latencies_ms"]) == 25
    assert report["latency"]["batch"] == 2 and report["layers"] is None
    assert 'class="histogram"' in prefix.with_suffix(".html").read_text()
