"""ROVIS track queries in training: which decoded queries of one frame of a sample are carried into the other
frame, what each must predict there, and the loss of a decoding with track queries.

Official code (PatGlan/Video-Patch-Pruning, ``custom_mmtrack/models/vis/rovis.py`` and
``custom_mmtrack/models/track_heads/rovis_head.py``; TrackFormer's augmentation):

- :func:`match_with_tracks` (``full_mask_matching``): the final read-out's queries are matched to the frame's
  instances, Hungarian on the static queries; track queries keep the instance they were assigned
  (``tail_known_matching``) and the static queries are matched to the remaining instances only.
- :func:`select_track_queries` (``add_track_queries_to_targets``): each matched query is kept as a track query with
  probability ``keep_prob`` (0.8; the official ``track_query_false_negative_prob`` is "the probability of
  keeping", so a tracked object is dropped with probability 0.2: a false negative to recover from a static
  query); its target in the other frame is the instance with the same identity (annotation id) there, or no
  object when the instance is not visible there. For each kept track query, with probability ``fp_prob`` (0.2),
  an unmatched query of the same decoding is added as a false-positive track query (target: no object), drawn
  with weights = distance between the top-left corners of the mask boxes when the tracked object is in the other
  frame (TrackFormer's rule), uniformly otherwise, without repeats.
- :func:`pad_track_queries` (``length_padding``): samples of a batch are padded to the same number of track
  queries with random unmatched queries (target: no object).
- :func:`decode_loss` (``AdditionalQueriesFormerHead.loss``): the static queries get the usual Hungarian loss
  against the instances *not* taken by a track query; the track queries get the loss of their fixed assignment
  (class CE over all of them, mask losses over those with an instance, ``matched_loss_single``); both on every
  read-out, summed.

Random draws use torch's global generator (seeded per training step by the caller). Two deviations: when no
unmatched query is left for a false positive, none is added (the official draws ``random.randint(0, 100)``, an
index that may repeat a track query or not exist); padding draws without repeats while it can.
"""

from __future__ import annotations

import torch

from vppkit.models.vis.matcher import hungarian_match


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(M, h, w) bool -> (M, 4) float boxes x1, y1, x2 + 1, y2 + 1 in grid cells; an empty mask gives zeros
    (mmdet ``mask2bbox``)."""
    m = masks.shape[0]
    out = torch.zeros(m, 4)
    if m == 0:
        return out
    xs, ys = masks.any(1).cpu(), masks.any(2).cpu()
    for i in range(m):
        x, y = xs[i].nonzero().flatten(), ys[i].nonzero().flatten()
        if len(x) and len(y):
            out[i] = torch.tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float)
    return out


@torch.no_grad()
def match_with_tracks(logits: torch.Tensor, masks: torch.Tensor, gt_labels: torch.Tensor, gt_masks: torch.Tensor,
                      num_static: int, track_targets: torch.Tensor | None = None, w_class: float = 2.0,
                      w_mask: float = 5.0, w_dice: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Which query of one decoding shows which instance (official ``full_mask_matching``).

    Args:
        logits: (Q + n, C + 1) final read-out class logits; masks: (Q + n, h, w) mask logits.
        gt_labels: (K,) long; gt_masks: (K, H, W) bool.
        num_static: Q.
        track_targets: (n,) long, the instance index each track query was assigned (-1: none); None: n = 0.
        w_class, w_mask, w_dice: matching cost weights (the loss section's).

    Returns:
        (query_idx (M,), gt_idx (M,)) long on the CPU: the static queries' Hungarian matches (all mask pixels of the
        prediction grid) to the instances no track query holds, then the track queries' fixed assignments.
    """
    n = 0 if track_targets is None else int(track_targets.numel())
    tt = torch.zeros(0, dtype=torch.long) if track_targets is None else track_targets.cpu().long()
    valid = tt >= 0
    free = torch.ones(gt_labels.shape[0], dtype=torch.bool)
    free[tt[valid]] = False
    rest = free.nonzero().flatten()
    qi, gi = hungarian_match(logits[:num_static], masks[:num_static], gt_labels[rest.to(gt_labels.device)],
                             gt_masks[rest.to(gt_masks.device)], w_class, w_mask, w_dice, 0)
    qi = torch.cat([qi, num_static + torch.arange(n)[valid]])
    gi = torch.cat([rest[gi], tt[valid]])
    return qi, gi


