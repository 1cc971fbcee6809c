"""Artifact 7: qualitative pruning masks (VPP Fig. 1, 7-10): kept / pruned patches per block over several
frames of one held-out video, VPP vs SViT at goal PKR 55 % and VPP at 40 %.

The result names the video, frames and keep-record files; the figure is drawn from them
(:func:`analyses.figures.qualitative_figure`). Also stored: the mean patch activity (fraction of the 12
blocks that process a patch) on foreground and background patches, the quantity Fig. 9/10 shade.
"""

from __future__ import annotations

import torch

from experiments import zoo
from experiments.common import Context
from vppkit.data.video import VideoFrames
from vppkit.engine.infer import load_keep_records
from vppkit.metrics.patch_labels import patch_labels

VARIANTS = ("vpp55", "svit55", "vpp40")
LAYERS = (1, 2, 4, 7, 10)  # paper layer numbers (block + 1): layer 2 shows the Map-SM mask M_1
NUM_FRAMES = 6


def _pick_video(frames) -> int:
    """The held-out video with the most visible instance-frames (deterministic)."""
    best, best_n = 0, -1
    for vi in range(len(frames)):
        n = sum(int(frames.instances(vi, t)[1].shape[0]) for t in range(frames.num_frames(vi)))
        if n > best_n:
            best, best_n = vi, n
    return best


def run(ctx: Context) -> dict:
    evals, config = zoo.evaluate_many(ctx, "qualitative", VARIANTS)
    config = {**config, "layers": list(LAYERS), "num_frames": NUM_FRAMES}

    def compute() -> dict:
        first = next(iter(evals.values()))
        frames = VideoFrames(first["gt_json"], None, ctx.cfg["model"]["img_size"], cache=False)
        vi = _pick_video(frames)
        vid = frames.videos[vi]["id"]
        t_max = min(NUM_FRAMES, frames.num_frames(vi))
        activity = {}
        for v, e in evals.items():
            rec = load_keep_records(ctx.results_dir / e["records"])[vid]
            patch = ctx.cfg["model"]["img_size"][0] // rec.grid[0]
            fg_act, bg_act = [], []
            for t in range(t_max):
                act = rec.masks[t].float().mean(0)  # (N,) fraction of blocks processing each patch
                fg = patch_labels(frames.instances(vi, t)[1], patch, ctx.cfg["eval"]["patch_rule"],
                                  source=f"video {vid} frame {t}").foreground
                if fg.any():
                    fg_act.append(float(act[fg].mean()))
                if (~fg).any():
                    bg_act.append(float(act[~fg].mean()))
            activity[v] = {"fg": float(torch.tensor(fg_act).mean()) if fg_act else None,
                           "bg": float(torch.tensor(bg_act).mean()) if bg_act else None}
        return {"video_index": vi, "video_id": vid, "frames": list(range(t_max)), "layers": list(LAYERS),
                "gt_json": first["gt_json"], "records": {v: e["records"] for v, e in evals.items()},
                "labels": {v: zoo.variants()[v]["label"] for v in VARIANTS}, "activity": activity}

    return ctx.cached("qualitative", config, compute)
