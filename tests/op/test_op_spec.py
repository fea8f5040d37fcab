"""The AxialAttention node format: spec file, attribute helpers, round trip, checker."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from axial_deploy.op import spec as op_spec


def random_tables(
    num_heads: int = 2, key_depth: int = 3, value_depth: int = 4, table_length: int = 5, seed=0
):
    rng = np.random.default_rng(seed)
    return {
        "rel_q": rng.normal(size=(num_heads, key_depth, table_length)),
        "rel_k": rng.normal(size=(num_heads, key_depth, table_length)),
        "rel_v": rng.normal(size=(num_heads, value_depth, table_length)),
        "logit_scale": rng.normal(size=num_heads),
        "out_bias": rng.normal(size=num_heads * value_depth),
    }


INTS = {"axis": 3, "num_heads": 2, "key_depth": 3, "value_depth": 4, "span": 3}


def one_node_model(node: onnx.NodeProto, channels: int = 20, out_channels: int = 8):
    graph = helper.make_graph(
        [node],
        "axial_attention",
        [helper.make_tensor_value_info("qkv", TensorProto.FLOAT, ["N", channels, 6, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_channels, 6, 7])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), op_spec.opset_import()]
    )


def test_spec_loads_with_the_contracts_identity():
    assert op_spec.OP_TYPE == op_spec.PLUGIN_NAME == "AxialAttention"
    assert op_spec.DOMAIN == "axial_deploy"
    assert op_spec.PLUGIN_VERSION == "1"
    assert op_spec.PLUGIN_NAMESPACE == "axial_deploy"
    assert op_spec.SPEC["interface"] == "IPluginV3"
    assert op_spec.INT_ATTRIBUTES == (
        "axis",
        "num_heads",
        "key_depth",
        "value_depth",
        "span",
        "table_length",
    )
    assert op_spec.TABLE_ATTRIBUTES == ("rel_q", "rel_k", "rel_v", "logit_scale", "out_bias")
    assert op_spec.TOLERANCES == {"float32": 1e-5, "float16": 2e-3}


def test_missing_spec_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="AxialAttention spec not found"):
        op_spec.load_spec(tmp_path / "nothing.yaml")


def test_attributes_round_trip_exactly():
    tables = random_tables()
    node = op_spec.make_node("qkv", "y", name="att", **tables, **INTS)
    read = op_spec.read_node_attributes(node)
    assert set(read) == set(tables) | set(INTS)
    for name, table in tables.items():
        assert read[name].dtype == np.float32
        np.testing.assert_array_equal(read[name], table.astype(np.float32))
    assert {name: read[name] for name in INTS} == INTS
    # The round trip is an inverse: writing what was read gives the same attributes.
    again = op_spec.axial_attention_node_attributes(**read)
    assert again == op_spec.axial_attention_node_attributes(**tables, **INTS)


def test_attribute_types_are_what_the_tensorrt_parser_converts():
    node = op_spec.make_node("qkv", "y", **random_tables(), **INTS)
    types = {a.name: onnx.AttributeProto.AttributeType.Name(a.type) for a in node.attribute}
    assert types.pop("plugin_version") == types.pop("plugin_namespace") == "STRING"
    assert {name: kind for name, kind in types.items() if kind == "INT"}.keys() == set(
        op_spec.INT_ATTRIBUTES
    )
    assert {name for name, kind in types.items() if kind == "FLOATS"} == set(
        op_spec.TABLE_ATTRIBUTES
    )
    found = {a.name: a for a in node.attribute}
    assert found["plugin_version"].s == b"1" and found["plugin_namespace"].s == b"axial_deploy"
    assert found["table_length"].i == 5
    assert (node.op_type, node.domain, list(node.input), list(node.output)) == (
        "AxialAttention",
        "axial_deploy",
        ["qkv"],
        ["y"],
    )


def test_one_node_model_passes_the_checker_and_survives_serialization():
    model = one_node_model(op_spec.make_node("qkv", "y", name="att", **random_tables(), **INTS))
    onnx.checker.check_model(model, full_check=True)
    loaded = onnx.load_from_string(model.SerializeToString())
    read = op_spec.read_node_attributes(loaded.graph.node[0])
    np.testing.assert_array_equal(read["rel_v"], random_tables()["rel_v"].astype(np.float32))


def test_checker_needs_the_domain_import():
    model = one_node_model(op_spec.make_node("qkv", "y", **random_tables(), **INTS))
    del model.opset_import[1]
    with pytest.raises(onnx.checker.ValidationError, match="axial_deploy"):
        onnx.checker.check_model(model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"span": 4}, r"span .* must be 0 or odd, got 4"),
        ({"span": -1}, r"span .* must lie in \[0, "),
        ({"axis": 1}, r"axis .* must be one of \[2, 3\], got 1"),
        ({"num_heads": 0}, r"num_heads .* must lie in \[1, "),
        ({"key_depth": 2.0}, r"key_depth .* must be an integer"),
        ({"rel_q": np.ones((2, 3, 4))}, r"table_length .* must be odd, got 4"),
        ({"rel_q": np.ones((2, 3))}, r"rel_q must have shape \[num_heads, key_depth, table_"),
        ({"rel_k": np.ones((2, 2, 5))}, r"rel_k must have shape .* = \[2, 3, 5\], got \[2, 2, 5\]"),
        ({"rel_v": np.ones((2, 3, 5))}, r"rel_v must have shape .* = \[2, 4, 5\]"),
        ({"out_bias": np.ones(4)}, r"out_bias must have shape \[num_heads \* value_depth\]"),
        ({"logit_scale": np.array([1.0, np.nan])}, "logit_scale holds NaN"),
        ({"logit_scale": np.array(["a", "b"])}, "logit_scale must be a real-valued array"),
    ],
)
def test_invalid_values_are_refused_with_the_rule(change, message):
    arguments = {**random_tables(), **INTS, **change}
    with pytest.raises(ValueError, match=message):
        op_spec.axial_attention_node_attributes(**arguments)


def _node_with(node: onnx.NodeProto, name: str, attribute: onnx.AttributeProto | None):
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + ([attribute] if attribute is not None else []))
    return node


@pytest.mark.parametrize(
    ("name", "attribute", "message"),
    [
        ("span", None, r"missing attributes \['span'\]"),
        ("plugin_version", helper.make_attribute("plugin_version", "2"), "reads '1'"),
        ("plugin_namespace", helper.make_attribute("plugin_namespace", "x"), "expected 'axial"),
        ("rel_k", helper.make_attribute("rel_k", [1.0, 2.0]), r"rel_k holds 2 values, but"),
        ("axis", helper.make_attribute("axis", 1.5), "attribute axis must be INT, got FLOAT"),
        ("span", helper.make_attribute("span", 2), r"span .* must be 0 or odd"),
        (
            "rel_q",
            helper.make_attribute(
                "rel_q", onnx.numpy_helper.from_array(np.ones((2, 3, 5), np.float32))
            ),
            "attribute rel_q must be FLOATS, got TENSOR",
        ),
        ("extra", helper.make_attribute("extra", 1), r"unexpected attributes \['extra'\]"),
    ],
)
def test_read_refuses_bad_nodes_naming_them(name, attribute, message):
    node = op_spec.make_node("qkv", "y", name="layer3/att", **random_tables(), **INTS)
    node = _node_with(node, name, attribute)
    with pytest.raises(ValueError, match=message) as info:
        op_spec.read_node_attributes(node)
    assert "AxialAttention node 'layer3/att'" in str(info.value)


def test_read_refuses_other_ops():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    with pytest.raises(ValueError, match="expected op_type 'AxialAttention'"):
        op_spec.read_node_attributes(node)
