"""Training-free token selection study (issue 7, beyond the paper's text): coverage vs segmentation quality.

EVTP-IVS states as its empirical premise that "subset token coverage correlates with segmentation
performance" (evtp-notes §1, §4) but its correlation figure and coefficients were not retrievable. This
study tests the premise on our ViT VIS model: the training-free selectors of
:mod:`vppkit.models.pruning.selection` (random, uniform grid, attention received, plain k-center, DivPrune,
spatial k-center with a λ sweep) choose k = round(r·N) patch tokens of every frame **at one block b**
(0-based; figures say layer b+1) from the tokens entering that block; blocks 0..b-1 run dense, blocks
b..depth-1 process only the selection (dropped tokens keep their block-b value, the PrunableViT convention).

Measured per (selector, λ, seed, keep ratio), on the held-out split (subsampled frames):

- ``coverage``: :func:`~vppkit.models.pruning.selection.spatial_coverage`, mean distance (patch units) from
  every patch to its nearest kept patch, averaged over frames (lower = better coverage); ``radius``: the
  covering radius (max over patches of that distance, the k-center objective), averaged over frames.
- ``IoI`` (+ ``IoI_S/M/L``): recall of ground-truth instance patches by the selected set
  (:class:`vppkit.metrics.ioi.IoIAccumulator` fed with the (depth, N) keep schedule, read at block b,
  instance pooling; size bins S <= 10 % < M <= 20 % < L of the frame area).
- ``AP`` (+ AP50, AP75, APs/m/l, AR): YouTube-VIS video AP of the *trained dense* VIS model run with the
  selection applied from block b on (:class:`~vppkit.models.pruning.base.ExternalMaskPruner` over the same
  trained ViT weights; no fine-tuning), :func:`vppkit.metrics.ytvis_ap.evaluate_video_ap` against the
  ground truth restricted to the processed videos and frames.
- correlations of coverage with IoI and with AP (Spearman and Pearson, ``scipy.stats``, with p-values and n):
  pooled over every (condition, ratio) point, and within each keep ratio (the premise is about subsets of
  equal size). The premise predicts a **negative** correlation (smaller coverage distance, better quality).

Cost caveat: this is an analysis, not an efficient implementation. The selection needs the tokens entering
block b, so every frame is run twice: a dense pass through blocks 0..b (block b only for its attention
probabilities, used by the attention-received selector) and then the pruned pass from the image again,
which recomputes blocks 0..b-1. The attention selector uses block b's own attention (VisPruner uses the
encoder's attention the same way), which an efficient implementation could not have before running block b.

Settings: an optional ``selectors:`` section of the profile config overrides :data:`DEFAULTS` (block,
keep_ratios, lambdas, selectors, seeds, max_videos, frame_stride, max_frames, ap, qualitative_ratio, batch);
the settings used are stored in the result.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from experiments.common import Context

log = logging.getLogger("vppkit.experiments")

DEFAULTS: dict[str, Any] = {
    "block": 3,                                   # 0-based block whose input tokens are selected (layer 4)
    "keep_ratios": [0.05, 0.1, 0.2, 0.3, 0.5],    # kept fraction of the N patch tokens
    "lambdas": [0.0, 0.25, 0.5, 1.0, 2.0],        # spatial k-center λ sweep
    "selectors": ["random", "uniform", "attention", "kcenter", "divprune", "spatial_kcenter"],
    "seeds": [0, 1, 2],                           # random selector: one condition per seed
    "max_videos": 4,                              # first videos of the held-out split
    "frame_stride": 2,                            # every s-th frame ...
    "max_frames": 8,                              # ... at most this many per video (stride grows to spread them)
    "split": "val",
    "ap": True,                                   # run the pruned VIS model and evaluate video AP
    "qualitative_ratio": 0.2,                     # keep ratio shown in the qualitative panel
    "batch": 16,                                  # frames per forward
}

LABELS = {"random": "random", "uniform": "uniform grid", "attention": "attention received",
          "kcenter": "k-center (L2)", "divprune": "DivPrune", "spatial_kcenter": "spatial k-center"}


# ----------------------------------------------------------------------------------------------------------------
# settings and conditions
# ----------------------------------------------------------------------------------------------------------------
def study_settings(cfg: dict) -> dict:
    """:data:`DEFAULTS` overridden by the config's optional ``selectors:`` section.

    Args:
        cfg: a resolved profile config.

    Returns:
        dict of settings (JSON types).

    Raises:
        ValueError: an unknown key, an unknown selector name, or keep ratios outside (0, 1].
    """
    from vppkit.models.pruning.selection import SELECTORS

    given = dict(cfg.get("selectors") or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"selectors: unknown setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    s = {**copy.deepcopy(DEFAULTS), **given}
    bad = [n for n in s["selectors"] if n not in SELECTORS]
    if bad:
        raise ValueError(f"selectors.selectors: unknown selector(s) {bad}; known: {sorted(SELECTORS)}")
    ratios = [float(r) for r in s["keep_ratios"]]
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise ValueError(f"selectors.keep_ratios must lie in (0, 1], got {ratios}")
    s["keep_ratios"] = sorted(ratios)
    s["lambdas"] = [float(v) for v in s["lambdas"]]
    if any(v < 0 for v in s["lambdas"]):
        raise ValueError(f"selectors.lambdas must be >= 0, got {s['lambdas']}")
    s["seeds"] = [int(v) for v in s["seeds"]]
    for key in ("block", "max_videos", "frame_stride", "max_frames", "batch"):
        s[key] = int(s[key])
    if s["frame_stride"] < 1 or s["max_frames"] < 1 or s["max_videos"] < 1 or s["batch"] < 1:
        raise ValueError("selectors: frame_stride, max_frames, max_videos and batch must be >= 1")
    s["ap"] = bool(s["ap"])
    s["qualitative_ratio"] = float(s["qualitative_ratio"])
    return s


def conditions(settings: dict) -> list[dict]:
    """One dict per selection condition: ``name``, ``selector``, ``lam`` (or None), ``seed`` (or None), ``label``.

    ``spatial_kcenter`` gets one condition per λ; λ = 0 is skipped when ``divprune`` is also studied (the two
    are the same algorithm with the same init, docstring of ``select_divprune``). ``random`` gets one
    condition per seed.
    """
    out = []
    for name in settings["selectors"]:
        if name == "random":
            out += [{"name": f"random_s{s}", "selector": name, "lam": None, "seed": s, "label": f"random (seed {s})"}
                    for s in settings["seeds"]]
        elif name == "spatial_kcenter":
            for lam in settings["lambdas"]:
                if lam == 0 and "divprune" in settings["selectors"]:
                    continue
                out.append({"name": f"spatial_kcenter_l{lam:g}", "selector": name, "lam": lam, "seed": None,
                            "label": f"spatial k-center λ={lam:g}"})
        else:
            out.append({"name": name, "selector": name, "lam": None, "seed": None, "label": LABELS.get(name, name)})
    return out


def frame_indices(num_frames: int, stride: int, max_frames: int) -> list[int]:
    """Frames of a video used by the study: every ``s``-th frame from 0, at most ``max_frames``, with
    ``s = max(stride, ceil(num_frames / max_frames))`` so the kept frames span the video."""
    s = max(int(stride), math.ceil(num_frames / max(1, max_frames)))
    return list(range(0, num_frames, s))[:max_frames]


def keep_count(ratio: float, num_patches: int) -> int:
    """k = round(ratio · N), clipped to [1, N]."""
    return int(min(num_patches, max(1, round(ratio * num_patches))))


# ----------------------------------------------------------------------------------------------------------------
# model pieces
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def block_features(model, images: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Dense tokens entering ``block`` and the attention each patch receives in that block.

    Runs the backbone's own pieces (``embed``, timm blocks 0..block-1 dense, then
    :func:`vppkit.models.vit.block_attention_probs` on ``block``); same values as the dense
    ``forward(..., return_intermediates=True).intermediates[block]``.

    Args:
        model: a :class:`vppkit.models.vis.model.VISModel` (its ``normalize`` and ``backbone`` are used); the
            backbone's pruner is ignored.
        images: (B, 3, H, W) uint8 frames at the model input size.
        block: 0-based block b.

    Returns:
        (x_b (B, N, C) patch tokens entering block b (prefix excluded), received (B, N) attention received
        by each patch in block b (mean over query tokens incl. prefix, then heads; VisPruner's SigLIP rule),
        grid (Hp, Wp)).

    Raises:
        ValueError: block outside [0, depth).
    """
    from vppkit.models.vit import attention_stats, block_attention_probs

    bb = model.backbone
    if not 0 <= block < bb.depth:
        raise ValueError(f"block must be in [0, {bb.depth}), got {block}")
    x, grid = bb.embed(model.normalize(images))
    for blk in bb.vit.blocks[:block]:
        x = blk(x)
    p = bb.num_prefix_tokens
    _, attn = block_attention_probs(bb.vit.blocks[block], x)
    _, received = attention_stats(attn, p, bb.has_cls)
    return x[:, p:], received, tuple(grid)


