"""Graph hygiene: Polygraphy's constant folding on an exported graph, verified.

What `polygraphy surgeon sanitize --fold-constants` does, as one library call: Polygraphy's
`fold_constants` evaluates every subgraph whose inputs are all constants (shape arithmetic,
Reshape targets, constant Gathers of relative-position tables, Casts of weights) in ONNX
Runtime, replaces it by its value, then cleans up and sorts the graph. Unlike the CLI it fails
loudly (`error_ok=False`) instead of returning a half-folded graph, and `sanitize_file` runs
the folded graph against the original in ONNX Runtime on random inputs (`verify_models`)
before it keeps it: like every other transformation here, a sanitized graph is never silently
wrong.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from axial_deploy.errors import AxialDeployError, CheckFailedError

if TYPE_CHECKING:
    import onnx

    from axial_deploy.checks.verify import VerifyReport

# Constants larger than this stay computed at run time (an Expand or Tile of a small table
# must not turn into megabytes of initializers); relative-position tables are far smaller.
FOLD_SIZE_LIMIT = 16 << 20
# Above this a model is saved with its weights in one external-data file (protobuf's 2 GiB).
_EXTERNAL_DATA_BYTES = 1 << 30


class SanitizeError(AxialDeployError, ValueError):
    """A graph Polygraphy cannot fold (the message carries Polygraphy's reason)."""


class SanitizeCheckError(CheckFailedError):
    """The folded graph differs from the original in ONNX Runtime."""


@dataclass(frozen=True)
class SanitizeResult:
    """What sanitizing did: node and initializer counts before/after, time, the check."""

    source: Path
    output: Path
    nodes_before: int
    nodes_after: int
    initializers_before: int
    initializers_after: int
    seconds: float  # folding and saving, without the verification
    check: VerifyReport | None

    def summary(self) -> str:
        line = (
            f"sanitized {self.source} -> {self.output}: {self.nodes_before} -> "
            f"{self.nodes_after} nodes, {self.initializers_before} -> "
            f"{self.initializers_after} initializers ({self.seconds:.2f} s)"
        )
        if self.check is not None:
            worst = max((row.max_rel for row in self.check.rows), default=0.0)
            line += f"; ONNX Runtime vs original max rel {worst:.2e}"
        return line


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """op type -> number of nodes of the main graph (for reports and tests)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def sanitize_model(model: onnx.ModelProto, *, size_limit: int | None = FOLD_SIZE_LIMIT):
    """The model with its constant subgraphs folded (Polygraphy), cleaned up and sorted.

    The input model is not modified. Raises SanitizeError when Polygraphy cannot fold it.
    """
    import onnx_graphsurgeon as gs
    import onnxruntime as ort
    from polygraphy.backend.onnx import fold_constants
    from polygraphy.logger import G_LOGGER

    # Polygraphy reports each folding pass, and ONNX Runtime each node its optimizer keeps,
    # as the folder runs constant subgraphs; the caller prints one summary instead.
    ort.set_default_logger_severity(3)
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            folded = fold_constants(
                model,
                copy=True,
                error_ok=False,
                size_threshold=size_limit,
                allow_onnxruntime_shape_inference=_standard_ops_only(model),
            )
    except Exception as error:  # Polygraphy re-raises ORT's and onnx's own types
        raise SanitizeError(f"Polygraphy cannot fold the graph's constants: {error}") from None
    finally:
        ort.set_default_logger_severity(2)  # ONNX Runtime's default (warnings)
    graph = gs.import_onnx(folded)
    graph.cleanup().toposort()
    result = gs.export_onnx(graph, do_type_check=False)
    result.ir_version = model.ir_version  # keep what the loaders of the next stages accept
    del result.opset_import[:]
    result.opset_import.extend(model.opset_import)
    return result


def _standard_ops_only(model: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime's symbolic shape inference may run: it infers more shapes than
    onnx's (so more folds: 329 vs 529 nodes left on axial26_tiny), but on a graph it cannot
    complete (custom ops such as AxialAttention) it dumps sym_shape_infer_temp.onnx and a
    weights file into the current folder before Polygraphy falls back to onnx's."""
    return all(node.domain in ("", "ai.onnx") for node in model.graph.node)


def sanitize_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    verify: bool = True,
    seed: int = 0,
    rtol: float | None = None,
) -> SanitizeResult:
    """Folds `source`'s constants into `output` (written atomically) and, with `verify`,
    checks the two in ONNX Runtime on random inputs; a failed check removes `output` and
    raises SanitizeCheckError."""
    import onnx

    from axial_deploy.artifacts import atomic_output, check_distinct, load_onnx

    check_distinct({"source": source}, {"output": output})
    model = load_onnx(source, SanitizeError, "graph to sanitize")
    start = time.perf_counter()
    folded = sanitize_model(model)
    with atomic_output(output) as tmp:
        external = folded.ByteSize() > _EXTERNAL_DATA_BYTES
        onnx.save(folded, str(tmp), save_as_external_data=external, location=f"{tmp.name}.data")
    seconds = time.perf_counter() - start
    check = _verify(Path(source), Path(output), seed, rtol) if verify else None
    return SanitizeResult(
        source=Path(source),
        output=Path(output),
        nodes_before=len(model.graph.node),
        nodes_after=len(folded.graph.node),
        initializers_before=len(model.graph.initializer),
        initializers_after=len(folded.graph.initializer),
        seconds=seconds,
        check=check,
    )


def _verify(source: Path, output: Path, seed: int, rtol: float | None) -> VerifyReport:
    from axial_deploy.checks.verify import DEFAULT_RTOL, format_report, verify_models

    report = verify_models(source, output, seed=seed, rtol=DEFAULT_RTOL if rtol is None else rtol)
    if not report.passed:
        output.unlink(missing_ok=True)
        raise SanitizeCheckError(
            f"the folded graph differs from {source} in ONNX Runtime (nothing written):\n"
            + format_report(report)
        )
    return report
