"""The one error rule of the toolkit.

Every error a user can cause or meet derives from `AxialDeployError`. The command line catches
that base once (`axial_deploy.cli.main`) and prints one line, `axial-deploy CMD: error: ...`,
whose text names the problem and the fix; `exit_code` says what kind of failure it was:

- 2: bad input (a wrong option, a missing or malformed file, an unsupported model);
- 1: a check that ran and failed (parity, verification, the accuracy gate).

Domain errors keep their historical builtin base too (ValueError, RuntimeError) so library
callers that caught those still do.
"""

from __future__ import annotations

BAD_INPUT = 2
CHECK_FAILED = 1


class AxialDeployError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code: int = BAD_INPUT


class CheckFailedError(AxialDeployError):
    """A check ran to the end and its result is a failure (exit status 1)."""

    exit_code = CHECK_FAILED


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): how a
    library's multi-line error becomes part of a one-line message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
