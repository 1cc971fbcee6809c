"""The speed benchmark of one model: dense vs every method at its nominal schedule, backbone and/or whole model.

Rows per (part, method, variant, batch): ms/frame (median over repeats of one batched forward / batch), the
realised PKR and GMACs of the timed forward (from its KeepRecord and :mod:`vppkit.flops.analytic`), measured and
ideal speed-ups and their ratio (see :mod:`vppkit.bench`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict
from typing import Any, Callable

import torch
from timm.models.vision_transformer import Block

from vppkit.bench.specs import MethodSpec, ModelCase, build_method_pruner, nominal_masks, resolve_methods
from vppkit.bench.timing import count_torch_ops, loadavg, machine_info, summarize, time_calls
from vppkit.flops.analytic import TokenSchedule, ViTSpec, backbone_macs, ratio_schedule, tome_matching_macs
from vppkit.flops.measure import count_macs
from vppkit.models.pruning.base import ExternalMaskPruner, mask_change_points
from vppkit.models.records import KeepRecord
from vppkit.models.vis.model import VISModel
from vppkit.models.vit import PrunableViT, build_backbone

__all__ = ["run_speed_benchmark", "ceiling_forward"]


def _record_macs(spec_vit, record, method: str) -> dict:
    """Analytic MACs per frame of a timed forward from its KeepRecord (mean over the batch)."""
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
    with torch.inference_mode():
        bb = vis_model.backbone(vis_model.normalize(images))
    tokens = bb.tokens.clone()
    grid = tuple(bb.grid)

    def head(t: torch.Tensor):
        feats, levels = vis_model.pyramid(t, grid)
        return vis_model.decoder(feats, levels)["pred_logits"]

    return count_macs(vis_model, tokens, counter="torch", fn=head) / images.shape[0] / 1e9


def run_speed_benchmark(case: ModelCase, device: str | torch.device = "cpu", seed: int = 0,
                        log: Callable[[str], None] | None = None, autocast: str | None = None,
                        compile_blocks: bool = False) -> dict:
    """Time dense vs every method of ``case`` at its nominal schedule (backbone and/or whole model), and the
    ceiling rows (:func:`ceiling_forward`) of the families in ``case.ceiling``.

    Args:
        case: the model and settings.
        device: ``"cpu"`` or ``"cuda"`` (CUDA events on the GPU, :func:`vppkit.bench.timing.time_calls`).
        seed: weights, images and masks.
        log: optional progress printer.
        autocast: ``"bf16"``: every timed forward under ``torch.autocast(device, torch.bfloat16)``; None: fp32.
        compile_blocks: compile each timm block in place (``Block.compile(dynamic=True)``), shared by every row
            (dense, pruned, ceiling); the vppkit code between blocks stays eager.

    Returns:
        dict with ``case``, ``grid``, ``num_patches``, ``methods`` (specs), ``head_GMACs``, ``loadavg`` (per batch:
        before and after its timing), ``op_cost`` (per batch: ``block_ms``, a width-16 timm ``Block`` on one token
        per sample, timed in the same rounds, ``block_ops`` its torch calls and ``us_per_op`` = block_ms /
        block_ops in microseconds: what one torch call costs when it computes next to nothing, i.e. eager
        dispatch) and ``rows``: one per (part, method, variant, batch) with ``ms_per_frame``
        (median of the per-call times / batch), ``iqr_ms``, ``iqr_rel`` (IQR / median), ``flagged`` (iqr_rel >
        :data:`~vppkit.bench.timing.IQR_FLAG`), ``times_ms`` (every timed block, per frame), ``realised_pkr``,
        ``GMACs`` (per frame, incl. overhead for ``real``), ``overhead_GMACs``, ``speedup_measured``,
        ``speedup_ideal``, ``realized_over_ideal`` and, where a ceiling row of the method was timed,
        ``ceiling_over_ideal`` and ``realized_over_ceiling``; ``torch_ops``: torch calls one forward dispatches from
        Python (:func:`~vppkit.bench.timing.count_torch_ops`, one untimed call after the timing).

    Raises:
        ValueError: unknown ``autocast``.
    """
    if autocast not in (None, "bf16"):
        raise ValueError(f"autocast must be None or 'bf16', got {autocast!r}")
    log = log or (lambda s: None)
    torch.manual_seed(seed)
    dense = build_backbone(case.arch, img_size=tuple(case.img_size)).eval().to(device)
    if compile_blocks:
        for blk in dense.vit.blocks:
            blk.compile(dynamic=True)
    grid = dense.grid_for(*case.img_size)
    n = grid[0] * grid[1]
    depth = dense.depth
    spec_vit = ViTSpec.from_timm(dense.vit, name=case.arch)
    specs = resolve_methods(case.methods, case.goal_pkrs, num_patches=n)
    if not specs or specs[0].method != "dense":
        specs.insert(0, MethodSpec("dense", "dense", 1.0, {}))
    heads = None
    if "whole" in case.parts:
        h = {"dim": 64, "num_queries": 10, "dec_layers": 3, "heads": 4, "num_classes": 40, **case.head}
        heads = h

        def make_vis(backbone):
            torch.manual_seed(seed + 1)   # same head weights for every method
            return VISModel(backbone, int(h["num_classes"]), dim=int(h["dim"]), num_queries=int(h["num_queries"]),
                            dec_layers=int(h["dec_layers"]), heads=int(h["heads"])
                            ).eval().requires_grad_(False).to(device)

    floor_block = Block(16, 1, qkv_bias=True).eval().to(device)       # the per-op dispatch cost (below)
    rows: list[dict] = []
    loads: dict[str, dict] = {}
    op_cost: dict[str, dict] = {}
    head_gmacs = None
    g = torch.Generator().manual_seed(seed)
    amp = (lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)) if autocast else nullcontext
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
            if masks is not None and spec.method in case.ceiling and "backbone" in case.parts:
                key = ("backbone", spec.name, "ceiling")
                fns[key] = ceiling_forward(dense.vit, images, masks)
                last[key] = KeepRecord.from_masks(masks, grid, torch.zeros(bsz, dtype=torch.float64),
                                                  method=spec.method, execution="ceiling")
        # the per-op dispatch cost, in the same rounds: a width-16 timm Block on one token (its weights, 13 KB, stay
        # in cache; what is left is what each of its torch calls costs whatever it computes) / its calls
        floor_x = torch.rand(bsz, 1, 16, generator=g).to(device)
        floor_key = ("floor", "block", "dispatch")
        fns[floor_key] = lambda blk=floor_block, x=floor_x: blk(x)
        reps = int(case.repeats_by_batch.get(bsz, case.repeats))
        log(f"{case.label}: batch {bsz}: {len(fns)} configurations x {reps} interleaved rounds "
            f"(>= {case.min_run_time} s each), load {loadavg()}")
        load0 = loadavg()
        with torch.inference_mode(), amp():
            for key, fn in fns.items():     # a first call per row: VPP gets its temporal state
                fn()
            times = time_calls(fns, reps, max(0, case.warmup - 1), device, min_run_time=case.min_run_time)
            ops = {key: count_torch_ops(fn) for key, fn in fns.items()}    # one untimed call each, after timing
        loads[str(bsz)] = {"start": load0, "end": loadavg()}
        fl = summarize(times.pop(floor_key), 1000.0)
        op_cost[str(bsz)] = {"block_ms": fl["median"], "block_ops": ops[floor_key], "iqr_rel": fl["iqr_rel"],
                             "us_per_op": 1000.0 * fl["median"] / max(1, ops[floor_key])}
        for key, ts in times.items():
            part, name, variant = key
            spec = next(s for s in specs if s.name == name)
            rec = last[key]
            macs = _record_macs(spec_vit, rec, spec.method)
            st = summarize(ts, 1000.0 / bsz)
            gm = macs["total_GMACs"] + ((head_gmacs or 0.0) if part == "whole" else 0.0)
            rows.append({"part": part, "method": name, "family": spec.method, "variant": variant, "batch": bsz,
                         "goal_pkr": spec.goal_pkr, "realised_pkr": macs["pkr"], "GMACs": gm,
                         "backbone_GMACs": macs["backbone_GMACs"], "overhead_GMACs": macs["overhead_GMACs"],
                         "ms_per_frame": st["median"], "ms_per_frame_min": st["min"], "iqr_ms": st["iqr"],
                         "iqr_rel": st["iqr_rel"], "flagged": st["flagged"], "timed_blocks": st["n"],
                         "times_ms": [round(1000.0 * t / bsz, 3) for t in ts], "torch_ops": ops[key],
                         "block_counts": macs["block_counts"]})
    _add_speedups(rows)
    return {"case": {**asdict(case), "img_size": list(case.img_size)}, "grid": list(grid), "num_patches": n,
            "methods": [asdict(s) for s in specs], "head": heads, "head_GMACs": head_gmacs, "rows": rows,
            "loadavg": loads, "op_cost": op_cost, "autocast": autocast, "compile_blocks": compile_blocks,
            "machine": machine_info(device)}


def ceiling_forward(vit, images: torch.Tensor, masks: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The ceiling of gathered execution: timm's own modules on tokens gathered to the given per-block keep masks,
    no vppkit code in the loop (issue 15).

    Patch + position embedding (``patch_embed``, ``_pos_embed``, ``norm_pre``), then the blocks; where the mask
    changes the kept tokens are gathered once (``index_select`` on the flattened tokens, indices prepared before
    timing); nothing is scattered back (nothing needs the full grid); final ``norm``. Needs the same kept count
    in every sample at each block (no padding).

    Args:
        vit: the timm VisionTransformer. images: (B, 3, H, W). masks: (B, depth, N) bool, nested (a pruned
            token stays pruned), e.g. :func:`~vppkit.bench.specs.nominal_masks` of VPP / DynamicViT / EViT.

    Returns:
        A zero-argument callable returning the (B, P + K_last, C) normed tokens.

    Raises:
        ValueError: unequal counts across samples, or masks that are not nested.
    """
    bsz, depth, n = masks.shape
    p = vit.num_prefix_tokens
    counts = masks.sum(-1)
    if not bool((counts == counts[:1]).all()):
        raise ValueError("ceiling_forward needs equal kept counts in every sample")
    if not bool((masks[:, 1:] <= masks[:, :-1]).all()):
        raise ValueError("ceiling_forward needs nested masks (no reactivation)")
    steps: dict[int, torch.Tensor] = {}
    cur = torch.arange(n, device=masks.device).expand(bsz, n)        # token ids held, per sample
    changes = mask_change_points(masks)
    for b in range(depth):
        if b in changes and not bool(masks[:, b].all()):
            keep_now = masks[:, b].gather(1, cur)                        # which held tokens stay
            k = int(keep_now[0].sum())
            local = keep_now.nonzero()[:, 1].view(bsz, k)                # positions among the held tokens
            t = cur.shape[1] + p
            steps[b] = (torch.cat([torch.arange(p, device=masks.device).expand(bsz, p), local + p], 1)
                        + torch.arange(bsz, device=masks.device)[:, None] * t).reshape(-1)
            cur = cur.gather(1, local)

    def fn() -> torch.Tensor:
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        for b, blk in enumerate(vit.blocks):
            if b in steps:
                x = x.reshape(-1, x.shape[-1]).index_select(0, steps[b]).view(bsz, -1, x.shape[-1])
            x = blk(x)
        return vit.norm(x)

    return fn


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
    ceil = {(r["part"], r["method"], r["batch"]): r for r in rows if r["variant"] == "ceiling"}
    for r in rows:
        c = ceil.get((r["part"], r["method"], r["batch"]))
        if c is None or "speedup_measured" not in c:
            continue
        r["ceiling_over_ideal"] = c["speedup_measured"] / r["speedup_ideal"]   # this row's ideal (its GMACs)
        r["realized_over_ceiling"] = c["ms_per_frame"] / r["ms_per_frame"]
