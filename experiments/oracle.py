"""Oracle pruning: does the trained dense model need its instance patches more than its background patches?

VPP's gates are trained by the segmentation loss; the supplementary (§E) expects that "the optimization of
instance segmentation losses naturally biases the model toward foreground features", i.e. the gates keep
instance patches because the task needs them more. This artifact measures that premise directly, without any
gate: the trained dense VIS model runs with keep masks given from outside
(:class:`~vppkit.models.pruning.base.ExternalMaskPruner`, same weights, no fine-tuning) in which

- ``drop_instance``: a fraction f of each frame's instance patches (ground truth, patch rule ``eval.patch_rule``),
  drawn at random, skip every block from ``block`` (1, where VPP's Map-SM starts) on;
- ``drop_background``: as many background patches, drawn at random, skip the same blocks;
- ``dense``: nothing is dropped (the reference, evaluated the same way);

and the video AP on the held-out split is compared. Where dropping instance patches costs *less* AP than dropping
as many background patches, a gate trained by the task loss has no reason to prefer instances, and an IoI below
the realised PKR is the expected outcome (the reading's "IoI > realised PKR" row), not a defect of the pruner.
Dropped tokens keep their value from the block before ``block`` up to the decoder (the PrunableViT convention).

AP is computed by the project's one inference loop (:func:`vppkit.engine.infer.infer_video` with the profile's
``eval`` settings, as the results table and the selectors study), so with ``frame_stride: 1`` and every held-out
video the dense row is the results table's dense AP.

Settings: an optional ``oracle:`` section of the profile config overrides :data:`DEFAULTS`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from experiments.common import Context
from experiments.selectors import frame_indices, pruned_dense_model
from experiments.zoo import dense_analysis
from vppkit.config import OracleConfig
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.data.ytvis import subset_frames
from vppkit.engine.infer import EvalSettings, infer_video
from vppkit.metrics.patch_labels import DEFAULT_RULE, patch_labels
from vppkit.metrics.ytvis_ap import evaluate_video_ap

log = logging.getLogger("vppkit.experiments")

#: The study's settings when a config has no ``oracle:`` section: the schema's defaults
#: (:class:`vppkit.config.OracleConfig`, where each is written and commented once).
DEFAULTS: dict[str, Any] = dataclasses.asdict(OracleConfig())
CONDITIONS = ("dense", "drop_instance", "drop_background")


def settings_for(cfg: dict) -> dict:
    """:data:`DEFAULTS` overridden by the config's optional ``oracle:`` section.

    Raises:
        ValueError: an unknown key, a fraction outside (0, 1], or a block below 0.
    """
    extra = dict(cfg.get("oracle") or {})
    unknown = sorted(set(extra) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"oracle: unknown setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **extra}
    if any(not 0 < float(f) <= 1 for f in s["fractions"]):
        raise ValueError(f"oracle.fractions must lie in (0, 1], got {s['fractions']}")
    if int(s["block"]) < 0:
        raise ValueError(f"oracle.block must be >= 0, got {s['block']}")
    return s


def drop_masks(foreground: torch.Tensor, fraction: float, block: int, depth: int,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Keep schedules of the three conditions for one clip.

    Args:
        foreground: (T, N) bool instance-patch labels of T frames.
        fraction: share of each frame's instance patches to drop; as many background patches in the other
            condition (fewer when the frame has fewer background patches).
        block: first block the dropped patches skip; blocks before it run dense.
        depth: number of blocks.
        generator: draws the dropped patches (instance draw first, then background, frame by frame).

    Returns:
        {condition: (T, depth, N) bool keep schedule} for :data:`CONDITIONS`; ``drop_instance`` and
        ``drop_background`` drop the same number of patches in every frame.
    """
    t_len, n = foreground.shape
    out = {c: torch.ones(t_len, depth, n, dtype=torch.bool) for c in CONDITIONS}
    for t in range(t_len):
        fg = foreground[t].nonzero().flatten()
        bg = (~foreground[t]).nonzero().flatten()
        m = min(int(round(fraction * len(fg))), len(bg))
        out["drop_instance"][t, block:, fg[torch.randperm(len(fg), generator=generator)[:m]]] = False
        out["drop_background"][t, block:, bg[torch.randperm(len(bg), generator=generator)[:m]]] = False
    return out


