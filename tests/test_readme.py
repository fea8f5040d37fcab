"""Every command line the README shows still parses, so a renamed flag fails CI.

Lines in ```bash blocks and lines starting with `$ ` are split into commands; each
`axial-deploy ...` command is parsed by the real parser (the dry form: every flag, value and
required argument checked, nothing run) without a note about an old spelling; `make TARGET`
must name a Makefile target, `pip install '.[EXTRA]'` an extra of pyproject.toml, and
`python FILE` / `python -m MODULE` something that exists. Inline `axial-deploy ...` and
`make ...` spans are checked for their command, flags and targets.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from axial_deploy.cli import build_parser
from axial_deploy.cli.docs import command_parsers as _command_parsers

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SEPARATORS = {"&&", "||", ";", "|", "&"}


@functools.cache
def command_parsers() -> dict:
    return _command_parsers()


def shown_lines(text: str) -> list[str]:
    """Shell lines of ```bash blocks and `$ ` lines, continuation lines joined."""
    lines, in_bash, pending = [], False, ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("```"):
            in_bash = stripped == "```bash"
            continue
        if not in_bash and not stripped.startswith("$ "):
            continue
        line = pending + stripped.removeprefix("$ ")
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line:
            lines.append(line)
    return lines


def commands(line: str) -> list[list[str]]:
    tokens = shlex.split(line, comments=True)
    found, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            found.append(current)
            current = []
        else:
            current.append(token)
    return [argv for argv in [*found, current] if argv]


def _readme_commands() -> list[list[str]]:
    return [argv for line in shown_lines(README.read_text()) for argv in commands(line)]


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.MULTILINE))


def _extras() -> set[str]:
    """The extras of pyproject.toml (Python 3.10 has no tomllib: its section, read by line)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.MULTILINE))


def test_the_readme_shows_the_commands_users_come_for():
    shown = {argv[1] for argv in _readme_commands() if argv[0] == "axial-deploy"}
    assert {"export", "rewrite", "quantize", "build", "profile", "compare", "evaluate"} <= shown
    assert {"triton-repo", "serve"} <= shown
    assert ["make", "demo"] in _readme_commands() and ["make", "test"] in _readme_commands()


@pytest.mark.parametrize(
    "argv",
    [a for a in _readme_commands() if a[0] == "axial-deploy"],
    ids=lambda argv: " ".join(argv[1:4]),
)
def test_every_axial_deploy_line_parses_with_current_spellings(argv, capsys):
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as error:
        err = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"README line `{shlex.join(argv)}` does not parse: {err[-1:]} ({error})")
    assert "old spelling" not in capsys.readouterr().err
    # argparse accepts abbreviations (--iteration): the README spells every flag in full
    known = {o for a in command_parsers()[argv[1]]._actions for o in a.option_strings}
    assert {t.split("=")[0] for t in argv[2:] if t.startswith("--")} <= known, argv


def test_make_pip_and_python_lines_name_what_exists():
    targets, extras = _makefile_targets(), _extras()
    for argv in _readme_commands():
        if argv[0] == "make":
            assert set(argv[1:]) <= targets, argv
        elif argv[:2] == ["pip", "install"]:
            for spec in argv[2:]:
                match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", spec)
                assert match, f"unexpected pip install argument in the README: {spec}"
                assert set(filter(None, (match.group(1) or "").split(","))) <= extras, spec
        elif argv[0].startswith("python"):
            if argv[1] == "-m":
                assert importlib.util.find_spec(argv[2]) is not None, argv
            else:
                assert (ROOT / argv[1]).is_file(), argv


def test_inline_commands_name_real_commands_flags_and_targets():
    parsers, targets = command_parsers(), _makefile_targets()
    spans = re.findall(r"`((?:axial-deploy|make) [^`]+)`", README.read_text())
    assert spans
    for span in spans:
        argv = shlex.split(span)
        if argv[0] == "make":
            assert argv[1] in targets, span
            continue
        if argv[1].startswith("-"):
            continue  # options of the top-level parser (--help)
        assert argv[1] in parsers, span
        known = {o for a in parsers[argv[1]]._actions for o in a.option_strings} | {"--help"}
        assert {t.split("=")[0] for t in argv[2:] if t.startswith("--")} <= known, span


def test_the_parser_check_fails_on_a_renamed_flag():
    """The check above is not vacuous: an unknown flag stops the parser."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["profile", "m.onnx", "--no-such-flag", "1"])
    assert shown_lines("```bash\naxial-deploy build m.onnx \\\n    -o e\n```\n") == [
        "axial-deploy build m.onnx  -o e"
    ]


def test_links_between_the_readme_and_docs_point_at_files():
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to a missing {target}"
