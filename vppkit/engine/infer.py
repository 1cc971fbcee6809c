"""Online inference: frame by frame, carrying the backbone's temporal state and the tracker state per video.

For every video: ``state = None`` (VPP: first frame has no Map-SM), ``track = None``; per frame the model runs under
``torch.no_grad`` (gathered execution), the queries are put in track order (:func:`track_step`), the masks are
upsampled to the original frame size, thresholded and RLE-encoded at once, and the class probabilities summed
(:class:`VideoTrackAccumulator`). Nothing with a graph and no full-size mask tensor outlives its frame, so memory
does not grow with video length beyond the compact RLEs the results need.

Writes (rank 0 / single process) into the output folder:

- ``results.json``: YouTube-VIS results (list of ``{video_id, category_id, score, segmentations}``, per-frame RLE
  at the original frame size or null);
- ``keep_records.npz``: per-frame KeepRecords, ``np.savez_compressed`` of ``v<video_id>_<field>`` arrays, each
  the frames of that video stacked (``masks_packed`` (T, depth, ceil(N/8)) uint8, ``counts`` (T, depth),
  ``overhead_macs`` (T,), ``grid`` (2,)); read back with :func:`load_keep_records`;
- ``summary.json``: PKR (global over all frames, :class:`vppkit.metrics.pkr.PKRAccumulator`), frames, seconds,
  inference settings;
- ``vis/<video>/<frame>.png`` when ``visualize`` is on.
"""

from __future__ import annotations

import io
import time
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vppkit.data.video import VideoFrames
from vppkit.metrics.coco_frames import evaluate_frame_ap
from vppkit.metrics.pkr import PKRAccumulator
from vppkit.metrics.ytvis_ap import evaluate_video_ap
from vppkit.models.records import KeepRecord
from vppkit.models.vis.tracker import VideoTrackAccumulator, track_step
from vppkit.utils.io import atomic_path, atomic_write_bytes, atomic_write_json

__all__ = ["infer_video", "run_inference", "infer_checkpoint", "evaluate_run", "load_keep_records", "records_pkr",
           "frame_loader"]


@torch.no_grad()
def infer_video(model, frames: VideoFrames, vi: int, *, top_k: int = 10, mask_threshold: float = 0.0,
                momentum: float = 0.0, execution: str | None = "gathered", visualize_dir: Path | None = None,
                score: str = "mean", images: Iterable[torch.Tensor] | None = None):
    """Run one video online.

    Args:
        model: a :class:`VISModel` in eval mode.
        frames: the dataset reader; ``vi`` the video index in it.
        images: the video's frames in order, (3, H, W) uint8 each, e.g. read ahead by :func:`frame_loader`;
            None reads them from ``frames`` here.
        top_k: instances kept for the video.
        mask_threshold: mask-logit threshold (0 = probability 0.5).
        momentum: tracker reference momentum (0 = MinVIS, previous frame).
        execution: backbone execution mode.
        visualize_dir: write an overlay PNG per frame there (optional).
        score: (track, class) scoring of :class:`VideoTrackAccumulator` ("mean" | "present" | "present_mask").

    Returns:
        (results list for this video, list of per-frame KeepRecords (batch 1 each)).
    """
    vid = frames.videos[vi]
    h, w = int(vid["height"]), int(vid["width"])
    acc = VideoTrackAccumulator(vid["id"], frames.num_frames(vi), frames.category_ids, top_k, score=score)
    device = next(model.parameters()).device
    state = track = None
    records = []
    if images is None:
        images = (frames.frame(vi, t) for t in range(frames.num_frames(vi)))
    for t, img in zip(range(frames.num_frames(vi)), images):
        out = model(img[None].to(device), state, execution=execution)
        state = out.backbone.state
        perm, track = track_step(track, out.embeds[0], momentum)
        probs = out.pred_logits[0].float().softmax(-1)[perm]
        logits = F.interpolate(out.pred_masks[0][perm][None].float(), size=(h, w), mode="bilinear",
                               align_corners=False)[0]
        masks = logits > mask_threshold
        mask_scores = None
        if score == "present_mask":  # mean mask probability inside the binary mask (Mask2Former)
            mf = masks.flatten(1).float()
            mask_scores = (logits.sigmoid().flatten(1) * mf).sum(1) / mf.sum(1).clamp(min=1.0)
        acc.add_frame(t, probs, masks, mask_scores)
        records.append(out.backbone.keep)
        if visualize_dir is not None:
            _save_overlay(visualize_dir / str(vid.get("name", vid["id"])) / f"{t:05d}.png", img, out, perm,
                          mask_threshold)
    return acc.results(), records


