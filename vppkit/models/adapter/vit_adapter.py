"""ViT-Adapter around a :class:`~vppkit.models.vit.PrunableViT` (Chen et al. ICLR'23; vpp-notes §2.2, DESIGN.md §7).

::

    images ─> SpatialPriorModule ─> c1 (s4), c = [c2 s8, c3 s16, c4 s32] + level embed ── dense, never pruned ──┐
      └─> PrunableViT: for each interaction range [i_start, i_end] (default [0,2] [3,5] [6,8] [9,11]):         │
            before block i_start: x <- Injector(x, c)          (all N tokens, pruned ones included)          │
            blocks i_start..i_end under the pruner (Map-SM / SMs decide on the injected x; masked or gathered)  │
            after block i_end:    c <- Extractor(c, x) (+ 2 extra extractors after the last range)          │
    outputs: c1 + up(c2), c2, c3, c4, each + the ViT map x (after block 11) resized to it, BatchNorm ──────────┘
             -> four maps at strides 4 / 8 / 16 / 32, C channels (the Mask2Former head's input)

The hook: :meth:`ViTAdapter.forward` creates an :class:`AdapterRun` (this forward's spatial-prior tokens ``c``,
reference points, the final ViT tokens) and passes it as ``interaction=`` to ``PrunableViT.forward``, which calls
``run.before_block(b, x)`` before the pruner's ``before_block(b)`` and ``run.after_block(b, x)`` after block b,
both with the full-grid (B, N, C) patch tokens. So, as in the official code
(PatGlan/Video-Patch-Pruning ``adapter_modules.py`` ``InteractionBlockWithInitialSelection.forward``):

- only the 12 ViT blocks are pruned; the injector and extractors see every token, pruned ones with the value they
  carried through, in masked and in gathered execution alike (the injector also refreshes pruned tokens);
- Map-SM (before block 1) decides on block 0's output, which comes after injector 0 (the injector runs before
  block 0); the SM at block 3 decides right after injector 1, the SMs at 6 / 9 after injectors 2 / 3;
- nothing is stored on a module between forwards: the pruner's temporal state goes in and out of
  ``PrunableViT.forward``, ``c`` lives in the per-forward :class:`AdapterRun`.

The official backbone has no CLS token and no final norm; here a CLS/register token, if the ViT has one, passes
through the blocks untouched by the adapter, and the ViT feature added to the outputs is taken before the final norm
(as the official ``x`` after the last block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vppkit.models.adapter.deform_attn import MSDeformAttn, init_deform_attn_, reference_points
from vppkit.models.adapter.interaction import Extractor, Injector
from vppkit.models.adapter.spatial_prior import SpatialPriorModule

#: ViT-Adapter's interaction ranges for a depth-12 ViT (vpp-notes §2.2).
INTERACTION_INDEXES = ((0, 2), (3, 5), (6, 8), (9, 11))


@dataclass
class AdapterOutput:
    """Output of :meth:`ViTAdapter.forward`.

    Attributes:
        features: four (B, C, h, w) maps at strides 4, 8, 16, 32 (finest first), C = ViT width.
        backbone: the :class:`~vppkit.models.vit.BackboneOutput` (keep record, next temporal state, sparsity loss).
    """

    features: list
    backbone: Any


class InteractionBlock(nn.Module):
    """One interaction: an injector (before its first block), an extractor (after its last block) and, for the last
    interaction only, extra extractors. Names as the official ``interactions.<i>.{injector, extractor,
    extra_extractors.<j>}`` keys."""

    def __init__(self, injector: Injector, extractor: Extractor, extra: Sequence[Extractor] = ()) -> None:
        super().__init__()
        self.injector = injector
        self.extractor = extractor
        self.extra_extractors = nn.ModuleList(extra) if extra else None


class AdapterRun:
    """One forward's adapter state; the ``interaction`` hook that ``PrunableViT.forward`` calls around its blocks.

    Args:
        adapter: the :class:`ViTAdapter` (its modules; nothing is written to it).
        c: (B, S, C) spatial-prior tokens of the levels ``c_shapes`` (strides 8/16/32, level embedding added).
        c_shapes: the three (h, w).
        grid: (H_p, W_p) ViT patch grid.

    Attributes:
        c: the spatial-prior tokens, updated by each extractor.
        x_out: (B, N, C) ViT patch tokens after the last interaction's last block (before the final norm).
    """

    def __init__(self, adapter: "ViTAdapter", c: torch.Tensor, c_shapes: list[tuple[int, int]],
                 grid: tuple[int, int]) -> None:
        self.adapter, self.c, self.c_shapes, self.grid = adapter, c, c_shapes, tuple(grid)
        self.x_out: torch.Tensor | None = None
        self._start = {int(s): i for i, (s, _) in enumerate(adapter.interaction_indexes)}
        self._end = {int(e): i for i, (_, e) in enumerate(adapter.interaction_indexes)}
        self.x_ref = reference_points([self.grid], c.device, c.dtype)
        self.c_ref = reference_points(c_shapes, c.device, c.dtype)

    def before_block(self, b: int, x: torch.Tensor) -> torch.Tensor:
        """Tokens entering block ``b`` (B, N, C) -> the tokens block b (and the pruner) see: injected at a range start."""
        i = self._start.get(b)
        if i is None:
            return x
        if x.shape[1] != self.grid[0] * self.grid[1]:
            raise ValueError(f"ViTAdapter: {x.shape[1]} patch tokens for a {self.grid} grid")
        return self.adapter.interactions[i].injector(x, self.x_ref, self.c, self.c_shapes)

    def after_block(self, b: int, x: torch.Tensor) -> None:
        """Output of block ``b`` (B, N, C); at a range end the extractor(s) update ``c``."""
        i = self._end.get(b)
        if i is None:
            return
        blk = self.adapter.interactions[i]
        self.c = blk.extractor(self.c, self.c_ref, self.c_shapes, x, self.grid)
        for ex in blk.extra_extractors or ():
            self.c = ex(self.c, self.c_ref, self.c_shapes, x, self.grid)
        if i == len(self.adapter.interactions) - 1:
            self.x_out = x


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    size = tuple(int(s) for s in size)
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ViTAdapter(nn.Module):
    """The ViT-Adapter modules around a PrunableViT (which stays ``VISModel.backbone``; passed to :meth:`forward`).

    Args:
        embed_dim: ViT width C.
        conv_inplane: spatial-prior stem width (64).
        deform_heads: deformable attention heads (6). deform_points: sampling points (4).
        cffn_ratio: extractor ConvFFN width ratio (0.25).
        interaction_indexes: (start, end) block ranges, inclusive (``INTERACTION_INDEXES``); the last must end at the
            backbone's last block.
        extra_extractors: extractors appended to the last interaction (2).
        add_vit_feature: add the resized ViT map to each output scale (True).
        init_values: injector γ initial value (0).
        drop_path: ConvFFN drop-path rate (official: the ViT's drop-path rate).
        query_residual, attn_dropout: official mmcv deformable-attention behaviour (see
            :mod:`vppkit.models.adapter.interaction`); ``False, 0.0`` = czczup/ViT-Adapter.

    Initialisation as the official ``_init_weights`` / ``_init_deform_weights``: Linear trunc-normal(0.02), convs
    normal(0, sqrt(2 / fan_out)), norms 1 / 0, deformable attention as MSDeformAttn, level embedding normal(0, 1).
    """

    def __init__(self, embed_dim: int, conv_inplane: int = 64, deform_heads: int = 6, deform_points: int = 4,
                 cffn_ratio: float = 0.25, interaction_indexes: Sequence[Sequence[int]] = INTERACTION_INDEXES,
                 extra_extractors: int = 2, add_vit_feature: bool = True, init_values: float = 0.0,
                 drop_path: float = 0.0, query_residual: bool = True, attn_dropout: float = 0.1) -> None:
        super().__init__()
        idx = [tuple(int(v) for v in r) for r in interaction_indexes]
        if not idx or any(len(r) != 2 or r[0] > r[1] for r in idx) or any(a[1] >= b[0] for a, b in zip(idx, idx[1:])):
            raise ValueError(f"interaction_indexes must be increasing, disjoint (start, end) ranges, got {idx}")
        self.interaction_indexes = idx
        self.embed_dim = embed_dim
        self.add_vit_feature = bool(add_vit_feature)
        c = embed_dim
        self.level_embed = nn.Parameter(torch.zeros(3, c))
        self.spm = SpatialPriorModule(conv_inplane, c)
        kw = dict(heads=deform_heads, points=deform_points, query_residual=query_residual, attn_dropout=attn_dropout)
        ex_kw = dict(kw, cffn_ratio=cffn_ratio, drop_path=drop_path)
        self.interactions = nn.ModuleList(
            InteractionBlock(Injector(c, levels=3, init_values=init_values, **kw), Extractor(c, **ex_kw),
                             [Extractor(c, **ex_kw) for _ in range(extra_extractors)] if i == len(idx) - 1 else ())
            for i in range(len(idx)))
        self.up = nn.ConvTranspose2d(c, c, 2, 2)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.BatchNorm2d(c) for _ in range(4))
        for m in (self.spm, self.interactions, self.up):
            m.apply(_init_weights)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                init_deform_attn_(m)
        nn.init.normal_(self.level_embed)

    def forward(self, backbone: nn.Module, images: torch.Tensor, state: Any = None, *, execution: str | None = None,
                return_intermediates: bool = False) -> AdapterOutput:
        """Run the adapter and the pruned ViT together.

        Args:
            backbone: the ``PrunableViT`` (its ``forward`` must accept ``interaction=``).
            images: (B, 3, H, W) normalised images.
            state, execution, return_intermediates: passed to ``backbone.forward``.

        Returns:
            :class:`AdapterOutput` (four maps, finest first, and the BackboneOutput).

        Raises:
            ValueError: the interaction ranges do not end at the backbone's last block; errors of the backbone.
        """
        depth = backbone.depth
        if self.interaction_indexes[-1][1] != depth - 1:
            raise ValueError(f"ViTAdapter: interaction ranges {self.interaction_indexes} must end at block {depth - 1}")
        grid = backbone.grid_for(images.shape[-2], images.shape[-1])
        c1, c2, c3, c4 = self.spm(images)
        maps = [c2, c3, c4]
        shapes = [tuple(int(s) for s in m.shape[-2:]) for m in maps]
        c = torch.cat([m.flatten(2).transpose(1, 2) + self.level_embed[i] for i, m in enumerate(maps)], dim=1)
        run = AdapterRun(self, c, shapes, grid)
        bb = backbone(images, state, execution=execution, return_intermediates=return_intermediates, interaction=run)
        b = images.shape[0]
        parts = run.c.split([h * w for h, w in shapes], dim=1)
        c2, c3, c4 = (p.transpose(1, 2).reshape(b, self.embed_dim, h, w) for p, (h, w) in zip(parts, shapes))
        c1 = c1 + _resize(self.up(c2), c1.shape[-2:])
        outs = [c1, c2, c3, c4]
        if self.add_vit_feature:
            x = run.x_out.transpose(1, 2).reshape(b, self.embed_dim, *grid)
            outs = [o + _resize(x, o.shape[-2:]) for o in outs]
        feats = [norm(o) for norm, o in zip((self.norm1, self.norm2, self.norm3, self.norm4), outs)]
        return AdapterOutput(features=feats, backbone=bb)


def _init_weights(m: nn.Module) -> None:
    """The official adapter's ``_init_weights`` (ViT-Adapter)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
