"""FGS per layer (VPP Fig. 2): table and figure renderers for the ``fgs`` artifact.

``table(ctx, result)`` / ``figure(ctx, result)`` read only the saved result of ``experiments/fgs.py`` and return
index entries (pattern of ``analyses.tables.evtp_table`` / ``analyses.figures.evtp_figure``; registered by the
lead in ``TABLES`` / ``FIGURES``). The paper's Fig. 2 is available as a description only; its single quoted
number (FGS about 0.6 at index 0, supplementary §C) is drawn as a separate, labelled "paper" point and column.
Layers are labelled as the paper: features x_0 (patch embedding) .. x_12.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analyses.caveats import IMGFOCUS_CAVEAT
from analyses.paper_values import FGS_FIG2_DESCRIPTION, FGS_FIG2_INDEX0
from analyses.render import save_figure, write_table
from analyses.render import Entry, relative
from experiments.common import Context

TITLE = "Foreground selectivity (FGS) per layer (VPP Fig. 2)"


def _f(v) -> float:
    return np.nan if v is None else float(v)


def _backbone_line(name: str, bb: dict) -> str:
    train, ev = bb["train"], bb["eval"]
    return (f"{name} = {bb['label']}, input {bb['img_size'][0]}x{bb['img_size'][1]} px, patch {bb['patch_size']} "
            f"({bb['grid'][0]}x{bb['grid'][1]} patches); probes trained on {train['frames']} frames "
            f"({train['patches']} patches, {100 * _f(train['fg_share']):.1f} % foreground), evaluated on "
            f"{ev['frames']} held-out frames ({ev['patches']} patches, {100 * _f(ev['fg_share']):.1f} % foreground)")


def caption(result: dict) -> str:
    """Caption: profile, data, patch rule, protocol, which backbone is which, skipped ones, caveats."""
    s = result["settings"]
    data = result.get("data") or {}
    parts = [
        f"Profile {result.get('profile')}, data source {data.get('source', '?')} (train split -> probes, val split "
        f"-> FGS). FGS = balanced accuracy of a linear fg/bg probe per feature x_i of the frozen backbone "
        f"(0.5 = chance); band/CI = {100 * s['ci']:.0f} % percentile bootstrap over evaluation frames "
        f"({s['bootstrap']} replicates). Patch label: rule '{s['rule']}' on the union of GT instance masks at "
        f"the backbone's input size. Frames: every {s['frame_stride']}-th, at most {s['max_frames']} per split; "
        f"{s['epochs']} epochs, AdamW lr {s['lr']:g} (x0.1 after epoch 1), weighted CE (supplementary §C); probe "
        f"seeds {s['seeds']}.",
    ]
    parts += [_backbone_line(n, result["backbones"][n]) + "." for n in result["order"]]
    for name, reason in (result.get("skipped") or {}).items():
        parts.append(f"Skipped {name}: {reason}.")
    if "imgfocus" in result["order"]:
        parts.append(f"Caveat: {IMGFOCUS_CAVEAT}")
    parts.append(f"Paper values are quoted, not computed. {FGS_FIG2_DESCRIPTION} Only x_0 = {FGS_FIG2_INDEX0} is a "
                 f"number (column/point labelled 'paper').")
    return " ".join(parts)


def long_frame(result: dict) -> pd.DataFrame:
    """One row per (backbone, feature): backbone, layer, feature, fgs, fgs_ci_low, fgs_ci_high, accuracy,
    roc_auc, n_patches, n_frames (all fractions in [0, 1])."""
    rows = []
    for name in result["order"]:
        for r in result["backbones"][name]["layers"]:
            rows.append({"backbone": name, "layer": int(r["layer"]), "feature": r["feature"], "fgs": _f(r["fgs"]),
                         "fgs_ci_low": _f(r["fgs_ci_low"]), "fgs_ci_high": _f(r["fgs_ci_high"]),
                         "accuracy": _f(r["accuracy"]), "roc_auc": _f(r["roc_auc"]),
                         "n_patches": int(r["n_patches"]), "n_frames": int(r["n_frames"])})
    return pd.DataFrame(rows)


def table(ctx: Context, result: dict) -> list[Entry]:
    """Table ``fgs_per_layer`` (md/csv/tex): rows = features x_0 .. x_12; per backbone FGS, CI, ROC-AUC; one
    separate column with the paper's only quoted value (x_0)."""
    df = long_frame(result)
    wide = pd.DataFrame({"feature": [f"x_{i}" for i in sorted(df.layer.unique())]})
    for name in result["order"]:
        sub = df[df.backbone == name].sort_values("layer").reset_index(drop=True)
        wide[f"FGS {name}"] = sub.fgs
        wide[f"{name} CI low"] = sub.fgs_ci_low
        wide[f"{name} CI high"] = sub.fgs_ci_high
        wide[f"ROC-AUC {name}"] = sub.roc_auc
    wide["FGS paper (Fig. 2 text)"] = [FGS_FIG2_INDEX0 if i == 0 else np.nan for i in range(len(wide))]
    paths = write_table(wide, ctx.reports_dir / "fgs_per_layer", floatfmt=".3f")
    return [Entry("table", f"{TITLE}: table", relative(ctx, paths), caption(result),
                  inline=wide.to_markdown(index=False, floatfmt=".3f"))]


