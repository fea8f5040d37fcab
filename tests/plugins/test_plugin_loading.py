"""Every way a consumer loads the AxialAttention plugin library, against the real TensorRT-RTX
plugin registry and ONNX parser (`tensorrt_rtx`, real NVIDIA code that runs without a GPU).

The library under test is the plugin's own source (axialAttentionPlugin.cpp, axialAttentionApi.cpp)
built as a shared library with g++ against the TensorRT 11.1 headers, with the kernel's CPU
emulation and host stand-ins for the few CUDA runtime calls (tests/native/): no test here
launches a kernel, and nvcc would take minutes. 11.x headers because the plugin registers on
open only with registries of its headers' IPluginRegistry layout, and TensorRT-RTX has the 11.x
layout (TensorRT 11 dropped the deprecated methods that 10.x has in that vtable).

Each case runs in its own subprocess: registrations are process-wide, and the parser case
aborts its process. The consumers each path stands for:
- load_library (IPluginRegistry::loadLibrary): trtexec --dynamicPlugins, our build/runtime;
- ctypes.CDLL / dlopen: Polygraphy --plugins (LoadPlugins), trtexec --staticPlugins, Triton
  --backend-config=tensorrt,plugins=, DeepStream custom-lib-path;
- LD_PRELOAD with the TensorRT library listed before the plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from trt_headers import HEADERS_ENV, include_for

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "plugins" / "axial_attention"
NATIVE_DIR = REPO / "tests" / "native"
CREATOR = ("AxialAttention", "1", "axial_deploy")


def _cuda_include() -> Path | None:
    from .test_plugin_harness import cuda_include

    return cuda_include()


def _build(out: Path, include: Path) -> Path:
    cuda = _cuda_include()
    if cuda is None:
        pytest.skip("cuda_runtime_api.h not found (CUDA toolkit headers; set CUDA_HOME)")
    library = out / "libaxial_attention_plugin.so"
    sources = [
        PLUGIN_DIR / "axialAttentionPlugin.cpp",
        PLUGIN_DIR / "axialAttentionApi.cpp",
        NATIVE_DIR / "kernel_emulation.cpp",
        NATIVE_DIR / "cuda_host_stub.cpp",
    ]
    command = [
        "g++", "-std=c++20", "-O0", "-fPIC", "-shared", "-fvisibility=hidden", "-pthread",
        "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-isystem", str(include),
        "-isystem", str(cuda), f"-I{PLUGIN_DIR}", f"-I{NATIVE_DIR}", *map(str, sources),
        "-Wl,--no-undefined", "-Wl,-z,nodelete", "-ldl", "-o", str(library),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-6000:]
    return library


@pytest.fixture(scope="module")
def rtx() -> str:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed: pip install '.[rtx]'")
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    import tensorrt_rtx_libs

    return str(Path(tensorrt_rtx_libs.__file__).parent / "libtensorrt_rtx.so.1")


@pytest.fixture(scope="module")
def plugin(rtx, tmp_path_factory) -> str:
    include = include_for("11")
    if include is None:
        pytest.skip(f"TensorRT 11.x headers not found: set {HEADERS_ENV}")
    return str(_build(tmp_path_factory.mktemp("plugin11"), include))


@pytest.fixture(scope="module")
def plugin10(tmp_path_factory) -> Path:
    """The same sources built with TensorRT 10.16 headers."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    include = include_for("10.16")
    if include is None:
        pytest.skip(f"TensorRT 10.16 headers not found: set {HEADERS_ENV}")
    return _build(tmp_path_factory.mktemp("plugin10"), include)


PROBE = textwrap.dedent(
    """
    import ctypes, json, os, sys
    LIB = os.environ["LIB"]
    CREATOR = ("AxialAttention", "1", "axial_deploy")
    trt = None
    def registry():
        return trt.get_plugin_registry()
    def count():
        return sum(1 for c in registry().all_creators if (c.name, c.plugin_version,
                   c.plugin_namespace) == CREATOR)
    for step in sys.argv[1:]:
        result = None
        if step == "import":
            import tensorrt_rtx as trt
        elif step == "cdll":
            ctypes.CDLL(LIB)
        elif step == "load_library":
            result = registry().load_library(LIB) is not None
        elif step == "register":
            from axial_deploy import native
            native.register_plugin_library(trt, LIB)
        elif step == "polygraphy":
            from polygraphy.backend.trt import load_plugins
            load_plugins(plugins=[LIB])
        present = trt is not None and registry().get_creator(*CREATOR) is not None
        print(json.dumps({"step": step, "result": result, "present": present,
                          "count": count() if trt else None}), flush=True)
    """
)


