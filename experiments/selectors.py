"""Training-free token selection study (issue 7, beyond the paper's text): coverage vs segmentation quality.

EVTP-IVS states as its empirical premise that "subset token coverage correlates with segmentation
performance" (evtp-notes §1, §4) but its correlation figure and coefficients were not retrievable. This
study tests the premise on our ViT VIS model: the training-free selectors of
:mod:`vppkit.models.pruning.selection` (random, uniform grid, attention received, plain k-center, DivPrune,
spatial k-center with a λ sweep) choose k = floor(r·N) patch tokens of every frame **at one block b**
(0-based; figures say layer b+1) from the tokens entering that block; blocks 0..b-1 run dense, blocks
b..depth-1 process only the selection (dropped tokens keep their block-b value, the PrunableViT convention);
k follows the pruners' count rule (:func:`vppkit.models.pruning.schedules.keep_count`).

Measured per (selector, λ, seed, keep ratio), on the held-out split (subsampled frames):

- ``coverage``: :func:`~vppkit.models.pruning.selection.spatial_coverage`, mean distance (patch units) from
  every patch to its nearest kept patch, averaged over frames (lower = better coverage); ``radius``: the
  covering radius (:func:`vppkit.metrics.coverage.covering_radius`, max over patches of that distance, the
  k-center objective), averaged over frames.
- ``IoI`` (+ ``IoI_S/M/L``): recall of ground-truth instance patches by the selected set
  (:class:`vppkit.metrics.ioi.IoIAccumulator` fed with the (depth, N) keep schedule, read at block b,
  instance pooling; size bins S <= 10 % < M <= 20 % < L of the frame area).
- ``AP`` (+ AP50, AP75, APs/m/l, AR): YouTube-VIS video AP of the *trained dense* VIS model run with the
  selection applied from block b on (:class:`~vppkit.models.pruning.base.ExternalMaskPruner` over the same
  trained ViT weights; no fine-tuning), run by the project's one inference loop
  (:func:`vppkit.engine.infer.infer_video` with the profile's ``eval`` settings, as the results table) and scored
  by :func:`vppkit.metrics.ytvis_ap.evaluate_video_ap` against the ground truth restricted to the processed videos
  and frames (:func:`vppkit.data.ytvis.subset_frames`). The dense row is the results table's dense AP when every
  frame of every held-out video is processed.
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
import dataclasses
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import stats

from experiments.common import Context
from experiments.zoo import dense_analysis
from vppkit.config import SelectorsConfig
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.data.ytvis import subset_frames
from vppkit.engine.checkpoint import load_model
from vppkit.engine.infer import EvalSettings, infer_video
from vppkit.metrics.coverage import covering_radius
from vppkit.metrics.ioi import BIN_NAMES, IoIAccumulator
from vppkit.metrics.patch_labels import DEFAULT_RULE, patch_labels
from vppkit.metrics.ytvis_ap import evaluate_video_ap
from vppkit.models.blocks import attention_stats, block_attention_probs
from vppkit.models.pruning.base import ExternalMaskPruner
from vppkit.models.pruning.schedules import keep_count
from vppkit.models.pruning.selection import SELECTORS, keep_mask_from_indices, spatial_coverage
from vppkit.models.vit import PrunableViT
from vppkit.utils.io import atomic_write_bytes

log = logging.getLogger("vppkit.experiments")

#: The study's settings when a config has no ``selectors:`` section: the schema's defaults
#: (:class:`vppkit.config.SelectorsConfig`, where each is written and commented once).
DEFAULTS: dict[str, Any] = dataclasses.asdict(SelectorsConfig())

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


# ----------------------------------------------------------------------------------------------------------------
# model pieces
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def block_features(model, images: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Dense tokens entering ``block`` and the attention each patch receives in that block.

    The tokens are :meth:`vppkit.models.vit.PrunableViT.forward_intermediates` feature x_b (blocks 0..b-1 run
    dense, later blocks not run); block b is then run by :func:`vppkit.models.blocks.block_attention_probs` for its
    attention probabilities.

    Args:
        model: a :class:`vppkit.models.vis.model.VISModel` (its ``normalize`` and ``backbone`` are used); a backbone
            with an :class:`~vppkit.models.pruning.base.ExternalMaskPruner` is given an all-kept schedule, any
            other pruner runs as built (build the model with ``pruning={"method": "none"}`` for dense tokens).
        images: (B, 3, H, W) uint8 frames at the model input size.
        block: 0-based block b.

    Returns:
        (x_b (B, N, C) patch tokens entering block b (prefix excluded), received (B, N) attention received
        by each patch in block b (mean over query tokens incl. prefix, then heads; VisPruner's SigLIP rule),
        grid (Hp, Wp)).

    Raises:
        ValueError: block outside [0, depth).
    """
    bb = model.backbone
    if not 0 <= block < bb.depth:
        raise ValueError(f"block must be in [0, {bb.depth}), got {block}")
    grid = bb.grid_for(images.shape[-2], images.shape[-1])
    state = None
    if isinstance(bb.pruner, ExternalMaskPruner):
        state = torch.ones(bb.depth, grid[0] * grid[1], dtype=torch.bool)
    [(patches, prefix)] = bb.forward_intermediates(model.normalize(images), [block], state=state, stop_early=True,
                                                   return_prefix_tokens=True, intermediates_only=True)
    _, attn = block_attention_probs(bb.vit.blocks[block], torch.cat([prefix, patches], dim=1))
    _, received = attention_stats(attn, bb.num_prefix_tokens, bb.has_cls)
    return patches, received, tuple(grid)


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


