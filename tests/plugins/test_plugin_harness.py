"""The TensorRT plugin driven through its whole lifecycle on the CPU.

tests/native/plugin_harness.cpp is compiled together with the real plugin sources against the
public TensorRT headers of each version found under $AXIAL_DEPLOY_TRT_HEADERS (10.3.0, 10.16,
11.1; `.ci/run` points it at ../shared/third_party/tensorrt; never copied into the repo), with the
kernel's CPU emulation in place of the CUDA launch, AddressSanitizer and UBSan. It plays TensorRT:
getCreators -> getFieldNames -> createPlugin(build) -> getOutputDataTypes -> getOutputShapes
(symbolic N, H, W) -> supportsFormatCombination (every dtype x format) -> configurePlugin ->
getWorkspaceSize -> getFieldsToSerialize -> createPlugin(runtime) from a copy of those fields ->
clone -> attachToContext -> onShapeChange -> enqueue (twice) -> destroy. Each step reports
one JSON line; the output of enqueue is compared with the reference op here, and the heap
allocations made inside onShapeChange and enqueue (counted by the harness) must be zero.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kernel_helpers import random_op_inputs, reference
from trt_headers import HEADERS_ENV, include_for

from axial_deploy.op import spec as op_spec
from axial_deploy.op.kernel import REPO_ROOT
from axial_deploy.op.spec import SPEC_PATH, TOLERANCES

VERSIONS = ("10.3.0", "10.16", "11.1")
PLUGIN_DIR = REPO_ROOT / "plugins" / "axial_attention"
NATIVE_DIR = REPO_ROOT / "tests" / "native"
# -O0 for the header-heavy glue and driver (3x faster to compile), -O1 for the emulated kernel.
FLAGS = [
    "-std=c++20", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer", "-pthread", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
]  # fmt: skip
# Leaks are errors too (LeakSanitizer); abort on the first report so the exit status says it.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
}
INT32, FLOAT32 = 5, 1  # PluginFieldType values (the same in every header version)


def cuda_include() -> Path | None:
    """cuda_runtime_api.h for the types the TensorRT headers use (the calls are emulated)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for base in filter(None, candidates):
        if (Path(base) / "include" / "cuda_runtime_api.h").is_file():
            return Path(base) / "include"
    return None


def _compile(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-6000:]}"


@pytest.fixture(scope="session")
def common_objects(tmp_path_factory) -> list[Path]:
    """The version-independent objects (emulated kernel, C ABI), compiled once."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the harness needs a C++20 compiler")
    version = subprocess.run(["g++", "-dumpversion"], capture_output=True, text=True).stdout
    if int(version.split(".")[0] or 0) < 12:
        pytest.skip(f"g++ {version.strip()} is too old: the harness needs g++ >= 12 (_Float16)")
    out = tmp_path_factory.mktemp("harness-common")
    objects = []
    processes = []
    for source in (NATIVE_DIR / "kernel_emulation.cpp", PLUGIN_DIR / "axialAttentionApi.cpp"):
        obj = out / (source.stem + ".o")
        command = ["g++", *FLAGS, "-O1", f"-I{PLUGIN_DIR}", "-c", str(source), "-o", str(obj)]
        processes.append((command, subprocess.Popen(command, stderr=subprocess.PIPE, text=True)))
        objects.append(obj)
    for command, process in processes:
        _, err = process.communicate()
        assert process.returncode == 0, f"{' '.join(command)}\n{err[-6000:]}"
    return objects


_harnesses: dict[str, Path] = {}


@pytest.fixture(params=VERSIONS, scope="session")
def harness(request, common_objects, tmp_path_factory) -> Path:
    """plugin_harness compiled against one TensorRT version's headers (once per session)."""
    version = request.param
    if version in _harnesses:
        return _harnesses[version]
    include = include_for(version)
    if include is None:
        pytest.skip(
            f"TensorRT {version} headers not found: set {HEADERS_ENV} to the folder holding "
            "<version>/include (e.g. ../shared/third_party/tensorrt)"
        )
    cuda = cuda_include()
    if cuda is None:
        pytest.skip("cuda_runtime_api.h not found (CUDA toolkit headers; set CUDA_HOME)")
    out = tmp_path_factory.mktemp(f"harness-{version}")
    includes = ["-isystem", str(include), "-isystem", str(cuda)]
    includes += [f"-I{PLUGIN_DIR}", f"-I{NATIVE_DIR}"]
    objects, processes = [], []
    for source in (PLUGIN_DIR / "axialAttentionPlugin.cpp", NATIVE_DIR / "plugin_harness.cpp"):
        obj = out / (source.stem + ".o")
        command = ["g++", *FLAGS, "-O0", *includes, "-c", str(source), "-o", str(obj)]
        processes.append((command, subprocess.Popen(command, stderr=subprocess.PIPE, text=True)))
        objects.append(obj)
    for command, process in processes:
        _, err = process.communicate()
        assert process.returncode == 0, f"{' '.join(command)}\n{err[-6000:]}"
    binary = out / "plugin_harness"
    link = ["g++", *FLAGS, *map(str, objects), *map(str, common_objects), "-ldl"]
    _compile([*link, "-o", str(binary)])  # -ldl: the glue dlopens (glibc < 2.34 needs it)
    _harnesses[version] = binary
    return binary


