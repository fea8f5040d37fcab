"""Extract by probing: the operator contract's constants of one located layer.

The piece of graph from the qkv tensor to the Softmax input (logits) is linear in q and k plus
one bilinear q.k term, and the piece from (qkv, attention weights) to Y is linear in v and the
weights plus a bias. ONNX Runtime runs both pieces (`LayerPieces`) on probe inputs: lines are
independent, and one line holds several probes whose effects cannot meet (positions farther apart
than the window's radius, different heads, one query row each), so a layer takes a few runs.
One function per probe family reads one part of the contract and returns it as a record,
whatever ops the exporter chose (Einsum or MatMul, Gather, BatchNormalization folded or not):

- `probe_window`: which keys each query sees (global or a clipped local window), the offsets;
- `probe_roles`: each qkv channel's role (query, key, value) and head;
- `probe_logits`: the relative query / key tables and the q.k scale of each head;
- `probe_values`: the output bias, the relative value table and each value channel's scale;
- `assemble`: the blocked Q|K|V projection with the value scales folded in.

Each raises `Refusal` (the reason reported) where the layer does not have the contract's form.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from axial_deploy.graph import attribute
from axial_deploy.op.spec import TABLE_ATTRIBUTES, AxialAttentionAttributes, OpSpecError

from .locate import GraphIndex
from .pieces import PieceExtractor, SubModel
from .records import Refusal


@dataclass
class Extracted:
    """What probing extracted: the replacement's 1x1 Conv and the operator's constants."""

    weight: np.ndarray  # [G*(2Dq+Dv), Cin] blocked Q|K|V, value scales folded
    bias: np.ndarray
    rel_q: np.ndarray
    rel_k: np.ndarray
    rel_v: np.ndarray
    logit_scale: np.ndarray
    out_bias: np.ndarray
    attributes: AxialAttentionAttributes

    def tables(self) -> tuple[np.ndarray, ...]:
        """The operator's table inputs, in its argument order (rel_q ... out_bias)."""
        return tuple(getattr(self, name) for name in TABLE_ATTRIBUTES)


def extract_layer(
    extractor: PieceExtractor,
    index: GraphIndex,
    conv: onnx.NodeProto,
    x_name: str,
    x_shape: tuple[int, ...],
    y_name: str,
    softmax: onnx.NodeProto,
    values: Callable[[str], np.ndarray],
) -> tuple[Extracted, dict]:
    """Probe the layer's two linear pieces in ONNX Runtime and return the contract's constants."""
    weight, bias, qkv_name = conv_affine(index, conv, values)
    pieces = LayerPieces(extractor, x_name, x_shape, qkv_name, softmax, y_name)
    window = probe_window(pieces)
    roles = probe_roles(pieces, window)
    logits = probe_logits(pieces, window, roles)
    value_terms = probe_values(pieces, window, roles)
    layer = assemble(weight, bias, roles, logits, value_terms, window.span)
    limit = line_limit(window, layer, pieces.geometry.width)
    return layer, {"line_length": pieces.geometry.length, "line_limit": limit}


def line_limit(window: Window, layer: Extracted, width: int) -> int | None:
    """The longest line the extracted tables are exact on: None (any) when a local window was
    seen whole or a global table reached its clamped ends (the two outermost columns at each
    end equal); else the probed line's length, beyond which the original's table goes on."""
    length = window.keys.shape[0]
    if not window.is_global:
        return None if window.radius >= (width - 1) // 2 else length
    tables = np.concatenate([layer.rel_q, layer.rel_k, layer.rel_v], axis=1)
    if tables.shape[-1] < 3:
        return length

    def flat(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.allclose(a, b, rtol=1e-5, atol=1e-7 * max(1.0, np.abs(tables).max())))

    saturated = flat(tables[..., 0], tables[..., 1]) and flat(tables[..., -1], tables[..., -2])
    return None if saturated else length


