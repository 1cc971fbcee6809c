"""Artifact 3: patch density per layer (VPP Fig. 5): fraction of patch tokens each block processes,
VPP vs SViT vs DynamicViT at both goal PKRs, global sums over every evaluated frame (:mod:`vppkit.metrics.pkr`)."""

from __future__ import annotations

from experiments import zoo
from experiments.common import Context
from vppkit.models.pruning.schedules import VPPSchedule

VARIANTS = ("vpp55", "svit55", "dynamicvit55", "vpp40", "svit40", "dynamicvit40")


def run(ctx: Context) -> dict:
    evals, config = zoo.evaluate_many(ctx, "density", VARIANTS)


    def compute() -> dict:
        rows = []
        for v, e in evals.items():
            spec = zoo.variants()[v]
            for b, (d_all, d_later) in enumerate(zip(e["density"], e["density_later"])):
                rows.append({"variant": v, "method": spec["method"], "goal_PKR": spec["goal_pkr"], "layer": b + 1,
                             "density": d_all, "density_later": d_later})
        nominal = {f"vpp{g}": VPPSchedule.preset(f"pkr{g}").block_keep_fractions() for g in zoo.GOALS}
        return {"rows": rows, "vpp_nominal": nominal,
                "pkr": {v: e["pkr"] for v, e in evals.items()}}

    return ctx.cached("density", config, compute)