def compute(ctx: Context, checkpoint: Path, settings: dict) -> dict:
    """Run the three conditions for every fraction on the held-out split (module docstring).

    Raises:
        ValueError: ``settings["block"]`` not below the model's depth.
    """
    cfg, ecfg = ctx.cfg, ctx.cfg.get("eval", {})
    rule = ecfg.get("patch_rule", DEFAULT_RULE)
    evs = EvalSettings.from_config(ecfg)
    model = pruned_dense_model(checkpoint)
    depth, patch = model.backbone.depth, int(model.backbone.patch_size[0])
    block = int(settings["block"])
    if block >= depth:
        raise ValueError(f"oracle.block must be < depth {depth}, got {block}")
    js, fr = resolve_split(cfg["data"], "val")
    frames = VideoFrames(js, fr, cfg["model"]["img_size"], cache=False)
    nvid = len(frames) if settings["max_videos"] is None else min(len(frames), int(settings["max_videos"]))
    gen = torch.Generator().manual_seed(int(settings["seed"]))
    results: dict[tuple[float, str], list[dict]] = {}
    used: dict[int, list[int]] = {}
    fg_share, t0 = [], time.perf_counter()
    for vi in range(nvid):
        vid = frames.videos[vi]
        ts = frame_indices(frames.num_frames(vi), int(settings["frame_stride"]), frames.num_frames(vi))
        used[vid["id"]] = ts
        images = torch.stack([frames.frame(vi, t) for t in ts])
        fg = torch.stack([patch_labels(frames.instances(vi, t)[1], patch, rule,
                                       source=f"video {vid['id']} frame {t}").foreground for t in ts])
        fg_share.append(float(fg.float().mean()))
        for frac in settings["fractions"]:
            masks = drop_masks(fg, float(frac), block, depth, gen)
            for cond in CONDITIONS:
                if cond == "dense" and frac != settings["fractions"][0]:
                    continue  # one dense reference
                res, _ = infer_video(model, frames, vi, evs, keep_masks=masks[cond], frame_indices=ts,
                                     batch=int(settings["batch"]), images=images)
                results.setdefault((float(frac), cond), []).extend(res)
    gt = subset_frames(frames.ds, used)
    dense_ap = evaluate_video_ap(gt, results[(float(settings["fractions"][0]), "dense")])
    rows = []
    for frac in settings["fractions"]:
        for cond in CONDITIONS:
            ap = dense_ap if cond == "dense" else evaluate_video_ap(gt, results[(float(frac), cond)])
            rows.append({"fraction": float(frac), "condition": cond, "AP": 100 * ap["AP"], "AP50": 100 * ap["AP50"],
                         "AP_loss": 100 * (dense_ap["AP"] - ap["AP"])})
    return {"settings": settings, "block": block, "checkpoint": str(checkpoint), "rows": rows,
            "data": {"gt_json": str(js), "videos": nvid, "frames": sum(len(v) for v in used.values()),
                     "instance_patch_share": 100 * sum(fg_share) / max(len(fg_share), 1), "patch_rule": rule},
            "seconds": round(time.perf_counter() - t0, 1)}


def run(ctx: Context, checkpoint: str | Path | None = None) -> dict:
    """Compute (or reuse) the oracle-pruning result of profile ``ctx.profile`` with the shared dense model
    (``experiments.zoo.checkpoint(ctx, "dense")`` unless ``checkpoint`` is given)."""
    settings = settings_for(ctx.cfg)
    checkpoint, config = dense_analysis(ctx, "oracle", settings, checkpoint)
    # results made before the oracle used engine.infer.infer_video (eval.score) are not reused
    config["inference"] = "vppkit.engine.infer.infer_video"
    log.info("oracle: dropping %s of the instance patches (or as many background ones) from block %d on",
             settings["fractions"], settings["block"])
    return ctx.cached("oracle", config, lambda: compute(ctx, checkpoint, settings))
