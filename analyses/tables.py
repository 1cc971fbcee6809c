"""Tables of the reports, one renderer per artifact: ``TABLES[name](ctx, result) -> list[Entry]``.

Each renderer reads only the saved result dict, writes Markdown + CSV + LaTeX under ``reports/<profile>/``
and returns index entries. Paper values (``analyses.paper_values``) appear in separate, labelled rows or
columns, never mixed into ours without a label.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from analyses import fgs, selectors
from analyses.bench import bench_report
from analyses.paper_values import (
    AP_LOSS_FIG4,
    AP_LOSS_FIG4_SOURCE,
    IOI_TABLE8,
    IOI_TABLE8_SOURCE,
    KAPPA_TABLE7,
    KAPPA_TABLE7_SOURCE,
    RESULTS_README,
    RESULTS_README_SOURCE,
)
from analyses.render import Entry, relative, write_table
from experiments.common import Context
from vppkit.engine.train import stage_config


def _table_entry(ctx: Context, df: pd.DataFrame, stem: str, title: str, caption: str,
                 floatfmt: str = ".2f") -> Entry:
    paths = write_table(df, ctx.reports_dir / stem, floatfmt=floatfmt)
    return Entry("table", title, relative(ctx, paths), caption,
                 inline=df.to_markdown(index=False, floatfmt=floatfmt, missingval="–"))


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


def _ours_note(ctx: Context, result: dict) -> str:
    prov = result.get("provenance", {})
    return (f"Ours: profile `{ctx.profile}`, seed {prov.get('seed')}, commit `{prov.get('commit')}`, "
            f"{prov.get('time_utc')}.")


#: How each inference mode is described in captions (experiments.zoo.MODES).
MODE_TEXT = {"noise": "Gumbel noise kept at inference, seeded per video (the official code; supplementary §B; "
                      "the default)",
             "deterministic": "deterministic inference (argmax / noise-free top-k, no Gumbel noise)"}


def mode_note(result: dict) -> str:
    """Caption sentence naming the inference mode of the pruned models a result was built from (its
    ``config["mode"]``, :func:`experiments.zoo.evaluate_many`); empty for results that predate the field."""
    mode = (result.get("config") or {}).get("mode")
    return f" Pruned models: {MODE_TEXT[mode]}." if mode in MODE_TEXT else ""


def results_table(ctx: Context, result: dict) -> list[Entry]:
    ours = pd.DataFrame(result["rows"])
    if "mode" not in ours:
        ours["mode"] = None
    ours = ours.assign(source="ours")[["source", "model", "mode", "goal_PKR", "PKR", "AP_track", "mAP_bbox",
                                       "mAP_segm"]]
    dense = ours.iloc[0]
    for col in ("AP_track", "mAP_bbox", "mAP_segm"):
        ours[f"Δ{col}"] = ours[col] - dense[col]
    paper = pd.DataFrame(RESULTS_README).assign(source="paper", goal_PKR=None, mode="noise")
    out = pd.concat([ours, paper[["source", "model", "mode", "goal_PKR", "PKR", "AP_track", "mAP_bbox", "mAP_segm"]]],
                    ignore_index=True)
    out = out.rename(columns={"mode": "inference", "goal_PKR": "goal PKR (%)", "PKR": "PKR (%)",
                              "AP_track": "AP_track (%)", "mAP_bbox": "mAP_bbox (%)", "mAP_segm": "mAP_segm (%)"})
    default = result.get("profile_mode")
    cap = ("AP_track = YouTube-VIS video AP; mAP_bbox / mAP_segm = frame-level COCO AP of the per-frame track "
           "predictions; PKR = realised patch keep ratio over every evaluated frame; Δ = difference to our dense "
           "model. Each pruned model is evaluated in both inference modes: 'noise' = "
           f"{MODE_TEXT['noise']}; 'deterministic' = {MODE_TEXT['deterministic']}. "
           + (f"This profile's mode (eval.inference_noise), used by every other artifact: {default}. " if default
              else "")
           + "Rows 'paper' are quoted from "
           f"{RESULTS_README_SOURCE} (ViT-Adapter + ROVIS on YouTube-VIS 2021; the official code keeps the noise); "
           "ours are on this profile's held-out videos with vppkit's small VIS model, so absolute values are not "
           "comparable, only trends. " + _ours_note(ctx, result))
    return [_table_entry(ctx, out, "results_table", "Results table: AP_track, mAP_bbox, mAP_segm (README table)", cap)]


def ioi_table(ctx: Context, result: dict) -> list[Entry]:
    ours = pd.DataFrame(result["rows"]).assign(source="ours", dataset=ctx.profile)
    paper = pd.DataFrame(IOI_TABLE8).assign(source="paper")
    cols = ["source", "dataset", "goal_PKR", "method", "PKR", "IoI", "IoI_S", "IoI_M", "IoI_L"]
    out = pd.concat([ours.reindex(columns=cols + ["n_S", "n_M", "n_L"]), paper.reindex(columns=cols)],
                    ignore_index=True)
    out = out.rename(columns={"goal_PKR": "goal PKR (%)", "PKR": "PKR (%)", "IoI": "IoI (%)", "IoI_S": "IoI_S (%)",
                              "IoI_M": "IoI_M (%)", "IoI_L": "IoI_L (%)"})
    cap = ("IoI = |kept ∩ instance patches| / |instance patches| per frame, instance and block, averaged over the "
           "12 blocks and over (instance, frame) pairs; S ≤ 10 %, 10 % < M ≤ 20 %, L > 20 % of the frame area; "
           f"patch membership rule '{result.get('patch_rule')}'. n_* = (instance, frame) pairs per bin. Paper rows: "
           f"{IOI_TABLE8_SOURCE}. " + _ours_note(ctx, result) + mode_note(result))
    return [_table_entry(ctx, out, "ioi_table", "IoI by object size (Table 8)", cap)]


def density_table(ctx: Context, result: dict) -> list[Entry]:
    df = pd.DataFrame(result["rows"])
    wide = df.pivot_table(index="layer", columns="variant", values="density", sort=False).reset_index()
    for name, fr in result["vpp_nominal"].items():
        wide[f"{name} nominal"] = fr
    wide.columns = [str(c) for c in wide.columns]
    cap = ("Fraction of patch tokens processed per layer (1 = dense), global sums over every evaluated frame "
           "(first frames included: VPP runs layers 2-3 dense there). 'nominal' = the VPP schedule's targets. "
           + _ours_note(ctx, result) + mode_note(result))
    return [_table_entry(ctx, wide, "density_table", "Patch density per layer (Fig. 5), table", cap, ".3f")]


def kappa_table(ctx: Context, result: dict) -> list[Entry]:
    ours = pd.DataFrame(result["rows"]).assign(source="ours")
    paper = pd.DataFrame(KAPPA_TABLE7).assign(source="paper")
    cols = ["source", "kappa_init", "PKR", "AP", "mAP_segm", "IoI"]
    out = pd.concat([ours.reindex(columns=cols), paper.reindex(columns=cols)], ignore_index=True)
    out = out.rename(columns={"kappa_init": "κ_init", "PKR": "PKR (%)", "AP": "AP (%)", "mAP_segm": "mAP_segm (%)",
                              "IoI": "IoI (%)"})
    cap = (f"VPP at goal PKR 55 % with κ_init (Map-SM sparsity target on the soft keep probabilities). Paper rows: "
           f"{KAPPA_TABLE7_SOURCE}. " + _ours_note(ctx, result) + mode_note(result))
    return [_table_entry(ctx, out, "kappa_table", "κ_init ablation (Table 7)", cap)]


def curves_table(ctx: Context, result: dict) -> list[Entry]:
    ours = pd.DataFrame(result["rows"]).assign(source="ours", dataset=ctx.profile)
    paper = pd.DataFrame(AP_LOSS_FIG4).assign(source="paper")
    cols = ["source", "dataset", "method", "PKR", "AP_loss"]
    out = pd.concat([ours.reindex(columns=cols + ["AP", "mAP_segm_loss"]), paper.reindex(columns=cols)],
                    ignore_index=True)
    out = out.rename(columns={"PKR": "PKR (%)", "AP_loss": "AP loss (AP points)", "AP": "AP (%)",
                              "mAP_segm_loss": "mAP_segm loss (points)"})
    cap = (f"AP loss = dense AP − pruned AP (ours: dense AP {result['dense_AP']:.2f} %). Paper rows: "
           f"{AP_LOSS_FIG4_SOURCE}. " + _ours_note(ctx, result) + mode_note(result))
    return [_table_entry(ctx, out, "ap_vs_pkr_table", "AP loss vs PKR (Fig. 4), table", cap)]


def flops_table(ctx: Context, result: dict) -> list[Entry]:
    ours = pd.DataFrame(result["rows"]).drop(columns=["variant"])
    ours = ours.rename(columns={"goal_PKR": "goal PKR (%)", "PKR": "PKR (%)", "backbone_GMACs": "backbone GMACs",
                                "overhead_GMACs": "pruner overhead GMACs", "total_GMACs": "total GMACs",
                                "ideal_speedup": "ideal speed-up", "ms_per_frame_whole_model": "ms/frame (whole model)"})
    paper_scale = pd.DataFrame(result["paper_scale"]).drop(columns=["note"]).rename(
        columns={"nominal_PKR": "nominal PKR (%)", "backbone_GMACs": "backbone GMACs",
                 "overhead_GMACs": "pruner overhead GMACs", "total_GMACs": "total GMACs"})
    cap = (f"GMACs (1 multiply-add = 1) of the ViT backbone ({result['model']}, input {result['img_size']}) "
           "averaged over every evaluated frame from its own per-block token counts; pruner overhead (Map-SM "
           "association, gates) separate; ideal speed-up = dense / (pruned + overhead). ms/frame = whole-model "
           "online inference during evaluation (gathered execution, this machine; see bench.md for controlled "
           "timings). " + _ours_note(ctx, result) + mode_note(result))
    cap2 = ("Closed-form GMACs at paper scale (960x544 input, N = 60x34 = 2040 patches) under each method's nominal "
            "schedule (no model run; vpp-notes §8.4). Computed by vppkit, not reported by the paper.")
    entries = [_table_entry(ctx, ours, "cost_table", "Cost table: GMACs and speed per method and PKR", cap),
               _table_entry(ctx, paper_scale, "cost_paper_scale", "Cost at paper scale (nominal schedules)", cap2)]
    if result.get("bench_rows"):
        bench = pd.DataFrame(result["bench_rows"]).rename(columns={
            "PKR": "PKR (%)", "ms_per_frame": "ms/frame", "measured_speedup": "measured speed-up",
            "ideal_speedup": "ideal speed-up", "realized_over_ideal": "realized/ideal"})
        prov = result.get("bench_provenance") or {}
        cap3 = ("Measured speed from `make bench` (backbone only, gathered execution, real pruner modules at the "
                "nominal keep schedule, median of repeats; full report in bench.md). Measured at commit "
                f"`{prov.get('commit')}`, {prov.get('time_utc')}, device {prov.get('device')}.")
        entries.append(_table_entry(ctx, bench, "cost_speed", "Cost table: measured speed (benchmark)", cap3))
    return entries


def oracle_table(ctx: Context, result: dict) -> list[Entry]:
    df = pd.DataFrame(result["rows"])
    dense = df[df.condition == "dense"].iloc[0]
    wide = df[df.condition != "dense"].pivot_table(index="fraction", columns="condition", values="AP",
                                                   sort=False).reset_index()
    out = pd.DataFrame({
        "dropped share of instance patches (%)": 100 * wide["fraction"],
        "dense AP (%)": dense["AP"],
        "AP, instance patches dropped (%)": wide["drop_instance"],
        "AP, as many background patches dropped (%)": wide["drop_background"],
    })
    out["ΔAP instance − background"] = out.iloc[:, 2] - out.iloc[:, 3]
    data = result["data"]
    cap = (f"Trained dense model, no fine-tuning: the dropped patches skip every block from block {result['block']} "
           "on (keep masks given from outside, drawn at random per frame; as many background as instance patches). "
           "A negative Δ means the model needs its instance patches more (the premise of VPP supp. §E that task-"
           "trained gates favour instances); a positive Δ means it needs the background more, and a task-trained "
           f"gate will spend its budget there. {data['frames']} frames of {data['videos']} held-out videos; instance "
           f"patches are {data['instance_patch_share']:.1f} % of all patches (rule '{data['patch_rule']}'). AP by the "
           "results table's inference loop and eval settings; with every frame of every held-out video the dense AP "
           "is the results table's. "
           "Beyond the paper: it reports no such experiment. " + _ours_note(ctx, result))
    return [_table_entry(ctx, out, "oracle_table", "Oracle pruning: instance vs background patches", cap, ".1f")]


def training_table(ctx: Context, result: dict) -> list[Entry]:
    """Last-10 %-of-steps means of the training curves (:mod:`experiments.training`): losses and, per pruning
    layer, realised keep ratio vs target."""
    rows = []
    for name, r in result["runs"].items():
        row = {"model": r["label"], "stage": r["stage"], "steps": r["steps"],
               "task loss": r["final"].get("loss_seg"), "sparsity loss": r["final"].get("loss_sparse")}
        for b in r["pruning_blocks"]:
            real = r["final"].get(f"keep_b{b}")
            row[f"layer {b + 1}"] = (f"{real:.3f} / {r['targets'][str(b)]:.3f}" if real is not None
                                     else f"– / {r['targets'][str(b)]:.3f}")
        rows.append(row)
    out = pd.DataFrame(rows)
    layers = [c for c in out.columns if c.startswith("layer ")]
    out[layers] = out[layers].fillna("–")
    cap = ("Mean over the last 10 % of each run's optimizer steps (metrics.csv, training mode): task loss "
           "(frame-weighted segmentation loss), sparsity loss, and per pruning layer 'realised keep ratio / "
           "target' (fraction of patch tokens the layer processes; mean over the batch and the chain frames that "
           "have a previous frame). Curves: training_curves.png. " + _ours_note(ctx, result))
    return [_table_entry(ctx, out, "training_table", "Training curves: end-of-training losses and keep ratios",
                         cap, ".3f"), *training_cost_table(ctx, result)]


def training_cost_table(ctx: Context, result: dict) -> list[Entry]:
    """Training cost per run (:func:`experiments.training.step_cost`): ms per optimizer step (median, IQR), CPU ms,
    load, steps and the run's wall time; [] when no run logged its step times."""
    rows = []
    for r in result["runs"].values():
        c = r.get("cost") or {}
        if not c:
            continue
        rows.append({"model": r["label"], "stage": r["stage"], "steps": r["steps"],
                     "ms / step (median)": c["ms_median"], "IQR (ms)": f"{c['ms_q25']:.0f}-{c['ms_q75']:.0f}",
                     "CPU ms / step": c["cpu_ms_median"], "load (1-min, median)": c["load1_median"],
                     "run wall time (min)": c["wall_s"] / 60.0})
    if not rows:
        return []
    cap = ("Measured in this profile's training runs (metrics.csv: wall `sec` per optimizer step = waiting for the "
           "batch + forward + backward + update; `cpu_sec` of the training process, all threads). Dense: "
           f"{stage_config(ctx.cfg, 'dense')['batch']} clips x {stage_config(ctx.cfg, 'dense')['clip_frames']} "
           "frames per step "
           "(frozen backbone: under no_grad); sparse: "
           f"{stage_config(ctx.cfg, 'sparse')['batch']} x {stage_config(ctx.cfg, 'sparse')['clip_frames']}-frame "
           "chains in masked execution (every block runs all N tokens, so a sparse step is not cheaper than a dense "
           "one). Wall times depend on the machine's load, shown per run. " + _ours_note(ctx, result))
    return [_table_entry(ctx, pd.DataFrame(rows), "training_cost", "Training cost: ms per optimizer step", cap,
                         ".1f")]


