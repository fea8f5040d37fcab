"""The AxialAttention ONNX node: its format, read from the plugin's spec, and helpers that write
and read it.

plugins/axial_attention/AxialAttention_PluginConfig.yaml (installed as
axial_deploy/data/AxialAttention_PluginConfig.yaml) is the single source of truth: op_type,
domain, plugin version and namespace, every attribute's type and allowed values, the tables'
shapes and the tolerances per dtype all come from it.

`AxialAttentionAttributes` is the operator's one attribute type (axis, num_heads, key_depth,
value_depth, span), checked against the spec when built: every form of the operator (the torch
and numpy references, the ONNX Runtime op, the CUDA kernel and its torch op, the rewriter) takes
its tensors and one of these. The rewriter writes nodes with `axial_attention_node_attributes`
(or `make_node`); ONNX Runtime's op and the tests read them back with `read_node` (tables and
attributes) or `read_node_attributes` (one flat dict). `plugin_fields` / `read_plugin_fields`
are the same values as the plugin's field list.

A node has one input (qkv) and one output (y); the constant tables are FLOATS attributes, so the
TensorRT ONNX parser hands them to the plugin creator as PluginFields (see the plugin README).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from axial_deploy.errors import AxialDeployError

SPEC_NAME = "AxialAttention_PluginConfig.yaml"
# The spec's source of truth is plugins/axial_attention/, beside the plugin it specifies. An
# installed package carries a copy in axial_deploy/data/ (CMake's install rule in
# cmake/Install.cmake); an editable install or a bare checkout reads the original.
_PACKAGE = Path(__file__).resolve().parents[1]  # axial_deploy/
_PACKAGED_SPEC = _PACKAGE / "data" / SPEC_NAME
_CHECKOUT_SPEC = _PACKAGE.parent / "plugins" / "axial_attention" / SPEC_NAME
SPEC_PATH = _PACKAGED_SPEC if _PACKAGED_SPEC.is_file() else _CHECKOUT_SPEC


class OpSpecError(AxialDeployError, ValueError):
    """A value breaks the AxialAttention spec; the message names the attribute and its rule."""


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
TABLE_LENGTH = "table_length"
# The attributes of a call: the INT attributes but table_length, which follows from the tables.
OPERATOR_ATTRIBUTES: tuple[str, ...] = tuple(
    name for name in INT_ATTRIBUTES if name != TABLE_LENGTH
)
GLOBAL_SPAN = 0  # span value meaning "attend over the whole line"
# Max |y - reference| / max |reference| per I/O dtype.
TOLERANCES: dict[str, float] = {
    dtype: float(entry["max_rel_err"]) for dtype, entry in SPEC["tolerances"].items()
}


def opset_import() -> onnx.OperatorSetIdProto:
    """The opset_import entry a model holding AxialAttention nodes needs (onnx.checker asks)."""
    return onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION)


def check_int_attribute(name: str, value: Any) -> int:
    """`value` as an int, or an OpSpecError (a ValueError) naming the attribute, its meaning and
    the rule of the spec it breaks (allowed values or range, parity)."""
    rule = ATTRIBUTES[name]
    what = f"{name} ({rule['doc']})"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise OpSpecError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if "allowed" in rule and value not in rule["allowed"]:
        raise OpSpecError(f"{what} must be one of {rule['allowed']}, got {value}")
    if value < rule.get("min", -math.inf) or value > rule.get("max", math.inf):
        raise OpSpecError(f"{what} must lie in [{rule.get('min')}, {rule.get('max')}], got {value}")
    parity = rule.get("parity")
    if parity == "odd" and value % 2 == 0:
        raise OpSpecError(f"{what} must be odd, got {value}")
    if parity == "zero_or_odd" and value != 0 and value % 2 == 0:
        raise OpSpecError(f"{what} must be 0 or odd, got {value}")
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
        raise OpSpecError(f"{name} must be a real-valued array, got dtype {table.dtype}")
    expected = table_shape(name, ints)
    if table.shape != expected:
        raise OpSpecError(
            f"{name} must have shape {_spec_shape(name)} = {list(expected)}, "
            f"got {list(table.shape)}"
        )
    table = table.astype(np.float32)  # plugin fields are float32 whatever the I/O dtype
    if not np.all(np.isfinite(table)):
        raise OpSpecError(f"{name} holds NaN or infinite values")
    return table


@dataclass(frozen=True)
class AxialAttentionAttributes:
    """The AxialAttention operator's attributes, checked against the spec when built.

    Every form of the operator takes its tensors and one of these: the references
    (`models.axial_attention.axial_attention_op`, `op_reference.axial_attention_numpy`), the
    ONNX Runtime op (`ort_ops.native_axial_attention`), the CUDA kernel
    (`kernel.KernelParams.for_call`), the torch op (`kernel_op.axial_attention`), the folded layer
    and the rewriter. Fields are plain ints (numpy integers are converted), as torch.library
    schemas and ctypes want them. A bad value raises OpSpecError naming the field and the
    spec's rule (allowed values, range, parity).

    The tables' length T is not an attribute of a call: it follows from the tables' shapes;
    `int_attributes(T)` adds it where the ONNX node and the plugin's fields carry it.
    """

    axis: int  # 2 = height, 3 = width of NCHW
    num_heads: int  # G
    key_depth: int  # Dq
    value_depth: int  # Dv
    span: int  # 0 = global, m odd = |key - query| <= (m - 1) / 2

    def __post_init__(self) -> None:
        for name in OPERATOR_ATTRIBUTES:
            object.__setattr__(self, name, check_int_attribute(name, getattr(self, name)))

    @property
    def qkv_channels(self) -> int:
        """Channels of the input qkv: G * (2 Dq + Dv)."""
        return self.num_heads * (2 * self.key_depth + self.value_depth)

    @property
    def out_channels(self) -> int:
        """Channels of the output y: G * Dv."""
        return self.num_heads * self.value_depth

    @property
    def is_global(self) -> bool:
        return self.span == GLOBAL_SPAN

    def window(self, length: int) -> int:
        """Keys in the window of a query on a line of `length` positions (before clipping at
        the line's ends): the span, or 2 L - 1 for a global span (wide enough to reach every key
        from every query), never more than 2 L - 1."""
        return 2 * length - 1 if self.is_global else min(self.span, 2 * length - 1)

    def int_attributes(self, table_length: int) -> dict[str, int]:
        """The INT attributes of the ONNX node (and kINT32 plugin fields), spec order, with the
        tables' length `table_length` checked against the spec."""
        return {
            **self.as_dict(),
            TABLE_LENGTH: check_int_attribute(TABLE_LENGTH, table_length),
        }

    def table_shapes(self, table_length: int) -> dict[str, tuple[int, ...]]:
        """Each table's shape, by name in the spec's order, for tables of length T (T itself is
        not checked here: callers compare shapes and report their own errors)."""
        ints = {**self.as_dict(), TABLE_LENGTH: table_length}
        return {name: table_shape(name, ints) for name in TABLE_ATTRIBUTES}

    def as_dict(self) -> dict[str, int]:
        """The keyword form: {"axis": ..., "num_heads": ..., ...}."""
        return {name: getattr(self, name) for name in OPERATOR_ATTRIBUTES}

    def as_tuple(self) -> tuple[int, ...]:
        """The ints in the order of the torch op's schema (axis, num_heads, key_depth,
        value_depth, span)."""
        return tuple(getattr(self, name) for name in OPERATOR_ATTRIBUTES)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AxialAttentionAttributes:
        """From any mapping that holds the five attributes by name (the ONNX node's attributes
        as onnx_graphsurgeon's Node.attrs or `read_node_attributes` give them, plugin fields);
        other keys are ignored. OpSpecError names the missing ones."""
        missing = [name for name in OPERATOR_ATTRIBUTES if name not in values]
        if missing:
            raise OpSpecError(f"missing attributes {missing}")
        return cls(**{name: values[name] for name in OPERATOR_ATTRIBUTES})

    @classmethod
    def from_node(cls, node: onnx.NodeProto) -> AxialAttentionAttributes:
        """The attributes of an AxialAttention node (the whole node checked, as by `read_node`)."""
        return read_node(node)[1]

    @classmethod
    def resolve(
        cls, attributes: AxialAttentionAttributes | None, keywords: Mapping[str, Any], caller: str
    ) -> AxialAttentionAttributes:
        """`attributes`, or the same built from the keyword form (axis=..., num_heads=...,
        key_depth=..., value_depth=..., span=...) that the documented functions keep taking.
        TypeError, as Python's own, when the call mixes or misspells the two forms."""
        if attributes is not None:
            if keywords:
                raise TypeError(
                    f"{caller}() got both attributes and the keywords {sorted(keywords)}: pass "
                    "one AxialAttentionAttributes, or the five keywords"
                )
            if not isinstance(attributes, cls):
                raise TypeError(
                    f"{caller}() attributes must be an AxialAttentionAttributes, got "
                    f"{type(attributes).__name__}"
                )
            return attributes
        unknown = sorted(set(keywords) - set(OPERATOR_ATTRIBUTES))
        if unknown:
            raise TypeError(f"{caller}() got unexpected keyword arguments {unknown}")
        missing = [name for name in OPERATOR_ATTRIBUTES if name not in keywords]
        if missing:
            raise TypeError(
                f"{caller}() missing the attributes {missing}: pass "
                "attributes=AxialAttentionAttributes(axis=..., num_heads=..., key_depth=..., "
                "value_depth=..., span=...) or all five as keywords"
            )
        return cls(**keywords)