def conv_affine(
    index: GraphIndex, conv: onnx.NodeProto, values: Callable[[str], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, str]:
    """The qkv projection as (W [Cout, Cin], b [Cout], qkv tensor name), folding a
    BatchNormalization that directly follows the Conv (exporters that did not fold it)."""
    weight = values(conv.input[1])
    weight = weight.reshape(weight.shape[0], -1).astype(np.float64)
    bias = (
        values(conv.input[2]).astype(np.float64)
        if len(conv.input) > 2 and conv.input[2]
        else (np.zeros(weight.shape[0]))
    )
    out = conv.output[0]
    consumers = index.consumers.get(out, [])
    if len(consumers) == 1 and consumers[0].op_type == "BatchNormalization":
        bn = consumers[0]
        scale, shift, mean, var = (values(name).astype(np.float64) for name in bn.input[1:5])
        factor = scale / np.sqrt(var + attribute(bn, "epsilon", 1e-5))
        weight = weight * factor[:, None]
        bias = (bias - mean) * factor + shift
        out = bn.output[0]
    return weight, bias, out


# ---------------------------------------------------------------------------- the two pieces


@dataclass(frozen=True)
class Geometry:
    """Sizes of the probed lines: the qkv is [lines, channels, length], the logits
    [lines, heads, length, width] (width: keys per query)."""

    lines: int
    channels: int
    length: int
    heads: int
    width: int


class LayerPieces:
    """The layer's two linear pieces run in ONNX Runtime: qkv -> logits and
    (qkv, attention weights) -> Y, the layer input fixed at zeros (its shape computations)."""

    def __init__(
        self,
        extractor: PieceExtractor,
        x_name: str,
        x_shape: tuple[int, ...],
        qkv_name: str,
        softmax: onnx.NodeProto,
        y_name: str,
    ) -> None:
        logits_name, weights_name = softmax.input[0], softmax.output[0]
        self._x_name, self._qkv_name, self._weights_name = x_name, qkv_name, weights_name
        self._softmax_axis = attribute(softmax, "axis", -1)
        self._shapes = SubModel(extractor, [x_name], [qkv_name, logits_name, y_name])
        self._to_logits = SubModel(extractor, [x_name, qkv_name], [logits_name])
        self._to_output = SubModel(extractor, [x_name, qkv_name, weights_name], [y_name])
        self._bind(x_shape)

    def _bind(self, x_shape: tuple[int, ...]) -> None:
        """Fix the layer input's shape (zeros): the geometry and the all-zero logits follow."""
        self._x_zero = np.zeros(x_shape, np.float32)
        qkv0, logits0, y0 = self._shapes(**{self._x_name: self._x_zero})
        self.geometry = _geometry(qkv0, logits0, self._softmax_axis)
        # Input and output lines are [N, other, C, L]; the batch of lines is N * other.
        if y0.ndim != 4 or y0.shape[0] * y0.shape[1] != self.geometry.lines:
            raise Refusal("the layer output is not lines [N, other, C, L] of the qkv lines")
        if y0.shape[3] != self.geometry.length:
            raise Refusal("the layer output's last axis is not the attended line")
        self.base = self.logits(self.zero_qkv())  # BatchNorm shifts only

    def resized(self, lines: int, length: int) -> LayerPieces | None:
        """The same pieces (same sessions) on `lines` lines of `length`, or None where the
        graph's sizes are baked in (ONNX Runtime fails or the geometry does not follow)."""
        resized = copy.copy(self)
        resized._x_zero = np.zeros((1, lines, *self._x_zero.shape[2:-1], length), np.float32)
        qkv0 = np.zeros((lines, self.geometry.channels, length))
        try:  # the logits piece alone (the scan reads logits only): no run of the whole layer
            logits0 = resized.logits(qkv0, keep_mask=True)
            resized.geometry = _geometry(qkv0, logits0, self._softmax_axis)
        except Exception:  # sizes baked into the graph's reshapes
            return None
        resized.base = np.where(np.isfinite(logits0), logits0, 0.0)
        geometry = resized.geometry
        if (geometry.lines, geometry.length) != (lines, length):
            return None
        if geometry.channels != self.geometry.channels or geometry.heads != self.geometry.heads:
            return None
        return resized

    def zero_qkv(self) -> np.ndarray:
        g = self.geometry
        return np.zeros((g.lines, g.channels, g.length))

    def zero_attention(self) -> np.ndarray:
        g = self.geometry
        return np.zeros((g.lines, g.heads, g.length, g.width))

    def one_hot(self, channels, position: int) -> np.ndarray:
        """A qkv probe whose line i holds channel `channels[i]` = 1 at `position`."""
        probe = self.zero_qkv()
        probe[np.arange(len(channels)), channels, position] = 1.0
        return probe

    def logits(self, qkv: np.ndarray, keep_mask: bool = False) -> np.ndarray:
        """Logits for a qkv probe; masked (-inf) entries read 0 unless `keep_mask`."""
        feeds = {self._x_name: self._x_zero, self._qkv_name: qkv.astype(np.float32)}
        out = self._to_logits(**feeds)[0].astype(np.float64)
        return out if keep_mask else np.where(np.isfinite(out), out, 0.0)

    def logit_delta(self, qkv: np.ndarray) -> np.ndarray:
        """What a qkv probe adds to the logits of the all-zero qkv."""
        return self.logits(qkv) - self.base

    def output(self, qkv: np.ndarray, attention: np.ndarray) -> np.ndarray:
        """The layer output for a qkv and attention weights, as lines [lines, C, length]."""
        feeds = {
            self._x_name: self._x_zero,
            self._qkv_name: qkv.astype(np.float32),
            self._weights_name: attention.astype(np.float32),
        }
        y = self._to_output(**feeds)[0].astype(np.float64)
        return y.reshape(self.geometry.lines, -1, self.geometry.length)


def _geometry(qkv0: np.ndarray, logits0: np.ndarray, softmax_axis: int) -> Geometry:
    if qkv0.ndim != 3:
        raise Refusal(
            f"the 1x1 Conv nearest this Softmax gives a rank-{qkv0.ndim} tensor, not lines "
            "[B, C, L]: the layer projects q / k / v before forming its lines, or that Conv is "
            "not its qkv projection"
        )
    lines, channels, length = qkv0.shape
    if logits0.ndim != 4 or softmax_axis not in (-1, 3):
        raise Refusal("the Softmax does not normalise the last axis of [lines, heads, L, keys]")
    _, heads, length_q, width = logits0.shape
    if length_q != length or lines != logits0.shape[0]:
        raise Refusal("the logits are not [lines, heads, L, keys] of the qkv lines")
    return Geometry(lines, channels, length, heads, width)


# ------------------------------------------------------------------------------- the window


@dataclass(frozen=True)
class Window:
    """Which keys each query attends to, and the relative offsets the tables hold."""

    keys: np.ndarray  # [length, width]: key position of each (query, slot); -1 outside the line
    is_global: bool
    span: int  # 0: global; else the window width
    radius: int  # offsets run from -radius to radius
    offsets: np.ndarray
    middle: int
    probe_positions: list[int]  # positions whose probes see every offset
    # Positions probed together on one line: more than `radius` apart, no logit reads two of
    # them (a query's row never reaches another's column), so each channel's effect is its own.
    packed_positions: list[int]

    @property
    def centred(self) -> bool:
        """One interior position sees every offset (the window fits in the line)."""
        return self.probe_positions == [self.middle]


def window_keys(length: int, width: int, is_global: bool) -> np.ndarray:
    """Key position of each (query, slot) of the logits' last axis; -1 outside the line."""
    query = np.arange(length)[:, None]
    slot = np.arange(width)[None, :]
    keys = (
        np.broadcast_to(slot, (length, width)).copy()
        if is_global
        else query + slot - (width - 1) // 2
    )
    keys[(keys < 0) | (keys >= length)] = -1
    return keys


def probe_window(pieces: LayerPieces) -> Window:
    """The window from the logits' mask (-inf outside it) on the all-zero qkv."""
    length, width = pieces.geometry.length, pieces.geometry.width
    valid = np.isfinite(pieces.logits(pieces.zero_qkv(), keep_mask=True)[0, 0])
    is_global = bool(valid.all()) and width == length
    keys = window_keys(length, width, is_global)
    if not np.array_equal(valid, keys >= 0):
        raise Refusal("the logits' masking does not match a (clipped) window around each query")
    # Offsets a query can reach on this line: the table needs no more (a window wider than
    # the line is clipped by it; offsets beyond a table clamp to its ends).
    radius = min(length - 1, (width - 1) // 2) if not is_global else length - 1
    middle = length // 2
    # One probe in the middle sees every offset when the window fits; else probe both ends.
    centred = middle - radius >= 0 and middle + radius <= length - 1
    packed = list(range(radius, length - radius, radius + 1)) if centred else [middle]
    return Window(
        keys=keys,
        is_global=is_global,
        span=0 if is_global else width,
        radius=radius,
        offsets=np.arange(-radius, radius + 1),
        middle=middle,
        probe_positions=[middle] if centred else [0, length - 1],
        packed_positions=packed,
    )


# -------------------------------------------------------------------------------- the roles


@dataclass(frozen=True)
class ChannelRoles:
    """The qkv channels of each role: query and key channels per head, value channels."""

    query: list[np.ndarray]  # per head, in order
    key: list[np.ndarray]
    value: np.ndarray
    key_depth: int
    value_depth: int


@dataclass(frozen=True)
class Reach:
    """The logits a channel set at `position` can move, as entries (query, slot): its row (as
    a query) then its column (as a key), each with the table offset index it reads."""

    position: int
    rows: np.ndarray
    slots: np.ndarray
    offsets: np.ndarray
    in_row: np.ndarray  # the entry belongs to the row part


def reach(window: Window, position: int) -> Reach:
    keys = window.keys
    row_slots = np.flatnonzero(keys[position] >= 0)
    col_rows, col_slots = np.nonzero(keys == position)
    offsets = np.concatenate([keys[position, row_slots] - position, position - col_rows])
    return Reach(
        position=position,
        rows=np.concatenate([np.full(len(row_slots), position), col_rows]),
        slots=np.concatenate([row_slots, col_slots]),
        offsets=offsets + window.radius,
        in_row=np.arange(len(offsets)) < len(row_slots),
    )


def probe_roles(pieces: LayerPieces, window: Window) -> ChannelRoles:
    """A channel set at one position moves logits of one query row (q), of one key column (k),
    or no logits at all (v). Roles do not depend on the line length: where the graph computes
    its sizes, short lines (`scan_pieces`) probe every channel in one run. Without positional
    terms a q or k channel alone moves nothing: when the heads do not add up, the channels read
    as v are probed again against every channel set at a second position (`_bilinear_roles`),
    which separates q and k from v."""
    heads = pieces.geometry.heads
    scan = scan_pieces(pieces, window)
    scan_window = probe_window(scan) if scan is not pieces else window
    role, head_of = _scan_channels(scan, scan_window)

    def split() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        query = [np.flatnonzero((role == "q") & (head_of == g)) for g in range(heads)]
        key = [np.flatnonzero((role == "k") & (head_of == g)) for g in range(heads)]
        return query, key, np.flatnonzero(role == "v")

    query, key, value = split()
    if any(len(c) != len(query[0]) for c in query + key) or len(query[0]) == 0:
        _bilinear_roles(scan, scan_window, role, head_of)
        query, key, value = split()
    key_depth = len(query[0])
    if any(len(c) != key_depth for c in query + key) or key_depth == 0:
        raise Refusal("heads do not have equal numbers of query and key channels")
    if len(value) % heads:
        raise Refusal("value channels do not split evenly over the heads")
    return ChannelRoles(query, key, value, key_depth, len(value) // heads)


SCAN_LENGTH = 5  # line length of the role scan: a row and a column of several entries
SCAN_LINES = 256  # lines (channels) per run of the role scan


def scan_pieces(pieces: LayerPieces, window: Window) -> LayerPieces:
    """The pieces on short lines, one channel each, when the graph allows and that costs less
    (a run's cost grows with lines x length); else the pieces."""
    geometry = pieces.geometry
    length = min(geometry.length, SCAN_LENGTH)
    if length * len(window.packed_positions) >= geometry.length:
        return pieces
    return pieces.resized(min(geometry.channels, SCAN_LINES), length) or pieces


def _scan_channels(pieces: LayerPieces, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(role, head) of every channel: each run sets one channel at each packed position of
    each line (their reaches are disjoint), so a run probes lines x positions channels."""
    channels = pieces.geometry.channels
    role, head_of = np.full(channels, "", dtype=object), np.full(channels, -1)
    positions = np.asarray(window.packed_positions)
    reaches = [reach(window, int(p)) for p in positions]
    per_run = pieces.geometry.lines * len(positions)
    for start in range(0, channels, per_run):
        chunk = np.arange(start, min(start + per_run, channels))
        line, which = np.divmod(np.arange(len(chunk)), len(positions))
        probe = pieces.zero_qkv()
        probe[line, chunk, positions[which]] = 1.0
        delta = pieces.logit_delta(probe)
        for index, seen in enumerate(reaches):
            mine = which == index
            moved = delta[line[mine][:, None], :, seen.rows[None], seen.slots[None]]
            for channel, d in zip(chunk[mine], moved, strict=True):  # d: [entries, heads]
                role[channel], head_of[channel] = _role_in_reach(d, seen, int(channel))
    return role, head_of


def _role_in_reach(moved: np.ndarray, seen: Reach, channel: int) -> tuple[str, int]:
    """(role, head) from what one probe moved in its reach [entries, heads]: nothing (v), only
    its own query row (q), else its key column (k)."""
    changed = np.abs(moved) > 1e-7 * max(1.0, np.abs(moved).max())
    if not changed.any():
        return "v", -1
    hit_heads = np.flatnonzero(changed.any(axis=0))
    if len(hit_heads) != 1:
        raise Refusal(f"qkv channel {channel} feeds the logits of several heads")
    rows = np.unique(seen.rows[changed[:, hit_heads[0]]])
    return ("q" if np.array_equal(rows, [seen.position]) else "k"), int(hit_heads[0])


def _role_of(delta: np.ndarray, channel: int, query_row: int, key_row: int) -> tuple[str, int]:
    """(role, head) from what one probe moved in the logits [heads, L, keys]: nothing (v), the
    row `query_row` (q) or, given `key_row` >= 0, that row (k); else any other row (k)."""
    changed = np.abs(delta) > 1e-7 * max(1.0, np.abs(delta).max())
    if not changed.any():
        return "v", -1
    hit_heads = np.flatnonzero(changed.any(axis=(1, 2)))
    if len(hit_heads) != 1:
        raise Refusal(f"qkv channel {channel} feeds the logits of several heads")
    rows = np.flatnonzero(changed[hit_heads[0]].any(axis=1))
    if np.array_equal(rows, [query_row]):
        return "q", int(hit_heads[0])
    if key_row >= 0 and not np.array_equal(rows, [key_row]):
        raise Refusal(f"qkv channel {channel} moves logits of several queries")
    return "k", int(hit_heads[0])


def _bilinear_roles(
    pieces: LayerPieces, window: Window, role: np.ndarray, head_of: np.ndarray
) -> None:
    """Every channel set to 1 at the middle position, and the probed channel at a neighbour p:
    the q.k term moves row p if it is a query channel (against the keys in the middle), row
    middle at key p if it is a key channel, and nothing if it is a value channel."""
    middle, lines = window.middle, pieces.geometry.lines
    neighbours = [p for p in (middle + 1, middle - 1) if p in window.keys[middle]]
    unknown = np.flatnonzero(role == "v")
    if not len(unknown) or not neighbours or middle not in window.keys[neighbours[0]]:
        return
    other = neighbours[0]
    background = pieces.zero_qkv()
    background[:, :, middle] = 1.0
    base = pieces.logits(background)
    valid = window.keys >= 0
    for start in range(0, len(unknown), lines):
        chunk = unknown[start : start + lines]
        probe = background.copy()
        probe[np.arange(len(chunk)), chunk, other] = 1.0
        delta = pieces.logits(probe) - base
        delta[:, :, ~valid] = 0.0
        for line, channel in enumerate(chunk):
            role[channel], head_of[channel] = _role_of(delta[line], channel, other, middle)


# ------------------------------------------------------------------------------- the logits


@dataclass(frozen=True)
class LogitTerms:
    """The logits' constants: relative query / key tables [heads, Dq, offsets], q.k scales."""

    rel_q: np.ndarray
    rel_k: np.ndarray
    logit_scale: np.ndarray  # [heads]


def probe_logits(pieces: LayerPieces, window: Window, roles: ChannelRoles) -> LogitTerms:
    """A query (key) channel alone at one position gives scale * table column for each offset
    key - query its window reaches; a q and a k channel together add the q.k term."""
    rel_q, rel_k, seen = _probe_tables(pieces, window, roles)
    if not seen.all():
        raise Refusal("could not observe every relative offset of the tables")
    terms = LogitTerms(rel_q, rel_k, np.zeros(pieces.geometry.heads))
    _probe_logit_scale(pieces, window, roles, terms)
    return terms


def _probe_tables(
    pieces: LayerPieces, window: Window, roles: ChannelRoles
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rel_q, rel_k [heads, Dq, offsets], offsets seen). Heads move their own logits only, so
    each (line, position) slot of a run holds the a-th q (then k) channel of every head; a run's
    positions are packed where the window fits, else each end of the line gets its own passes
    (together they see every offset)."""
    heads, lines, dq = pieces.geometry.heads, pieces.geometry.lines, roles.key_depth
    tables = np.zeros((2, heads, dq, len(window.offsets)))  # rel_q, rel_k
    seen = np.zeros(len(window.offsets), bool)
    by_slot = [np.concatenate([roles.query[g], roles.key[g]]) for g in range(heads)]
    passes = [window.packed_positions] if window.centred else [[p] for p in window.probe_positions]
    for positions in passes:
        reaches = [reach(window, p) for p in positions]
        per_run = lines * len(positions)
        for start in range(0, 2 * dq, per_run):
            slots = np.arange(start, min(start + per_run, 2 * dq))
            line, which = np.divmod(np.arange(len(slots)), len(positions))
            probe = pieces.zero_qkv()
            for channels in by_slot:
                probe[line, channels[slots], np.asarray(positions)[which]] = 1.0
            delta = pieces.logit_delta(probe)
            for n, slot in enumerate(slots):
                seen_at = reaches[which[n]]
                is_key = int(slot >= dq)
                part = ~seen_at.in_row if is_key else seen_at.in_row
                rows, cols, offsets = seen_at.rows[part], seen_at.slots[part], seen_at.offsets[part]
                for g in range(heads):
                    tables[is_key, g, slot % dq, offsets] = delta[line[n], g, rows, cols]
                seen[seen_at.offsets[seen_at.in_row]] = True
    return tables[0], tables[1], seen


def _probe_logit_scale(
    pieces: LayerPieces, window: Window, roles: ChannelRoles, terms: LogitTerms
) -> None:
    """q.k scale per head: q_a at one position and k_a at another, minus both linear parts;
    then the paired q / k channels must give the same scale."""
    lines, heads, length = pieces.geometry.lines, pieces.geometry.heads, pieces.geometry.length
    middle = window.middle
    query, key = (
        (0, min(1, length - 1)) if window.is_global else (middle, min(middle + 1, length - 1))
    )
    slot = int(np.flatnonzero(window.keys[query] == key)[0])
    t = key - query + window.radius

    def linear(head: int, a: int) -> float:
        return terms.rel_q[head, a, t] + terms.rel_k[head, a, t]

    probe = pieces.zero_qkv()
    for g in range(heads):
        line = g % lines
        probe[line, roles.query[g][0], query] = 1.0
        probe[line, roles.key[g][0], key] = 1.0
        if line == lines - 1 or g == heads - 1:
            delta = pieces.logit_delta(probe)
            for h in range(g - line, g + 1):
                terms.logit_scale[h] = delta[h % lines, h, query, slot] - linear(h, 0)
            probe[:] = 0.0
    # One head checked for pairing is enough to catch a different layout: pair a on line a - 1.
    pairs = np.arange(1, roles.key_depth)
    for start in range(0, len(pairs), lines):
        chunk = pairs[start : start + lines]
        probe = pieces.zero_qkv()
        probe[np.arange(len(chunk)), roles.query[0][chunk], query] = 1.0
        probe[np.arange(len(chunk)), roles.key[0][chunk], key] = 1.0
        delta = pieces.logit_delta(probe)
        for line, a in enumerate(chunk):
            got = delta[line, 0, query, slot] - linear(0, a)
            if not np.isclose(got, terms.logit_scale[0], rtol=1e-3, atol=1e-6):
                raise Refusal("query and key channels of a head do not pair up in order")


# ------------------------------------------------------------------------------- the values


@dataclass(frozen=True)
class ValueTerms:
    """The output side's constants: bias [C], relative value table [heads, Dv, offsets], and
    for each output channel the value channel feeding it and its scale."""

    out_bias: np.ndarray
    rel_v: np.ndarray
    value_of_output: np.ndarray
    value_scale: np.ndarray


def probe_values(pieces: LayerPieces, window: Window, roles: ChannelRoles) -> ValueTerms:
    """Attention weights fed directly: all-zero weights give the output bias; a one-hot weight
    at offset d gives scale_sve * r^v(d) (+ bias); a value channel added at that key gives its
    value scale on its output channel."""
    out_bias_lines = pieces.output(pieces.zero_qkv(), pieces.zero_attention())[0]  # [C, L]
    out_bias = out_bias_lines[:, 0]
    if not np.allclose(
        out_bias_lines, out_bias[:, None], atol=1e-5 * max(1, np.abs(out_bias).max())
    ):
        raise Refusal("the output bias varies along the line")
    if out_bias.shape[0] != pieces.geometry.heads * roles.value_depth:
        raise Refusal("output channels != heads x value depth")
    rel_v = _value_table(pieces, window, roles.value_depth, out_bias)
    value_of_output, value_scale = _value_scales(pieces, window, roles.value, out_bias.shape[0])
    return ValueTerms(out_bias, rel_v, value_of_output, value_scale)


def _value_table(
    pieces: LayerPieces, window: Window, value_depth: int, out_bias: np.ndarray
) -> np.ndarray:
    """The output at query i reads only row i of the weights, so one run holds a one-hot row
    per (line, query): every offset gets its own row, in as few runs as needed."""
    heads = pieces.geometry.heads
    rel_v = np.zeros((heads, value_depth, len(window.offsets)))
    pending = list(range(len(window.offsets)))
    while pending:
        attention, placed = _place_offsets(pieces, window, pending)
        if not placed:
            raise Refusal("some relative offsets of the value table cannot be probed")
        y = pieces.output(pieces.zero_qkv(), attention)
        for t, line, query in placed:
            rel_v[:, :, t] = (y[line, :, query] - out_bias).reshape(heads, value_depth)
        pending = [t for t in pending if t not in {p[0] for p in placed}]
    return rel_v


def _place_offsets(
    pieces: LayerPieces, window: Window, pending: list[int]
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Attention weights with one one-hot row per pending offset where a (line, query) row is
    still free, and the (offset index, line, query) of each row placed."""
    lines, length = pieces.geometry.lines, pieces.geometry.length
    attention = pieces.zero_attention()
    used = np.zeros((lines, length), bool)
    placed = []
    for t in pending:
        d = window.offsets[t]
        rows = np.arange(max(0, -d), min(length, length - d))  # queries with key in line
        for line in range(lines):
            free = rows[~used[line, rows]]
            if len(free):
                query = int(free[0])
                slot = int(np.flatnonzero(window.keys[query] == query + d)[0])
                attention[line, :, query, slot] = 1.0
                used[line, query] = True
                placed.append((t, line, query))
                break
    return attention, placed


def _value_scales(
    pieces: LayerPieces, window: Window, value_channels: np.ndarray, out_channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each output channel, the value channel that reaches it and its scale. Every query
    attends one-hot to its own key, so a value channel set at one position moves only that
    query's output: a run probes one channel per position of each line."""
    lines, length = pieces.geometry.lines, pieces.geometry.length
    value_scale = np.zeros(out_channels)
    value_of_output = np.full(out_channels, -1)
    attention = pieces.zero_attention()
    own = [int(np.flatnonzero(window.keys[query] == query)[0]) for query in range(length)]
    attention[:, :, np.arange(length), own] = 1.0
    base_y = pieces.output(pieces.zero_qkv(), attention)
    for start in range(0, len(value_channels), lines * length):
        chunk = value_channels[start : start + lines * length]
        line, position = np.divmod(np.arange(len(chunk)), length)
        probe = pieces.zero_qkv()
        probe[line, chunk, position] = 1.0
        ys = (pieces.output(probe, attention) - base_y)[line, :, position]  # [chunk, C]
        for ch, y in zip(chunk, ys, strict=True):
            hit = np.flatnonzero(np.abs(y) > 1e-7 * max(1.0, np.abs(y).max()))
            if len(hit) != 1:
                raise Refusal(f"value channel {ch} reaches {len(hit)} output channels, not one")
            value_of_output[hit[0]] = ch
            value_scale[hit[0]] = y[hit[0]]
    if (value_of_output < 0).any():
        raise Refusal("some output channels are not fed by any value channel")
    return value_of_output, value_scale


# --------------------------------------------------------------------------------- assembly


def assemble(
    weight: np.ndarray,
    bias: np.ndarray,
    roles: ChannelRoles,
    logits: LogitTerms,
    values: ValueTerms,
    span: int,
) -> Extracted:
    """The blocked Q|K|V projection (rows reordered, value scales folded) and the tables."""
    heads = len(roles.query)
    rows = np.concatenate([*roles.query, *roles.key, values.value_of_output])
    new_weight = weight[rows].copy()
    new_bias = bias[rows].copy()
    v_block = slice(2 * heads * roles.key_depth, None)
    new_weight[v_block] *= values.value_scale[:, None]
    new_bias[v_block] *= values.value_scale
    try:
        attributes = AxialAttentionAttributes(
            axis=3,  # on the lines viewed as [N, C, other, L]; see layout.normalize_layout
            num_heads=heads,
            key_depth=roles.key_depth,
            value_depth=roles.value_depth,
            span=span,
        )
    except OpSpecError as error:  # a layer of another form: reported, never written
        raise Refusal(f"extracted attributes break the operator's spec: {error}") from None
    return Extracted(
        weight=new_weight,
        bias=new_bias,
        rel_q=logits.rel_q,
        rel_k=logits.rel_k,
        rel_v=values.rel_v,
        logit_scale=logits.logit_scale,
        out_bias=values.out_bias,
        attributes=attributes,
    )
