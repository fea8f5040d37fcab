"""Small axial-attention layers "from other code bases", written here to test the rewrite on
shapes of layer our zoo does not have: position-free attention (MedT's local branch), softmax
over the wrong axis, sizes baked into the reshapes, and attention behind an unrelated stem."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from helpers import randomize_state


class LineAttention(nn.Module):
    """Axial attention without relative positions along one axis of NCHW: a 1x1 Conv1d + BN
    qkv projection per line, per-head softmax(q.k) over the line, output a.v (MedT's style).

    `baked` bakes the sizes of `shape` into the reshapes (python ints, as some code bases do);
    `softmax_dim` other than -1 makes the layer something the operator does not compute."""

    def __init__(
        self,
        channels: int,
        axis: int,
        heads: int = 2,
        key_depth: int = 2,
        value_depth: int = 3,
        softmax_dim: int = -1,
        baked: tuple[int, int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.axis, self.heads, self.softmax_dim, self.baked = axis, heads, softmax_dim, baked
        self.dq, self.dv = key_depth, value_depth
        width = heads * (2 * key_depth + value_depth)
        self.qkv = nn.Conv1d(channels, width, 1, bias=False)
        self.bn = nn.BatchNorm1d(width)
        self.out_channels = heads * value_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = self.baked or x.shape
        # lines [N, other, C, L]
        lines = x.permute(0, 3, 1, 2) if self.axis == 2 else x.permute(0, 2, 1, 3)
        other, length = (w, h) if self.axis == 2 else (h, w)
        qkv = self.bn(self.qkv(lines.reshape(n * other, c, length)))
        qkv = qkv.reshape(n * other, self.heads, 2 * self.dq + self.dv, length)
        q, k, v = torch.split(qkv, [self.dq, self.dq, self.dv], dim=2)
        logits = torch.einsum("bgci,bgcj->bgij", q, k)
        weights = torch.softmax(logits, dim=self.softmax_dim)
        out = torch.einsum("bgij,bgcj->bgci", weights, v)
        out = out.reshape(n, other, self.out_channels, length)
        return out.permute(0, 2, 3, 1) if self.axis == 2 else out.permute(0, 2, 1, 3)


class Stack(nn.Module):
    """Layers in sequence, optionally behind a stem (an unrelated Conv)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def export(model: nn.Module, shape: tuple[int, ...], path: Path, seed: int = 0) -> Path:
    """Seeded random weights and BatchNorm statistics, eval mode, TorchScript export, opset 17."""
    randomize_state(model, seed).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)
    return path


class LinearAxialAttention(nn.Module):
    """lucidrains' axial-attention shape: the axis moved last, each line (b*other, L, dim) goes
    through Linear q and kv projections, per-head softmax(q.k / sqrt(e)) over the line, the
    heads merged and a Linear output projection, then the axis moved back."""

    def __init__(self, dim: int, axis: int, heads: int = 2, dim_head: int = 2) -> None:
        super().__init__()
        self.axis, self.heads, self.dim_head = axis, heads, dim_head
        hidden = heads * dim_head
        self.to_q = nn.Linear(dim, hidden, bias=False)
        self.to_kv = nn.Linear(dim, 2 * hidden, bias=False)
        self.to_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [N, C, H, W] -> [N, other, L, C]
        lines = x.permute(0, 3, 2, 1) if self.axis == 2 else x.permute(0, 2, 3, 1)
        n, other, length, dim = lines.shape
        t = lines.reshape(n * other, length, dim)
        q, (k, v) = self.to_q(t), self.to_kv(t).chunk(2, dim=-1)

        def heads(z: torch.Tensor) -> torch.Tensor:
            z = z.reshape(n * other, length, self.heads, self.dim_head).transpose(1, 2)
            return z.reshape(n * other * self.heads, length, self.dim_head)

        q, k, v = heads(q), heads(k), heads(v)
        dots = torch.einsum("bie,bje->bij", q, k) * self.dim_head**-0.5
        out = torch.einsum("bij,bje->bie", dots.softmax(dim=-1), v)
        out = out.reshape(n * other, self.heads, length, self.dim_head).transpose(1, 2)
        out = self.to_out(out.reshape(n, other, length, -1))
        return out.permute(0, 3, 2, 1) if self.axis == 2 else out.permute(0, 3, 1, 2)


