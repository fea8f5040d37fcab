"""Property-based fuzzing of every reader of a file (issue 25): valid files made by the project
(tests/data/fuzz/, written by tests/data/make_fuzz_corpus.py) are mutated (truncated, bytes
flipped or inserted, keys dropped or retyped, huge sizes, NaN) and each reader must either
read the file or refuse it with one AxialDeployError line naming the file: never another
exception, a hang, or a write.

Bounded in CI (the "ci" profile: a few dozen examples per reader, seconds each); the long
run is one command:

    AXIAL_DEPLOY_FUZZ=long .venv/bin/python -m pytest tests/test_fuzz_readers.py -q
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axial_deploy.errors import AxialDeployError

CORPUS = Path(__file__).parent / "data" / "fuzz"
# ci: bounded for `make test` on 2 cores (all readers together in well under a minute);
# long: AXIAL_DEPLOY_FUZZ=long, for a fuzzing session.
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile(
    "long", max_examples=5000, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
PROFILE = "long" if os.environ.get("AXIAL_DEPLOY_FUZZ") == "long" else "ci"
FUZZ = settings(settings.get_profile(PROFILE))


# ---------------------------------------------------------------- mutations


@st.composite
def mutated_bytes(draw, seed: bytes) -> bytes:
    """`seed` truncated, with bytes flipped, inserted or deleted (one to four edits)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([10**400, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.integers(-5, 2**40), max_size=4), st.builds(dict), st.builds(lambda: [[[]]]),
)  # fmt: skip