def run_harness(binary: Path, *args) -> list[dict]:
    env = {**os.environ, **SANITIZER_ENV}
    result = subprocess.run(
        [str(binary), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-8000:]}"
    assert "runtime error" not in result.stderr, result.stderr[-8000:]  # UBSan
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------- field collections


def field(name: str | None, ftype: int, values=None, *, length: int | None = None, data=b""):
    """One PluginField: values packed as int32 / float32, or raw `data` with a given `length`."""
    if values is not None:
        array = np.asarray(values, dtype="<i4" if ftype == INT32 else "<f4").ravel()
        data, length = array.tobytes(), array.size if length is None else length
    return name, ftype, length, data


def pack_collections(collections: list[list | None]) -> bytes:
    """The harness's COLLECTIONS format (None: no collection at all; a tuple (nbFields, fields)
    gives an nbFields that differs from the fields stored)."""
    out = [struct.pack("<i", len(collections))]
    for collection in collections:
        if collection is None:
            out.append(struct.pack("<i", -(2**31)))
            continue
        nb_fields, fields = collection if isinstance(collection, tuple) else (None, collection)
        nb_fields = len(fields) if nb_fields is None else nb_fields
        out.append(struct.pack("<ii", nb_fields, len(fields)))
        for name, ftype, length, data in fields:
            encoded = b"" if name is None else name.encode()
            out.append(struct.pack("<i", -1 if name is None else len(encoded)) + encoded)
            out.append(struct.pack("<iii", ftype, length, -1 if data is None else len(data)))
            out.append(data or b"")
    return b"".join(out)


def op_fields(attrs: op_spec.AxialAttentionAttributes, tables) -> list:
    """The spec's field list (`op_spec.plugin_fields`, what the ONNX parser hands the creator)."""
    named = {n: t.numpy() for n, t in zip(op_spec.TABLE_ATTRIBUTES, tables, strict=True)}
    types = {"kINT32": INT32, "kFLOAT32": FLOAT32}
    return [field(f.name, types[f.field_type], f.data) for f in op_spec.plugin_fields(named, attrs)]


def pack_tensor(qkv: torch.Tensor) -> bytes:
    dtype = {torch.float32: 0, torch.float16: 1}[qkv.dtype]
    header = struct.pack("<5i", dtype, *qkv.shape)
    return header + qkv.float().numpy().astype("<f4").tobytes()


# ---------------------------------------------------------------- tests