def axial_attention_node_attributes(
    rel_q: Any,
    rel_k: Any,
    rel_v: Any,
    logit_scale: Any,
    out_bias: Any,
    attributes: AxialAttentionAttributes | None = None,
    **keywords: int,
) -> dict[str, int | str | list[float]]:
    """The AxialAttention node's attributes, checked against the spec.

    Tables are arrays (numpy, or anything np.asarray takes) of the contract's shapes: rel_q and
    rel_k [G, Dq, T], rel_v [G, Dv, T], logit_scale [G], out_bias [G * Dv]; T comes from rel_q.
    `attributes` is an AxialAttentionAttributes, or the five ints as keywords (axis=...,
    num_heads=..., key_depth=..., value_depth=..., span=...; the documented form).
    Returns plain values (ints, strings, lists of float32 values) that onnx.helper.make_node and
    onnx_graphsurgeon's Node(attrs=...) both turn into INT, STRING and FLOATS attributes.
    Raises OpSpecError (a ValueError) naming the offending attribute.
    """
    rel_q_shape = np.shape(rel_q)
    if len(rel_q_shape) != 3:
        raise OpSpecError(f"rel_q must have shape {_spec_shape('rel_q')}, got {list(rel_q_shape)}")
    attributes = AxialAttentionAttributes.resolve(
        attributes, keywords, "axial_attention_node_attributes"
    )
    ints = attributes.int_attributes(rel_q_shape[-1])
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
    attributes: AxialAttentionAttributes | None = None,
    name: str = "",
    **keywords: int,
) -> onnx.NodeProto:
    """An AxialAttention NodeProto reading tensor `qkv` and writing tensor `y`; `attributes` as
    in `axial_attention_node_attributes` (or the five ints as keywords).

    The model that holds it needs `opset_import()` among its opset imports.
    """
    attributes = AxialAttentionAttributes.resolve(attributes, keywords, "make_node")
    values = axial_attention_node_attributes(rel_q, rel_k, rel_v, logit_scale, out_bias, attributes)
    return onnx.helper.make_node(OP_TYPE, [qkv], [y], name=name or None, domain=DOMAIN, **values)


