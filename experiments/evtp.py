"""Artifact 9: EVTP-IVS TFLOPs of InstructSeg per benchmark and visual-token keep count (supplementary §A.2/C.2).

Closed-form, no model run: :mod:`vppkit.flops.instructseg` with the supplementary's default constants and
its literal reading of the open choices (the options are stored with the result and printed under the
table). The interpretations I1-I6 of evtp-notes §3.3 are computed too, so a reader sees how much the open
choices move the totals.
"""

from __future__ import annotations

from experiments.common import Context
from vppkit.flops import instructseg as isg

INTERPRETATIONS = ("I1", "I2", "I3", "I4", "I5", "I6")


def run(ctx: Context) -> dict:
    config = {"artifact": "evtp", "constants": isg.InstructSegConstants().__dict__,
              "options": isg.FlopsOptions().as_dict(), "keep_tokens": list(isg.KEEP_TOKENS),
              "interpretations": list(INTERPRETATIONS)}

    def compute() -> dict:
        options = isg.FlopsOptions()
        table = isg.evtp_flops_table(options=options)
        interp = []
        for name in INTERPRETATIONS:
            df = isg.evtp_flops_table(options=isg.named_interpretation(name))
            for row in df.itertuples():
                interp.append({"interpretation": name, "benchmark": row.benchmark, "V_keep": row.V_keep,
                               "total_TFLOPs": row.total_TFLOPs, "reduction_pct": row.reduction_pct})
        return {
            "options": options.describe(),
            "table": table.drop(columns="options").to_dict(orient="records"),
            "breakdown": isg.evtp_breakdown_long(options=options).drop(columns="options").to_dict(orient="records"),
            "paper_comparison": isg.paper_comparison(options=options).to_dict(orient="records"),
            "interpretations": interp,
        }

    return ctx.cached("evtp", config, compute)
