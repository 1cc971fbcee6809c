"""Figures of the reports, one renderer per artifact: ``FIGURES[name](ctx, result) -> list[Entry]``.

PNG + PDF under ``reports/<profile>/``; axis labels carry units; the paper's values (where a figure has
numbers) are drawn in a separate, labelled style.
"""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from analyses import fgs, selectors
from analyses.paper_values import AP_LOSS_FIG4, AP_LOSS_FIG4_SOURCE, DENSITY_FIG5_DESCRIPTION
from analyses.render import Entry, relative, save_figure
from analyses.tables import mode_note
from experiments.common import Context
from vppkit.data.video import VideoFrames
from vppkit.engine.infer import load_keep_records

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


METHOD_COLORS = {"VPP": "tab:blue", "SViT": "tab:red", "DynamicViT": "tab:orange", "dense": "black"}


def _ours_label(ctx: Context, result: dict) -> str:
    prov = result.get("provenance", {})
    return f"ours: {ctx.profile}, seed {prov.get('seed')}, {prov.get('commit')}, {str(prov.get('time_utc'))[:10]}"


def density_figure(ctx: Context, result: dict) -> list[Entry]:
    df = pd.DataFrame(result["rows"])
    goals = sorted(df.goal_PKR.unique(), reverse=True)
    fig, axes = plt.subplots(1, len(goals), figsize=(5 * len(goals), 3.4), sharey=True)
    for ax, g in zip(axes, goals):
        sub = df[df.goal_PKR == g]
        for method, grp in sub.groupby("method", sort=False):
            pkr = 100 * result["pkr"][grp.variant.iloc[0]]["all"]
            ax.plot(grp.layer, grp.density, "o-", color=METHOD_COLORS.get(method), label=f"{method} (PKR {pkr:.1f} %)")
        nominal = result["vpp_nominal"].get(f"vpp{g}")
        if nominal:
            ax.step(range(1, 13), nominal, where="mid", ls=":", color=METHOD_COLORS["VPP"], label="VPP nominal schedule")
        ax.set_title(f"goal PKR {g} %")
        ax.set_xlabel("layer")
        ax.set_xticks(range(1, 13))
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("patch density (fraction processed)")
    fig.suptitle(f"Patch density per layer ({_ours_label(ctx, result)})", fontsize=9)
    return [_figure_entry(ctx, fig, "density_per_layer", "Patch density per layer (Fig. 5)",
                          "Fraction of patch tokens each layer processes, global over every evaluated frame. "
                          + DENSITY_FIG5_DESCRIPTION + mode_note(result))]


def curves_figure(ctx: Context, result: dict) -> list[Entry]:
    ours = pd.DataFrame(result["rows"])
    paper = pd.DataFrame(AP_LOSS_FIG4)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, grp in ours.groupby("method", sort=False):
        grp = grp.sort_values("PKR")
        axes[0].plot(grp.PKR, grp.AP_loss, "o-", color=METHOD_COLORS.get(method), label=method)
    axes[0].plot([100], [0], "ks", label="dense")
    axes[0].set_title(_ours_label(ctx, result), fontsize=8)
    for (method, dataset), grp in paper.groupby(["method", "dataset"], sort=False):
        grp = grp.sort_values("PKR")
        axes[1].plot(grp.PKR, grp.AP_loss, "o-" if dataset == "YTVIS21" else "s--", color=METHOD_COLORS.get(method),
                     mfc="white" if dataset == "YTVIS19" else None, label=f"{method} {dataset}")
    axes[1].plot([100], [0], "ks")
    axes[1].set_title("paper (Fig. 4, read off the plot)", fontsize=8)
    lo = min(30.0, float(ours.PKR.min()) - 5)
    for ax in axes:
        ax.set_xlabel("PKR (%)  ← sparse — dense →")
        ax.set_xlim(lo, 102)
        ax.invert_yaxis()
        ax.legend(fontsize=7)
    axes[0].set_ylabel("AP loss (AP points, dense − pruned)")
    return [_figure_entry(ctx, fig, "ap_loss_vs_pkr", "AP loss vs PKR (Fig. 4)",
                          f"Left: ours (dense AP {result['dense_AP']:.2f} %). Right: {AP_LOSS_FIG4_SOURCE}."
                          + mode_note(result))]


