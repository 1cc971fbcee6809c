"""DynamicViT (Rao et al., NeurIPS 2021) as VPP's "DynVit" baseline (vpp-notes §10.2).

- prediction modules before blocks 3, 6, 9 (0-based; blocks 0-2 dense), hierarchical keep ratios
  rho, rho^2, rho^3 of all N tokens (rho = 0.7 in the paper), **cumulative** masks (no reactivation);
- predictor (DynamicViT ``PredictorLG``): LN(C) -> Linear(C, C) -> GELU gives features whose first C/2
  channels are local and last C/2 are averaged over the *kept* tokens (global); [local, global] ->
  Linear(C, C/2) -> GELU -> Linear(C/2, C/4) -> GELU -> Linear(C/4, 2) -> LogSoftmax (channel 0 = keep);
- training: hard Gumbel-softmax (tau = 1) straight-through, multiplied by the previous mask; pruned tokens
  excluded as keys (attention masking, done by the backbone); ratio loss = weight x mean over stages of
  mean over samples of (mean over N of the mask - target)^2 (DynamicViT's per-sample ratio MSE, weight 2);
- inference: a **fixed** count ``floor(N * rho^s)`` by top-k of the keep log-prob among the previously kept
  tokens (VPP's DynViT port, ``InteractionBlockWithDynVitSelection``): every sample keeps the same number,
  so batches need no padding.

Deviations: pruned tokens carry their last value in the full-grid feature map (SViT-style, as in VPP's port)
instead of being dropped; the distillation losses of DynamicViT are not part of the pruner.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from vppkit.models.pruning.base import BlockCounts, PruneContext, Pruner, linear_macs
from vppkit.models.pruning.gumbel import keep_from_logprobs, sample_gumbel, topk_mask


class DynamicViTPredictor(nn.Module):
    """DynamicViT's local-global prediction module.

    Args:
        dim: C (must be divisible by 4).

    Forward:
        x: (B, N, C) tokens; keep: (B, N) float mask of the currently kept tokens (global pooling weights).
        Returns (B, N, 2) log-probabilities, channel 0 = keep.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"DynamicViT predictor needs C divisible by 4, got {dim}")
        self.in_conv = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.out_conv = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim // 4), nn.GELU(),
                                      nn.Linear(dim // 4, 2))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.in_conv(x)
        c = h.shape[-1]
        local, glob = h[..., : c // 2], h[..., c // 2:]
        w = keep.unsqueeze(-1).to(h.dtype)
        glob = (glob * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1e-6)
        h = torch.cat([local, glob.expand(-1, h.shape[1], -1)], dim=-1)
        return torch.log_softmax(self.out_conv(h), dim=-1)

    def macs(self, tokens: int) -> float:
        """MACs of the Linear layers on ``tokens`` tokens."""
        return sum(linear_macs(tokens, m.in_features, m.out_features) for m in self.modules()
                   if isinstance(m, nn.Linear))


class DynamicViTPruner(Pruner):
    """DynamicViT predictors with hierarchical ratios rho^s and cumulative masks.

    Args:
        dim: token width C.
        rho: per-stage keep ratio (0.7); stage s keeps rho^s of all N tokens.
        blocks: 0-based blocks with a predictor (default (3, 6, 9)); the mask holds until the next one.
        ratios: explicit keep ratios per predictor (overrides ``rho``).
        tau: Gumbel temperature (training).
        ratio_loss_weight: weight of the ratio MSE (2, DynamicViT).
        inference_noise: add Gumbel noise to the top-k scores at inference (default False).

    Overhead: each predictor's Linear layers on all N tokens, per sample.
    """

    name = "dynamicvit"

    def __init__(self, dim: int, rho: float = 0.7, blocks: Sequence[int] = (3, 6, 9),
                 ratios: Sequence[float] | None = None, tau: float = 1.0, ratio_loss_weight: float = 2.0,
                 inference_noise: bool = False) -> None:
        super().__init__(inference_noise=inference_noise)
        self.blocks = [int(b) for b in blocks]
        if sorted(set(self.blocks)) != self.blocks or not self.blocks or self.blocks[0] < 1:
            raise ValueError(f"DynamicViT blocks must be increasing and >= 1, got {list(blocks)}")
        if ratios is None:
            if not 0 < rho <= 1:
                raise ValueError(f"DynamicViT rho must be in (0, 1], got {rho}")
            ratios = [rho ** (s + 1) for s in range(len(self.blocks))]
        if len(ratios) != len(self.blocks):
            raise ValueError(f"{len(ratios)} ratios for {len(self.blocks)} predictor blocks")
        self.ratios = [float(r) for r in ratios]
        self.rho = rho
        self.tau = tau
        self.ratio_loss_weight = ratio_loss_weight
        self.predictors = nn.ModuleList(DynamicViTPredictor(dim) for _ in self.blocks)

    def keep_count(self, stage: int, num_patches: int) -> int:
        """Fixed inference count of stage ``stage`` (0-based): ``floor(N * ratio)`` (DynamicViT's ``int(N * r)``)."""
        return int(math.floor(num_patches * self.ratios[stage] + 1e-9))

    def nominal_counts(self, num_patches: int, depth: int) -> BlockCounts:
        """N before the first predictor, then :meth:`keep_count` of the latest stage (exact at inference).

        E.g. N = 144, rho = 0.7: ``[144] * 3 + [100] * 3 + [70] * 3 + [49] * 3``.

        Raises:
            ValueError: a predictor block at or beyond ``depth``.
        """
        if self.blocks[-1] >= depth:
            raise ValueError(f"DynamicViT predictor before block {self.blocks[-1]} does not fit depth {depth}")
        counts = []
        for b in range(depth):
            stage = sum(1 for loc in self.blocks if b >= loc)
            counts.append(num_patches if stage == 0 else self.keep_count(stage - 1, num_patches))
        return BlockCounts.per_block(num_patches, counts)

    def before_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        if b not in self.blocks:
            return keep
        s = self.blocks.index(b)
        pred = self.predictors[s]
        logp = pred(x, keep)
        ctx.add_overhead(pred.macs(ctx.num_patches))
        if self.training:
            new = keep_from_logprobs(logp, self.tau, noise=ctx.noise) * keep
            ratio = new.mean(1)                                                  # (B,)
            ctx.losses.append(self.ratio_loss_weight / len(self.blocks) * ((ratio - self.ratios[s]) ** 2).mean())
            return new
        score = logp[..., 0] - logp[..., 1]
        if ctx.noise:
            score = score + sample_gumbel(score) - sample_gumbel(score)
        hard = topk_mask(score, self.keep_count(s, ctx.num_patches), valid=keep > 0.5)
        return hard.to(keep.dtype)

    def extra_meta(self) -> dict:
        return {"ratios": list(self.ratios), "blocks": list(self.blocks), "inference_noise": self.inference_noise}
