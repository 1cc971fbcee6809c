"""FGS (Foreground Selectivity): linear foreground/background probes on every layer of a frozen ViT.

Protocol (VPP supplementary §C, DESIGN.md §4):

- One binary linear head per feature x_0 .. x_depth (x_0 = patch embedding + position, x_b = output of
  block b-1), on the frozen model's patch tokens; the model is never updated.
- All heads are trained **together in one pass** over the data, like dinov2 ``eval/linear.py``
  (``AllClassifiers``): the caller extracts the features of a batch once, every head is updated on it.
  The heads are one batched linear map (weights (L, C, 2), a single ``baddbmm`` over the L layers).
- Weighted cross-entropy against class imbalance: a running mean r̄_fg of the foreground ratio over all
  training patches seen so far (updated with each batch before its loss), w_bg = r̄_fg, w_fg = 1 - r̄_fg.
  r̄_fg is clamped to [1e-3, 1 - 1e-3] so that a first all-background batch has a defined loss.
- 2 epochs, learning rate x 0.1 after the first (``FGSConfig.decay_epochs``).
- Optimizer: AdamW with weight decay 0.05, the optimizer family and decay of the paper's training
  settings (§A: "AdamW ... weight decay of 0.05"). The learning rate differs on purpose: §A's 2.5e-5
  fine-tunes a pretrained model, whereas the heads start from scratch, so the default is 1e-3
  (configurable; SGD with momentum is available too).
- Features are standardised per token by default (``standardize="token"``: parameter-free layer norm over
  the C channels, as the ViT's own pre-norm does). The residual stream grows in norm with depth; without it,
  one learning rate cannot suit all 13 layers. ``"none"`` uses the raw features.
- FGS = **balanced accuracy** (mean of foreground and background recall; 0.5 = chance) on a held-out split
  (split by video, e.g. with :func:`split_by_video`), prediction = argmax of the two logits. Also reported:
  accuracy, ROC-AUC (rank formula of Mann-Whitney U with ``scipy.stats.rankdata``, on the logit margin),
  fg/bg recall, and a percentile bootstrap CI over *evaluation frames* (frames resampled with replacement,
  default 1000 replicates, 95 %) for balanced accuracy and accuracy. §C calls FGS the "binary classification
  accuracy"; balanced accuracy is the imbalance-robust reading consistent with its "0.5 = random" remark.

Data interface: a batch is ``(features, labels)`` or ``(features, labels, valid)`` with ``features`` a list
of L tensors (B, N, C) (``BackboneOutput.intermediates``), ``labels`` (B, N) bool foreground per patch
(:func:`vppkit.metrics.patch_labels.foreground_patches`), ``valid`` (B, N) bool (False on padding; these
patches are ignored). Each row of B is one frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence, Union

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import rankdata

Batch = Union[tuple, list]
BatchSource = Union[Callable[[], Iterable[Batch]], Sequence[Batch]]

_R_FG_EPS = 1e-3


@dataclass
class FGSConfig:
    """Settings of the FGS probes (defaults: supplementary §C/§A, see module docstring).

    Args:
        epochs: training epochs over the training batches.
        lr: initial learning rate.
        lr_decay: factor applied at each epoch listed in ``decay_epochs``.
        decay_epochs: 0-based epochs at whose start the lr is multiplied by ``lr_decay`` ((1,) = after the first).
        optimizer: "adamw" or "sgd".
        weight_decay: weight decay (decoupled for AdamW).
        momentum: SGD momentum.
        standardize: "token" (parameter-free layer norm per token) or "none".
        weighted: weighted CE with the running foreground ratio (§C); False = plain CE (ablation only).
        bootstrap: bootstrap replicates over evaluation frames (0 = no CI).
        ci: confidence level of the percentile interval.
        seed: seed of the head initialisation and the bootstrap.
    """

    epochs: int = 2
    lr: float = 1e-3
    lr_decay: float = 0.1
    decay_epochs: tuple[int, ...] = (1,)
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9
    standardize: str = "token"
    weighted: bool = True
    bootstrap: int = 1000
    ci: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"FGSConfig.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.standardize not in ("token", "none"):
            raise ValueError(f"FGSConfig.standardize must be 'token' or 'none', got {self.standardize!r}")
        if self.epochs < 1 or self.lr <= 0 or not 0 < self.ci < 1 or self.bootstrap < 0:
            raise ValueError(f"FGSConfig: invalid values {self}")


# ---------------------------------------------------------------- metrics (pure functions)
def balanced_accuracy(pred: torch.Tensor, label: torch.Tensor) -> float:
    """Balanced accuracy = (TPR + TNR) / 2 of bool predictions (NaN if a class is absent).

    Args:
        pred: (M,) bool predictions (True = foreground).
        label: (M,) bool ground truth.
    """
    pred, label = pred.bool().flatten(), label.bool().flatten()
    pos, neg = int(label.sum()), int((~label).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    return 0.5 * (float((pred & label).sum()) / pos + float((~pred & ~label).sum()) / neg)


def roc_auc(score: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> float:
    """ROC-AUC by the rank formula (Mann-Whitney U): (sum of positive ranks - P(P+1)/2) / (P * Q).

    Ties get average ranks (``scipy.stats.rankdata``), i.e. count 1/2, as in sklearn's ``roc_auc_score``.

    Args:
        score: (M,) float, higher = more foreground.
        label: (M,) bool.

    Returns:
        AUC in [0, 1]; NaN when one class is absent.
    """
    s = np.asarray(score.detach().cpu() if torch.is_tensor(score) else score, dtype=np.float64).ravel()
    y = np.asarray(label.detach().cpu() if torch.is_tensor(label) else label, dtype=bool).ravel()
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def bootstrap_ci(frame_counts: np.ndarray, replicates: int = 1000, ci: float = 0.95,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Percentile bootstrap CI over frames for balanced accuracy and accuracy.

    Args:
        frame_counts: (F, L, 4) int confusion counts per frame and layer, order (tn, fp, fn, tp).
        replicates: number of resamples (frames drawn with replacement, F per resample).
        ci: confidence level.
        seed: numpy seed.

    Returns:
        dict with ``balanced_accuracy`` and ``accuracy``, each (L, 2) float64 [low, high]
        (NaN when F == 0 or replicates == 0).
    """
    counts = np.asarray(frame_counts, dtype=np.float64)
    f, layers = counts.shape[:2]
    if f == 0 or replicates == 0:
        nan = np.full((layers, 2), np.nan)
        return {"balanced_accuracy": nan, "accuracy": nan.copy()}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, f, size=(replicates, f))
    weights = np.zeros((replicates, f))
    np.add.at(weights, (np.repeat(np.arange(replicates), f), idx.ravel()), 1.0)
    tot = (weights @ counts.reshape(f, -1)).reshape(replicates, layers, 4)
    tn, fp, fn, tp = np.moveaxis(tot, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bacc = 0.5 * (tp / (tp + fn) + tn / (tn + fp))
        acc = (tp + tn) / tot.sum(-1)
    q = [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]
    out = {}
    for name, v in (("balanced_accuracy", bacc), ("accuracy", acc)):
        with np.errstate(invalid="ignore"):
            out[name] = np.stack([np.nanpercentile(v, q[0], axis=0), np.nanpercentile(v, q[1], axis=0)], -1) \
                if np.isfinite(v).any() else np.full((layers, 2), np.nan)
    return out


def split_by_video(video_ids: Sequence, eval_fraction: float = 0.3, seed: int = 0) -> tuple[list, list]:
    """Deterministic held-out split by video (frames of one video never land on both sides).

    Args:
        video_ids: ids of the videos.
        eval_fraction: share of videos held out (at least one video on each side when there are >= 2).
        seed: permutation seed.

    Returns:
        (train_ids, eval_ids), each sorted as in ``video_ids``.

    Raises:
        ValueError: fewer than 2 videos or a fraction outside (0, 1).
    """
    ids = list(video_ids)
    if len(ids) < 2 or not 0 < eval_fraction < 1:
        raise ValueError(f"split_by_video: need >= 2 videos and 0 < eval_fraction < 1, got {len(ids)} videos, "
                         f"eval_fraction={eval_fraction}")
    n_eval = min(max(1, round(len(ids) * eval_fraction)), len(ids) - 1)
    perm = np.random.default_rng(seed).permutation(len(ids))
    held = set(perm[:n_eval].tolist())
    return [v for i, v in enumerate(ids) if i not in held], [v for i, v in enumerate(ids) if i in held]


# ---------------------------------------------------------------- probes
class LinearProbes(nn.Module):
    """L independent linear fg/bg heads applied as one batched matmul.

    Args:
        num_layers: number of features probed (13 for a 12-block ViT: x_0 .. x_12).
        dim: channel width C (same for all layers).
        standardize: "token" (parameter-free layer norm per token) or "none".
        seed: seed of the N(0, 0.01) weight initialisation (bias 0), as dinov2's linear heads.
    """

    def __init__(self, num_layers: int, dim: int, standardize: str = "token", seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(num_layers, dim, 2, generator=g) * 0.01)
        self.bias = nn.Parameter(torch.zeros(num_layers, 2))
        self.standardize = standardize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every head.

        Args:
            x: (L, M, C) features of M patches at each of the L layers.

        Returns:
            (L, M, 2) logits, class 0 = background, 1 = foreground.
        """
        if self.standardize == "token":
            x = F.layer_norm(x, x.shape[-1:])
        return torch.baddbmm(self.bias[:, None, :], x, self.weight)


def _unpack(batch: Batch, num_layers: int | None, where: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> features (L, M, C) of the valid patches, labels (M,) long, frame index in the batch (M,) long, B."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f"{where}: a batch must be (features, labels) or (features, labels, valid)")
    feats, labels = batch[0], batch[1]
    valid = batch[2] if len(batch) == 3 else None
    if not isinstance(feats, (list, tuple)) or len(feats) == 0:
        raise ValueError(f"{where}: features must be a non-empty list of (B, N, C) tensors")
    if num_layers is not None and len(feats) != num_layers:
        raise ValueError(f"{where}: got {len(feats)} feature layers, expected {num_layers}")
    x = torch.stack([f.detach() for f in feats]).float()  # (L, B, N, C)
    if x.dim() != 4:
        raise ValueError(f"{where}: features must be (B, N, C), got {tuple(feats[0].shape)}")
    _, b, n, _ = x.shape
    labels = torch.as_tensor(labels).to(x.device).bool()
    if tuple(labels.shape) != (b, n):
        raise ValueError(f"{where}: labels must be (B, N)=({b}, {n}), got {tuple(labels.shape)}")
    valid = torch.ones_like(labels) if valid is None else torch.as_tensor(valid).to(x.device).bool()
    if tuple(valid.shape) != (b, n):
        raise ValueError(f"{where}: valid mask must be (B, N)=({b}, {n}), got {tuple(valid.shape)}")
    frame = torch.arange(b, device=x.device)[:, None].expand(b, n)
    return x[:, valid], labels[valid].long(), frame[valid], b


def _epoch_iter(source: BatchSource, epoch: int) -> Iterable[Batch]:
    if callable(source):
        return source()
    if iter(source) is source and epoch > 0:
        raise ValueError("FGS: the training batches are a one-shot iterator; pass a callable returning a fresh "
                         "iterable per epoch, or a list")
    return source


@dataclass
class FGSTrainInfo:
    """What training saw: final r̄_fg, patches/frames per epoch, mean loss per epoch (summed over heads)."""

    r_fg: float = float("nan")
    patches: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def train_probes(train_batches: BatchSource, config: FGSConfig | None = None,
                 probes: LinearProbes | None = None) -> tuple[LinearProbes, FGSTrainInfo]:
    """Train the linear heads of all layers together on frozen features (see module docstring).

    Args:
        train_batches: a callable returning an iterable of batches (called once per epoch; e.g. it runs
            the frozen model) or a re-iterable sequence of batches.
        config: :class:`FGSConfig`.
        probes: heads to continue training; None = new heads sized from the first batch.

    Returns:
        (probes, FGSTrainInfo).

    Raises:
        ValueError: empty data, inconsistent layers / shapes (naming the batch index), one-shot iterators
            with more than one epoch.
    """
    cfg = config or FGSConfig()
    info = FGSTrainInfo()
    fg_seen, n_seen = 0, 0
    opt = None
    for epoch in range(cfg.epochs):
        lr = cfg.lr * cfg.lr_decay ** sum(1 for e in cfg.decay_epochs if e <= epoch)
        if opt is not None:
            for group in opt.param_groups:
                group["lr"] = lr
        loss_sum, steps, patches, frames = 0.0, 0, 0, 0
        for i, batch in enumerate(_epoch_iter(train_batches, epoch)):
            where = f"FGS train epoch {epoch} batch {i}"
            x, y, _, b = _unpack(batch, None if probes is None else probes.weight.shape[0], where)
            if probes is None:
                probes = LinearProbes(x.shape[0], x.shape[-1], cfg.standardize, cfg.seed)
            if x.shape[-1] != probes.weight.shape[1]:
                raise ValueError(f"{where}: features have C={x.shape[-1]}, the probes C={probes.weight.shape[1]}")
            probes.to(x.device)
            if opt is None:
                if cfg.optimizer == "adamw":
                    opt = torch.optim.AdamW(probes.parameters(), lr=lr, weight_decay=cfg.weight_decay)
                else:
                    opt = torch.optim.SGD(probes.parameters(), lr=lr, momentum=cfg.momentum,
                                          weight_decay=cfg.weight_decay)
            frames += b
            if y.numel() == 0:
                continue
            fg_seen += int(y.sum())
            n_seen += int(y.numel())
            r = min(max(fg_seen / n_seen, _R_FG_EPS), 1 - _R_FG_EPS)
            # w_bg = r̄_fg, w_fg = 1 - r̄_fg
            weight = torch.tensor([r, 1.0 - r], device=x.device) if cfg.weighted else None
            logits = probes(x)  # (L, M, 2)
            layers = logits.shape[0]
            # weighted mean per head, summed over heads: each head gets the gradient of its own loss.
            loss = F.cross_entropy(logits.reshape(-1, 2), y.repeat(layers), weight=weight) * layers
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            steps += 1
            patches += int(y.numel())
        info.patches.append(patches)
        info.frames.append(frames)
        info.loss.append(loss_sum / steps if steps else float("nan"))
        info.lr.append(lr)
    if probes is None or n_seen == 0:
        raise ValueError("FGS: no training patches (empty training batches or all patches invalid)")
    info.r_fg = fg_seen / n_seen
    return probes, info


@dataclass
class FGSResult:
    """Per-layer FGS evaluation on a held-out split.

    Attributes (arrays of length L, index i = feature x_i):
        balanced_accuracy: FGS (0.5 = chance). ``balanced_accuracy_ci``: (L, 2) bootstrap CI over frames.
        accuracy / accuracy_ci: plain accuracy and its CI.
        roc_auc: ROC-AUC of the logit margin (no CI).
        recall_fg / recall_bg: true positive / true negative rates.
        n_patches, n_fg, n_frames: evaluation sizes.
        train: :class:`FGSTrainInfo`; config: the :class:`FGSConfig` used.
    """

    balanced_accuracy: np.ndarray
    balanced_accuracy_ci: np.ndarray
    accuracy: np.ndarray
    accuracy_ci: np.ndarray
    roc_auc: np.ndarray
    recall_fg: np.ndarray
    recall_bg: np.ndarray
    n_patches: int
    n_fg: int
    n_frames: int
    train: FGSTrainInfo | None = None
    config: FGSConfig | None = None

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: layer (i of x_i), feature ("x_i"), fgs (= balanced accuracy), fgs_ci_low,
        fgs_ci_high, accuracy, accuracy_ci_low, accuracy_ci_high, roc_auc, recall_fg, recall_bg, n_patches,
        n_fg, n_frames."""
        layers = len(self.balanced_accuracy)
        return pd.DataFrame({
            "layer": np.arange(layers), "feature": [f"x_{i}" for i in range(layers)],
            "fgs": self.balanced_accuracy, "fgs_ci_low": self.balanced_accuracy_ci[:, 0],
            "fgs_ci_high": self.balanced_accuracy_ci[:, 1], "accuracy": self.accuracy,
            "accuracy_ci_low": self.accuracy_ci[:, 0], "accuracy_ci_high": self.accuracy_ci[:, 1],
            "roc_auc": self.roc_auc, "recall_fg": self.recall_fg, "recall_bg": self.recall_bg,
            "n_patches": self.n_patches, "n_fg": self.n_fg, "n_frames": self.n_frames,
        })

    def to_dict(self) -> dict:
        """Plain JSON types: ``layers`` (records of :meth:`to_frame`, NaN -> None), ``train``, ``config``,
        ``definition``."""
        rows = self.to_frame().astype(object).where(self.to_frame().notna(), None).to_dict("records")
        rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows]
        return {
            "layers": rows,
            "train": asdict(self.train) if self.train is not None else None,
            "config": asdict(self.config) if self.config is not None else None,
            "definition": "FGS = balanced accuracy of a linear fg/bg probe per feature x_i on held-out frames; "
                          "CI = percentile bootstrap over evaluation frames",
        }


