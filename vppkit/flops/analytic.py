"""Closed-form MACs of a plain ViT backbone under a per-block token schedule.

**Unit: MACs** (one multiply-add = 1, fvcore's convention); :attr:`BackboneMacs.gmacs` divides by 1e9.
Only matrix products are counted (linear layers, patch-embedding conv, attention QK^T and AV); norms,
activations, softmax, biases and residual adds are not (fvcore counts layer norms too: ~0.2 % more).

A ViT block on n tokens (prefix included), width C, MLP ratio r (DESIGN.md §4, vpp-notes §8.4)::

    qkv 3nC^2 + QK^T n^2 C + AV n^2 C + proj nC^2 + MLP 2 r n C^2      (= 12nC^2 + 2n^2 C at r = 4)

Pruning methods that drop tokens *inside* a block (EViT after attention, ToMe between attention and MLP)
are modelled by separate token counts for the attention part (qkv, QK^T, AV, proj) and the MLP part.

Token schedules (:class:`TokenSchedule`) hold the number of *patch* tokens (prefix excluded) that enter each
block's attention and MLP; the prefix (CLS / register tokens, never pruned) is added by :func:`backbone_macs`.
Nominal schedules of the methods are the pruners' own (``Pruner.nominal_counts`` in
:mod:`vppkit.models.pruning`; :func:`method_schedule`), never retyped here.
Pruner overhead (predictors, gates, Map-SM association) is passed in and reported separately.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from vppkit.models.pruning import build_pruner
from vppkit.models.pruning.base import BlockCounts, Pruner
from vppkit.models.pruning.evit import EVIT_BLOCKS, EVIT_KEEP_RATE, evit_counts
from vppkit.models.pruning.svit import svit_stage_targets
from vppkit.models.pruning.vpp_modules import map_sm_macs, sm_macs

__all__ = [
    "ViTSpec",
    "ARCHS",
    "get_spec",
    "block_macs",
    "patch_embed_macs",
    "head_macs",
    "TokenSchedule",
    "dense_schedule",
    "ratio_schedule",
    "counts_schedule",
    "dynamicvit_predictor_macs",
    "tome_matching_macs",
    "METHODS",
    "TOME_R",
    "method_pruner",
    "method_schedule",
    "BackboneMacs",
    "backbone_macs",
    "schedule_to_dict",
]


# ----------------------------------------------------------------------------------------------------------------
# architectures
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViTSpec:
    """Shape of a plain ViT (what the MAC count needs).

    Attributes:
        name: architecture name.
        embed_dim: width C.
        depth: number of blocks.
        num_heads: attention heads (only ToMe's matching cost uses it).
        mlp_ratio: r, MLP hidden = r * C.
        patch_size: square patch side in pixels.
        in_chans: image channels.
        num_prefix: prefix tokens (CLS + registers), never pruned.
        num_classes: classifier outputs (only with ``include_head``).
        timm_name: the timm model with this shape (for measured counts; no weights are loaded).
    """

    name: str
    embed_dim: int
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    in_chans: int = 3
    num_prefix: int = 1
    num_classes: int = 1000
    timm_name: str | None = None

    def grid(self, img_size: int | Sequence[int]) -> tuple[int, int]:
        """Patch grid (H_p, W_p) for an image of ``img_size`` (int or (H, W)) pixels.

        Raises:
            ValueError: a side not divisible by the patch size.
        """
        h, w = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[-1]))
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {(h, w)} is not a multiple of the patch size {self.patch_size} ({self.name})")
        return h // self.patch_size, w // self.patch_size

    @classmethod
    def from_timm(cls, vit, name: str | None = None) -> "ViTSpec":
        """Read the shape from a timm ``VisionTransformer`` instance (or anything with the same attributes)."""
        blk = vit.blocks[0]
        c = int(vit.embed_dim)
        hidden = int(blk.mlp.fc1.out_features)
        ps = vit.patch_embed.patch_size
        head = getattr(vit, "head", None)
        return cls(name=name or type(vit).__name__, embed_dim=c, depth=len(vit.blocks),
                   num_heads=int(blk.attn.num_heads), mlp_ratio=hidden / c,
                   patch_size=int(ps[0] if isinstance(ps, (tuple, list)) else ps),
                   in_chans=int(vit.patch_embed.proj.in_channels), num_prefix=int(vit.num_prefix_tokens),
                   num_classes=int(getattr(head, "out_features", 0) or 0))


ARCHS: dict[str, ViTSpec] = {
    "deit_tiny": ViTSpec("deit_tiny", 192, 12, 3, timm_name="deit_tiny_patch16_224"),
    "deit_small": ViTSpec("deit_small", 384, 12, 6, timm_name="deit_small_patch16_224"),
    "deit_base": ViTSpec("deit_base", 768, 12, 12, timm_name="deit_base_patch16_224"),
    "vit_tiny": ViTSpec("vit_tiny", 192, 12, 3, timm_name="vit_tiny_patch16_224"),
    "vit_small": ViTSpec("vit_small", 384, 12, 6, timm_name="vit_small_patch16_224"),
    "vit_base": ViTSpec("vit_base", 768, 12, 12, timm_name="vit_base_patch16_224"),
    "vit_large": ViTSpec("vit_large", 1024, 24, 16, timm_name="vit_large_patch16_224"),
}
"""Known architectures (DeiT = ViT shapes; DeiT-Ti/S/B: Touvron et al. 2021 Table 1)."""


def get_spec(arch: str) -> ViTSpec:
    """Spec of a known architecture. Raises ``KeyError`` naming the known ones."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise KeyError(f"unknown arch {arch!r}; known: {', '.join(sorted(ARCHS))}") from None


# ----------------------------------------------------------------------------------------------------------------
# layer costs (MACs)
# ----------------------------------------------------------------------------------------------------------------
def block_macs(n_attn: float, dim: int, mlp_ratio: float = 4.0, n_mlp: float | None = None,
               include_attention: bool = True) -> dict[str, float]:
    """MACs of one ViT block, term by term.

    Args:
        n_attn: tokens (prefix included) entering the attention part.
        dim: width C.
        mlp_ratio: r.
        n_mlp: tokens entering the MLP (default ``n_attn``; differs for EViT / ToMe).
        include_attention: count QK^T and AV (the matmuls timm's fused attention hides from counters).

    Returns:
        dict with ``qkv`` 3nC^2, ``attn_qk`` n^2 C, ``attn_av`` n^2 C, ``proj`` nC^2, ``mlp`` 2 r n_mlp C^2,
        ``total``; in MACs (floats: fractional n is an expected count).
    """
    n = float(n_attn)
    m = n if n_mlp is None else float(n_mlp)
    c = float(dim)
    terms = {
        "qkv": 3.0 * n * c * c,
        "attn_qk": n * n * c if include_attention else 0.0,
        "attn_av": n * n * c if include_attention else 0.0,
        "proj": n * c * c,
        "mlp": 2.0 * mlp_ratio * m * c * c,
    }
    terms["total"] = sum(terms.values())
    return terms


def patch_embed_macs(num_patches: int, dim: int, patch_size: int = 16, in_chans: int = 3) -> float:
    """Patch embedding (a stride-p conv = a linear map per patch): N * (in_chans p^2) * C MACs."""
    return float(num_patches) * in_chans * patch_size * patch_size * dim


def head_macs(dim: int, num_classes: int, num_tokens: int = 1) -> float:
    """Classifier head on ``num_tokens`` pooled tokens (CLS): tokens * C * classes MACs."""
    return float(num_tokens) * dim * num_classes


# ----------------------------------------------------------------------------------------------------------------
# token schedules
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenSchedule:
    """Patch tokens (prefix excluded) entering each block.

    Attributes:
        attn: per block, patch tokens entering attention (may be fractional = expected count).
        mlp: per block, patch tokens entering the MLP (+ EViT's fused token; equal to ``attn`` for
            methods that prune between blocks).
        num_patches: N of the full grid.
        method: name of the rule that built it.
        params: the rule's parameters.
    """

    attn: tuple[float, ...]
    mlp: tuple[float, ...]
    num_patches: int
    method: str = "custom"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.attn) != len(self.mlp):
            raise ValueError(f"schedule {self.method}: attn has {len(self.attn)} blocks, mlp {len(self.mlp)}")
        for name, seq in (("attn", self.attn), ("mlp", self.mlp)):
            bad = [i for i, v in enumerate(seq) if not (0 <= v <= self.num_patches + 1)]
            if bad:
                raise ValueError(f"schedule {self.method}: {name} token counts out of [0, N={self.num_patches}] "
                                 f"at blocks {bad}")

    @property
    def depth(self) -> int:
        return len(self.attn)

    @property
    def keep_fractions(self) -> list[float]:
        """Fraction of the N patch tokens entering each block's attention."""
        return [a / self.num_patches for a in self.attn]

    @property
    def pkr(self) -> float:
        """Nominal PKR: mean over blocks of the fraction of patch tokens processed (vpp-notes §11)."""
        return sum(self.keep_fractions) / self.depth