def probe(plugin: str, *steps: str, preload: str = "") -> list[dict]:
    env = {**os.environ, "LIB": plugin, "POLYGRAPHY_USE_TENSORRT_RTX": "1"}
    if preload:
        env["LD_PRELOAD"] = preload
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *steps], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_load_library_twice_fails_but_our_loader_is_idempotent(plugin):
    """TensorRT's own loadLibrary refuses a library whose creator is registered (the defect);
    register_plugin_library asks the registry first, any number of times."""
    raw = probe(plugin, "import", "load_library", "load_library")
    assert [s["result"] for s in raw[1:]] == [True, False], raw
    assert raw[-1]["count"] == 1, raw
    ours = probe(plugin, "import", "register", "register", "register")
    assert all(s["present"] and s["count"] == 1 for s in ours[1:]), ours


def test_opened_library_registers_its_creator(plugin):
    """ctypes.CDLL alone (what Polygraphy, trtexec --staticPlugins, Triton plugins= and
    DeepStream do) registers the creator with the loaded TensorRT's registry."""
    steps = probe(plugin, "import", "cdll")
    assert steps[-1]["present"] and steps[-1]["count"] == 1, steps


def test_cdll_then_load_library_is_no_duplicate(plugin):
    """getCreators takes back the registration made on open, so a later loadLibrary of the
    same library succeeds, with one creator, and neither deadlocks."""
    steps = probe(plugin, "import", "cdll", "load_library", "register")
    assert steps[2]["result"] is True, steps
    assert all(s["count"] == 1 for s in steps[1:]), steps


def test_load_library_then_cdll(plugin):
    steps = probe(plugin, "import", "load_library", "cdll", "register")
    assert steps[1]["result"] is True, steps
    assert all(s["present"] and s["count"] == 1 for s in steps[1:]), steps


def test_polygraphy_load_plugins_registers(plugin):
    """Polygraphy's LoadPlugins (--plugins) with TensorRT already imported."""
    pytest.importorskip("polygraphy")
    steps = probe(plugin, "import", "polygraphy", "register")
    assert all(s["present"] and s["count"] == 1 for s in steps[1:]), steps


def test_polygraphy_cli_order_needs_tensorrt_preloaded(plugin, rtx):
    """`polygraphy run --plugins` opens the library before it imports TensorRT (LoadPlugins wraps
    the network loader), when no registry exists yet: the creator is missing unless TensorRT is
    preloaded, which is what `axial-deploy plugin-path` prints (LD_PRELOAD=<TensorRT>:<plugin>)."""
    pytest.importorskip("polygraphy")
    bare = probe(plugin, "polygraphy", "import")
    assert not bare[1]["present"], bare
    preloaded = probe(plugin, "polygraphy", "import", "register", preload=f"{rtx}:{plugin}")
    assert all(s["present"] and s["count"] == 1 for s in preloaded[1:]), preloaded

    from axial_deploy.cli.plugin_path import forms

    first, last = forms(plugin)["preload"].split(":")
    assert last == plugin and "nvinfer" in Path(first).name


def test_ld_preload_needs_tensorrt_first(plugin, rtx):
    """LD_PRELOAD=<TensorRT library>:<plugin> registers (either order of the two); the plugin
    alone cannot, as no TensorRT library is in the process when it is opened (it loads none)."""
    for preload in (f"{rtx}:{plugin}", f"{plugin}:{rtx}"):
        steps = probe(plugin, "import", "load_library", preload=preload)
        assert steps[0]["present"] and steps[0]["count"] == 1, (preload, steps)
        assert steps[1]["count"] == 1, (preload, steps)
    alone = probe(plugin, "import", preload=plugin)
    assert not alone[0]["present"], alone


def test_library_built_with_10x_headers_never_calls_the_rtx_registry(rtx, plugin10):
    """A 10.x build registers on open only with libnvinfer*.so.10: calling an 11.x-layout
    registry (TensorRT-RTX) through the 10.x vtable crashed the process. Opened in an RTX
    process, it registers nothing and does not crash; loadLibrary still works."""
    steps = probe(str(plugin10), "import", "cdll", "register")
    assert not steps[1]["present"] and steps[2]["present"] and steps[2]["count"] == 1, steps


