"""Speed benchmark: dense vs pruned ViT backbones (and whole VIS model), realized vs ideal speed-up.

What is timed (docs/contracts.md; issue 5 "Cost"):

- **backbone**: :class:`vppkit.models.vit.PrunableViT` in eval mode = **gathered execution** (kept tokens are
  gathered, the block runs on them, results are scattered back), under ``torch.inference_mode()``;
- **whole**: backbone + VIS head (:class:`vppkit.models.vis.model.VISModel`: pyramid + query decoder);
- per frame: ``ms/frame = median over repeats of (wall time of one batched forward) / batch``, after warm-up
  calls; input tensors are created before timing (data loading excluded); on CUDA the device is synchronised
  before reading the clock. Gumbel noise is **off** (deterministic inference switch ``inference_noise=False``).

Untrained pruners do not meet their keep targets (VPP's SMs keep far fewer tokens untrained, SViT's gates far
more or fewer), and speed depends on the kept-token schedule, so every pruned row runs the method's
**nominal schedule** (its per-block kept counts when all targets are met). Two variants per method:

- ``schedule``: :class:`~vppkit.models.pruning.base.ExternalMaskPruner` with random keep masks that have exactly
  the nominal per-block counts (same count for every sample: no padding). Times the gathered execution of the
  schedule only; **no pruner modules run** (their overhead is excluded from time and GMACs).
- ``real``: the method's real pruner modules run (VPP: Map-SM N x N association on a state from the previous
  frame + SM gates; SViT: 9 gates; DynamicViT: predictors; EViT: explicit attention maps; ToMe: matching).
  Methods whose inference count is fixed by construction (VPP's Map-SM top-k, DynamicViT top-k, EViT top-k,
  ToMe's r) keep their own decisions where exact; the dynamic gates (VPP's SMs, SViT's gates) run but their
  decision is replaced by the nominal-count mask (:class:`ForcedSchedulePruner`), so time and GMACs include
  the modules' overhead at the nominal schedule.

Speed-ups: ``measured = dense ms / pruned ms``; ``ideal = dense GMACs / pruned GMACs`` with GMACs from the
analytic counter :mod:`vppkit.flops.analytic` (matrix products only; ``real`` rows include the pruner overhead
from ``KeepRecord.overhead_macs``; whole-model rows add the VIS head's MACs, measured once with
:func:`vppkit.flops.measure.count_macs`); ``realized/ideal = measured / ideal``. The realised PKR of what was
timed is read back from the KeepRecord of the timed forward.

Also here: :func:`block_breakdown` (where the time of the gathered path goes: per-block gather/scatter vs block
compute, pad vs loop with unequal counts, pruner modules) and :func:`memory_vs_length` (peak memory of online
inference for two video lengths, each in a fresh subprocess: ``ru_maxrss`` on CPU,
``torch.cuda.max_memory_allocated`` on GPU).

Timings are wall-clock and depend on machine load: reports record ``os.getloadavg()`` before and after.
Speed goals live in the report (:data:`TARGETS`), never in tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from vppkit.config import img_size_hw
from vppkit.models.pruning.base import ExternalMaskPruner, PruneContext, Pruner

__all__ = [
    "MethodSpec", "ModelCase", "TARGETS", "DEFAULT_GOAL_PKRS", "METHOD_NAMES", "resolve_methods",
    "nominal_counts", "nominal_masks", "tome_r_for_pkr", "ForcedSchedulePruner", "build_method_pruner",
    "time_calls", "synchronize", "run_speed_benchmark", "block_breakdown", "memory_vs_length",
    "summarize_memory", "default_suite", "run_suite", "render_markdown", "write_report", "machine_info",
]

METHOD_NAMES = ("dense", "vpp", "svit", "dynamicvit", "evit", "tome")
VARIANTS = ("schedule", "real")


def _vpp_nominal(preset: str) -> float:
    from vppkit.models.pruning.schedules import nominal_pkr
    return nominal_pkr(preset)


DEFAULT_GOAL_PKRS = (round(_vpp_nominal("pkr55"), 4), round(_vpp_nominal("pkr40"), 4))
"""Goal PKRs (fractions) of the benchmark: the nominal PKRs of VPP's presets pkr55 (0.5417) and pkr40 (0.4133);
baselines are set to the same nominal PKR so rows at one goal are comparable."""

TARGETS = {"method": "vpp-pkr40", "variant": "real", "part": "backbone",
           "realized_over_ideal": {1: 0.75, 8: 0.90}}
"""Speed goals (issue 5): VPP at goal PKR 40 %, realized/ideal >= 0.9 at batch 8 and >= 0.75 at batch 1."""


# ---------------------------------------------------------------------------------------------------------
# methods and their nominal schedules
# ---------------------------------------------------------------------------------------------------------
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
    from vppkit.models.pruning.svit import svit_targets_for_pkr
    return svit_targets_for_pkr(pkr)[1]


def tome_r_for_pkr(num_patches: int, pkr: float, depth: int = 12) -> int:
    """ToMe's tokens merged per block r whose PKR (mean over blocks of tokens entering block / N) is nearest ``pkr``.

    Follows :class:`vppkit.models.pruning.tome.ToMePruner`: block b merges ``min(r, n_b // 2)`` of the n_b patch
    tokens entering it. Raises ValueError when ``pkr`` is not in (0, 1].
    """
    if not 0.0 < pkr <= 1.0:
        raise ValueError(f"pkr must be a fraction in (0, 1], got {pkr}")

    def pkr_of(r: int) -> float:
        n, tot = num_patches, 0
        for _ in range(depth):
            tot += n
            n -= min(r, n // 2)
        return tot / (depth * num_patches)

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
    vpp_presets = {"pkr55": _vpp_nominal("pkr55"), "pkr40": _vpp_nominal("pkr40")}
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
                from vppkit.models.pruning.svit import svit_targets_for_pkr
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


def nominal_counts(spec: MethodSpec, num_patches: int, depth: int = 12) -> list[int]:
    """Patch tokens each block processes when the method meets its targets exactly (blocks 0..depth-1).

    - VPP (non-first frame): ``floor(N m)`` at blocks 1-2 (Map-SM top-k), ``round(N m rho^i)`` from the SMs on
      (their count is dynamic; the nominal count is the target);
    - SViT: ``round(N t_b)`` per gated block (dynamic count; targets from ``svit_targets_for_pkr``);
    - DynamicViT: ``floor(N rho^s)`` (its own top-k count); EViT: ``ceil(rate * K_prev)`` (its own rule);
    - ToMe: tokens entering each block (``n_{b+1} = n_b - min(r, n_b // 2)``); dense: N.

    Raises:
        ValueError: unknown method.
    """
    n = num_patches
    if spec.method == "dense":
        return [n] * depth
    if spec.method == "vpp":
        from vppkit.models.pruning.schedules import VPPSchedule, keep_count
        s = VPPSchedule.preset(spec.params.get("schedule", "pkr55"))
        fr = s.block_keep_fractions(first_frame=False)
        out = []
        for b, f in enumerate(fr):
            if b == 0:
                out.append(n)
            elif b < s.sm_blocks[0]:
                out.append(keep_count(n, f))
            else:
                out.append(max(1, int(round(n * f))))
        return out
    if spec.method == "svit":
        t = spec.params["targets"]
        return [n] * (depth - len(t)) + [max(1, int(round(n * v))) for v in t]
    if spec.method == "dynamicvit":
        rho = spec.params["rho"]
        return [int(math.floor(n * rho ** sum(1 for loc in (3, 6, 9) if b >= loc) + 1e-9)) for b in range(depth)]
    if spec.method == "evit":
        rates = {int(k): float(v) for k, v in spec.params["keep_rates"].items()}
        out, k = [], n
        for b in range(depth):
            if b in rates:
                k = int(math.ceil(k * rates[b] - 1e-9))
            out.append(k)
        return out
    if spec.method == "tome":
        r, out, k = int(spec.params["r"]), [], n
        for _ in range(depth):
            out.append(k)
            k -= min(r, k // 2)
        return out
    raise ValueError(f"unknown method {spec.method!r}")


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


class ForcedSchedulePruner(Pruner):
    """Runs a real pruner's modules through the Pruner protocol but imposes given keep masks.

    Every hook of ``inner`` is called (so its gates, Map-SM association, attention requests and temporal state
    cost what they cost at inference), then the keep mask returned to the backbone is ``masks[:, b]``: the
    kept-token schedule is exactly the nominal one even for untrained gates. Composition through the public
    protocol; ``inner`` is not modified.

    Args:
        inner: the real pruner (eval mode, deterministic).
        masks: (B, depth, N) bool keep masks in force at each block (e.g. :func:`nominal_masks`).
    """

    def __init__(self, inner: Pruner, masks: torch.Tensor) -> None:
        super().__init__(inference_noise=inner.inference_noise)
        self.inner = inner
        self.masks = masks
        self.name = f"{inner.name}+forced"
        self.needs_attention = inner.needs_attention

    def begin(self, x0: torch.Tensor, grid: tuple[int, int], state: Any = None) -> PruneContext:
        ctx = self.inner.begin(x0, grid, state)
        if self.masks.shape[0] != ctx.batch or self.masks.shape[2] != ctx.num_patches:
            raise ValueError(f"ForcedSchedulePruner: masks {tuple(self.masks.shape)} do not fit batch {ctx.batch}, "
                             f"N={ctx.num_patches}")
        return ctx

    def before_block(self, b: int, x: torch.Tensor, keep: torch.Tensor, ctx: PruneContext) -> torch.Tensor:
        self.inner.before_block(b, x, keep, ctx)          # the module runs; its decision is replaced
        return self.masks[:, b].to(x.dtype)

    def after_block(self, b, x, keep, ctx, attn=None) -> None:
        self.inner.after_block(b, x, keep, ctx, attn)

    def finish(self, ctx: PruneContext):
        return self.inner.finish(ctx)

    def extra_meta(self) -> dict:
        return {"forced_schedule": True, **self.inner.extra_meta()}


def build_method_pruner(spec: MethodSpec, dim: int, variant: str, masks: torch.Tensor | None) -> Pruner | None:
    """Pruner to time for ``spec`` and ``variant`` (``"schedule"`` or ``"real"``; see module docstring).

    Returns None for dense. For ``schedule`` an :class:`ExternalMaskPruner` (masks go through ``state``);
    for ``real``: VPP / SViT wrapped in :class:`ForcedSchedulePruner` with ``masks``; DynamicViT, EViT, ToMe
    unwrapped (their inference counts are their nominal counts). ToMe has only the real variant.

    Raises:
        ValueError: unknown variant.
    """
    from vppkit.models.pruning import build_pruner

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if spec.method == "dense":
        return None
    if variant == "schedule" and spec.method != "tome":
        return ExternalMaskPruner()
    kw = dict(spec.params)
    if spec.method == "evit":
        kw["keep_rates"] = {int(k): float(v) for k, v in kw["keep_rates"].items()}
    pruner = build_pruner(spec.method, dim, **kw).eval()
    if spec.method in ("vpp", "svit"):
        if masks is None:
            raise ValueError(f"{spec.method}: the real variant needs the nominal masks to impose")
        return ForcedSchedulePruner(pruner, masks).eval()
    return pruner


# ---------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------
def synchronize(device: str | torch.device) -> None:
    """Wait for queued kernels on CUDA (no-op on CPU) so that wall-clock timings are complete."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
               device: str | torch.device = "cpu") -> dict[str, list[float]]:
    """Time several callables, interleaved (so load changes hit all of them alike).

    Args:
        fns: name -> zero-argument callable (one forward).
        repeats: timed calls per callable (>= 1).
        warmup: untimed calls per callable first.
        device: synchronised before and after each call.

    Returns:
        name -> list of ``repeats`` wall times in **seconds**.

    Raises:
        ValueError: ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            out[k].append(time.perf_counter() - t0)
    return out


def machine_info(device: str | torch.device = "cpu") -> dict:
    """Device, torch version, threads, CPU count and the 1/5/15-min load average (``os.getloadavg``)."""
    dev = torch.device(device)
    info = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    try:
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        info["loadavg"] = None
    return info


# ---------------------------------------------------------------------------------------------------------
# GMACs of what was timed
# ---------------------------------------------------------------------------------------------------------
def _record_macs(spec_vit, record, method: str) -> dict:
    """Analytic MACs per frame of a timed forward from its KeepRecord (mean over the batch)."""
    from vppkit.flops.analytic import TokenSchedule, backbone_macs, ratio_schedule, tome_matching_macs

    n = record.num_patches
    counts = record.counts.double().mean(0).tolist()
    if method == "tome":
        mlp = [float(v) for v in record.meta.get("mlp_counts", counts)]
        sched = TokenSchedule(tuple(counts), tuple(mlp), n, "tome")
        over = sum(tome_matching_macs(a + spec_vit.num_prefix, spec_vit.embed_dim, spec_vit.num_heads)
                   for a, m in zip(counts, mlp) if m < a)
    else:
        sched = ratio_schedule(n, [c / n for c in counts], method)
        over = float(record.overhead_macs.double().mean())
    bm = backbone_macs(spec_vit, sched, overhead_macs=over)
    return {"backbone_GMACs": bm.backbone / 1e9, "overhead_GMACs": bm.overhead / 1e9, "total_GMACs": bm.total / 1e9,
            "pkr": sum(counts) / (len(counts) * n), "block_counts": [round(c, 2) for c in counts]}


def _head_gmacs(vis_model, images: torch.Tensor) -> float:
    """MACs per frame of the VIS head (pyramid + decoder) on dense backbone tokens, measured (torch counter).

    ``vis_model`` must have ``requires_grad`` off (FlopCounterMode's module tracker asserts on the decoder's
    no-grad views of parameters that require grad)."""
    from vppkit.flops.measure import count_macs

    with torch.inference_mode():
        bb = vis_model.backbone(vis_model.normalize(images))
    tokens = bb.tokens.clone()
    grid = tuple(bb.grid)

    def head(t: torch.Tensor):
        feats, levels = vis_model.pyramid(t, grid)
        return vis_model.decoder(feats, levels)["pred_logits"]

    return count_macs(vis_model, tokens, counter="torch", fn=head) / images.shape[0] / 1e9


# ---------------------------------------------------------------------------------------------------------
# the benchmark of one model
# ---------------------------------------------------------------------------------------------------------
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


def run_speed_benchmark(case: ModelCase, device: str | torch.device = "cpu", seed: int = 0,
                        log: Callable[[str], None] | None = None) -> dict:
    """Time dense vs every method of ``case`` at its nominal schedule (backbone and/or whole model).

    Args:
        case: the model and settings.
        device: ``"cpu"`` or ``"cuda"`` (same code; synchronised before timing).
        seed: weights, images and masks.
        log: optional progress printer.

    Returns:
        dict with ``case``, ``grid``, ``num_patches``, ``methods`` (specs), ``head_GMACs`` and ``rows``: one per
        (part, method, variant, batch) with ``ms_per_frame`` (median), ``times_ms`` (all repeats, per frame),
        ``realised_pkr``, ``GMACs`` (per frame, incl. overhead for ``real``), ``overhead_GMACs``,
        ``speedup_measured``, ``speedup_ideal``, ``realized_over_ideal``.
    """
    from vppkit.flops.analytic import ViTSpec
    from vppkit.models.vit import PrunableViT, build_backbone

    log = log or (lambda s: None)
    torch.manual_seed(seed)
    dense = build_backbone(case.arch, img_size=tuple(case.img_size)).eval().to(device)
    grid = dense.grid_for(*case.img_size)
    n = grid[0] * grid[1]
    depth = dense.depth
    spec_vit = ViTSpec.from_timm(dense.vit, name=case.arch)
    specs = resolve_methods(case.methods, case.goal_pkrs, num_patches=n)
    if not specs or specs[0].method != "dense":
        specs.insert(0, MethodSpec("dense", "dense", 1.0, {}))
    heads = None
    if "whole" in case.parts:
        from vppkit.models.vis.model import VISModel
        h = {"dim": 64, "num_queries": 10, "dec_layers": 3, "heads": 4, "num_classes": 40, **case.head}
        heads = h

        def make_vis(backbone):
            torch.manual_seed(seed + 1)   # same head weights for every method
            return VISModel(backbone, int(h["num_classes"]), dim=int(h["dim"]), num_queries=int(h["num_queries"]),
                            dec_layers=int(h["dec_layers"]), heads=int(h["heads"])
                            ).eval().requires_grad_(False).to(device)

    rows: list[dict] = []
    head_gmacs = None
    g = torch.Generator().manual_seed(seed)
    for bsz in case.batches:
        images = torch.rand(bsz, 3, *case.img_size, generator=g).to(device)
        fns: dict[tuple, Callable] = {}
        last: dict[tuple, Any] = {}
        for spec in specs:
            masks = None if spec.method in ("dense", "tome") else nominal_masks(spec, n, bsz, depth, seed, device)
            wanted = case.variants_by_family.get(spec.method, case.variants)
            variants = ["dense"] if spec.method == "dense" else [
                v for v in wanted if not (spec.method == "tome" and v == "schedule")]
            if spec.method == "tome" and "real" not in variants:
                variants = ["real"]
            for variant in variants:
                pruner = None if variant == "dense" else build_method_pruner(spec, dense.embed_dim, variant, masks)
                if pruner is not None:
                    pruner = pruner.to(device)
                bb = dense if pruner is None else PrunableViT(dense.vit, pruner).eval()
                ext_state = masks if isinstance(pruner, ExternalMaskPruner) else None
                for part in case.parts:
                    model = bb if part == "backbone" else make_vis(bb)
                    key = (part, spec.name, variant)
                    fns[key] = _make_forward(model, part, images, ext_state, spec.method, key, last)
                    if part == "whole" and head_gmacs is None and spec.method == "dense":
                        head_gmacs = _head_gmacs(model, images[:1])
        reps = int(case.repeats_by_batch.get(bsz, case.repeats))
        log(f"{case.label}: batch {bsz}: {len(fns)} configurations x ({case.warmup} warm-up + {reps} timed)")
        with torch.inference_mode():
            for key, fn in fns.items():     # a first call per row: VPP gets its temporal state
                fn()
            times = time_calls(fns, reps, max(0, case.warmup - 1), device)
        for key, ts in times.items():
            part, name, variant = key
            spec = next(s for s in specs if s.name == name)
            rec = last[key]
            macs = _record_macs(spec_vit, rec, spec.method)
            per_frame = [1000.0 * t / bsz for t in ts]
            gm = macs["total_GMACs"] + ((head_gmacs or 0.0) if part == "whole" else 0.0)
            rows.append({"part": part, "method": name, "family": spec.method, "variant": variant, "batch": bsz,
                         "goal_pkr": spec.goal_pkr, "realised_pkr": macs["pkr"], "GMACs": gm,
                         "backbone_GMACs": macs["backbone_GMACs"], "overhead_GMACs": macs["overhead_GMACs"],
                         "ms_per_frame": statistics.median(per_frame), "ms_per_frame_min": min(per_frame),
                         "times_ms": [round(t, 3) for t in per_frame],
                         "block_counts": macs["block_counts"]})
    _add_speedups(rows)
    return {"case": {**asdict(case), "img_size": list(case.img_size)}, "grid": list(grid), "num_patches": n,
            "methods": [asdict(s) for s in specs], "head": heads, "head_GMACs": head_gmacs, "rows": rows,
            "machine": machine_info(device)}


def _make_forward(model, part: str, images, ext_state, method: str, key, last: dict) -> Callable[[], None]:
    """One forward of ``model``; VPP carries its temporal state across calls (non-first frames are timed)."""
    holder = {"state": None}

    def fn() -> None:
        state = ext_state if ext_state is not None else holder["state"]
        out = model(images, state)
        bb = out if part == "backbone" else out.backbone
        if ext_state is None and method == "vpp":
            holder["state"] = bb.state.detach() if bb.state is not None else None
        last[key] = bb.keep

    return fn


def _add_speedups(rows: list[dict]) -> None:
    """measured = dense ms / ms, ideal = dense GMACs / GMACs, realized/ideal = measured / ideal (in place)."""
    ref = {(r["part"], r["batch"]): r for r in rows if r["family"] == "dense"}
    for r in rows:
        d = ref.get((r["part"], r["batch"]))
        if d is None:
            continue
        r["speedup_measured"] = d["ms_per_frame"] / r["ms_per_frame"]
        r["speedup_ideal"] = d["GMACs"] / r["GMACs"]
        r["realized_over_ideal"] = r["speedup_measured"] / r["speedup_ideal"]
        if "ms_per_frame_min" in r and "ms_per_frame_min" in d:   # robust to load spikes: min over repeats
            r["realized_over_ideal_min"] = d["ms_per_frame_min"] / r["ms_per_frame_min"] / r["speedup_ideal"]


# ---------------------------------------------------------------------------------------------------------
# where the time goes (gathered path)
# ---------------------------------------------------------------------------------------------------------
def block_breakdown(arch: str, img_size: Sequence[int], method: str = "vpp-pkr40", batches: Sequence[int] = (1, 8),
                    repeats: int = 3, device: str | torch.device = "cpu", seed: int = 0, spread: float = 0.25,
                    log: Callable[[str], None] | None = None) -> dict:
    """Per-block timing of the gathered path for one method's nominal schedule (ms per frame).

    For each distinct kept count K of the schedule (blocks grouped), one block of the backbone is timed:

    - ``dense_block``: the block on all N (+ prefix) tokens;
    - ``compute_K``: the block on a contiguous (B, K + P, C) tensor (pure compute, no gather/scatter);
    - ``gathered``: :func:`vppkit.models.vit.run_block_gathered` (gather + block + scatter), equal counts;
    - ``gather_scatter = gathered - compute_K``;
    - ``mac_proportional = dense_block * MACs(K) / MACs(N)``: the time if compute scaled with MACs;
    - batch > 1 with unequal per-sample counts (K (1 +- ``spread``), same mean): ``pad`` and ``loop`` impls
      (padding waste vs lost batching).

    Also timed: the patch embedding + final norm (unpruned), and for VPP Map-SM (N x N association) and one SM.

    Returns:
        dict with ``groups`` (rows per (batch, K)), ``totals`` per batch (sums over the 12 blocks with
        multiplicity, ms/frame) and ``pruner_modules`` per batch.
    """
    from vppkit.flops.analytic import block_macs
    from vppkit.models.vit import build_backbone, run_block_gathered

    log = log or (lambda s: None)
    torch.manual_seed(seed)
    bb = build_backbone(arch, img_size=tuple(img_size)).eval().to(device)
    grid = bb.grid_for(*img_size)
    n, p, c = grid[0] * grid[1], bb.num_prefix_tokens, bb.embed_dim
    spec = [s for s in resolve_methods([method], num_patches=n) if s.method != "dense"][0]
    counts = nominal_counts(spec, n, bb.depth)
    groups: dict[int, list[int]] = {}
    for b, k in enumerate(counts):
        groups.setdefault(k, []).append(b)
    g = torch.Generator().manual_seed(seed)
    out_groups, totals, modules = [], {}, {}
    for bsz in batches:
        x = torch.randn(bsz, n + p, c, generator=g).to(device)
        fns: dict[tuple, Callable] = {}
        for k, blocks in groups.items():
            blk = bb.vit.blocks[blocks[0]]
            fns[(k, "dense_block")] = (lambda blk=blk: blk(x))
            xk = x[:, : k + p].contiguous()
            fns[(k, "compute_K")] = (lambda blk=blk, xk=xk: blk(xk))
            if k < n:
                keep = torch.zeros(bsz, n, device=device)
                for i in range(bsz):
                    keep[i, torch.randperm(n, generator=g)[:k].to(device)] = 1.0
                fns[(k, "gathered")] = (lambda blk=blk, keep=keep: run_block_gathered(blk, x, keep, p, impl="auto"))
                if bsz > 1:
                    ks = torch.linspace(k * (1 - spread), min(n, k * (1 + spread)), bsz).round().long()
                    ks = (ks + (k * bsz - int(ks.sum())) // bsz).clamp(1, n)
                    uneq = torch.zeros(bsz, n, device=device)
                    for i in range(bsz):
                        uneq[i, torch.randperm(n, generator=g)[: int(ks[i])].to(device)] = 1.0
                    fns[(k, "unequal_pad")] = (lambda blk=blk, u=uneq: run_block_gathered(blk, x, u, p, impl="pad"))
                    fns[(k, "unequal_loop")] = (lambda blk=blk, u=uneq: run_block_gathered(blk, x, u, p, impl="loop"))
        images = torch.rand(bsz, 3, *img_size, generator=g).to(device)
        fns[(0, "embed_norm")] = lambda: bb.vit.norm(bb.embed(images)[0])
        if spec.method == "vpp":
            from vppkit.models.pruning.vpp import VPPPruner
            pr = VPPPruner(c, spec.params["schedule"], inference_noise=False).eval().to(device)
            xs = [torch.randn(bsz, n, c, generator=g).to(device) for _ in range(3)]
            mprev = torch.rand(bsz, n, generator=g).to(device) < 0.4
            fns[(0, "map_sm")] = lambda: pr.map_sm(xs[0], xs[1], xs[2], mprev, grid, pr.schedule.m, noise=False)
            fns[(0, "sm")] = lambda: pr.sms[0](xs[0], None, noise=False)
        log(f"breakdown {arch} {method}: batch {bsz}: {len(fns)} timings x {repeats}")
        with torch.inference_mode():
            ts = time_calls(fns, repeats, 1, device)
        med = {key: 1000.0 * statistics.median(v) / bsz for key, v in ts.items()}
        tot = {"dense_blocks": 0.0, "compute_K": 0.0, "gathered": 0.0, "mac_proportional": 0.0,
               "unequal_pad": 0.0, "unequal_loop": 0.0}
        dense_ms = med[(n, "dense_block")] if (n, "dense_block") in med else None
        macs_n = block_macs(n + p, c)["total"]
        for k, blocks in groups.items():
            m = len(blocks)
            d_ms = med[(k, "dense_block")]
            comp = med[(k, "compute_K")]
            gat = med.get((k, "gathered"), comp)
            macp = (dense_ms if dense_ms is not None else d_ms) * block_macs(k + p, c)["total"] / macs_n
            row = {"batch": bsz, "kept": k, "fraction": k / n, "blocks": blocks, "dense_block_ms": d_ms,
                   "compute_K_ms": comp, "gathered_ms": gat, "gather_scatter_ms": gat - comp,
                   "mac_proportional_ms": macp}
            if (k, "unequal_pad") in med:
                row["unequal_pad_ms"] = med[(k, "unequal_pad")]
                row["unequal_loop_ms"] = med[(k, "unequal_loop")]
            out_groups.append(row)
            tot["dense_blocks"] += m * d_ms
            tot["compute_K"] += m * comp
            tot["gathered"] += m * gat
            tot["mac_proportional"] += m * macp
            tot["unequal_pad"] += m * row.get("unequal_pad_ms", gat)
            tot["unequal_loop"] += m * row.get("unequal_loop_ms", gat)
        tot["embed_norm"] = med[(0, "embed_norm")]
        tot["gather_scatter"] = tot["gathered"] - tot["compute_K"]
        totals[str(bsz)] = tot
        if spec.method == "vpp":
            modules[str(bsz)] = {"map_sm_ms": med[(0, "map_sm")], "sm_ms": med[(0, "sm")],
                                 "all_modules_ms": med[(0, "map_sm")] + 3 * med[(0, "sm")]}
    from vppkit.flops.analytic import ViTSpec, backbone_macs, ratio_schedule
    vs = ViTSpec.from_timm(bb.vit, name=arch)
    over = 0.0
    if spec.method == "vpp":
        from vppkit.models.pruning.vpp_modules import map_sm_macs, sm_macs
        over = map_sm_macs(n, c, counts[5]) + 3 * sm_macs(n, c)  # inference: keys = tokens kept at block 5
    ideal = (backbone_macs(vs, ratio_schedule(n, [1.0] * bb.depth)).total
             / backbone_macs(vs, ratio_schedule(n, [k / n for k in counts]), overhead_macs=over).total)
    return {"arch": arch, "img_size": list(img_size), "method": spec.name, "num_patches": n, "counts": counts,
            "ideal_speedup": ideal,
            "repeats": repeats, "spread": spread, "groups": out_groups, "totals": totals, "pruner_modules": modules,
            "machine": machine_info(device)}


# ---------------------------------------------------------------------------------------------------------
# memory vs video length
# ---------------------------------------------------------------------------------------------------------
class _SyntheticVideo:
    """A one-video stand-in for :class:`vppkit.data.video.VideoFrames` (the attributes ``infer_video``
    reads): random uint8 frames generated on the fly (nothing stored), so memory reflects the model only."""

    def __init__(self, num_frames: int, size: tuple[int, int], num_classes: int, seed: int = 0) -> None:
        self.size = size
        self.videos = [{"id": 1, "name": "synthetic", "height": size[0], "width": size[1],
                        "file_names": [f"{t:05d}.jpg" for t in range(num_frames)]}]
        self.category_ids = list(range(1, num_classes + 1))
        self.seed = seed

    def num_frames(self, vi: int) -> int:
        return len(self.videos[vi]["file_names"])

    def frame(self, vi: int, t: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + t)
        return torch.randint(0, 256, (3, *self.size), generator=g, dtype=torch.uint8)


def _memory_worker(frames: int, mode: str, mcfg: dict, pcfg: dict, device: str, num_classes: int) -> dict:
    """Run one video of ``frames`` frames online and return peak memory (in this process)."""
    dev = torch.device(device)
    size = tuple(mcfg["img_size"]) if isinstance(mcfg["img_size"], (list, tuple)) else (mcfg["img_size"],) * 2
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if mode == "online":
        from vppkit.engine.infer import infer_video
        from vppkit.models.vis.model import build_vis_model
        model = build_vis_model(mcfg, num_classes, {**pcfg, "inference_noise": False}).eval().to(dev)
        infer_video(model, _SyntheticVideo(2, size, num_classes), 0)          # warm-up (allocator, caches)
        base, reset = _current(dev), _reset_peak(dev)
        results, records = infer_video(model, _SyntheticVideo(frames, size, num_classes, seed=1), 0)
        n_out = len(records)
        del results, records
    elif mode == "state-chain":
        from vppkit.models.pruning.vpp import VPPPruner
        from vppkit.models.vit import PrunableViT, build_backbone
        bb = build_backbone(mcfg["arch"], img_size=size).eval().to(dev)
        bb = PrunableViT(bb.vit, VPPPruner(bb.embed_dim, pcfg.get("schedule", "pkr55"), inference_noise=False)
                         ).eval().to(dev)
        video = _SyntheticVideo(frames, size, num_classes, seed=1)
        with torch.inference_mode():
            state = None
            for t in range(2):
                state = bb(video.frame(0, t)[None].to(dev).float() / 255.0, state).state.detach()
            base, reset = _current(dev), _reset_peak(dev)
            state = None
            for t in range(frames):
                out = bb(video.frame(0, t)[None].to(dev).float() / 255.0, state)
                state = out.state.detach()
        n_out = frames
    else:
        raise ValueError(f"memory mode must be 'online' or 'state-chain', got {mode!r}")
    peak = _peak(dev)
    if dev.type == "cuda":
        measure = "torch.cuda.max_memory_allocated (reset after warm-up)"
    else:
        measure = ("peak RSS (VmHWM, reset after warm-up via /proc/self/clear_refs)" if reset else
                   "ru_maxrss (process peak RSS incl. start-up)")
    return {"frames": frames, "mode": mode, "device": str(dev), "frames_run": n_out,
            "peak_MiB": peak, "after_warmup_MiB": base, "growth_MiB": peak - base,
            "process_ru_maxrss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "measure": measure, "seconds": time.perf_counter() - t0}


def _peak(dev: torch.device) -> float:
    """Peak memory in MiB since the last :func:`_reset_peak`: CUDA allocator peak, else the process's peak RSS
    (``VmHWM`` of /proc/self/status, which :func:`_reset_peak` can lower; ``ru_maxrss`` where /proc is missing)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    hwm = _proc_status_kib("VmHWM")
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0  # KiB


def _current(dev: torch.device) -> float:
    """Memory in use now (MiB): CUDA allocated, else the resident set size."""
    if dev.type == "cuda":
        return torch.cuda.memory_allocated(dev) / 2 ** 20
    rss = _proc_status_kib("VmRSS")
    return (rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def _reset_peak(dev: torch.device) -> bool:
    """Reset the peak to the current usage (CUDA: reset_peak_memory_stats; Linux: ``echo 5 > clear_refs``).

    Returns False when the peak could not be reset (then the peak includes start-up)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_kib(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def memory_vs_length(lengths: Sequence[int] = (100, 1000), mcfg: dict | None = None, pcfg: dict | None = None,
                     modes: Sequence[str] = ("online", "state-chain"), device: str = "cpu", num_classes: int = 40,
                     timeout: float = 600.0, log: Callable[[str], None] | None = None) -> dict:
    """Peak memory of online inference vs video length, one fresh subprocess per (mode, length).

    Modes: ``online`` = :func:`vppkit.engine.infer.infer_video` (VIS model, VPP state and tracker carried frame
    to frame, per-frame outputs kept as RLEs + KeepRecords, as a real run); ``state-chain`` = backbone + VPP
    pruner only, ``TemporalState`` passed in and returned (detached), nothing else kept. Random frames.

    Args:
        lengths: video lengths in frames.
        mcfg: the ``model`` config section (arch, img_size, head sizes); default: the default profile's.
        pcfg: the ``pruning`` section (default ``{"method": "vpp", "schedule": "pkr55"}``).
        modes: which of the two to run.
        device: ``cpu`` (peak RSS via ``ru_maxrss``, MiB) or ``cuda`` (``max_memory_allocated``, MiB).
        timeout: seconds per subprocess.

    Returns:
        dict with ``runs`` (one per mode and length) and ``summary`` per mode: peaks, their difference
        (longest - shortest, MiB) and growth per 1000 frames.

    Raises:
        RuntimeError: a worker failed (its stderr tail in the message).
    """
    log = log or (lambda s: None)
    if mcfg is None:
        from vppkit.config import load_config
        mcfg = load_config("default")["model"]
    pcfg = pcfg or {"method": "vpp", "schedule": "pkr55"}
    runs = []
    for mode in modes:
        for t in lengths:
            log(f"memory: {mode}, {t} frames (subprocess)")
            arg = json.dumps({"frames": int(t), "mode": mode, "mcfg": mcfg, "pcfg": pcfg, "device": device,
                              "num_classes": num_classes})
            env = dict(os.environ)
            proc = subprocess.run([sys.executable, "-m", "vppkit.bench", "--memory-worker", arg], capture_output=True,
                                  text=True, timeout=timeout, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"memory worker ({mode}, {t} frames) failed: {proc.stderr[-2000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    summary = summarize_memory(runs)
    return {"lengths": list(lengths), "device": device, "model": mcfg, "pruning": pcfg, "runs": runs,
            "summary": summary}


def summarize_memory(runs: Sequence[dict]) -> dict:
    """Per mode: peaks of the shortest and longest video (MiB), their difference and the growth per 1000 frames."""
    summary = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        rs = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["frames"])
        if len(rs) >= 2:
            lo, hi = rs[0], rs[-1]
            diff = hi["peak_MiB"] - lo["peak_MiB"]
            summary[mode] = {"short_frames": lo["frames"], "long_frames": hi["frames"],
                             "peak_short_MiB": lo["peak_MiB"], "peak_long_MiB": hi["peak_MiB"], "diff_MiB": diff,
                             "growth_short_MiB": lo["growth_MiB"], "growth_long_MiB": hi["growth_MiB"],
                             "diff_per_1000_frames_MiB": 1000.0 * diff / max(1, hi["frames"] - lo["frames"])}
    return summary


# ---------------------------------------------------------------------------------------------------------
# suites, report
# ---------------------------------------------------------------------------------------------------------
def default_suite(cfg: dict | None = None, quick: bool = False) -> dict:
    """The ``make bench`` suite: DeiT-S at 384x640 and the profile's model; breakdown; memory settings.

    Args:
        cfg: a profile config (``model`` section read: arch, img_size, head sizes); default profile when None.
        quick: a tiny suite for tests (vit_nano, 32x48 / 48x48 inputs, batches 1 and 2, one repeat).

    Returns:
        ``{"cases": [ModelCase], "breakdown": {...} | None, "memory": {...} | None}``.
    """
    if cfg is None:
        from vppkit.config import load_config
        cfg = load_config("default")
    m = cfg["model"]
    img = img_size_hw(m["img_size"])
    head = {k: m[k] for k in ("dim", "num_queries", "dec_layers", "heads") if k in m}
    if quick:
        cases = [ModelCase("quick: vit_nano 32x48", "vit_nano", (32, 48), batches=(1, 2), repeats=1, warmup=1,
                           methods=("dense", "vpp-pkr40", "svit", "tome"), goal_pkrs=(DEFAULT_GOAL_PKRS[1],),
                           parts=("backbone", "whole"), variants_by_family={"tome": ("real",)},
                           head={"dim": 16, "num_queries": 4, "dec_layers": 1, "heads": 2, "num_classes": 3})]
        return {"cases": cases,
                "breakdown": {"arch": "vit_nano", "img_size": (32, 48), "method": "vpp-pkr40", "batches": (1, 2),
                              "repeats": 1},
                "memory": {"lengths": (3, 6), "mcfg": {"arch": "vit_nano", "img_size": [32, 32], "dim": 16,
                                                       "num_queries": 4, "dec_layers": 1, "heads": 2},
                           "modes": ("state-chain",)}}
    cases = [
        ModelCase("DeiT-S shape (vit_small, width 384, 6 heads), 384x640 input, N = 960", "vit_small", (384, 640),
                  methods=("dense", "vpp-pkr55", "vpp-pkr40", "svit", "dynamicvit", "evit", "tome"),
                  goal_pkrs=(DEFAULT_GOAL_PKRS[1],),
                  batches=(1, 8), repeats=3, repeats_by_batch={8: 2}, warmup=1, parts=("backbone",),
                  variants_by_family={f: ("real",) for f in ("svit", "dynamicvit", "evit", "tome")}),
        ModelCase(f"default profile model ({m['arch']}), {img[0]}x{img[1]} input", m["arch"], img,
                  batches=(1, 8), repeats=5, warmup=1, parts=("backbone", "whole"), head=head),
    ]
    return {"cases": cases,
            "breakdown": {"arch": "vit_small", "img_size": (384, 640), "method": "vpp-pkr40", "batches": (1, 8),
                          "repeats": 2},
            "memory": {"lengths": (100, 1000), "mcfg": dict(m), "modes": ("online", "state-chain")}}


def run_suite(suite: dict, device: str = "cpu", profile: str | None = None, seed: int = 0,
              pruning: dict | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run a suite from :func:`default_suite` (or built by hand) and return the report dict (JSON-able).

    The dict carries a ``header`` (profile, commit, time, device, torch, threads, load average before and after),
    ``models`` (one :func:`run_speed_benchmark` result per case), ``breakdown``, ``memory`` and ``targets``
    (the VPP goals checked against the measured rows; see :data:`TARGETS`).
    """
    from vppkit.utils.provenance import provenance

    log = log or (lambda s: None)
    t0 = time.perf_counter()
    header = {**provenance(profile, seed), **machine_info(device)}
    header["loadavg_start"] = header.pop("loadavg")
    header["inference"] = "deterministic (inference_noise=False), gathered execution, torch.inference_mode"
    models = [run_speed_benchmark(c, device, seed, log) for c in suite["cases"]]
    bd = None
    if suite.get("breakdown"):
        b = suite["breakdown"]
        bd = block_breakdown(b["arch"], tuple(b["img_size"]), b.get("method", "vpp-pkr40"),
                             tuple(b.get("batches", (1, 8))), int(b.get("repeats", 2)), device, seed, log=log)
    mem = None
    if suite.get("memory"):
        mm = suite["memory"]
        pc = dict(pruning or {"method": "vpp", "schedule": "pkr55"})
        pc["method"] = "vpp"
        pc = {k: v for k, v in pc.items() if k in ("method", "schedule")}
        mem = memory_vs_length(tuple(mm["lengths"]), mm.get("mcfg"), pc, tuple(mm.get("modes", ("online",))),
                               device, log=log)
    header["loadavg_end"] = machine_info(device)["loadavg"]
    header["seconds"] = round(time.perf_counter() - t0, 1)
    res = {"header": header, "models": models, "breakdown": bd, "memory": mem}
    res["targets"] = check_targets(res)
    return res


def check_targets(result: dict) -> list[dict]:
    """The VPP goals (:data:`TARGETS`) against the measured rows of every model: one entry per (model, batch)."""
    out = []
    for mres in result["models"]:
        for r in mres["rows"]:
            if (r["method"] == TARGETS["method"] and r["variant"] == TARGETS["variant"]
                    and r["part"] == TARGETS["part"] and r["batch"] in TARGETS["realized_over_ideal"]):
                goal = TARGETS["realized_over_ideal"][r["batch"]]
                out.append({"kind": "measured", "model": mres["case"]["label"], "batch": r["batch"], "goal": goal,
                            "realized_over_ideal": r.get("realized_over_ideal"),
                            "realized_over_ideal_min": r.get("realized_over_ideal_min"),
                            "met": r.get("realized_over_ideal") is not None and r["realized_over_ideal"] >= goal})
    bd = result.get("breakdown")
    if bd and bd.get("method") == TARGETS["method"]:
        for b, t in bd["totals"].items():
            mod = bd["pruner_modules"].get(b, {}).get("all_modules_ms", 0.0)
            dense_ms = t["embed_norm"] + t["dense_blocks"]
            pruned_ms = t["embed_norm"] + t["gathered"] + mod
            ideal = bd.get("ideal_speedup")
            if ideal and int(b) in TARGETS["realized_over_ideal"]:
                est = dense_ms / pruned_ms / ideal
                goal = TARGETS["realized_over_ideal"][int(b)]
                out.append({"kind": "estimate", "model": f"{bd['arch']} {bd['img_size'][0]}x{bd['img_size'][1]}: estimate from the "
                                     "per-block breakdown (sum of components)", "batch": int(b), "goal": goal,
                            "realized_over_ideal": est, "realized_over_ideal_min": None, "met": est >= goal})
    return out


def _f(v: Any, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def render_markdown(result: dict) -> str:
    """The human report (Markdown) of a :func:`run_suite` result."""
    h = result["header"]
    lines = ["# Speed benchmark: dense vs pruned ViT (gathered execution)", "",
             f"- profile: `{h.get('profile')}`, commit `{h.get('commit')}`, time {h.get('time_utc')}, "
             f"host `{h.get('host')}`",
             f"- device: {h.get('device')}{' (' + h['gpu'] + ')' if h.get('gpu') else ''}, torch {h.get('torch')}, "
             f"threads {h.get('threads')} (cpu_count {h.get('cpu_count')}, OMP_NUM_THREADS={h.get('omp_num_threads')})",
             f"- load average (1/5/15 min) at start {h.get('loadavg_start')}, at end {h.get('loadavg_end')}: "
             "the machine was shared, timings are noisy when the load exceeds the core count",
             f"- inference: {h.get('inference')}; benchmark wall time {h.get('seconds')} s", "",
             "How to read: `schedule` rows run the method's **nominal keep schedule** through "
             "`ExternalMaskPruner` (random masks with exactly the nominal per-block counts; no pruner module runs, "
             "no overhead in time or GMACs). `real` rows run the method's **real pruner modules** (VPP: Map-SM "
             "N x N association on the previous frame's state + 3 SMs; SViT: 9 gates; DynamicViT: 3 predictors; "
             "EViT: explicit attention maps; ToMe: matching); VPP's SMs and SViT's gates are untrained, so their "
             "decisions are replaced by the nominal-count masks after they run (time and GMACs include them). "
             "ms/frame = median over timed repeats of one batched forward / batch (warm-up excluded, inputs "
             "pre-built). GMACs per frame from `vppkit.flops.analytic` on the realised counts (+ pruner overhead "
             "for `real`; + VIS head measured with the torch counter for `whole`). measured = dense ms / ms; "
             "ideal = dense GMACs / GMACs; r/i = measured / ideal. Realised PKR = mean over the 12 blocks of the "
             "kept fraction in the timed forward (VPP: a non-first frame).", ""]
    for m in result["models"]:
        c = m["case"]
        lines += [f"## {c['label']}", "",
                  f"arch `{c['arch']}`, input {c['img_size'][0]}x{c['img_size'][1]}, grid {m['grid'][0]}x"
                  f"{m['grid'][1]} (N = {m['num_patches']}), repeats {c['repeats']} "
                  f"{('(per batch ' + str(c['repeats_by_batch']) + ')') if c.get('repeats_by_batch') else ''}, "
                  f"warm-up {c['warmup']}" + (f"; VIS head {m['head']}, {_f(m['head_GMACs'], 3)} GMACs/frame"
                                              if m.get("head") else ""), ""]
        batches = sorted({r["batch"] for r in m["rows"]})
        for part in [p for p in ("backbone", "whole") if any(r["part"] == p for r in m["rows"])]:
            lines.append(f"**{part}**" + (" (backbone + VIS head)" if part == "whole" else " only"))
            lines.append("")
            hdr = ["method", "variant", "goal PKR", "realised PKR", "GMACs/frame (overhead)"]
            for b in batches:
                hdr += [f"ms/frame b{b}", f"measured b{b}", f"ideal b{b}", f"r/i b{b}"]
            lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
            keys = list(dict.fromkeys((r["method"], r["variant"]) for r in m["rows"] if r["part"] == part))
            for name, variant in keys:
                rs = {r["batch"]: r for r in m["rows"] if r["part"] == part and r["method"] == name
                      and r["variant"] == variant}
                r0 = rs[batches[0]] if batches[0] in rs else next(iter(rs.values()))
                cells = [name, variant, f"{100 * r0['goal_pkr']:.1f} %", f"{100 * r0['realised_pkr']:.1f} %",
                         f"{r0['GMACs']:.3f} ({r0['overhead_GMACs']:.3f})"]
                for b in batches:
                    r = rs.get(b)
                    cells += ["–"] * 4 if r is None else [_f(r["ms_per_frame"], 1), _f(r.get("speedup_measured")),
                                                         _f(r.get("speedup_ideal")), _f(r.get("realized_over_ideal"))]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += _render_targets(result)
    if result.get("breakdown"):
        lines += _render_breakdown(result["breakdown"])
    if result.get("memory"):
        lines += _render_memory(result["memory"])
    return "\n".join(lines) + "\n"


def _render_targets(result: dict) -> list[str]:
    lines = ["## Targets (VPP at goal PKR 40 %: realized/ideal >= 0.9 at batch 8, >= 0.75 at batch 1)", ""]
    if not result.get("targets"):
        return lines + ["No `vpp-pkr40` / `real` / backbone row was measured in this run.", ""]
    lines += ["`real` variant, backbone only. r/i from the median of the repeats (the figure of record) and from the "
              "minimum (robust to load spikes on a shared machine); the last rows estimate r/i from the per-block "
              "breakdown (embed + gathered blocks + VPP modules vs embed + dense blocks; it ignores the Python "
              "glue between blocks).", "",
              "| model | batch | realized/ideal (median) | realized/ideal (min) | goal | met (median) |",
              "|---|---|---|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['model']} | {t['batch']} | {_f(t['realized_over_ideal'])} | "
                     f"{_f(t.get('realized_over_ideal_min'))} | {t['goal']} | {'yes' if t['met'] else '**no**'} |")
    lines.append("")
    return lines


def _render_breakdown(bd: dict) -> list[str]:
    lines = [f"## Where the time goes: {bd['method']} on `{bd['arch']}` {bd['img_size'][0]}x{bd['img_size'][1]} "
             f"(N = {bd['num_patches']}), ms/frame", "",
             f"Per distinct kept count K (blocks grouped), one block timed ({bd['repeats']} repeats, median). "
             "`compute_K` = the block on a contiguous K-token tensor; `gathered` = `run_block_gathered` "
             "(gather + block + scatter, equal counts per sample); `MAC-prop.` = dense block time x MACs(K) / "
             "MACs(N), what perfect scaling would give. `pad` / `loop`: per-sample counts K(1 +- "
             f"{bd['spread']}) with the same mean (what dynamic SMs produce in a batch).", "",
             "| batch | K | blocks | dense block | compute_K | gathered | gather+scatter | MAC-prop. | pad (unequal) "
             "| loop (unequal) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for g in bd["groups"]:
        lines.append(f"| {g['batch']} | {g['kept']} ({100 * g['fraction']:.0f} %) | {','.join(map(str, g['blocks']))} "
                     f"| {_f(g['dense_block_ms'])} | {_f(g['compute_K_ms'])} | {_f(g['gathered_ms'])} | "
                     f"{_f(g['gather_scatter_ms'])} | {_f(g['mac_proportional_ms'])} | {_f(g.get('unequal_pad_ms'))} "
                     f"| {_f(g.get('unequal_loop_ms'))} |")
    lines += ["", "Totals over the 12 blocks (ms/frame):", "",
              "| batch | dense blocks | MAC-prop. pruned | compute_K | gather+scatter | gathered | pad (unequal) | "
              "loop (unequal) | embed+norm | VPP modules (Map-SM + 3 SM) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for b, t in bd["totals"].items():
        mod = bd["pruner_modules"].get(b, {})
        lines.append(f"| {b} | {_f(t['dense_blocks'], 1)} | {_f(t['mac_proportional'], 1)} | {_f(t['compute_K'], 1)} "
                     f"| {_f(t['gather_scatter'], 1)} | {_f(t['gathered'], 1)} | {_f(t['unequal_pad'], 1)} | "
                     f"{_f(t['unequal_loop'], 1)} | {_f(t['embed_norm'], 1)} | "
                     f"{_f(mod.get('all_modules_ms'), 1)} (Map-SM {_f(mod.get('map_sm_ms'), 1)}) |")
    lines.append("")
    return lines


def _render_memory(mem: dict) -> list[str]:
    m = mem["model"]
    lines = ["## Peak memory of online inference vs video length", "",
             f"Model `{m.get('arch')}` at {m.get('img_size')}, pruning {mem['pruning']}, device {mem['device']}, "
             "random frames, one fresh subprocess per run; peak = "
             f"{mem['runs'][0]['measure'] if mem['runs'] else '?'}. `online` = `vppkit.engine.infer.infer_video` "
             "(VIS model + VPP state + tracker, per-frame RLEs and KeepRecords kept as a real run keeps them); "
             "`state-chain` = backbone + VPP only, TemporalState passed in and returned (detached). "
             "Peak = the high-water mark over the video, after a 2-frame warm-up video and a peak reset; "
             "growth = peak - memory in use after the warm-up; process ru_maxrss (includes start-up) for reference.",
             "", "| mode | frames | peak MiB | after warm-up MiB | growth MiB | process ru_maxrss MiB | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in mem["runs"]:
        lines.append(f"| {r['mode']} | {r['frames']} | {r['peak_MiB']:.1f} | {r['after_warmup_MiB']:.1f} | "
                     f"{r['growth_MiB']:.1f} | {_f(r.get('process_ru_maxrss_MiB'), 1)} | {r['seconds']:.1f} |")
    lines.append("")
    for mode, s in mem["summary"].items():
        lines.append(f"- {mode}: peak {s['peak_short_MiB']:.1f} MiB at {s['short_frames']} frames vs "
                     f"{s['peak_long_MiB']:.1f} MiB at {s['long_frames']} frames: difference {s['diff_MiB']:+.1f} MiB "
                     f"({s['diff_per_1000_frames_MiB']:+.2f} MiB per 1000 frames)")
    lines.append("")
    return lines


def write_report(result: dict, json_path: str | Path | None, md_path: str | Path | None) -> None:
    """Write the result JSON and/or the Markdown report (atomic, via :mod:`vppkit.utils.io`)."""
    from vppkit.utils.io import atomic_write_json, atomic_write_text

    if json_path is not None:
        atomic_write_json(json_path, result)
    if md_path is not None:
        atomic_write_text(md_path, render_markdown(result))


def _main(argv: list[str] | None = None) -> int:
    """``python -m vppkit.bench --memory-worker JSON``: one memory run (used by :func:`memory_vs_length`)."""
    ap = argparse.ArgumentParser(prog="python -m vppkit.bench")
    ap.add_argument("--memory-worker", required=True)
    a = ap.parse_args(argv)
    kw = json.loads(a.memory_worker)
    print(json.dumps(_memory_worker(kw["frames"], kw["mode"], kw["mcfg"], kw["pcfg"], kw["device"],
                                    int(kw["num_classes"]))))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
