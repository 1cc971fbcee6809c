"""Artifact 5: AP loss vs PKR (VPP Fig. 4): dense AP minus pruned AP (AP points) against realised PKR for
VPP, SViT and DynamicViT at goal PKR 55 % and 40 %."""

from __future__ import annotations

from experiments import zoo
from experiments.common import Context, result_ref

VARIANTS = ("vpp55", "vpp40", "svit55", "svit40", "dynamicvit55", "dynamicvit40")


def run(ctx: Context) -> dict:
    dense = zoo.evaluate(ctx, "dense")
    evals, config = zoo.evaluate_many(ctx, "curves", VARIANTS)
    config["dense"] = result_ref(dense)

    def compute() -> dict:
        rows = []
        for v, e in evals.items():
            spec = zoo.variants()[v]
            rows.append({"variant": v, "method": spec["method"], "goal_PKR": spec["goal_pkr"],
                         "PKR": 100 * e["pkr"]["all"], "AP": 100 * e["AP"],
                         "AP_loss": 100 * (dense["AP"] - e["AP"]),
                         "mAP_segm_loss": 100 * (dense["mAP_segm"] - e["mAP_segm"])})
        return {"dense_AP": 100 * dense["AP"], "dense_mAP_segm": 100 * dense["mAP_segm"], "rows": rows}

    return ctx.cached("curves", config, compute)