def dense_schedule(num_patches: int, depth: int = 12) -> TokenSchedule:
    """Every block processes all N patch tokens."""
    n = float(num_patches)
    return TokenSchedule((n,) * depth, (n,) * depth, num_patches, "dense")


def ratio_schedule(num_patches: int, ratios: Sequence[float], method: str = "ratios") -> TokenSchedule:
    """Schedule from per-block kept fractions (e.g. measured mean keep ratios of a dynamic pruner).

    Args:
        num_patches: N.
        ratios: one fraction in [0, 1] per block (block 0 first).
        method: label.

    Raises:
        ValueError: a ratio outside [0, 1].
    """
    bad = [i for i, r in enumerate(ratios) if not 0.0 <= float(r) <= 1.0]
    if bad:
        raise ValueError(f"keep ratios must lie in [0, 1]; bad blocks {bad}: {[ratios[i] for i in bad]}")
    counts = tuple(float(r) * num_patches for r in ratios)
    return TokenSchedule(counts, counts, num_patches, method, {"ratios": [float(r) for r in ratios]})


def counts_schedule(counts: BlockCounts, method: str = "custom", params: dict | None = None) -> TokenSchedule:
    """Schedule from a pruner's nominal counts (:meth:`vppkit.models.pruning.base.Pruner.nominal_counts`)."""
    return TokenSchedule(tuple(float(a) for a in counts.attn), tuple(float(m) for m in counts.mlp),
                         counts.num_patches, method, dict(params or {}))