def select_track_queries(query_idx: torch.Tensor, gt_idx: torch.Tensor, prev_masks: torch.Tensor,
                         prev_ids: torch.Tensor, cur_ids: torch.Tensor, keep_prob: float = 0.8,
                         fp_prob: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Track queries for the other frame of a sample (official ``add_track_queries_to_targets``, one image).

    Args:
        query_idx, gt_idx: (M,) the previous decoding's matching (:func:`match_with_tracks`).
        prev_masks: (Q', h, w) that decoding's final mask logits (Q' = all its queries).
        prev_ids: (K_prev,) annotation ids of the previous frame's instances; cur_ids: (K_cur,) the other frame's.
        keep_prob: probability that a matched query is carried (official 0.8).
        fp_prob: per carried query, probability of adding an unmatched query as a false positive (0.2).

    Returns:
        (out_idx (m,), targets (m,)) long: the carried queries' indices in the previous decoding (the kept
        matched ones in matching order, then the false positives) and the instance index each must predict in the
        other frame (-1: no object).
    """
    query_idx, gt_idx = query_idx.cpu().long(), gt_idx.cpu().long()
    prev_ids, cur_ids = prev_ids.cpu(), cur_ids.cpu()
    keep = torch.rand(len(query_idx)) < keep_prob
    q, g = query_idx[keep], gt_idx[keep]
    eq = prev_ids[g][:, None] == cur_ids[None, :]                 # (m, K_cur)
    present = eq.any(1)
    targets = torch.full((len(q),), -1, dtype=torch.long)
    if present.any():
        targets[present] = eq[present].long().argmax(1)
    matched = set(query_idx.tolist())
    pool = [i for i in range(prev_masks.shape[0]) if i not in matched]
    boxes = mask_boxes(prev_masks.detach() > 0)
    fps = []
    for j in torch.arange(len(q))[torch.rand(len(q)) < fp_prob].tolist():
        if not pool:
            break
        pick = None
        if present[j]:
            d = boxes[q[j], :2][None] - boxes[pool, :2]
            w = (d[:, 0] ** 2 + d[:, 1] ** 2).sqrt()
            try:
                pick = int(torch.multinomial(w, 1).item())
            except RuntimeError:                                  # all weights zero
                pick = None
        if pick is None:
            pick = int(torch.randperm(len(pool))[0])
        fps.append(pool.pop(pick))
    out = torch.cat([q, torch.tensor(fps, dtype=torch.long)])
    return out, torch.cat([targets, torch.full((len(fps),), -1, dtype=torch.long)])


def pad_track_queries(selections: list[tuple[torch.Tensor, torch.Tensor]], matched: list[torch.Tensor],
                      num_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad every sample to the batch's longest track-query list (official ``length_padding``).

    Args:
        selections: per sample (out_idx (m_i,), targets (m_i,)) from :func:`select_track_queries`.
        matched: per sample the previous decoding's matched query indices (not used as padding).
        num_prev: Q', queries of the previous decoding.

    Returns:
        (idx (B, n), targets (B, n)) long; padding: random queries neither carried nor matched, target -1.
    """
    n = max((len(o) for o, _ in selections), default=0)
    idx, tgt = [], []
    for (o, t), mt in zip(selections, matched):
        short = n - len(o)
        if short:
            used = set(o.tolist()) | set(mt.cpu().tolist())
            pool = torch.tensor([i for i in range(num_prev) if i not in used] or list(range(num_prev)))
            pick = pool[torch.randperm(len(pool))[:short]]
            if len(pick) < short:
                pick = torch.cat([pick, pool[torch.randint(len(pool), (short - len(pick),))]])
            o, t = torch.cat([o, pick]), torch.cat([t, torch.full((short,), -1, dtype=torch.long)])
        idx.append(o)
        tgt.append(t)
    return torch.stack(idx), torch.stack(tgt)


def gather_queries(queries: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, Q', D) decoded queries, (B, n) indices -> (B, n, D) detached track queries (the official carries
    ``last_query_feats[...].detach()``)."""
    return torch.gather(queries.detach(), 1, idx.to(queries.device)[..., None].expand(-1, -1, queries.shape[-1]))


def _slice(outputs: dict, sl: slice) -> dict:
    return {"pred_logits": outputs["pred_logits"][:, sl], "pred_masks": outputs["pred_masks"][:, sl],
            "aux_outputs": [{"pred_logits": a["pred_logits"][:, sl], "pred_masks": a["pred_masks"][:, sl]}
                            for a in outputs.get("aux_outputs", [])]}


def decode_loss(criterion, outputs: dict, targets: list[dict], track_targets: torch.Tensor | None,
                num_static: int) -> dict:
    """Loss of one decoding with track queries (official ``AdditionalQueriesFormerHead.loss``).

    Args:
        criterion: :class:`~vppkit.models.vis.losses.SetCriterion` or ``PointSampledCriterion``.
        outputs: decoder dict over Q + n queries (static first); targets: B dicts {labels, masks}.
        track_targets: (B, n) long instance index of each track query (-1: no object); None or n = 0: static
            queries only (the plain criterion).
        num_static: Q.

    Returns:
        dict ``loss``, ``loss_ce``, ``loss_mask``, ``loss_dice`` (static + track terms) and ``loss_track`` (the
        track-query part of ``loss``).
    """
    if track_targets is None or track_targets.shape[1] == 0:
        out = criterion(_slice(outputs, slice(0, num_static)), targets)
        return {**out, "loss_track": out["loss"].new_zeros(())}
    rest = []
    for t, tt in zip(targets, track_targets):
        free = torch.ones(t["labels"].shape[0], dtype=torch.bool, device=t["labels"].device)
        free[tt[tt >= 0].to(free.device)] = False
        rest.append({"labels": t["labels"][free], "masks": t["masks"][free]})
    static = criterion(_slice(outputs, slice(0, num_static)), rest)
    n = track_targets.shape[1]
    indices = [(torch.arange(n)[tt.cpu() >= 0], tt.cpu()[tt.cpu() >= 0]) for tt in track_targets]
    track = criterion.matched(_slice(outputs, slice(num_static, num_static + n)), targets, indices)
    out = {k: static[k] + track[k] for k in ("loss", "loss_ce", "loss_mask", "loss_dice")}
    out["loss_track"] = track["loss"]
    return out
