"""Run ONNX graphs holding AxialAttention nodes in ONNX Runtime (CPU), through the reference op.

ONNX Runtime has no AxialAttention kernel. onnxruntime-extensions lets a Python function serve as
a custom op, and `axial_attention_op` (the operator contract's torch reference) is that function.
Its Python ops have limits (checked with onnxruntime-extensions 0.15):

- they live in the domain ai.onnx.contrib;
- their attributes are int64, float or string: no FLOATS lists, no tensors;
- float16 inputs or outputs are refused, and the refusal aborts the process;
- an exception raised inside the op aborts the process instead of failing the run.

So `create_session` converts the graph in memory (never the file) into an "ORT view" in which
each AxialAttention node becomes

    Cast(qkv, to=float) -> ai.onnx.contrib::AxialAttentionReference -> CastLike(y, qkv)

with the tables as extra initializer inputs (rel_q, rel_k, rel_v, logit_scale, out_bias) and the
int attributes as INT attributes. The Casts make float16 graphs run (computed in float32, as the
contract says) and are free no-ops for float32 ones. Everything the op could fail on (attributes,
table shapes, qkv's dtype, rank and channels where the graph states them) is checked before the
session exists, with messages naming the node. Graphs without the node go to ORT unchanged.

The op's body is the native CPU op when its library is built (`make cpu-libs`, part of `make
test`: build/lib/libaxial_attention_cpu.so, or the file named by AXIAL_DEPLOY_CPU_LIB): C++ with
threads, a row-wise softmax (never an L x L logits matrix), ~10x faster than the reference. When
the library is missing (or AXIAL_DEPLOY_ORT_OP=reference), the body is the torch reference
`axial_attention_op`: same results within the contract's tolerances, much slower and memory-
hungry on large inputs. `op_implementation()` says which one runs; the tests keep the reference
as the oracle of the native op.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from axial_deploy.errors import AxialDeployError, first_line
from axial_deploy.graph import label, unique_name, used_names
from axial_deploy.native import CPU_OP, ParamsStruct, TablesStruct, library_path, load
from axial_deploy.op.spec import (
    DOMAIN,
    OP_TYPE,
    OPERATOR_ATTRIBUTES,
    TABLE_ATTRIBUTES,
    AxialAttentionAttributes,
    node_label,
    read_node,
)

if TYPE_CHECKING:
    import onnxruntime

REFERENCE_OP_TYPE = "AxialAttentionReference"
REFERENCE_DOMAIN = "ai.onnx.contrib"  # the only domain onnxruntime-extensions' Python ops use
REFERENCE_INT_ATTRIBUTES = OPERATOR_ATTRIBUTES  # INT attributes of the reference node
REFERENCE_TABLE_INPUTS = TABLE_ATTRIBUTES  # its extra inputs, in the operator's argument order
CASTLIKE_OPSET = 15  # the view casts y back with CastLike, new in opset 15

MISSING_EXTENSIONS = (
    "this graph holds AxialAttention nodes; running them in ONNX Runtime needs "
    "onnxruntime-extensions: pip install onnxruntime-extensions"
)

_register_lock = threading.Lock()
_registered = False


CPU_LIBRARY_ENV = CPU_OP.env
CPU_ABI_VERSION = CPU_OP.abi_version  # checked by `native.load`
OP_ENV = "AXIAL_DEPLOY_ORT_OP"  # "reference" forces the torch reference body


class CpuOpError(AxialDeployError, RuntimeError):
    """The native CPU op refused its arguments or could not be loaded; the message says why."""


def cpu_library_path() -> Path:
    """Where `axial_deploy.native` finds the CPU op library ($AXIAL_DEPLOY_CPU_LIB, the
    installed package, the checkout's build/lib)."""
    return library_path(CPU_OP)


@functools.cache
def _bind_cpu_library(path: Path) -> ctypes.CDLL:
    """The library at `path`, opened and ABI-checked by `native.load`, its C ABI declared."""
    lib = load(CPU_OP, path, CpuOpError)
    lib.axial_attention_cpu_run.restype = ctypes.c_int
    lib.axial_attention_cpu_run.argtypes = [
        ctypes.POINTER(ParamsStruct),
        ctypes.c_void_p,
        ctypes.POINTER(TablesStruct),
        ctypes.c_void_p,
        ctypes.c_int32,
    ]
    lib.axial_attention_cpu_status_string.restype = ctypes.c_char_p
    lib.axial_attention_cpu_status_string.argtypes = [ctypes.c_int]
    return lib


def cpu_library() -> ctypes.CDLL:
    """The loaded native CPU op library; CpuOpError (saying how to build it) when unavailable."""
    return _bind_cpu_library(cpu_library_path())


def op_implementation() -> str:
    """Which body AxialAttention nodes run in ONNX Runtime: "native" or "reference"."""
    if os.environ.get(OP_ENV, "").lower() == "reference":
        return "reference"
    try:
        cpu_library()
    except CpuOpError:
        return "reference"
    return "native"


def native_axial_attention(
    qkv: np.ndarray,
    rel_q: np.ndarray,
    rel_k: np.ndarray,
    rel_v: np.ndarray,
    logit_scale: np.ndarray,
    out_bias: np.ndarray,
    attributes: AxialAttentionAttributes | None = None,
    *,
    threads: int = 0,
    **keywords: int,
) -> np.ndarray:
    """The AxialAttention contract on the CPU through the native library: qkv float32 or float16
    [N, G*(2Dq+Dv), H, W] (numpy), float32 tables, an `AxialAttentionAttributes` (or the five
    ints as keywords: axis=..., num_heads=..., ...); returns y in qkv's dtype. `threads` <= 0:
    one per hardware thread (results do not depend on it). Raises CpuOpError naming the problem
    (OpSpecError, a ValueError, for attributes that break the spec)."""
    attributes = AxialAttentionAttributes.resolve(attributes, keywords, "native_axial_attention")
    lib = cpu_library()
    if qkv.dtype not in (np.float32, np.float16) or qkv.ndim != 4:
        raise CpuOpError(f"qkv must be float32 or float16 NCHW, got {qkv.dtype} {qkv.shape}")
    qkv = np.ascontiguousarray(qkv)
    tables = [np.ascontiguousarray(t, dtype=np.float32) for t in (rel_q, rel_k, rel_v)]
    scale = np.ascontiguousarray(logit_scale, dtype=np.float32).reshape(-1)
    bias = np.ascontiguousarray(out_bias, dtype=np.float32).reshape(-1)
    table = tables[0].shape[-1] if tables[0].ndim else 0
    expected = attributes.table_shapes(table)
    for name, array in zip(TABLE_ATTRIBUTES[:3], tables, strict=True):  # rel_q, rel_k, rel_v
        if array.shape != expected[name]:
            raise CpuOpError(f"{name} must be {list(expected[name])}, got {list(array.shape)}")
    groups, channels = attributes.num_heads, attributes.out_channels
    if scale.size != groups or bias.size != channels:
        raise CpuOpError(f"logit_scale must hold {groups} and out_bias {channels} values")
    if qkv.shape[1] != attributes.qkv_channels:
        raise CpuOpError(f"qkv has {qkv.shape[1]} channels, expected {attributes.qkv_channels}")
    batch, _, height, width = qkv.shape
    values = (batch, height, width, *attributes.as_tuple(), table)
    if not all(-(2**31) <= int(v) < 2**31 for v in values):
        raise CpuOpError(f"a shape or attribute does not fit int32: {values}")
    params = ParamsStruct(*(int(v) for v in values), 1 if qkv.dtype == np.float16 else 0)
    y = np.empty((batch, channels, height, width), dtype=qkv.dtype)
    pointers = TablesStruct(*(a.ctypes.data for a in (*tables, scale, bias)))
    status = lib.axial_attention_cpu_run(
        ctypes.byref(params), qkv.ctypes.data, ctypes.byref(pointers), y.ctypes.data, threads
    )
    if status != 0:
        raise CpuOpError(
            f"native AxialAttention refused the call: "
            f"{lib.axial_attention_cpu_status_string(status).decode()}"
        )
    return y


def _reference_op(
    qkv: np.ndarray,
    rel_q: np.ndarray,
    rel_k: np.ndarray,
    rel_v: np.ndarray,
    logit_scale: np.ndarray,
    out_bias: np.ndarray,
    **attributes: int,
) -> np.ndarray:
    """The body of AxialAttentionReference: float32 numpy in, the native CPU op (or, without its
    library, `axial_attention_op`, or its numpy form where torch is not installed), numpy out.
    onnxruntime-extensions hands the INT attributes as keywords; they become the attribute type
    here, at the boundary."""
    try:
        operator = AxialAttentionAttributes(**attributes)
        if op_implementation() == "native":
            return native_axial_attention(qkv, rel_q, rel_k, rel_v, logit_scale, out_bias, operator)
        arrays = (qkv, rel_q, rel_k, rel_v, logit_scale, out_bias)
        try:
            import torch
        except ModuleNotFoundError:  # the torch-free install: the same contract in numpy
            from axial_deploy.op.reference import axial_attention_numpy

            return axial_attention_numpy(*(np.asarray(a, np.float32) for a in arrays), operator)
        from axial_deploy.models.axial_attention import axial_attention_op

        # Copies: ORT hands read-only buffers, which torch.from_numpy warns about.
        tensors = [torch.from_numpy(np.array(a, dtype=np.float32)) for a in arrays]
        with torch.no_grad():
            return axial_attention_op(*tensors, operator).numpy()
    except Exception as error:  # raising here would abort the process (see the module doc)
        print(f"axial_deploy: {REFERENCE_OP_TYPE} failed: {error}", file=sys.stderr)
        channels = attributes.get("num_heads", 1) * attributes.get("value_depth", 1)
        shape = (qkv.shape[0], channels, *qkv.shape[2:]) if qkv.ndim == 4 else (channels,)
        return np.full(shape, np.nan, dtype=np.float32)


def _register_reference_op() -> str:
    """Register AxialAttentionReference with onnxruntime-extensions (once); its library path."""
    global _registered
    try:
        from onnxruntime_extensions import PyOp, get_library_path, onnx_op
    except ImportError as error:
        raise ImportError(MISSING_EXTENSIONS) from error
    with _register_lock:
        if not _registered:
            onnx_op(
                op_type=REFERENCE_OP_TYPE,
                inputs=[PyOp.dt_float] * (1 + len(REFERENCE_TABLE_INPUTS)),
                outputs=[PyOp.dt_float],
                attrs={name: PyOp.dt_int64 for name in REFERENCE_INT_ATTRIBUTES},
            )(_reference_op)
            _install_buffer_hook()
            _registered = True
    return get_library_path()


# onnxruntime-extensions versions whose Python-op bridge was checked to take the output as a
# buffer (a memoryview) as well as a list: tests/op/test_ort_cpu_op.py runs through it.
BUFFER_HOOK_VERSIONS = ("0.15.",)


class ExtensionsBridgeError(AxialDeployError, RuntimeError):
    """The installed onnxruntime-extensions lacks the Python-op bridge internals that the
    buffer hook was written against (another version, or they moved)."""


@dataclass(frozen=True)
class _Bridge:
    """onnxruntime-extensions' Python-op bridge, the only private API this package uses."""

    default_hook: Callable  # _ocos._on_pyop_invocation: the library's own bridge
    opdefs: dict  # Opdef._odlist: registered ops by the id the C++ side calls them with
    install_hooker: Callable  # PyCustomOpDef.install_hooker: sets the bridge


def _extensions_bridge() -> _Bridge:
    """The adapter over the bridge: checks the installed version against BUFFER_HOOK_VERSIONS
    and that every internal the hook touches is there, else ExtensionsBridgeError naming the
    version or the missing name (the public list path then runs; see `_install_buffer_hook`).
    The public API (`onnx_op`, `PyOp`, `get_library_path`) registers the op itself."""
    import onnxruntime_extensions
    from onnxruntime_extensions import Opdef, PyCustomOpDef

    version = getattr(onnxruntime_extensions, "__version__", "unknown")
    checked = ", ".join(f"{v}x" for v in BUFFER_HOOK_VERSIONS)
    if not version.startswith(BUFFER_HOOK_VERSIONS):
        raise ExtensionsBridgeError(
            f"onnxruntime-extensions {version} is not a version whose Python-op bridge this "
            f"package checked ({checked}): AxialAttentionReference hands its output back as a "
            "list (same results, slower); pin onnxruntime-extensions to that version for speed"
        )
    try:
        from onnxruntime_extensions import _ocos as ocos
    except ImportError:  # the module itself moved
        ocos = None
    parts = {
        "_ocos._on_pyop_invocation": getattr(ocos, "_on_pyop_invocation", None),
        "Opdef._odlist": getattr(Opdef, "_odlist", None),
        "Opdef.cast_attributes": getattr(Opdef, "cast_attributes", None),
        "PyCustomOpDef.install_hooker": getattr(PyCustomOpDef, "install_hooker", None),
    }
    missing = [name for name, value in parts.items() if value is None]
    if missing or not isinstance(parts["Opdef._odlist"], dict):
        raise ExtensionsBridgeError(
            f"onnxruntime-extensions {version}'s Python-op bridge has moved (no "
            f"{', '.join(missing) or 'Opdef._odlist dict'}): AxialAttentionReference hands its "
            "output back as a list (same results, slower); report this with the version"
        )
    return _Bridge(
        parts["_ocos._on_pyop_invocation"], parts["Opdef._odlist"], PyCustomOpDef.install_hooker
    )


def _install_buffer_hook() -> bool:
    """Let AxialAttentionReference hand its output back to ONNX Runtime as a buffer.

    onnxruntime-extensions' bridge returns a Python op's output as `y.flatten().tolist()`: one
    Python float per element, parsed back in C++. For an Axial-DeepLab-S layer (2 M floats)
    that took 4x the op itself. This hook returns a memoryview of the same float32 data for our
    op and hands every other Python op to the library's own bridge unchanged. Installed only
    where `_extensions_bridge` accepts the installed version (their bridge copies from the
    buffer protocol); elsewhere a warning says why and the list path runs. Returns whether it
    was installed."""
    try:
        bridge = _extensions_bridge()
    except ExtensionsBridgeError as error:
        warnings.warn(str(error), RuntimeWarning, stacklevel=3)
        return False

    def invocation(k_id, feed, attributes):
        op = bridge.opdefs.get(k_id)
        if op is None or op.body is not _reference_op:
            return bridge.default_hook(k_id, feed, attributes)
        y = op.body(*feed, **op.cast_attributes(attributes))
        flat = np.ascontiguousarray(y, dtype=np.float32).reshape(-1)
        return (k_id, y.shape, memoryview(flat))

    bridge.install_hooker(invocation)
    return True


def has_axial_attention(model: onnx.ModelProto) -> bool:
    """Whether the main graph holds an AxialAttention node (subgraphs are not searched)."""
    return any(node.op_type == OP_TYPE for node in model.graph.node)


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def _known_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types (with shapes where known) of the graph's tensors; empty if inference fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is only used for earlier, clearer errors: never required
        inferred = model
    graph = inferred.graph
    types = {info.name: info.type for info in [*graph.input, *graph.value_info, *graph.output]}
    for tensor in graph.initializer:
        types[tensor.name] = onnx.helper.make_tensor_type_proto(tensor.data_type, tensor.dims)
    return types


def _check_qkv(
    node: onnx.NodeProto, attributes: AxialAttentionAttributes, known: onnx.TypeProto | None
) -> None:
    """Fail early where the graph states a qkv the op cannot take."""
    if known is None or not known.HasField("tensor_type"):
        return
    tensor_type = known.tensor_type
    allowed = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    if tensor_type.elem_type and tensor_type.elem_type not in allowed:
        dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise ValueError(f"{node_label(node)}: qkv must be FLOAT or FLOAT16, got {dtype}")
    if not tensor_type.HasField("shape"):
        return
    dims = tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"{node_label(node)}: qkv must be NCHW (rank 4), got rank {len(dims)}")
    channels = attributes.qkv_channels
    if dims[1].HasField("dim_value") and dims[1].dim_value != channels:
        raise ValueError(
            f"{node_label(node)}: qkv has {dims[1].dim_value} channels, but num_heads * "
            f"(2 * key_depth + value_depth) = {channels}"
        )


