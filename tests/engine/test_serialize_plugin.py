"""`build --serialize-plugin`: a version-compatible engine that carries its plugin, as TensorRT
documents it (BuilderFlag.VERSION_COMPATIBLE + IBuilderConfig.plugins_to_serialize; the runtime
allows engine host code for exactly those engines; the manifest says so; Triton is told
`version-compatible=true`).

TensorRT-RTX stands in for TensorRT where it has the same API (its builder config has
VERSION_COMPATIBLE and plugins_to_serialize, its Runtime engine_host_code_allowed): the config
the builder gets and the runtime's permission are checked on those real objects. Building and
loading such an engine needs TensorRT, the plugin library and a GPU (marked, skipped here)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import axial_net, conv_net

from axial_deploy.engine.build import BuildError, BuildOptions, _builder_config, build_engine
from axial_deploy.engine.manifest import (
    ManifestError,
    allows_engine_host_code,
    check_manifest,
    version_fits,
)
from axial_deploy.engine.runtime import new_runtime

from .test_runtime import MATCHING, _manifest

rtx = pytest.importorskip("tensorrt_rtx", reason="needs the [rtx] extra (TensorRT-RTX)")
REPO = Path(__file__).resolve().parents[2]
PLUGIN_LIB = REPO / "build" / "lib" / "libaxial_attention_plugin.so"


def _config(options: BuildOptions, plugin):
    builder = rtx.Builder(rtx.Logger(rtx.Logger.ERROR))
    config, _ = _builder_config(rtx, builder, options, plugin)
    return config


def test_the_builder_gets_a_version_compatible_config_with_the_plugin(tmp_path):
    library = tmp_path / "lib" / "libaxial_attention_plugin.so"
    library.parent.mkdir()
    library.write_bytes(b"\x7fELF")
    relative = os.path.relpath(library)  # the config holds the absolute path
    config = _config(BuildOptions(serialize_plugin=True), relative)
    assert config.get_flag(rtx.BuilderFlag.VERSION_COMPATIBLE)
    assert not config.get_flag(rtx.BuilderFlag.EXCLUDE_LEAN_RUNTIME)  # lean runtime in the plan
    assert list(config.plugins_to_serialize) == [str(library.resolve())]

    plain = _config(BuildOptions(), relative)  # the plugin is loaded, not serialized
    assert not plain.get_flag(rtx.BuilderFlag.VERSION_COMPATIBLE)
    assert list(plain.plugins_to_serialize) == []


@pytest.mark.parametrize(
    ("graph", "backend", "message"),
    [
        (conv_net, "tensorrt", "no AxialAttention nodes, so there is no plugin to serialize"),
        (conv_net, "tensorrt-rtx", "needs --backend tensorrt: TensorRT-RTX has no plugin layer"),
        (axial_net, "tensorrt-rtx", "TensorRT-RTX has no plugin layer"),
    ],
)
def test_serialize_plugin_refuses_what_cannot_carry_a_plugin(tmp_path, graph, backend, message):
    model = graph(tmp_path / "m.onnx")
    options = BuildOptions(backend=backend, serialize_plugin=True)
    with pytest.raises(BuildError, match=message):
        build_engine(model, tmp_path / "m.engine", options)
    assert not (tmp_path / "m.engine").exists()


def test_host_code_is_allowed_for_exactly_the_version_compatible_tensorrt_engines():
    carrying = _manifest(plugin_serialized=True, version_compatible=True)
    assert allows_engine_host_code(carrying)
    assert not allows_engine_host_code(_manifest())
    assert not allows_engine_host_code(dataclasses.replace(carrying, backend="tensorrt-rtx"))
    # the real runtime object takes the permission (TensorRT-RTX's Runtime has TensorRT's API)
    assert new_runtime(rtx, carrying).engine_host_code_allowed is True
    assert new_runtime(rtx, _manifest()).engine_host_code_allowed is False


def test_version_compatible_engines_load_in_the_same_or_a_later_tensorrt():
    carrying = _manifest(plugin_serialized=True, version_compatible=True)  # built with 10.13
    assert version_fits(carrying, "10.13.0.35") and version_fits(carrying, "10.16.1.11")
    assert version_fits(carrying, "11.1.0.5")
    assert not version_fits(carrying, "10.9.0.34") and not version_fits(carrying, None)
    assert not version_fits(_manifest(), "10.16.1.11")  # plain engines: the exact version
    # no plugin library needed where it runs, and a later TensorRT is fine
    later = dataclasses.replace(MATCHING, tensorrt_version="10.16.1.11", plugin_sha256=None)
    check_manifest(carrying, later)
    with pytest.raises(ManifestError, match="loads in that version or a later one"):
        check_manifest(carrying, dataclasses.replace(MATCHING, tensorrt_version="10.9.0.34"))


CARRY_CHECK = """
import sys, numpy as np
from axial_deploy.engine.runtime import Engine
with Engine(sys.argv[1], plugins=None) as engine:  # nothing registers the plugin library
    feed = engine.random_inputs()
    out = engine.infer(feed)
    print("ok", {k: v.shape for k, v in out.items()})
"""


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_a_carrying_engine_runs_in_a_process_that_never_loads_the_plugin(tmp_path):
    """Built with --serialize-plugin, the engine runs in a fresh process where only the
    serialized copy of the plugin can be found (the library is moved away after the build)."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT Python package not installed")
    if not PLUGIN_LIB.is_file():
        pytest.skip(f"{PLUGIN_LIB} not built (make plugins)")
    library = tmp_path / PLUGIN_LIB.name
    library.write_bytes(PLUGIN_LIB.read_bytes())
    model = axial_net(tmp_path / "axial.onnx")
    engine = tmp_path / "axial.engine"
    options = BuildOptions(plugin_library=library, serialize_plugin=True)
    manifest = build_engine(model, engine, options)
    assert manifest.plugin_serialized and manifest.version_compatible
    assert manifest.tensorrt_version == trt.__version__
    library.unlink()
    env = dict(os.environ, AXIAL_DEPLOY_PLUGIN_LIB=str(tmp_path / "absent.so"))
    run = subprocess.run(
        [sys.executable, "-c", CARRY_CHECK, str(engine)], capture_output=True, text=True,
        env=env, check=False, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout + run.stderr
