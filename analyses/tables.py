"""Tables of the reports, one renderer per artifact: ``TABLES[name](ctx, result) -> list[Entry]``.

Each renderer reads only the saved result dict, writes Markdown + CSV + LaTeX under ``reports/<profile>/``
and returns index entries. Paper values (``analyses.paper_values``) appear in separate, labelled rows or
columns, never mixed into ours without a label.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from analyses.render import write_table
from analyses.report import Entry, relative
from experiments.common import Context


def _table_entry(ctx: Context, df: pd.DataFrame, stem: str, title: str, caption: str,
                 floatfmt: str = ".2f") -> Entry:
    paths = write_table(df, ctx.reports_dir / stem, floatfmt=floatfmt)
    return Entry("table", title, relative(ctx, paths), caption,
                 inline=df.to_markdown(index=False, floatfmt=floatfmt))


def evtp_table(ctx: Context, result: dict) -> list[Entry]:
    df = pd.DataFrame(result["table"])
    wide = df.pivot_table(index=["benchmark", "modality"], columns="V_keep", values="total_TFLOPs", sort=False)
    wide.columns = [f"TFLOPs V'={v}" for v in wide.columns]
    red = df[df.V_keep != df.V].pivot_table(index=["benchmark", "modality"], columns="V_keep",
                                             values="reduction_pct", sort=False)
    red.columns = [f"reduction % V'={v}" for v in red.columns]
    out = wide.join(red).reset_index()
    comp = pd.DataFrame(result["paper_comparison"])
    comp["source"] = comp["source"].where(~comp["source"].str.startswith("computed"), "computed (options as above)")
    interp = pd.DataFrame(result["interpretations"])
    interp = interp[interp.V_keep == 146].pivot_table(index="benchmark", columns="interpretation",
                                                      values="reduction_pct", sort=False).reset_index()
    interp.columns = ["benchmark"] + [f"{c} reduction % (V'=146)" for c in interp.columns[1:]]
    cap = (f"InstructSeg TFLOPs (1 TFLOP = 1e12 multiply-accumulates, the supplementary's convention) per "
           f"benchmark and visual-token keep count V', computed from the closed forms of EVTP-IVS supplementary "
           f"§A.2/C.2. Options: {result['options']}.")
    return [
        _table_entry(ctx, out, "evtp_tflops", "EVTP-IVS: InstructSeg TFLOPs per benchmark and V'", cap),
        _table_entry(ctx, comp, "evtp_vs_paper", "EVTP-IVS: computed FLOPs ratios vs the paper's reported speed-ups",
                     "Rows with source 'paper' are quoted from the paper (latency speed-ups, not FLOPs); the "
                     "others are computed here."),
        _table_entry(ctx, interp, "evtp_interpretations", "EVTP-IVS: reduction under each reading I1-I6",
                     "Reduction % at V'=146 under the interpretations of evtp-notes §3.3 (how much the open "
                     "choices of the supplementary move the result)."),
    ]


TABLES: dict[str, Callable[[Context, dict], list[Entry]]] = {
    "evtp": evtp_table,
}
