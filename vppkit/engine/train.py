"""Two-stage training of the VIS model (vpp-notes §7, supplementary §A): dense, then sparse fine-tuning.

- **samples**: ``train.sample_unit`` "video" (one per video per epoch, CPU profiles) or "frame" (one per annotated
  key frame, the official mmtrack iteration; paper-scale profiles), :func:`training_samples`; the schedule is
  ``train.<stage>.steps`` or ``train.epochs`` (:func:`steps_for`); the clip around a sample: :func:`clip_indices`.
- **dense**: every sample is a clip of ``train.clip_frames`` (2) frames of one video; each frame is an independent
  image for the per-frame model (``model.tracker: embedding``: MinVIS trains per frame, the tracker needs no
  training); segmentation loss reference ×0.5 + key ×1 (``train.dense.frame_loss_weights``, :func:`chain_loss`).
  ``model.tracker: rovis``: the official ROVIS loss instead (key ×1, reference with track queries from the key
  ×0.5, key with track queries from the reference ×0.5; :mod:`vppkit.engine.rovis_loss`).
- **sparse**: the pruner is on; a sample is a chain of ``train.clip_frames`` (3) frames run in chain order
  reff → ref → key, the backbone's temporal state passed frame to frame and **not detached** (gradients cross
  frames, as in the official code); the frame-weighted segmentation loss (reff ×0, ref ×0.5, key ×1: the
  official ROVIS weights, ``train.sparse.frame_loss_weights``, :func:`chain_loss`) plus the sparsity loss
  (``BackboneOutput.aux_loss``) of every frame are optimised.

Schedule shape (both stages): AdamW, weight decay 0.05 (none on norms / biases / queries / embeddings), backbone
lr × ``backbone_lr_mult`` (0.1 in the paper) except the pruner's modules, gradient clipping (L2 max norm), step
decay × 0.1 at ``decay_at`` (2/3) of the schedule.

Determinism and resume: the samples of step s and every random draw inside it (Gumbel noise, flips) come from
``seed``, ``s`` and the rank only (:func:`seed_step`, a ``DistributedSampler`` per epoch), so a run killed and
resumed from its last checkpoint ends with exactly the weights of an uninterrupted run (CPU).

Data loading: step s's batch is item s of :class:`StepBatches`, read ahead by a ``DataLoader`` in
``train.workers`` background processes (0 = in the training process; paper-scale profiles: 4 per GPU process), so
JPEG decoding and resizing overlap the model's step. The batches, hence the trained weights, are the same for any
worker count (tested), which is why ``workers`` is left out of config hashes (:data:`vppkit.config.RUNTIME_KEYS`).

Outputs in the run folder: ``checkpoint_last.pt`` (every ``ckpt_every`` steps and at the end), ``model_final.pt``,
``metrics.csv`` (one row per step: ``loss`` (total), ``loss_seg`` (weighted task loss) and its parts,
``loss_sparse``, sparse stage ``keep_ratio`` and ``keep_b0`` .. ``keep_b11`` (:func:`chain_loss`), ``lr``, wall
``sec`` (waiting for the batch + the step), ``cpu_sec`` of the training process (all its threads; loader
workers not counted) and ``load1`` (the machine's 1-minute load average after the step: timings are comparable
only at similar load); the whole file is rewritten atomically at each checkpoint, so it never holds rows beyond the
checkpointed step), ``config.json`` (+ ``backbone``: what the backbone was built from, frozen or not),
``feature_cache.json`` (runs with ``train.dense.feature_cache``: the cache used and what building it cost). Only
rank 0 writes.

Feature cache (``train.dense.feature_cache``, issue 15): in the dense stage on a frozen backbone the backbone's
output of every (frame, flip) the steps visit is computed once before the first step
(:mod:`vppkit.engine.feature_cache`, stored under ``cache_dir()/features``) and the steps train the pyramid +
decoder on it: the same :class:`StepBatches` draws (clips, flips), seeds and :func:`chain_loss`, so a cached and an
uncached run of the same steps end with the same weights up to float tolerance. Refused (ValueError) in the sparse
stage, with an unfrozen backbone and with the adapter host; ignored, with the reason recorded, when the pretrained
backbone fell back to a from-scratch one (the freeze is ignored then).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from vppkit.config import config_hash, merge
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames, has_instance, sample_reference_frames
from vppkit.engine.checkpoint import FINAL, LAST, load_checkpoint, save_checkpoint, set_rng_states, unwrap
from vppkit.engine.distributed import DistInfo, init_distributed
from vppkit.engine.rovis_loss import RovisLossSettings, rovis_task_loss
from vppkit.engine.feature_cache import FeatureCache, check_feature_cache
from vppkit.models.vis.losses import build_criterion
from vppkit.models.vis.model import TRACKERS, build_vis_model
from vppkit.utils.io import atomic_path, atomic_write_json
from vppkit.utils.paths import cache_dir
from vppkit.utils.provenance import code_version

log = logging.getLogger("vppkit.train")

STAGES = ("dense", "sparse")
SAMPLE_UNITS = ("video", "frame")


#: The profile sections a training run reads. Run folders are named by the hash of these only
#: (:func:`training_config`), so changing an analysis setting (``eval``, ``fgs``, ``selectors``, ``oracle``, ...)
#: reuses the trained models; inference takes its ``eval`` settings from the caller when given
#: (:func:`vppkit.engine.infer.infer_checkpoint`).
TRAINING_SECTIONS = ("seed", "data", "model", "loss", "train", "pruning")

#: The code a trained model depends on: data loading, the model (ViT, pruners, VIS head and losses), pretrained
#: weight conversion, and this training loop with its ROVIS loss and checkpoint / DDP helpers. Its
#: :func:`~vppkit.utils.provenance.code_version` is part of :func:`run_key`, so a change here retrains, while a
#: change to analysis code (``vppkit.metrics``, ``vppkit.engine.infer``, ``vppkit.flops``, ``vppkit.bench``,
#: ``experiments``, ``analyses``) reuses the trained models. Note ``vppkit.models`` is keyed whole (training-free
#: selectors in ``vppkit.models.pruning.selection`` included) and this module also holds :func:`load_model`.
TRAINING_CODE = ("vppkit.data", "vppkit.models", "vppkit.weights", "vppkit.engine.train", "vppkit.engine.rovis_loss",
                 "vppkit.engine.checkpoint", "vppkit.engine.distributed", "vppkit.engine.feature_cache")


def training_config(cfg: dict) -> dict:
    """The part of a resolved profile that determines a trained model (:data:`TRAINING_SECTIONS`)."""
    return {k: cfg[k] for k in TRAINING_SECTIONS if k in cfg}


def run_key(cfg: dict, stage: str, init: str | Path | None = None) -> str:
    """Hash naming a training run: :func:`training_config`, the stage, the init checkpoint and the version of the
    training code (:data:`TRAINING_CODE`) (run folders of :func:`train` and of the experiments' model zoo)."""
    return config_hash({"config": training_config(cfg), "stage": stage, "init": str(init) if init else None,
                        "code_version": code_version(*TRAINING_CODE)})


def stage_config(cfg: dict, stage: str) -> dict:
    """``train`` section with the stage's overrides (``train.dense`` / ``train.sparse``) merged in."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    tcfg = {k: v for k, v in cfg["train"].items() if k not in STAGES}
    return merge(tcfg, cfg["train"][stage] or {})


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch from (seed, step, rank): every random draw of a step is reproducible."""
    s = int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


class StepSampler:
    """Sample indices of each step (:func:`training_samples`): ``DistributedSampler`` (shuffled per epoch from the
    seed) walked in order."""

    def __init__(self, n: int, batch: int, seed: int, info: DistInfo) -> None:
        self.sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self.per_epoch, self.batch = len(self.sampler), batch
        self._cache: dict[int, list[int]] = {}

    def _epoch(self, e: int) -> list[int]:
        if e not in self._cache:
            self.sampler.set_epoch(e)
            self._cache = {e: list(iter(self.sampler))}
        return self._cache[e]

    def indices(self, step: int) -> list[int]:
        out = []
        for j in range(self.batch):
            pos = step * self.batch + j
            out.append(self._epoch(pos // self.per_epoch)[pos % self.per_epoch])
        return out


def make_optimizer(model, tcfg: dict, total_steps: int):
    """AdamW + step decay ×``decay_gamma`` at ``decay_at`` · total_steps (LambdaLR, stepped per optimizer step)."""
    groups = unwrap(model).param_groups(float(tcfg["lr"]), float(tcfg["weight_decay"]),
                                        float(tcfg["backbone_lr_mult"]))
    opt = torch.optim.AdamW(groups, lr=float(tcfg["lr"]), betas=(0.9, 0.999), eps=1e-8)
    milestone = int(math.floor(float(tcfg["decay_at"]) * total_steps))
    gamma = float(tcfg["decay_gamma"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: gamma if s >= milestone else 1.0)
    return opt, sched


def training_samples(frames: VideoFrames, unit: str) -> list[tuple[int, int | None]]:
    """What one epoch walks over, as (video index, key frame or None).

    Args:
        frames: the training set.
        unit: ``"video"``: one sample per video (the clip is drawn anywhere in it: :meth:`VideoFrames.sample_clip`);
            ``"frame"``: one sample per annotated frame that shows at least one instance, as mmtrack's
            ``CocoVideoDataset`` iterates key frames in the official VPP configs (vpp-notes §7.1); an epoch is
            then tens of times more samples than videos (YouTube-VIS videos have tens of annotated frames each).

    Raises:
        ValueError: unknown ``unit``, or no frame with an instance (``unit="frame"``; names the json).
    """
    if unit == "video":
        return [(vi, None) for vi in range(len(frames))]
    if unit != "frame":
        raise ValueError(f"train.sample_unit must be one of {SAMPLE_UNITS}, got {unit!r}")
    by_video = frames.video_set.by_video
    out = [(vi, t) for vi, v in enumerate(frames.videos) for t in range(frames.num_frames(vi))
           if has_instance(by_video[v["id"]], t)]
    if not out:
        raise ValueError(f"{frames.json_path}: no annotated frame with an instance to train on")
    return out


def steps_for(tcfg: dict, num_samples: int, world_size: int) -> int:
    """Optimizer steps of a stage: ``ceil(epochs · num_samples / (batch · world_size))`` when ``train.epochs`` is
    set (paper-scale profiles: 6 epochs, vpp-notes §7.1), else the stage's ``steps`` (``train.dense.steps`` /
    ``train.sparse.steps``).

    Raises:
        ValueError: neither is set, or the result is < 1.
    """
    if tcfg.get("epochs") is not None:
        total = math.ceil(float(tcfg["epochs"]) * num_samples / (int(tcfg["batch"]) * world_size))
    elif tcfg.get("steps") is not None:
        total = int(tcfg["steps"])
    else:
        raise ValueError("set train.<stage>.steps or train.epochs (per stage: train.dense.* / train.sparse.*)")
    if total < 1:
        raise ValueError(f"the schedule has {total} steps (train.<stage>.steps / train.epochs)")
    return total


def clip_indices(frames: VideoFrames, sample: tuple[int, int | None], length: int, tcfg: dict,
                 rng: np.random.Generator) -> list[int]:
    """Frame indices of one training clip in chain order (the loss is taken on every frame of the chain).

    ``sample`` (vi, None): ``length`` frames in temporal order with gaps in [1, ``train.max_gap``] (3).
    ``sample`` (vi, key): key + ``length − 1`` references within ± ``train.ref_window`` (5) annotated frames,
    chained in ``train.ref_order`` ("random" = the official ``sort_ref_imgs=False``; "sorted"; "causal")
    (:func:`vppkit.data.video.sample_reference_frames`, mmtrack's ``ref_img_sampler``).
    """
    vi, key = sample
    if key is None:
        return frames.sample_clip(vi, length, int(tcfg["max_gap"]), rng)
    chain, _ = sample_reference_frames(key, frames.num_frames(vi), length - 1, int(tcfg["ref_window"]),
                                       str(tcfg["ref_order"]), rng)
    return chain


def _draw(frames: VideoFrames, samples: list[tuple[int, int | None]], length: int, tcfg: dict, flip: bool,
          rng: np.random.Generator) -> list[tuple[int, list[int], bool]]:
    """The random draws of one step, in order: per sample (video index, clip frame indices in chain order
    (:func:`clip_indices`), horizontal flip (probability 0.5 when ``flip``)). The flip is the batches' only random
    augmentation (frames are resized deterministically, :class:`VideoFrames`)."""
    clips = [clip_indices(frames, smp, length, tcfg, rng) for smp in samples]
    flips = [bool(flip and rng.random() < 0.5) for _ in samples]
    return [(vi, clip, fl) for (vi, _), clip, fl in zip(samples, clips, flips)]


def _batch(frames: VideoFrames, samples: list[tuple[int, int | None]], length: int, tcfg: dict, flip: bool,
           rng: np.random.Generator, features: FeatureCache | None = None):
    """Per time step t: images (B, 3, H, W) uint8 (or, with ``features``, the cached backbone output of those
    flipped / unflipped frames, :meth:`FeatureCache.output`) and B targets ({labels, masks, ids}, masks flipped
    with their frame)."""
    draws = _draw(frames, samples, length, tcfg, flip, rng)
    steps = []
    for t in range(length):
        imgs, tg = [], []
        for v, clip, fl in draws:
            labels, masks = frames.instances(v, clip[t])
            if features is None:
                img = frames.frame(v, clip[t])
                imgs.append(img.flip(-1) if fl else img)
            tg.append({"labels": labels, "masks": masks.flip(-1) if fl else masks,
                       "ids": frames.instance_ids(v, clip[t])})
        if features is None:
            inputs = torch.stack(imgs)
        else:
            inputs = features.output([(v, clip[t], fl) for v, clip, fl in draws])
        steps.append((inputs, tg))
    return steps


class StepBatches(torch.utils.data.Dataset):
    """The batch of every optimizer step, indexed by the step: what the training ``DataLoader`` reads ahead of the
    model in ``train.workers`` processes (0 = in the training process).

    Step s's batch depends on (``seed``, s, ``rank``) only (its own ``np.random.Generator``; no global random
    state), so it is the same whichever process loads it, with 0 or N workers, and after a resume.

    Args:
        frames: the training set at the model size.
        samples: :func:`training_samples`; sampler: :class:`StepSampler` over them.
        length: frames per clip; tcfg: the stage's ``train`` section (``max_gap``, ``ref_window``, ``ref_order``,
            ``flip``).
        features: a :class:`~vppkit.engine.feature_cache.FeatureCache` holding every frame of the steps read
            (:meth:`entries`, :meth:`FeatureCache.ensure`): the items then carry the cached backbone output instead
            of the images; same draws, same targets.

    Item: per time step t of the chain, (images (B, 3, H, W) uint8, or with ``features`` a
    :class:`~vppkit.models.records.BackboneOutput` with tokens (B, N, C); B targets {labels (K,), masks (K, H, W),
    ids (K,) annotation ids: an instance's identity across frames}).
    """

    def __init__(self, frames: VideoFrames, samples: list[tuple[int, int | None]], sampler: StepSampler,
                 length: int, tcfg: dict, seed: int, rank: int, features: FeatureCache | None = None) -> None:
        self.frames, self.samples, self.sampler = frames, samples, sampler
        self.length, self.tcfg, self.seed, self.rank = length, tcfg, seed, rank
        self.features = features

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, self.rank])

    def _samples(self, step: int) -> list[tuple[int, int | None]]:
        return [self.samples[i] for i in self.sampler.indices(step)]

    def __getitem__(self, step: int):
        return _batch(self.frames, self._samples(step), self.length, self.tcfg, bool(self.tcfg["flip"]),
                      self._rng(step), self.features)

    def entries(self, start: int, end: int) -> set[tuple[int, int, bool]]:
        """Every (video index, frame index, flip) that steps ``start``..``end − 1`` show the model (the draws of
        :meth:`__getitem__`, without reading any frame)."""
        out = set()
        for step in range(start, end):
            for vi, clip, fl in _draw(self.frames, self._samples(step), self.length, self.tcfg,
                                      bool(self.tcfg["flip"]), self._rng(step)):
                out.update((vi, int(t), fl) for t in clip)
        return out


def step_loader(batches: StepBatches, start: int, end: int, workers: int, pin_memory: bool = False):
    """``DataLoader`` over steps ``start``..``end − 1`` in order (``batch_size=None``: a step's batch is one item);
    ``workers`` > 0 decode and resize frames in background processes (2 batches ahead each).

    Raises:
        ValueError: negative ``workers``.
    """
    if workers < 0:
        raise ValueError(f"train.workers must be >= 0, got {workers}")
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, end), num_workers=workers,
                                       pin_memory=pin_memory, prefetch_factor=2 if workers else None)


