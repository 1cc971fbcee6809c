"""The Pruner protocol: how a token-pruning method plugs into :class:`vppkit.models.vit.PrunableViT`.

A pruner decides, before each ViT block b (0-based), the keep mask *in force at block b* over the N patch
tokens of the full grid (DESIGN.md §3). The backbone owns execution (masked or gathered), the pruner owns
decisions. All per-forward information lives in a :class:`PruneContext` created by :meth:`Pruner.begin` and
thrown away after :meth:`Pruner.finish`; temporal information (VPP's Map-SM key/value/mask) is passed in as
``state`` and returned as ``next_state`` — never stored on the module.

Call order inside ``PrunableViT.forward`` (patch tokens only; CLS/register tokens are never pruned)::

    ctx  = pruner.begin(x0, grid, state)                 # x0: (B, N, C) patch embedding + pos embed
    keep = ones(B, N)
    for b in range(depth):
        keep = pruner.before_block(b, x, keep, ctx)      # x: (B, N, C) tokens entering block b
        x    = run block b on the tokens kept by ``keep`` # masked or gathered
        pruner.after_block(b, x, keep, ctx, attn)        # x: (B, N, C) output of block b; attn only if
                                                         #    b in pruner.needs_attention, else None
    next_state, aux_loss, overhead_macs = pruner.finish(ctx)

``keep`` is a float (B, N) tensor whose forward value is exactly 0/1 (straight-through in training so the
gradient reaches the gates through ``x = m * block(x) + (1 - m) * x``). A pruner that wants nested masks
(VPP, DynamicViT) multiplies by the incoming ``keep``; one that allows reactivation (SViT) ignores it.

How the methods fit:
- VPP: ``after_block(0)`` saves the block-0 output (next frame's Map-SM key, cloned), ``before_block(1)`` runs
  Map-SM against ``state`` (skipped when ``state is None``: first frame, blocks 1-2 dense), SMs at 3/6/9,
  ``after_block(5)`` saves the block-5 output and the mask in force at block 5 (Map-SM value + mask).
- SViT / DynamicViT: gates in ``before_block``; sparsity loss accumulated in ``ctx`` and returned by ``finish``.
- EViT / attention-received selectors: ``needs_attention`` names the blocks whose attention the backbone must
  compute; it arrives as :class:`BlockAttention` in ``after_block`` and drives the next ``before_block``.
- ToMe: ``merges_tokens = True``; the backbone runs its merging loop instead (see ``tome.py``).

Every pruner also owns its **nominal schedule**, :meth:`Pruner.nominal_counts`: the patch tokens each block
processes when the method meets its keep targets exactly. The FLOPs counter (``vppkit.flops.analytic``), the
speed benchmark (``vppkit.bench``) and the selector study derive their schedules from it, never from a copy of
the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from vppkit.models.records import BlockAttention


@dataclass(frozen=True)
class BlockCounts:
    """Nominal patch tokens (prefix excluded) that each block of the backbone processes.

    Attributes:
        num_patches: N, patch tokens of the full grid.
        attn: per block (0-based), patch tokens entering the attention part.
        mlp: per block, patch tokens entering the MLP; differs from ``attn`` only for methods that change the
            count inside a block (ToMe merges between attention and MLP; the official EViT prunes there).

    Counts are exact integers for methods with a fixed inference count (Map-SM top-k, DynamicViT, EViT, ToMe)
    and expected counts ``N * target`` (possibly fractional) for methods whose count is dynamic (VPP's SMs,
    SViT's gates).

    Raises:
        ValueError: ``attn`` and ``mlp`` differ in length, or a count lies outside [0, N + 1] (N + 1: the
            official EViT's fused token).
    """

    num_patches: int
    attn: tuple[float, ...]
    mlp: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.attn) != len(self.mlp):
            raise ValueError(f"BlockCounts: attn has {len(self.attn)} blocks, mlp {len(self.mlp)}")
        bad = [b for b, v in enumerate((*self.attn, *self.mlp)) if not 0 <= v <= self.num_patches + 1]
        if bad:
            raise ValueError(f"BlockCounts: counts out of [0, N + 1] (N={self.num_patches}) at positions {bad}")

    @classmethod
    def per_block(cls, num_patches: int, counts: Sequence[float]) -> "BlockCounts":
        """Counts of a method that prunes between blocks (attention and MLP of a block see the same tokens)."""
        counts = tuple(counts)
        return cls(int(num_patches), counts, counts)

    @property
    def depth(self) -> int:
        return len(self.attn)

    @property
    def pkr(self) -> float:
        """Nominal PKR (fraction): mean over blocks of ``attn / N``."""
        return sum(self.attn) / (self.depth * self.num_patches)


@dataclass
class PruneContext:
    """Per-forward working memory of a pruner (never stored on the module).

    Attributes:
        grid: (H_p, W_p) patch grid, ``N = H_p * W_p``.
        batch: B.
        num_patches: N.
        dim: C, token width.
        state: the temporal state passed to ``forward`` (``None`` for the first frame / image models).
        noise: whether stochastic decisions (Gumbel noise) are on for this forward.
        training: the pruner's ``training`` flag at ``begin``.
        overhead_macs: (B,) float64, the pruner's own cost per sample in MACs, accumulated by the pruner.
        losses: scalar tensors summed into ``aux_loss`` by the default :meth:`Pruner.finish`.
        data: free per-method storage (e.g. the ratios seen by each gate, VPP's saved key/value).
    """

    grid: tuple[int, int]
    batch: int
    num_patches: int
    dim: int
    state: Any = None
    noise: bool = False
    training: bool = False
    overhead_macs: torch.Tensor | None = None
    losses: list = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def add_overhead(self, macs: float | torch.Tensor) -> None:
        """Add ``macs`` (a number for every sample, or a (B,) tensor) to the per-sample overhead."""
        if isinstance(macs, (int, float)):      # the common case: one op, no tensor built (issue 15)
            self.overhead_macs = self.overhead_macs + float(macs)
        else:
            self.overhead_macs = self.overhead_macs + torch.as_tensor(macs, dtype=torch.float64).cpu()


class Pruner(nn.Module):
    """Base class of all pruners (also the dense pruner: every hook is a no-op).

    Args:
        inference_noise: keep stochastic (Gumbel) decisions at inference (the official VPP behaviour) instead
            of the deterministic argmax / top-k rule. DESIGN.md §3; a report must say which one it used.

    Class attributes:
        name: method name stored in ``KeepRecord.meta['method']``.
        needs_attention: 0-based blocks whose attention statistics the backbone must compute and pass to
            :meth:`after_block` (costs an explicit attention computation for those blocks).
        merges_tokens: True for merging methods (ToMe): the backbone calls :meth:`merge_forward` instead.
        supports_masked: False when the method has no masked (training) execution.
    """

    name: str = "dense"
    needs_attention: frozenset = frozenset()
    merges_tokens: bool = False
    supports_masked: bool = True

    def __init__(self, inference_noise: bool = False) -> None:
        super().__init__()
        self.inference_noise = bool(inference_noise)

    # ---- protocol ----
    def use_noise(self) -> bool:
        """Gumbel noise on: always in training, at inference only with ``inference_noise``."""
        return self.training or self.inference_noise

    def begin(self, x0: torch.Tensor, grid: tuple[int, int], state: Any = None) -> PruneContext:
        """Start a forward pass.

        Args:
            x0: (B, N, C) patch tokens after patch embedding + position embedding.
            grid: (H_p, W_p), ``H_p * W_p == N``.
            state: temporal state from the previous frame, or ``None``.

        Returns:
            A fresh :class:`PruneContext`.
        """
        b, n, c = x0.shape
        return PruneContext(grid=tuple(grid), batch=b, num_patches=n, dim=c, state=state, noise=self.use_noise(),
                            training=self.training, overhead_macs=torch.zeros(b, dtype=torch.float64))

    def before_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        """Return the keep mask in force at block ``b``.

        Args:
            b: 0-based block index.
            x: (B, N, C) patch tokens entering block b (pruned tokens carry their last value).
            keep: (B, N) float mask in force at block b-1 (all ones before block 0).
            ctx: this forward's context.

        Returns:
            (B, N) float mask with forward values exactly 0/1 (straight-through gradient allowed).
        """
        return keep

    def after_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext,
                    attn: BlockAttention | None = None) -> None:
        """Observe the output of block ``b``: (B, N, C) patch tokens, the mask used, attention if requested.

        ``x`` is valid during the call only: gathered inference writes the next segment's kept tokens into the
        same tensor in place (:func:`vppkit.models.blocks.run_blocks_gathered`, ``inplace``); clone what you
        keep (VPP's key and value are cloned)."""

    def full_token_points(self, depth: int, ctx: PruneContext) -> frozenset | None:
        """Points where this pruner's hooks need the full token grid in gathered inference (issue 15).

        Point ``i`` (0..depth) lies between block i-1 and block i; there the backbone holds the full tokens
        x_i and calls ``after_block(i - 1)`` and ``before_block(i)``. Between two points the backbone keeps the
        kept tokens gathered across blocks and **skips both hooks**, so a pruner that returns a set promises
        that, in inference, ``before_block(b)`` returns ``keep`` unchanged and ``after_block(b - 1)`` does
        nothing for every ``b`` not in it. ``None`` (this default) = every point (block-by-block execution).

        Args:
            depth: number of blocks run. ctx: this forward's context (after :meth:`begin`).
        """
        return None

    def finish(self, ctx: PruneContext) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """End the forward pass.

        Returns:
            ``(next_state, aux_loss, overhead_macs)``: the state for the next frame (``None`` here), the scalar
            sparsity loss (sum of ``ctx.losses``, 0 when empty) and (B,) float64 overhead MACs per sample.
        """
        loss = torch.stack([l.reshape(()) for l in ctx.losses]).sum() if ctx.losses else torch.zeros(())
        return None, loss, ctx.overhead_macs

    def extra_meta(self) -> dict:
        """Extra information for ``KeepRecord.meta`` (keep targets, ratios, ...)."""
        return {}

    def nominal_counts(self, num_patches: int, depth: int) -> BlockCounts:
        """Patch tokens each block processes when the method meets its keep targets exactly.

        The base class (and :class:`DensePruner`) prunes nothing: N at every block. Each method overrides this
        with its own rule (the one its ``before_block`` follows at inference).

        Args:
            num_patches: N, patch tokens of the grid.
            depth: number of blocks of the backbone.

        Returns:
            :class:`BlockCounts` with ``depth`` blocks.

        Raises:
            ValueError: ``depth`` does not fit the method's layout (e.g. a gate after the last block).
        """
        return BlockCounts.per_block(num_patches, [num_patches] * depth)


class DensePruner(Pruner):
    """No pruning: every block processes all patch tokens. Used when ``PrunableViT(pruner=None)``."""

    name = "dense"

    def full_token_points(self, depth: int, ctx: PruneContext) -> frozenset:
        """No hook does anything: the blocks run as one segment."""
        return frozenset()


def mask_change_points(masks: torch.Tensor) -> frozenset:
    """Points ``b`` (1..depth-1) where the (B, depth, N) bool masks of block b differ from block b-1 in any
    sample, plus point 0 (one host-device synchronisation)."""
    changed = (masks[:, 1:] != masks[:, :-1]).any(2).any(0)
    return frozenset([0] + [b + 1 for b, c in enumerate(changed.tolist()) if c])


class ExternalMaskPruner(Pruner):
    """Applies keep masks given from outside through ``state`` (training-free selectors, FLOPs at a schedule).

    ``state`` passed to ``PrunableViT.forward`` must be a bool tensor of shape (B, depth, N) or (depth, N)
    (the same schedule for every sample): ``state[:, b]`` is the keep mask in force at block b. The same
    tensor is returned as the next state. Masks are used as given (no nesting is imposed).

    Raises:
        ValueError: (in ``begin``) when ``state`` is missing or has the wrong shape.
    """

    name = "external"

    def begin(self, x0: torch.Tensor, grid: tuple[int, int], state: Any = None) -> PruneContext:
        ctx = super().begin(x0, grid, state)
        if not torch.is_tensor(state):
            raise ValueError("ExternalMaskPruner needs state = keep masks (B, depth, N) or (depth, N) bool, got "
                             f"{type(state).__name__}")
        masks = state if state.dim() == 3 else state.unsqueeze(0).expand(ctx.batch, -1, -1)
        if masks.dim() != 3 or masks.shape[0] != ctx.batch or masks.shape[2] != ctx.num_patches:
            raise ValueError(f"ExternalMaskPruner: masks {tuple(state.shape)} do not fit batch {ctx.batch} and "
                             f"N={ctx.num_patches} patch tokens")
        ctx.data["masks"] = masks.to(x0.device).bool()
        return ctx

    def before_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        masks = ctx.data["masks"]
        if b >= masks.shape[1]:
            raise ValueError(f"ExternalMaskPruner: no mask for block {b} (masks cover {masks.shape[1]} blocks)")
        return masks[:, b].to(x.dtype)

    def full_token_points(self, depth: int, ctx: PruneContext) -> frozenset:
        """Where the given masks change (:func:`mask_change_points`)."""
        return mask_change_points(ctx.data["masks"][:, :depth])

    def finish(self, ctx: PruneContext):
        _, loss, overhead = super().finish(ctx)
        return ctx.state, loss, overhead

    def nominal_counts(self, num_patches: int, depth: int) -> BlockCounts:
        """Raises ValueError: the schedule is whatever masks are passed in (no nominal schedule of its own)."""
        raise ValueError("ExternalMaskPruner has no nominal schedule: its keep masks are given through `state`")


class ForcedSchedulePruner(Pruner):
    """Runs a real pruner's modules through the Pruner protocol but imposes given keep masks.

    Every hook of ``inner`` is called (so its gates, Map-SM association, attention requests and temporal state
    cost what they cost at inference), then the keep mask returned to the backbone is ``masks[:, b]``: the
    kept-token schedule is exactly the given one even for untrained gates (the speed benchmark's ``real``
    rows, ``vppkit.bench``). Composition through the public protocol; ``inner`` is not modified.

    Args:
        inner: the real pruner (eval mode, deterministic).
        masks: (B, depth, N) bool keep masks in force at each block (e.g. ``vppkit.bench.specs.nominal_masks``).

    Raises:
        ValueError: (in ``begin``) when ``masks`` do not fit the batch or N of the forward.
    """

    def __init__(self, inner: Pruner, masks: torch.Tensor) -> None:
        super().__init__(inference_noise=inner.inference_noise)
        self.inner = inner
        self.masks = masks
        self._float32 = masks.float()         # the masks as returned (float32 forwards: one call per block, not two)
        self.name = f"{inner.name}+forced"
        self.needs_attention = inner.needs_attention
        self._changes = mask_change_points(masks.detach())

    def begin(self, x0: torch.Tensor, grid: tuple[int, int], state: Any = None) -> PruneContext:
        ctx = self.inner.begin(x0, grid, state)
        if self.masks.shape[0] != ctx.batch or self.masks.shape[2] != ctx.num_patches:
            raise ValueError(f"ForcedSchedulePruner: masks {tuple(self.masks.shape)} do not fit batch {ctx.batch}, "
                             f"N={ctx.num_patches}")
        return ctx

    def before_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        self.inner.before_block(b, x, keep, ctx)          # the module runs; its decision is replaced
        if x.dtype == torch.float32:
            return self._float32[:, b]
        return self.masks[:, b].to(x.dtype)

    def after_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext,
                    attn: BlockAttention | None = None) -> None:
        self.inner.after_block(b, x, keep, ctx, attn)

    def full_token_points(self, depth: int, ctx: PruneContext) -> frozenset | None:
        """The inner pruner's points plus where the imposed masks change (``None`` if the inner's is)."""
        own = self.inner.full_token_points(depth, ctx)
        return None if own is None else own | self._changes

    def finish(self, ctx: PruneContext):
        return self.inner.finish(ctx)

    def extra_meta(self) -> dict:
        return {"forced_schedule": True, **self.inner.extra_meta()}

    def nominal_counts(self, num_patches: int, depth: int) -> BlockCounts:
        """The imposed masks' kept counts per block (mean over the batch).

        Raises:
            ValueError: ``num_patches`` / ``depth`` differ from the masks' (B, depth, N) shape.
        """
        if tuple(self.masks.shape[1:]) != (depth, num_patches):
            raise ValueError(f"ForcedSchedulePruner: masks {tuple(self.masks.shape)} are not (B, {depth}, "
                             f"{num_patches})")
        return BlockCounts.per_block(num_patches, self.masks.sum(-1).double().mean(0).tolist())


def linear_macs(tokens: int, in_features: int, out_features: int) -> float:
    """MACs of a Linear layer applied to ``tokens`` tokens (bias and norms not counted)."""
    return float(tokens) * in_features * out_features
