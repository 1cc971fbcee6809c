"""SViT (Liu et al., WACV 2024, "Revisiting Token Pruning for Object Detection and Instance Segmentation").

vpp-notes §10.1, following the official SViT code (``selective_vit.py``, config ``svit-adapter-t-0.5x``):
- blocks 0-2 dense (``n_skip = 3``); an **independent** MLP gate before each of blocks 3..11;
- gate: LayerNorm(C) -> Linear(C, C/4) -> GELU -> Linear(C/4, 2) -> LogSoftmax, channel 0 = keep;
- training: hard Gumbel-softmax, tau = 1, straight-through; inference: argmax (keep if logp_0 > logp_1),
  or noisy Gumbel with ``inference_noise=True``;
- **reactivation**: each gate sees only the current tokens, the mask is not multiplied by the previous one,
  so a token dropped at block b can be kept again at b + 1 (``inherit_mask=False``, SViT insight ii);
- the kept count is dynamic per image (insight iii);
- ratio loss = ``ratio_loss_weight`` (4) x mean over gates of (mean(s) - target)^2, mean(s) over batch and N.
Keep targets default to [0.7]*3 + [0.49]*3 + [0.343]*3 (rho = 0.7 per stage of three blocks), nominal PKR
63.3 %; :func:`svit_targets_for_pkr` solves rho for another nominal PKR.
"""

from __future__ import annotations

from typing import Sequence

import torch
from scipy.optimize import brentq
from torch import nn

from vppkit.models.pruning.base import BlockCounts, PruneContext, Pruner, linear_macs
from vppkit.models.pruning.gumbel import keep_from_logprobs

SVIT_DEFAULT_TARGETS = (0.7, 0.7, 0.7, 0.49, 0.49, 0.49, 0.343, 0.343, 0.343)


def svit_nominal_pkr(targets: Sequence[float], depth: int = 12) -> float:
    """Nominal PKR (12-block mean of kept fractions, dense blocks = 1) when every gate meets its target."""
    dense = depth - len(targets)
    return (dense + sum(targets)) / depth


