"""VPP (Video Patch Pruning): temporal state, sparsity loss and the :class:`VPPPruner`.

The learned gates (Map-SM, SM) are in :mod:`vppkit.models.pruning.vpp_modules`, the keep schedules and PKR
arithmetic in :mod:`vppkit.models.pruning.schedules`; this file holds what ties them to a video:

- :class:`TemporalState`: what frame t's Map-SM needs from frame t-1 (passed in and returned);
- :func:`vpp_sparsity_loss`: the per-frame sparsity loss (Table 6 weights, kappa_init of Table 7);
- :class:`VPPPruner`: the :class:`~vppkit.models.pruning.base.Pruner` that places Map-SM and the SMs.

Sources: vpp-notes §3-5 (schedule, Map-SM, SM), §7.3 (3-frame chains, not detached), §7.4 and
supplementary Table 6 / Table 7 (sparsity loss, kappa_init), §7.5 (online inference), §12 (fixed quirks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch
from torch import nn

from vppkit.models.records import BlockAttention

from .base import BlockCounts, PruneContext, Pruner
from .schedules import VPPSchedule
from .vpp_modules import SM, TAU, MapSM, map_sm_macs, sm_macs

__all__ = ["TemporalState", "vpp_sparsity_loss", "VPPPruner", "init_map_sm_", "LAMBDA_SM", "LAMBDA_MAP", "KAPPA_INIT"]

LAMBDA_SM = 40.0  # scale L_sp^SM (supplementary Table 6; official ``ratio_sm_sparsity_loss``)
LAMBDA_MAP = 10.0  # scale L_sp^Map (Table 6; official ``ratio_match_module_sparsity_loss``)
KAPPA_INIT = 0.5  # target mean Map-SM probability (Table 6; ablated in Table 7: 0.3 / 0.5 / 0.7)


@dataclass(frozen=True)
class TemporalState:
    """What frame t's Map-SM needs from frame t-1 of the same video (one entry per batch sample).

    Passed in and returned by the backbone, never stored on a module; ``None`` in place of a state
    means "first frame of every video in the batch" (no Map-SM, blocks 1-2 dense).

    Attributes:
        key: (B, N, C) previous frame's block-0 output x_1^{t-1}, **cloned before blocks 1-2** (the
            official inference path overwrote it in place with blocks 1-2's output, vpp-notes §12.1; fixed).
        value: (B, N, C) previous frame's block-5 output x_6^{t-1} (the mapped deep feature).
        mask: (B, N) bool keep mask in force at block 5 of the previous frame (M_3 in code, "M_6" in the
            paper's figure: the mask valid when x_6 was computed, §12.2).
        grid: (H, W) patch grid of the previous frame; must equal the current frame's grid.
        valid: (B,) bool; False for a sample that starts a new video (no previous frame): that sample
            runs blocks 1-2 dense. Lets one batch mix videos at different positions (batched online
            inference of several videos; the official code allows batch 1 only, §12).

    In training the tensors keep their autograd graph, so gradients flow across a chain of frames
    (§7.3); call :meth:`detach` between frames at inference.
    """

    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor
    grid: tuple[int, int]
    valid: torch.Tensor

    def __post_init__(self) -> None:
        if self.key.dim() != 3 or self.value.shape != self.key.shape:
            raise ValueError(f"TemporalState: key and value must be (B, N, C) of equal shape, got "
                             f"{tuple(self.key.shape)} and {tuple(self.value.shape)}")
        b, n, _ = self.key.shape
        if self.mask.dtype != torch.bool or tuple(self.mask.shape) != (b, n):
            raise ValueError(f"TemporalState: mask must be (B, N)=({b}, {n}) bool, got "
                             f"{tuple(self.mask.shape)} {self.mask.dtype}")
        if self.valid.dtype != torch.bool or tuple(self.valid.shape) != (b,):
            raise ValueError(f"TemporalState: valid must be (B,)=({b},) bool, got "
                             f"{tuple(self.valid.shape)} {self.valid.dtype}")
        if int(self.grid[0]) * int(self.grid[1]) != n:
            raise ValueError(f"TemporalState: grid {tuple(self.grid)} does not match N={n}")

    @classmethod
    def create(cls, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, grid: Sequence[int],
               valid: torch.Tensor | None = None) -> "TemporalState":
        """Build a state; ``valid`` defaults to all True. ``mask`` may be float (0/1) or bool."""
        if valid is None:
            valid = torch.ones(key.shape[0], dtype=torch.bool, device=key.device)
        return cls(key=key, value=value, mask=mask.bool() if mask.dtype != torch.bool else mask,
                   grid=(int(grid[0]), int(grid[1])), valid=valid.to(key.device, torch.bool))

    @property
    def batch(self) -> int:
        return self.key.shape[0]

    @property
    def num_patches(self) -> int:
        return self.key.shape[1]

    def detach(self) -> "TemporalState":
        """Same state cut from the autograd graph (online inference; the end of a training chain)."""
        return replace(self, key=self.key.detach(), value=self.value.detach())

    def reset(self, new_video: torch.Tensor) -> "TemporalState":
        """New state in which samples flagged in ``new_video`` (B,) bool start a new video (valid = False)."""
        new_video = torch.as_tensor(new_video, dtype=torch.bool, device=self.valid.device)
        if tuple(new_video.shape) != (self.batch,):
            raise ValueError(f"TemporalState.reset: new_video must be (B,)=({self.batch},), got "
                             f"{tuple(new_video.shape)}")
        return replace(self, valid=self.valid & ~new_video)

    def check(self, tokens: torch.Tensor, grid: Sequence[int]) -> None:
        """Raise ValueError unless the state fits the current frame's tokens (B, N, C) and grid."""
        if tuple(tokens.shape) != tuple(self.key.shape):
            raise ValueError(f"TemporalState of shape (B, N, C)={tuple(self.key.shape)} does not fit the current "
                             f"frame's tokens {tuple(tokens.shape)}: frames of one video must share batch layout "
                             f"and size (reset the state, i.e. pass None, at a new video)")
        if (int(grid[0]), int(grid[1])) != tuple(self.grid):
            raise ValueError(f"TemporalState grid {tuple(self.grid)} differs from the current grid "
                             f"{tuple(int(g) for g in grid)}")


def vpp_sparsity_loss(sm_masks: Sequence[torch.Tensor], sm_targets: Sequence[float],
                      map_probs: torch.Tensor | None = None, *, kappa_init: float = KAPPA_INIT,
                      lambda_sm: float = LAMBDA_SM, lambda_map: float = LAMBDA_MAP) -> torch.Tensor:
    """VPP sparsity loss of one frame (vpp-notes §7.4, supplementary Table 6, Eq. 6 of the paper).

    With Map-SM (frame with a previous frame):
    ``L = lambda_SM * [lambda_map * (mean(p) - kappa_init)**2 + sum_b (mean(M_b) - k_b)**2] / (lambda_map + 3)``;
    without (first frame): ``L = lambda_SM * sum_b (mean(M_b) - k_b)**2 / 3``.
    Means run over the batch and all N tokens; M_b is the hard (straight-through) mask of SM b as a
    fraction of **all** tokens; p are Map-SM's soft probabilities (the kappa term keeps them in a
    non-saturated range; the hard Map-SM keep count is fixed by top-k, Table 7 discussion).
    The denominator is ``lambda_map + len(sm_masks)`` (3 for VPP's three SMs).

    Args:
        sm_masks: one (B, N) float straight-through mask per SM (blocks 3, 6, 9).
        sm_targets: keep targets k_b, same length.
        map_probs: (B', N) Map-SM soft keep probabilities of the samples that ran Map-SM, or None.
            In a mixed batch (some samples start a new video) pass only the valid samples' rows.
        kappa_init: target mean of p (0.5; Table 7 ablates 0.3 / 0.7).
        lambda_sm: overall scale (40). lambda_map: weight of the Map-SM term (10).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: if ``sm_masks`` and ``sm_targets`` differ in length or are empty.
    """
    if len(sm_masks) != len(sm_targets) or not sm_masks:
        raise ValueError(f"vpp_sparsity_loss needs one target per SM mask, got {len(sm_masks)} masks and "
                         f"{len(sm_targets)} targets")
    means = torch.stack(list(sm_masks)).float().mean(dim=(1, 2))                     # (S,) one op per step
    targets = torch.tensor([float(k) for k in sm_targets], dtype=means.dtype, device=means.device)
    sm_term = ((means - targets) ** 2).sum()
    if map_probs is None or map_probs.numel() == 0:
        return lambda_sm * sm_term / len(sm_masks)
    map_term = lambda_map * (map_probs.float().mean() - kappa_init) ** 2
    return lambda_sm * (map_term + sm_term) / (lambda_map + len(sm_masks))


# ---------------------------------------------------------------------------------------------------------
# VPPPruner: Map-SM + SMs plugged into the Pruner protocol (vppkit.models.pruning.base)
# ---------------------------------------------------------------------------------------------------------
class VPPPruner(Pruner):
    """Video Patch Pruning: Map-SM before block 1, SMs before blocks 3/6/9, nested masks.

    Per frame (vpp-notes §3, §14; hooks of :class:`~vppkit.models.pruning.base.Pruner`):

    - ``after_block(0)``: the block-0 output is **cloned** as next frame's Map-SM key (fixes the official
      in-place scatter that turned the inference key into the block-2 output, §12.1);
    - ``before_block(1)``: Map-SM maps ``state.value`` (frame t-1, block 5) onto the current grid and keeps
      exactly ``floor(N m)`` tokens for blocks 1-2. Samples without a previous frame (``state is None`` or
      ``state.valid[i]`` False) run blocks 1-2 dense; Map-SM runs only on the valid samples;
    - ``before_block(3/6/9)``: ``M_b = SM_b(x_b) * M_prev`` (no reactivation, dynamic count);
    - ``after_block(5)``: the block-5 output (cloned) and the mask in force at block 5 become next frame's
      value and key mask;
    - ``finish``: returns the next :class:`TemporalState` (not detached: 3-frame training chains keep their
      graph, §7.3; call ``state.detach()`` between frames at inference), the sparsity loss
      (:func:`vpp_sparsity_loss`, §7.4) and the overhead MACs per sample (Map-SM association + selector for
      samples that ran it, the SM MLPs on the tokens they run on: all N with a graph, the
      tokens kept before each SM at inference).

    Args:
        dim: token width C (the gates' LayerNorm / MLP sizes: Map-SM hidden C/2, SM hidden C/4; §12.3 fix).
        schedule: a :class:`VPPSchedule` or preset name (``"pkr55"``, ``"pkr40"``); ``m`` and ``rho`` override it.
        m: Map-SM keep fraction (overrides the schedule's).
        rho: SM decay (overrides the schedule's).
        inference_noise: keep Gumbel noise at inference (default True: official code and supplementary §B);
            False = deterministic argmax / noise-free top-k. Training is always noisy.
        kappa_init: target of the mean Map-SM probability (0.5; Table 7 ablation).
        lambda_sm: sparsity loss scale (40). lambda_map: Map-SM term weight (10).
        value_block: block whose output is mapped ("ref-layer 6" = block 5, Table 6).
        tau: Gumbel temperature (10). pool_radius: Map-SM smoothing radius (4 -> 9x9).

    Raises:
        ValueError: ``value_block`` outside [map_block, depth); in ``begin``: a state that is not a
            :class:`TemporalState` or does not fit the frame (batch, N, C, grid), or a width other than ``dim``.
    """

    name = "vpp"

    def __init__(self, dim: int, schedule: VPPSchedule | str = "pkr55", *, m: float | None = None,
                 rho: float | None = None, inference_noise: bool = True, kappa_init: float = KAPPA_INIT,
                 lambda_sm: float = LAMBDA_SM, lambda_map: float = LAMBDA_MAP, value_block: int = 5,
                 tau: float = TAU, pool_radius: int = 4) -> None:
        super().__init__(inference_noise=inference_noise)
        sched = VPPSchedule.preset(schedule) if isinstance(schedule, str) else schedule
        if m is not None or rho is not None:
            sched = replace(sched, m=sched.m if m is None else float(m), rho=sched.rho if rho is None else float(rho))
        if not sched.map_block <= value_block < sched.depth:
            raise ValueError(f"VPPPruner: value_block {value_block} must lie in [{sched.map_block}, {sched.depth})")
        self.schedule = sched
        self.dim = int(dim)
        self.kappa_init = float(kappa_init)
        self.lambda_sm = float(lambda_sm)
        self.lambda_map = float(lambda_map)
        self.value_block = int(value_block)
        self.map_sm = MapSM(self.dim, tau=tau, pool_radius=pool_radius, inference_noise=inference_noise)
        self.sms = nn.ModuleList(SM(self.dim, tau=tau, inference_noise=inference_noise) for _ in sched.sm_blocks)
        init_map_sm_(self.map_sm)

    # ---- protocol ----
    def begin(self, x0: torch.Tensor, grid: tuple[int, int], state: Any = None) -> PruneContext:
        ctx = super().begin(x0, grid, state)
        if ctx.dim != self.dim:
            raise ValueError(f"VPPPruner built for C={self.dim}, the backbone gives C={ctx.dim}")
        if state is not None:
            if not isinstance(state, TemporalState):
                raise ValueError(f"VPPPruner: state must be a TemporalState or None, got {type(state).__name__}")
            state.check(x0, grid)
        ctx.data.update(sm_masks=[], sm_inputs=[], map_probs=None, key=None, value=None, value_mask=None)
        return ctx

    def before_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        s = self.schedule
        if b == s.map_block:
            return self._map_sm(x, keep, ctx)
        if b in s.sm_blocks:
            i = s.sm_blocks.index(b)
            ctx.data["sm_inputs"].append(keep)      # the mask the SM gates: its overhead is counted in finish
            keep = self.sms[i](x, keep, noise=ctx.noise)
            ctx.data["sm_masks"].append(keep)
        return keep

    def after_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext,
                    attn: BlockAttention | None = None) -> None:
        if b == self.schedule.map_block - 1:
            ctx.data["key"] = x.clone()  # cloned before blocks 1-2 run (§12.1 fix)
        if b == self.value_block:
            ctx.data["value"] = x.clone()
            ctx.data["value_mask"] = keep.detach() > 0.5

    def full_token_points(self, depth: int, ctx: PruneContext) -> frozenset:
        """Map-SM's block (its mask, and the key saved after the block before it), the SM blocks and the point
        after ``value_block`` (the saved value): {1, 3, 6, 9} for the default layout. Elsewhere the hooks
        leave ``keep`` and the tokens alone."""
        s = self.schedule
        return frozenset({s.map_block, *s.sm_blocks, self.value_block + 1})

    def finish(self, ctx: PruneContext) -> tuple[TemporalState | None, torch.Tensor, torch.Tensor]:
        d = ctx.data
        if d["sm_inputs"] and torch.is_grad_enabled():    # SM.forward with a graph: each SM on all N tokens
            ctx.add_overhead(len(d["sm_inputs"]) * sm_macs(ctx.num_patches, ctx.dim))
        elif d["sm_inputs"]:       # inference: each SM on the tokens kept before it, one sum for all SMs
            kept = (torch.stack(d["sm_inputs"]).detach() > 0.5).sum((0, 2))
            ctx.add_overhead(kept.cpu() * float(sm_macs(1, ctx.dim)))
        next_state = None
        if d["key"] is not None and d["value"] is not None:
            next_state = TemporalState.create(d["key"], d["value"], d["value_mask"], ctx.grid)
        if len(d["sm_masks"]) == len(self.schedule.sm_blocks):
            loss = vpp_sparsity_loss(d["sm_masks"], self.schedule.sm_targets, d["map_probs"],
                                     kappa_init=self.kappa_init, lambda_sm=self.lambda_sm, lambda_map=self.lambda_map)
        else:  # a backbone shallower than the schedule (not VPP's 12-block layout): no loss to report
            loss = torch.zeros(())
        return next_state, loss, ctx.overhead_macs

    def extra_meta(self) -> dict:
        s = self.schedule
        return {"m": s.m, "rho": s.rho, "sm_targets": list(s.sm_targets), "map_block": s.map_block,
                "sm_blocks": list(s.sm_blocks), "value_block": self.value_block,
                "inference_noise": self.inference_noise, "nominal_pkr": s.nominal_pkr()}

    def nominal_counts(self, num_patches: int, depth: int, first_frame: bool = False) -> BlockCounts:
        """Nominal tokens per block of a non-first frame (or the first, ``first_frame=True``).

        ``floor(N m)`` at the Map-SM blocks (its top-k count), ``N m rho**i`` (expected, the SMs' count is
        dynamic) from SM i on: :meth:`VPPSchedule.block_counts`. vpp-notes §3, §11.

        Raises:
            ValueError: ``depth`` differs from the schedule's.
        """
        if depth != self.schedule.depth:
            raise ValueError(f"VPPPruner schedule has {self.schedule.depth} blocks, the backbone {depth}")
        return BlockCounts.per_block(num_patches, self.schedule.block_counts(num_patches, first_frame))

    # ---- Map-SM step ----
    def _map_sm(self, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        """Mask in force at blocks map_block .. first SM - 1: Map-SM for samples with a previous frame."""
        state: TemporalState | None = ctx.state
        if state is None:
            return keep  # first frame of every video: blocks 1-2 dense
        valid = state.valid
        vl = valid.tolist()                     # one host sync for the three cases below
        if not any(vl):
            return keep
        if all(vl):
            mask, p = self.map_sm(x, state.key, state.value, state.mask, ctx.grid, self.schedule.m, noise=ctx.noise)
        else:
            idx = valid.nonzero(as_tuple=True)[0]
            mv, p = self.map_sm(x[idx], state.key[idx], state.value[idx], state.mask[idx], ctx.grid,
                                self.schedule.m, noise=ctx.noise)
            mask = keep.index_put((idx,), mv.to(keep.dtype))  # out of place: dense rows stay ones
        ctx.data["map_probs"] = p
        n, c = ctx.num_patches, ctx.dim
        if torch.is_grad_enabled():  # full N x N association (straight-through graph)
            macs = [float(map_sm_macs(n, c)) if v else 0.0 for v in vl]
        else:  # inference: association and selector on the K kept previous tokens (MapSM.forward; none kept: all N)
            macs = [float(map_sm_macs(n, c, k if k > 0 else n)) if v else 0.0
                    for v, k in zip(vl, state.mask.sum(-1).tolist())]
        ctx.add_overhead(torch.tensor(macs, dtype=torch.float64))
        return mask.to(keep.dtype) * keep


def init_map_sm_(module: MapSM) -> MapSM:
    """Official Map-SM init: trunc-normal(std 0.02) Linear weights, zero bias, LayerNorm 1/0.

    Map-SM lives inside the ViT-Adapter's ``interactions`` and receives its ``_init_weights``; the SMs sit
    outside and keep PyTorch's default Linear init (vpp-notes §7.1). Returns ``module`` (modified in place).
    """
    for mod in module.modules():
        if isinstance(mod, nn.Linear):
            nn.init.trunc_normal_(mod.weight, std=0.02)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.LayerNorm):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
    return module
