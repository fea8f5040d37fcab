"""The AxialAttention attribute type (`op_spec.AxialAttentionAttributes`): built from the spec's
rules, refusing bad values with the field and its rule, derived quantities, and the round trips
to ONNX node attributes and to the plugin's field list; the keyword form the documented
functions keep gives the same results as the attribute form."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from axial_deploy.models.axial_attention import axial_attention_op
from axial_deploy.native import ParamsStruct
from axial_deploy.op import spec as op_spec
from axial_deploy.op.kernel import DataType, KernelParams
from axial_deploy.op.spec import AxialAttentionAttributes, OpSpecError

VALID = {"axis": 3, "num_heads": 2, "key_depth": 3, "value_depth": 4, "span": 5}


def tables(attributes: AxialAttentionAttributes, table_length: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    shapes = attributes.table_shapes(table_length)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


def test_fields_are_the_specs_int_attributes_but_table_length():
    names = tuple(field.name for field in dataclasses.fields(AxialAttentionAttributes))
    assert names == op_spec.OPERATOR_ATTRIBUTES
    assert (*names, op_spec.TABLE_LENGTH) == op_spec.INT_ATTRIBUTES


def test_values_become_plain_ints_and_the_type_is_frozen():
    attributes = AxialAttentionAttributes(**{k: np.int64(v) for k, v in VALID.items()})
    assert attributes.as_dict() == VALID
    assert all(type(v) is int for v in attributes.as_tuple())
    with pytest.raises(dataclasses.FrozenInstanceError):
        attributes.span = 7  # type: ignore[misc]
    assert AxialAttentionAttributes(**VALID) == attributes  # hashable value type
    assert len({attributes, AxialAttentionAttributes(**VALID)}) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"axis": 1}, r"^axis \(attended axis .*\) must be one of \[2, 3\], got 1$"),
        (
            {"num_heads": 0},
            r"^num_heads \(G, attention heads\) must lie in \[1, 2147483647\], got 0$",
        ),
        ({"key_depth": -2}, r"^key_depth .* must lie in \[1, 2147483647\], got -2$"),
        ({"value_depth": 2**31}, r"^value_depth .* must lie in \[1, 2147483647\], got 2147483648$"),
        ({"span": -1}, r"^span .* must lie in \[0, 2147483647\], got -1$"),
        ({"span": 4}, r"^span .* must be 0 or odd, got 4$"),
        ({"span": 2.0}, r"^span .* must be an integer, got 2\.0$"),
        ({"axis": True}, r"^axis .* must be an integer, got True$"),
    ],
)
def test_bad_values_name_the_field_and_the_specs_range(change, message):
    with pytest.raises(OpSpecError, match=message) as info:
        AxialAttentionAttributes(**{**VALID, **change})
    assert isinstance(info.value, ValueError)  # callers that caught ValueError still do
    assert "\n" not in str(info.value)


def test_ranges_in_messages_come_from_the_spec(monkeypatch):
    """The rule is read from the spec, not written in the type: change the spec, the check and
    its message follow."""
    narrowed = {**op_spec.ATTRIBUTES["num_heads"], "max": 8}
    monkeypatch.setitem(op_spec.ATTRIBUTES, "num_heads", narrowed)
    with pytest.raises(OpSpecError, match=r"num_heads .* must lie in \[1, 8\], got 9"):
        AxialAttentionAttributes(**{**VALID, "num_heads": 9})


def test_derived_quantities():
    attributes = AxialAttentionAttributes(**VALID)
    assert attributes.qkv_channels == 2 * (2 * 3 + 4)
    assert attributes.out_channels == 2 * 4
    assert not attributes.is_global
    assert [attributes.window(length) for length in (1, 2, 3, 9)] == [1, 3, 5, 5]
    whole = dataclasses.replace(attributes, span=op_spec.GLOBAL_SPAN)
    assert whole.is_global and [whole.window(length) for length in (1, 4)] == [1, 7]
    assert attributes.table_shapes(9) == {
        "rel_q": (2, 3, 9),
        "rel_k": (2, 3, 9),
        "rel_v": (2, 4, 9),
        "logit_scale": (2,),
        "out_bias": (8,),
    }
    assert attributes.int_attributes(9) == {**VALID, "table_length": 9}
    with pytest.raises(OpSpecError, match=r"table_length .* must be odd, got 8"):
        attributes.int_attributes(8)
    with pytest.raises(OpSpecError, match=r"span .* must be 0 or odd, got 6"):
        dataclasses.replace(attributes, span=6)  # replace re-checks


def test_onnx_node_round_trip():
    attributes = AxialAttentionAttributes(**VALID)
    values = tables(attributes)
    node = op_spec.make_node("qkv", "y", **values, attributes=attributes, name="att")
    read_tables, read_attributes = op_spec.read_node(node)
    assert read_attributes == attributes == AxialAttentionAttributes.from_node(node)
    for name, table in values.items():
        np.testing.assert_array_equal(read_tables[name], table)
    onnx_ints = {a.name: a.i for a in node.attribute if a.name in op_spec.INT_ATTRIBUTES}
    assert onnx_ints == attributes.int_attributes(7)
    # from the node's attributes as a mapping (onnx_graphsurgeon's Node.attrs, the flat dict)
    assert AxialAttentionAttributes.from_mapping(op_spec.read_node_attributes(node)) == attributes
    with pytest.raises(OpSpecError, match=r"missing attributes \['span'\]"):
        AxialAttentionAttributes.from_mapping({k: v for k, v in VALID.items() if k != "span"})


def test_plugin_fields_round_trip_in_the_specs_order_and_types():
    attributes = AxialAttentionAttributes(**VALID)
    values = tables(attributes)
    fields = op_spec.plugin_fields(values, attributes)
    assert [f.name for f in fields] == list(op_spec.ATTRIBUTES)
    for f in fields:
        assert f.field_type == op_spec.ATTRIBUTES[f.name]["field_type"]
        assert f.data.dtype == (np.int32 if f.field_type == "kINT32" else np.float32)
        assert f.data.ndim == 1
    ints = {f.name: int(f.data[0]) for f in fields if f.field_type == "kINT32"}
    assert ints == attributes.int_attributes(7)
    read_tables, read_attributes = op_spec.read_plugin_fields(fields)
    assert read_attributes == attributes
    for name, table in values.items():
        np.testing.assert_array_equal(read_tables[name], table)
    # the same values the ONNX node carries
    node_values = op_spec.axial_attention_node_attributes(*values.values(), attributes)
    for f in fields:
        np.testing.assert_array_equal(f.data, np.asarray(node_values[f.name], f.data.dtype))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda fs: fs[1:], r"missing fields \['axis'\]"),
        (lambda fs: [*fs, fs[0]], "field axis is given twice"),
        (lambda fs: [*fs, op_spec.PluginField("spam", "kINT32", np.ones(1, np.int32))], "spam"),
        (
            lambda fs: [
                op_spec.PluginField("span", "kINT32", np.array([4], np.int32)),
                *fs[:4],
                *fs[5:],
            ],
            r"span .* must be 0 or odd, got 4",
        ),
        (
            lambda fs: [
                *fs[:5],
                op_spec.PluginField("table_length", "kFLOAT32", np.ones(1)),
                *fs[6:],
            ],
            "field table_length must be kINT32, got kFLOAT32",
        ),
        (
            lambda fs: [
                *fs[:5],
                op_spec.PluginField("table_length", "kINT32", np.array([7, 7])),
                *fs[6:],
            ],
            "field table_length must hold one value, holds 2",
        ),
        (
            lambda fs: [*fs[:-1], op_spec.PluginField("out_bias", "kFLOAT32", np.ones(3))],
            r"out_bias holds 3 values",
        ),
    ],
)
def test_bad_plugin_fields_are_refused_naming_the_field(edit, message):
    attributes = AxialAttentionAttributes(**VALID)
    fields = op_spec.plugin_fields(tables(attributes), attributes)
    with pytest.raises(OpSpecError, match=message):
        op_spec.read_plugin_fields(edit(fields))


def test_keyword_form_equals_the_attribute_form():
    """The documented functions keep their keyword form (axis=..., ...); it is the same call."""
    attributes = AxialAttentionAttributes(**VALID)
    values = tables(attributes)
    rng = np.random.default_rng(1)
    qkv = rng.normal(size=(2, attributes.qkv_channels, 6, 9)).astype(np.float32)
    assert op_spec.make_node("qkv", "y", **values, **VALID) == op_spec.make_node(
        "qkv", "y", **values, attributes=attributes
    )
    arrays = [torch.from_numpy(qkv), *(torch.from_numpy(t) for t in values.values())]
    by_keyword = axial_attention_op(*arrays, **VALID)
    by_type = axial_attention_op(*arrays, attributes)
    assert torch.equal(by_keyword, by_type)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, r"missing the attributes \['axis', 'num_heads', 'key_depth', 'value_depth', 'span'\]"),
        ({**VALID, "spam": 1}, r"got unexpected keyword arguments \['spam'\]"),
        ({"axis": 3}, r"missing the attributes \['num_heads'"),
    ],
)
def test_keyword_form_misuse_is_a_type_error(arguments, message):
    attributes = AxialAttentionAttributes(**VALID)
    values = tables(attributes)
    with pytest.raises(TypeError, match=f"make_node\\(\\) {message}"):
        op_spec.make_node("qkv", "y", **values, **arguments)
    with pytest.raises(TypeError, match="got both attributes and the keywords"):
        op_spec.make_node("qkv", "y", **values, attributes=attributes, span=3)
    with pytest.raises(TypeError, match="must be an AxialAttentionAttributes, got dict"):
        op_spec.make_node("qkv", "y", **values, attributes=VALID)  # type: ignore[arg-type]


def test_keyword_form_compiles_under_torch_compile():
    """The keyword form builds the type inside the traced function: torch.compile with
    fullgraph must trace it (no graph break), as users of the torch op compile it."""
    attributes = AxialAttentionAttributes(**VALID)
    values = [torch.from_numpy(t) for t in tables(attributes).values()]
    qkv = torch.randn(1, attributes.qkv_channels, 5, 6)
    compiled = torch.compile(
        lambda x: axial_attention_op(x, *values, **VALID), fullgraph=True, backend="eager"
    )
    assert torch.equal(compiled(qkv), axial_attention_op(qkv, *values, attributes))


def test_kernel_params_for_a_call_are_the_c_struct_field_for_field():
    attributes = AxialAttentionAttributes(**VALID)
    params = KernelParams.for_call(attributes, (2, 9, 17), 7, DataType.FLOAT16)
    assert params == KernelParams(2, 9, 17, 3, 2, 3, 4, 5, 7, DataType.FLOAT16)
    assert [name for name, _ in ParamsStruct._fields_] == [
        f.name for f in dataclasses.fields(KernelParams)
    ]


def test_rewrite_records_list_the_attributes_flat_in_the_json_report():
    """The report's JSON keeps its flat keys where the attributes field stands."""
    from axial_deploy.rewrite.records import LayerRecord

    record = LayerRecord("sm", rewritten=True, attributes=AxialAttentionAttributes(**VALID))
    flat = record.to_dict()
    assert list(flat)[:8] == ["softmax", "rewritten", "reason", *op_spec.OPERATOR_ATTRIBUTES]
    assert {name: flat[name] for name in VALID} == VALID
    assert "attributes" not in flat
    left = LayerRecord("sm", reason="not attention").to_dict()
    assert all(left[name] is None for name in op_spec.OPERATOR_ATTRIBUTES)
