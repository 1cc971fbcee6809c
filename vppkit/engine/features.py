"""Per-layer patch features of frozen backbones on video frames, and FGS probes on them (VPP Fig. 2, supp. §C).

Feature extraction sits here, beside inference (:mod:`vppkit.engine.infer`): it runs a backbone on dataset frames.
The backbones come from :mod:`vppkit.models.backbones` (random init, pretrained imgfocus) and
:func:`dense_backbone` (a trained VIS checkpoint); the probes and their scores are the pure functions of
:mod:`vppkit.metrics.fgs` (features and labels in, numbers out). The FGS experiment (``experiments/fgs.py``) and the
``vppkit fgs`` command both call :func:`fgs_on_frames`.

Protocol:

- **Backbones**, frozen, eval mode, run dense (no pruner): :func:`dense_backbone` (the backbone of a trained VIS
  checkpoint; the paper probes its dense model), :func:`vppkit.models.backbones.random_backbone`,
  :func:`vppkit.models.backbones.imgfocus_backbone` (see docs/pretrained.md for its provenance caveat).
- **Input**: frames resized (bilinear) to the backbone's input size, scaled to [0, 1] and ImageNet-normalised
  (the VIS model's own :meth:`VISModel.normalize` for a checkpoint; timm's ImageNet constants otherwise).
- **Features**: :meth:`vppkit.models.vit.PrunableViT.forward_intermediates` x_0 (patch embedding + position)
  .. x_12 (output of block 11, before the final norm), patch tokens only (CLS / registers excluded).
- **Labels**: GT instance masks resized (nearest) to the same input size, foreground patch = the membership rule
  applied to the union of the instance masks (:func:`vppkit.metrics.patch_labels.patch_labels`, default
  ``"half"``: >= 50 % of the patch's pixels).
- **Frames**: every ``frame_stride``-th frame of each video (starting at frame 0), then at most ``max_frames``
  frames per split, taken evenly over the ordered list (deterministic, no randomness).
- **Probes**: trained on the training frames, evaluated on held-out frames of *other videos* (the val split, or a
  split by video); settings :class:`vppkit.metrics.fgs.FGSConfig` (2 epochs, lr x 0.1 after the first,
  weighted CE with the running foreground ratio). Features are extracted once and kept in memory (float16) for
  all epochs and probe seeds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from vppkit.config import img_size_hw
from vppkit.data.video import VideoFrames
from vppkit.engine.checkpoint import load_model
from vppkit.metrics.fgs import FGSConfig, mean_over_seeds, rebatch, run_fgs
from vppkit.metrics.patch_labels import DEFAULT_RULE, Rule, patch_labels
from vppkit.models.backbones import FrozenBackbone, check_patch_multiple, freeze

__all__ = ["FrameSet", "FeatureBank", "FGSFramesConfig", "dense_backbone", "select_frames", "extract_features",
           "fgs_on_frames"]


def dense_backbone(checkpoint: str | Path, name: str = "dense", device: str = "cpu") -> FrozenBackbone:
    """Backbone of a trained VIS checkpoint, run dense (its pruner, if any, is not built).

    Args:
        checkpoint: ``model_final.pt`` of a dense (or sparse) run (:func:`vppkit.engine.checkpoint.load_model`).
        name: key of the backbone in results.
        device: torch device.

    Returns:
        :class:`~vppkit.models.backbones.FrozenBackbone` with the checkpoint's input size and the VIS model's own
        normalisation.

    Raises:
        FileNotFoundError / ValueError: from :func:`vppkit.engine.checkpoint.load_model`; ValueError when the input
        size is not a multiple of the patch size.
    """
    model, ck = load_model(checkpoint, pruning={"method": "none"}, device=device)
    cfg = ck["config"]
    bb = freeze(model.backbone)
    size = img_size_hw(cfg["model"]["img_size"])
    patch = int(bb.patch_size[0])
    check_patch_multiple(size, patch, f"checkpoint {checkpoint}")
    return FrozenBackbone(name, bb, model.normalize, size, patch,
                          label=f"trained dense VIS model ({cfg['model']['arch']})",
                          meta={"kind": "dense", "arch": cfg["model"]["arch"], "checkpoint": str(checkpoint),
                                "stage": ck.get("stage"), "profile": cfg.get("profile")})


# ------------------------------------------------------------------------------------------ frames


def select_frames(num_frames: Sequence[int], frame_stride: int = 1, max_frames: int | None = None,
                  videos: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """Deterministic frame subsample: (video index, frame index) pairs.

    Args:
        num_frames: frames per video, indexed by video index.
        frame_stride: keep frames 0, s, 2s, ... of each video (>= 1).
        max_frames: then keep at most this many, evenly spaced over the ordered list (None / 0 = all).
        videos: video indices to use (default all), in this order.

    Returns:
        list of (vi, t), ordered by video then frame.

    Raises:
        ValueError: ``frame_stride < 1`` or ``max_frames < 0``.
    """
    if frame_stride < 1 or (max_frames is not None and max_frames < 0):
        raise ValueError(f"select_frames: frame_stride must be >= 1 and max_frames >= 0, got {frame_stride}, "
                         f"{max_frames}")
    vids = range(len(num_frames)) if videos is None else videos
    pairs = [(int(vi), t) for vi in vids for t in range(0, int(num_frames[vi]), frame_stride)]
    if max_frames and len(pairs) > max_frames:
        idx = np.unique(np.round(np.linspace(0, len(pairs) - 1, max_frames)).astype(int))
        pairs = [pairs[i] for i in idx]
    return pairs


@dataclass
class FrameSet:
    """Frames of one side (train or eval) of the probe.

    Attributes:
        json: YouTube-VIS json path. frames_root: frames folder (None: ``info.frames_root``).
        videos: video indices (into the json's video list) to use; None = all.
        name: label for logs and results ("train", "val", a path).
    """

    json: str | Path
    frames_root: str | Path | None = None
    videos: list[int] | None = None
    name: str = ""


@dataclass
class FeatureBank:
    """Per-layer patch features and labels of a frame set, kept in memory as batches.

    Attributes:
        batches: list of (features: list of L (B, N, C) float16, fg (B, N) bool, valid (B, N) bool).
        frames: (vi, t) pairs in order. fg_patches / patches: foreground and total patch counts.
        seconds: extraction time.
    """

    batches: list
    frames: list
    fg_patches: int
    patches: int
    seconds: float

    @property
    def fg_share(self) -> float:
        return self.fg_patches / self.patches if self.patches else float("nan")


@torch.no_grad()
def extract_features(backbone: FrozenBackbone, frames, pairs: Sequence[tuple[int, int]], rule: Rule = DEFAULT_RULE,
                     batch_size: int = 8, dtype: torch.dtype = torch.float16, device: str = "cpu") -> FeatureBank:
    """Run the frozen backbone on frames and label their patches.

    Args:
        backbone: :class:`FrozenBackbone`.
        frames: :class:`vppkit.data.video.VideoFrames` at ``backbone.img_size`` (``.frame(vi, t)`` (3, H, W)
            uint8, ``.instances(vi, t)`` -> (labels, masks (K, H, W) bool)).
        pairs: (vi, t) frames to use (:func:`select_frames`).
        rule: patch membership rule of the foreground labels.
        batch_size: frames per forward pass.
        dtype: storage dtype of the features (float16 halves memory; the probes compute in float32).
        device: torch device of the forward pass (features are stored on CPU).

    Returns:
        :class:`FeatureBank` with one batch per forward pass.

    Raises:
        ValueError: no frames, frames at a size other than the backbone's, or labels that do not fit the tokens.
    """
    if not pairs:
        raise ValueError("extract_features: no frames selected (check frame_stride / max_frames / the split)")
    if tuple(frames.size) != tuple(backbone.img_size):
        raise ValueError(f"extract_features: frames are read at {tuple(frames.size)}, backbone {backbone.name!r} "
                         f"expects {tuple(backbone.img_size)}")
    t0 = time.perf_counter()
    model = backbone.model.to(device)
    batches, fg_total, n_total = [], 0, 0
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s:s + batch_size]
        images = torch.stack([frames.frame(vi, t) for vi, t in chunk]).to(device)
        inter = model.forward_intermediates(backbone.normalize(images), intermediates_only=True)
        fgs, valids = [], []
        for vi, t in chunk:
            lab = patch_labels(frames.instances(vi, t)[1], backbone.patch_size, rule,
                               source=f"video index {vi} frame {t}")
            fgs.append(lab.foreground)
            valids.append(lab.valid)
        fg, valid = torch.stack(fgs), torch.stack(valids)
        feats = [x.detach().to("cpu", dtype) for x in inter]
        if fg.shape[1] != feats[0].shape[1]:
            raise ValueError(f"backbone {backbone.name!r}: {feats[0].shape[1]} patch tokens but {fg.shape[1]} "
                             "labelled patches")
        batches.append((feats, fg, valid))
        fg_total += int((fg & valid).sum())
        n_total += int(valid.sum())
    return FeatureBank(batches, list(pairs), fg_total, n_total, time.perf_counter() - t0)


@dataclass
class FGSFramesConfig:
    """Settings of FGS on frames (defaults used by the experiment and the CLI).

    Args:
        frame_stride: every k-th frame of each video.
        max_frames: at most this many frames per side (train / eval), evenly spaced; 0 = all.
        batch_size: frames per backbone forward.
        probe_batch: frames per probe optimizer step (the stored batches are re-cut to this size; small sets
            need small steps to give the probes enough updates in 2 epochs).
        rule: patch membership rule ("half" default, "any", or a float threshold).
        epochs, lr, optimizer, weight_decay, standardize, bootstrap, ci: :class:`vppkit.metrics.fgs.FGSConfig`.
            ``lr`` defaults to 1e-2 here (FGSConfig: 1e-3): with a few dozen frames, 2 epochs are only ~50 probe
            steps, and at 1e-3 the probe of weak features stays at chance (measured on DAVIS, random-init
            vit_micro, 48 + 48 frames: x_0..x_12 0.47-0.52 at 1e-3 vs 0.58-0.60 at 1e-2).
        seeds: probe initialisation seeds; several seeds give a seed spread (mean reported).
    """

    frame_stride: int = 2
    max_frames: int = 64
    batch_size: int = 8
    probe_batch: int = 2
    rule: Rule = DEFAULT_RULE
    epochs: int = 2
    lr: float = 1e-2
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    standardize: str = "token"
    bootstrap: int = 1000
    ci: float = 0.95
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def from_dict(cls, d: dict | None) -> "FGSFramesConfig":
        """Build from a config section (unknown keys are ignored; lists become tuples).

        Raises:
            ValueError: empty ``seeds``.
        """
        d = dict(d or {})
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "seeds" in known:
            known["seeds"] = tuple(int(s) for s in known["seeds"])
            if not known["seeds"]:
                raise ValueError("fgs.seeds must not be empty")
        return cls(**known)

    def probe_config(self, seed: int) -> FGSConfig:
        """The :class:`FGSConfig` for one probe seed."""
        return FGSConfig(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, weight_decay=self.weight_decay,
                         standardize=self.standardize, bootstrap=self.bootstrap, ci=self.ci, seed=seed)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return d


def fgs_on_frames(backbone: FrozenBackbone, train: FrameSet, eval: FrameSet,
                  config: FGSFramesConfig | None = None, device: str = "cpu",
                  log: Callable[[str], None] | None = None) -> dict:
    """FGS per layer x_0 .. x_depth of a frozen backbone: probes trained on ``train`` frames, scored on ``eval``.

    Args:
        backbone: :class:`FrozenBackbone` (its ``img_size`` decides the frame and mask resolution).
        train: frames the probes are trained on.
        eval: held-out frames (other videos).
        config: :class:`FGSFramesConfig`.
        device: torch device of the backbone forward and the probes.
        log: optional progress printer.

    Returns:
        JSON-ready dict: ``name``, ``label``, ``meta``, ``img_size``, ``patch_size``, ``grid``, ``layers`` (one row
        per feature x_i: layer, feature, fgs = balanced accuracy (seed mean), fgs_ci_low / fgs_ci_high (percentile
        bootstrap over eval frames, first seed), accuracy (+ CI), roc_auc, recall_fg, recall_bg, n_patches (eval),
        n_fg, n_frames, fgs_seed_sd, fgs_seeds), ``train`` (frames, patches, fg_share, probe loss per epoch),
        ``eval`` (frames, patches, fg_share), ``seconds``.

    Raises:
        ValueError: empty frame selections, no training foreground at all, or sizes that do not fit the patch size.
    """
    cfg = config or FGSFramesConfig()
    t0 = time.perf_counter()
    sides = {}
    for side, fs in (("train", train), ("eval", eval)):
        frames = VideoFrames(fs.json, fs.frames_root, backbone.img_size, cache=False)
        pairs = select_frames([frames.num_frames(vi) for vi in range(len(frames))], cfg.frame_stride,
                              cfg.max_frames, fs.videos)
        if log:
            log(f"[fgs] {backbone.name}: extracting {len(pairs)} {side} frames of {fs.name or fs.json}")
        bank = extract_features(backbone, frames, pairs, cfg.rule, cfg.batch_size, device=device)
        sides[side] = (bank, frames)
    train_bank, eval_bank = sides["train"][0], sides["eval"][0]
    if train_bank.fg_patches == 0:
        raise ValueError(f"FGS on {backbone.name!r}: no foreground patch among the {train_bank.patches} training "
                         f"patches under rule {cfg.rule!r}")
    per_seed, first = [], None
    train_batches = rebatch(train_bank.batches, cfg.probe_batch)
    for seed in cfg.seeds:
        res = run_fgs(train_batches, eval_bank.batches, cfg.probe_config(seed))
        d = res.to_dict()
        per_seed.append(d["layers"])
        first = first or d
        if log:
            best = max((r["fgs"] or 0.0) for r in d["layers"])
            log(f"[fgs] {backbone.name}: seed {seed} done, best layer FGS {best:.3f}")
    grid = (backbone.img_size[0] // backbone.patch_size, backbone.img_size[1] // backbone.patch_size)

    def vids(bank: FeatureBank, frames) -> list:
        return sorted({frames.videos[vi]["id"] for vi, _ in bank.frames})

    return {
        "name": backbone.name, "label": backbone.label, "meta": backbone.meta,
        "img_size": list(backbone.img_size), "patch_size": backbone.patch_size, "grid": list(grid),
        "layers": mean_over_seeds(per_seed),
        "train": {"data": train.name or str(train.json), "frames": len(train_bank.frames),
                  "videos": vids(train_bank, sides["train"][1]), "patches": train_bank.patches,
                  "fg_share": train_bank.fg_share, "probe": first["train"]},
        "eval": {"data": eval.name or str(eval.json), "frames": len(eval_bank.frames),
                 "videos": vids(eval_bank, sides["eval"][1]), "patches": eval_bank.patches,
                 "fg_share": eval_bank.fg_share},
        "definition": first["definition"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