def test_fields_match_spec(harness):
    """The creator's field list (what getFieldNames returns at run time) and the plugin's field
    table (ranges, parities, table shapes) are the spec's."""
    report = run_harness(harness, "fields")[0]
    spec = yaml.safe_load(SPEC_PATH.read_text())
    version = spec["versions"]["1"]
    assert (report["name"], report["version"], report["namespace"]) == (
        spec["name"],
        "1",
        version["namespace"],
    )
    listed = {f["name"]: f["type"] for f in report["fields"]}
    assert len(listed) == len(report["fields"]), "a field is listed twice"
    attributes = version["attributes"]
    assert listed == {name: a["field_type"] for name, a in attributes.items()}
    parities = {None: 0, "odd": 1, "zero_or_odd": 2}
    for entry in report["table"]:
        attr = attributes[entry["name"]]
        assert entry["type"] == attr["field_type"], entry
        if entry["type"] == "kINT32":
            allowed = attr.get("allowed")
            low, high = (min(allowed), max(allowed)) if allowed else (attr["min"], attr["max"])
            assert allowed is None or sorted(allowed) == list(range(low, high + 1)), attr
            assert (entry["min"], entry["max"]) == (low, high), entry
            assert entry["parity"] == parities[attr.get("parity")], entry
        else:
            dims = [d.strip() for term in attr["shape"] for d in str(term).split("*")]
            assert entry["shape"] == dims, entry