class GatedAxialAttention(nn.Module):
    """MedT's gated axial attention, written here: the reference layer's qkv Conv1d + BN, one
    relative table gathered at (query - key) for a fixed line length, and learned scalar gates
    on the positional terms (qr, kr in the logits) and on both value terms (sv, sve), before the
    similarity and output BatchNorms. Sizes are taken from the input (any length up to
    `kernel_size`'s table)."""

    def __init__(self, channels: int, axis: int, groups: int = 2, kernel_size: int = 8) -> None:
        super().__init__()
        self.axis, self.groups, self.kernel_size = axis, groups, kernel_size
        self.planes = channels // groups  # value depth; key depth is half of it
        self.qkv = nn.Conv1d(channels, 2 * channels, 1, bias=False)
        self.bn_qkv = nn.BatchNorm1d(2 * channels)
        self.bn_similarity = nn.BatchNorm2d(3 * groups)
        self.bn_output = nn.BatchNorm1d(2 * channels)
        self.relative = nn.Parameter(torch.randn(2 * self.planes, 2 * kernel_size - 1))
        # MedT initialises its gates at 0.1 and learns them; non-trivial values here.
        self.f_qr = nn.Parameter(torch.tensor(0.3))
        self.f_kr = nn.Parameter(torch.tensor(0.7))
        self.f_sv = nn.Parameter(torch.tensor(1.2))
        self.f_sve = nn.Parameter(torch.tensor(0.4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2) if self.axis == 2 else x.permute(0, 2, 1, 3)
        n, other, c, length = x.shape
        qkv = self.bn_qkv(self.qkv(x.reshape(n * other, c, length)))
        qkv = qkv.reshape(n * other, self.groups, 2 * self.planes, length)
        dq = self.planes // 2
        q, k, v = torch.split(qkv, [dq, dq, self.planes], dim=2)
        position = torch.arange(length)
        index = position[:, None] - position[None, :] + self.kernel_size - 1
        embeddings = self.relative[:, index.reshape(-1)].reshape(2 * self.planes, length, length)
        q_emb, k_emb, v_emb = torch.split(embeddings, [dq, dq, self.planes], dim=0)
        qr = torch.einsum("bgci,cij->bgij", q, q_emb) * self.f_qr
        kr = torch.einsum("bgci,cij->bgij", k, k_emb).transpose(2, 3) * self.f_kr
        qk = torch.einsum("bgci,bgcj->bgij", q, k)
        logits = self.bn_similarity(torch.cat([qk, qr, kr], dim=1))
        weights = logits.reshape(n * other, 3, self.groups, length, length).sum(dim=1)
        weights = torch.softmax(weights, dim=3)
        sv = torch.einsum("bgij,bgcj->bgci", weights, v) * self.f_sv
        sve = torch.einsum("bgij,cij->bgci", weights, v_emb) * self.f_sve
        out = torch.cat([sv, sve], dim=-1).reshape(n * other, 2 * c, length)
        out = self.bn_output(out).reshape(n, other, c, 2, length).sum(dim=-2)
        return out.permute(0, 2, 3, 1) if self.axis == 2 else out.permute(0, 2, 1, 3)


def sharpen_attention(model: nn.Module, scale: float) -> nn.Module:
    """Multiply every similarity BatchNorm's scales by `scale` (after randomize_state): sharper
    softmaxes. At a large enough scale a stack of such layers is numerically chaotic in fp32
    (rounding moves the near-ties of each softmax), as users' trained models sometimes are."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("bn_similarity"):
                module.weight.mul_(scale)
    return model
