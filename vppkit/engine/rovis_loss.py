"""The ROVIS task loss of one training sample (``model.tracker: rovis``; official ``ROVIS.loss`` in
``custom_mmtrack/models/vis/rovis.py``, PatGlan/Video-Patch-Pruning, ``three_frame_training = True``).

Given the backbone features of the key frame (the chain's last frame) and of the reference (the frame before it),
the decoder runs three times:

1. the key with the static queries, Hungarian loss × ``w_key`` (official ``mask_loss``, ×1);
2. the reference with the static queries plus track queries carried from the key's decoding (the matched queries,
   augmented: :func:`vppkit.models.vis.track_queries.select_track_queries`), loss × ``w_ref`` (``ref_``, ×0.5);
3. the key again with the static queries plus track queries carried from the reference's decoding (its matching
   keeps the track queries' assignments), loss × ``w_key2`` (``ref2_``, ×0.5).

Track queries are detached (the official carries ``last_query_feats[...].detach()``); the features of the key are
decoded twice from one backbone pass. Every decode goes through ``model(features=...)`` (so a DDP wrapper sees it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vppkit.engine.checkpoint import unwrap
from vppkit.models.vis.track_queries import (
    decode_loss,
    gather_queries,
    match_with_tracks,
    pad_track_queries,
    select_track_queries,
)

__all__ = ["RovisLossSettings", "rovis_task_loss"]


@dataclass(frozen=True)
class RovisLossSettings:
    """Weights and augmentation of the ROVIS loss (``train`` section, per stage).

    Attributes:
        w_key: key frame, static queries (official 1). w_ref: reference with track queries from the key (0.5).
        w_key2: key again with track queries from the reference (0.5; ``train.key_track_weight``).
        keep_prob: a matched query is carried with this probability (0.8; ``train.track_query_keep``).
        fp_prob: false-positive track query per carried one (0.2; ``train.track_query_fp``).
        w_class, w_mask, w_dice: matching cost weights (the ``loss`` section).
    """

    w_key: float = 1.0
    w_ref: float = 0.5
    w_key2: float = 0.5
    keep_prob: float = 0.8
    fp_prob: float = 0.2
    w_class: float = 2.0
    w_mask: float = 5.0
    w_dice: float = 5.0


def _carry(dec, targets: list[dict], other: list[dict], num_static: int, track_targets: torch.Tensor | None,
           s: RovisLossSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Track queries (B, n, D) from decoding ``dec`` of a frame with ``targets`` into the frame with ``other``,
    and their targets (B, n) there."""
    sels, matched = [], []
    for i, (t, o) in enumerate(zip(targets, other)):
        qi, gi = match_with_tracks(dec.pred_logits[i].detach(), dec.pred_masks[i].detach(), t["labels"], t["masks"],
                                   num_static, None if track_targets is None else track_targets[i],
                                   s.w_class, s.w_mask, s.w_dice)
        sels.append(select_track_queries(qi, gi, dec.pred_masks[i], t["ids"], o["ids"], s.keep_prob, s.fp_prob))
        matched.append(qi)
    idx, tt = pad_track_queries(sels, matched, dec.pred_masks.shape[1])
    return gather_queries(dec.queries, idx), tt


def rovis_task_loss(model, criterion, key_features, key_targets: list[dict], ref_features,
                    ref_targets: list[dict] | None, s: RovisLossSettings) -> tuple[torch.Tensor, dict]:
    """The weighted ROVIS segmentation loss of a batch of samples.

    Args:
        model: the VIS model (or its DDP wrapper); ``model(features=..., track_queries=...)`` decodes.
        criterion: the set criterion (``SetCriterion`` / ``PointSampledCriterion``).
        key_features, ref_features: :attr:`VISOutput.features` of the key and the reference (``ref_features``
            None: a one-frame clip, only term 1).
        key_targets, ref_targets: B dicts {labels (K,), masks (K, H, W), ids (K,) annotation ids}.
        s: :class:`RovisLossSettings`.

    Returns:
        (loss scalar, logs): ``loss_ce`` / ``loss_mask`` / ``loss_dice`` (weighted parts summed over the terms),
        ``loss_key`` / ``loss_ref`` / ``loss_key2`` (each term unweighted), ``loss_track`` (the track queries'
        part of terms 2 and 3, weighted), ``track_queries`` (mean track queries per sample, terms 2 and 3).

    Raises:
        ValueError: a target without ``ids``.
    """
    for t in list(key_targets) + list(ref_targets or []):
        if "ids" not in t:
            raise ValueError("tracker rovis: training targets need instance ids ('ids', vppkit.engine.train._batch)")
    num_static = unwrap(model).num_queries
    logs: dict = {"loss_ce": 0.0, "loss_mask": 0.0, "loss_dice": 0.0, "loss_track": 0.0}
    terms = []

    def add(name, weight, out):
        terms.append(weight * out["loss"])
        logs[name] = float(out["loss"].detach())
        for k in ("loss_ce", "loss_mask", "loss_dice"):
            logs[k] += weight * float(out[k].detach())
        logs["loss_track"] += weight * float(out["loss_track"].detach())

    dk = model(features=key_features)
    add("loss_key", s.w_key, decode_loss(criterion, dk.decoder_dict(), key_targets, None, num_static))
    counts = []
    if ref_features is not None and (s.w_ref > 0 or s.w_key2 > 0):
        tq, tt = _carry(dk, key_targets, ref_targets, num_static, None, s)
        counts.append(tt.shape[1])
        dr = model(features=ref_features, track_queries=tq if tt.shape[1] else None)
        add("loss_ref", s.w_ref, decode_loss(criterion, dr.decoder_dict(), ref_targets, tt, num_static))
        if s.w_key2 > 0:
            tq2, tt2 = _carry(dr, ref_targets, key_targets, num_static, tt if tt.shape[1] else None, s)
            counts.append(tt2.shape[1])
            dk2 = model(features=key_features, track_queries=tq2 if tt2.shape[1] else None)
            add("loss_key2", s.w_key2, decode_loss(criterion, dk2.decoder_dict(), key_targets, tt2, num_static))
    logs["track_queries"] = float(sum(counts) / len(counts)) if counts else 0.0
    return torch.stack(terms).sum(), logs
