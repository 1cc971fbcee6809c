"""Artifact 6: the results table of the official VPP README (AP_track, mAP_bbox, mAP_segm) for the dense
model and VPP at goal PKR 55 % and 40 %, from the shared evaluations (:mod:`experiments.zoo`).

Every pruned variant appears in both inference modes (:data:`experiments.zoo.MODES`): Gumbel noise kept at
inference, seeded per video (the official code; supplementary §B calls it essential; the default), and
deterministic (argmax / noise-free top-k). The dense model has no pruner: one row, valid for both.
"""

from __future__ import annotations

from experiments import zoo
from experiments.common import Context, result_ref

VARIANTS = ("dense", "vpp55", "vpp40")


def run(ctx: Context) -> dict:
    by_mode = {mode: zoo.evaluate_many(ctx, "results", VARIANTS, mode)[0] for mode in zoo.MODES}
    config = {"artifact": "results", "mode": zoo.profile_mode(ctx), "modes": list(zoo.MODES),
              "evals": {f"{v}@{mode}": result_ref(e) for mode, evals in by_mode.items() for v, e in evals.items()}}

    def compute() -> dict:
        rows = []
        for mode in zoo.MODES:
            for v, e in by_mode[mode].items():
                spec = zoo.variants()[v]
                if spec["pruning"] is None and mode != zoo.MODES[0]:
                    continue  # the dense model: one row (no pruner, nothing random)
                label = spec["label"] if spec["pruning"] is None else f"{spec['label']} ({mode})"
                rows.append({"variant": v, "model": label, "goal_PKR": spec["goal_pkr"],
                             "mode": "—" if spec["pruning"] is None else mode,
                             "PKR": 100 * e["pkr"]["all"], "AP_track": 100 * e["AP"],
                             "mAP_bbox": 100 * e["mAP_bbox"], "mAP_segm": 100 * e["mAP_segm"],
                             "AP50": 100 * e["AP50"], "AP75": 100 * e["AP75"], "noise": e["noise"]})
        return {"rows": rows, "profile_mode": zoo.profile_mode(ctx)}

    return ctx.cached("results", config, compute)
