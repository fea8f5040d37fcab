"""The native CPU AxialAttention op (plugins/axial_attention/axialAttentionCpu.cpp) against the
reference op (`axial_attention_op`, the oracle) and the float64 loop, directly through ctypes and
inside ONNX Runtime sessions (axial_deploy.op.ort)."""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from axial_deploy.native import ParamsStruct, TablesStruct
from axial_deploy.op import spec as op_spec
from axial_deploy.op.ort import (
    CPU_LIBRARY_ENV,
    OP_ENV,
    CpuOpError,
    cpu_library,
    create_session,
    native_axial_attention,
    op_implementation,
)
from axial_deploy.op.spec import OpSpecError

from .test_ort_ops import (
    CASES,
    loop_reference,
    max_rel,
    one_node_model,
    random_case,
    torch_reference,
)


def _library_reason() -> str | None:
    try:
        cpu_library()
    except CpuOpError as error:
        return str(error)
    return None


needs_library = pytest.mark.skipif(
    _library_reason() is not None, reason=f"native CPU op not built: {_library_reason()}"
)
needs_extensions = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime_extensions") is None,
    reason="needs onnxruntime-extensions (pip install onnxruntime-extensions)",
)

FP32_TOL = op_spec.TOLERANCES["float32"]  # 1e-5
FP16_TOL = op_spec.TOLERANCES["float16"]  # 2e-3
# Both axes, local and global spans, tables shorter and longer than the window, batch > 1.
NATIVE_CASES = {
    **CASES,
    "height-local-batch3": (2, 2, 4, 8, 5, 9, (3, 11, 6)),
    "width-global-batch3": (3, 4, 8, 16, 0, 17, (3, 5, 13)),
    "width-local-long-line": (3, 2, 16, 32, 17, 17, (2, 3, 70)),
    "height-global-long-line": (2, 1, 3, 5, 0, 7, (2, 45, 2)),
}


def float32_tables(tables):
    return {name: np.asarray(t, np.float32) for name, t in tables.items()}


@needs_library
@pytest.mark.parametrize("case", NATIVE_CASES.values(), ids=NATIVE_CASES.keys())
def test_native_op_matches_the_reference_in_float32(case):
    tables, attributes, qkv = random_case(*case)
    qkv = qkv.astype(np.float32)
    y = native_axial_attention(qkv, **float32_tables(tables), attributes=attributes)
    assert y.dtype == np.float32
    assert y.shape == (qkv.shape[0], attributes.out_channels, *qkv.shape[2:])
    assert max_rel(y, torch_reference(qkv, tables, attributes)) < FP32_TOL
    if qkv.size < 5000:  # the float64 loop is slow
        assert (
            max_rel(y, loop_reference(qkv, **float32_tables(tables), attributes=attributes))
            < FP32_TOL
        )


@needs_library
@pytest.mark.parametrize("axis", [2, 3])
@pytest.mark.parametrize("span", [0, 5])
def test_native_op_float16_io_computes_in_float32(axis, span):
    tables, attributes, qkv = random_case(axis, 2, 4, 8, span, 9, (2, 9, 12), seed=2)
    qkv16 = qkv.astype(np.float16)
    y = native_axial_attention(qkv16, **float32_tables(tables), attributes=attributes)
    assert y.dtype == np.float16
    assert max_rel(y, torch_reference(qkv16, tables, attributes)) < FP16_TOL
    # float16 in and out, float32 inside: the float32 result rounded once
    y32 = native_axial_attention(
        qkv16.astype(np.float32), **float32_tables(tables), attributes=attributes
    )
    assert max_rel(y, y32.astype(np.float16)) < 1e-3


@needs_library
def test_native_op_gives_the_same_bits_on_any_thread_count():
    tables, attributes, qkv = random_case(2, 2, 8, 16, 7, 9, (2, 40, 9), seed=4)
    qkv = qkv.astype(np.float32)
    runs = [
        native_axial_attention(
            qkv, **float32_tables(tables), attributes=attributes, threads=threads
        )
        for threads in (1, 2, 3, 0)
    ]
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


def _status_kib(field: str) -> int:
    line = next(
        x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field)
    )
    return int(line.split()[1])


