"""EViT (Liang et al., ICLR 2022, "Not All Patches are What You Need"): attentive-token top-k + fusion.

Pure function :func:`evit_topk_fuse` is the original operation: keep the k patch tokens with the highest
CLS attention and fuse the inattentive ones into **one extra token** (their attention-weighted mean).
For backbones without a CLS token the score is the mean attention each token receives (evtp-notes, VisPruner's
SigLIP path).

Integration into :class:`~vppkit.models.vit.PrunableViT` (:class:`EViTPruner`), documented approximations:
- EViT prunes *inside* block b (attention on all tokens, MLP on the kept ones). Here the decision for block b
  uses the attention of block b-1 (the backbone computes it because ``needs_attention = {b - 1}``) and the
  whole block b runs on the kept tokens; masked and gathered execution agree exactly.
- The fused token is **omitted** in the backbone: inattentive tokens are not fused but carry their last value
  in the full-grid feature map (as in SViT / VPP), which dense heads need. Use :func:`evit_topk_fuse` directly
  for the original token-sequence form.
- Masks are cumulative; stage s keeps ``ceil(keep_rate * K_{s-1})`` of the previously kept tokens (EViT's
  rounding), the same count for every sample. No learned parameters, no sparsity loss.
"""

from __future__ import annotations

from typing import Mapping

import torch

from vppkit.models.pruning.base import BlockAttention, PruneContext, Pruner
from vppkit.models.pruning.gumbel import topk_mask


def evit_topk_fuse(x: torch.Tensor, scores: torch.Tensor, k: int, fuse: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Keep the top-k attentive patch tokens and fuse the rest into one token (EViT).

    Args:
        x: (B, N, C) patch tokens (no prefix).
        scores: (B, N) attentiveness (CLS attention, or attention received without a CLS token).
        k: tokens to keep, 0 <= k <= N.
        fuse: also return the fused token.

    Returns:
        (kept (B, k, C) in descending score order, fused (B, 1, C) = sum_i a_i x_i / sum_i a_i over the
        N - k inattentive tokens (``None`` when ``fuse`` is False or k == N), kept indices (B, k)).

    Raises:
        ValueError: on shape mismatch or k out of range.
    """
    if x.dim() != 3 or scores.shape != x.shape[:2]:
        raise ValueError(f"evit_topk_fuse: x {tuple(x.shape)} and scores {tuple(scores.shape)} do not match")
    n = x.shape[1]
    if not 0 <= k <= n:
        raise ValueError(f"evit_topk_fuse: k={k} out of range for N={n}")
    order = scores.argsort(dim=1, descending=True)
    keep_idx, drop_idx = order[:, :k], order[:, k:]
    c = x.shape[-1]
    kept = x.gather(1, keep_idx.unsqueeze(-1).expand(-1, -1, c))
    fused = None
    if fuse and k < n:
        dropped = x.gather(1, drop_idx.unsqueeze(-1).expand(-1, -1, c))
        w = scores.gather(1, drop_idx).unsqueeze(-1)
        fused = (dropped * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1e-12)
    return kept, fused, keep_idx


class EViTPruner(Pruner):
    """EViT-style attentive top-k at given blocks, cumulative (see module docstring for approximations).

    Args:
        keep_rates: {0-based block: keep rate of the previously kept tokens}; default {3: .7, 6: .7, 9: .7}.

    Raises:
        ValueError: a block < 1 (needs the attention of the block before) or a rate outside (0, 1].
    """

    name = "evit"

    def __init__(self, keep_rates: Mapping[int, float] | None = None) -> None:
        super().__init__(inference_noise=False)
        rates = dict(keep_rates) if keep_rates is not None else {3: 0.7, 6: 0.7, 9: 0.7}
        for b, r in rates.items():
            if int(b) < 1 or not 0 < float(r) <= 1:
                raise ValueError(f"EViT keep rate {r} at block {b}: blocks must be >= 1 and rates in (0, 1]")
        self.keep_rates = {int(b): float(r) for b, r in sorted(rates.items())}
        self.needs_attention = frozenset(b - 1 for b in self.keep_rates)

    def after_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext,
                    attn: BlockAttention | None = None) -> None:
        if b + 1 in self.keep_rates:
            if attn is None:
                raise RuntimeError(f"EViT needs the attention of block {b}; the backbone did not provide it")
            ctx.data["score"] = attn.score()

    def before_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        if b not in self.keep_rates:
            return keep
        prev = keep > 0.5
        k = torch.ceil(prev.sum(1).double() * self.keep_rates[b] - 1e-9).long()
        score = ctx.data.pop("score")
        return topk_mask(score, k, valid=prev).to(keep.dtype)

    def extra_meta(self) -> dict:
        return {"keep_rates": dict(self.keep_rates), "fused_token": False}