@torch.no_grad()
def evaluate_probes(probes: LinearProbes, eval_batches: Iterable[Batch], config: FGSConfig | None = None,
                    train_info: FGSTrainInfo | None = None) -> FGSResult:
    """Evaluate the heads on held-out batches: balanced accuracy, accuracy, ROC-AUC, bootstrap CIs over frames.

    Args:
        probes: trained heads (:func:`train_probes`).
        eval_batches: iterable (or callable returning one) of held-out batches; each row of B is one frame.
        config: bootstrap settings (``bootstrap``, ``ci``, ``seed``).
        train_info: attached to the result.

    Returns:
        :class:`FGSResult`.

    Raises:
        ValueError: no evaluation patches, or a batch inconsistent with the heads (naming the batch index).
    """
    cfg = config or FGSConfig()
    layers = probes.weight.shape[0]
    frame_counts, scores, labels = [], [], []
    for i, batch in enumerate(eval_batches() if callable(eval_batches) else eval_batches):
        x, y, frame, b = _unpack(batch, layers, f"FGS eval batch {i}")
        counts = torch.zeros(layers * b * 4, dtype=torch.int64, device=x.device)
        if y.numel():
            logits = probes.to(x.device)(x)
            margin = logits[..., 1] - logits[..., 0]  # (L, M)
            pred = (margin > 0).long()
            cat = y[None] * 2 + pred  # 0 tn, 1 fp, 2 fn, 3 tp
            idx = (torch.arange(layers, device=x.device)[:, None] * b + frame[None]) * 4 + cat
            counts = torch.bincount(idx.flatten(), minlength=layers * b * 4)
            scores.append(margin.float().cpu())
            labels.append(y.bool().cpu())
        frame_counts.append(counts.view(layers, b, 4).permute(1, 0, 2).cpu().numpy())
    if not labels:
        raise ValueError("FGS: no evaluation patches")
    fc = np.concatenate(frame_counts, 0)  # (F, L, 4)
    tn, fp, fn, tp = np.moveaxis(fc.sum(0).astype(np.float64), -1, 0)  # (L,) each
    with np.errstate(invalid="ignore", divide="ignore"):
        rec_fg, rec_bg = tp / (tp + fn), tn / (tn + fp)
        acc = (tp + tn) / (tp + tn + fp + fn)
    score = torch.cat(scores, 1).numpy()
    label = torch.cat(labels).numpy()
    auc = np.array([roc_auc(score[l], label) for l in range(layers)])
    cis = bootstrap_ci(fc, cfg.bootstrap, cfg.ci, cfg.seed)
    return FGSResult(balanced_accuracy=0.5 * (rec_fg + rec_bg), balanced_accuracy_ci=cis["balanced_accuracy"],
                     accuracy=acc, accuracy_ci=cis["accuracy"], roc_auc=auc, recall_fg=rec_fg, recall_bg=rec_bg,
                     n_patches=int(label.size), n_fg=int(label.sum()), n_frames=int(fc.shape[0]),
                     train=train_info, config=cfg)


def run_fgs(train_batches: BatchSource, eval_batches: BatchSource, config: FGSConfig | None = None) -> FGSResult:
    """Train the per-layer probes on ``train_batches`` and evaluate them on held-out ``eval_batches``.

    Args:
        train_batches: see :func:`train_probes`.
        eval_batches: see :func:`evaluate_probes` (frames of videos not used for training).
        config: :class:`FGSConfig`.

    Returns:
        :class:`FGSResult` (``to_frame()`` for a per-layer table).
    """
    cfg = config or FGSConfig()
    probes, info = train_probes(train_batches, cfg)
    return evaluate_probes(probes, eval_batches, cfg, info)


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


def mean_over_seeds(per_seed: list[list[dict]]) -> list[dict]:
    """Per-layer rows (:meth:`FGSResult.to_dict` ``layers``) of several probe seeds -> one row per layer: the
    seed mean of fgs / accuracy / roc_auc / recalls (None where no seed has a value), the first seed's CIs and
    other fields, ``fgs_seed_sd`` (population sd over seeds; None for one seed or a missing value) and
    ``fgs_seeds`` (the per-seed values)."""
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