def _reference_nodes(
    node: onnx.NodeProto,
    tables: dict[str, np.ndarray],
    attributes: AxialAttentionAttributes,
    taken: set[str],
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Cast -> AxialAttentionReference -> CastLike replacing `node`, and its table initializers."""
    prefix = f"{label(node)}/ort_reference"
    qkv, y = node.input[0], node.output[0]
    qkv32, y32 = unique_name(f"{prefix}/qkv_float", taken), unique_name(f"{prefix}/y_float", taken)
    initializers = [
        onnx.numpy_helper.from_array(tables[name], unique_name(f"{prefix}/{name}", taken))
        for name in REFERENCE_TABLE_INPUTS
    ]
    nodes = [
        onnx.helper.make_node(
            "Cast",
            [qkv],
            [qkv32],
            name=unique_name(f"{prefix}/cast_in", taken),
            to=onnx.TensorProto.FLOAT,
        ),
        onnx.helper.make_node(
            REFERENCE_OP_TYPE,
            [qkv32, *(table.name for table in initializers)],
            [y32],
            name=unique_name(prefix, taken),
            domain=REFERENCE_DOMAIN,
            **attributes.as_dict(),
        ),
        onnx.helper.make_node(
            "CastLike", [y32, qkv], [y], name=unique_name(f"{prefix}/cast_out", taken)
        ),
    ]
    return nodes, initializers


def to_onnxruntime_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose AxialAttention nodes ONNX Runtime can run through the reference op
    (see the module doc); `model` itself when it has none. `model` is never modified.

    Raises ValueError naming the node for any node that breaks the spec.
    """
    if not has_axial_attention(model):
        return model
    if _default_opset(model) < CASTLIKE_OPSET:
        raise ValueError(
            f"running AxialAttention nodes in ONNX Runtime needs default-domain opset >= "
            f"{CASTLIKE_OPSET}, this model imports {_default_opset(model)}"
        )
    known = _known_types(model)
    view = onnx.ModelProto()
    view.CopyFrom(model)
    graph = view.graph
    taken = used_names(graph)

    # Read the caller's nodes, write the view's: extend() copies, so nothing aliases `model`.
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != OP_TYPE:
            nodes.append(node)
            continue
        tables, attributes = read_node(node)
        _check_qkv(node, attributes, known.get(node.input[0]))
        replacement, initializers = _reference_nodes(node, tables, attributes, taken)
        nodes.extend(replacement)
        graph.initializer.extend(initializers)
    del graph.node[:]
    graph.node.extend(nodes)

    imports = [
        entry for entry in model.opset_import if entry.domain not in (DOMAIN, REFERENCE_DOMAIN)
    ]
    del view.opset_import[:]
    view.opset_import.extend([*imports, onnx.helper.make_opsetid(REFERENCE_DOMAIN, 1)])
    return view


def create_session(
    model: str | Path | onnx.ModelProto,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    session_options: onnxruntime.SessionOptions | None = None,
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session for any graph, with or without AxialAttention nodes.

    Graphs without the node are handed to ORT unchanged (a path stays a path, so external data
    works). Graphs with it run through `to_onnxruntime_view`, in memory: the file is never
    written. `session_options`, if given, gets the onnxruntime-extensions library registered.
    Raises ImportError (naming `pip install onnxruntime-extensions`) when that package is needed
    and missing, ValueError for an AxialAttention node that breaks the spec.
    """
    providers = list(providers)
    name = str(model) if isinstance(model, (str, Path)) else (model.graph.name or "the graph")
    if isinstance(model, (str, Path)):
        path = Path(model)
        # Only the graph is needed to decide; the weights load only if the graph is converted.
        graph_only = onnx.load(path, load_external_data=False)
        check_known_ops(graph_only, name)
        fp8 = has_fp8(graph_only)
        if not has_axial_attention(graph_only):
            return _session(str(path), session_options, providers, name, fp8)
        model = onnx.load(path)
    else:
        check_known_ops(model, name)
        fp8 = has_fp8(model)
        if not has_axial_attention(model):
            return _session(model.SerializeToString(), session_options, providers, name, fp8)

    view = to_onnxruntime_view(model)  # spec errors first: they need no extra package
    library = _register_reference_op()
    import onnxruntime as ort

    if session_options is None:
        options = ort.SessionOptions()
        # The custom op runs its own threads while ORT's pool would spin-wait for the next
        # node: on a busy or small machine (2 cores) the spinning starves the op. Measured in
        # benchmarks/cpu_pipeline.py; pass session_options to choose otherwise.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    else:
        options = session_options
    options.register_custom_ops_library(library)
    return _session(view.SerializeToString(), options, providers, name, fp8)


FP8_TYPES = (
    onnx.TensorProto.FLOAT8E4M3FN,
    onnx.TensorProto.FLOAT8E4M3FNUZ,
    onnx.TensorProto.FLOAT8E5M2,
    onnx.TensorProto.FLOAT8E5M2FNUZ,
)


def has_fp8(model: onnx.ModelProto) -> bool:
    """Whether the graph holds float8 initializers (FP8 Q/DQ zero points or weights)."""
    return any(init.data_type in FP8_TYPES for init in model.graph.initializer)


class SessionError(AxialDeployError, ValueError):
    """ONNX Runtime cannot load a graph (an op it does not know, an invalid graph, ...)."""


@functools.cache
def _ort_schemas() -> frozenset[tuple[str, str]]:
    """(domain, op type) of every op ONNX Runtime has a schema for (ONNX's and its contrib)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return frozenset((s.domain, s.name) for s in ort_state.get_all_operator_schema())


def unknown_ops(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(op type, domain, node name) of each node, in this graph and its subgraphs, that ONNX
    Runtime cannot run: an op with no schema there and no function of that name in the model.
    AxialAttention counts as known (it runs through `to_onnxruntime_view`)."""
    known = _ort_schemas() | {(DOMAIN, OP_TYPE)}
    known |= {(f.domain, f.name) for f in model.functions}
    found: list[tuple[str, str, str]] = []

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            domain = "" if node.domain == "ai.onnx" else node.domain
            if (domain, node.op_type) not in known:
                found.append((node.op_type, node.domain or "ai.onnx", node.name))
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    visit(attribute.g)
                for subgraph in attribute.graphs:
                    visit(subgraph)

    visit(model.graph)
    return found


def check_known_ops(
    model: onnx.ModelProto, name: str, error: type[Exception] = SessionError
) -> None:
    """Refuses, as one line naming the op and its domain, a graph with an op ONNX Runtime does
    not know, before any session is made (ONNX Runtime would fail with its own traceback)."""
    missing = unknown_ops(model)
    if missing:
        op_type, domain, node = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise error(
            f"ONNX Runtime cannot load {name}: node {node or '(unnamed)'} is op {op_type!r} of "
            f"domain {domain!r}, which it does not know{more}; the graph must use ONNX ops (or "
            "AxialAttention): export it again or replace that op"
        )


def _session(source, options, providers: list[str], name: str, fp8: bool = False):
    """An InferenceSession; ONNX Runtime's load errors become one SessionError naming `name`.

    FP8 graphs run with graph optimizations capped at basic: ONNX Runtime 1.32's level-2 CPU
    optimizations (ORT_ENABLE_EXTENDED and up, its default ALL included; its QDQ fusions)
    compute FLOAT8E4M3FN Q/DQ graphs wrongly: the trained axial_deeplab_tiny's FP8 outputs were
    7x their own size off the FP32 ones (PQ 19 instead of 78) against 4% at basic or none
    (tests/test_fp8.py pins it). The same transformer's INT8 mismatches are reported upstream:
    https://github.com/microsoft/onnxruntime/issues/32132."""
    import onnxruntime as ort

    if fp8:
        options = options if options is not None else ort.SessionOptions()
        basic = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if int(options.graph_optimization_level) > int(basic):
            options.graph_optimization_level = basic

    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as error:  # ORT raises its own Fail / InvalidGraph / NoSuchFile types
        if isinstance(error, AxialDeployError):
            raise
        reason = first_line(error)
        raise SessionError(
            f"ONNX Runtime cannot load {name}: {reason}; the graph must use ONNX ops (or "
            "AxialAttention) that ONNX Runtime runs"
        ) from None
