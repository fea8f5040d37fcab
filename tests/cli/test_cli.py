"""The command line: one module per command, one meaning per flag, one error rule."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from axial_deploy.checks.comparison import output_error
from axial_deploy.cli import COMMANDS, _load, build_parser, main
from axial_deploy.datasets.coco_panoptic import PanopticFormatError, load_split, write_segment_png
from axial_deploy.errors import AxialDeployError, CheckFailedError
from axial_deploy.numerics import match_outputs


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_module_has_help_flags_and_a_handler(name, capsys):
    module = _load(COMMANDS[name])
    assert module.__doc__ and callable(module.add_arguments) and callable(module.run)
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert module.__doc__.strip().split("\n")[0].rstrip(".") in capsys.readouterr().out


def test_no_command_is_unavailable(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "unavailable" not in capsys.readouterr().out  # a module that failed to import


def _option_dests(parser: argparse.ArgumentParser) -> dict[str, tuple[str, type | None]]:
    return {
        option: (action.dest, action.type)
        for action in parser._actions
        for option in action.option_strings
    }


def test_a_flag_name_means_one_thing_in_every_command():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    meanings: dict[str, set] = {}
    for parser in sub.choices.values():
        for option, meaning in _option_dests(parser).items():
            meanings.setdefault(option, set()).add(meaning)
    shared = ("--seed", "--plugins", "-o", "--output", "--report", "--max-drop", "--cuda")
    for option in shared:
        assert len(meanings[option]) == 1, (option, meanings[option])
    assert "--out" in meanings and meanings["--out"] == meanings["--output"]


def test_domain_errors_print_one_line_with_their_exit_code(monkeypatch, capsys):
    from axial_deploy.cli import doctor

    def fail(error):
        def run(args):
            raise error

        return run

    monkeypatch.setattr(doctor, "run", fail(AxialDeployError("the input is bad: pass another")))
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err == "axial-deploy doctor: error: the input is bad: pass another\n"
    monkeypatch.setattr(doctor, "run", fail(CheckFailedError("the check failed")))
    assert main(["doctor"]) == 1
    monkeypatch.setattr(doctor, "run", fail(PermissionError(13, "Permission denied", "/x/y")))
    assert main(["doctor"]) == 2
    assert capsys.readouterr().err.endswith("error: Permission denied: /x/y\n")


def test_every_domain_error_derives_from_the_common_base():
    import importlib
    import inspect

    modules = [
        "axial_deploy.engine.build", "axial_deploy.datasets.coco_panoptic",
        "axial_deploy.pipeline.deploy", "axial_deploy.evaluation.evaluate",
        "axial_deploy.export", "axial_deploy.op.kernel",
        "axial_deploy.engine.manifest", "axial_deploy.quantize", "axial_deploy.rewrite",
        "axial_deploy.engine.runtime", "axial_deploy.datasets.synthetic", "axial_deploy.train",
        "axial_deploy.checks.verify", "axial_deploy.models.checkpoint", "axial_deploy.models.zoo",
        "axial_deploy.models.preprocess", "axial_deploy.calibration.sources",
        "axial_deploy.calibration.qdq", "axial_deploy.calibration.cache",
    ]  # fmt: skip
    for name in modules:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls.__module__ == name
                and issubclass(cls, Exception)
                and cls.__name__.endswith("Error")
            ):
                assert issubclass(cls, AxialDeployError), f"{name}.{cls.__name__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["dataset", "panoptic", "-o", "x", "--seed", "-1"],
        ["profile", "m.onnx", "--iterations", "0"],
        ["profile", "m.onnx", "--duration", "-1"],
        ["profile", "m.onnx", "--batch-size", "0"],
        ["train", "--model", "axial26_tiny", "--data", "d", "-o", "c.pt", "--epochs", "0"],
        ["train", "--model", "axial26_tiny", "--data", "d", "-o", "c.pt", "--batch-size", "0"],
        ["train", "--model", "axial26_tiny", "--data", "d", "-o", "c.pt", "--threads", "0"],
        ["export", "--model", "axial26s", "-o", "a.onnx", "--num-classes", "-3"],
        ["build", "m.onnx", "-o", "m.engine", "--workspace", "-5"],
    ],
)
def test_counts_and_sizes_are_checked_where_they_are_parsed(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is not a positive" in err or "is not a non-negative" in err


def test_old_spellings_still_work_with_a_note(tmp_path, capsys):
    args = build_parser().parse_args(["deploy", "--out", str(tmp_path), "--panels", "2"])
    assert args.output == str(tmp_path) and args.panel_count == 2
    err = capsys.readouterr().err
    assert "--out is an old spelling of --output" in err
    assert "--panels is an old spelling of --panel-count" in err


def test_profile_report_takes_a_json_path_or_an_old_prefix():
    from axial_deploy.cli.profile import report_paths

    assert [str(p) for p in report_paths("out/s.profile.json")] == [
        "out/s.profile.json",
        "out/s.profile.html",
    ]
    assert [str(p) for p in report_paths("out/s")] == ["out/s.json", "out/s.html"]


def test_nan_is_never_parity_and_outputs_match_by_name_or_position():
    error = output_error("y", np.array([1.0, 2.0]), np.array([1.0, np.nan]))
    assert error.max_abs == np.inf and error.max_rel == np.inf
    both = output_error("y", np.array([np.nan, 2.0]), np.array([np.nan, 2.0]))
    assert both.max_abs == np.inf  # agreeing NaN is still no parity
    merged = output_error("y", np.ones(2), np.ones(2) * 1.5).merged(
        output_error("y", np.ones(6), np.ones(6))
    )
    assert (
        merged.max_abs == 0.5 and merged.mean_abs == pytest.approx(1.0 / 8) and merged.elements == 8
    )
    assert match_outputs(["a", "b"], ["b", "a"]) == ([("a", "a"), ("b", "b")], "name")
    assert match_outputs(["a"], ["z"])[1] == "position"
    with pytest.raises(AxialDeployError, match="cannot be matched"):
        match_outputs(["a"], ["y", "z"])


def _split(tmp_path, annotation: dict, image_name: str = "a.png") -> dict:
    data = {
        "images": [{"id": 1, "file_name": image_name}],
        "annotations": [annotation],
        "categories": [{"id": 1, "name": "thing", "isthing": 1}],
    }
    (tmp_path / "panoptic_val.json").write_text(json.dumps(data))
    return data


@pytest.mark.parametrize(
    "annotation, message",
    [
        ({"image_id": 1, "segments_info": []}, r"missing key 'file_name' \(a string\)"),
        ({"image_id": 1, "file_name": "a.png"}, r"missing key 'segments_info' \(an array\)"),
        ({"file_name": "a.png", "segments_info": []}, "missing key 'image_id'"),
        (
            {"image_id": 1, "file_name": "a.png", "segments_info": [{"category_id": 1}]},
            "segment 0: missing key 'id'",
        ),
        (
            {"image_id": 1, "file_name": "a.png", "segments_info": [{"id": 5, "category_id": 9}]},
            "category_id 9",
        ),
    ],
)
def test_malformed_panoptic_json_is_one_clear_error(tmp_path, annotation, message):
    _split(tmp_path, annotation)
    with pytest.raises(PanopticFormatError, match=message):
        load_split(tmp_path / "panoptic_val.json")


def test_panoptic_json_that_is_a_list_is_refused(tmp_path):
    (tmp_path / "panoptic_val.json").write_text("[]")
    with pytest.raises(PanopticFormatError, match="holds a JSON array, not an object"):
        load_split(tmp_path / "panoptic_val.json")


@pytest.mark.parametrize("name", ["../../outside/x.png", "/etc/hosts", "sub/../../x.png"])
def test_dataset_file_names_cannot_leave_the_dataset(tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    write_segment_png(outside / "x.png", np.zeros((2, 2), np.int64))
    data_dir = tmp_path / "data" / "set"
    data_dir.mkdir(parents=True)
    _split(data_dir, {"image_id": 1, "file_name": name, "segments_info": []}, image_name=name)
    split = load_split(data_dir / "panoptic_val.json")
    with pytest.raises(PanopticFormatError, match="leaves"):
        split.segment_png(split.annotations[0])
    with pytest.raises(PanopticFormatError, match="leaves"):
        split.image_file(data_dir / "images" / "val", split.annotations[0])
