"""Online inference: frame by frame, carrying the backbone's temporal state and the tracker state per video.

For every video: ``state = None`` (VPP: first frame has no Map-SM), ``track = None``; per frame the model runs under
``torch.no_grad`` (gathered execution), the masks are upsampled to the original frame size, thresholded and
RLE-encoded at once. The model's ``tracker`` (``model.tracker``) decides how frames are linked:

- ``embedding`` (MinVIS): the queries are put in track order (:func:`track_step`) and the class probabilities
  summed (:class:`VideoTrackAccumulator`);
- ``rovis``: the tracks in memory enter the decoder as track queries, each detection of a track query keeps that
  track's id, static-query detections start new tracks (:mod:`vppkit.models.vis.rovis`); results per track id
  (:class:`TrackResultsAccumulator`: mean detection score, majority class). Frames run one at a time.

Nothing with a graph and no full-size mask tensor outlives its frame, so memory does not grow with video length
beyond the compact RLEs the results need (and, for rovis, the retained tracks' queries).

:func:`infer_video` is the one inference loop of the project: the results table (:func:`run_inference`), the
training-free selector study and the oracle-pruning study (``experiments/selectors.py``, ``experiments/oracle.py``,
which pass an external keep-mask schedule and a frame subset) all score tracks the same way, with the profile's
``eval`` settings (:class:`EvalSettings`).

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

import hashlib
import io
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from vppkit.config import EvalConfig
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.engine.checkpoint import load_checkpoint, load_model
from vppkit.metrics.coco_frames import evaluate_frame_ap
from vppkit.metrics.pkr import PKRAccumulator
from vppkit.metrics.ytvis_ap import evaluate_video_ap
from vppkit.models.records import KeepRecord
from vppkit.models.vis.rovis import TrackResultsAccumulator, frame_detections, rovis_track_step
from vppkit.models.vis.tracker import VideoTrackAccumulator, track_step
from vppkit.utils.io import atomic_path, atomic_write_bytes, atomic_write_json

__all__ = ["EvalSettings", "infer_video", "video_rng", "run_inference", "infer_checkpoint", "evaluate_run",
           "load_keep_records", "records_pkr", "frame_loader"]


@dataclass(frozen=True)
class EvalSettings:
    """How a video's per-frame predictions become YouTube-VIS results (the profile's ``eval`` section).

    Attributes:
        top_k: (track, class) pairs kept per video (MinVIS).
        score: (track, class) scoring of :class:`VideoTrackAccumulator` ("mean" | "present" | "present_mask").
        mask_threshold: mask-logit threshold (0 = probability 0.5).
        tracker_momentum: tracker reference momentum (0 = MinVIS, match to the previous frame).
        rovis_new_score, rovis_keep_score, rovis_retain: ``model.tracker: rovis`` only: score above which a
            static-query detection starts a track (0.3) / a track-query detection continues one (0.25), frames an
            undetected track stays in memory (10) (:mod:`vppkit.models.vis.rovis`).
    """

    top_k: int
    score: str
    mask_threshold: float
    tracker_momentum: float
    rovis_new_score: float = EvalConfig.rovis_new_score
    rovis_keep_score: float = EvalConfig.rovis_keep_score
    rovis_retain: int = EvalConfig.rovis_retain

    @classmethod
    def from_config(cls, ecfg: Mapping | None = None) -> "EvalSettings":
        """Settings from an ``eval`` section; keys it lacks (or ``None`` for all) come from the config schema
        (:class:`vppkit.config.EvalConfig`), where the defaults are written once. Other keys of the section (split,
        workers, ...) are ignored."""
        d = {**asdict(EvalConfig()), **dict(ecfg or {})}
        return cls(top_k=int(d["top_k"]), score=str(d["score"]), mask_threshold=float(d["mask_threshold"]),
                   tracker_momentum=float(d["tracker_momentum"]), rovis_new_score=float(d["rovis_new_score"]),
                   rovis_keep_score=float(d["rovis_keep_score"]), rovis_retain=int(d["rovis_retain"]))

    def as_dict(self) -> dict:
        return asdict(self)


def _settings(settings: EvalSettings | Mapping | None) -> EvalSettings:
    return settings if isinstance(settings, EvalSettings) else EvalSettings.from_config(settings)


@torch.no_grad()
def infer_video(model, frames: VideoFrames, vi: int, settings: EvalSettings | Mapping | None = None, *,
                keep_masks: torch.Tensor | None = None, frame_indices: Sequence[int] | None = None,
                batch: int = 1, execution: str | None = "gathered", visualize_dir: Path | None = None,
                images: Iterable[torch.Tensor] | None = None,
                seed: int | None = None) -> tuple[list[dict], list[KeepRecord]]:
    """Run one video online: backbone (+ pruner state) -> tracker -> upsampled, thresholded masks -> results.

    The tracker is the model's (``model.tracker``): ``embedding`` (MinVIS query matching) or ``rovis`` (track
    queries; :func:`vppkit.models.vis.rovis.rovis_track_step`, the ``rovis_*`` settings).

    Random draws at inference (the pruners' Gumbel noise with ``inference_noise``: VPP's Map-SM / SMs, SViT's
    gates, DynamicViT's ranking) come from torch's default generator; with ``seed`` they are seeded per video from
    (seed, video id) (:func:`video_rng`) inside a forked RNG state, so a video's results do not depend on which
    videos ran before it or on data-loader workers, and the caller's RNG state is left untouched.

    Args:
        model: a :class:`VISModel` in eval mode. With ``keep_masks`` its backbone's pruner must take the masks as
            ``state`` (:class:`~vppkit.models.pruning.base.ExternalMaskPruner`).
        frames: the dataset reader; ``vi`` the video index in it.
        settings: :class:`EvalSettings` or an ``eval`` config section (None: ``the schema's, :class:`vppkit.config.EvalConfig`).
        keep_masks: optional external keep-mask schedule, (T, depth, N) bool, one (depth, N) schedule per
            processed frame, passed as the backbone ``state`` (no temporal state is carried then).
        frame_indices: the frames to run, in order (default all); results have one segmentation per listed frame
            (evaluate against the ground truth restricted to them, :func:`vppkit.data.ytvis.subset_frames`).
        batch: frames per forward; > 1 only with ``keep_masks`` (frames are independent then; a temporal pruner
            state needs frame-by-frame execution). A ``rovis`` model runs frame by frame whatever ``batch`` is
            (its track queries come from the previous frame).
        execution: backbone execution mode.
        visualize_dir: write an overlay PNG per frame there (optional).
        images: the processed frames in order, (3, H, W) uint8 each, e.g. read ahead by :func:`frame_loader`;
            None reads them from ``frames`` here.
        seed: seed of the video's random draws (None: the default generator as it stands, not repeatable).

    Returns:
        (results list for this video, list of per-frame KeepRecords (batch 1 each)).

    Raises:
        ValueError: ``batch > 1`` without ``keep_masks``, or ``keep_masks`` not one schedule per processed frame.
    """
    s = _settings(settings)
    vid = frames.videos[vi]
    ts = list(range(frames.num_frames(vi))) if frame_indices is None else [int(t) for t in frame_indices]
    if batch < 1 or (batch > 1 and keep_masks is None):
        raise ValueError(f"infer_video: batch must be 1 without an external keep-mask schedule, got {batch}")
    if keep_masks is not None and (keep_masks.dim() != 3 or keep_masks.shape[0] != len(ts)):
        raise ValueError(f"infer_video: keep_masks must be (T={len(ts)}, depth, N), got {tuple(keep_masks.shape)}")
    device = next(model.parameters()).device
    rovis = getattr(model, "tracker", "embedding") == "rovis"
    if rovis:
        acc = TrackResultsAccumulator(vid["id"], len(ts), frames.category_ids, s.top_k)
    else:
        acc = VideoTrackAccumulator(vid["id"], len(ts), frames.category_ids, s.top_k, score=s.score)
    with video_rng(seed, vid["id"], device):
        if rovis:
            return _infer_frames_rovis(model, frames, vi, ts, s, acc, device, keep_masks, execution, visualize_dir,
                                       images)
        return _infer_frames(model, frames, vi, ts, s, acc, device, keep_masks, batch, execution, visualize_dir,
                             images)


@contextmanager
def video_rng(seed: int | None, video_id, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with torch's generators (CPU, and ``device`` when CUDA) seeded from (``seed``, ``video_id``)
    (``np.random.SeedSequence``; a non-integer id is hashed by its text, SHA-256) and restore the previous RNG state
    afterwards (``torch.random.fork_rng``). ``seed`` None: a no-op (the generators as they stand)."""
    if seed is None:
        yield
        return
    try:
        vid = int(video_id)
    except (TypeError, ValueError):
        vid = int.from_bytes(hashlib.sha256(str(video_id).encode()).digest()[:8], "little")
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(np.random.SeedSequence([int(seed), vid]).generate_state(1)[0]))
        yield


def _infer_frames(model, frames: VideoFrames, vi: int, ts: list[int], s: EvalSettings, acc: VideoTrackAccumulator,
                  device, keep_masks, batch: int, execution, visualize_dir, images):
    """The frame loop of :func:`infer_video` (same arguments)."""
    vid = frames.videos[vi]
    h, w = int(vid["height"]), int(vid["width"])
    state = track = None
    records: list[KeepRecord] = []
    it = iter(images) if images is not None else (frames.frame(vi, t) for t in ts)
    for start in range(0, len(ts), batch):
        imgs = list(islice(it, batch))
        if not imgs:
            break
        if keep_masks is not None:
            state = keep_masks[start:start + len(imgs)]
        out = model(torch.stack(imgs).to(device), state, execution=execution)
        if keep_masks is None:
            state = out.backbone.state
        for j, img in enumerate(imgs):
            perm, track = track_step(track, out.embeds[j], s.tracker_momentum)
            probs = out.pred_logits[j].float().softmax(-1)[perm]
            logits = F.interpolate(out.pred_masks[j][perm][None].float(), size=(h, w), mode="bilinear",
                                   align_corners=False)[0]
            masks = logits > s.mask_threshold
            mask_scores = None
            if s.score == "present_mask":  # mean mask probability inside the binary mask (Mask2Former)
                mf = masks.flatten(1).float()
                mask_scores = (logits.sigmoid().flatten(1) * mf).sum(1) / mf.sum(1).clamp(min=1.0)
            acc.add_frame(start + j, probs, masks, mask_scores)
            keep = out.backbone.keep if len(imgs) == 1 else out.backbone.keep[j]
            records.append(keep)
            if visualize_dir is not None:
                _save_overlay(visualize_dir / str(vid.get("name", vid["id"])) / f"{ts[start + j]:05d}.png", img,
                              out, j, perm, s.mask_threshold)
    return acc.results(), records


def _infer_frames_rovis(model, frames: VideoFrames, vi: int, ts: list[int], s: EvalSettings,
                        acc: TrackResultsAccumulator, device, keep_masks, execution, visualize_dir, images):
    """The frame loop of :func:`infer_video` for a ``rovis`` model (one frame per forward): the tracks in memory
    are the frame's track queries; detections -> tracks (:func:`rovis_track_step`) -> per-track RLEs."""
    vid = frames.videos[vi]
    h, w = int(vid["height"]), int(vid["width"])
    q = model.num_queries
    state = track = None
    records: list[KeepRecord] = []
    it = iter(images) if images is not None else (frames.frame(vi, t) for t in ts)
    for j, img in enumerate(islice(it, len(ts))):
        if keep_masks is not None:
            state = keep_masks[j:j + 1]
        tq = track.track_queries() if track is not None else None
        out = model(img[None].to(device), state, execution=execution,
                    track_queries=None if tq is None else tq.to(device))
        if keep_masks is None:
            state = out.backbone.state
        logits = F.interpolate(out.pred_masks[0][None].float(), size=(h, w), mode="bilinear",
                               align_corners=False)[0]
        det = frame_detections(out.pred_logits[0], logits, q, s.rovis_new_score, s.rovis_keep_score,
                               s.mask_threshold)
        ids, sel, track = rovis_track_step(track, det, out.queries[0], q, j, s.rovis_retain)
        kept = det.take(sel)
        acc.add_frame(j, ids, kept.labels, kept.scores, kept.masks)
        records.append(out.backbone.keep)
        if visualize_dir is not None:
            _save_track_overlay(visualize_dir / str(vid.get("name", vid["id"])) / f"{ts[j]:05d}.png", img,
                                out.backbone.keep, kept.masks, ids)
    return acc.results(), records


def _save_track_overlay(path: Path, img: torch.Tensor, keep: KeepRecord, masks: torch.Tensor,
                        ids: torch.Tensor) -> None:
    """The frame (model size) with each tracked detection's mask tinted by its track id, and the pruned patches of
    the last block darkened (``rovis`` models)."""
    arr = img.permute(1, 2, 0).numpy().astype(np.float32)
    H, W = arr.shape[:2]
    hp, wp = keep.grid
    shade = F.interpolate(keep.masks[0, -1].view(hp, wp).float()[None, None], size=(H, W), mode="nearest")[0, 0]
    arr = arr * (0.45 + 0.55 * shade.numpy()[..., None])
    if masks.shape[0]:
        small = F.interpolate(masks[None].float().cpu(), size=(H, W), mode="nearest")[0] > 0.5
        for t, m in zip(ids.tolist(), small):
            color = np.random.default_rng(t).integers(40, 255, size=3)
            mk = m.numpy()
            arr[mk] = 0.5 * arr[mk] + 0.5 * color
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


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


def _save_overlay(path: Path, img: torch.Tensor, out, j: int, perm: torch.Tensor, thr: float) -> None:
    """Frame ``j`` of the batch (model size) with the confident tracks' masks tinted by track slot, and the pruned
    patches of the last block darkened."""
    arr = img.permute(1, 2, 0).numpy().astype(np.float32)
    H, W = arr.shape[:2]
    keep = out.backbone.keep
    hp, wp = keep.grid
    last = keep.masks[j, -1].view(hp, wp).float()
    shade = F.interpolate(last[None, None], size=(H, W), mode="nearest")[0, 0].numpy()
    arr = arr * (0.45 + 0.55 * shade[..., None])
    probs = out.pred_logits[j].softmax(-1)[perm]
    masks = F.interpolate(out.pred_masks[j][perm][None], size=(H, W), mode="bilinear", align_corners=False)[0] > thr
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


def run_inference(model, frames: VideoFrames, out_dir: str | Path | None = None,
                  settings: EvalSettings | Mapping | None = None, *, visualize: bool = False,
                  max_videos: int | None = None, progress: bool = True, meta: dict | None = None,
                  workers: int = 0, seed: int | None = None) -> dict:
    """Run every video of ``frames`` with :func:`infer_video` and (when ``out_dir``) write the files listed in the
    module docstring.

    ``settings``: :class:`EvalSettings` or an ``eval`` config section (None: ``the schema's, :class:`vppkit.config.EvalConfig`).
    ``workers`` background processes decode and resize frames ahead of the model (:func:`frame_loader`;
    ``eval.workers``); the results do not depend on it. ``seed``: each video's random draws (inference noise) are
    seeded from (seed, video id) (:func:`video_rng`); None leaves them unseeded.

    Returns:
        dict with ``results`` (YouTube-VIS results list), ``records`` ({video_id: KeepRecord}), ``pkr`` (the PKR
        accumulator dict; first frames flagged), ``frames``, ``seconds``, ``sec_per_frame``.
    """
    s = _settings(settings)
    model.eval()
    out_dir = Path(out_dir) if out_dir else None
    results, packed, all_recs, firsts, per_video = [], {}, [], [], {}
    n = len(frames) if max_videos is None else min(len(frames), max_videos)
    t0 = time.perf_counter()
    loader = frame_loader(frames, n, workers)
    for vi in tqdm(range(n), desc="infer", unit="video", disable=not progress):
        res, recs = infer_video(model, frames, vi, s,
                                visualize_dir=(out_dir / "vis") if (visualize and out_dir) else None,
                                images=islice(loader, frames.num_frames(vi)), seed=seed)
        vid = frames.videos[vi]["id"]
        results.extend(res)
        per_video[vid] = KeepRecord(torch.cat([r.masks for r in recs]), torch.cat([r.counts for r in recs]),
                                    recs[0].grid, torch.cat([r.overhead_macs for r in recs]), dict(recs[0].meta))
        for k, v in _pack_video(recs).items():
            packed[f"v{vid}_{k}"] = v
        all_recs.extend(recs)
        firsts.extend([True] + [False] * (len(recs) - 1))
    seconds = time.perf_counter() - t0
    tracker = getattr(model, "tracker", "embedding")
    nframes = len(all_recs)
    pkr = records_pkr(all_recs, firsts) if all_recs else {}
    summary = {"frames": nframes, "videos": n, "seconds": seconds, "sec_per_frame": seconds / max(nframes, 1),
               "pkr": pkr, "settings": {"top_k": s.top_k, "mask_threshold": s.mask_threshold,
                                        "momentum": s.tracker_momentum, "score": s.score, "seed": seed,
                                        "tracker": tracker, **({"rovis_new_score": s.rovis_new_score,
                                                                "rovis_keep_score": s.rovis_keep_score,
                                                                "rovis_retain": s.rovis_retain}
                                                               if tracker == "rovis" else {})},
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
                     progress: bool = True, workers: int | None = None, eval_cfg: dict | None = None,
                     seed: int | None = None) -> dict:
    """Load a checkpoint and run :func:`run_inference` on ``data``.

    Args:
        checkpoint: ``model_final.pt`` of a dense or sparse run.
        data: "train" / "val" (that split of the checkpoint's data config) or a YouTube-VIS json path.
        dense: build the backbone without the pruner (sparse checkpoints: the dense reference).
        noise: Gumbel noise at inference (None: the config's ``eval.inference_noise``; the schema's default, on,
            when the config has none).
        seed: seed of the inference noise, per video (:func:`video_rng`); None: the checkpoint config's ``seed``.
        workers: frame-reading processes (None: the config's ``eval.workers``, 0 when absent).
        eval_cfg: ``eval`` settings to use (top_k, score, mask_threshold, tracker_momentum, inference_noise,
            workers); None: the ones stored in the checkpoint's config (those it was trained under). Keys missing
            from either come from the schema (:meth:`EvalSettings.from_config`).

    Returns:
        :func:`run_inference`'s dict plus ``gt_json`` (the json that was run), ``noise`` and ``backbone`` (the
        checkpoint's record of what the backbone was built from; ``{}`` for checkpoints without one).
    """
    ck = load_checkpoint(checkpoint)
    cfg = ck["config"]
    ecfg = cfg.get("eval", {}) if eval_cfg is None else eval_cfg
    noise = bool(ecfg.get("inference_noise", EvalConfig.inference_noise)) if noise is None else bool(noise)
    seed = int(cfg.get("seed", 0)) if seed is None else int(seed)
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
    meta = {"checkpoint": str(checkpoint), "gt_json": str(js), "noise": noise, "seed": seed,
            "pruning": (pruning or {}).get("method", "none"), "profile": cfg.get("profile"),
            "backbone": ck.get("backbone") or {}}
    return run_inference(model, frames, out_dir, EvalSettings.from_config(ecfg), visualize=visualize,
                         max_videos=max_videos, progress=progress, meta=meta,
                         workers=int(ecfg.get("workers", 0)) if workers is None else int(workers), seed=seed)


def evaluate_run(out_dir: str | Path, gt_json: str | Path) -> dict:
    """Video AP and frame-level mAP_bbox / mAP_segm of ``out_dir/results.json``; writes ``out_dir/ap.json``."""

    out_dir = Path(out_dir)
    ap = evaluate_video_ap(gt_json, out_dir / "results.json")
    ap.update(evaluate_frame_ap(gt_json, out_dir / "results.json"))
    atomic_write_json(out_dir / "ap.json", ap)
    return ap
