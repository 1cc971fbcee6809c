"""Tables and figures of the training-free token selection study (``experiments/selectors.py``, issue 7).

Renderers ``table(ctx, result) -> list[Entry]`` and ``figure(ctx, result) -> list[Entry]`` read only the saved
result (plus the qualitative frame PNG the experiment saved next to it) and write through
:func:`analyses.render.write_table` / :func:`analyses.render.save_figure`. Figures label layers 1-based
(layer = block + 1). Every number shown is computed by the study; none is the paper's (EVTP-IVS gives no
numbers for this analysis).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analyses.render import save_figure, write_table
from analyses.render import Entry, relative
from experiments.common import Context

FAMILY_ORDER = ("random", "uniform", "attention", "kcenter", "divprune", "spatial_kcenter")


def _context_line(result: dict) -> str:
    d = result["data"]
    return (f"Profile {result['profile']} ({d['source']} {d['split']}, {d['videos']} videos, {d['frames']} frames, "
            f"grid {d['grid'][0]}x{d['grid'][1]} = {d['num_patches']} patches, {d['arch']}); selection at the "
            f"input of layer {result['layer']} (block {result['block']}, 0-based), blocks before it dense, trained "
            f"dense model without fine-tuning; k = floor(keep ratio x N) patches kept; AP by the results table's "
            f"inference loop and eval settings on these frames. This study goes beyond the paper's text (EVTP-IVS states the "
            f"coverage-performance premise without the analysis); all numbers are ours.")


def _method(row: pd.Series, nseeds: int) -> str:
    if row["selector"] == "random":
        return f"random (mean of {nseeds} seeds)"
    return row["label"]


def rows_frame(result: dict, aggregate_random: bool = True) -> pd.DataFrame:
    """The study's rows as a DataFrame with a ``method`` column; random seeds averaged when ``aggregate_random``
    (``*_sd`` columns hold the standard deviation over seeds, 0 for deterministic selectors)."""
    df = pd.DataFrame(result["rows"])
    for col in ("coverage", "radius", "IoI", "IoI_S", "IoI_M", "IoI_L", "fg_share_of_kept", "AP", "AP50"):
        if col in df:  # undefined metrics are stored as null: keep the column numeric (NaN)
            df[col] = pd.to_numeric(df[col], errors="coerce")
    nseeds = max(1, int((df.selector == "random").groupby(df.keep_ratio).sum().max() or 1))
    df["method"] = df.apply(_method, axis=1, nseeds=nseeds)
    df["family"] = df["selector"]
    if not aggregate_random:
        return df
    keys = ["method", "family", "keep_ratio"]
    num = [c for c in df.columns if c not in ("condition", "selector", "label", "lam", "seed", *keys)
           and pd.api.types.is_numeric_dtype(df[c])]
    order = list(dict.fromkeys(df["method"]))
    g = df.groupby(keys, sort=False)
    mean = g[num].mean().reset_index()
    sd = g[["coverage", "IoI"] + (["AP"] if "AP" in df else [])].std(ddof=0).fillna(0.0).add_suffix("_sd")
    out = mean.join(sd.reset_index(drop=True))
    out["lam"] = g["lam"].first().values
    out["method"] = pd.Categorical(out["method"], order, ordered=True)
    return out.sort_values(["keep_ratio", "method"]).reset_index(drop=True)


def _pct(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else 100.0 * v


def _table_entry(ctx: Context, df: pd.DataFrame, stem: str, title: str, caption: str, floatfmt: str = ".2f") -> Entry:
    paths = write_table(df, ctx.reports_dir / stem, floatfmt=floatfmt)
    return Entry("table", title, relative(ctx, paths), caption, inline=df.to_markdown(index=False, floatfmt=floatfmt))


def table(ctx: Context, result: dict) -> list[Entry]:
    """Per selector x keep ratio (coverage, radius, IoI, IoI_S/M/L, AP) and the correlation table."""
    df = rows_frame(result)
    has_ap = "AP" in df
    out = pd.DataFrame({
        "selector": df["method"].astype(str),
        "keep ratio (%)": 100 * df["keep_ratio"],
        "k (patches)": df["k"].round().astype(int),
        "coverage (patches)": df["coverage"],
        "radius (patches)": df["radius"],
        "IoI (%)": df["IoI"].map(_pct),
        "IoI_S (%)": df["IoI_S"].map(_pct),
        "IoI_M (%)": df["IoI_M"].map(_pct),
        "IoI_L (%)": df["IoI_L"].map(_pct),
        "fg share of kept (%)": df["fg_share_of_kept"].map(_pct),
    })
    if has_ap:
        out["AP (%)"] = df["AP"].map(_pct)
        out["AP50 (%)"] = df["AP50"].map(_pct)
    cap_rows = (f"{_context_line(result)} coverage = mean distance from every patch to its nearest kept patch "
                f"(patch units, lower = better covered); radius = the largest such distance (k-center objective), "
                f"both averaged over frames. IoI = share of ground-truth instance patches in the selected set "
                f"(instance pooling; S <= 10 % < M <= 20 % < L of the frame area); fg share = share of the kept "
                f"patches on instances. " + ("AP = YouTube-VIS video AP of the dense-trained model run with the "
                                             "selection, on the processed frames only. " if has_ap else "")
                + "Random: mean over seeds. The last row (keep ratio 100 %) is the unpruned reference.")
    corr = pd.DataFrame(result["correlations"])
    ct = pd.DataFrame({
        "quality": corr["metric"], "vs": corr["x"], "scope": corr["scope"], "n": corr["n"],
        "Spearman rho": corr["spearman_rho"], "Spearman p": corr["spearman_p"],
        "Pearson r": corr["pearson_r"], "Pearson p": corr["pearson_p"], "note": corr["note"],
    })
    cap_corr = (f"{_context_line(result)} Correlation (scipy.stats, two-sided p) between coverage (or covering "
                f"radius) and segmentation quality over the selection conditions (every selector / λ / seed; the "
                f"unpruned reference excluded), pooled over keep ratios and within each keep ratio. Coverage is a "
                f"distance, so EVTP's premise predicts negative coefficients. Pooled coefficients are dominated by "
                f"the keep ratio itself (more tokens: better coverage and better quality); the within-ratio rows "
                f"test the premise at equal budget.")
    return [
        _table_entry(ctx, out, "selectors_study", "Token selection study: coverage, IoI and AP per selector and "
                     "keep ratio (beyond the paper)", cap_rows),
        _table_entry(ctx, ct, "selectors_correlation", "Token selection study: coverage vs segmentation quality "
                     "correlation (beyond the paper)", cap_corr, floatfmt=".3g"),
    ]


def _figure_entry(ctx: Context, fig: plt.Figure, stem: str, title: str, caption: str) -> Entry:
    paths = save_figure(fig, ctx.reports_dir / stem)
    rel = relative(ctx, paths)
    return Entry("figure", title, rel, caption, inline=f"![{title}]({rel['png']})")


def _corr_text(result: dict, metric: str, x: str = "coverage") -> str:
    for c in result["correlations"]:
        if c["metric"] == metric and c["x"] == x and c["keep_ratio"] is None:
            if c["spearman_rho"] is None:
                return f"n={c['n']}: {c['note']}"
            return (f"Spearman ρ={c['spearman_rho']:.2f} (p={c['spearman_p']:.2g}), Pearson r={c['pearson_r']:.2f} "
                    f"(p={c['pearson_p']:.2g}), n={c['n']}")
    return "not computed"


def _within_text(result: dict, metric: str) -> str:
    parts = []
    for c in result["correlations"]:
        if c["metric"] == metric and c["x"] == "coverage" and c["keep_ratio"] is not None:
            rho = "--" if c["spearman_rho"] is None else f"{c['spearman_rho']:.2f} (p={c['spearman_p']:.2g})"
            parts.append(f"r={100 * c['keep_ratio']:g} %: ρ={rho}")
    return "; ".join(parts)


def figure(ctx: Context, result: dict) -> list[Entry]:
    """(1) coverage vs keep ratio, (2) IoI / AP vs coverage scatter with correlations, (3) qualitative panel."""
    entries = []
    agg = rows_frame(result, aggregate_random=False)
    sel = agg[agg.selector != "dense"].copy()
    sel["keep ratio (%)"] = 100 * sel["keep_ratio"]
    methods = list(dict.fromkeys(sel["method"]))
    palette = dict(zip(methods, sns.color_palette("tab10", len(methods))))

    # (1) coverage and radius vs keep ratio
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, col, lab in ((axes[0], "coverage", "mean coverage distance (patches)"),
                         (axes[1], "radius", "covering radius (patches)")):
        sns.lineplot(data=sel, x="keep ratio (%)", y=col, hue="method", palette=palette, marker="o",
                     errorbar="sd", ax=ax, legend=ax is axes[1])
        ax.set_ylabel(lab)
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Spatial coverage of training-free selections (layer {result['layer']}, {result['profile']})")
    entries.append(_figure_entry(
        ctx, fig, "selectors_coverage", "Token selection study: coverage vs keep ratio (beyond the paper)",
        f"{_context_line(result)} Lower is better covered; random shows mean ± sd over seeds."))

    # (2) quality vs coverage
    metrics = [m for m in ("IoI", "AP") if m in sel and sel[m].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        d = sel.assign(**{f"{m} (%)": 100 * sel[m]})
        sns.scatterplot(data=d, x="coverage", y=f"{m} (%)", hue="method", palette=palette, size="keep ratio (%)",
                        sizes=(20, 120), ax=ax, legend=ax is axes[0][-1])
        ax.set_xlabel("mean coverage distance (patches, lower = better)")
        ax.set_title(f"{m} vs coverage\n{_corr_text(result, m)}", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"Segmentation quality vs coverage (layer {result['layer']}, {result['profile']})")
    within = " ".join(f"Within keep ratio, {m} vs coverage: {_within_text(result, m)}." for m in metrics)
    entries.append(_figure_entry(
        ctx, fig, "selectors_quality_vs_coverage",
        "Token selection study: IoI / AP vs coverage (EVTP premise, beyond the paper)",
        f"{_context_line(result)} One point per selector / λ / seed and keep ratio. Pooled correlations in the "
        f"titles (the premise predicts negative). {within}"))

    # (3) qualitative panel
    q = result.get("qualitative") or {}
    if q.get("image") and q.get("kept"):
        img = plt.imread(str(ctx.results_dir / q["image"]))
        if img.dtype != np.uint8:
            img = (img[..., :3] * 255).astype(np.uint8) if img.max() <= 1.0 else img[..., :3].astype(np.uint8)
        hp, wp = q["grid"]
        names = list(q["kept"])
        ncol = min(4, len(names) + 1)
        nrow = int(np.ceil((len(names) + 1) / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(2.8 * ncol, 2.8 * nrow * img.shape[0] / img.shape[1] + 0.4))
        axes = np.atleast_1d(axes).ravel()
        axes[0].imshow(img)
        axes[0].set_title("frame", fontsize=8)
        ph, pw = img.shape[0] / hp, img.shape[1] / wp
        for ax, name in zip(axes[1:], names):
            keep = np.zeros(hp * wp, bool)
            keep[q["kept"][name]] = True
            shade = np.kron(keep.reshape(hp, wp), np.ones((int(round(ph)), int(round(pw)))))
            shade = shade[:img.shape[0], :img.shape[1]]
            if shade.shape != img.shape[:2]:
                shade = np.pad(shade, ((0, img.shape[0] - shade.shape[0]), (0, img.shape[1] - shade.shape[1])))
            ax.imshow((img * (0.25 + 0.75 * shade[..., None])).astype(np.uint8))
            ax.set_title(q["labels"][name], fontsize=8)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"Kept patches at {100 * q['keep_ratio']:g} % (k={q['k']}), layer {result['layer']}; "
                     f"dark = dropped", fontsize=9)
        entries.append(_figure_entry(
            ctx, fig, "selectors_qualitative", "Token selection study: kept patches per selector (beyond the paper)",
            f"{_context_line(result)} Video {q['video_id']}, frame {q['frame_index']}; dropped patches darkened; "
            f"random: first seed."))
    return entries
