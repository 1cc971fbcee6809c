"""The benchmark suites: :func:`default_suite` (``make bench``, ``vppkit bench``), :func:`run_suite` (every case,
the breakdown and the memory check, with a provenance header) and the speed goals :data:`TARGETS`."""

from __future__ import annotations

import time
from typing import Callable

from vppkit.bench.breakdown import block_breakdown
from vppkit.bench.memory import memory_vs_length
from vppkit.bench.specs import DEFAULT_GOAL_PKRS, ModelCase
from vppkit.bench.speed import run_speed_benchmark
from vppkit.bench.timing import machine_info
from vppkit.config import img_size_hw, load_config
from vppkit.utils.provenance import provenance

__all__ = ["TARGETS", "default_suite", "run_suite", "check_targets"]

TARGETS = {"method": "vpp-pkr40", "variant": "real", "part": "backbone",
           "realized_over_ideal": {1: 0.75, 8: 0.90}}
"""Speed goals (issue 5): VPP at goal PKR 40 %, realized/ideal >= 0.9 at batch 8 and >= 0.75 at batch 1."""


def default_suite(cfg: dict | None = None, quick: bool = False) -> dict:
    """The ``make bench`` suite: DeiT-S at 384x640 and the profile's model; breakdown; memory settings.

    Args:
        cfg: a profile config (``model`` section read: arch, img_size, head sizes); default profile when None.
        quick: a tiny suite for tests (vit_nano, 32x48 / 48x48 inputs, batches 1 and 2, one repeat).

    Returns:
        ``{"cases": [ModelCase], "breakdown": {...} | None, "memory": {...} | None}``.
    """
    if cfg is None:
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