def _to_device(target: dict, device) -> dict:
    return {k: v.to(device) for k, v in target.items()}


def chain_loss(model, criterion, steps, sparse: bool, device, weights: Sequence[float] | None = None,
               tracker: str = "embedding", rovis: RovisLossSettings | None = None) -> tuple[torch.Tensor, dict]:
    """Loss of one batch of clips: the frame-weighted segmentation (task) loss plus the sparsity loss of every
    frame (sparse stage).

    In the sparse stage the frames form a chain: frame t's backbone gets frame t−1's temporal state (not
    detached). In the dense stage every frame starts with ``state=None``.

    **Frame weights (official ROVIS loss).** ``custom_mmtrack/models/vis/rovis.py`` (PatGlan/Video-Patch-Pruning,
    ``ROVIS.loss``) adds per training sample: the key frame decoded with the static queries ×1
    (``mask_loss = self.detector.panoptic_head.loss(x, data_samples)``); the reference frame decoded with track
    queries carried from the key ×0.5 (``ref_mask_loss = {'ref_' + k: v / 2.0 ...}``); the key frame again,
    decoded with track queries carried from the reference, ×0.5 (``ref2_mask_loss = {'ref2_' + k: v / 2.0 ...}``,
    ``three_frame_training = True``); and **no** segmentation loss on the first frame of the VPP chain (``reff``
    contributes only its sparsity loss, ``reff_loss``). The same function trains the dense ROVIS stage
    (key + reference, no ``reff``). The terms are summed, not averaged: about two frame-losses per sample.

    ``weights`` (``train.<stage>.frame_loss_weights``) weigh chain position t (first frame first); the defaults
    map the official terms onto vppkit's chains: sparse reff → ref → key = (0, 0.5, 1), dense ref → key = (0.5, 1).
    The chain's last frame is the key (``ref_order`` random / causal, as the official ``sort_ref_imgs=False``;
    with ``sorted`` or ``sample_unit: video`` the positions keep these weights).

    ``tracker="embedding"`` (MinVIS; the default): the per-frame model has no track queries in training (its
    tracker matches query embeddings at inference, :mod:`vppkit.models.vis.tracker`), every frame with a weight is
    decoded with the static queries, and the key-with-track-queries term has no counterpart, so it is left out.

    ``tracker="rovis"``: the official three terms (:func:`vppkit.engine.rovis_loss.rovis_task_loss`): the key
    (last position) with static queries × w_key, the reference (the position before it) decoded with track
    queries carried from the key × w_ref, the key again with track queries from the reference × ``rovis.w_key2``
    (``train.key_track_weight``); w_key, w_ref are the last two ``weights``; earlier positions (reff) are not
    decoded, so their weights must be 0 (the official: no segmentation loss on reff).

    Normalisation against the sparsity loss: task loss = Σ_t w_t · L_seg(t) (a weighted **sum**, as the official
    code), sparsity loss = Σ_t L_sparse(t) over every frame of the chain, unweighted (official ``reff_loss``,
    ``ref_loss``, ``loss``). With the defaults the task loss is 1.5 frame-losses (embedding) or 2 (rovis, as the
    official code) against three sparsity terms; vppkit before this recipe took the *mean* over the three frames,
    1 frame-loss, so the sparsity loss weighed about twice as much against the task as in the paper (issue 13).

    Args:
        model: the VIS model (or its DDP wrapper).
        criterion: :class:`vppkit.models.vis.losses.SetCriterion`.
        steps: per chain position, (images (B, 3, H, W) uint8, B targets) (:class:`StepBatches` item).
        sparse: sparse stage (temporal chain, sparsity loss, keep logging).
        device: where the model is.
        weights: one segmentation-loss weight per chain position (None: 1 / T each, the plain mean). A frame
            with weight 0 still runs (its backbone state and sparsity loss count); its criterion is skipped.
        tracker: ``"embedding"`` or ``"rovis"`` (``model.tracker``).
        rovis: the ROVIS settings (``tracker="rovis"``; None: :class:`RovisLossSettings` defaults); its ``w_key`` /
            ``w_ref`` are replaced by the last two ``weights``.

    Returns:
        (total loss scalar, logs): ``loss_seg`` (the weighted task loss), ``loss_ce`` / ``loss_mask`` /
        ``loss_dice`` (its weighted parts), ``loss_sparse``; sparse stage also ``keep_ratio`` (mean over frames
        and blocks of the processed fraction) and ``keep_b<b>`` per block b: the fraction of the N patch tokens
        block b processed, mean over the batch and over the frames that have a previous frame in the chain (all
        frames when the chain has one), i.e. the frames on which every VPP gate runs. ``tracker="rovis"`` adds
        ``loss_key`` / ``loss_ref`` / ``loss_key2``, ``loss_track`` and ``track_queries``
        (:func:`~vppkit.engine.rovis_loss.rovis_task_loss`).

    Raises:
        ValueError: ``weights`` does not have one entry per chain position, or a negative weight; an unknown
            tracker; ``tracker="rovis"`` with a non-zero weight before the last two positions.
    """
    n = len(steps)
    w = [1.0 / n] * n if weights is None else [float(v) for v in weights]
    if len(w) != n:
        raise ValueError(f"train.<stage>.frame_loss_weights has {len(w)} weights for a {n}-frame clip "
                         "(train.<stage>.clip_frames); give one per chain position")
    if any(v < 0 for v in w):
        raise ValueError(f"train.<stage>.frame_loss_weights must be >= 0, got {w}")
    if tracker not in TRACKERS:
        raise ValueError(f"model.tracker must be one of {TRACKERS}, got {tracker!r}")
    rovis_mode = tracker == "rovis"
    if rovis_mode and any(v > 0 for v in w[:-2]):
        raise ValueError(f"model.tracker rovis: train.<stage>.frame_loss_weights {w} weigh a frame before the "
                         "reference; ROVIS decodes only the key (last) and the reference (the one before), so the "
                         "earlier weights must be 0")
    state, seg, aux, logs = None, [], [], {}
    keep_all, keep_later = [], []
    feats = {}
    for t, (images, targets) in enumerate(steps):
        if rovis_mode:
            out = model(images.to(device), state if sparse else None, decode=False)
            if t >= n - 2:
                feats[t] = (out.features, [_to_device(g, device) for g in targets])
        else:
            out = model(images.to(device), state if sparse else None)
        state = out.backbone.state
        aux.append(out.backbone.aux_loss)
        if not rovis_mode and w[t] > 0:
            tg = [{"labels": g["labels"].to(device), "masks": g["masks"].to(device)} for g in targets]
            losses = criterion(out.decoder_dict(), tg)
            seg.append(w[t] * losses["loss"])
            for k in ("loss_ce", "loss_mask", "loss_dice"):
                logs[k] = logs.get(k, 0.0) + w[t] * float(losses[k].detach())
        if sparse:
            keep = out.backbone.keep
            frac = keep.counts.double().mean(0) / keep.num_patches           # (depth,)
            keep_all.append(frac)
            if t >= 1 or n == 1:
                keep_later.append(frac)
    if rovis_mode:
        rs = replace(rovis or RovisLossSettings(), w_key=w[-1], w_ref=w[-2] if n >= 2 else 0.0)
        key_f, key_tg = feats[n - 1]
        ref_f, ref_tg = feats[n - 2] if n >= 2 else (None, None)
        loss_r, rlogs = rovis_task_loss(model, criterion, key_f, key_tg, ref_f, ref_tg, rs)
        seg.append(loss_r)
        logs.update(rlogs)
    loss_seg = torch.stack(seg).sum() if seg else torch.zeros((), device=device)
    loss_aux = torch.stack([a.reshape(()) for a in aux]).sum() if sparse else loss_seg.new_zeros(())
    logs["loss_seg"], logs["loss_sparse"] = float(loss_seg.detach()), float(loss_aux.detach())
    if sparse:
        logs["keep_ratio"] = float(torch.stack(keep_all).mean())
        per_block = torch.stack(keep_later).mean(0)
        logs.update({f"keep_b{b}": float(v) for b, v in enumerate(per_block)})
    return loss_seg + loss_aux, logs