# ----------------------------------------------------------------------------------------------------------------
# pruner overheads (MACs)
# ----------------------------------------------------------------------------------------------------------------
def dynamicvit_predictor_macs(num_tokens: float, dim: int) -> float:
    """DynamicViT ``PredictorLG`` on n tokens: Linear(C,C), Linear(C,C/2), Linear(C/2,C/4), Linear(C/4,2).

    = n (C^2 + C^2/2 + C^2/8 + C/2) MACs (official ``dyvit.py``; global pooling and norms not counted).
    """
    c = float(dim)
    return float(num_tokens) * (c * c + c * (c // 2) + (c // 2) * (c // 4) + (c // 4) * 2)


def tome_matching_macs(num_tokens: float, dim: int, num_heads: int) -> float:
    """ToMe bipartite matching on n tokens: scores a @ b^T (ceil(n/2) x floor(n/2)) on the head-averaged keys
    (C / heads wide). The official code includes the CLS token in n; vppkit's ToMe matches patch tokens only."""
    n = float(num_tokens)
    return math.ceil(n / 2) * math.floor(n / 2) * (dim / num_heads)


# ----------------------------------------------------------------------------------------------------------------
# backbone total
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class BackboneMacs:
    """MACs of one frame through the backbone (unit: MACs; ``.gmacs`` = / 1e9).

    Attributes:
        blocks: per block, ``block_macs`` terms (qkv, attn_qk, attn_av, proj, mlp, total).
        patch_embed: patch-embedding MACs (0 when excluded).
        head: classifier-head MACs (0 when excluded).
        overhead: pruner overhead MACs (shown separately; included in ``total``).
        spec: the architecture.
        schedule: the token schedule.
        counter: "analytic".
    """

    blocks: list[dict[str, float]]
    patch_embed: float
    head: float
    overhead: float
    spec: ViTSpec
    schedule: TokenSchedule
    counter: str = "analytic"

    @property
    def blocks_total(self) -> float:
        return sum(b["total"] for b in self.blocks)

    @property
    def backbone(self) -> float:
        """Backbone MACs without the pruner overhead."""
        return self.blocks_total + self.patch_embed + self.head

    @property
    def total(self) -> float:
        """Backbone + overhead MACs."""
        return self.backbone + self.overhead

    @property
    def gmacs(self) -> float:
        """Total in GMACs."""
        return self.total / 1e9

    def summary(self) -> dict:
        """Flat dict (GMACs) for tables / JSON."""
        return {
            "arch": self.spec.name, "method": self.schedule.method, "counter": self.counter,
            "pkr": self.schedule.pkr, "patch_embed_GMACs": self.patch_embed / 1e9,
            "blocks_GMACs": self.blocks_total / 1e9, "head_GMACs": self.head / 1e9,
            "backbone_GMACs": self.backbone / 1e9, "overhead_GMACs": self.overhead / 1e9,
            "total_GMACs": self.total / 1e9, "params": dict(self.schedule.params),
        }


def backbone_macs(spec: ViTSpec, schedule: TokenSchedule, *, overhead_macs: float = 0.0,
                  include_patch_embed: bool = True, include_head: bool = False,
                  include_attention: bool = True) -> BackboneMacs:
    """Analytic MACs of a ViT backbone under a token schedule (prefix tokens added to every block).

    Args:
        spec: architecture.
        schedule: patch tokens per block (``schedule.depth`` must equal ``spec.depth``).
        overhead_macs: pruner overhead (MACs) to report beside the backbone.
        include_patch_embed: count the patch embedding (dense, N patches).
        include_head: count a classifier head on the CLS token (published ImageNet GFLOPs include it).
        include_attention: count QK^T and AV.

    Returns:
        :class:`BackboneMacs` (MACs; ``.gmacs`` in GMACs).

    Raises:
        ValueError: schedule depth differs from the architecture depth.
    """
    if schedule.depth != spec.depth:
        raise ValueError(f"schedule {schedule.method} has {schedule.depth} blocks, {spec.name} has {spec.depth}")
    p = spec.num_prefix
    blocks = [block_macs(a + p, spec.embed_dim, spec.mlp_ratio, m + p, include_attention)
              for a, m in zip(schedule.attn, schedule.mlp)]
    pe = (patch_embed_macs(schedule.num_patches, spec.embed_dim, spec.patch_size, spec.in_chans)
          if include_patch_embed else 0.0)
    hd = head_macs(spec.embed_dim, spec.num_classes) if include_head else 0.0
    return BackboneMacs(blocks, pe, hd, float(overhead_macs), spec, schedule)


def schedule_to_dict(schedule: TokenSchedule) -> dict:
    """JSON-friendly form of a schedule."""
    return asdict(schedule)


METHODS = ("dense", "vpp", "svit", "dynamicvit", "evit", "tome")
"""Methods :func:`method_schedule` knows."""

TOME_R = 13
"""ToMe's r for DeiT-S in its paper (2.7 GFLOPs), the default of :func:`method_schedule`."""


def method_pruner(method: str, dim: int, *, keep: float | None = None, rho: float | None = None,
                  tome_r: int | None = None, depth: int = 12) -> Pruner:
    """The vppkit pruner whose nominal schedule :func:`method_schedule` reports (defaults: the pruners' own).

    ``vpp``: :class:`VPPPruner` with preset ``pkr55`` (m, rho from ``schedules.PRESETS``), ``keep`` = m and
    ``rho`` override it; ``svit``: per-stage targets rho, rho^2, rho^3 (default SViT's 0.7); ``dynamicvit``:
    ``rho``; ``evit``: ``keep`` at :data:`~vppkit.models.pruning.evit.EVIT_BLOCKS`; ``tome``: ``tome_r``
    (default :data:`TOME_R`).

    Raises:
        ValueError: unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if method == "dense":
        return build_pruner("dense", dim)
    if method == "vpp":
        return build_pruner("vpp", dim, schedule="pkr55", m=keep, rho=rho, inference_noise=False)
    if method == "svit":
        kw = {} if rho is None else {"targets": svit_stage_targets(rho, depth=depth)}
        return build_pruner("svit", dim, depth=depth, **kw)
    if method == "dynamicvit":
        return build_pruner("dynamicvit", dim, **({} if rho is None else {"rho": rho}))
    if method == "evit":
        return build_pruner("evit", dim, keep_rates={b: EVIT_KEEP_RATE if keep is None else keep for b in EVIT_BLOCKS})
    return build_pruner("tome", dim, r=TOME_R if tome_r is None else int(tome_r), depth=depth)


def method_schedule(method: str, spec: ViTSpec, grid: tuple[int, int], *, keep: float | None = None,
                    rho: float | None = None, tome_r: int | None = None,
                    block_ratios: Sequence[float] | None = None) -> tuple[TokenSchedule, float, str]:
    """Nominal token schedule and pruner overhead (MACs per frame) of a method.

    The schedule is the pruner's own (:meth:`~vppkit.models.pruning.base.Pruner.nominal_counts` of
    :func:`method_pruner`), except EViT, whose count here is the **official** EViT's (fused token, pruning
    inside the block: :func:`~vppkit.models.pruning.evit.evit_counts`), to compare with its published GFLOPs.
    Dynamic methods (VPP, SViT) accept measured per-block keep ratios (``block_ratios``, e.g. from
    :func:`vppkit.flops.measure.block_ratios_from_records`), which then replace the nominal schedule. The
    overhead follows vppkit's pruner implementations (their ``KeepRecord.overhead_macs``): gates / predictors
    see all N patch tokens.

    Args:
        method: one of :data:`METHODS`.
        spec: architecture.
        grid: (H_p, W_p) patch grid.
        keep: VPP: Map-SM keep fraction m (preset pkr55: 0.7); EViT: keep rate (0.7). Ignored otherwise.
        rho: VPP: SM decay (pkr55: 0.8); SViT / DynamicViT: per-stage ratio (0.7).
        tome_r: ToMe tokens merged per block (:data:`TOME_R`).
        block_ratios: measured per-block kept fractions (len = depth); overrides the nominal schedule.

    Returns:
        (schedule, overhead MACs per frame, a one-line note on what was assumed).

    Raises:
        ValueError: unknown method, or ``block_ratios`` for ToMe / EViT (their MLP and attention counts
            differ inside a block; pass a full schedule instead).
    """
    n = grid[0] * grid[1]
    c = spec.embed_dim
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if block_ratios is not None and method in ("evit", "tome"):
        raise ValueError(f"--block-ratios is not supported for {method} (tokens change inside a block)")
    pruner = method_pruner(method, c, keep=keep, rho=rho, tome_r=tome_r, depth=spec.depth)
    measured = None if block_ratios is None else ratio_schedule(n, block_ratios, method)
    if method == "dense":
        sched = measured or counts_schedule(pruner.nominal_counts(n, spec.depth), "dense")
        return sched, 0.0, "dense: every block processes all patch tokens"
    if method == "vpp":
        s = pruner.schedule
        sched = measured or counts_schedule(pruner.nominal_counts(n, spec.depth), "vpp", {
            "map_keep": s.m, "rho": s.rho, "map_block": s.map_block, "sm_blocks": list(s.sm_blocks)})
        # Map-SM maps from the previous frame's tokens kept at the value block (5) at inference
        kept_prev = sched.attn[pruner.value_block]
        # each SM gates the tokens kept before its block (the previous block's count) at inference
        over = map_sm_macs(n, c, int(round(kept_prev))) + sum(sm_macs(int(round(sched.attn[b - 1])), c)
                                                              for b in s.sm_blocks)
        note = (f"vpp: nominal m={s.m}, rho={s.rho} (non-first frame)" if block_ratios is None else
                "vpp: measured block ratios") + ("; overhead = Map-SM at inference (N K C against the K previous "
                                                 "tokens kept at block 5, + selector MLP on those K) + 3 SMs on the "
                                                 "tokens kept before them")
        return sched, float(over), note
    if method == "svit":
        r = 0.7 if rho is None else rho
        sched = measured or counts_schedule(pruner.nominal_counts(n, spec.depth), "svit", {
            "rho": r, "locations": [pruner.first_gated + 3 * i for i in range(len(pruner.targets) // 3)],
            "rounding": "none"})
        gates = len(pruner.gates)
        note = (f"svit: nominal targets rho={r} per stage from block {pruner.first_gated} (real counts are "
                "dynamic)" if block_ratios is None else "svit: measured block ratios") + \
            f"; overhead = {gates} gates on N tokens"
        return sched, float(sum(g.macs(n) for g in pruner.gates)), note
    if method == "dynamicvit":
        sched = measured or counts_schedule(pruner.nominal_counts(n, spec.depth), "dynamicvit", {
            "rho": pruner.rho, "locations": list(pruner.blocks), "rounding": "floor"})
        over = float(sum(p.macs(n) for p in pruner.predictors))
        return sched, over, (f"dynamicvit: fixed counts floor(N rho^s), rho={pruner.rho}, predictors before blocks "
                             f"{'/'.join(map(str, pruner.blocks))}; overhead = {len(pruner.blocks)} predictors on "
                             "N tokens (the official inference runs them on kept tokens only)")
    if method == "evit":
        k = EVIT_KEEP_RATE if keep is None else keep
        sched = counts_schedule(evit_counts(n, spec.depth, pruner.keep_rates, fused_token=True, inside_block=True),
                                "evit", {"keep_rate": k, "locations": list(pruner.keep_rates), "fuse_token": True})
        return sched, 0.0, (f"evit: official schedule, keep rate {k} inside blocks "
                            f"{'/'.join(map(str, pruner.keep_rates))} + fused token")
    sched = counts_schedule(pruner.nominal_counts(n, spec.depth), "tome", {"r": pruner.r[0]})
    # vppkit's ToMe matches patch tokens only (prefix excluded); no matching when nothing is merged
    over = sum(tome_matching_macs(a, c, spec.num_heads) for a, m in zip(sched.attn, sched.mlp) if m < a)
    return sched, over, f"tome: r={pruner.r[0]} merged per block; overhead = bipartite matching scores on patch tokens"