# (N, H, W, axis, G, Dq, Dv, span, T): batch > 1, both axes, local and global spans, tables
# shorter and longer than the lines.
CASES = [
    (2, 7, 9, 3, 2, 4, 8, 3, 5),
    (2, 7, 9, 2, 2, 4, 8, 3, 5),
    (3, 6, 11, 3, 2, 3, 5, 0, 9),
    (2, 10, 5, 2, 1, 8, 16, 0, 25),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_lifecycle_matches_reference(harness, tmp_path, case, dtype):
    n, h, w, axis, g, dq, dv, span, t = case
    qkv, tables = random_op_inputs(n, h, w, g, dq, dv, t, dtype=dtype, seed=sum(case))
    attrs = op_spec.AxialAttentionAttributes(axis, g, dq, dv, span)
    (tmp_path / "fields.bin").write_bytes(pack_collections([op_fields(attrs, tables)]))
    (tmp_path / "qkv.bin").write_bytes(pack_tensor(qkv))
    out = tmp_path / "y.bin"
    steps = run_harness(harness, "lifecycle", tmp_path / "fields.bin", tmp_path / "qkv.bin", out)
    failed = [s for s in steps if not s["ok"]]
    assert not failed, json.dumps(failed, indent=1)
    names = [s["step"] for s in steps]
    assert names[-1] == "destroy", names  # the run reached the end
    # no heap allocation (so no message formatting) in successful onShapeChange / enqueue calls,
    # counted by the harness's replaced operator new
    hot = next(s for s in steps if s["step"] == "hot path allocates nothing")
    assert hot["detail"] == "heap allocations: onShapeChange 0, enqueue 0", hot
    for step in steps:  # a successful lifecycle logs no error
        refusal = "refused" in step["step"]
        assert refusal or not any(m.startswith("E:") for m in step["log"]), step
    y = torch.from_numpy(np.fromfile(out, dtype="<f4")).reshape(n, g * dv, h, w)
    expected = reference(qkv, tables, attrs)
    assert not torch.isnan(y).any(), "output left unwritten (poisoned with NaN)"
    err = ((y.double() - expected).abs().max() / expected.abs().max()).item()
    tolerance = TOLERANCES["float32" if dtype == torch.float32 else "float16"]
    assert err < tolerance, err


def _bad_field_cases() -> list[tuple[str, object, str]]:
    """(what, collection, the field name the refusal must mention)."""
    _, tables = random_op_inputs(1, 3, 4, 2, 4, 8, 5)
    attrs = op_spec.AxialAttentionAttributes(
        axis=3, num_heads=2, key_depth=4, value_depth=8, span=3
    )
    good = op_fields(attrs, tables)
    names = [f[0] for f in good]
    cases: list[tuple[str, object, str]] = [("valid", good, "")]

    def replaced(name, new):
        return [new if f[0] == name else f for f in good]

    for name, ftype, length, data in good:
        cases.append((f"missing {name}", [f for f in good if f[0] != name], name))
        other = FLOAT32 if ftype == INT32 else INT32
        cases.append((f"{name} wrong type", replaced(name, (name, other, length, data)), name))
        cases.append(
            (f"{name} too long", replaced(name, (name, ftype, length + 1, data + b"\0" * 4)), name)
        )
        if length > 1:
            cases.append(
                (f"{name} too short", replaced(name, (name, ftype, length - 1, data[:-4])), name)
            )
        cases.append((f"{name} negative length", replaced(name, (name, ftype, -4, data)), name))
        cases.append((f"{name} null data", replaced(name, (name, ftype, length, None)), name))
        cases.append((f"{name} twice", [*good, (name, ftype, length, data)], name))
    for name in ("num_heads", "key_depth", "value_depth", "span", "table_length"):
        cases.append((f"{name} negative", replaced(name, field(name, INT32, [-3])), name))
    for name in ("num_heads", "key_depth", "table_length"):
        cases.append((f"{name} zero", replaced(name, field(name, INT32, [0])), name))
    cases.append(("axis 1", replaced("axis", field("axis", INT32, [1])), "axis"))
    cases.append(("span even", replaced("span", field("span", INT32, [4])), "span"))
    even = field("table_length", INT32, [4])
    cases.append(("table_length even", replaced("table_length", even), "table_length"))
    # sizes whose table lengths overflow 64-bit products
    huge = [field(n, INT32, [2**31 - 1]) for n in ("num_heads", "key_depth", "value_depth")]
    huge.append(field("table_length", INT32, [2**31 - 1]))
    resized = {"num_heads", "key_depth", "value_depth", "table_length"}
    huge_fields = [*huge, *(f for f in good if f[0] not in resized)]
    cases.append(("huge sizes", huge_fields, "rel_q"))
    cases.append(("no collection", None, "fields"))
    cases.append(("null name", [*good, (None, INT32, 1, struct.pack("<i", 1))], "name"))
    cases.append(("nbFields negative", (-1, good), "fields"))
    cases.append(("null fields pointer", (3, []), "fields"))
    cases.append(("unknown field", [*good, field("spam", INT32, [1])], "spam"))
    assert len({c[0] for c in cases}) == len(cases)
    assert len(names) == 11
    return cases


def test_bad_fields_are_refused_naming_the_field(harness, tmp_path):
    """Every malformed collection is refused in both phases (nullptr, never a crash), with one
    logged error that names the offending field; an unknown extra field is only a warning."""
    cases = _bad_field_cases()
    (tmp_path / "bad.bin").write_bytes(pack_collections([c[1] for c in cases]))
    results = run_harness(harness, "create", tmp_path / "bad.bin")
    assert len(results) == len(cases), results[-1]
    problems = []
    for (what, _, name), result in zip(cases, results, strict=True):
        errors = [m for m in result["log"] if m.startswith("E:")]
        if what in ("valid", "unknown field"):
            ok = result["detail"] == "build=created runtime=created" and not errors
            if what == "unknown field":
                ok = ok and any("spam" in m for m in result["log"])
        else:
            ok = result["detail"] == "build=refused runtime=refused"
            ok = ok and len(errors) == 2 and all(name in m for m in errors)
        if not ok:
            problems.append((what, result))
    assert not problems, json.dumps(problems, indent=1)


@pytest.mark.slow
def test_plugin_library_exports_only_its_entry_points(tmp_path):
    """The CMake-built plugin library (one architecture, warnings as errors) links without
    libnvinfer (the glue uses the headers' inline code only) and exports getCreators,
    setLoggerFinder and the kernel's C ABI, nothing else: no C++ internals, no cudart."""
    include = next((d for d in map(include_for, reversed(VERSIONS)) if d is not None), None)
    if include is None:
        pytest.skip(f"no TensorRT headers: set {HEADERS_ENV}")
    for tool in ("cmake", "nvcc", "nm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found")
    configure = subprocess.run(
        ["cmake", "-S", str(REPO_ROOT), "-B", str(tmp_path), "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_CUDA_ARCHITECTURES=75-real", f"-DTENSORRT_INCLUDE_DIR={include}",
         "-DTENSORRT_LIB_DIR=/nonexistent", "-DAXIAL_ATTENTION_WERROR=ON"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert configure.returncode == 0, configure.stderr
    assert "building lib/libaxial_attention_plugin.so" in configure.stdout
    build = subprocess.run(
        ["cmake", "--build", str(tmp_path), "-j2", "--target", "axial_attention_plugin"],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    library = tmp_path / "lib" / "libaxial_attention_plugin.so"
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout.split()
    exported = {s for s in symbols[2::3]}
    assert exported == {
        "getCreators",
        "setLoggerFinder",
        "axial_attention_abi_version",
        "axial_attention_check",
        "axial_attention_enqueue",
        "axial_attention_status_string",
        "axial_attention_workspace_size",
    }


# ---------------------------------------------------------------- fuzzing the field parser


def _field_bytes(ftype: int) -> int:
    """plugin_harness.cpp's fieldBytes: bytes per element of a PluginFieldType."""
    return {1: 4, 5: 4, 2: 8, 10: 8, 0: 2, 4: 2, 9: 2}.get(ftype, 1)


EDGE_INT32 = [0, 1, -1, 2, 3, 2**31 - 1, -(2**31), 2**16 + 1, 255]
EDGE_FLOAT32 = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 3.4e38, 1e-45]


def _fuzzed_collection(draw_value, good: list) -> list:
    """`good` with one to four fields mutated the ways TensorRT could hand them over (data
    always holds `length` elements of the declared type, as TensorRT guarantees)."""
    from hypothesis import strategies as st

    fields = list(good)
    for _ in range(draw_value(st.integers(1, 4))):
        index = draw_value(st.integers(0, len(fields) - 1)) if fields else 0
        kind = draw_value(st.sampled_from(
            ["drop", "twice", "rename", "retype", "resize", "values", "null data"]
        ))  # fmt: skip
        if not fields:
            break
        name, ftype, length, data = fields[index]
        if kind == "drop":
            del fields[index]
        elif kind == "twice":
            fields.append(fields[index])
        elif kind == "rename":
            new = draw_value(st.one_of(st.none(), st.text(max_size=12), st.sampled_from(
                [f[0] for f in good])))  # fmt: skip
            fields[index] = (new, ftype, length, data)
        elif kind == "retype":
            ftype = draw_value(st.sampled_from([*range(13), 99, -1]))
            size = max(length, 0) * _field_bytes(ftype)
            fields[index] = (name, ftype, length, (data or b"").ljust(size, b"\0")[:size])
        elif kind == "resize":
            length = draw_value(st.sampled_from([-(2**31), -4, -1, 0, 1, 2, length + 1, 257]))
            size = max(length, 0) * _field_bytes(ftype)
            fields[index] = (name, ftype, length, (data or b"").ljust(size, b"\x7f")[:size])
        elif kind == "values" and ftype in (INT32, FLOAT32) and length > 0:
            pool = EDGE_INT32 if ftype == INT32 else EDGE_FLOAT32
            values = draw_value(st.lists(st.sampled_from(pool), min_size=length, max_size=length))
            fields[index] = field(name, ftype, values)
        elif kind == "null data":
            fields[index] = (name, ftype, length, None)
    return fields


def test_fuzzed_fields_are_created_or_refused_never_a_crash(harness, tmp_path):
    """Hypothesis mutates a valid field collection (drop, duplicate, rename, retype, resize,
    edge values: NaN, inf, INT32_MIN/MAX); under AddressSanitizer and UBSan the plugin creates
    or refuses each in both phases alike, logging an error for every refusal. Bounded like
    test_fuzz_readers.py (AXIAL_DEPLOY_FUZZ=long for a long run)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _, tables = random_op_inputs(1, 3, 4, 2, 4, 8, 5)
    attrs = op_spec.AxialAttentionAttributes(
        axis=3, num_heads=2, key_depth=4, value_depth=8, span=3
    )
    good = op_fields(attrs, tables)
    long = os.environ.get("AXIAL_DEPLOY_FUZZ") == "long"

    @settings(max_examples=500 if long else 15, deadline=None, derandomize=not long,
              database=None if not long else settings.default.database,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def check(data):
        collections = [_fuzzed_collection(data.draw, good) for _ in range(8)]
        path = tmp_path / "fuzz.bin"
        path.write_bytes(pack_collections(collections))
        results = run_harness(harness, "create", path)  # exit 0, no sanitizer report
        assert len(results) == len(collections)
        for result in results:
            errors = [m for m in result["log"] if m.startswith("E:")]
            if result["detail"] == "build=created runtime=created":
                assert not errors, result
            else:
                assert result["detail"] == "build=refused runtime=refused", result
                assert errors, result  # a refusal says why

    check()