DOUBLE_PROBE = textwrap.dedent(
    """
    import ctypes, json, os, sys
    double = ctypes.CDLL(os.environ["DOUBLE"])  # RTLD_LOCAL, as Python bindings load theirs
    for step in sys.argv[1:]:
        result = None
        if step == "cdll":
            ctypes.CDLL(os.environ["LIB"])
        elif step == "load_library":
            result = bool(double.registry_double_load_library(os.environ["LIB"].encode()))
        print(json.dumps({"step": step, "result": result,
                          "count": double.registry_double_count(b"AxialAttention")}), flush=True)
    """
)


def test_tensorrt10_paths_with_a_registry_double(plugin10, tmp_path):
    """The same paths for a library built with TensorRT 10.x headers, which registers on open
    only with libnvinfer*.so.10. TensorRT-RTX cannot stand in here (its registry has the 11.x
    vtable, and no TensorRT 10 runs on this machine), so a minimal double of the 10.x registry
    (tests/native/registry_double.cpp, soname libnvinfer.so.10) plays it: found by soname when
    loaded RTLD_LOCAL, the creator registered on open, loadLibrary after that not a duplicate."""
    include, cuda, library = include_for("10.16"), _cuda_include(), plugin10
    double = tmp_path / "libnvinfer.so.10"
    command = [
        "g++", "-std=c++17", "-O0", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Werror",
        "-Wno-deprecated-declarations", "-isystem", str(include), "-isystem", str(cuda),
        str(NATIVE_DIR / "registry_double.cpp"), "-Wl,-soname,libnvinfer.so.10", "-ldl",
        "-o", str(double),
    ]  # fmt: skip
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-4000:]

    def run(*steps: str) -> list[dict]:
        env = {**os.environ, "LIB": str(library), "DOUBLE": str(double)}
        result = subprocess.run(
            [sys.executable, "-c", DOUBLE_PROBE, *steps], capture_output=True, text=True,
            env=env, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
        return [json.loads(line) for line in result.stdout.splitlines()]

    opened = run("cdll", "load_library", "load_library")
    assert [s["count"] for s in opened] == [1, 1, 1], opened
    assert [s["result"] for s in opened[1:]] == [True, False], opened  # the second: duplicate
    fresh = run("load_library", "cdll")
    assert fresh[0]["result"] is True and [s["count"] for s in fresh] == [1, 1], fresh


@pytest.mark.slow
def test_cmake_built_library_every_path(rtx, tmp_path):
    """The library exactly as `make plugins` builds it (CMake, nvcc, the real CUDA kernel,
    11.1 headers, no libnvinfer): opened, then loadLibrary, then our loader, one creator."""
    include = include_for("11")
    if include is None:
        pytest.skip(f"TensorRT 11.x headers not found: set {HEADERS_ENV}")
    for tool in ("cmake", "nvcc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found")
    configure = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(tmp_path), "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_CUDA_ARCHITECTURES=75-real", f"-DTENSORRT_INCLUDE_DIR={include}",
         "-DTENSORRT_LIB_DIR=/nonexistent"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert configure.returncode == 0, configure.stderr
    build = subprocess.run(
        ["cmake", "--build", str(tmp_path), "-j2", "--target", "axial_attention_plugin"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    library = str(tmp_path / "lib" / "libaxial_attention_plugin.so")
    steps = probe(library, "import", "cdll", "load_library", "register", "register")
    assert steps[2]["result"] is True, steps
    assert all(s["present"] and s["count"] == 1 for s in steps[1:]), steps


# ---------------------------------------- TensorRT-RTX never meets the plugin

PARSE = textwrap.dedent(
    """
    import ctypes, os, sys
    import tensorrt_rtx as trt
    ctypes.CDLL(os.environ["LIB"])
    assert trt.get_plugin_registry().get_creator("AxialAttention", "1", "axial_deploy")
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    print("parsed", parser.parse_from_file(sys.argv[1]), flush=True)
    """
)


def _axial_graph(path: Path) -> Path:
    import numpy as np
    import onnx

    from axial_deploy.op import spec as op_spec

    rng = np.random.default_rng(0)
    g, dq, dv, t = 2, 4, 8, 9
    tables = {
        "rel_q": rng.standard_normal((g, dq, t)).astype(np.float32),
        "rel_k": rng.standard_normal((g, dq, t)).astype(np.float32),
        "rel_v": rng.standard_normal((g, dv, t)).astype(np.float32),
        "logit_scale": np.full(g, 0.5, np.float32),
        "out_bias": np.zeros(g * dv, np.float32),
    }
    attrs = {"axis": 3, "num_heads": g, "key_depth": dq, "value_depth": dv, "span": 5}
    node = op_spec.make_node("qkv", "y", **tables, **attrs)
    graph = onnx.helper.make_graph(
        [node], "one_node",
        [onnx.helper.make_tensor_value_info("qkv", onnx.TensorProto.FLOAT, (1, 32, 6, 7))],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, (1, 16, 6, 7))],
    )  # fmt: skip
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 17), op_spec.opset_import()]
    )
    onnx.save(model, path)
    return path


