"""Where the time of the gathered path goes: per-block gather/scatter vs block compute, pad vs loop with unequal
per-sample counts, and VPP's pruner modules (:func:`block_breakdown`)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from vppkit.bench.specs import nominal_counts, resolve_methods
from vppkit.bench.timing import machine_info, summarize, time_calls
from vppkit.flops.analytic import ViTSpec, backbone_macs, block_macs, ratio_schedule
from vppkit.models.pruning.schedules import VPPSchedule
from vppkit.models.pruning.vpp import VPPPruner
from vppkit.models.pruning.vpp_modules import map_sm_macs, sm_macs
from timm.models.vision_transformer import Block

from vppkit.models.blocks import run_block_gathered
from vppkit.models.vit import build_backbone

__all__ = ["block_breakdown", "benchmark_gather_impl", "block_cost_curve"]


def block_breakdown(arch: str, img_size: Sequence[int], method: str = "vpp-pkr40", batches: Sequence[int] = (1, 8),
                    repeats: int = 3, device: str | torch.device = "cpu", seed: int = 0, spread: float = 0.25,
                    log: Callable[[str], None] | None = None) -> dict:
    """Per-block timing of the gathered path for one method's nominal schedule (ms per frame).

    For each distinct kept count K of the schedule (blocks grouped), one block of the backbone is timed:

    - ``dense_block``: the block on all N (+ prefix) tokens;
    - ``compute_K``: the block on a contiguous (B, K + P, C) tensor (pure compute, no gather/scatter);
    - ``gathered``: :func:`vppkit.models.blocks.run_block_gathered` (gather + block + scatter), equal counts;
    - ``gather_scatter = gathered - compute_K``;
    - ``mac_proportional = dense_block * MACs(K) / MACs(N)``: the time if compute scaled with MACs;
    - batch > 1 with unequal per-sample counts (K (1 +- ``spread``), same mean): ``pad`` and ``loop`` impls
      (padding waste vs lost batching).

    Also timed: the patch embedding + final norm (unpruned), and for VPP Map-SM (inference path: against the
    previous frame's kept tokens, 40 % of N) and each SM on the tokens kept before its block (nominal counts).

    Returns:
        dict with ``groups`` (rows per (batch, K)), ``totals`` per batch (sums over the 12 blocks with
        multiplicity, ms/frame) and ``pruner_modules`` per batch.
    """
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
            pr = VPPPruner(c, spec.params["schedule"], inference_noise=False).eval().to(device)
            xs = [torch.randn(bsz, n, c, generator=g).to(device) for _ in range(3)]
            mprev = torch.rand(bsz, n, generator=g).to(device) < 0.4
            fns[(0, "map_sm")] = lambda: pr.map_sm(xs[0], xs[1], xs[2], mprev, grid, pr.schedule.m, noise=False)
            for i, blk in enumerate(pr.schedule.sm_blocks):    # each SM on the tokens kept before its block
                prev = torch.zeros(bsz, n, device=device)
                prev[:, :counts[blk - 1]] = 1.0
                fns[(0, f"sm{i}")] = (lambda i=i, prev=prev: pr.sms[i](xs[0], prev, noise=False))
        log(f"breakdown {arch} {method}: batch {bsz}: {len(fns)} timings x {repeats}")
        with torch.inference_mode():
            ts = time_calls(fns, repeats, 1, device)
        stats = {key: summarize(v, 1000.0 / bsz) for key, v in ts.items()}
        med = {key: st["median"] for key, st in stats.items()}
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
                   "mac_proportional_ms": macp,
                   "max_iqr_rel": max(st["iqr_rel"] for key, st in stats.items() if key[0] == k)}
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
            sms = [v for key, v in med.items() if key[0] == 0 and key[1].startswith("sm")]
            modules[str(bsz)] = {"map_sm_ms": med[(0, "map_sm")], "sm_ms": sum(sms),
                                 "all_modules_ms": med[(0, "map_sm")] + sum(sms)}
    vs = ViTSpec.from_timm(bb.vit, name=arch)
    over = 0.0
    if spec.method == "vpp":
        # inference: keys = tokens kept at block 5; each SM on the tokens kept before its block
        sm_blocks = VPPSchedule.preset(spec.params["schedule"]).sm_blocks
        over = map_sm_macs(n, c, counts[5]) + sum(sm_macs(counts[b - 1], c) for b in sm_blocks)
    ideal = (backbone_macs(vs, ratio_schedule(n, [1.0] * bb.depth)).total
             / backbone_macs(vs, ratio_schedule(n, [k / n for k in counts]), overhead_macs=over).total)
    return {"arch": arch, "img_size": list(img_size), "method": spec.name, "num_patches": n, "counts": counts,
            "ideal_speedup": ideal,
            "repeats": repeats, "spread": spread, "groups": out_groups, "totals": totals, "pruner_modules": modules,
            "machine": machine_info(device)}


def benchmark_gather_impl(width: int = 384, heads: int = 6, tokens: int = 577, batches: Sequence[int] = (1, 8),
                          repeats: int = 5, seed: int = 0, device: str = "cpu") -> dict:
    """Time one gathered block with ``impl='pad'`` vs ``'loop'`` (kept fraction 0.3..0.9 per sample), the
    measurement behind ``PrunableViT``'s default ``gather_impl`` (moved here from ``vppkit.models.vit``).

    Args:
        width, heads: block shape (ViT-S: 384, 6). tokens: sequence length incl. CLS.
        batches: batch sizes to time. repeats: interleaved rounds (:func:`~vppkit.bench.timing.time_calls`).
        device: "cpu" or "cuda".

    Returns:
        ``{batch: {'pad': seconds, 'loop': seconds}}``: the median per-call time of each impl.
    """
    g = torch.Generator().manual_seed(seed)
    blk = Block(width, heads, qkv_bias=True).eval().to(device)
    out = {}
    for bsz in batches:
        x = torch.randn(bsz, tokens, width, generator=g).to(device)
        frac = torch.linspace(0.3, 0.9, bsz) if bsz > 1 else torch.tensor([0.6])
        keep = (torch.rand(bsz, tokens - 1, generator=g) < frac[:, None]).float().to(device)
        fns = {impl: (lambda impl=impl: run_block_gathered(blk, x, keep, 1, impl=impl)) for impl in ("pad", "loop")}
        with torch.inference_mode():
            ts = time_calls(fns, repeats, 1, device)
        out[bsz] = {impl: summarize(v)["median"] for impl, v in ts.items()}
    return out


def block_cost_curve(arch: str, img_size: Sequence[int], fractions: Sequence[float] = (1.0, 0.7, 0.5, 0.3, 0.15, 0.0),
                     batches: Sequence[int] = (1, 8), repeats: int = 5, device: str | torch.device = "cpu",
                     compiled: bool = False, seed: int = 0, min_run_time: float = 0.05) -> dict:
    """Time of one block vs its token count K, and the fixed per-block cost (the floor pruning cannot remove).

    One block of ``arch`` runs on a contiguous (B, P + K, C) tensor for K = round(N f), f in ``fractions``
    (interleaved rounds); a least-squares line ``t(K) = fixed + per_token * K`` gives the fixed cost per block
    (operator dispatch, thread start-up: what stays when K -> 0) and its share of the dense block
    (``fixed_share = fixed / t(N)``). With ``compiled`` the same block compiled (``torch.compile(dynamic=True)``)
    is timed beside the eager one (issue 15: whether compilation lifts the floor); where compilation fails (no C++
    compiler for inductor, an unsupported platform) the eager rows stay and ``compiled_error`` says why.

    Returns:
        ``{"arch", "num_patches", "compiled", "compiled_error", "batches": {batch: {"eager": {K: ms},
        "compiled": {K: ms} | None, "fit": {"eager": {"fixed_ms", "per_token_ms", "fixed_share"}, ...},
        "iqr_rel_max"}}}``; ms per frame.
    """
    torch.manual_seed(seed)
    bb = build_backbone(arch, img_size=tuple(img_size)).eval().to(device)
    grid = bb.grid_for(*img_size)
    n, p, c = grid[0] * grid[1], bb.num_prefix_tokens, bb.embed_dim
    blk = bb.vit.blocks[0]
    cblk = torch.compile(blk, dynamic=True) if compiled else None
    ks = sorted({max(0, min(n, round(n * f))) for f in fractions}, reverse=True)
    g = torch.Generator().manual_seed(seed)
    compiled_error = None
    if cblk is not None:
        try:            # compile now (first call), outside the timed rounds
            with torch.inference_mode():
                cblk(torch.randn(max(batches), n + p, c, generator=g).to(device))
        except Exception as e:  # noqa: BLE001 - inductor / dynamo failures of any kind: report, time eager only
            compiled_error, cblk = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", None
    out = {}
    for bsz in batches:
        x = torch.randn(bsz, n + p, c, generator=g).to(device)
        xs = {k: x[:, : k + p].contiguous() for k in ks}
        fns = {("eager", k): (lambda k=k: blk(xs[k])) for k in ks}
        if cblk is not None:
            fns.update({("compiled", k): (lambda k=k: cblk(xs[k])) for k in ks})
        with torch.inference_mode():
            ts = time_calls(fns, repeats, 2, device, min_run_time=min_run_time)
        stats = {key: summarize(v, 1000.0 / bsz) for key, v in ts.items()}
        res = {"eager": {k: stats[("eager", k)]["median"] for k in ks}, "compiled": None, "fit": {},
               "iqr_rel_max": max(s["iqr_rel"] for s in stats.values())}
        if cblk is not None:
            res["compiled"] = {k: stats[("compiled", k)]["median"] for k in ks}
        for kind in ("eager", "compiled"):
            if res[kind] is None:
                continue
            kk = torch.tensor([float(k) for k in ks], dtype=torch.float64)
            tt = torch.tensor([res[kind][k] for k in ks], dtype=torch.float64)
            a = torch.stack([torch.ones_like(kk), kk], 1)
            fixed, slope = torch.linalg.lstsq(a, tt[:, None]).solution[:, 0].tolist()
            res["fit"][kind] = {"fixed_ms": fixed, "per_token_ms": slope, "fixed_share": fixed / res[kind][n]}
        out[str(bsz)] = res
    return {"arch": arch, "img_size": list(img_size), "num_patches": n, "compiled": cblk is not None,
            "compiled_error": compiled_error, "batches": out,
            "machine": machine_info(device)}