def _png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def pruned_dense_model(checkpoint: str | Path):
    """The trained dense VIS model of ``checkpoint`` with its ViT under an
    :class:`~vppkit.models.pruning.base.ExternalMaskPruner` (same weights; keep masks come in as the backbone
    ``state``), in eval mode. Shared by this study and ``experiments/oracle.py``."""
    model, _ = load_model(checkpoint, pruning={"method": "none"})
    model.backbone = PrunableViT(model.backbone.vit, ExternalMaskPruner()).eval()
    return model


# ----------------------------------------------------------------------------------------------------------------
# correlation
# ----------------------------------------------------------------------------------------------------------------
def correlate(x: list[float], y: list[float]) -> dict:
    """Spearman and Pearson correlation of paired values (None pairs dropped).

    Returns:
        dict ``n``, ``spearman_rho``, ``spearman_p``, ``pearson_r``, ``pearson_p`` (None when n < 3 or an input
        is constant, with ``note`` saying why). Source: scipy.stats.spearmanr / pearsonr (two-sided p).
    """
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
DENSE = {"name": "dense", "selector": "dense", "lam": None, "seed": None, "label": "dense (no pruning)"}

NOTES = [
    "Beyond the paper's text: EVTP-IVS states that coverage correlates with segmentation performance but "
    "its analysis is not available; this is our test of the premise on a ViT VIS model.",
    "Selection at the input of block {block} (layer {layer}); blocks before it run dense; dropped "
    "tokens keep their block-input value up to the decoder (no fine-tuning: the dense model's weights).",
    "coverage = mean distance (patch units) from every patch to its nearest kept patch; lower is better, "
    "so the premise predicts negative correlations.",
    "IoI = recall of instance patches by the selected set (instance pooling, read at the selection block).",
    "AP: the results table's inference loop and eval settings (vppkit.engine.infer.infer_video) on the subsampled "
    "frames; k = floor(keep ratio x N).",
    "Cost caveat: each frame runs a dense pass to the selection block and then the pruned pass from the "
    "image; attention selector uses the selection block's own attention. Analysis, not an efficient "
    "implementation.",
    "spatial k-center with λ=0 equals DivPrune (same init) and is not repeated when DivPrune is studied.",
]


@dataclass
class _Clip:
    """The subsampled frames of one video: frame indices, (T, 3, H, W) uint8 images, patch labels per frame."""

    vi: int
    vid: dict
    ts: list[int]
    images: torch.Tensor
    labels: list


@dataclass
class _Tally:
    """What the study gathers: per (condition name, keep ratio) the IoI accumulator, coverage and radius per frame
    and the YouTube-VIS results; k per keep ratio; frames used per video id; the qualitative panel; seconds."""

    depth: int
    ioi: dict = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)
    radius: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    used: dict = field(default_factory=dict)
    qualitative: dict = field(default_factory=dict)
    timing: dict = field(default_factory=lambda: {"features": 0.0, "selection": 0.0, "inference": 0.0,
                                                  "ap_eval": 0.0})

    def add(self, key: tuple, clip: _Clip, sel: torch.Tensor, masks: torch.Tensor, grid: tuple[int, int]) -> None:
        acc = self.ioi.setdefault(key, IoIAccumulator(self.depth))
        for j, t in enumerate(clip.ts):
            acc.update(masks[j], clip.labels[j], source=f"video {clip.vid['id']} frame {t}")
        self.coverage.setdefault(key, []).extend(spatial_coverage(sel, grid).tolist())
        self.radius.setdefault(key, []).extend(covering_radius(sel, grid).tolist())


