"""No API that TensorRT 11 removed on an 11.x code path: a scan of the Python and C++ sources.

The removed names come from NVIDIA's TensorRT 10.x -> 11.x migration guide,
- Python: https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
- C++: https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-c-api-reference.html
and from a diff of the public 10.16 and 11.1 headers (NvInfer.h enums and methods; the test
below checks every C++ name against them where $AXIAL_DEPLOY_TRT_HEADERS has both). Python
names are the bindings' spelling of the same API (snake_case methods, enum members without k).
BuilderFlag.DIRECT_IO is left out: the guide lists it, but the 11.1 headers still declare it
(deprecated) and the 11.4.1 guide says "deprecated, not removed".

Guard convention (axial_deploy/engine/tensorrt_api.py): in Python, a removed name may appear only in
a function that, before that line, calls `require_tensorrt10(...)` or leaves under
`if tensorrt_major(trt) >= 11:` (raise, return or pytest.skip); a string naming a removed API
inside `hasattr(...)` is a feature check and allowed. In C++, only inside
`#if NV_TENSORRT_MAJOR < 11` (or TRT_MAJOR_ENTERPRISE) ... `#else`/`#endif`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from trt_headers import include_for

REPO = Path(__file__).resolve().parents[2]

PY_REMOVED_ENUM = {
    "BuilderFlag": {
        "FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
        "PREFER_PRECISION_CONSTRAINTS", "REJECT_EMPTY_ALGORITHMS", "WEIGHTLESS",
    },
    "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH"},
    "TacticSource": {"CUBLAS", "CUBLAS_LT", "CUDNN"},
}  # fmt: skip
PY_REMOVED_NAMES = {
    # classes and enums
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
    "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "CalibrationAlgoType", "QuantizationFlag",
    "IAlgorithm", "IAlgorithmContext", "IAlgorithmIOInfo", "IAlgorithmSelector",
    "IAlgorithmVariant",
    # IBuilderConfig
    "int8_calibrator", "set_calibration_profile", "get_calibration_profile",
    "set_quantization_flag", "get_quantization_flag", "clear_quantization_flag",
    "quantization_flags", "algorithm_selector",
    # IBuilder, ICudaEngine, ITensor / ILayer
    "platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32",
    "device_memory_size", "get_device_memory_size_for_profile",
    "create_execution_context_without_device_memory", "weight_streaming_budget",
    "minimum_weight_streaming_budget", "set_dynamic_range", "reset_dynamic_range",
    "reset_precision", "precision_is_set", "set_output_type", "reset_output_type",
    "output_type_is_set",
}  # fmt: skip

CPP_REMOVED_ENUM = {
    "BuilderFlag": {f"k{name}" for name in PY_REMOVED_ENUM["BuilderFlag"]},
    "NetworkDefinitionCreationFlag": {"kEXPLICIT_BATCH"},
    "TacticSource": {"kCUBLAS", "kCUBLAS_LT", "kCUDNN"},
}
CPP_REMOVED_NAMES = {
    "IInt8Calibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
    "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "CalibrationAlgoType", "QuantizationFlag",
    "IAlgorithm", "IAlgorithmContext", "IAlgorithmIOInfo", "IAlgorithmSelector",
    "IAlgorithmVariant", "setInt8Calibrator", "getInt8Calibrator", "setCalibrationProfile",
    "getCalibrationProfile", "setQuantizationFlag", "setQuantizationFlags",
    "getQuantizationFlag", "getQuantizationFlags", "clearQuantizationFlag",
    "setAlgorithmSelector", "getAlgorithmSelector", "platformHasFastFp16",
    "platformHasFastInt8", "platformHasTf32", "getDeviceMemorySize",
    "getDeviceMemorySizeForProfile", "createExecutionContextWithoutDeviceMemory",
    "setWeightStreamingBudget", "getWeightStreamingBudget", "getMinimumWeightStreamingBudget",
    "setDynamicRange", "resetDynamicRange", "getDynamicRangeMin", "getDynamicRangeMax",
    "dynamicRangeIsSet", "getTensorsWithDynamicRange", "setPrecision", "resetPrecision",
    "precisionIsSet", "setOutputType", "resetOutputType", "outputTypeIsSet",
    "readCalibrationCache", "writeCalibrationCache",
}  # fmt: skip

PY_FOLDERS = ("axial_deploy", "calibration", "models", "tests", "benchmarks", "deploy", "docker")
CPP_FOLDERS = ("plugins", "calibration", "tests", "benchmarks")
CPP_SUFFIXES = {".cpp", ".cc", ".h", ".hpp", ".cu", ".cuh"}
GUARD_CALL = "require_tensorrt10"
GUARD_VERSION = "tensorrt_major"


def _python_files() -> list[Path]:
    files = []
    for folder in PY_FOLDERS:
        files += sorted((REPO / folder).rglob("*.py")) if (REPO / folder).is_dir() else []
    # this file holds the names as data; build/ and .venv/ are not the project's sources
    return [
        f
        for f in files
        if f != Path(__file__).resolve()
        and not {".venv", "build"} & set(f.parts[len(REPO.parts) :])
    ]


def _removed_use(node: ast.AST) -> str | None:
    """The removed API `node` names, or None."""
    if isinstance(node, ast.Attribute):
        owner = (
            node.value.attr
            if isinstance(node.value, ast.Attribute)
            else getattr(node.value, "id", None)
        )
        if node.attr in PY_REMOVED_ENUM.get(owner or "", ()):
            return f"{owner}.{node.attr}"
        if node.attr in PY_REMOVED_NAMES:
            return node.attr
    if isinstance(node, ast.Name) and node.id in PY_REMOVED_NAMES:
        return node.id
    if isinstance(node, ast.Constant) and node.value in PY_REMOVED_NAMES:
        return repr(node.value)
    return None


def _leaves(body: list[ast.stmt]) -> bool:
    last = body[-1]
    if isinstance(last, ast.Raise | ast.Return):
        return True
    call = last.value if isinstance(last, ast.Expr) else None
    return isinstance(call, ast.Call) and ast.unparse(call.func).endswith("skip")


def _guard_lines(function: ast.AST) -> list[int]:
    """Lines of the guards among `function`'s own statements (see the module docstring)."""
    lines = []
    for statement in ast.walk(function):
        call = statement.value if isinstance(statement, ast.Expr) else None
        if isinstance(call, ast.Call) and ast.unparse(call.func).split(".")[-1] == GUARD_CALL:
            lines.append(statement.lineno)
        if isinstance(statement, ast.If) and _leaves(statement.body):
            test = ast.unparse(statement.test).replace(" ", "")
            if re.search(GUARD_VERSION + r"\(\w+\)(>=11|>10)", test):
                lines.append(statement.lineno)
    return lines