def figure(ctx: Context, result: dict) -> list[Entry]:
    """Figure ``fgs_per_layer`` (png/pdf): balanced accuracy vs feature index 0..12 per backbone with CI bands,
    the chance line at 0.5 and the paper's quoted x_0 value as a separate 'paper' marker."""
    df = long_frame(result)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colors = sns.color_palette("tab10", max(3, len(result["order"])))
    for color, name in zip(colors, result["order"]):
        sub = df[df.backbone == name].sort_values("layer")
        label = f"{name}: {result['backbones'][name]['label']}"
        ax.plot(sub.layer, sub.fgs, marker="o", ms=3.5, color=color, label=label)
        if np.isfinite(sub.fgs_ci_low).any():
            ax.fill_between(sub.layer, sub.fgs_ci_low, sub.fgs_ci_high, color=color, alpha=0.2, lw=0)
    ax.axhline(0.5, color="0.4", ls="--", lw=1, label="chance (0.5)")
    ax.scatter([0], [FGS_FIG2_INDEX0], marker="*", s=140, color="black", zorder=5,
               label=f"paper Fig. 2 (quoted, §C): ≈{FGS_FIG2_INDEX0} at x_0")
    layers = sorted(df.layer.unique()) if len(df) else list(range(13))
    ax.set_xticks(layers, [f"x_{i}" for i in layers], fontsize=8)
    ax.set_xlabel("feature x_i (x_0 = patch embedding, x_i = output of layer i)")
    ax.set_ylabel("FGS = balanced accuracy (fraction)")
    lo = np.nanmin(np.r_[df.fgs_ci_low.values, df.fgs.values, 0.5]) if len(df) else 0.4
    ax.set_ylim(max(0.0, min(0.45, lo - 0.05)), 1.0)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
    ax.set_title(f"FGS per layer ({result.get('profile')})", fontsize=10)
    fig.text(0.01, -0.04, "Paper (description only): " + FGS_FIG2_DESCRIPTION.removeprefix("Paper ").strip(),
             fontsize=6.5, wrap=True, ha="left", va="top")
    paths = save_figure(fig, ctx.reports_dir / "fgs_per_layer")
    rel = relative(ctx, paths)
    return [Entry("figure", TITLE, rel, caption(result), inline=f"![{TITLE}]({rel['png']})")]


def format_layers(result: dict) -> str:
    """Small plain-text table of a :func:`vppkit.engine.features.fgs_on_frames` result (one line per feature x_i;
    the ``vppkit fgs`` command prints it)."""
    lines = [f"{result['name']}: {result['label']}",
             f"{'feature':>8} {'FGS':>6} {'CI low':>7} {'CI high':>7} {'acc':>6} {'AUC':>6}"]

    def f(v) -> str:
        return "  --  " if v is None else f"{v:6.3f}"

    for r in result["layers"]:
        lines.append(f"{r['feature']:>8} {f(r['fgs'])} {f(r['fgs_ci_low']):>7} {f(r['fgs_ci_high']):>7} "
                     f"{f(r['accuracy'])} {f(r['roc_auc'])}")
    return "\n".join(lines)