@needs_library
def test_global_attention_on_a_long_line_keeps_memory_per_row():
    """A 12,289-long line, global span: L x L float32 logits would take 604 MB; the row-wise
    softmax holds one row (48 KB) per thread."""
    length = 12_289
    tables, attributes, qkv = random_case(3, 1, 1, 1, 0, 3, (1, 1, length), seed=5)
    qkv = qkv.astype(np.float32)
    # Reset this process's peak RSS to its current RSS (Linux >= 4.0), so the peak measured
    # after the call is the call's own, not an earlier test's.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    y = native_axial_attention(qkv, **float32_tables(tables), attributes=attributes)
    grown_mib = (_status_kib("VmHWM") - before) / 1024
    assert grown_mib < 64, f"peak memory grew by {grown_mib:.0f} MiB"
    assert np.isfinite(y).all()
    # a few queries against the contract computed in float64 here
    q, k, v = (qkv[0, c, 0].astype(np.float64) for c in range(3))
    for i in (0, 1, length // 2, length - 1):
        t = np.clip(np.arange(length) - i + 1, 0, 2)  # table column of each key
        logits = tables["logit_scale"][0] * q[i] * k + q[i] * tables["rel_q"][0, 0, t]
        logits += k * tables["rel_k"][0, 0, t]
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        want = weights @ (v + tables["rel_v"][0, 0, t]) + tables["out_bias"][0]
        assert abs(y[0, 0, 0, i] - want) <= FP32_TOL * np.abs(v).max() * 10


@needs_library
def test_native_op_names_bad_arguments():
    tables, attributes, qkv = random_case(2, 2, 2, 2, 3, 3, (1, 4, 4))
    qkv = qkv.astype(np.float32)
    # The attribute type refuses what the spec forbids before the library is called...
    with pytest.raises(OpSpecError, match=r"span .* must be 0 or odd, got 4"):
        native_axial_attention(qkv, **float32_tables(tables), **{**attributes.as_dict(), "span": 4})
    # ...and the library, whose C ABI is public too, still refuses it on its own.
    arrays = [np.ascontiguousarray(t) for t in float32_tables(tables).values()]
    y = np.empty((1, attributes.out_channels, 4, 4), np.float32)
    params = ParamsStruct(1, 4, 4, *attributes.as_tuple(), 3, 0)  # N, H, W, attributes, T, fp32
    params.span = 4
    lib = cpu_library()
    status = lib.axial_attention_cpu_run(
        ctypes.byref(params),
        qkv.ctypes.data,
        ctypes.byref(TablesStruct(*(a.ctypes.data for a in arrays))),
        y.ctypes.data,
        1,
    )
    reason = lib.axial_attention_cpu_status_string(status).decode()
    assert reason.startswith("bad span: must be 0 (global) or a positive odd"), reason
    with pytest.raises(CpuOpError, match="qkv has 11 channels, expected 12"):
        native_axial_attention(qkv[:, :11], **float32_tables(tables), attributes=attributes)
    with pytest.raises(CpuOpError, match=r"rel_v must be \[2, 3, 3\], got \[2, 2, 3\]"):
        native_axial_attention(
            qkv, **float32_tables(tables), attributes=dataclasses.replace(attributes, value_depth=3)
        )
    with pytest.raises(CpuOpError, match="qkv must be float32 or float16"):
        native_axial_attention(
            qkv.astype(np.float64), **float32_tables(tables), attributes=attributes
        )


@needs_library
@needs_extensions
@pytest.mark.parametrize("elem_type", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_onnxruntime_sessions_run_the_native_op(monkeypatch, elem_type):
    tables, attributes, qkv = random_case(3, 2, 3, 4, 5, 7, (2, 6, 9), seed=6)
    dtype = np.float32 if elem_type == TensorProto.FLOAT else np.float16
    qkv = qkv.astype(dtype)
    model = one_node_model(tables, attributes, qkv.shape, elem_type)
    monkeypatch.delenv(OP_ENV, raising=False)
    assert op_implementation() == "native"
    (native,) = create_session(model).run(None, {"qkv": qkv})
    monkeypatch.setenv(OP_ENV, "reference")
    assert op_implementation() == "reference"
    (reference,) = create_session(model).run(None, {"qkv": qkv})
    tolerance = FP32_TOL if dtype == np.float32 else FP16_TOL
    assert native.dtype == reference.dtype == dtype
    assert max_rel(native, reference) < tolerance
    assert max_rel(native, torch_reference(qkv, tables, attributes)) < tolerance


@needs_extensions
def test_without_the_library_sessions_fall_back_to_the_reference(monkeypatch, tmp_path):
    monkeypatch.setenv(CPU_LIBRARY_ENV, str(tmp_path / "missing.so"))
    monkeypatch.delenv(OP_ENV, raising=False)
    assert op_implementation() == "reference"
    with pytest.raises(CpuOpError, match="make cpu-libs"):
        cpu_library()
    tables, attributes, qkv = random_case(2, 1, 2, 3, 3, 5, (2, 5, 4), seed=7)
    qkv = qkv.astype(np.float32)
    (y,) = create_session(one_node_model(tables, attributes, qkv.shape)).run(None, {"qkv": qkv})
    assert max_rel(y, torch_reference(qkv, tables, attributes)) < FP32_TOL


@needs_library
@needs_extensions
def test_sessions_return_the_native_result_bit_for_bit():
    """The output goes back to ONNX Runtime as a buffer (ort_ops._install_buffer_hook) or, on
    other onnxruntime-extensions versions, as a list: either way the same float32 bits."""
    tables, attributes, qkv = random_case(2, 2, 4, 8, 9, 9, (2, 20, 15), seed=8)
    qkv = qkv.astype(np.float32)
    (y,) = create_session(one_node_model(tables, attributes, qkv.shape)).run(None, {"qkv": qkv})
    np.testing.assert_array_equal(
        y, native_axial_attention(qkv, **float32_tables(tables), attributes=attributes)
    )


@needs_extensions
def test_other_python_ops_still_run_through_the_library_bridge():
    import onnxruntime as ort
    from onnx import helper
    from onnxruntime_extensions import PyOp, get_library_path, onnx_op

    @onnx_op(op_type="AxialDeployTestNegate", inputs=[PyOp.dt_float], outputs=[PyOp.dt_float])
    def negate(x):
        return -x

    tables, attributes, qkv = random_case(3, 1, 2, 2, 3, 3, (1, 3, 4), seed=1)
    create_session(one_node_model(tables, attributes, qkv.shape))  # installs our hook
    node = helper.make_node("AxialDeployTestNegate", ["x"], ["y"], domain="ai.onnx.contrib")
    graph = helper.make_graph(
        [node],
        "negate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)],
    )
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    session = ort.InferenceSession(model.SerializeToString(), options)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], -x)
