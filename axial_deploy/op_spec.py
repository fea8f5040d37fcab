"""The AxialAttention ONNX node: its format, read from the plugin's spec, and helpers that write
and read it.

plugins/axial_attention/AxialAttention_PluginConfig.yaml (installed as
axial_deploy/data/AxialAttention_PluginConfig.yaml) is the single source of truth: op_type,
domain, plugin version and namespace, every attribute's type and allowed values, the tables'
shapes and the tolerances per dtype all come from it. The rewriter writes nodes with
`axial_attention_node_attributes` (or `make_node`); ONNX Runtime's reference op and the tests
read them back with `read_node_attributes`.

A node has one input (qkv) and one output (y); the constant tables are FLOATS attributes, so the
TensorRT ONNX parser hands them to the plugin creator as PluginFields (see the plugin README).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

SPEC_NAME = "AxialAttention_PluginConfig.yaml"
# The spec's source of truth is plugins/axial_attention/, beside the plugin it specifies. An
# installed package carries a copy in axial_deploy/data/ (CMake's install rule in
# cmake/Install.cmake); an editable install or a bare checkout reads the original.
_PACKAGED_SPEC = Path(__file__).resolve().parent / "data" / SPEC_NAME
_CHECKOUT_SPEC = Path(__file__).resolve().parent.parent / "plugins" / "axial_attention" / SPEC_NAME
SPEC_PATH = _PACKAGED_SPEC if _PACKAGED_SPEC.is_file() else _CHECKOUT_SPEC


def load_spec(path: str | Path = SPEC_PATH) -> dict[str, Any]:
    """The whole spec file as a dict (all versions)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"AxialAttention spec not found at {path} (nor at {_PACKAGED_SPEC}): this "
            "axial-deploy install is incomplete; reinstall it (pip install axial-deploy, or "
            "pip install . / pip install -e . from a checkout)"
        )
    with path.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


_DOCUMENT = load_spec()
PLUGIN_NAME: str = _DOCUMENT["name"]
PLUGIN_VERSION: str = max(_DOCUMENT["versions"], key=int)  # the newest version is written
SPEC: dict[str, Any] = _DOCUMENT["versions"][PLUGIN_VERSION]
PLUGIN_NAMESPACE: str = SPEC["namespace"]
OP_TYPE: str = SPEC["onnx"]["op_type"]
DOMAIN: str = SPEC["onnx"]["domain"]
DOMAIN_VERSION: int = int(SPEC["onnx"]["domain_version"])
VERSION_ATTRIBUTE: str = SPEC["onnx"]["plugin_version_attribute"]
NAMESPACE_ATTRIBUTE: str = SPEC["onnx"]["plugin_namespace_attribute"]
ATTRIBUTES: dict[str, dict[str, Any]] = SPEC["attributes"]
INT_ATTRIBUTES: tuple[str, ...] = tuple(
    name for name, rule in ATTRIBUTES.items() if rule["onnx_type"] == "INT"
)
TABLE_ATTRIBUTES: tuple[str, ...] = tuple(
    name for name, rule in ATTRIBUTES.items() if rule["onnx_type"] == "FLOATS"
)
# Max |y - reference| / max |reference| per I/O dtype.
TOLERANCES: dict[str, float] = {
    dtype: float(entry["max_rel_err"]) for dtype, entry in SPEC["tolerances"].items()
}


def opset_import() -> onnx.OperatorSetIdProto:
    """The opset_import entry a model holding AxialAttention nodes needs (onnx.checker asks)."""
    return onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION)


def check_int_attribute(name: str, value: Any) -> int:
    """`value` as an int, or a ValueError saying which rule of the spec it breaks."""
    rule = ATTRIBUTES[name]
    what = f"{name} ({rule['doc']})"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if "allowed" in rule and value not in rule["allowed"]:
        raise ValueError(f"{what} must be one of {rule['allowed']}, got {value}")
    if value < rule.get("min", -math.inf) or value > rule.get("max", math.inf):
        raise ValueError(f"{what} must lie in [{rule.get('min')}, {rule.get('max')}], got {value}")
    parity = rule.get("parity")
    if parity == "odd" and value % 2 == 0:
        raise ValueError(f"{what} must be odd, got {value}")
    if parity == "zero_or_odd" and value != 0 and value % 2 == 0:
        raise ValueError(f"{what} must be 0 or odd, got {value}")
    return value


def table_shape(name: str, ints: Mapping[str, int]) -> tuple[int, ...]:
    """Shape of table `name` from the int attributes (spec entries: "num_heads * value_depth")."""
    dims = []
    for entry in ATTRIBUTES[name]["shape"]:
        size = 1
        for factor in str(entry).split("*"):
            factor = factor.strip()
            size *= ints[factor] if factor in ints else int(factor)
        dims.append(size)
    return tuple(dims)


def _spec_shape(name: str) -> str:
    return "[" + ", ".join(str(entry) for entry in ATTRIBUTES[name]["shape"]) + "]"


