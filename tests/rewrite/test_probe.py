"""Probe and verify: the records each probe family reads from a located layer, and the
per-layer check that accepts or refuses what was extracted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from axial_deploy.op.spec import AxialAttentionAttributes
from axial_deploy.rewrite.locate import GraphIndex, constant_values, locate_layers, tensor_shapes
from axial_deploy.rewrite.pieces import PieceExtractor
from axial_deploy.rewrite.probe import (
    LayerPieces,
    conv_affine,
    extract_layer,
    probe_roles,
    probe_window,
    window_keys,
)
from axial_deploy.rewrite.records import Refusal
from axial_deploy.rewrite.verify import VERIFY_RTOL, check_reproduces, verify_layer

DATA = Path(__file__).parent.parent / "data"
PROBE_SHAPE = (1, 8, 8, 8)  # the lines [N, other, C, L] of the 8-channel 8 x 8 attention input


@pytest.fixture(scope="module")
def block():
    """The reference AxialBlock (Einsum-based, global attention over 8 positions, 2 heads of
    key depth 2 and value depth 4), located."""
    model = onnx.load(DATA / "reference_axial_block.onnx")
    index = GraphIndex(model.graph)
    _, candidates = locate_layers(index)
    assert tensor_shapes(model, [c.record.input for c in candidates]) == {
        c.record.input: PROBE_SHAPE for c in candidates
    }
    return model, index, PieceExtractor(model), constant_values(model), candidates


def test_window_and_roles_records(block):
    _, index, extractor, values, candidates = block
    candidate = candidates[0]
    _, _, qkv_name = conv_affine(index, candidate.conv, values)
    pieces = LayerPieces(
        extractor,
        candidate.record.input,
        PROBE_SHAPE,
        qkv_name,
        candidate.softmax,
        candidate.record.output,
    )
    geometry = pieces.geometry
    assert (geometry.lines, geometry.length, geometry.heads, geometry.width) == (8, 8, 2, 8)
    window = probe_window(pieces)
    assert window.is_global and window.span == 0 and window.radius == 7
    np.testing.assert_array_equal(window.offsets, np.arange(-7, 8))
    np.testing.assert_array_equal(window.keys, window_keys(8, 8, True))
    roles = probe_roles(pieces, window)
    assert (roles.key_depth, roles.value_depth) == (2, 4)
    assigned = np.concatenate([*roles.query, *roles.key, roles.value])
    assert sorted(assigned.tolist()) == list(range(geometry.channels))  # each channel once


def test_local_window_keys_are_clipped_to_the_line():
    keys = window_keys(length=4, width=3, is_global=False)
    np.testing.assert_array_equal(keys, [[-1, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, -1]])


def test_extracted_layers_reproduce_the_block_and_a_wrong_one_is_refused(block):
    _, index, extractor, values, candidates = block
    for candidate in candidates:
        x, y = candidate.record.input, candidate.record.output
        layer, info = extract_layer(
            extractor, index, candidate.conv, x, PROBE_SHAPE, y, candidate.softmax, values
        )
        # global tables that do not reach clamped ends: exact only up to the probed length
        assert info == {"line_length": 8, "line_limit": 8}
        assert layer.attributes == AxialAttentionAttributes(
            axis=3, num_heads=2, key_depth=2, value_depth=4, span=0
        )
        assert layer.weight.shape == (2 * (2 * 2 + 4), 8)
        assert [table.shape[-1] for table in layer.tables()[:3]] == [15, 15, 15]
        error = verify_layer(extractor, x, PROBE_SHAPE, y, layer, seed=3)
        assert error < VERIFY_RTOL
        check_reproduces(error)

        wrong = dataclasses.replace(layer, logit_scale=-layer.logit_scale)
        wrong_error = verify_layer(extractor, x, PROBE_SHAPE, y, wrong, seed=3)
        assert wrong_error > 100 * VERIFY_RTOL
        with pytest.raises(Refusal, match="does not reproduce the layer"):
            check_reproduces(wrong_error)


def test_a_softmax_over_the_wrong_axis_is_refused(block):
    model, _, _, _, candidates = block
    altered = onnx.ModelProto()
    altered.CopyFrom(model)
    name = candidates[0].softmax.name
    softmax = next(node for node in altered.graph.node if node.name == name)
    del softmax.attribute[:]
    softmax.attribute.append(onnx.helper.make_attribute("axis", 2))
    index = GraphIndex(altered.graph)
    _, [candidate, _] = locate_layers(index)
    values = constant_values(altered)
    _, _, qkv_name = conv_affine(index, candidate.conv, values)
    with pytest.raises(Refusal, match="does not normalise the last axis"):
        LayerPieces(
            PieceExtractor(altered),
            candidate.record.input,
            PROBE_SHAPE,
            qkv_name,
            candidate.softmax,
            candidate.record.output,
        )