def _load_init(model, path: str | Path, ck: dict | None = None) -> None:
    """Initialise from a (dense) checkpoint; only the pruner's parameters may be missing."""
    ck = ck if ck is not None else load_checkpoint(path)
    missing, unexpected = unwrap(model).load_state_dict(ck["model"], strict=False)
    bad = [k for k in missing if ".pruner." not in k]
    if bad or unexpected:
        raise ValueError(f"--init {path}: missing keys {bad[:5]}..., unexpected keys {list(unexpected)[:5]}... "
                         "(only pruner parameters may be missing)")


def _build_for_training(cfg: dict, tcfg: dict, num_classes: int, pcfg: dict | None, init) -> tuple:
    """The model of a stage (initialised from ``init``), frozen per ``train.freeze_backbone``; + backbone info.

    Without ``init`` the backbone comes from the model section (``model.pretrained``: the pretrained weights,
    or the recorded fallback to a from-scratch backbone, :func:`vppkit.models.vis.model.resolve_backbone`).
    With ``init`` (sparse stage) the backbone is built as the init checkpoint's was (same arch, also after a
    fallback) and its weights come from that checkpoint: nothing pretrained is read again.

    ``train.freeze_backbone: true`` freezes the backbone ViT's weights (the pruner, pyramid and decoder
    train). It is ignored, with the reason recorded, when the pretrained backbone was asked for but the model
    fell back to a random-init one: a frozen random backbone would never learn.
    """
    ck_init = load_checkpoint(init) if init else None
    init_bb = (ck_init or {}).get("backbone") or {}
    if init_bb.get("model"):
        # the model as the init checkpoint built it, with this run's tracker (a training / inference setting)
        mdl = {**init_bb["model"], "tracker": str(cfg["model"].get("tracker") or "embedding")}
        model = build_vis_model(mdl, num_classes, pcfg, load_pretrained=False)
        backbone = {k: v for k, v in init_bb.items() if k not in ("frozen", "freeze_note", "trainable_params")}
        backbone["model"] = mdl
        backbone["reason"] = f"{backbone.get('reason')} [weights from --init {init}]"
    else:
        model = build_vis_model(cfg["model"], num_classes, pcfg)
        backbone = dict(model.backbone_info)
    if init:
        _load_init(model, init, ck_init)
    freeze = bool(tcfg["freeze_backbone"])
    note = None
    if freeze and backbone.get("fallback"):
        freeze, note = False, "freeze_backbone ignored: the pretrained backbone is unavailable (from-scratch fallback)"
        log.warning("%s", note)
    if freeze:
        model.freeze_backbone(True)
        note = "backbone ViT weights frozen (not in the optimizer); pruner and head (adapter host: ViT-Adapter too) train"
    backbone.update(frozen=freeze, freeze_note=note,
                    trainable_params=int(sum(p.numel() for p in model.parameters() if p.requires_grad)))
    model.backbone_info = backbone
    log.info("backbone: %s (%s)%s", backbone.get("source"), backbone.get("arch"), " frozen" if freeze else "")
    return model, backbone


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def _read_csv(path: Path, max_step: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= max_step]