class _FrameSequence(torch.utils.data.Dataset):
    """Every frame of videos 0..n−1, video after video, as one map-style dataset (item = (3, H, W) uint8)."""

    def __init__(self, frames: VideoFrames, n: int) -> None:
        self.frames = frames
        self.index = [(vi, t) for vi in range(n) for t in range(frames.num_frames(vi))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.frames.frame(*self.index[i])


def frame_loader(frames: VideoFrames, n: int, workers: int = 0) -> Iterator[torch.Tensor]:
    """The frames of videos 0..n−1 in order (video after video), decoded and resized ahead of the model by
    ``workers`` background processes (0: here, on demand). One loader for the whole set, so worker start-up is
    paid once, not per video; the caller takes ``num_frames(vi)`` items per video.

    Raises:
        ValueError: negative ``workers``.
    """
    if workers < 0:
        raise ValueError(f"eval.workers must be >= 0, got {workers}")
    seq = _FrameSequence(frames, n)
    if workers == 0:
        return (seq[i] for i in range(len(seq)))
    return iter(torch.utils.data.DataLoader(seq, batch_size=None, shuffle=False, num_workers=workers,
                                            prefetch_factor=4))


def _save_overlay(path: Path, img: torch.Tensor, out, perm: torch.Tensor, thr: float) -> None:
    """Frame (model size) with the confident tracks' masks tinted by track slot, and the pruned patches of the last
    block darkened."""
    from PIL import Image

    arr = img.permute(1, 2, 0).numpy().astype(np.float32)
    H, W = arr.shape[:2]
    keep = out.backbone.keep
    hp, wp = keep.grid
    last = keep.masks[0, -1].view(hp, wp).float()
    shade = F.interpolate(last[None, None], size=(H, W), mode="nearest")[0, 0].numpy()
    arr = arr * (0.45 + 0.55 * shade[..., None])
    probs = out.pred_logits[0].softmax(-1)[perm]
    masks = F.interpolate(out.pred_masks[0][perm][None], size=(H, W), mode="bilinear", align_corners=False)[0] > thr
    rng = np.random.default_rng(0)
    colors = rng.integers(40, 255, size=(masks.shape[0], 3))
    for q in range(masks.shape[0]):
        if probs[q, :-1].max() > 0.5:
            m = masks[q].numpy()
            arr[m] = 0.5 * arr[m] + 0.5 * colors[q]
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def records_pkr(records: list[KeepRecord], first_flags: list[bool] | None = None) -> dict:
    """PKR of per-frame records: global mean over blocks and frames of counts / N (DESIGN.md §4), as
    :class:`vppkit.metrics.pkr.PKRAccumulator`'s dict (``pkr`` key included); ``first_flags`` marks each video's
    first frame."""
    accum = PKRAccumulator()
    for i, r in enumerate(records):
        accum.update(r, is_first=bool(first_flags[i]) if first_flags else False)
    d = accum.to_dict()
    d.setdefault("pkr", accum.pkr())
    return d


def _pack_video(records: list[KeepRecord]) -> dict:
    packed = [r.to_packed() for r in records]
    return {"masks_packed": np.concatenate([p["masks_packed"] for p in packed]),
            "counts": np.concatenate([p["counts"] for p in packed]),
            "overhead_macs": np.concatenate([p["overhead_macs"] for p in packed]),
            "grid": packed[0]["grid"]}


def load_keep_records(path: str | Path) -> dict[int, KeepRecord]:
    """``keep_records.npz`` -> {video_id: KeepRecord with B = frames of the video}."""
    out: dict[int, KeepRecord] = {}
    with np.load(path) as z:
        vids = sorted({int(k.split("_", 1)[0][1:]) for k in z.files})
        for v in vids:
            out[v] = KeepRecord.from_packed({f: z[f"v{v}_{f}"] for f in ("masks_packed", "counts", "grid",
                                                                       "overhead_macs")})
    return out


def run_inference(model, frames: VideoFrames, out_dir: str | Path | None = None, *, top_k: int = 10,
                  mask_threshold: float = 0.0, momentum: float = 0.0, visualize: bool = False,
                  max_videos: int | None = None, progress: bool = True, meta: dict | None = None,
                  score: str = "mean", workers: int = 0) -> dict:
    """Run every video of ``frames`` and (when ``out_dir``) write the files listed in the module docstring.

    ``workers`` background processes decode and resize frames ahead of the model (:func:`frame_loader`;
    ``eval.workers``); the results do not depend on it.

    Returns:
        dict with ``results`` (YouTube-VIS results list), ``records`` ({video_id: KeepRecord}), ``pkr`` (the PKR
        accumulator dict; first frames flagged), ``frames``, ``seconds``, ``sec_per_frame``.
    """
    model.eval()
    out_dir = Path(out_dir) if out_dir else None
    results, packed, all_recs, firsts, per_video = [], {}, [], [], {}
    n = len(frames) if max_videos is None else min(len(frames), max_videos)
    t0 = time.perf_counter()
    loader = frame_loader(frames, n, workers)
    for vi in tqdm(range(n), desc="infer", unit="video", disable=not progress):
        res, recs = infer_video(model, frames, vi, top_k=top_k, mask_threshold=mask_threshold, momentum=momentum,
                                visualize_dir=(out_dir / "vis") if (visualize and out_dir) else None, score=score,
                                images=islice(loader, frames.num_frames(vi)))
        vid = frames.videos[vi]["id"]
        results.extend(res)
        per_video[vid] = KeepRecord(torch.cat([r.masks for r in recs]), torch.cat([r.counts for r in recs]),
                                    recs[0].grid, torch.cat([r.overhead_macs for r in recs]), dict(recs[0].meta))
        for k, v in _pack_video(recs).items():
            packed[f"v{vid}_{k}"] = v
        all_recs.extend(recs)
        firsts.extend([True] + [False] * (len(recs) - 1))
    seconds = time.perf_counter() - t0
    nframes = len(all_recs)
    pkr = records_pkr(all_recs, firsts) if all_recs else {}
    summary = {"frames": nframes, "videos": n, "seconds": seconds, "sec_per_frame": seconds / max(nframes, 1),
               "pkr": pkr, "settings": {"top_k": top_k, "mask_threshold": mask_threshold, "momentum": momentum,
                                                "score": score},
               **(meta or {})}
    if out_dir is not None:
        atomic_write_json(out_dir / "results.json", results, indent=None)
        with atomic_path(out_dir / "keep_records.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **packed)
        atomic_write_json(out_dir / "summary.json", summary)
    return {"results": results, "records": per_video, **summary}


def infer_checkpoint(checkpoint: str | Path, data: str = "val", out_dir: str | Path | None = None, *,
                     frames_root: str | Path | None = None, dense: bool = False, noise: bool | None = None,
                     visualize: bool = False, max_videos: int | None = None, device: str = "cpu",
                     progress: bool = True, workers: int | None = None, eval_cfg: dict | None = None) -> dict:
    """Load a checkpoint and run :func:`run_inference` on ``data``.

    Args:
        checkpoint: ``model_final.pt`` of a dense or sparse run.
        data: "train" / "val" (that split of the checkpoint's data config) or a YouTube-VIS json path.
        dense: build the backbone without the pruner (sparse checkpoints: the dense reference).
        noise: Gumbel noise at inference (None: the config's ``eval.inference_noise``).
        workers: frame-reading processes (None: the config's ``eval.workers``, 0 when absent).
        eval_cfg: ``eval`` settings to use (top_k, score, mask_threshold, tracker_momentum, inference_noise,
            workers); None: the ones stored in the checkpoint's config (those it was trained under).

    Returns:
        :func:`run_inference`'s dict plus ``gt_json`` (the json that was run), ``noise`` and ``backbone`` (the
        checkpoint's record of what the backbone was built from; ``{}`` for checkpoints without one).
    """
    from vppkit.engine.checkpoint import load_checkpoint
    from vppkit.data.splits import resolve_split
    from vppkit.engine.train import load_model

    ck = load_checkpoint(checkpoint)
    cfg = ck["config"]
    ecfg = cfg.get("eval", {}) if eval_cfg is None else eval_cfg
    noise = bool(ecfg.get("inference_noise", False)) if noise is None else bool(noise)
    pruning = None
    if ck.get("stage") == "sparse" and not dense:
        pruning = {**cfg["pruning"], "inference_noise": noise}
    model, _ = load_model(checkpoint, pruning=pruning or {"method": "none"}, device=device, ck=ck)
    if data in ("train", "val"):
        js, fr = resolve_split(cfg["data"], data, progress=progress)
        frames_root = frames_root or fr
    else:
        js = Path(data)
    frames = VideoFrames(js, frames_root, cfg["model"]["img_size"], cache=False)
    meta = {"checkpoint": str(checkpoint), "gt_json": str(js), "noise": noise,
            "pruning": (pruning or {}).get("method", "none"), "profile": cfg.get("profile"),
            "backbone": ck.get("backbone") or {}}
    res = run_inference(model, frames, out_dir, top_k=int(ecfg.get("top_k", 10)),
                        mask_threshold=float(ecfg.get("mask_threshold", 0.0)),
                        momentum=float(ecfg.get("tracker_momentum", 0.0)), visualize=visualize,
                        max_videos=max_videos, progress=progress, meta=meta,
                        score=str(ecfg.get("score", "mean")),
                        workers=int(ecfg.get("workers", 0)) if workers is None else int(workers))
    return res


def evaluate_run(out_dir: str | Path, gt_json: str | Path) -> dict:
    """Video AP and frame-level mAP_bbox / mAP_segm of ``out_dir/results.json``; writes ``out_dir/ap.json``."""

    out_dir = Path(out_dir)
    ap = evaluate_video_ap(gt_json, out_dir / "results.json")
    ap.update(evaluate_frame_ap(gt_json, out_dir / "results.json"))
    atomic_write_json(out_dir / "ap.json", ap)
    return ap
