"""Artifact 2: IoI by object size (VPP supplementary Table 8): VPP vs SViT at goal PKR 55 % and 40 %.

IoI (supplementary §D) = |kept ∩ instance patches| / |instance patches| per (frame, instance, block), averaged
over the 12 blocks and pooled over (instance, frame) pairs; S ≤ 10 %, 10 % < M ≤ 20 %, L > 20 % of the frame
area (:mod:`vppkit.metrics.ioi`). Patch membership rule: ``eval.patch_rule`` (default in the schema,
:class:`vppkit.config.EvalConfig`).
"""

from __future__ import annotations

from experiments import zoo
from experiments.common import Context

VARIANTS = ("svit55", "vpp55", "svit40", "vpp40")
COLUMNS = ("IoI", "IoI_S", "IoI_M", "IoI_L")


def run(ctx: Context) -> dict:
    evals, config = zoo.evaluate_many(ctx, "ioi", VARIANTS)


    def compute() -> dict:
        rows = []
        for v, e in evals.items():
            spec = zoo.variants()[v]
            ioi = e["ioi"]
            row = {"goal_PKR": spec["goal_pkr"], "method": spec["method"], "PKR": 100 * e["pkr"]["all"]}
            row.update({c: None if ioi.get(c) is None else 100 * ioi[c] for c in COLUMNS})
            row.update({f"n_{s}": ioi.get(f"n_{s}") for s in "SML"})
            row["fg_share_of_kept"] = None if ioi.get("fg_share_of_kept") is None else 100 * ioi["fg_share_of_kept"]
            rows.append(row)
        return {"rows": rows, "patch_rule": ctx.cfg["eval"]["patch_rule"]}

    return ctx.cached("ioi", config, compute)