def qualitative_figure(ctx: Context, result: dict) -> list[Entry]:
    import numpy as np

    frames = VideoFrames(result["gt_json"], None, ctx.cfg["model"]["img_size"], cache=False)
    vi, vid, ts, layers = result["video_index"], result["video_id"], result["frames"], result["layers"]
    variants = list(result["records"])
    rows = [(v, layer) for v in variants for layer in layers]
    fig, axes = plt.subplots(len(rows), len(ts), figsize=(1.4 * len(ts), 1.4 * len(rows)), squeeze=False,
                             layout="constrained")
    for v in variants:
        rec = load_keep_records(ctx.results_dir / result["records"][v])[vid]
        gh, gw = rec.grid
        for t_i, t in enumerate(ts):
            img = frames.frame(vi, t).permute(1, 2, 0).numpy().astype(np.float32) / 255
            masks = frames.instances(vi, t)[1]
            fg = masks.any(0).numpy() if masks.shape[0] else np.zeros(img.shape[:2], bool)
            for layer in layers:
                keep = rec.masks[t, layer - 1].reshape(gh, gw).numpy()
                up = np.kron(keep, np.ones((img.shape[0] // gh, img.shape[1] // gw), bool))
                shown = img * np.where(up[..., None], 1.0, 0.15)
                ax = axes[rows.index((v, layer)), t_i]
                ax.imshow(shown)
                ax.contour(fg, levels=[0.5], colors="lime", linewidths=0.6)
                ax.set_xticks([])
                ax.set_yticks([])
                if t_i == 0:
                    ax.set_ylabel(f"{result['labels'][v]}\nlayer {layer}", fontsize=6)
                if rows.index((v, layer)) == 0:
                    ax.set_title(f"t = {t}", fontsize=7)
    fig.suptitle(f"Kept (bright) and pruned (dark) patches per layer, video {vid} ({_ours_label(ctx, result)})",
                 fontsize=8)
    act = result["activity"]
    act_text = "; ".join(f"{result['labels'][v]}: fg {a['fg']:.2f} / bg {a['bg']:.2f}" for v, a in act.items()
                         if a["fg"] is not None and a["bg"] is not None)
    return [_figure_entry(ctx, fig, "qualitative_masks", "Qualitative pruning masks (Fig. 1, 7-10)",
                          "Each panel shows the patches the given layer processes (dark = pruned); green = GT "
                          "instance outline; layer 2 shows VPP's Map-SM mask (first frame: dense, no temporal prior). "
                          f"Mean fraction of the 12 layers that process a patch (foreground / background): {act_text}."
                          + mode_note(result))]


def training_figure(ctx: Context, result: dict) -> list[Entry]:
    """One row per trained model: task loss, sparsity loss and the realised keep ratio per pruning block against
    the optimizer step, keep targets dashed in the block's colour (:mod:`experiments.training`)."""
    runs = result["runs"]
    names = list(runs)
    fig, axes = plt.subplots(len(names), 3, figsize=(11, 2.1 * len(names)), squeeze=False, layout="constrained")
    for row, name in zip(axes, names):
        r = runs[name]
        x = r["series"]["step"]
        row[0].plot(x, r["series"]["loss_seg"], color=METHOD_COLORS.get(r["method"], "black"), lw=1)
        row[0].set_ylabel(f"{r['label']}\n({r['stage']}, {r['steps']} steps)", fontsize=7)
        if r["stage"] == "sparse":
            row[1].plot(x, r["series"]["loss_sparse"], color=METHOD_COLORS.get(r["method"], "black"), lw=1)
            colors = sns.color_palette("viridis", max(len(r["pruning_blocks"]), 1))
            for b, color in zip(r["pruning_blocks"], colors):
                key = f"keep_b{b}"
                if key in r["series"]:
                    row[2].plot(x, r["series"][key], color=color, lw=1, label=f"layer {b + 1}")
                row[2].axhline(r["targets"][str(b)], color=color, ls="--", lw=0.8)
            if not r["keep_logged"]:
                row[2].text(0.5, 0.5, "per-block keep ratio not logged by this run", ha="center", va="center",
                            transform=row[2].transAxes, fontsize=7)
            row[2].set_ylim(0, 1.05)
            row[2].legend(fontsize=6, ncol=2, loc="lower left")
        else:
            for ax in row[1:]:
                ax.text(0.5, 0.5, "dense stage: no pruner", ha="center", va="center", transform=ax.transAxes,
                        fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
    for ax, title in zip(axes[0], ("task loss (weighted segmentation loss)", "sparsity loss",
                                   "realised keep ratio per pruning block (dashed: target)")):
        ax.set_title(title, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle(f"Training curves of every trained model ({_ours_label(ctx, result)})", fontsize=9)
    binned = [runs[n]["label"] for n in names if runs[n]["binned"]]
    return [_figure_entry(
        ctx, fig, "training_curves", "Training curves: task loss, sparsity loss, keep ratio per pruning block",
        "Per trained model (rows), against the optimizer step, from the run's metrics.csv: the task loss as "
        "optimised (segmentation loss weighted per chain frame: reff ×0, ref ×0.5, key ×1; dense: ref ×0.5, key "
        "×1), the sparsity loss summed over the chain's frames, and the realised keep ratio (fraction of the patch "
        "tokens the layer processes, training mode, mean over the batch and the chain frames that have a previous "
        "frame) at each pruning layer, i.e. each layer whose nominal keep fraction differs from the layer before "
        "(VPP: Map-SM at layer 2, SMs at 4/7/10; SViT: first gate of each stage, 4/7/10; DynamicViT: 4/7/10); "
        "dashed = the method's keep target there (its nominal schedule; fixed-count methods: floor(N · ratio) / N). Gates that stay near their initial keep ratio or far from the "
        "target by the last step were not trained by this schedule (docs/reading.md)."
        + (f" Averaged over equal runs of steps (at most {result['config']['max_points']} points) for: "
           + ", ".join(binned) + "." if binned else ""))]


FIGURES: dict[str, Callable[[Context, dict], list[Entry]]] = {
    "fgs": fgs.figure,
    "selectors": selectors.figure,
    "evtp": evtp_figure,
    "density": density_figure,
    "curves": curves_figure,
    "qualitative": qualitative_figure,
    "training": training_figure,
}
