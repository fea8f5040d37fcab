"""Progress bars: tqdm on a terminal, one line per step (or nothing) in a log."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

from axial_deploy.progress import LineProgress, is_terminal, progress_bar

ROOT = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_bar_prints_one_line_and_no_carriage_returns(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert not is_terminal()
    items = list(progress_bar(range(5), desc="panoptic val", unit="img"))
    with progress_bar(total=3, desc="profiling", unit="run") as bar:
        for _ in range(3):
            bar.update(1)
        bar.set_postfix(loss="0.5")
    with progress_bar(total=2, desc="inner step", leave=False) as bar:  # transient: silent
        bar.update(2)
    assert items == [0, 1, 2, 3, 4]
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert re.fullmatch(r"panoptic val: 5/5 img in \d+\.\d s", lines[0])
    assert re.fullmatch(r"profiling: 3/3 run in \d+\.\d s \(loss=0.5\)", lines[1])


def test_a_disabled_bar_prints_nothing(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(progress_bar([1, 2], desc="x", disable=True)) == [1, 2]
    assert log.getvalue() == ""


def test_on_a_terminal_it_is_tqdm(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(sys, "stderr", _Terminal())
    bar = progress_bar(total=2, desc="x")
    try:
        assert isinstance(bar, tqdm) and not isinstance(bar, LineProgress)
    finally:
        bar.close()


def test_every_progress_bar_goes_through_the_one_helper():
    """tqdm is imported in axial_deploy/progress.py only, so no bar writes frames into a log."""
    sources = [path for folder in ("axial_deploy", "calibration", "models")
               for path in ROOT.joinpath(folder).rglob("*.py")]  # fmt: skip
    users = [
        str(path.relative_to(ROOT))
        for path in sources
        if re.search(r"^\s*(from tqdm|import tqdm)", path.read_text(), re.MULTILINE)
    ]
    assert users == ["axial_deploy/progress.py"]