def featcache_table(ctx: Context, result: dict) -> list[Entry]:
    """Dense AP at equal wall time, backbone features cached vs not (:mod:`experiments.featcache`); a one-row
    note when the profile has no such comparison (its ``skipped`` reason)."""
    title = "Dense AP at equal wall time: cached vs uncached backbone features"
    if result.get("skipped"):
        out = pd.DataFrame([{"comparison": "not run", "reason": result["skipped"]}])
        return [_table_entry(ctx, out, "featcache_table", title,
                             "The dense stage trains on cached backbone features only when its backbone is frozen "
                             "(train.dense.feature_cache). " + _ours_note(ctx, result))]
    rows = []
    for r in result["rows"]:
        rows.append({"run": r["arm"], "backbone features": "cached" if r["feature_cache"] else "every step",
                     "steps": r["steps"], "cache build (s)": r["cache_seconds"],
                     "training steps (s)": r["train_seconds"], "wall total (s)": r["seconds"],
                     "CPU total (s)": r["cpu_seconds"], "video AP (%)": r["AP"], "mAP_segm (%)": r["mAP_segm"],
                     "profile's dense model": "yes" if r["profile_dense"] else "no"})
    out = pd.DataFrame(rows)
    better = result["better"]
    cap = ("The dense stage on a frozen backbone, trained twice: backbone run at every step (uncached) and on "
           "backbone outputs computed once per (training frame, flip) (cached, train.dense.feature_cache; its step "
           "count chosen so that its total time, cache build included, is about the uncached run's: "
           "scripts/featcache_cost.py). Seconds: wall / process-CPU time of the optimizer steps (sum of metrics.csv "
           "sec / cpu_sec) plus the cache build (what building the run's cache entries cost when they were built: "
           "frame decoding, backbone forward, write); model and data set-up before the first step, the same for "
           "both, not counted. The runs may have met different loads on a shared machine: compare the CPU column "
           "too. Video AP and mAP_segm on the held-out split, as every dense evaluation. "
           f"Higher video AP: {better}. " + _ours_note(ctx, result))
    return [_table_entry(ctx, out, "featcache_table", title, cap, ".1f")]


TABLES: dict[str, Callable[[Context, dict], list[Entry]]] = {
    "fgs": fgs.table,
    "selectors": selectors.table,
    "evtp": evtp_table,
    "bench": bench_report,
    "results": results_table,
    "ioi": ioi_table,
    "density": density_table,
    "kappa": kappa_table,
    "curves": curves_table,
    "flops": flops_table,
    "oracle": oracle_table,
    "training": training_table,
    "featcache": featcache_table,
}