_ATTRIBUTE_TYPES = {
    "INT": onnx.AttributeProto.INT,
    "FLOATS": onnx.AttributeProto.FLOATS,
    "STRING": onnx.AttributeProto.STRING,
}


def node_label(node: onnx.NodeProto) -> str:
    """How messages name a node: its name, else its first output."""
    return f"{node.op_type} node {node.name or (node.output[0] if node.output else '?')!r}"


def read_node(node: onnx.NodeProto) -> tuple[dict[str, np.ndarray], AxialAttentionAttributes]:
    """The inverse of `make_node`: the tables (numpy float32 in their shapes, by name) and the
    attributes of an AxialAttention node, checked against the spec.

    Raises OpSpecError (a ValueError) naming the node and the problem.
    """
    try:
        return _read_node(node)
    except ValueError as error:
        raise OpSpecError(f"{node_label(node)}: {error}") from None


def read_node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """The inverse of `axial_attention_node_attributes`, as one dict: the tables (numpy float32
    in their shapes) and the int attributes (axis, num_heads, key_depth, value_depth, span)."""
    tables, attributes = read_node(node)
    return {**tables, **attributes.as_dict()}


def _read_node(node: onnx.NodeProto) -> tuple[dict[str, np.ndarray], AxialAttentionAttributes]:
    if node.op_type != OP_TYPE or node.domain != DOMAIN:
        raise OpSpecError(
            f"expected op_type {OP_TYPE!r} in domain {DOMAIN!r}, got domain {node.domain!r}"
        )
    if len(node.input) != 1 or len(node.output) != 1:
        raise OpSpecError(
            f"must have one input (qkv) and one output (y), has {len(node.input)} inputs and "
            f"{len(node.output)} outputs"
        )
    found = {attribute.name: attribute for attribute in node.attribute}
    expected_types = {name: rule["onnx_type"] for name, rule in ATTRIBUTES.items()}
    expected_types[VERSION_ATTRIBUTE] = expected_types[NAMESPACE_ATTRIBUTE] = "STRING"
    missing = [name for name in expected_types if name not in found]
    if missing:
        raise OpSpecError(f"missing attributes {missing}")
    unexpected = sorted(set(found) - set(expected_types))
    if unexpected:
        raise OpSpecError(f"unexpected attributes {unexpected} (spec version {PLUGIN_VERSION})")
    for name, type_name in expected_types.items():
        if found[name].type != _ATTRIBUTE_TYPES[type_name]:
            actual = onnx.AttributeProto.AttributeType.Name(found[name].type)
            raise OpSpecError(f"attribute {name} must be {type_name}, got {actual}")

    version = found[VERSION_ATTRIBUTE].s.decode()
    if version != PLUGIN_VERSION:
        raise OpSpecError(
            f"{VERSION_ATTRIBUTE} is {version!r}; this axial_deploy reads {PLUGIN_VERSION!r}"
        )
    namespace = found[NAMESPACE_ATTRIBUTE].s.decode()
    if namespace != PLUGIN_NAMESPACE:
        raise OpSpecError(f"{NAMESPACE_ATTRIBUTE} is {namespace!r}, expected {PLUGIN_NAMESPACE!r}")

    ints = {name: check_int_attribute(name, found[name].i) for name in INT_ATTRIBUTES}
    flat = {name: np.asarray(found[name].floats, dtype=np.float32) for name in TABLE_ATTRIBUTES}
    return _tables_from_flat(flat, ints), AxialAttentionAttributes.from_mapping(ints)


