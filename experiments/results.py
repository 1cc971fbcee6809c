"""Artifact 6: the results table of the official VPP README (AP_track, mAP_bbox, mAP_segm) for the dense
model and VPP at goal PKR 55 % and 40 %, from the shared evaluations (:mod:`experiments.zoo`)."""

from __future__ import annotations

from experiments import zoo
from experiments.common import Context

VARIANTS = ("dense", "vpp55", "vpp40")


def run(ctx: Context) -> dict:
    evals, config = zoo.evaluate_many(ctx, "results", VARIANTS)


    def compute() -> dict:
        rows = []
        for v, e in evals.items():
            spec = zoo.variants()[v]
            rows.append({"variant": v, "model": spec["label"], "goal_PKR": spec["goal_pkr"],
                         "PKR": 100 * e["pkr"]["all"], "AP_track": 100 * e["AP"],
                         "mAP_bbox": 100 * e["mAP_bbox"], "mAP_segm": 100 * e["mAP_segm"],
                         "AP50": 100 * e["AP50"], "AP75": 100 * e["AP75"], "noise": e["noise"]})
        return {"rows": rows}

    return ctx.cached("results", config, compute)
