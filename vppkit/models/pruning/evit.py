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

Token counts (:func:`evit_counts`, one rule for both forms): the official EViT (``evit.py``, ``--fuse_token``,
the setting of its published DeiT-S numbers) keeps ``left = ceil(keep_rate * (N_total - 1))`` of the non-CLS
tokens *inside* block b (attention on all, MLP on the kept) and appends the fused token, which takes part in
the next stage's selection: K_s = ceil(rate * K_{s-1}) + 1. vppkit's :class:`EViTPruner` has no fused token
and prunes before the block: K_s = ceil(rate * K_{s-1}) for the whole block. :meth:`EViTPruner.nominal_counts`
gives the latter (what the backbone runs and the benchmark times); the FLOPs counter's ``evit`` method
(``vppkit.flops.analytic.method_schedule``) reports the former, to compare with EViT's published GFLOPs.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from vppkit.models.pruning.base import BlockCounts, PruneContext, Pruner
from vppkit.models.pruning.gumbel import topk_mask
from vppkit.models.records import BlockAttention

EVIT_BLOCKS = (3, 6, 9)
"""0-based blocks where EViT prunes (DeiT-S/B: 4th, 7th and 10th layer)."""
EVIT_KEEP_RATE = 0.7
"""EViT's default keep rate (DeiT-S, 79.5 % top-1 at ~3.0 GFLOPs)."""


def evit_counts(num_patches: int, depth: int, keep_rates: Mapping[int, float], *, fused_token: bool = False,
                inside_block: bool = False) -> BlockCounts:
    """EViT's token counts per block: stage b keeps ``ceil(rate_b * K)`` of the K non-CLS tokens entering it.

    Args:
        num_patches: N.
        depth: number of blocks.
        keep_rates: {0-based block: keep rate in (0, 1]}.
        fused_token: append the fused inattentive token after each stage that drops a token (official EViT
            with ``--fuse_token``); it counts as a non-CLS token of the next stage.
        inside_block: prune between attention and MLP of block b (official EViT: ``attn[b]`` = tokens before,
            ``mlp[b]`` = after); False: the whole block runs on the kept tokens (:class:`EViTPruner`).

    Returns:
        :class:`BlockCounts`; e.g. N = 196, rate 0.7 at (3, 6, 9), official: attn ``196 x 4, 139 x 3, 99 x 3,
        71 x 2``, mlp from block 3 ``139, 99, 71`` (138 + 1, 98 + 1, 70 + 1).

    Raises:
        ValueError: a block outside [1, depth) or a rate outside (0, 1].

    Source: official ``evit.py`` (``left_tokens = math.ceil(keep_rate * (N - 1))``; no pruning, hence no fused
    token, when that keeps every token); the 1e-9 guard against float round-off is vppkit's (as the pruner).
    """
    rates = {int(b): float(r) for b, r in keep_rates.items()}
    for b, r in rates.items():
        if not 1 <= b < depth or not 0 < r <= 1:
            raise ValueError(f"EViT keep rate {r} at block {b}: blocks must lie in [1, {depth}), rates in (0, 1]")
    attn, mlp, k = [], [], num_patches
    for b in range(depth):
        before = k
        if b in rates:
            left = int(math.ceil(k * rates[b] - 1e-9))
            if left < k:
                k = left + (1 if fused_token else 0)
        attn.append(before if inside_block else k)
        mlp.append(k)
    return BlockCounts(num_patches, tuple(attn), tuple(mlp))


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
        keep_rates: {0-based block: keep rate of the previously kept tokens}; default :data:`EVIT_KEEP_RATE` at
            each of :data:`EVIT_BLOCKS` ({3: .7, 6: .7, 9: .7}).

    Raises:
        ValueError: a block < 1 (needs the attention of the block before) or a rate outside (0, 1].
    """

    name = "evit"

    def __init__(self, keep_rates: Mapping[int, float] | None = None) -> None:
        super().__init__(inference_noise=False)
        rates = dict(keep_rates) if keep_rates is not None else {b: EVIT_KEEP_RATE for b in EVIT_BLOCKS}
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

    def nominal_counts(self, num_patches: int, depth: int) -> BlockCounts:
        """Kept tokens per block as this pruner runs them (no fused token, whole block on the kept tokens):
        :func:`evit_counts` with its defaults; exact. E.g. N = 144, rate 0.7: ``[144] * 3 + [101] * 3 +
        [71] * 3 + [50] * 3``.

        Raises:
            ValueError: a pruning block at or beyond ``depth``.
        """
        return evit_counts(num_patches, depth, self.keep_rates)