def _tables_from_flat(
    flat: Mapping[str, np.ndarray], ints: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """The tables in their shapes from flat float32 values (a node's FLOATS, plugin fields)."""
    tables = {}
    for name in TABLE_ATTRIBUTES:
        shape = table_shape(name, ints)
        values = flat[name]
        if values.size != math.prod(shape):
            raise OpSpecError(
                f"{name} holds {values.size} values, but {_spec_shape(name)} = {list(shape)} "
                f"needs {math.prod(shape)}"
            )
        tables[name] = _check_table(name, values.reshape(shape), ints)
    return tables


# ---------------------------------------------------------------- the plugin's field list

_FIELD_DTYPES = {"kINT32": np.int32, "kFLOAT32": np.float32}


@dataclass(frozen=True)
class PluginField:
    """One field of the plugin's PluginFieldCollection as the spec defines it (what the TensorRT
    ONNX parser hands the creator and getFieldsToSerialize gives back): the spec's name and
    field_type ("kINT32" or "kFLOAT32"), the values flat (int32 or float32 numpy)."""

    name: str
    field_type: str
    data: np.ndarray


def plugin_fields(
    tables: Mapping[str, Any], attributes: AxialAttentionAttributes
) -> list[PluginField]:
    """The plugin's fields in the spec's order: the same values as the ONNX node's attributes
    (checked by the same rules), from the tables by name (rel_q ... out_bias)."""
    missing = [name for name in TABLE_ATTRIBUTES if name not in tables]
    if missing:
        raise OpSpecError(f"missing tables {missing}")
    values = axial_attention_node_attributes(
        *(tables[name] for name in TABLE_ATTRIBUTES), attributes
    )
    fields = []
    for name, rule in ATTRIBUTES.items():
        dtype = _FIELD_DTYPES[rule["field_type"]]
        fields.append(
            PluginField(name, rule["field_type"], np.asarray(values[name], dtype).ravel())
        )
    return fields


def read_plugin_fields(
    fields: Iterable[PluginField],
) -> tuple[dict[str, np.ndarray], AxialAttentionAttributes]:
    """The inverse of `plugin_fields`: the tables and the attributes, checked against the spec
    as the plugin's creator checks them. OpSpecError names the field and the problem."""
    given: dict[str, PluginField] = {}
    for field in fields:
        if field.name in given:
            raise OpSpecError(f"field {field.name} is given twice")
        given[field.name] = field
    missing = [name for name in ATTRIBUTES if name not in given]
    if missing:
        raise OpSpecError(f"missing fields {missing}")
    unexpected = sorted(set(given) - set(ATTRIBUTES))
    if unexpected:
        raise OpSpecError(f"unexpected fields {unexpected} (spec version {PLUGIN_VERSION})")
    for name, rule in ATTRIBUTES.items():
        if given[name].field_type != rule["field_type"]:
            raise OpSpecError(
                f"field {name} must be {rule['field_type']}, got {given[name].field_type}"
            )
    ints = {}
    for name in INT_ATTRIBUTES:
        data = np.asarray(given[name].data).ravel()
        if data.size != 1:
            raise OpSpecError(f"field {name} must hold one value, holds {data.size}")
        ints[name] = check_int_attribute(name, data[0])
    flat = {name: np.asarray(given[name].data, np.float32).ravel() for name in TABLE_ATTRIBUTES}
    return _tables_from_flat(flat, ints), AxialAttentionAttributes.from_mapping(ints)
