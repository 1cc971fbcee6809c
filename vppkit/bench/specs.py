"""What the speed benchmark runs: method configurations, their nominal keep schedules, and the pruners to time.

- :class:`MethodSpec` / :func:`resolve_methods`: benchmark rows from method names and goal PKRs;
- :func:`nominal_counts` / :func:`nominal_masks`: the kept-token schedule every pruned row runs, derived from the
  pruner's own :meth:`~vppkit.models.pruning.base.Pruner.nominal_counts`;
- :func:`build_method_pruner`: the pruner of a ``schedule`` or ``real`` row (see :mod:`vppkit.bench`);
- :class:`ModelCase`: one benchmarked model and its settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from vppkit.models.pruning import build_pruner
from vppkit.models.pruning.base import ExternalMaskPruner, ForcedSchedulePruner, Pruner
from vppkit.models.pruning.schedules import nominal_pkr
from vppkit.models.pruning.svit import svit_targets_for_pkr
from vppkit.models.pruning.tome import ToMePruner

__all__ = ["METHOD_NAMES", "VARIANTS", "DEFAULT_GOAL_PKRS", "MethodSpec", "ModelCase", "tome_r_for_pkr",
           "resolve_methods", "spec_pruner", "nominal_counts", "nominal_masks", "build_method_pruner"]

METHOD_NAMES = ("dense", "vpp", "svit", "dynamicvit", "evit", "tome")
VARIANTS = ("schedule", "real")


DEFAULT_GOAL_PKRS = (round(nominal_pkr("pkr55"), 4), round(nominal_pkr("pkr40"), 4))
"""Goal PKRs (fractions) of the benchmark: the nominal PKRs of VPP's presets pkr55 (0.5417) and pkr40 (0.4133);
baselines are set to the same nominal PKR so rows at one goal are comparable."""


@dataclass(frozen=True)
class MethodSpec:
    """One benchmarked configuration.

    Attributes:
        name: row label, e.g. ``"vpp-pkr40"``, ``"svit@0.413"``, ``"dense"``.
        method: one of :data:`METHOD_NAMES`.
        goal_pkr: nominal PKR of the configuration (fraction, all 12 blocks, block 0 = 1).
        params: the pruner's constructor arguments (JSON-able).
    """

    name: str
    method: str
    goal_pkr: float
    params: dict = field(default_factory=dict)


def _stage_rho(pkr: float) -> float:
    """rho with (3 + 3 (rho + rho^2 + rho^3)) / 12 = pkr (SViT / DynamicViT / EViT layout: 3 dense blocks)."""
    return svit_targets_for_pkr(pkr)[1]


def tome_r_for_pkr(num_patches: int, pkr: float, depth: int = 12) -> int:
    """ToMe's tokens merged per block r whose PKR (mean over blocks of tokens entering block / N) is nearest ``pkr``.

    The PKR of each r is :meth:`vppkit.models.pruning.tome.ToMePruner.nominal_counts`' (block b merges
    ``min(r, n_b // 2)`` of the n_b patch tokens entering it); ties go to the smaller r.

    Raises:
        ValueError: when ``pkr`` is not in (0, 1].
    """
    if not 0.0 < pkr <= 1.0:
        raise ValueError(f"pkr must be a fraction in (0, 1], got {pkr}")

    def pkr_of(r: int) -> float:
        return ToMePruner(r, depth=depth).nominal_counts(num_patches, depth).pkr

    return min(range(0, num_patches // 2 + 1), key=lambda r: (abs(pkr_of(r) - pkr), r))


def resolve_methods(names: Sequence[str], goal_pkrs: Sequence[float] = DEFAULT_GOAL_PKRS,
                    num_patches: int | None = None) -> list[MethodSpec]:
    """Benchmark configurations from method names.

    Args:
        names: ``dense``; ``vpp`` (both presets) or ``vpp-pkr55`` / ``vpp-pkr40``; ``svit``, ``dynamicvit``,
            ``evit``, ``tome`` (one row per goal PKR) or ``<method>@<pkr>`` (e.g. ``svit@0.40``).
        goal_pkrs: goal PKRs (fractions) for baselines named without ``@``; VPP presets map to the nearest
            goal (``pkr55`` -> the larger ones, ``pkr40`` -> the smaller).
        num_patches: N (needed for ToMe's r).

    Returns:
        list of :class:`MethodSpec`, dense first, in the order given.

    Raises:
        ValueError: unknown name, a PKR outside (0.25, 1], or ToMe without ``num_patches``.
    """
    specs: list[MethodSpec] = []
    vpp_presets = {"pkr55": nominal_pkr("pkr55"), "pkr40": nominal_pkr("pkr40")}
    for raw in names:
        key = raw.lower().strip()
        if key == "dense":
            specs.append(MethodSpec("dense", "dense", 1.0, {}))
            continue
        if key in ("vpp", "vpp-pkr55", "vpp-pkr40"):
            presets = ["pkr55", "pkr40"] if key == "vpp" else [key.split("-")[1]]
            if key == "vpp" and goal_pkrs:
                presets = sorted({min(vpp_presets, key=lambda p: abs(vpp_presets[p] - g)) for g in goal_pkrs},
                                 key=lambda p: -vpp_presets[p])
            for p in presets:
                specs.append(MethodSpec(f"vpp-{p}", "vpp", vpp_presets[p], {"schedule": p, "inference_noise": False}))
            continue
        method, _, at = key.partition("@")
        if method not in METHOD_NAMES:
            raise ValueError(f"unknown benchmark method {raw!r}; choose from dense, vpp, vpp-pkr55, vpp-pkr40, svit, "
                             f"dynamicvit, evit, tome (optionally <method>@<pkr>)")
        pkrs = [float(at)] if at else list(goal_pkrs)
        for g in pkrs:
            if not 0.25 < g <= 1.0:
                raise ValueError(f"goal PKR {g} of {raw!r} must be a fraction in (0.25, 1]")
            label = f"{method}@{g:.3f}"
            if method == "svit":
                targets, _ = svit_targets_for_pkr(g)
                specs.append(MethodSpec(label, method, g, {"targets": [round(t, 6) for t in targets],
                                                           "inference_noise": False}))
            elif method == "dynamicvit":
                specs.append(MethodSpec(label, method, g, {"rho": round(_stage_rho(g), 6), "inference_noise": False}))
            elif method == "evit":
                r = round(_stage_rho(g), 6)
                specs.append(MethodSpec(label, method, g, {"keep_rates": {3: r, 6: r, 9: r}}))
            elif method == "tome":
                if num_patches is None:
                    raise ValueError("ToMe needs num_patches to solve r for a goal PKR")
                specs.append(MethodSpec(label, method, g, {"r": tome_r_for_pkr(num_patches, g)}))
    # dense first (the reference of every speed-up), keep the rest in order, drop duplicates
    uniq = list({s.name: s for s in specs}.values())
    return sorted(uniq, key=lambda s: s.method != "dense")


def spec_pruner(spec: MethodSpec, dim: int = 64) -> Pruner:
    """The method's real pruner, built from ``spec.params`` (its constructor arguments) in eval mode.

    Args:
        spec: the configuration.
        dim: token width C of the backbone (the nominal counts do not depend on it).

    Raises:
        ValueError: unknown method.
    """
    kw = dict(spec.params)
    if spec.method == "evit":   # JSON turns the block keys into strings
        kw["keep_rates"] = {int(k): float(v) for k, v in kw["keep_rates"].items()}
    return build_pruner(spec.method, dim, **kw).eval()


def nominal_counts(spec: MethodSpec, num_patches: int, depth: int = 12) -> list[int]:
    """Patch tokens each block processes when the method meets its targets exactly (blocks 0..depth-1), as
    the integer counts the benchmark's masks impose.

    The pruner's own :meth:`~vppkit.models.pruning.base.Pruner.nominal_counts` (tokens entering each block's
    attention), rounded to the nearest integer (at least 1) where the pruner gives a fractional expected count:

    - VPP (non-first frame): ``floor(N m)`` at blocks 1-2 (Map-SM top-k), ``round(N m rho^i)`` from the SMs on
      (their count is dynamic; the nominal count is the target);
    - SViT: ``round(N t_b)`` per gated block (dynamic count; targets from ``svit_targets_for_pkr``);
    - DynamicViT: ``floor(N rho^s)`` (its own top-k count); EViT: ``ceil(rate * K_prev)`` (its own rule, no
      fused token);
    - ToMe: tokens entering each block (``n_{b+1} = n_b - min(r, n_b // 2)``); dense: N.

    Raises:
        ValueError: unknown method, or a depth that does not fit the method's layout.
    """
    counts = spec_pruner(spec).nominal_counts(num_patches, depth)
    # exact counts stay as they are (a fixed-count pruner may keep 0 tokens on a tiny grid); expected ones round
    return [int(c) if float(c).is_integer() else max(1, int(round(c))) for c in counts.attn]


def nominal_masks(spec: MethodSpec, num_patches: int, batch: int, depth: int = 12, seed: int = 0,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Random keep masks with exactly :func:`nominal_counts` kept tokens per block, per sample.

    Nested (a token pruned stays pruned) for VPP, DynamicViT, EViT; independent per block for SViT
    (reactivation). Each sample draws its own random tokens (same counts: gathered batches need no padding).

    Returns:
        (batch, depth, N) bool.

    Raises:
        ValueError: for ToMe (merging has no keep masks).
    """
    if spec.method == "tome":
        raise ValueError("ToMe merges tokens: it has no keep masks (time the real ToMePruner)")
    counts = nominal_counts(spec, num_patches, depth)
    g = torch.Generator().manual_seed(seed)
    nested = spec.method in ("vpp", "dynamicvit", "evit", "dense")
    masks = torch.zeros(batch, depth, num_patches, dtype=torch.bool)
    for i in range(batch):
        order = torch.randperm(num_patches, generator=g)     # nested: keep a prefix of one random order
        for b, k in enumerate(counts):
            if not nested:
                order = torch.randperm(num_patches, generator=g)
            masks[i, b, order[:k]] = True
    return masks.to(device)


def build_method_pruner(spec: MethodSpec, dim: int, variant: str, masks: torch.Tensor | None) -> Pruner | None:
    """Pruner to time for ``spec`` and ``variant`` (``"schedule"`` or ``"real"``; see module docstring).

    Returns None for dense. For ``schedule`` an :class:`ExternalMaskPruner` (masks go through ``state``);
    for ``real``: VPP / SViT wrapped in :class:`ForcedSchedulePruner` with ``masks``; DynamicViT, EViT, ToMe
    unwrapped (their inference counts are their nominal counts). ToMe has only the real variant.

    Raises:
        ValueError: unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if spec.method == "dense":
        return None
    if variant == "schedule" and spec.method != "tome":
        return ExternalMaskPruner()
    pruner = spec_pruner(spec, dim)
    if spec.method in ("vpp", "svit"):
        if masks is None:
            raise ValueError(f"{spec.method}: the real variant needs the nominal masks to impose")
        return ForcedSchedulePruner(pruner, masks).eval()
    return pruner


@dataclass
class ModelCase:
    """One benchmarked model.

    Attributes:
        label: table title.
        arch: ``vppkit.models.vit.ARCHS`` name.
        img_size: (H, W) input.
        methods: method names for :func:`resolve_methods`.
        batches: batch sizes.
        repeats: timed forwards per (row, batch) (median reported); ``repeats_by_batch`` overrides per batch.
        warmup: untimed forwards per (row, batch) first.
        parts: ``"backbone"`` and/or ``"whole"`` (backbone + VIS head).
        variants: ``"schedule"`` and/or ``"real"``.
        variants_by_family: per method family (``vpp``, ``svit``, ...) a narrower variant list (saves time).
        head: VIS head sizes (``dim``, ``num_queries``, ``dec_layers``, ``heads``, ``num_classes``).
        goal_pkrs: goal PKRs for the baselines.
    """

    label: str
    arch: str
    img_size: tuple[int, int]
    methods: tuple[str, ...] = ("dense", "vpp", "svit", "dynamicvit", "evit", "tome")
    batches: tuple[int, ...] = (1, 8)
    repeats: int = 3
    repeats_by_batch: dict = field(default_factory=dict)
    warmup: int = 1
    parts: tuple[str, ...] = ("backbone",)
    variants: tuple[str, ...] = VARIANTS
    variants_by_family: dict = field(default_factory=dict)
    head: dict = field(default_factory=dict)
    goal_pkrs: tuple[float, ...] = DEFAULT_GOAL_PKRS