def train(cfg: dict, stage: str = "dense", out_dir: str | Path | None = None, init: str | Path | None = None,
          resume: bool = False, stop_at: int | None = None, device: str | None = None,
          progress: bool = True) -> dict:
    """Train one stage.

    Args:
        cfg: resolved profile (:func:`vppkit.config.load_config`).
        stage: "dense" or "sparse" (sparse needs ``pruning.method`` != none and usually ``init``).
        out_dir: run folder (default ``cache_dir()/runs/<profile>-<stage>-<run_key(cfg, stage, init)>``).
        init: checkpoint to start from (the dense model for the sparse stage).
        resume: continue from ``out_dir/checkpoint_last.pt`` when it exists.
        stop_at: stop after this many optimizer steps (simulates a killed run; the schedule still spans
            ``train.<stage>.steps``). A final model is only written when the schedule completes.
        device: "cpu" / "cuda" / None (cuda when available).
        progress: tqdm bar.

    Returns:
        Summary dict: ``out_dir``, ``checkpoint`` (final model, or last checkpoint when stopped early), ``steps``,
        ``seconds`` (wall time of this call, the feature-cache build included), ``sec_per_step``, ``last`` (loss
        values of the last step), ``feature_cache`` (``feature_cache.json``'s record, or None without the cache).

    Raises:
        ValueError: bad stage, a sparse stage without a pruner, incompatible ``init``, a feature cache the stage
            cannot use (:func:`vppkit.engine.feature_cache.check_feature_cache`, a backbone random in training
            mode).
    """
    info = init_distributed(device)
    tcfg = stage_config(cfg, stage)
    use_cache = check_feature_cache(cfg, stage, tcfg)
    sparse = stage == "sparse"
    pcfg = cfg["pruning"] if sparse else None
    if sparse and (not pcfg or str(pcfg["method"]).lower() in ("none", "dense")):
        raise ValueError("stage 'sparse' needs pruning.method (vpp, svit, dynamicvit)")
    seed = int(cfg["seed"])
    run_cfg = {"config": cfg, "stage": stage, "init": str(init) if init else None,
               "code_version": code_version(*TRAINING_CODE), "code": sorted(TRAINING_CODE)}
    name = f"{cfg['profile']}-{stage}-{run_key(cfg, stage, init)}"
    out = Path(out_dir) if out_dir else cache_dir() / "runs" / name

    torch.manual_seed(seed)
    js, frames_root = resolve_split(cfg["data"], "train", progress=progress and info.is_main)
    frames = VideoFrames(js, frames_root, cfg["model"]["img_size"], cache=bool(cfg["data"]["cache"]))
    num_classes = len(frames.category_ids)
    model, backbone = _build_for_training(cfg, tcfg, num_classes, pcfg, init)
    cache_info = None
    if use_cache and not backbone["frozen"]:  # pretrained backbone missing: freeze ignored (recorded), so no cache
        use_cache = False
        cache_info = {"used": False, "reason": "train.dense.feature_cache ignored: the backbone is not frozen "
                                               f"({backbone.get('freeze_note')})"}
        log.warning("%s", cache_info["reason"])
    model = model.to(info.device)
    model.train()
    samples = training_samples(frames, str(tcfg["sample_unit"]))
    batch = int(tcfg["batch"])
    total = steps_for(tcfg, len(samples), info.world_size)
    log.info("%s stage: %d steps over %d samples (unit %s) at batch %d x %d process(es)", stage, total, len(samples),
             tcfg["sample_unit"], batch, info.world_size)
    opt, sched = make_optimizer(model, tcfg, total)
    if info.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.startswith("cuda") else None,
            find_unused_parameters=True)
    criterion = build_criterion(cfg["loss"], num_classes).to(info.device)
    sampler = StepSampler(len(samples), batch, seed, info)

    start, rows = 0, []
    if resume and (out / LAST).exists():
        ck = load_checkpoint(out / LAST, map_location=info.device)
        unwrap(model).load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        set_rng_states(ck["rng"])
        start = int(ck["step"])
        rows = _read_csv(out / "metrics.csv", start)
        log.info("resumed %s at step %d", out / LAST, start)
    extra = {"num_classes": num_classes, "category_ids": frames.category_ids, "stage": stage, "backbone": backbone}
    if info.is_main:
        atomic_write_json(out / "config.json", {**run_cfg, "backbone": backbone})
    end = total if stop_at is None else min(total, int(stop_at))
    every = int(tcfg["ckpt_every"])
    clip_len = int(tcfg["clip_frames"])
    grad_clip = float(tcfg["grad_clip"])
    frame_weights = [float(v) for v in tcfg["frame_loss_weights"]]
    tracker = str(cfg["model"].get("tracker") or "embedding")
    lcfg = cfg["loss"]
    rovis = RovisLossSettings(w_key2=float(tcfg["key_track_weight"]), keep_prob=float(tcfg["track_query_keep"]),
                              fp_prob=float(tcfg["track_query_fp"]), w_class=float(lcfg["w_class"]),
                              w_mask=float(lcfg["w_mask"]), w_dice=float(lcfg["w_dice"]))
    t0 = time.perf_counter()
    batches = StepBatches(frames, samples, sampler, clip_len, tcfg, seed, info.rank)
    if use_cache:
        cache_info = _prepare_feature_cache(unwrap(model), batches, cfg, start, end, info, progress)
    if cache_info is not None:
        extra["feature_cache"] = cache_info
        if info.is_main:
            atomic_write_json(out / "feature_cache.json", cache_info)
    bar = tqdm(total=total, initial=start, desc=f"train {stage}", unit="step", disable=not (progress and info.is_main))
    logs = {}
    loader = step_loader(batches, start, end, int(tcfg["workers"]), pin_memory=info.device.startswith("cuda"))
    ts, cs = time.perf_counter(), time.process_time()
    for step, steps in zip(range(start, end), loader):
        seed_step(seed, step, info.rank)
        loss, logs = chain_loss(model, criterion, steps, sparse, info.device, frame_weights, tracker, rovis)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        sched.step()
        dt = time.perf_counter() - ts
        rows.append({"step": step + 1, "loss": float(loss.detach()), **{k: round(v, 6) for k, v in logs.items()},
                     "lr": opt.param_groups[0]["lr"], "sec": round(dt, 4),
                     "cpu_sec": round(time.process_time() - cs, 4),  # CPU time, all threads (shared machines)
                     "load1": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None})
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", s_step=f"{dt:.2f}")
        bar.update(1)
        done = step + 1
        if info.is_main and (done % every == 0 or done == end):
            save_checkpoint(out / LAST, model, opt, sched, done, cfg, extra)
            _write_csv(out / "metrics.csv", rows)
        ts, cs = time.perf_counter(), time.process_time()
    bar.close()
    seconds = time.perf_counter() - t0
    ckpt = out / LAST
    if end == total and info.is_main:
        ckpt = save_checkpoint(out / FINAL, model, None, None, total, cfg, extra)
    ran = max(end - start, 1)
    return {"out_dir": str(out), "checkpoint": str(ckpt), "steps": end, "seconds": seconds,
            "sec_per_step": seconds / ran, "last": rows[-1] if rows else {}, "stage": stage, "backbone": backbone,
            "feature_cache": cache_info}