def _paths(document, prefix=()):
    """Every (path of keys/indices) to a value in a JSON document."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document[:3]):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_json(draw, seed: bytes) -> bytes:
    """The JSON `seed` with keys dropped or values retyped (NaN, huge numbers, wrong types),
    or its bytes mutated."""
    if draw(st.booleans()):
        return draw(mutated_bytes(seed))
    document = json.loads(seed)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(document))))
        if not path:
            document = draw(JSON_VALUES)
            continue
        parent = document
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):  # an earlier edit changed the document
            continue
    return json.dumps(document).encode()


def refused_cleanly(error: AxialDeployError, path: Path) -> None:
    """A refusal is one line that names the file."""
    text = str(error)
    assert "\n" not in text.strip(), text
    assert str(path) in text or path.name in text, text


def _seed(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


# ---------------------------------------------------------------- JSON records


@FUZZ
@given(data=mutated_json(_seed("manifest.json")))
def test_manifest_reader(tmp_path_factory, data):
    from axial_deploy.engine.manifest import (
        Environment,
        check_manifest,
        manifest_path,
        read_manifest,
    )

    folder = tmp_path_factory.mktemp("manifest")
    engine = folder / "m.engine"
    engine.write_bytes(b"engine")
    manifest_path(engine).write_bytes(data)
    try:
        manifest = read_manifest(engine)
    except AxialDeployError as error:
        return refused_cleanly(error, manifest_path(engine))
    environment = Environment("tensorrt-rtx", "1.7.1.116", None, None, "9.0", "1" * 64)
    # a mismatch is the check's answer (several lines by design); anything else is a bug
    with contextlib.suppress(AxialDeployError):
        check_manifest(manifest, environment, engine_sha256="0" * 64)


@FUZZ
@given(data=mutated_json(_seed("dataset.json")))
def test_dataset_record_reader(tmp_path_factory, data):
    from axial_deploy.datasets.synthetic import read_dataset_record

    folder = tmp_path_factory.mktemp("dataset")
    (folder / "dataset.json").write_bytes(data)
    try:
        record = read_dataset_record(folder)
    except AxialDeployError as error:
        return refused_cleanly(error, folder / "dataset.json")
    height, width = record["size"]  # what train reads from it
    assert height > 0 and width > 0


@FUZZ
@given(data=mutated_json(_seed("panoptic_val.json")))
def test_coco_panoptic_reader(tmp_path_factory, data):
    from axial_deploy.datasets.coco_panoptic import load_split

    folder = tmp_path_factory.mktemp("coco")
    (folder / "panoptic_val.json").write_bytes(data)
    try:
        split = load_split(folder / "panoptic_val.json")
    except AxialDeployError as error:
        return refused_cleanly(error, folder / "panoptic_val.json")
    for annotation in split.annotations:  # what evaluate and train index
        for segment in annotation["segments_info"]:
            assert isinstance(segment["id"], int)


@FUZZ
@given(data=mutated_json(_seed("record.json")))
def test_training_record_reader(tmp_path_factory, data):
    from axial_deploy.models.registry import read_record

    path = tmp_path_factory.mktemp("record") / "axial_deeplab_tiny.json"
    path.write_bytes(data)
    try:
        record = read_record(path)
        record.postprocess_config()  # what evaluate and deploy build from it
    except AxialDeployError as error:
        return refused_cleanly(error, path)
    assert len(record.input_shape) == 4


# ---------------------------------------------------------------- arrays, images, ONNX


@FUZZ
@given(data=mutated_bytes(_seed("array.npy")))
def test_npy_reader(tmp_path_factory, data):
    from axial_deploy.inputs import read_arrays

    path = tmp_path_factory.mktemp("npy") / "x.npy"
    path.write_bytes(data)
    try:
        (array,) = read_arrays(path)
    except AxialDeployError as error:
        return refused_cleanly(error, path)
    assert array.dtype.kind in "biuf"


@FUZZ
@given(data=st.one_of(mutated_bytes(_seed("image.png")), mutated_bytes(_seed("segments.png"))))
def test_image_reader(tmp_path_factory, data):
    from axial_deploy.datasets.coco_panoptic import read_segment_png
    from axial_deploy.models.preprocess import preprocess_for

    path = tmp_path_factory.mktemp("image") / "x.png"
    path.write_bytes(data)
    try:
        pixels = preprocess_for("panoptic", (32, 32)).load(path)
    except AxialDeployError as error:
        refused_cleanly(error, path)
    else:
        assert pixels.shape == (3, 32, 32) and np.isfinite(pixels).all()
    try:
        read_segment_png(path)
    except AxialDeployError as error:
        refused_cleanly(error, path)


@FUZZ
@given(data=mutated_bytes(_seed("model.onnx")))
def test_onnx_reader(tmp_path_factory, data):
    from axial_deploy.artifacts import load_onnx
    from axial_deploy.op.ort import check_known_ops
    from axial_deploy.rewrite.records import RewriteError

    folder = tmp_path_factory.mktemp("onnx")
    path = folder / "m.onnx"
    path.write_bytes(data)
    try:
        model = load_onnx(path, RewriteError)
        check_known_ops(model, str(path), RewriteError)
    except AxialDeployError as error:
        return refused_cleanly(error, path)
    assert sorted(p.name for p in folder.iterdir()) == ["m.onnx"]  # nothing written


def test_the_corpus_reads_cleanly():
    """The seeds themselves are valid: each reader above reads its unmutated seed."""
    from axial_deploy.artifacts import load_onnx, read_json
    from axial_deploy.datasets.coco_panoptic import load_split
    from axial_deploy.engine.manifest import Manifest
    from axial_deploy.inputs import read_arrays
    from axial_deploy.models.registry import read_record

    assert Manifest.from_dict(read_json(CORPUS / "manifest.json")).sm == "9.0"
    assert read_json(CORPUS / "dataset.json")["size"] == [32, 32]
    assert read_record(CORPUS / "record.json").postprocess_config() is not None
    assert load_split(CORPUS / "panoptic_val.json").annotations
    assert read_arrays(CORPUS / "array.npy")[0].shape == (1, 2, 3, 4)
    assert load_onnx(CORPUS / "model.onnx").graph.node


def test_open_image_leaves_the_callers_own_errors_alone(tmp_path):
    """Only opening and decoding become ImageError: a bug in the caller's `with` body is not
    reported as an unreadable image."""
    from PIL import Image

    from axial_deploy.models.preprocess import open_image

    path = tmp_path / "ok.png"
    Image.new("RGB", (4, 3)).save(path)
    with pytest.raises(KeyError, match="caller"), open_image(path):
        raise KeyError("caller")
