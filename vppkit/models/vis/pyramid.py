"""Simple feature pyramid from the ViT's full-grid features (ViTDet, Li et al. ECCV'22, §3).

Replaces ROVIS' ViT-Adapter + MSDeformAttn pixel decoder (vpp-notes §2.1-2.2, docs/vis_model.md): the
plain ViT output at stride 16 is deconvolved to strides 8 and 4 and max-pooled to stride 32. A light top-down
fusion (FPN-style) gives the stride-4 per-pixel embedding ("mask features") the query decoder dots with.
Every pyramid level is computed from the *full* grid of the last block, so pruned tokens still contribute their
last value (SViT insight (i), DESIGN.md §3).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) patch tokens in row-major grid order -> (B, C, H_p, W_p).

    Raises:
        ValueError: ``N != H_p * W_p``.
    """
    b, n, c = tokens.shape
    hp, wp = grid
    if hp * wp != n:
        raise ValueError(f"tokens_to_map: grid {grid} does not match N={n}")
    return tokens.transpose(1, 2).reshape(b, c, hp, wp)


class _Proj(nn.Sequential):
    """1x1 conv -> LN -> 3x3 conv -> LN (ViTDet's per-level output convs)."""

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__(nn.Conv2d(cin, dim, 1, bias=False), LayerNorm2d(dim),
                         nn.Conv2d(dim, dim, 3, padding=1, bias=False), LayerNorm2d(dim))


class SimplePyramid(nn.Module):
    """ViTDet simple feature pyramid + top-down fusion.

    Args:
        embed_dim: ViT width C.
        dim: pyramid / decoder width D.

    Forward:
        tokens (B, N, C) full-grid patch tokens after the final norm, grid (H_p, W_p) ->
        ``(mask_features (B, D, 4H_p, 4W_p), [s32 (B,D,H_p/2,W_p/2), s16 (B,D,H_p,W_p), s8 (B,D,2H_p,2W_p)])``;
        the list is ordered coarse to fine, as Mask2Former feeds its decoder layers (round robin).
    """

    def __init__(self, embed_dim: int, dim: int = 64) -> None:
        super().__init__()
        c = embed_dim
        self.up4 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2), LayerNorm2d(c // 2), nn.GELU(),
                                 nn.ConvTranspose2d(c // 2, c // 4, 2, 2))
        self.up8 = nn.ConvTranspose2d(c, c // 2, 2, 2)
        self.proj4 = _Proj(c // 4, dim)
        self.proj8 = _Proj(c // 2, dim)
        self.proj16 = _Proj(c, dim)
        self.proj32 = _Proj(c, dim)
        self.mask_out = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = tokens_to_map(tokens, grid)
        s16 = self.proj16(x)
        s8 = self.proj8(self.up8(x))
        s4 = self.proj4(self.up4(x))
        s32 = self.proj32(F.max_pool2d(x, 2, ceil_mode=True))
        # top-down fusion into the stride-4 map (FPN style)
        s8f = s8 + F.interpolate(s16, size=s8.shape[-2:], mode="nearest")
        mask_features = self.mask_out(s4 + F.interpolate(s8f, size=s4.shape[-2:], mode="nearest"))
        return mask_features, [s32, s16, s8f]