def _prepare_feature_cache(model, batches: StepBatches, cfg: dict, start: int, end: int, info: DistInfo,
                           progress: bool) -> dict:
    """Build the feature-cache entries of steps ``start``..``end − 1`` and switch ``batches`` to them.

    Returns what the run folder's ``feature_cache.json`` records: ``used``, ``folder``, ``key`` and ``meta`` (what
    it hashes), ``entries`` (distinct (frame, flip) of steps 0..end − 1), ``built`` and ``build_seconds_this_run``
    / ``build_cpu_seconds_this_run`` (wall / process-CPU s this call spent building, frame decoding included),
    ``build_seconds`` / ``build_cpu_seconds``: what building every entry of steps 0..end − 1 cost when it was built
    (:meth:`FeatureCache.cost`; the same whether this run or an earlier one built it), ``entries_missing``.
    """
    cache = FeatureCache.for_model(model, batches.frames, cfg["model"])
    stats = cache.ensure(model, batches.entries(start, end), device=info.device,
                         progress=progress and info.is_main)
    used = batches.entries(0, end)
    cost = cache.cost(used)
    batches.features = cache
    log.info("feature cache %s: %d entries (%d built now in %.1f s), build cost %.1f s", cache.folder, len(used),
             stats["built"], stats["seconds"], cost["seconds"])
    return {"used": True, "folder": str(cache.folder), "key": cache.key, "meta": cache.meta, "entries": len(used),
            "built": stats["built"], "build_seconds_this_run": stats["seconds"],
            "build_cpu_seconds_this_run": stats["cpu_seconds"], "build_seconds": cost["seconds"],
            "build_cpu_seconds": cost["cpu_seconds"], "entries_missing": cost["missing"]}
