"""docs/cli.md is generated from the parsers, and a flag name means one thing everywhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from axial_deploy.cli import build_parser
from axial_deploy.cli.args import FLAG_EXCEPTIONS, OldSpelling
from axial_deploy.cli.docs import drifts, flag_table, flags_of, main, render

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_cli_reference_is_the_generated_one():
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render(), "run: python -m axial_deploy.cli.docs -o docs/cli.md"


def test_docs_check_mode_says_when_the_file_is_stale(tmp_path, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text("old\n")
    assert main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["-o", str(stale)]) == 0 and main(["--check", str(stale)]) == 0


def test_every_flag_of_every_command_is_in_the_reference():
    text = render()
    for flag in flag_table():
        assert f"`{flag.names[0]}`" in text, (flag.command, flag.names)
    assert "## quantize" in text and "## deploy" in text


def test_one_flag_name_has_one_meaning_and_one_default_or_a_written_reason():
    found = drifts(flag_table())
    unexplained = {name: what for name, what in found.items() if name not in FLAG_EXCEPTIONS}
    assert not unexplained, (
        "flag names with two meanings or defaults: make them agree, or give the reason in "
        f"axial_deploy/cli/args.py FLAG_EXCEPTIONS: {unexplained}"
    )
    stale = set(FLAG_EXCEPTIONS) - set(found)
    assert not stale, f"FLAG_EXCEPTIONS explains names that no longer differ: {stale}"


def test_the_drift_check_sees_a_count_and_a_folder_under_one_name():
    count, folder = argparse.ArgumentParser(), argparse.ArgumentParser()
    count.add_argument("--panels", type=int, default=4)
    folder.add_argument("--panels", metavar="DIR")
    found = drifts([*flags_of("a", count), *flags_of("b", folder)])
    assert set(found) == {"--panels"} and len(found["--panels"]) == 2  # meaning and default


@pytest.mark.parametrize(
    ("argv", "dest", "value", "old"),
    [
        (["profile", "m.onnx", "--batch", "2"], "batch_size", 2, "--batch"),
        (["verify", "a.onnx", "b.onnx", "--batch", "3"], "batch_size", 3, "--batch"),
        (["quantize", "m.onnx", "--precision", "int8", "-o", "q.onnx", "--batches", "4"],
         "calib_batches", 4, "--batches"),
        (["deploy", "--panels", "2"], "panel_count", 2, "--panels"),
    ],
)  # fmt: skip
def test_old_spellings_still_work_with_a_note(argv, dest, value, old, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert f"note: {old} is an old spelling" in capsys.readouterr().err


def test_new_spellings_and_shared_defaults(capsys):
    parse = build_parser().parse_args
    assert parse(["profile", "m.onnx"]).iterations == parse(["deploy"]).iterations == 100
    assert parse(["build", "m.onnx", "-o", "e"]).backend == parse(["deploy"]).backend == "auto"
    assert parse(["compare", "a.onnx", "b.onnx"]).seed == parse(["quantize", "m.onnx",
                 "--precision", "fp16", "-o", "q.onnx"]).seed == 0  # fmt: skip
    quantize = parse(
        ["quantize", "m.onnx", "--precision", "int8", "-o", "q", "--calib-batches", "3"]
    )
    assert quantize.calib_batches == 3 and quantize.batch_size == 1
    assert parse(["quantize", "m.onnx", "--precision", "fp16", "-o", "q"]).calib_batches == 16
    assert parse(["deploy"]).calib_batches == 16
    assert capsys.readouterr().err == ""  # no note for current spellings


def test_profile_report_prefix_is_an_old_form_with_a_note(capsys):
    from axial_deploy.cli.profile import files, report_paths

    assert report_paths("out/p.json") == report_paths("out/p") == (
        Path("out/p.json"), Path("out/p.html"))  # fmt: skip
    parse = build_parser().parse_args
    files(parse(["profile", "m.onnx", "--report", "out/p.json"]))
    assert capsys.readouterr().err == ""
    files(parse(["profile", "m.onnx", "--report", "out/p"]))
    assert "old PREFIX form" in capsys.readouterr().err


def test_old_spelling_actions_name_only_their_own_spellings():
    for flag in flag_table():
        for old in flag.old:
            assert old.startswith("--") and old not in flag.names
    assert OldSpelling.__doc__


def test_top_level_help_keeps_acronyms_capitalized(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["axial-deploy"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "FP32 graph ->" in out and "fP32" not in out
    assert "the whole pipeline in one command" in out  # ordinary words still lower-case
