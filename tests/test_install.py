"""Fast start and the torch-free surface, in this checkout's environment.

`axial-deploy --help` and every `axial-deploy CMD --help` must not import torch, ONNX Runtime,
onnx or TensorRT (that is what made --help take seconds): checked by listing the modules a
fresh interpreter has imported after each, not by timing. A missing optional module becomes a
one-line error naming the pip extra.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from axial_deploy.cli import COMMANDS, main
from axial_deploy.extras import MissingExtraError, missing_extra, require

# Imported by --help, these cost from 0.3 s (onnx) to seconds (torch).
HEAVY = ("torch", "onnxruntime", "onnx", "onnx_graphsurgeon", "tensorrt", "tensorrt_rtx", "cuda")

MODULE_BUDGET = 200

# One interpreter runs every --help in turn and reports, per command line, the heavy top-level
# modules imported so far and how many modules were loaded in all.
_PROBE = r"""
import contextlib, io, json, sys
from axial_deploy.cli import COMMANDS, main
heavy = set(json.loads(sys.argv[1]))
report = {}
for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as stop:
            code = stop.code
    loaded = {name.split(".")[0] for name in sys.modules}
    report[" ".join(argv)] = {
        "code": code, "heavy": sorted(loaded & heavy), "modules": len(sys.modules),
        "help": len(out.getvalue()),
    }
print(json.dumps(report))
"""


def test_help_of_every_command_imports_no_heavy_library(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert set(report) == {"--help"} | {f"{name} --help" for name in COMMANDS}
    for argv, seen in report.items():
        assert seen["code"] == 0 and seen["help"] > 200, (argv, seen)
        assert seen["heavy"] == [], f"`axial-deploy {argv}` imported {seen['heavy']}"
    # Every help in one process: the count of loaded modules stays that of a small CLI (about
    # 135 here: the interpreter, argparse, json, pathlib, dataclasses and cli/); numpy alone
    # would add about 140, torch over a thousand.
    modules = report[f"{list(COMMANDS)[-1]} --help"]["modules"]
    print("modules after all --help:", modules)
    assert modules < MODULE_BUDGET, f"--help loaded {modules} modules"


def test_plugin_path_command_is_registered():
    assert COMMANDS["plugin-path"] == "plugin_path"


def test_missing_torch_becomes_one_line_naming_the_extra():
    error = missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"), "export")
    assert isinstance(error, MissingExtraError) and error.exit_code == 2
    text = str(error)
    assert "\n" not in text and text.startswith("export needs PyTorch")
    assert "pip install 'axial-deploy[torch]'" in text
    rtx = missing_extra(ModuleNotFoundError(name="tensorrt_rtx.foo"), "build")
    assert rtx is not None and "axial-deploy[rtx]" in str(rtx)
    # Modules that no extra brings are not ours to explain.
    assert missing_extra(ModuleNotFoundError(name="numpy")) is None
    assert missing_extra(ImportError("cannot import name x", name="torch")) is None


def test_require_raises_the_extra_error_for_a_missing_module(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(MissingExtraError, match=r"\[torch\]"):
        require("torch", "train")
    require("json", "anything")  # present: no error


def test_cli_turns_a_missing_extra_into_one_line(monkeypatch, capsys):
    from axial_deploy.cli import doctor

    def run(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(doctor, "run", run)
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("axial-deploy doctor: error: doctor needs PyTorch")


def test_other_missing_modules_are_not_hidden(monkeypatch):
    from axial_deploy.cli import doctor

    def run(args):
        raise ModuleNotFoundError("No module named 'somethingelse'", name="somethingelse")

    monkeypatch.setattr(doctor, "run", run)
    with pytest.raises(ModuleNotFoundError):
        main(["doctor"])


def test_plugin_path_prints_the_forms_each_tool_takes(tmp_path, monkeypatch, capsys):
    library = tmp_path / "with space" / "libaxial_attention_plugin.so"
    library.parent.mkdir()
    library.write_bytes(b"\x7fELF")  # only located here, never loaded
    monkeypatch.setenv("AXIAL_DEPLOY_PLUGIN_LIB", str(library))
    assert main(["plugin-path", "--format", "path"]) == 0
    assert capsys.readouterr().out == f"{library}\n"
    quoted = f"'{library}'"  # shell-quoted: the folder has a space
    for form, expected in [
        ("trtexec", f"--dynamicPlugins={quoted}"),
        ("polygraphy", f"--plugins {quoted}"),
        ("triton", f"--backend-config=tensorrt,plugins={quoted}"),
    ]:
        assert main(["plugin-path", "--format", form]) == 0
        assert capsys.readouterr().out == expected + "\n"
    assert main(["plugin-path"]) == 0
    out = capsys.readouterr().out
    assert f"{library} ($AXIAL_DEPLOY_PLUGIN_LIB)" in out and "trtexec --onnx=" in out


def test_plugin_path_without_a_library_says_how_to_build_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AXIAL_DEPLOY_PLUGIN_LIB", str(tmp_path / "missing.so"))
    assert main(["plugin-path"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.so" in err and "make plugins" in err