def unguarded_python(source: str, name: str = "<source>") -> list[str]:
    """'file:line name' for each removed name used outside a TensorRT 10 guard."""
    tree = ast.parse(source)
    parents: dict[ast.AST, ast.AST] = {}
    feature_checks: set[ast.AST] = set()
    docstrings: set[ast.AST] = set()
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr":
            feature_checks.update(node.args[1:])
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            first = body[0].value
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                docstrings.add(first)
    found = []
    for node in ast.walk(tree):
        what = _removed_use(node)
        if what is None or node in feature_checks or node in docstrings:
            continue
        guarded, scope = False, parents.get(node)
        while scope is not None and not guarded:
            if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
                guarded = any(line < node.lineno for line in _guard_lines(scope))
            scope = parents.get(scope)
        if not guarded:
            found.append(f"{name}:{node.lineno} {what}")
    return found


def _strip_cpp(text: str) -> str:
    """Comments and string literals blanked (line numbers kept)."""
    text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group()), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)


CPP_GUARD = re.compile(r"#\s*if\b.*\b(NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE)\s*(<\s*11|<=\s*10)\b")
CPP_USE = re.compile(
    r"\b(?:("
    + "|".join(CPP_REMOVED_ENUM)
    + r")\s*::\s*(\w+)|("
    + "|".join(CPP_REMOVED_NAMES)
    + r"))\b"
)


def unguarded_cpp(source: str, name: str = "<source>") -> list[str]:
    found = []
    stack: list[bool] = []  # per open #if: does it (still) guard for TensorRT 10?
    for number, line in enumerate(_strip_cpp(source).splitlines(), 1):
        directive = line.strip()
        if re.match(r"#\s*if", directive):
            stack.append(bool(CPP_GUARD.match(directive)))
            continue
        if re.match(r"#\s*(else|elif)", directive) and stack:
            stack[-1] = False
            continue
        if re.match(r"#\s*endif", directive) and stack:
            stack.pop()
            continue
        if any(stack):
            continue
        for match in CPP_USE.finditer(line):
            enum, member, plain = match.groups()
            if plain or member in CPP_REMOVED_ENUM.get(enum, ()):
                found.append(f"{name}:{number} {match.group()}")
    return found


