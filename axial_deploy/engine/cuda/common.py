"""What every CUDA binding of the runtime shares: its error type and the bookkeeping of the
handles it owns (each binding records what it creates and releases it all on close)."""

from __future__ import annotations

from axial_deploy.errors import AxialDeployError


class EngineError(AxialDeployError, ValueError):
    """An engine or model that cannot be opened or fed as asked (says why and the fix)."""


def disown(owned: list[tuple[str, object]], handle) -> None:
    """Drops `handle` (by identity) from a binding's records: its caller releases it now."""
    for index, (_, held) in enumerate(owned):
        if held is handle:
            del owned[index]
            return


def release_all(owned: list[tuple[str, object]], release) -> None:
    """Releases every recorded handle, newest first, even when one fails; raises the first
    failure afterwards. Empties `owned`, so a second call does nothing."""
    first_error: Exception | None = None
    while owned:
        kind, handle = owned.pop()
        try:
            release(kind, handle)
        except Exception as error:  # keep releasing the rest
            first_error = first_error or error
    if first_error is not None:
        raise EngineError(f"releasing CUDA resources failed: {first_error}") from first_error
