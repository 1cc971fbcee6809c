"""Figures of the reports, one renderer per artifact: ``FIGURES[name](ctx, result) -> list[Entry]``.

PNG + PDF under ``reports/<profile>/``; axis labels carry units; the paper's values (where a figure has
numbers) are drawn in a separate, labelled style.
"""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from analyses.render import save_figure
from analyses.report import Entry, relative
from experiments.common import Context

sns.set_theme(style="whitegrid", context="paper")


def _figure_entry(ctx: Context, fig: plt.Figure, stem: str, title: str, caption: str) -> Entry:
    paths = save_figure(fig, ctx.reports_dir / stem)
    rel = relative(ctx, paths)
    return Entry("figure", title, rel, caption, inline=f"![{title}]({rel['png']})")


def evtp_figure(ctx: Context, result: dict) -> list[Entry]:
    df = pd.DataFrame(result["breakdown"])
    keeps = sorted(df.V_keep.unique(), reverse=True)
    benches = list(dict.fromkeys(df.benchmark))
    components = list(dict.fromkeys(df.component))
    fig, axes = plt.subplots(1, len(keeps), figsize=(3.2 * len(keeps), 3.6), sharey=True)
    colors = sns.color_palette("tab10", len(components))
    for ax, v in zip(axes, keeps):
        sub = df[df.V_keep == v].pivot_table(index="benchmark", columns="component", values="TFLOPs", sort=False)
        sub = sub.reindex(index=benches, columns=components)
        bottom = None
        for comp, color in zip(components, colors):
            ax.bar(range(len(benches)), sub[comp].values, bottom=bottom, color=color, label=comp)
            bottom = sub[comp].values if bottom is None else bottom + sub[comp].values
        ax.set_title(f"V' = {v}")
        ax.set_xticks(range(len(benches)), benches, rotation=60, ha="right", fontsize=7)
    axes[0].set_ylabel("TFLOPs (1e12 MACs)")
    axes[-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("InstructSeg TFLOPs by component (EVTP-IVS closed form)")
    return [_figure_entry(ctx, fig, "evtp_tflops_breakdown", "EVTP-IVS: TFLOPs by component (stacked)",
                          f"Computed from the supplementary's closed forms; options: {result['options']}.")]


FIGURES: dict[str, Callable[[Context, dict], list[Entry]]] = {
    "evtp": evtp_figure,
}
