"""Position-sensitive axial attention (Axial-DeepLab, Wang et al. ECCV 2020, Eq. 4).

Two forms of the same layer:

* `AxialAttention`, the training form. Its parameters, buffers and BatchNorms are those of the
  reference PyTorch implementation (csrhddlam/axial-deeplab, `lib/models/axialnet.py`), so its
  checkpoints load unchanged. Beyond the reference it runs on lines of any length (relative offsets
  beyond its table clamp to the table's ends) and supports a local span m, computed windowed:
  memory grows with L * m, never with a dense L x L logit matrix.
* `FoldedAxialAttention`, the inference form: every BatchNorm folded into a 1x1 qkv Conv and the
  constant tables of the operator contract (plugins/axial_attention, `axial-attention-op.md`), and
  `axial_attention_op`, the contract's math. This is the numeric reference for the ONNX rewrite,
  the CUDA kernel and the TensorRT plugin.

Relative-table conventions: the reference indexes r^q and r^v by (query - key) and r^k by
(key - query), each table centred on offset 0. The contract indexes all three by (key - query).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from axial_deploy.op.spec import GLOBAL_SPAN, AxialAttentionAttributes


class QKVTransform(nn.Conv1d):
    """1x1 Conv1d giving q, k, v at every position of a line (the reference's `qkv_transform`)."""


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return scale.detach(), shift.detach()


def window_positions(length: int, span: int, device: torch.device | None = None):
    """Key positions of a local window around each query of a line.

    Returns (positions [L, m] clamped into the line, valid [L, m] bool): window slot w of query i
    holds key i + w - (m - 1) / 2, valid when that key lies inside the line.
    """
    radius = (span - 1) // 2
    query = torch.arange(length, device=device).unsqueeze(1)
    slot = torch.arange(span, device=device).unsqueeze(0)
    key = query + slot - radius
    valid = (key >= 0) & (key < length)
    return key.clamp(0, length - 1), valid


# Eval-time bound on the windowed intermediates ([lines, G, L, m, C] elements) per chunk of
# lines: 2**25 float32 values = 128 MiB, so Axial-DeepLab at 1025 x 2049 stays within a few GiB.
WINDOW_ELEMENTS_PER_CHUNK = 2**25


def _exporting() -> bool:
    """True while a graph is traced or compiled: chunk loops would be baked into it."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def _line_chunks(lines: int, elements_per_line: int) -> list[slice]:
    """Slices of the line (batch) axis that keep each chunk under WINDOW_ELEMENTS_PER_CHUNK."""
    step = max(1, WINDOW_ELEMENTS_PER_CHUNK // max(elements_per_line, 1))
    return [slice(start, start + step) for start in range(0, lines, step)]


class AxialAttention(nn.Module):
    """Training form of a position-sensitive axial-attention layer.

    Args mirror the reference: `kernel_size` is the line length its global relative table is sized
    for (table of 2 * kernel_size - 1 offsets). `span` > 0 (odd) selects local attention with a
    table of `span` offsets; `span` = 0 is global. `stride` > 1 average-pools the output;
    `pool` = "reference" is the reference's AvgPool2d(stride), with ceil_mode so that odd sizes
    give ceil(size / stride) like the strided 1x1 conv of the block's shortcut (even sizes,
    such as 224's, are unchanged); "centered" uses a (stride + 1)-wide window with padding so
    a 2n + 1 map goes to n + 1 (Axial-DeepLab's 1025 -> 513 -> 257 -> 129 -> 65 sizes),
    centred on the strided 1x1 conv's samples.
    `shared_tables` = True is the reference's one relative table for all heads ([2 * Dv, T]);
    False gives each head its own ([G, 2 * Dv, T]), as in the paper's Eq. 4 and the contract.
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        groups: int = 8,
        kernel_size: int = 56,
        stride: int = 1,
        bias: bool = False,
        width: bool = False,
        span: int = GLOBAL_SPAN,
        pool: str = "reference",
        shared_tables: bool = True,
    ) -> None:
        super().__init__()
        if in_planes % groups or out_planes % groups:
            raise ValueError(
                f"in_planes ({in_planes}) and out_planes ({out_planes}) must be multiples of "
                f"groups ({groups})"
            )
        if (out_planes // groups) % 2:
            raise ValueError(
                f"out_planes / groups = {out_planes // groups} must be even: each head splits "
                "its channels into key depth = value depth / 2"
            )
        if span < 0 or (span > 0 and span % 2 == 0):
            raise ValueError(f"span must be 0 (global) or a positive odd number, got {span}")
        if pool not in ("reference", "centered"):
            raise ValueError(f"pool must be 'reference' or 'centered', got {pool!r}")
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.groups = groups
        self.group_planes = out_planes // groups
        self.kernel_size = kernel_size
        self.stride = stride
        self.bias = bias
        self.width = width
        self.span = span
        self.shared_tables = shared_tables

        self.qkv_transform = QKVTransform(in_planes, out_planes * 2, kernel_size=1, bias=False)
        self.bn_qkv = nn.BatchNorm1d(out_planes * 2)
        self.bn_similarity = nn.BatchNorm2d(groups * 3)  # term-major: qk, qr, kr
        self.bn_output = nn.BatchNorm1d(out_planes * 2)  # interleaved: 2 * channel + (sv, sve)

        table_length = 2 * kernel_size - 1 if span == GLOBAL_SPAN else span
        table_shape = (self.group_planes * 2, table_length)
        if not shared_tables:
            table_shape = (groups, *table_shape)
        self.relative = nn.Parameter(torch.randn(table_shape))
        if span == GLOBAL_SPAN:
            # The reference's gather index for its fixed line length (kept for checkpoint keys).
            self.register_buffer("flatten_index", self._global_index(kernel_size))
        if stride > 1:
            if pool == "reference":
                self.pooling = nn.AvgPool2d(stride, stride=stride, ceil_mode=True)
            else:
                self.pooling = nn.AvgPool2d(
                    stride + 1, stride=stride, padding=stride // 2, count_include_pad=False
                )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.qkv_transform.weight, 0.0, math.sqrt(1.0 / self.in_planes))
        nn.init.normal_(self.relative, 0.0, math.sqrt(1.0 / self.group_planes))

    @property
    def key_depth(self) -> int:
        return self.group_planes // 2

    @property
    def value_depth(self) -> int:
        return self.group_planes

    def _global_index(self, length: int, device: torch.device | None = None) -> Tensor:
        """Flat [L * L] column index into `relative`: entry (i, j) = clamp(i - j + K - 1)."""
        first = torch.arange(length, device=device).unsqueeze(1)
        second = torch.arange(length, device=device).unsqueeze(0)
        index = first - second + self.kernel_size - 1
        return index.clamp(0, 2 * self.kernel_size - 2).reshape(-1)

    def forward(self, x: Tensor) -> Tensor:
        # Lines along the attended axis: [N * other, C, L].
        x = x.permute(0, 2, 1, 3) if self.width else x.permute(0, 3, 1, 2)
        n, other, channels, length = x.shape
        x = x.reshape(n * other, channels, length)

        qkv = self.bn_qkv(self.qkv_transform(x))
        qkv = qkv.reshape(n * other, self.groups, self.group_planes * 2, length)
        q, k, v = torch.split(qkv, [self.key_depth, self.key_depth, self.value_depth], dim=2)
        if self.span == GLOBAL_SPAN:
            out = self._attend_global(q, k, v)
        elif self.training or _exporting():
            out = self._attend_local(q, k, v)
        else:  # lines are independent in eval mode: bound memory by chunks of lines
            per_line = self.groups * length * self.span * self.group_planes * 2
            chunks = _line_chunks(n * other, per_line)
            out = torch.cat([self._attend_local(q[c], k[c], v[c]) for c in chunks])

        stacked = out.reshape(n * other, self.out_planes * 2, length)
        out = self.bn_output(stacked).reshape(n, other, self.out_planes, 2, length).sum(dim=-2)
        out = out.permute(0, 2, 1, 3) if self.width else out.permute(0, 2, 3, 1)
        if self.stride > 1:
            out = self.pooling(out)
        return out

    def _head_tables(self, columns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Relative tables gathered at `columns` ([...] of table indices), as [G or 1, C, ...]."""
        table = self.relative if not self.shared_tables else self.relative.unsqueeze(0)
        gathered = table[:, :, columns]
        return torch.split(gathered, [self.key_depth, self.key_depth, self.value_depth], dim=1)

    def _attend_global(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The reference's computation: dense [L, L] logits with gathered relative embeddings."""
        batch, length = q.shape[0], q.shape[-1]
        # flatten_index == _global_index(kernel_size); an exported graph computes the index from
        # the line length instead, so that a Python branch on the length (which tracing bakes in
        # and torch.export specializes on) cannot fix the graph's height and width.
        if not _exporting() and length == self.kernel_size:
            index = self.flatten_index
        else:
            index = self._global_index(length, q.device)
        if self.shared_tables:  # exactly the reference's graph
            embeddings = torch.index_select(self.relative, 1, index)
            embeddings = embeddings.reshape(self.group_planes * 2, length, length)
            q_emb, k_emb, v_emb = torch.split(
                embeddings, [self.key_depth, self.key_depth, self.value_depth], dim=0
            )
            qr = torch.einsum("bgci,cij->bgij", q, q_emb)
            kr = torch.einsum("bgci,cij->bgij", k, k_emb).transpose(2, 3)
        else:
            q_emb, k_emb, v_emb = self._head_tables(index.reshape(length, length))
            qr = torch.einsum("bgci,gcij->bgij", q, q_emb)
            kr = torch.einsum("bgci,gcij->bgij", k, k_emb).transpose(2, 3)
        qk = torch.einsum("bgci,bgcj->bgij", q, k)
        logits = self.bn_similarity(torch.cat([qk, qr, kr], dim=1))
        logits = logits.reshape(batch, 3, self.groups, length, length).sum(dim=1)
        weights = F.softmax(logits, dim=3)
        sv = torch.einsum("bgij,bgcj->bgci", weights, v)
        if self.shared_tables:
            sve = torch.einsum("bgij,cij->bgci", weights, v_emb)
        else:
            sve = torch.einsum("bgij,gcij->bgci", weights, v_emb)
        return torch.cat([sv, sve], dim=-1)

    def _attend_local(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Windowed attention: logits only for the m keys around each query ([L, m], not [L, L]).

        Works position-major ([B, G, L, C]) so the windows gathered from each line are
        [B, G, L, m, C] and every product below is a plain batched matmul, with no permuted
        copies of the windows (einsum over [B, G, C, L, m] spent most of its time copying).
        """
        batch, length = q.shape[0], q.shape[-1]
        positions, valid = window_positions(length, self.span, q.device)
        # [B, G, L, C], contiguous so the window gather copies whole rows of C values.
        qt, kt, vt = (t.transpose(2, 3).contiguous() for t in (q, k, v))
        k_win, v_win = kt[:, :, positions], vt[:, :, positions]  # [B, G, L, m, C]
        # Slot w holds offset key - query = w - r: r^k by (key - query) reads column w, r^q and
        # r^v by (query - key) read column m - 1 - w. Tables: [G or 1, C, m].
        slots = torch.arange(self.span, device=q.device)
        _, k_emb, _ = self._head_tables(slots)
        q_emb, _, v_emb = self._head_tables(slots.flip(0))
        qk = torch.matmul(k_win, qt.unsqueeze(-1)).squeeze(-1)  # [B, G, L, m]
        qr = torch.matmul(qt, q_emb)
        kr = (k_win * k_emb.transpose(1, 2).unsqueeze(1)).sum(dim=-1)
        logits = self.bn_similarity(torch.cat([qk, qr, kr], dim=1))
        logits = logits.reshape(batch, 3, self.groups, length, self.span).sum(dim=1)
        logits = logits.masked_fill(~valid, float("-inf"))
        weights = F.softmax(logits, dim=3)
        sv = torch.matmul(weights.unsqueeze(3), v_win).squeeze(3)  # [B, G, L, Dv]
        sve = torch.matmul(weights, v_emb.transpose(1, 2))
        return torch.cat([sv.transpose(2, 3), sve.transpose(2, 3)], dim=-1)


def axial_attention_op(
    qkv: Tensor,
    rel_q: Tensor,
    rel_k: Tensor,
    rel_v: Tensor,
    logit_scale: Tensor,
    out_bias: Tensor,
    attributes: AxialAttentionAttributes | None = None,
    **keywords: int,
) -> Tensor:
    """The AxialAttention operator contract, computed in float32 (float64 for float64 input) and
    returned in qkv's dtype.

    qkv [N, G * (2 Dq + Dv), H, W] (blocked Q | K | V, head-major); rel_q, rel_k [G, Dq, T];
    rel_v [G, Dv, T]; logit_scale [G]; out_bias [G * Dv]. Returns y [N, G * Dv, H, W].
    `attributes`: an `AxialAttentionAttributes`, or the five ints as keywords (axis=...,
    num_heads=..., key_depth=..., value_depth=..., span=...), the form the torch op's schema has.
    """
    attributes = AxialAttentionAttributes.resolve(attributes, keywords, "axial_attention_op")
    axis = attributes.axis
    groups, dq, dv = attributes.num_heads, attributes.key_depth, attributes.value_depth
    expected = attributes.qkv_channels
    if qkv.dim() != 4 or qkv.shape[1] != expected:
        raise ValueError(f"qkv must be [N, G*(2*Dq+Dv) = {expected}, H, W], got {tuple(qkv.shape)}")
    table = rel_q.shape[-1]
    if table % 2 == 0 or rel_k.shape[-1] != table or rel_v.shape[-1] != table:
        raise ValueError("rel_q, rel_k and rel_v must share one odd table length T")
    out_dtype = qkv.dtype
    compute = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    n, _, height, width = qkv.shape
    length, other = (height, width) if axis == 2 else (width, height)
    # Position-major lines: [B = N * other, G, L, C] (see AxialAttention._attend_local).
    order = (0, 4, 1, 3, 2) if axis == 2 else (0, 3, 1, 4, 2)

    def lines(start: int, depth: int) -> Tensor:
        block = qkv[:, start : start + groups * depth].to(compute)
        block = block.reshape(n, groups, depth, height, width).permute(order)
        return block.reshape(n * other, groups, length, depth)

    qt, kt, vt = lines(0, dq), lines(groups * dq, dq), lines(2 * groups * dq, dv)

    window = attributes.window(length)  # a global span reaches every key from every query
    positions, valid = window_positions(length, window, qkv.device)
    offsets = torch.arange(window, device=qkv.device) - (window - 1) // 2  # key - query
    columns = (offsets + (table - 1) // 2).clamp(0, table - 1)
    rq, rk, rv = (t.to(compute)[..., columns] for t in (rel_q, rel_k, rel_v))  # [G, C, m]

    scale = logit_scale.to(compute).reshape(1, groups, 1, 1)
    bias = out_bias.to(compute).reshape(1, groups, 1, dv)

    def attend(qt: Tensor, kt: Tensor, vt: Tensor) -> Tensor:
        k_win, v_win = kt[:, :, positions], vt[:, :, positions]  # [B, G, L, m, C]
        logits = torch.matmul(k_win, (scale * qt).unsqueeze(-1)).squeeze(-1)  # [B, G, L, m]
        logits = logits + torch.matmul(qt, rq)
        logits = logits + (k_win * rk.transpose(1, 2).unsqueeze(1)).sum(dim=-1)
        logits = logits.masked_fill(~valid, float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        y = torch.matmul(weights.unsqueeze(3), v_win).squeeze(3)  # [B, G, L, Dv]
        return y + torch.matmul(weights, rv.transpose(1, 2)) + bias

    if _exporting():
        y = attend(qt, kt, vt)
    else:
        chunks = _line_chunks(n * other, groups * length * window * (dq + dv))
        y = torch.cat([attend(qt[c], kt[c], vt[c]) for c in chunks])
    # Back to NCHW: [N, other, G, L, Dv] -> [N, G, Dv, H, W].
    y = y.reshape(n, other, groups, length, dv)
    y = y.permute(0, 2, 4, 3, 1) if axis == 2 else y.permute(0, 2, 4, 1, 3)
    return y.reshape(n, groups * dv, height, width).to(out_dtype)


class FoldedAxialAttention(nn.Module):
    """Inference form: 1x1 qkv Conv (BatchNorms folded, Q|K|V blocked), the op, pooling.

    `attributes` holds the operator's attributes, as the ONNX node and the plugin carry them."""

    def __init__(
        self,
        qkv_conv: nn.Conv2d,
        rel_q: Tensor,
        rel_k: Tensor,
        rel_v: Tensor,
        logit_scale: Tensor,
        out_bias: Tensor,
        attributes: AxialAttentionAttributes,
        pooling: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.qkv = qkv_conv
        self.register_buffer("rel_q", rel_q)
        self.register_buffer("rel_k", rel_k)
        self.register_buffer("rel_v", rel_v)
        self.register_buffer("logit_scale", logit_scale)
        self.register_buffer("out_bias", out_bias)
        self.attributes = attributes
        self.pooling = pooling

    def tables(self) -> tuple[Tensor, ...]:
        """The operator's tables in its argument order (rel_q, rel_k, rel_v, logit_scale,
        out_bias)."""
        return (self.rel_q, self.rel_k, self.rel_v, self.logit_scale, self.out_bias)

    def forward(self, x: Tensor) -> Tensor:
        y = axial_attention_op(self.qkv(x), *self.tables(), self.attributes)
        return self.pooling(y) if self.pooling is not None else y


@torch.no_grad()
def fold_axial_attention(layer: AxialAttention) -> FoldedAxialAttention:
    """Fold an eval-mode `AxialAttention` into the operator contract's tensors.

    bn_qkv folds into the qkv Conv; bn_similarity's scales become logit_scale and scale rel_q /
    rel_k (its shifts are constant along the keys and cancel in the softmax); bn_output's sv scale
    folds into the V rows of the Conv, its sve scale into rel_v, both shifts into out_bias.
    """
    groups, gp = layer.groups, layer.group_planes
    dq, dv = layer.key_depth, layer.value_depth

    qkv_scale, qkv_shift = _bn_affine(layer.bn_qkv)
    weight = layer.qkv_transform.weight[:, :, 0] * qkv_scale[:, None]  # [2 * out, in]
    bias = qkv_shift.clone()

    out_scale, out_shift = _bn_affine(layer.bn_output)
    sv_scale, sve_scale = out_scale[0::2], out_scale[1::2]  # per output channel g * Dv + c
    out_bias = out_shift[0::2] + out_shift[1::2]

    # The reference's channel layout is per head [q | k | v]; the contract's is blocked Q | K | V.
    per_head = torch.arange(2 * gp * groups).reshape(groups, 2 * gp)
    q_rows = per_head[:, :dq].reshape(-1)
    k_rows = per_head[:, dq : 2 * dq].reshape(-1)
    v_rows = per_head[:, 2 * dq :].reshape(-1)
    rows = torch.cat([q_rows, k_rows, v_rows])
    weight, bias = weight[rows].clone(), bias[rows].clone()
    v_block = slice(2 * groups * dq, None)
    weight[v_block] *= sv_scale[:, None]
    bias[v_block] *= sv_scale

    conv = nn.Conv2d(
        layer.in_planes,
        weight.shape[0],
        kernel_size=1,
        bias=True,
        dtype=weight.dtype,
        device=weight.device,
    )
    conv.weight.copy_(weight[:, :, None, None])
    conv.bias.copy_(bias)

    sim_scale, _ = _bn_affine(layer.bn_similarity)
    qk_scale, qr_scale, kr_scale = sim_scale.reshape(3, groups)
    tables = layer.relative.detach()
    tables = tables.unsqueeze(0) if layer.shared_tables else tables  # [G or 1, 2 * Dv, T]
    table_q, table_k, table_v = torch.split(tables, [dq, dq, dv], dim=1)
    # (query - key) tables reversed into (key - query) order; then per-head scales.
    rel_q = qr_scale[:, None, None] * table_q.flip(-1)
    rel_k = kr_scale[:, None, None] * table_k
    rel_v = sve_scale.reshape(groups, dv, 1) * table_v.flip(-1)

    return FoldedAxialAttention(
        conv,
        rel_q.contiguous(),
        rel_k.contiguous(),
        rel_v.contiguous(),
        qk_scale.clone(),
        out_bias.clone(),
        AxialAttentionAttributes(
            axis=3 if layer.width else 2,
            num_heads=groups,
            key_depth=dq,
            value_depth=dv,
            span=layer.span,
        ),
        pooling=getattr(layer, "pooling", None),
    )


@torch.no_grad()
def fold_axial_layers(model: nn.Module) -> nn.Module:
    """Replace, in place, every `AxialAttention` of an eval-mode model by its folded form."""
    for name, child in list(model.named_children()):
        if isinstance(child, AxialAttention):
            setattr(model, name, fold_axial_attention(child))
        else:
            fold_axial_layers(child)
    return model
