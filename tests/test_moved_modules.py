"""The modules that moved into packages keep their old import paths for one release
(axial_deploy/_moved.py), and nothing in the repository still uses an old path."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from axial_deploy._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_warns_and_is_the_module_at_its_new_place(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{re.escape(old)} moved to {re.escape(new)}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new  # the real module, its own name and spec untouched
    sys.modules.pop(old, None)


def test_from_package_import_old_name_works_in_a_fresh_process():
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "try:\n    from axial_deploy import build\nexcept DeprecationWarning as w: print(w)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "axial_deploy.build moved to axial_deploy.engine.build" in result.stdout


def test_nothing_in_the_repository_uses_an_old_path():
    """Old dotted paths (`axial_deploy.build`) and `from axial_deploy import build` are for
    users' code only; the package, its tests, benchmarks and docs use the new places."""
    leaves = {old.rsplit(".", 1)[1] for old in MOVED}
    dotted = re.compile(r"\b(" + "|".join(re.escape(old) for old in MOVED) + r")\b(?!\.py)")
    from_package = re.compile(r"^\s*from axial_deploy import (.+)$", re.MULTILINE)
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "Makefile"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    found = []
    for name in files:
        if name in {"axial_deploy/_moved.py", "tests/test_moved_modules.py"}:
            continue
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_text()
        found += [f"{name}: {m.group(1)}" for m in dotted.finditer(text)]
        for match in from_package.finditer(text):
            names = {n.strip().split(" as ")[0] for n in match.group(1).strip("()").split(",")}
            found += [f"{name}: from axial_deploy import {n}" for n in names & leaves]
    assert not found, f"old module paths in use: {found[:10]}"
