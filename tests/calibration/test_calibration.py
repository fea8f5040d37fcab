"""Calibration building blocks on small inputs: data sources and their errors, threshold
methods, per-channel weight scales, TensorRT's calibration cache, FP16 conversion rules."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from axial_deploy.calibration import CalibrationDataError, open_source, ranges
from axial_deploy.calibration.cache import (
    CalibrationCache,
    CalibrationCacheError,
    read_cache,
    write_cache,
)
from axial_deploy.calibration.fp16 import check_strongly_typed, convert_to_fp16
from axial_deploy.calibration.ranges import (
    HISTOGRAM_BINS,
    QUANTIZED_LEVELS,
    abs_histogram,
    collect_ranges,
    entropy_threshold,
    percentile_threshold,
    tensor_chunks,
    weight_scales,
)
from axial_deploy.models.preprocess import preprocess_for
from axial_deploy.op.ort import create_session

SHAPE = ("batch", 3, 24, 32)
DATA = Path(__file__).resolve().parents[1] / "data"
needs_calibration_library = pytest.mark.skipif(
    ranges.histogram_library() is None,
    reason="needs build/lib/libaxial_calibration.so: `make cpu-libs` (CMake and a C++ compiler)",
)


def write_images(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for number, (width, height) in enumerate(sizes):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{number}.png")
    return folder


def test_image_folder_uses_the_model_preprocessing_and_batches(tmp_path):
    folder = write_images(tmp_path / "images", [(50, 40), (33, 60), (32, 24)])
    source = open_source(folder, SHAPE, task="classification", batch_size=2)
    batches = list(source)
    assert [b.shape for b in batches] == [(2, 3, 24, 32), (1, 3, 24, 32)]
    assert all(b.dtype == np.float32 for b in batches)
    expected = preprocess_for("classification", (24, 32)).load(folder / "image_0.png")
    np.testing.assert_array_equal(batches[0][0], expected)
    assert "3 images" in source.description


def test_empty_folder_unreadable_image_and_missing_path_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationDataError, match="holds no images"):
        open_source(tmp_path / "empty", SHAPE)
    folder = write_images(tmp_path / "broken", [(32, 24)])
    (folder / "zz_bad.png").write_bytes(b"not a png")
    with pytest.raises(CalibrationDataError, match=r"zz_bad\.png"):
        list(open_source(folder, SHAPE))
    with pytest.raises(CalibrationDataError, match="does not exist"):
        open_source(tmp_path / "nowhere", SHAPE)
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(CalibrationDataError, match=r"not \.npy or \.npz"):
        open_source(tmp_path / "list.txt", SHAPE)


def test_numpy_sources_and_shape_errors(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 3, 24, 32)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "b.npz", first=data[:2], second=data[2])
    assert np.array_equal(np.concatenate(list(open_source(tmp_path / "a.npy", SHAPE))), data)
    from_npz = np.concatenate(list(open_source(tmp_path / "b.npz", SHAPE, batch_size=3)))
    assert np.array_equal(from_npz, data)
    folder_source = open_source(tmp_path, SHAPE, batch_size=4)  # a.npy then b.npz
    assert len(folder_source) == 6 and [len(b) for b in folder_source] == [4, 2]

    np.save(tmp_path / "wrong.npy", data[:, :, :20])
    with pytest.raises(
        CalibrationDataError, match=r"does not fit the model input \[N, 3, 24, 32\]"
    ):
        open_source(tmp_path / "wrong.npy", SHAPE)
    np.save(tmp_path / "flat.npy", data.reshape(-1))
    with pytest.raises(CalibrationDataError, match="neither"):
        open_source(tmp_path / "flat.npy", SHAPE)
    (tmp_path / "junk.npy").write_bytes(b"\x00junk")
    with pytest.raises(CalibrationDataError, match="cannot read"):
        open_source(tmp_path / "junk.npy", SHAPE)
    with pytest.raises(CalibrationDataError, match="static channels"):
        open_source(None, (1, 3, "height", 32))


def test_synthetic_source_is_seeded():
    first = list(open_source(None, SHAPE, seed=3, samples=2))
    again = list(open_source("synthetic", SHAPE, seed=3, samples=2))
    other = list(open_source(None, SHAPE, seed=4, samples=2))
    assert len(first) == 2 and first[0].shape == (1, 3, 24, 32)
    assert np.array_equal(first[1], again[1]) and not np.array_equal(first[1], other[1])


def histogram(values):
    top = float(np.abs(values).max())
    counts, _ = np.histogram(np.abs(values), bins=HISTOGRAM_BINS, range=(0.0, top))
    return counts, top / HISTOGRAM_BINS, top


def test_thresholds_clip_outliers_but_keep_the_bulk():
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal(200_000)
    counts, width, top = histogram(gauss)
    assert 3.0 < entropy_threshold(counts, width) <= top
    # A few huge outliers: max |x| follows them, entropy and percentile ignore them.
    spiky = np.concatenate([gauss, [400.0, -500.0, 450.0]])
    counts, width, top = histogram(spiky)
    assert top == 500.0
    # The search starts at 128 of 2048 bins (TensorRT's range), so >= top / 16 here.
    assert 2.5 < entropy_threshold(counts, width) <= 128 * width
    assert 3.0 < percentile_threshold(counts, width, 99.99) < 6.0
    assert percentile_threshold(counts, width, 100.0) == pytest.approx(top)


def exhaustive_entropy_threshold(counts: np.ndarray, width: float) -> float:
    """The search as it was before it was vectorized: every candidate, bin by bin, first
    minimum wins."""
    counts = counts.astype(np.float64)
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
    kls = [ranges._candidate_kl(counts, tail, i) for i in range(QUANTIZED_LEVELS, len(counts) + 1)]
    return (QUANTIZED_LEVELS + int(np.argmin(kls))) * width if np.isfinite(min(kls)) else 0.0


def test_entropy_search_gives_the_recorded_thresholds():
    """Histograms recorded from the trained tiny model and edge cases, with the thresholds the
    per-candidate loop (before vectorizing) gave: tests/data/make_entropy_fixture.py."""
    with np.load(DATA / "entropy_thresholds.npz") as fixture:
        histograms, widths, thresholds = (
            fixture["histograms"],
            fixture["widths"],
            fixture["thresholds"],
        )
    assert len(histograms) >= 8
    found = [entropy_threshold(h, w) for h, w in zip(histograms, widths, strict=True)]
    assert found == thresholds.tolist()


def test_screened_kl_is_the_per_candidate_kl_and_picks_the_same_threshold():
    rng = np.random.default_rng(3)
    bell = np.histogram(np.abs(rng.standard_normal(50_000)), HISTOGRAM_BINS, (0, 4.5))[0]
    sparse = np.zeros(HISTOGRAM_BINS, np.int64)
    sparse[rng.choice(HISTOGRAM_BINS, 25, replace=False)] = rng.integers(1, 50, 25)
    for counts in (bell, sparse):
        counts64 = counts.astype(np.float64)
        tail = np.concatenate([np.cumsum(counts64[::-1])[::-1], [0.0]])
        exact = np.array(
            [ranges._candidate_kl(counts64, tail, i) for i in range(QUANTIZED_LEVELS, 2049)]
        )
        screened = ranges._screen_kl(counts64)
        finite = np.isfinite(exact)
        assert np.array_equal(finite, np.isfinite(screened))
        # far inside SCREEN_TOLERANCE, the bound that makes the recomputed pick exact
        assert np.abs(screened[finite] - exact[finite]).max() < 1e-11
        assert entropy_threshold(counts, 0.5) == exhaustive_entropy_threshold(counts, 0.5)


def adversarial_values() -> tuple[np.ndarray, float]:
    """Normal values with zeros, -0.0, NaN, and values exactly on and next to the bin edges."""
    rng = np.random.default_rng(1)
    values = rng.standard_normal(40_000).astype(np.float32)
    top = float(np.abs(values).max())
    edges = np.linspace(0.0, top, HISTOGRAM_BINS + 1, dtype=np.float32)
    below = np.nextafter(edges[1:], np.float32(0))
    above = np.nextafter(edges[:-1], np.float32(top))
    values[: 4 * HISTOGRAM_BINS] = np.concatenate([edges[1:], -edges[1:], below, above])
    values[::13], values[::17], values[5] = 0.0, -0.0, np.nan
    return values.reshape(8, 50, 100), top


@needs_calibration_library
def test_native_histogram_counts_what_numpy_counts(monkeypatch):
    values, top = adversarial_values()
    numpy_counts = np.histogram(np.abs(values[values != 0]), HISTOGRAM_BINS, (0.0, top))[0]
    np.testing.assert_array_equal(abs_histogram(values, top), numpy_counts)
    big = np.tile(values, (80, 1, 1))  # 3.2 M values: binned by 2+ threads on 2+ cores
    np.testing.assert_array_equal(abs_histogram(big, top), 80 * numpy_counts)
    monkeypatch.setattr(ranges, "histogram_library", lambda: None)  # the numpy fallback
    np.testing.assert_array_equal(abs_histogram(values, top), numpy_counts)


def test_weight_scales_are_per_output_channel():
    weight = np.zeros((3, 2, 1, 1), np.float32)
    weight[0, 1], weight[1, 0], weight[2] = -2.54, 1.27, 0.0
    np.testing.assert_allclose(weight_scales(weight), [0.02, 0.01, 1.0], rtol=1e-6)
    np.testing.assert_allclose(weight_scales(weight[:, :, 0, 0], axis=1), [0.01, 0.02], rtol=1e-6)


def test_calibration_cache_round_trips_in_tensorrt_text_format(tmp_path):
    scales = {"images": 1 / 127, "/conv1/Conv_output_0": 0.0421, "input_1:0": 3.5e-5}
    path = write_cache(tmp_path / "model.calib", scales, algorithm="MinMaxCalibration")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100300-MinMaxCalibration"
    assert lines[1] == "images: " + struct.pack(">f", 1 / 127).hex() == "images: 3c010204"
    cache = read_cache(path)
    assert cache.algorithm == "MinMaxCalibration" and cache.version == 100300
    assert list(cache.scales) == list(scales)
    for name, scale in scales.items():  # exact to float32
        assert cache.scales[name] == np.float32(scale)
    # A cache as TensorRT's samples ship it (TensorRT 7 header) parses too.
    sample = CalibrationCache.from_text("TRT-7000-EntropyCalibration2\ndata: 3c008912\n")
    assert sample.version == 7000 and sample.scales["data"] == pytest.approx(0.00784, rel=1e-3)
    with pytest.raises(CalibrationCacheError, match="first line"):
        CalibrationCache.from_text("images: 3c010204\n")
    with pytest.raises(CalibrationCacheError, match="8 hex digits"):
        CalibrationCache.from_text("TRT-100300-EntropyCalibration2\nimages: 0.5\n")


def small_graph() -> onnx.ModelProto:
    """x -> Conv -> Relu -> Mul(big) -> Exp-free path, plus Resize and Exp branches."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    big = numpy_helper.from_array(np.array(3e4, np.float32), "big")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("Mul", ["relu", "big"], ["huge"], name="scale_up"),
        helper.make_node("ReduceMean", ["huge"], ["mean"], name="mean", keepdims=1),
        helper.make_node("Resize", ["relu", "", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("Exp", ["up"], ["exp"], name="exp"),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [
            helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["n", 1, 1, 1]),
            helper.make_tensor_value_info("exp", TensorProto.FLOAT, ["n", 4, 16, 16]),
            helper.make_tensor_value_info("relu", TensorProto.FLOAT, ["n", 4, 8, 8]),
        ],
        [weight, big, scales],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_keeps_overflowing_and_sensitive_ops_in_fp32():
    model = small_graph()
    batches = [
        np.random.default_rng(s).standard_normal((1, 3, 8, 8)).astype(np.float32) * 3
        for s in range(2)
    ]
    ranges = collect_ranges(model, batches, method="minmax")
    assert ranges["huge"].absmax > 6e4  # relu reaches > 2, times 3e4
    # Probing one tensor per session (as large models do, in groups) measures the same.
    for method in ("minmax", "entropy"):
        whole = collect_ranges(model, batches, method=method)
        split = collect_ranges(model, batches, method=method, chunk_bytes=1)
        assert {n: (r.min, r.max, r.amax) for n, r in whole.items()} == {
            n: (r.min, r.max, r.amax) for n, r in split.items()
        }
    # Groups by float32 size of one batch: x 768 B, conv / relu / huge 1 KiB, mean 4 B, up /
    # exp 4 KiB.
    assert tensor_chunks(model, list(ranges), batch=1, budget=2048) == [
        ["x", "conv"],
        ["relu", "huge"],
        ["mean"],
        ["up"],
        ["exp"],
    ]
    result = convert_to_fp16(model, ranges)
    converted = result.model
    onnx.checker.check_model(converted)
    assert check_strongly_typed(converted) == []
    assert set(result.kept_fp32) == {"scale_up", "mean", "exp"}
    assert "FP16 range" in result.kept_fp32["scale_up"]
    nodes = {node.name: node for node in converted.graph.node}
    weights = {init.name: init for init in converted.graph.initializer}
    assert weights[nodes["conv"].input[1]].data_type == TensorProto.FLOAT16
    assert weights[nodes["resize"].input[2]].data_type == TensorProto.FLOAT  # scales stay FP32
    assert weights[nodes["scale_up"].input[1]].data_type == TensorProto.FLOAT
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in converted.graph.output)
    # Run both: the FP16 graph agrees to FP16 precision and nothing overflowed.
    feed = {"x": batches[0]}
    want = create_session(model).run(None, feed)
    got = create_session(converted).run(None, feed)
    for expected, actual in zip(want, got, strict=True):
        assert actual.dtype == np.float32 and np.isfinite(actual).all()
        err = np.abs(actual - expected).max() / np.abs(expected).max()
        assert err < 1e-2, err
    # FP16 graph I/O when asked.
    io16 = convert_to_fp16(model, ranges, keep_io_fp32=False).model
    assert io16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert check_strongly_typed(io16) == []
    create_session(io16).run(None, {"x": batches[0].astype(np.float16)})


