"""What the rewrite reports: one record per candidate layer, the report, and its errors."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from axial_deploy.errors import AxialDeployError
from axial_deploy.op.spec import OPERATOR_ATTRIBUTES, AxialAttentionAttributes


class RewriteError(AxialDeployError, ValueError):
    """The input cannot be rewritten at all (not ONNX, unreadable, ...)."""


class Refusal(AxialDeployError):
    """A candidate layer that is not rewritten; the message is the reason reported (caught by
    the rewrite, which leaves the layer intact: never a failure of the command)."""


@dataclass
class LayerRecord:
    """One candidate attention layer (a Softmax) and what happened to it."""

    softmax: str
    rewritten: bool = False
    reason: str = ""
    attributes: AxialAttentionAttributes | None = None  # of the operator that replaces it
    line_length: int | None = None
    table_length: int | None = None
    input: str | None = None
    output: str | None = None
    max_rel_err: float | None = None
    # Longest line the extracted operator is exact on (its tables were probed on lines of this
    # length and do not reach their clamped ends); None: any length.
    line_limit: int | None = None
    replaced_nodes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON report lists it: the attributes flat, by name (None for a
        layer left intact), where the attributes field stands."""
        flat: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if name == "attributes":
                flat.update(value if value is not None else dict.fromkeys(OPERATOR_ATTRIBUTES))
            else:
                flat[name] = value
        return flat


@dataclass
class RewriteReport:
    source: str
    layers: list[LayerRecord]
    already_rewritten: int = 0
    seconds: float = 0.0
    probe_shape: tuple[int, ...] | None = None  # the graph input's shape probing used
    probe_shape_from: str = ""  # where it came from
    # Whole-graph checks of a graph with symbolic height / width: input shape -> max rel err.
    checks: list[dict] = field(default_factory=list)

    @property
    def rewritten(self) -> list[LayerRecord]:
        return [layer for layer in self.layers if layer.rewritten]

    @property
    def left(self) -> list[LayerRecord]:
        return [layer for layer in self.layers if not layer.rewritten]

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "rewritten": len(self.rewritten),
                "left_intact": len(self.left),
                "already_rewritten": self.already_rewritten,
                "seconds": round(self.seconds, 2),
                "probe_shape": list(self.probe_shape) if self.probe_shape else None,
                "probe_shape_from": self.probe_shape_from,
                "checks": self.checks,
                "layers": [layer.to_dict() for layer in self.layers],
            },
            indent=2,
        )

    def headline(self) -> str:
        """One line: what was rewritten, or plainly that nothing was."""
        took = f"({self.seconds:.1f} s)"
        if self.layers and not self.rewritten:
            return (
                f"nothing rewritten: {len(self.layers)} attention layer(s) found, all left "
                f"intact ({self.already_rewritten} AxialAttention nodes already present) {took}"
            )
        return (
            f"{len(self.rewritten)} axial-attention layers rewritten, {len(self.left)} left "
            f"intact, {self.already_rewritten} AxialAttention nodes already present {took}"
        )

    def summary(self) -> str:
        lines = [self.headline()]
        if self.probe_shape is not None:
            shape = "x".join(map(str, self.probe_shape))
            lines.append(f"  probed at {shape} ({self.probe_shape_from})")
        for check in self.checks:
            verdict = "ok" if check["passed"] else "FAILED"
            lines.append(
                f"  checked at {check['shape']}: max rel err {check['max_rel_err']:.1e} "
                f"(limit {check['rtol']:.0e}) {verdict}"
            )
        for layer in self.rewritten:
            attributes = layer.attributes
            lines.append(
                f"  rewritten  axis={attributes.axis} heads={attributes.num_heads} "
                f"Dq={attributes.key_depth} Dv={attributes.value_depth} span={attributes.span} "
                f"L={layer.line_length} T={layer.table_length} "
                f"err={layer.max_rel_err:.1e} nodes={len(layer.replaced_nodes)} "
                f"{f'lines<={layer.line_limit} ' if layer.line_limit else ''}"
                f"[{layer.softmax}]"
            )
        lines.extend(grouped_reasons(self.left))
        return "\n".join(lines)


GROUP_FROM = 3  # this many layers left for one reason are listed as one line with a count


def grouped_reasons(left: list[LayerRecord]) -> list[str]:
    """One line per left layer; layers sharing a reason are one line with their count (a model
    with hundreds of identical layers would otherwise print hundreds of identical lines)."""
    by_reason: dict[str, list[str]] = {}
    for layer in left:
        by_reason.setdefault(layer.reason, []).append(layer.softmax)
    lines = []
    for reason, names in by_reason.items():
        if len(names) < GROUP_FROM:
            lines.extend(f"  LEFT       {name}: {reason}" for name in names)
        else:
            shown = ", ".join(names[:2])
            lines.append(f"  LEFT x{len(names):<4} {reason} [{shown}, ...]")
    return lines