def svit_stage_targets(rho: float, dense_blocks: int = 3, depth: int = 12, stage_len: int = 3) -> list[float]:
    """Keep targets rho^s for the gated blocks ``dense_blocks .. depth-1``, stage s = 1, 2, ... of ``stage_len``
    blocks (vpp-notes §10.1; rho = 0.7 gives :data:`SVIT_DEFAULT_TARGETS`).

    Raises:
        ValueError: the gated blocks do not split into stages of ``stage_len``, or rho outside (0, 1].
    """
    n_gated = depth - dense_blocks
    if n_gated % stage_len:
        raise ValueError(f"{n_gated} gated blocks do not split into stages of {stage_len}")
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"SViT rho must lie in (0, 1], got {rho}")
    return [rho ** s for s in range(1, n_gated // stage_len + 1) for _ in range(stage_len)]


def svit_targets_for_pkr(pkr: float, dense_blocks: int = 3, depth: int = 12, stage_len: int = 3
                         ) -> tuple[list[float], float]:
    """Keep targets rho^s (stage s = 1, 2, ... of ``stage_len`` blocks) whose nominal PKR equals ``pkr``.

    Solves (dense + stage_len * sum_s rho^s) / depth = pkr for rho in (0, 1] (vpp-notes §10.1: rho ~ 0.60
    for 55 %, ~ 0.39 for 40 %).

    Returns:
        (targets for blocks dense_blocks..depth-1, rho).

    Raises:
        ValueError: when ``pkr`` is not reachable (below dense_blocks / depth or above 1).
    """
    n_gated = depth - dense_blocks
    if n_gated % stage_len:
        raise ValueError(f"{n_gated} gated blocks do not split into stages of {stage_len}")
    stages = n_gated // stage_len
    lo, hi = dense_blocks / depth, 1.0
    if not lo < pkr <= hi:
        raise ValueError(f"SViT nominal PKR must be in ({lo:.3f}, 1], got {pkr}")

    def f(rho: float) -> float:
        return (dense_blocks + stage_len * sum(rho ** s for s in range(1, stages + 1))) / depth - pkr

    rho = 1.0 if pkr == 1.0 else brentq(f, 1e-9, 1.0, xtol=1e-12)
    return svit_stage_targets(rho, dense_blocks, depth, stage_len), float(rho)


class TokenGate(nn.Module):
    """SViT / VPP-SM gate: LN(C) -> Linear(C, hidden) -> GELU -> Linear(hidden, 2) -> LogSoftmax.

    Args:
        dim: C.
        hidden: hidden width (C/4 for SViT and VPP's SM).

    Input (B, N, C) tokens, output (B, N, 2) log-probabilities, channel 0 = keep.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc2(self.act(self.fc1(self.norm(x)))), dim=-1)

    def macs(self, tokens: int) -> float:
        """MACs of the two Linear layers on ``tokens`` tokens."""
        return linear_macs(tokens, self.fc1.in_features, self.fc1.out_features) + \
            linear_macs(tokens, self.fc2.in_features, self.fc2.out_features)


class SViTPruner(Pruner):
    """SViT gates at blocks ``dense_blocks .. depth-1`` with reactivation and a dynamic per-image rate.

    Args:
        dim: token width C.
        targets: keep target per gated block (fraction of all N); default ``SVIT_DEFAULT_TARGETS``.
        depth: number of blocks (12).
        tau: Gumbel temperature in training (1, SViT).
        ratio_loss_weight: weight of the ratio loss (4, SViT config).
        inference_noise: keep Gumbel noise at inference (default False = argmax, as SViT).

    Overhead: each gate's two Linear layers on all N tokens (the gate sees every token), per sample.

    Raises:
        ValueError: when the number of targets does not fit ``depth`` (needs at least one dense block 0).
    """

    name = "svit"

    def __init__(self, dim: int, targets: Sequence[float] = SVIT_DEFAULT_TARGETS, depth: int = 12,
                 tau: float = 1.0, ratio_loss_weight: float = 4.0, inference_noise: bool = False) -> None:
        super().__init__(inference_noise=inference_noise)
        targets = [float(t) for t in targets]
        if not 0 < len(targets) < depth:
            raise ValueError(f"SViT needs 1..{depth - 1} keep targets, got {len(targets)}")
        if any(not 0.0 <= t <= 1.0 for t in targets):
            raise ValueError(f"SViT keep targets must be in [0, 1], got {targets}")
        self.targets = targets
        self.depth = depth
        self.first_gated = depth - len(targets)
        self.tau = tau
        self.ratio_loss_weight = ratio_loss_weight
        self.gates = nn.ModuleList(TokenGate(dim, dim // 4) for _ in targets)

    def gated_blocks(self) -> list[int]:
        """0-based blocks with a gate (3..11 by default)."""
        return list(range(self.first_gated, self.depth))

    def nominal_counts(self, num_patches: int, depth: int) -> BlockCounts:
        """N at the dense blocks, the expected count ``N * target`` at each gated block (the real count is
        dynamic per image), e.g. N = 144 with the default targets: ``[144] * 3 + [100.8] * 3 + [70.56] * 3 +
        [49.392] * 3``.

        Raises:
            ValueError: ``depth`` differs from the pruner's.
        """
        if depth != self.depth:
            raise ValueError(f"SViTPruner built for {self.depth} blocks, the backbone has {depth}")
        return BlockCounts.per_block(num_patches, [num_patches] * self.first_gated
                                     + [num_patches * t for t in self.targets])

    def before_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        if b < self.first_gated:
            return keep
        i = b - self.first_gated
        gate = self.gates[i]
        s = keep_from_logprobs(gate(x), self.tau, noise=ctx.noise)          # no "* keep": reactivation
        ctx.losses.append(self.ratio_loss_weight / len(self.gates) * (s.mean() - self.targets[i]) ** 2)
        ctx.add_overhead(gate.macs(ctx.num_patches))
        return s

    def extra_meta(self) -> dict:
        return {"targets": list(self.targets), "gated_blocks": self.gated_blocks(),
                "inference_noise": self.inference_noise}
