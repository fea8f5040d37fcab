"""What long work prints: progress bars that suit where the output goes (the one helper every
long loop uses) and plain-text tables (`text_table`, for the report, layerwise and benchmarks).

On a terminal, `progress_bar` is a tqdm bar. When stderr is not a terminal (CI logs,
`make demo > log`), tqdm would write a carriage-return frame per update into the file; there
the bar is quiet instead and, for bars that stay on screen (`leave=True`), prints one line when
it closes: `DESC: N/TOTAL UNIT in S s`. Transient bars (`leave=False`, the inner steps of a
stage) print nothing off a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default: stderr, where the bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
):
    """A tqdm bar on a terminal, else a `LineProgress` (same calls: iterate, update,
    set_postfix, write, close, `with`)."""
    if is_terminal():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)


class LineProgress:
    """The bar for logs: counts silently, one summary line at close when `leave`."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        leave: bool = True,
    ):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.leave = disable, leave
        self.n, self.postfix, self.closed = 0, "", False
        self.started = time.perf_counter()

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress: nothing to iterate (give an iterable)")
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def write(self, text: str) -> None:
        if not self.disable:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.disable or not self.leave:
            return
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        seconds = time.perf_counter() - self.started
        line = f"{self.desc}: {count} {self.unit} in {seconds:.1f} s"
        print(line + (f" ({self.postfix})" if self.postfix else ""), file=sys.stderr, flush=True)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        rest = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
        lines.append("  ".join(cells))
    return "\n".join(lines)