def test_no_removed_tensorrt_api_outside_tensorrt10_guards() -> None:
    found = []
    for path in _python_files():
        found += unguarded_python(path.read_text(), str(path.relative_to(REPO)))
    for folder in CPP_FOLDERS:
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix in CPP_SUFFIXES and path.is_file():
                text = path.read_text(errors="replace")
                found += unguarded_cpp(text, str(path.relative_to(REPO)))
    assert not found, "TensorRT 11 removed these (guard them, see tensorrt_api.py):\n" + "\n".join(
        found
    )


def test_the_scan_finds_unguarded_uses_and_accepts_guarded_ones() -> None:
    """The checker itself: each kind of use is caught, each kind of guard is honoured."""
    assert unguarded_python("config.set_flag(trt.BuilderFlag.FP16)\n") == [
        "<source>:1 BuilderFlag.FP16"
    ]
    assert unguarded_python("base = getattr(trt, 'IInt8EntropyCalibrator2')\n") != []
    assert unguarded_python("c.int8_calibrator = x\n") != []
    assert unguarded_python("trt.BuilderFlag.TF32\ntrt.DataType.INT8\n") == []  # not removed
    guarded = (
        "def f(trt):\n"
        "    require_tensorrt10(trt, 'fp16', 'fix')\n"
        "    config.set_flag(trt.BuilderFlag.FP16)\n"
    )
    assert unguarded_python(guarded) == []
    too_late = "def f(trt):\n    trt.BuilderFlag.INT8\n    require_tensorrt10(trt, 'x', 'y')\n"
    assert unguarded_python(too_late) == ["<source>:2 BuilderFlag.INT8"]
    skip = (
        "def test(trt):\n"
        "    if tensorrt_major(trt) >= 11:\n"
        "        pytest.skip('removed')\n"
        "    trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2\n"
    )
    assert unguarded_python(skip) == []
    no_exit = "def f(trt):\n    if tensorrt_major(trt) >= 11:\n        pass\n    trt.IAlgorithm\n"
    assert unguarded_python(no_exit) == ["<source>:4 IAlgorithm"]
    assert unguarded_python("hasattr(trt, 'IInt8EntropyCalibrator2')\n") == []
    assert unguarded_cpp("config->setFlag(BuilderFlag::kFP16);\n") == [
        "<source>:1 BuilderFlag::kFP16"
    ]
    assert unguarded_cpp("DataType::kINT8; // BuilderFlag::kINT8\n") == []
    cpp_guarded = (
        "#if NV_TENSORRT_MAJOR < 11\nconfig->setFlag(BuilderFlag::kINT8);\n#else\n"
        "config->setInt8Calibrator(c);\n#endif\n"
    )
    assert unguarded_cpp(cpp_guarded) == ["<source>:4 setInt8Calibrator"]


def _header_text(version: str) -> str | None:
    include = include_for(version)
    if include is None:
        return None
    return "\n".join(_strip_cpp(p.read_text(errors="replace")) for p in include.glob("*.h"))


def test_the_removed_names_are_those_the_headers_dropped() -> None:
    """Every C++ name is declared in the 10.16 headers and absent from the 11.1 ones (so the
    list neither invents removals nor misses the guide's)."""
    old, new = _header_text("10.16"), _header_text("11.1")
    if old is None or new is None:
        pytest.skip("set AXIAL_DEPLOY_TRT_HEADERS to the folder with the 10.16 and 11.1 headers")

    def enum_members(text: str, enum: str) -> set[str]:
        body = re.search(r"enum class " + enum + r"\b[^{]*\{(.*?)\}", text, re.S)
        return set(re.findall(r"\b(k\w+)\b", body.group(1))) if body else set()

    for enum, members in CPP_REMOVED_ENUM.items():
        assert members <= enum_members(old, enum), enum
        assert not members & enum_members(new, enum), enum
    for name in CPP_REMOVED_NAMES:
        assert re.search(r"\b" + name + r"\b", old), name
        assert not re.search(r"\b" + name + r"\b", new), name