@pytest.mark.tensorrt
def test_tensorrt_reads_the_cache_through_the_calibrator(tmp_path):
    try:
        import tensorrt as trt
    except (ImportError, OSError) as error:  # the bindings wheel imports only with the libs
        pytest.skip(f"TensorRT is not usable here: {error}")
    from axial_deploy.calibration.cache import cache_calibrator
    from axial_deploy.engine.tensorrt_api import tensorrt_major

    if tensorrt_major(trt) >= 11:  # removed in 11 (axial_deploy/engine/tensorrt_api.py)
        pytest.skip(f"TensorRT {trt.__version__} has no implicit INT8 calibrators")
    path = write_cache(tmp_path / "m.calib", {"images": 0.02})
    calibrator = cache_calibrator(trt, path)
    assert calibrator.get_algorithm() == trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2
    assert bytes(calibrator.read_calibration_cache()) == path.read_bytes()
    assert calibrator.get_batch(["images"]) is None


def test_calibration_gives_the_same_bytes_for_the_same_inputs(monkeypatch, tmp_path):
    """Two entropy calibrations of a graph with an AxialAttention node on the same inputs, with
    ONNX Runtime on 1 and on 2 intra-op threads, write byte-identical ranges and caches: no
    reduction depends on the thread count or on the run (docs/design/precision.md, reproducible
    INT8)."""
    import onnxruntime as ort
    from op.test_ort_ops import one_node_model, random_case

    from axial_deploy.calibration.cache import scales_from_amax
    from axial_deploy.op import ort as ort_ops

    tables, ints, qkv = random_case(3, 2, 4, 8, 5, 9, (3, 12, 16), seed=9)
    model = one_node_model(tables, ints, qkv.shape)
    batches = [qkv[i : i + 1].astype(np.float32) for i in range(3)]
    create = ort_ops.create_session
    written = []
    for threads in (1, 2):

        def pinned(model, providers=("CPUExecutionProvider",), session_options=None, n=threads):
            options = ort.SessionOptions()
            options.intra_op_num_threads = n
            return create(model, providers, options)

        monkeypatch.setattr(ort_ops, "create_session", pinned)
        found = collect_ranges(model, batches, method="entropy")
        path = write_cache(
            tmp_path / f"threads{threads}.calib",
            scales_from_amax({name: r.amax for name, r in found.items()}),
            algorithm="EntropyCalibration2",
        )
        ranges_text = repr(sorted((n, r.min, r.max, r.absmax, r.amax) for n, r in found.items()))
        written.append((path.read_bytes(), ranges_text))
    assert written[0] == written[1]
    assert "y" in written[0][1]  # the attention output was measured