def select_tokens(cond: dict, tokens: torch.Tensor, k: int, grid: tuple[int, int],
                  attention: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run one condition's selector on a batch of frames.

    Args:
        cond: a :func:`conditions` entry.
        tokens: (B, N, C) tokens entering the selection block.
        k: tokens kept per frame.
        grid: (Hp, Wp).
        attention: (B, N) attention received (needed by ``attention``).
        generator: CPU generator for ``random`` (independent draws per frame).

    Returns:
        (B, N) bool keep mask.
    """
    from vppkit.models.pruning.selection import SELECTORS, keep_mask_from_indices

    name = cond["selector"]
    fn = SELECTORS[name]
    if name == "random":
        idx = fn(tokens, k, grid, generator=generator)
    elif name == "attention":
        idx = fn(tokens, k, grid, attention=attention)
    elif name == "spatial_kcenter":
        idx = fn(tokens, k, grid, lam=float(cond["lam"]))
    else:
        idx = fn(tokens, k, grid)
    return keep_mask_from_indices(idx, tokens.shape[1])


def schedule_masks(selection: torch.Tensor, block: int, depth: int) -> torch.Tensor:
    """(B, N) bool selection -> (B, depth, N) keep schedule: all patches before ``block``, the selection from it on."""
    b, n = selection.shape
    masks = torch.ones(b, depth, n, dtype=torch.bool)
    masks[:, block:] = selection.bool().unsqueeze(1)
    return masks


def covering_radius(keep: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Max over patches of the distance to the nearest kept patch (patch units). keep (B, N) bool -> (B,)."""
    from vppkit.models.pruning.selection import grid_distance

    d = grid_distance(grid).unsqueeze(0).masked_fill(~keep.bool().unsqueeze(1), float("inf"))
    return d.amin(dim=-1).amax(dim=-1)


def subset_gt(ds: dict, videos: dict[int, list[int]]) -> dict:
    """Ground truth restricted to some videos and frames (for AP on the subsampled frames).

    Args:
        ds: YouTube-VIS dict.
        videos: video id -> kept frame indices.

    Returns:
        a new dict: those videos, with every per-frame list (``file_names``, ``segmentations``, ``areas``,
        ``bboxes``) subset and ``length`` updated; annotations of other videos dropped.
    """
    out = {k: v for k, v in ds.items() if k not in ("videos", "annotations")}
    out["videos"], out["annotations"] = [], []
    for v in ds["videos"]:
        if v["id"] in videos:
            ts = videos[v["id"]]
            nv = dict(v, file_names=[v["file_names"][t] for t in ts], length=len(ts))
            out["videos"].append(nv)
    for a in ds["annotations"]:
        if a["video_id"] in videos:
            ts = videos[a["video_id"]]
            na = dict(a)
            for key in ("segmentations", "areas", "bboxes"):
                if isinstance(a.get(key), list):
                    na[key] = [a[key][t] for t in ts]
            out["annotations"].append(na)
    return out


@torch.no_grad()
def predict_video(model, images: torch.Tensor, masks: torch.Tensor, vid: dict, category_ids: list[int],
                   ecfg: dict, batch: int) -> list[dict]:
    """YouTube-VIS results of one (subsampled) video run with a given keep schedule.

    Args:
        model: VIS model whose backbone has an :class:`~vppkit.models.pruning.base.ExternalMaskPruner`.
        images: (T, 3, H, W) uint8 frames; masks: (T, depth, N) bool keep schedule of each frame.
        vid: the video's dataset entry (original ``height`` / ``width`` px for the masks).
        ecfg: ``eval`` settings (``top_k``, ``mask_threshold``, ``tracker_momentum``); tracks are scored with
            :class:`~vppkit.models.vis.tracker.VideoTrackAccumulator`'s default ("mean").
        batch: frames per forward (frames are independent: the external masks carry no temporal state).
    """
    from vppkit.models.vis.tracker import VideoTrackAccumulator, track_step

    h, w = int(vid["height"]), int(vid["width"])
    acc = VideoTrackAccumulator(vid["id"], images.shape[0], category_ids, int(ecfg.get("top_k", 10)))
    thr, momentum = float(ecfg.get("mask_threshold", 0.0)), float(ecfg.get("tracker_momentum", 0.0))
    track = None
    for s in range(0, images.shape[0], batch):
        out = model(images[s:s + batch], masks[s:s + batch], execution="gathered")
        for j in range(out.pred_logits.shape[0]):
            perm, track = track_step(track, out.embeds[j], momentum)
            probs = out.pred_logits[j].float().softmax(-1)[perm]
            logits = F.interpolate(out.pred_masks[j][perm][None].float(), size=(h, w), mode="bilinear",
                                   align_corners=False)[0]
            acc.add_frame(s + j, probs, logits > thr)
    return acc.results()


def _png_bytes(image: torch.Tensor) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# correlation
# ----------------------------------------------------------------------------------------------------------------
def correlate(x: list[float], y: list[float]) -> dict:
    """Spearman and Pearson correlation of paired values (None pairs dropped).

    Returns:
        dict ``n``, ``spearman_rho``, ``spearman_p``, ``pearson_r``, ``pearson_p`` (None when n < 3 or an input
        is constant, with ``note`` saying why). Source: scipy.stats.spearmanr / pearsonr (two-sided p).
    """
    from scipy import stats

    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None
             and math.isfinite(a) and math.isfinite(b)]
    out = {"n": len(pairs), "spearman_rho": None, "spearman_p": None, "pearson_r": None, "pearson_p": None,
           "note": ""}
    if len(pairs) < 3:
        out["note"] = "fewer than 3 points"
        return out
    xa, ya = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        out["note"] = "constant input"
        return out
    sp, pe = stats.spearmanr(xa, ya), stats.pearsonr(xa, ya)
    out.update(spearman_rho=float(sp.statistic), spearman_p=float(sp.pvalue), pearson_r=float(pe.statistic),
               pearson_p=float(pe.pvalue))
    return out