def _read_clip(frames: VideoFrames, vi: int, settings: dict, patch: int, rule) -> _Clip:
    vid = frames.videos[vi]
    ts = frame_indices(frames.num_frames(vi), settings["frame_stride"], settings["max_frames"])
    images = torch.stack([frames.frame(vi, t) for t in ts])
    labels = [patch_labels(frames.instances(vi, t)[1], patch, rule, source=f"video {vid['id']} frame {t}")
              for t in ts]
    return _Clip(vi, vid, ts, images, labels)


def _clip_features(model, clip: _Clip, block: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    feats, recv, grid = [], [], None
    for s in range(0, len(clip.ts), batch):
        xb, rb, grid = block_features(model, clip.images[s:s + batch], block)
        feats.append(xb)
        recv.append(rb)
    return torch.cat(feats), torch.cat(recv), grid


def _keep_qualitative(qualitative: dict, ctx: Context, clip: _Clip, cond: dict, ratio: float, k: int,
                      sel: torch.Tensor) -> None:
    """Kept indices of the clip's middle frame per condition (first video, the qualitative keep ratio)."""
    j = len(clip.ts) // 2
    qualitative.setdefault("kept", {})[cond["name"]] = sel[j].nonzero().squeeze(1).tolist()
    qualitative.setdefault("labels", {})[cond["name"]] = cond["label"]
    if "image" not in qualitative:
        path = ctx.results_dir / "selectors_qualitative.png"
        atomic_write_bytes(path, _png_bytes(clip.images[j]))
        qualitative.update(image=str(path.relative_to(ctx.results_dir)), video_id=clip.vid["id"],
                           frame_index=clip.ts[j], keep_ratio=ratio, k=k)


def _row(cond: dict, ratio: float, k: int, tally: _Tally, block: int) -> dict:
    key = (cond["name"], ratio)
    acc = tally.ioi[key]
    return {"condition": cond["name"], "selector": cond["selector"], "label": cond["label"], "lam": cond["lam"],
            "seed": cond["seed"], "keep_ratio": ratio, "k": k,
            "coverage": float(np.mean(tally.coverage[key])), "coverage_std": float(np.std(tally.coverage[key])),
            "radius": float(np.mean(tally.radius[key])),
            "IoI": acc.ioi(None, blocks=[block]),
            **{f"IoI_{b}": acc.ioi(b, blocks=[block]) for b in BIN_NAMES},
            "n": acc.count(), **{f"n_{b}": acc.count(b) for b in BIN_NAMES},
            "IoI_blockavg": acc.ioi(None),
            "fg_share_of_kept": float(acc.fg_bg()["fg_share_of_kept"][block])}


def _ap_fields(gt: dict, results: list[dict]) -> dict:
    ap = evaluate_video_ap(gt, results)
    return {m: (None if v is None or v < 0 else float(v)) for m, v in ap.items()}


def _run_clip(ctx: Context, model, frames: VideoFrames, clip: _Clip, todo: list, settings: dict,
              evs: EvalSettings, gens: dict, qual_ratio: float, tally: _Tally) -> tuple[int, int]:
    """One video: dense tokens entering the selection block, then per (condition, keep ratio) the selection, its
    keep schedule, IoI / coverage / radius and (``settings["ap"]``) the pruned model's results. Returns the grid."""
    block, timing = settings["block"], tally.timing
    t0 = time.perf_counter()
    xb, rb, grid = _clip_features(model, clip, block, settings["batch"])
    timing["features"] += time.perf_counter() - t0
    n = xb.shape[1]
    for cond, ratio in todo:
        key = (cond["name"], ratio)
        k = tally.counts.setdefault(ratio, keep_count(n, ratio))
        t0 = time.perf_counter()
        if cond["selector"] == "dense":
            sel = torch.ones(len(clip.ts), n, dtype=torch.bool)
        else:
            sel = select_tokens(cond, xb, k, grid, attention=rb, generator=gens.get(cond["name"]))
        timing["selection"] += time.perf_counter() - t0
        masks = schedule_masks(sel, block, tally.depth)
        tally.add(key, clip, sel, masks, grid)
        if clip.vi == 0 and ratio == qual_ratio and cond["seed"] in (None, settings["seeds"][0]):
            _keep_qualitative(tally.qualitative, ctx, clip, cond, ratio, k, sel)
        if settings["ap"]:
            t0 = time.perf_counter()
            res, _ = infer_video(model, frames, clip.vi, evs, keep_masks=masks, frame_indices=clip.ts,
                                 batch=settings["batch"], images=clip.images)
            tally.results.setdefault(key, []).extend(res)
            timing["inference"] += time.perf_counter() - t0
    return grid


def _rows(frames: VideoFrames, todo: list, settings: dict, tally: _Tally, block: int) -> list[dict]:
    """One row per (condition, keep ratio), with the video AP against the ground truth of the processed frames."""
    gt = subset_frames(frames.ds, tally.used) if settings["ap"] else None
    rows = []
    for cond, ratio in todo:
        row = _row(cond, ratio, tally.counts[ratio], tally, block)
        if settings["ap"]:
            t0 = time.perf_counter()
            row.update(_ap_fields(gt, tally.results[(cond["name"], ratio)]))
            tally.timing["ap_eval"] += time.perf_counter() - t0
        rows.append(row)
    return rows


def compute_study(ctx: Context, checkpoint: Path, settings: dict) -> dict:
    """Run the study with the trained dense VIS model ``checkpoint`` (see the module docstring).

    Steps per held-out video: read the subsampled clip and its patch labels; the dense tokens entering the
    selection block (:func:`block_features`); for the dense reference and every (condition, keep ratio): the
    selection, its keep schedule, IoI / coverage / radius, and (``settings["ap"]``) the pruned model's results by
    :func:`vppkit.engine.infer.infer_video`. Then one row per (condition, keep ratio) with the video AP against the
    ground truth of the processed frames, and the correlations.

    Returns:
        JSON-serialisable dict: ``settings``, ``profile``, ``data`` (source, videos, frames, grid, N),
        ``block``, ``layer``, ``rows`` (one per condition x keep ratio + the dense reference),
        ``correlations``, ``qualitative`` (frame png path relative to the results folder, grid, kept indices
        per condition), ``timing`` (seconds), ``notes``.

    Raises:
        ValueError: ``settings["block"]`` outside [0, depth); a keep ratio that keeps no token of the grid.
    """
    cfg = ctx.cfg
    ecfg = cfg.get("eval", {})
    rule = ecfg.get("patch_rule", DEFAULT_RULE)
    evs = EvalSettings.from_config(ecfg)
    model = pruned_dense_model(checkpoint)
    depth, block = model.backbone.depth, settings["block"]
    if not 0 <= block < depth:
        raise ValueError(f"selectors.block must be in [0, {depth}), got {block}")
    patch = int(model.backbone.patch_size[0])

    js, fr = resolve_split(cfg["data"], settings["split"])
    frames = VideoFrames(js, fr, cfg["model"]["img_size"], cache=False)
    nvid = min(len(frames), settings["max_videos"])
    conds, ratios = conditions(settings), settings["keep_ratios"]
    qual_ratio = min(ratios, key=lambda r: abs(r - settings["qualitative_ratio"]))
    todo = [(DENSE, 1.0)] + [(c, r) for r in ratios for c in conds]
    log.info("selectors: %d conditions x %d keep ratios at block %d on %d videos of %s", len(conds), len(ratios),
             block, nvid, js)

    tally = _Tally(depth)
    gens = {c["name"]: torch.Generator().manual_seed(int(c["seed"])) for c in conds if c["seed"] is not None}
    grid = None
    for vi in range(nvid):
        clip = _read_clip(frames, vi, settings, patch, rule)
        tally.used[clip.vid["id"]] = clip.ts
        grid = _run_clip(ctx, model, frames, clip, todo, settings, evs, gens, qual_ratio, tally)
    rows = _rows(frames, todo, settings, tally, block)
    tally.qualitative["grid"] = list(grid)
    used = tally.used
    return {
        "profile": ctx.profile,
        "settings": settings,
        "block": block,
        "layer": block + 1,
        "depth": depth,
        "data": {"source": cfg["data"].get("source", "synthetic"), "split": settings["split"],
                 "gt_json": str(js), "videos": nvid, "frames": sum(len(v) for v in used.values()),
                 "frames_per_video": {str(k): v for k, v in used.items()}, "grid": list(grid),
                 "num_patches": grid[0] * grid[1], "img_size": list(cfg["model"]["img_size"]),
                 "arch": cfg["model"]["arch"], "patch_rule": rule},
        "checkpoint": str(checkpoint),
        "conditions": conds,
        "rows": rows,
        "correlations": correlations(rows, ("IoI", "AP") if settings["ap"] else ("IoI",)),
        "qualitative": tally.qualitative,
        "timing": {k: round(v, 2) for k, v in tally.timing.items()},
        "notes": [n.format(block=block, layer=block + 1) for n in NOTES],
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
    settings = study_settings(ctx.cfg)
    checkpoint, config = dense_analysis(ctx, "selectors", settings, checkpoint)
    # results made before the study used engine.infer.infer_video and the floor keep count are not reused
    config["inference"] = "vppkit.engine.infer.infer_video; k = floor(r N)"
    return ctx.cached("selectors", config, lambda: compute_study(ctx, checkpoint, settings))