def test_rtx_parser_aborts_on_the_plugin_and_the_guard_refuses_first(plugin, tmp_path):
    """The abort exists: RTX's parser, with the creator registered, kills its process on an
    AxialAttention node (no plugin layer in its network). build/deploy/serve go through
    build.refuse_plugin_graph, which refuses first by a feature check of the network API."""
    import tensorrt_rtx

    from axial_deploy.engine.build import BuildError, BuildOptions, build_engine, hosts_plugins

    model = _axial_graph(tmp_path / "m.axial.onnx")
    env = {**os.environ, "LIB": plugin}
    parsed = subprocess.run(
        [sys.executable, "-c", PARSE, str(model)], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert parsed.returncode != 0, parsed.stdout + parsed.stderr[-3000:]
    assert "parsed" not in parsed.stdout, parsed.stdout

    assert not hosts_plugins(tensorrt_rtx)
    options = BuildOptions(backend="tensorrt-rtx", plugin_library=plugin)
    with pytest.raises(BuildError, match="no plugin layer") as refused:
        build_engine(model, tmp_path / "m.engine", options)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "m.engine").exists()


def test_runtime_refuses_a_plugin_engine_on_rtx_through_the_same_guard(tmp_path):
    """serve / profile / run open engines through runtime.Engine, which asks the same guard
    before registering any plugin with the backend: an RTX engine whose manifest says it holds
    AxialAttention layers is refused in one line (before any CUDA call)."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX not installed: pip install '.[rtx]'")
    from engine_helpers import conv_net

    from axial_deploy.engine.build import BuildOptions, build_engine
    from axial_deploy.engine.manifest import manifest_path
    from axial_deploy.engine.runtime import Engine, EngineError

    engine = tmp_path / "net.engine"
    build_engine(conv_net(tmp_path / "net.onnx"), engine, BuildOptions("tensorrt-rtx"))
    path = manifest_path(engine)
    manifest = json.loads(path.read_text())
    manifest["plugin_library"] = str(tmp_path / "libaxial_attention_plugin.so")
    path.write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="no plugin layer") as refused:
        Engine(engine, check=False)
    assert "\n" not in str(refused.value)


def test_printed_invocations_are_the_tested_paths(tmp_path, monkeypatch, capsys):
    """What `plugin-path` and `triton-repo` tell users is one of the paths above: loadLibrary
    (--dynamicPlugins), opened with TensorRT in the process (--staticPlugins, plugins=,
    custom-lib-path), or opened after a preloaded TensorRT (LD_PRELOAD=<TensorRT>:<plugin>);
    never the plugin preloaded alone, which registers nothing."""
    from axial_deploy.cli import main
    from axial_deploy.cli.plugin_path import forms
    from axial_deploy.serving.triton_repo import MOUNT, launch_line

    library = tmp_path / "libaxial_attention_plugin.so"
    library.write_bytes(b"\x7fELF")  # only located, never loaded
    monkeypatch.setenv("AXIAL_DEPLOY_PLUGIN_LIB", str(library))
    assert main(["plugin-path"]) == 0
    printed = capsys.readouterr().out
    preload = f"LD_PRELOAD={forms(str(library))['preload']}"
    for line in printed.splitlines()[1:]:
        mechanisms = ("--dynamicPlugins=", "--staticPlugins=", "plugins=", "custom-lib-path=")
        assert any(m in line for m in mechanisms) or preload in line, line
        assert "LD_PRELOAD" not in line or preload in line, line
    assert printed.count(preload) == 2  # Polygraphy and the Triton alternative

    line = launch_line("25.02", library, False, "tensorrt_plan")
    assert f"--backend-config=tensorrt,plugins={MOUNT}/plugins/{library.name}" in line
    assert "LD_PRELOAD" not in line
