"""Artifact 4: κ_init ablation (VPP supplementary Table 7): κ_init ∈ {0.3, 0.5, 0.7} at goal PKR 55 %:
realised PKR and AP. κ_init is the target of the Map-SM sparsity term on the soft keep probabilities
(Table 6, vpp-notes §7.4); the hard keep fraction of Map-SM is fixed by its top-k."""

from __future__ import annotations

from experiments import zoo
from experiments.common import Context

VARIANTS = {0.3: "vpp55_kappa0.3", 0.5: "vpp55", 0.7: "vpp55_kappa0.7"}


def run(ctx: Context) -> dict:
    by_name, config = zoo.evaluate_many(ctx, "kappa", VARIANTS.values())
    evals = {k: by_name[v] for k, v in VARIANTS.items()}

    def compute() -> dict:
        rows = [{"kappa_init": k, "PKR": 100 * e["pkr"]["all"], "AP": 100 * e["AP"],
                 "mAP_segm": 100 * e["mAP_segm"], "IoI": None if e["ioi"].get("IoI") is None else 100 * e["ioi"]["IoI"]}
                for k, e in evals.items()]
        return {"rows": rows}

    return ctx.cached("kappa", config, compute)