def _check_table(name: str, value: Any, ints: Mapping[str, int]) -> np.ndarray:
    table = np.asarray(value)
    if not (np.issubdtype(table.dtype, np.floating) or np.issubdtype(table.dtype, np.integer)):
        raise ValueError(f"{name} must be a real-valued array, got dtype {table.dtype}")
    expected = table_shape(name, ints)
    if table.shape != expected:
        raise ValueError(
            f"{name} must have shape {_spec_shape(name)} = {list(expected)}, "
            f"got {list(table.shape)}"
        )
    table = table.astype(np.float32)  # plugin fields are float32 whatever the I/O dtype
    if not np.all(np.isfinite(table)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return table


def axial_attention_node_attributes(
    rel_q: Any,
    rel_k: Any,
    rel_v: Any,
    logit_scale: Any,
    out_bias: Any,
    axis: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    span: int,
) -> dict[str, int | str | list[float]]:
    """The AxialAttention node's attributes, checked against the spec.

    Tables are arrays (numpy, or anything np.asarray takes) of the contract's shapes: rel_q and
    rel_k [G, Dq, T], rel_v [G, Dv, T], logit_scale [G], out_bias [G * Dv]; T comes from rel_q.
    Returns plain values (ints, strings, lists of float32 values) that onnx.helper.make_node and
    onnx_graphsurgeon's Node(attrs=...) both turn into INT, STRING and FLOATS attributes.
    Raises ValueError naming the offending attribute.
    """
    rel_q_shape = np.shape(rel_q)
    if len(rel_q_shape) != 3:
        raise ValueError(f"rel_q must have shape {_spec_shape('rel_q')}, got {list(rel_q_shape)}")
    given = {
        "axis": axis,
        "num_heads": num_heads,
        "key_depth": key_depth,
        "value_depth": value_depth,
        "span": span,
        "table_length": rel_q_shape[-1],
    }
    ints = {name: check_int_attribute(name, given[name]) for name in INT_ATTRIBUTES}
    values = {
        "rel_q": rel_q,
        "rel_k": rel_k,
        "rel_v": rel_v,
        "logit_scale": logit_scale,
        "out_bias": out_bias,
    }
    tables = {name: _check_table(name, values[name], ints) for name in TABLE_ATTRIBUTES}
    return {
        **ints,
        **{name: table.ravel().tolist() for name, table in tables.items()},
        VERSION_ATTRIBUTE: PLUGIN_VERSION,
        NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE,
    }


def make_node(
    qkv: str,
    y: str,
    *,
    rel_q: Any,
    rel_k: Any,
    rel_v: Any,
    logit_scale: Any,
    out_bias: Any,
    axis: int,
    num_heads: int,
    key_depth: int,
    value_depth: int,
    span: int,
    name: str = "",
) -> onnx.NodeProto:
    """An AxialAttention NodeProto reading tensor `qkv` and writing tensor `y`.

    The model that holds it needs `opset_import()` among its opset imports.
    """
    attributes = axial_attention_node_attributes(
        rel_q, rel_k, rel_v, logit_scale, out_bias, axis, num_heads, key_depth, value_depth, span
    )
    return onnx.helper.make_node(
        OP_TYPE, [qkv], [y], name=name or None, domain=DOMAIN, **attributes
    )


_ATTRIBUTE_TYPES = {
    "INT": onnx.AttributeProto.INT,
    "FLOATS": onnx.AttributeProto.FLOATS,
    "STRING": onnx.AttributeProto.STRING,
}


def node_label(node: onnx.NodeProto) -> str:
    """How messages name a node: its name, else its first output."""
    return f"{node.op_type} node {node.name or (node.output[0] if node.output else '?')!r}"


def read_node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """The inverse of `axial_attention_node_attributes`: numpy float32 tables in their shapes and
    the int attributes (axis, num_heads, key_depth, value_depth, span), checked against the spec.

    Raises ValueError naming the node and the problem.
    """
    try:
        return _read_node_attributes(node)
    except ValueError as error:
        raise ValueError(f"{node_label(node)}: {error}") from None


def _read_node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    if node.op_type != OP_TYPE or node.domain != DOMAIN:
        raise ValueError(
            f"expected op_type {OP_TYPE!r} in domain {DOMAIN!r}, got domain {node.domain!r}"
        )
    if len(node.input) != 1 or len(node.output) != 1:
        raise ValueError(
            f"must have one input (qkv) and one output (y), has {len(node.input)} inputs and "
            f"{len(node.output)} outputs"
        )
    found = {attribute.name: attribute for attribute in node.attribute}
    expected_types = {name: rule["onnx_type"] for name, rule in ATTRIBUTES.items()}
    expected_types[VERSION_ATTRIBUTE] = expected_types[NAMESPACE_ATTRIBUTE] = "STRING"
    missing = [name for name in expected_types if name not in found]
    if missing:
        raise ValueError(f"missing attributes {missing}")
    unexpected = sorted(set(found) - set(expected_types))
    if unexpected:
        raise ValueError(f"unexpected attributes {unexpected} (spec version {PLUGIN_VERSION})")
    for name, type_name in expected_types.items():
        if found[name].type != _ATTRIBUTE_TYPES[type_name]:
            actual = onnx.AttributeProto.AttributeType.Name(found[name].type)
            raise ValueError(f"attribute {name} must be {type_name}, got {actual}")

    version = found[VERSION_ATTRIBUTE].s.decode()
    if version != PLUGIN_VERSION:
        raise ValueError(
            f"{VERSION_ATTRIBUTE} is {version!r}; this axial_deploy reads {PLUGIN_VERSION!r}"
        )
    namespace = found[NAMESPACE_ATTRIBUTE].s.decode()
    if namespace != PLUGIN_NAMESPACE:
        raise ValueError(f"{NAMESPACE_ATTRIBUTE} is {namespace!r}, expected {PLUGIN_NAMESPACE!r}")

    ints = {name: check_int_attribute(name, found[name].i) for name in INT_ATTRIBUTES}
    result: dict[str, Any] = {}
    for name in TABLE_ATTRIBUTES:
        shape = table_shape(name, ints)
        flat = np.asarray(found[name].floats, dtype=np.float32)
        if flat.size != math.prod(shape):
            raise ValueError(
                f"{name} holds {flat.size} values, but {_spec_shape(name)} = {list(shape)} "
                f"needs {math.prod(shape)}"
            )
        result[name] = _check_table(name, flat.reshape(shape), ints)
    result.update({name: value for name, value in ints.items() if name != "table_length"})
    return result