def correlations(rows: list[dict], metrics: tuple[str, ...] = ("IoI", "AP")) -> list[dict]:
    """Coverage vs each metric over the selection rows (the dense reference excluded): pooled over all keep
    ratios (``keep_ratio`` None) and within each keep ratio. One dict per (metric, scope, x)."""
    sel = [r for r in rows if r["selector"] != "dense"]
    out = []
    ratios = sorted({r["keep_ratio"] for r in sel})
    for metric in metrics:
        for xname in ("coverage", "radius"):
            for ratio in [None] + ratios:
                sub = [r for r in sel if ratio is None or r["keep_ratio"] == ratio]
                c = correlate([r[xname] for r in sub], [r.get(metric) for r in sub])
                out.append({"metric": metric, "x": xname, "keep_ratio": ratio,
                            "scope": "pooled over keep ratios" if ratio is None else f"keep ratio {ratio:g}", **c})
    return out


# ----------------------------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------------------------
def compute_study(ctx: Context, checkpoint: Path, settings: dict) -> dict:
    """Run the study with the trained dense VIS model ``checkpoint`` (see the module docstring).

    Returns:
        JSON-serialisable dict: ``settings``, ``profile``, ``data`` (source, videos, frames, grid, N),
        ``block``, ``layer``, ``rows`` (one per condition x keep ratio + the dense reference),
        ``correlations``, ``qualitative`` (frame png path relative to the results folder, grid, kept indices
        per condition), ``timing`` (seconds), ``notes``.
    """
    from vppkit.data.splits import resolve_split
    from vppkit.data.video import VideoFrames
    from vppkit.engine.train import load_model
    from vppkit.metrics.ioi import BIN_NAMES, IoIAccumulator
    from vppkit.metrics.patch_labels import patch_labels
    from vppkit.metrics.ytvis_ap import evaluate_video_ap
    from vppkit.models.pruning.base import ExternalMaskPruner
    from vppkit.models.pruning.selection import spatial_coverage
    from vppkit.models.vit import PrunableViT
    from vppkit.utils.io import atomic_write_bytes

    cfg = ctx.cfg
    ecfg = cfg.get("eval", {})
    rule = ecfg.get("patch_rule", "half")
    model, _ = load_model(checkpoint, pruning={"method": "none"})
    dense_backbone = model.backbone
    depth, block = dense_backbone.depth, settings["block"]
    if not 0 <= block < depth:
        raise ValueError(f"selectors.block must be in [0, {depth}), got {block}")
    # the pruned model: the same trained ViT weights under an ExternalMaskPruner; masks come in as `state`
    model.backbone = PrunableViT(dense_backbone.vit, ExternalMaskPruner()).eval()
    patch = int(dense_backbone.patch_size[0])

    js, fr = resolve_split(cfg["data"], settings["split"])
    frames = VideoFrames(js, fr, cfg["model"]["img_size"], cache=False)
    nvid = min(len(frames), settings["max_videos"])
    conds = conditions(settings)
    ratios = settings["keep_ratios"]
    qual_ratio = min(ratios, key=lambda r: abs(r - settings["qualitative_ratio"]))
    log.info("selectors: %d conditions x %d keep ratios at block %d on %d videos of %s", len(conds), len(ratios),
             block, nvid, js)

    timing = {"features": 0.0, "selection": 0.0, "inference": 0.0, "ap_eval": 0.0}
    accs: dict[tuple, IoIAccumulator] = {}
    cov: dict[tuple, list[float]] = {}
    rad: dict[tuple, list[float]] = {}
    results: dict[tuple, list[dict]] = {}
    gens = {c["name"]: torch.Generator().manual_seed(int(c["seed"])) for c in conds if c["seed"] is not None}
    used: dict[int, list[int]] = {}
    qualitative: dict[str, Any] = {}
    grid = None
    n_frames = 0
    for vi in range(nvid):
        vid = frames.videos[vi]
        ts = frame_indices(frames.num_frames(vi), settings["frame_stride"], settings["max_frames"])
        used[vid["id"]] = ts
        n_frames += len(ts)
        images = torch.stack([frames.frame(vi, t) for t in ts])
        labels = [patch_labels(frames.instances(vi, t)[1], patch, rule, source=f"video {vid['id']} frame {t}")
                  for t in ts]
        t0 = time.perf_counter()
        feats, recv = [], []
        for s in range(0, len(ts), settings["batch"]):
            xb, rb, grid = block_features(model, images[s:s + settings["batch"]], block)
            feats.append(xb)
            recv.append(rb)
        xb, rb = torch.cat(feats), torch.cat(recv)
        timing["features"] += time.perf_counter() - t0
        n = xb.shape[1]
        todo = [({"name": "dense", "selector": "dense", "lam": None, "seed": None, "label": "dense (no pruning)"},
                 1.0)] + [(c, r) for r in ratios for c in conds]
        for cond, ratio in todo:
            key = (cond["name"], ratio)
            k = keep_count(ratio, n)
            t0 = time.perf_counter()
            if cond["selector"] == "dense":
                sel = torch.ones(len(ts), n, dtype=torch.bool)
            else:
                sel = select_tokens(cond, xb, k, grid, attention=rb, generator=gens.get(cond["name"]))
            timing["selection"] += time.perf_counter() - t0
            masks = schedule_masks(sel, block, depth)
            acc = accs.setdefault(key, IoIAccumulator(depth))
            for j, t in enumerate(ts):
                acc.update(masks[j], labels[j], source=f"video {vid['id']} frame {t}")
            cov.setdefault(key, []).extend(spatial_coverage(sel, grid).tolist())
            rad.setdefault(key, []).extend(covering_radius(sel, grid).tolist())
            if vi == 0 and ratio == qual_ratio and cond["seed"] in (None, settings["seeds"][0]):
                j = len(ts) // 2
                qualitative.setdefault("kept", {})[cond["name"]] = sel[j].nonzero().squeeze(1).tolist()
                qualitative.setdefault("labels", {})[cond["name"]] = cond["label"]
                if "image" not in qualitative:
                    path = ctx.results_dir / "selectors_qualitative.png"
                    atomic_write_bytes(path, _png_bytes(images[j]))
                    qualitative.update(image=str(path.relative_to(ctx.results_dir)), video_id=vid["id"],
                                       frame_index=ts[j], keep_ratio=ratio, k=k)
            if settings["ap"]:
                t0 = time.perf_counter()
                results.setdefault(key, []).extend(
                    predict_video(model, images, masks, vid, frames.category_ids, ecfg, settings["batch"]))
                timing["inference"] += time.perf_counter() - t0

    gt = subset_gt(frames.ds, used) if settings["ap"] else None
    rows = []
    all_conds = [({"name": "dense", "selector": "dense", "lam": None, "seed": None, "label": "dense (no pruning)"},
                  1.0)] + [(c, r) for r in ratios for c in conds]
    for cond, ratio in all_conds:
        key = (cond["name"], ratio)
        acc = accs[key]
        row = {"condition": cond["name"], "selector": cond["selector"], "label": cond["label"], "lam": cond["lam"],
               "seed": cond["seed"], "keep_ratio": ratio, "k": keep_count(ratio, grid[0] * grid[1]),
               "coverage": float(np.mean(cov[key])), "coverage_std": float(np.std(cov[key])),
               "radius": float(np.mean(rad[key])),
               "IoI": acc.ioi(None, blocks=[block]),
               **{f"IoI_{b}": acc.ioi(b, blocks=[block]) for b in BIN_NAMES},
               "n": acc.count(), **{f"n_{b}": acc.count(b) for b in BIN_NAMES},
               "IoI_blockavg": acc.ioi(None),
               "fg_share_of_kept": float(acc.fg_bg()["fg_share_of_kept"][block])}
        if settings["ap"]:
            t0 = time.perf_counter()
            ap = evaluate_video_ap(gt, results[key])
            timing["ap_eval"] += time.perf_counter() - t0
            row.update({m: (None if v is None or v < 0 else float(v)) for m, v in ap.items()})
        rows.append(row)
    metrics = ("IoI", "AP") if settings["ap"] else ("IoI",)
    qualitative["grid"] = list(grid)
    return {
        "profile": ctx.profile,
        "settings": settings,
        "block": block,
        "layer": block + 1,
        "depth": depth,
        "data": {"source": cfg["data"].get("source", "synthetic"), "split": settings["split"],
                 "gt_json": str(js), "videos": nvid, "frames": n_frames, "frames_per_video":
                 {str(k): v for k, v in used.items()}, "grid": list(grid), "num_patches": grid[0] * grid[1],
                 "img_size": list(cfg["model"]["img_size"]), "arch": cfg["model"]["arch"], "patch_rule": rule},
        "checkpoint": str(checkpoint),
        "conditions": conds,
        "rows": rows,
        "correlations": correlations(rows, metrics),
        "qualitative": qualitative,
        "timing": {k: round(v, 2) for k, v in timing.items()},
        "notes": [
            "Beyond the paper's text: EVTP-IVS states that coverage correlates with segmentation performance but "
            "its analysis is not available; this is our test of the premise on a ViT VIS model.",
            f"Selection at the input of block {block} (layer {block + 1}); blocks before it run dense; dropped "
            "tokens keep their block-input value up to the decoder (no fine-tuning: the dense model's weights).",
            "coverage = mean distance (patch units) from every patch to its nearest kept patch; lower is better, "
            "so the premise predicts negative correlations.",
            "IoI = recall of instance patches by the selected set (instance pooling, read at the selection block).",
            "Cost caveat: each frame runs a dense pass to the selection block and then the pruned pass from the "
            "image; attention selector uses the selection block's own attention. Analysis, not an efficient "
            "implementation.",
            "spatial k-center with λ=0 equals DivPrune (same init) and is not repeated when DivPrune is studied.",
        ],
    }


def run(ctx: Context, checkpoint: str | Path | None = None) -> dict:
    """Compute (or reuse) the selection study of profile ``ctx.profile``.

    Args:
        ctx: the run context (config, results folder).
        checkpoint: the trained dense VIS checkpoint; default ``experiments.zoo.checkpoint(ctx, "dense")``
            (trained once per profile, cached).

    Returns:
        the saved result (see :func:`compute_study`), stamped by ``ctx.cached("selectors", ...)``.
    """
    from experiments.zoo import dense_analysis

    settings = study_settings(ctx.cfg)
    checkpoint, config = dense_analysis(ctx, "selectors", settings, checkpoint)
    return ctx.cached("selectors", config, lambda: compute_study(ctx, checkpoint, settings))
