"""Where the time of the gathered path goes: per-block gather/scatter vs block compute, pad vs loop with unequal
per-sample counts, and VPP's pruner modules (:func:`block_breakdown`)."""

from __future__ import annotations

import statistics
from typing import Callable, Sequence

import torch

from vppkit.bench.specs import nominal_counts, resolve_methods
from vppkit.bench.timing import machine_info, time_calls
from vppkit.flops.analytic import ViTSpec, backbone_macs, block_macs, ratio_schedule
from vppkit.models.pruning.vpp import VPPPruner
from vppkit.models.pruning.vpp_modules import map_sm_macs, sm_macs
from vppkit.models.blocks import run_block_gathered
from vppkit.models.vit import build_backbone

__all__ = ["block_breakdown"]


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

    Also timed: the patch embedding + final norm (unpruned), and for VPP Map-SM (N x N association) and one SM.

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
    vs = ViTSpec.from_timm(bb.vit, name=arch)
    over = 0.0
    if spec.method == "vpp":
        over = map_sm_macs(n, c, counts[5]) + 3 * sm_macs(n, c)  # inference: keys = tokens kept at block 5
    ideal = (backbone_macs(vs, ratio_schedule(n, [1.0] * bb.depth)).total
             / backbone_macs(vs, ratio_schedule(n, [k / n for k in counts]), overhead_macs=over).total)
    return {"arch": arch, "img_size": list(img_size), "method": spec.name, "num_patches": n, "counts": counts,
            "ideal_speedup": ideal,
            "repeats": repeats, "spread": spread, "groups": out_groups, "totals": totals, "pruner_modules": modules,
            "machine": machine_info(device)}
