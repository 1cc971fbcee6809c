"""ViT-Adapter's interaction modules (Chen et al. ICLR'23, §3.3-3.4): the injector and the extractor.

- :class:`Injector`: the ViT tokens x (queries, ViT grid) read the spatial-prior tokens c (values, 3 levels at
  strides 8/16/32) by multi-scale deformable cross-attention; ``x + γ · attn`` with γ initialised to 0, so a
  pretrained ViT starts unchanged.
- :class:`Extractor`: the spatial-prior tokens c (queries, their own 3 grids) read the ViT tokens x (values, one
  level) by deformable cross-attention, then a :class:`ConvFFN` (Linear -> 3x3 depth-wise conv per level -> GELU ->
  Linear, hidden width ``cffn_ratio`` · C).

Both see every ViT token. In the pruned host (vppkit.models.adapter.vit_adapter) pruned tokens enter with the
value they carried through the pruned blocks, and the injector also refreshes them.

Official behaviour kept on purpose (``query_residual=True``, ``attn_dropout=0.1``): the official VPP adapter
(PatGlan/Video-Patch-Pruning ``adapter_modules.py``) calls mmcv's ``MultiScaleDeformableAttention`` with the
normalised query, and mmcv returns ``dropout(attn) + query`` (its ``identity`` defaults to the query). So the
injector adds ``γ · (attn + LN(x))`` and the extractor ``attn + LN(c)``. czczup/ViT-Adapter's own MSDeformAttn
returns ``attn`` only: ``query_residual=False, attn_dropout=0``.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from timm.layers import DropPath
from torch import nn

from vppkit.models.adapter.deform_attn import build_deform_attn, deform_attend

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


class ConvFFN(nn.Module):
    """Linear -> depth-wise 3x3 conv on each level's grid -> GELU -> dropout -> Linear -> dropout (ViT-Adapter).

    Forward:
        x (B, sum h*w, C) tokens of the levels ``shapes`` (row-major, concatenated) -> (B, sum h*w, C).
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        x = self.fc1(x)
        b, _, c = x.shape
        parts = x.split([h * w for h, w in shapes], dim=1)
        x = torch.cat([self.dwconv(p.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
                       for p, (h, w) in zip(parts, shapes)], dim=1)
        return self.drop(self.fc2(self.drop(self.act(x))))


class _DeformBlock(nn.Module):
    """Shared part: LN(query), LN(value), deformable attention, official mmcv residual / dropout quirk."""

    def __init__(self, dim: int, heads: int, points: int, levels: int, query_residual: bool,
                 attn_dropout: float) -> None:
        super().__init__()
        self.query_norm = LayerNorm6(dim)
        self.feat_norm = LayerNorm6(dim)
        self.attn = build_deform_attn(dim, heads, levels, points)
        self.query_residual = bool(query_residual)
        self.attn_drop = nn.Dropout(attn_dropout)

    def _attend(self, query: torch.Tensor, ref: torch.Tensor, feat: torch.Tensor,
                shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        q = self.query_norm(query)
        out = self.attn_drop(deform_attend(self.attn, q, ref, self.feat_norm(feat), shapes))
        return out + q if self.query_residual else out


class Injector(_DeformBlock):
    """Spatial prior -> ViT tokens: ``x + γ ⊙ DeformAttn(LN(x), LN(c))`` (γ per channel, initialised to ``init_values``).

    Args:
        dim: C. heads: deformable heads (6). points: sampling points per head and level (4).
        levels: spatial-prior levels (3: strides 8/16/32). init_values: γ's initial value (0).
        query_residual, attn_dropout: the official mmcv behaviour (module docstring).

    Forward:
        x (B, N, C) ViT patch tokens (full grid), ref (1, N, 1, 2) their reference points, c (B, S, C) spatial-prior
        tokens of the levels ``c_shapes`` -> new x (B, N, C).
    """

    def __init__(self, dim: int, heads: int = 6, points: int = 4, levels: int = 3, init_values: float = 0.0,
                 query_residual: bool = True, attn_dropout: float = 0.1) -> None:
        super().__init__(dim, heads, points, levels, query_residual, attn_dropout)
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor, ref: torch.Tensor, c: torch.Tensor,
                c_shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        return x + self.gamma * self._attend(x, ref, c, c_shapes)


class Extractor(_DeformBlock):
    """ViT tokens -> spatial prior: ``c + DeformAttn(LN(c), LN(x))``, then ``c + DropPath(ConvFFN(LN(c)))``.

    Args:
        dim: C. heads, points: as :class:`Injector`. cffn_ratio: ConvFFN hidden width / C (0.25); 0 = no ConvFFN.
        drop: ConvFFN dropout. drop_path: stochastic depth on the ConvFFN branch (the ViT's drop-path rate in
        the official code). query_residual, attn_dropout: the official mmcv behaviour (module docstring).

    Forward:
        c (B, S, C) spatial-prior tokens, ref (1, S, 1, 2) their reference points, c_shapes their levels,
        x (B, N, C) ViT patch tokens (full grid), grid (H_p, W_p) -> new c (B, S, C).
    """

    def __init__(self, dim: int, heads: int = 6, points: int = 4, cffn_ratio: float = 0.25, drop: float = 0.0,
                 drop_path: float = 0.0, query_residual: bool = True, attn_dropout: float = 0.1) -> None:
        super().__init__(dim, heads, points, 1, query_residual, attn_dropout)
        self.ffn = ConvFFN(dim, int(dim * cffn_ratio), drop) if cffn_ratio > 0 else None
        self.ffn_norm = LayerNorm6(dim) if self.ffn is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, c: torch.Tensor, ref: torch.Tensor, c_shapes: Sequence[tuple[int, int]], x: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        c = c + self._attend(c, ref, x, [tuple(grid)])
        if self.ffn is not None:
            c = c + self.drop_path(self.ffn(self.ffn_norm(c), c_shapes))
        return c
