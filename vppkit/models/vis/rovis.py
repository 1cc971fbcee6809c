"""ROVIS online tracking with track queries (Zhan et al. arXiv 2211.09108; the VPP paper's host, vpp-notes §2.1).

Per frame (official ``custom_mmtrack/models/vis/rovis.py`` ``ROVIS.predict`` and
``custom_mmtrack/models/trackers/rovis_tracker.py`` ``TrackFormerTracker.track``, PatGlan/Video-Patch-Pruning):

1. the tracks in memory enter the decoder as *track queries*: their stored raw decoder queries are appended after
   the Q static queries (zero positional embedding; :func:`vppkit.models.vis.decoder.append_track_queries`);
2. :func:`frame_detections`: the (query, class) pairs with the highest class probabilities (top Q + n, the
   official ``QueryAsTrID.instance_postprocess``), scored class probability × mean mask probability inside the
   binary mask, kept when a static query scores > ``new_score`` (0.3) or a track query > ``keep_score`` (0.25),
   sorted by score;
3. :func:`rovis_track_step`: a track query's detection continues the track it was queried for (its id);
   duplicates among them are removed by mask NMS at IoU 0.7; a track detected with score < 0.3 keeps its previous
   query (``query_update_threshold``); static-query detections start new tracks (new ids); then mask NMS at IoU
   0.4 over [continued tracks, new tracks] suppresses new tracks that overlap a continued one or a better new one
   (continued tracks are never suppressed: the official ``white_list``). Masks NMS is IDOL's greedy ``mask_nms``.
4. the memory (mmtrack ``BaseTracker``): every kept detection updates or starts its track (query, last frame);
   a track not detected for ``retain`` (10) frames is dropped; until then it is queried again every frame (so an
   object can come back after an occlusion). A frame without any detection leaves the memory as it is (the
   official tracker returns before its update).

The state is explicit (:class:`RovisState`, passed in and returned, never stored on a module).
:class:`TrackResultsAccumulator` turns the per-frame tracked detections into YouTube-VIS results as mmtrack's
``YouTubeVISMetric`` does: a track's score is the mean of its per-frame detection scores, its category the
majority vote of its per-frame labels, its segmentation None in the frames it was not detected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vppkit.models.vis.tracker import encode_rle

#: IoU above which a continued track's detection suppresses another continued track's (official ``nms_thr=0.7``).
TRACK_NMS_IOU = 0.7
#: IoU above which a continued track or a better new detection suppresses a new detection (``nms_thr=0.4``).
NEW_NMS_IOU = 0.4
#: A continued track detected below this score keeps its previous query (official ``query_update_threshold``).
QUERY_UPDATE_SCORE = 0.3


@dataclass(frozen=True)
class RovisState:
    """Track memory of one video.

    Attributes:
        ids: (n,) long track ids, in memory order (= the order of the next frame's track queries).
        feats: (n, D) the raw decoder query of each track's last kept detection (detached): its track query.
        last_frame: (n,) long, index of the frame where each track was last detected.
        next_id: id of the next new track (tracks started so far).
    """

    ids: torch.Tensor
    feats: torch.Tensor
    last_frame: torch.Tensor
    next_id: int

    @classmethod
    def empty(cls, dim: int) -> "RovisState":
        """No track yet (a video's first frame)."""
        return cls(torch.zeros(0, dtype=torch.long), torch.zeros(0, dim), torch.zeros(0, dtype=torch.long), 0)

    def __len__(self) -> int:
        return int(self.ids.numel())

    def track_queries(self) -> torch.Tensor | None:
        """(1, n, D) the track queries of the next frame, or None when the memory is empty."""
        return self.feats[None] if len(self) else None


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one frame, sorted by score (descending).

    Attributes:
        query: (m,) long decoder query index (< Q: static query; >= Q: track query Q + k of memory slot k).
        labels: (m,) long class in [0, C). scores: (m,) float, class probability × mask score.
        masks: (m, H, W) bool.
    """

    query: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor

    def take(self, idx: torch.Tensor) -> "FrameDetections":
        return FrameDetections(self.query[idx], self.labels[idx], self.scores[idx], self.masks[idx])


def frame_detections(logits: torch.Tensor, mask_logits: torch.Tensor, num_static: int, new_score: float = 0.3,
                     keep_score: float = 0.25, mask_threshold: float = 0.0) -> FrameDetections:
    """The detections of one frame (official ``QueryAsTrID.instance_postprocess`` + the score filter of
    ``ROVIS.predict``).

    Args:
        logits: (Q + n, C + 1) class logits (last = no object).
        mask_logits: (Q + n, H, W) mask logits at the output size.
        num_static: Q; queries >= Q are track queries.
        new_score: a static query's detection is kept when its score is above this (``track_est_conf``).
        keep_score: a track query's detection is kept when its score is above this (``track_maintain_conf``).
        mask_threshold: mask-logit threshold of the binary mask (0 = probability 0.5, official).

    Returns:
        :class:`FrameDetections`: of the top Q + n (query, class) pairs by class probability, those above their
        threshold, sorted by score.

    Raises:
        ValueError: shapes disagree.
    """
    qt, c1 = logits.shape
    if mask_logits.shape[0] != qt:
        raise ValueError(f"frame_detections: {qt} query logits but {mask_logits.shape[0]} masks")
    c = c1 - 1
    probs = logits.float().softmax(-1)[:, :-1]
    top, flat = probs.flatten().topk(qt)
    query, labels = flat // c, flat % c
    binary = mask_logits > mask_threshold
    bf = binary.flatten(1).float()
    mask_score = (mask_logits.float().sigmoid().flatten(1) * bf).sum(1) / (bf.sum(1) + 1e-6)
    scores = top * mask_score[query]
    thr = torch.where(query >= num_static, torch.full_like(scores, keep_score), torch.full_like(scores, new_score))
    keep = (scores > thr).nonzero().flatten()
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
    return FrameDetections(query[keep], labels[keep], scores[keep], binary[query[keep]])


def mask_nms(masks: torch.Tensor, thr: float, protected: int = 0) -> torch.Tensor:
    """Greedy mask NMS in the given order (IDOL's ``mask_nms`` as the official tracker uses it).

    Args:
        masks: (m, H, W) bool, best first.
        thr: a mask is suppressed when its IoU with an earlier kept mask is above ``thr``.
        protected: the first ``protected`` masks are never suppressed (the official ``white_list``).

    Returns:
        keep (m,) bool. IoU = (intersection + 1e-6) / (union + 1e-6): two empty masks overlap fully.
    """
    m = masks.shape[0]
    keep = torch.ones(m, dtype=torch.bool)
    if m < 2:
        return keep
    f = masks.flatten(1).float()
    inter = f @ f.T
    area = f.sum(1)
    iou = ((inter + 1e-6) / (area[:, None] + area[None, :] - inter + 1e-6)).cpu()
    for i in range(m - 1):
        if not keep[i]:
            continue
        for j in range(max(i + 1, protected), m):
            if keep[j] and iou[i, j] > thr:
                keep[j] = False
    return keep


def rovis_track_step(state: RovisState | None, det: FrameDetections, queries: torch.Tensor, num_static: int,
                     frame: int, retain: int = 10) -> tuple[torch.Tensor, torch.Tensor, RovisState]:
    """Link one frame's detections to tracks (official ``TrackFormerTracker.track`` + mmtrack's memory update).

    Args:
        state: the memory after the previous frame (None: a video's first frame). Not modified.
        det: :func:`frame_detections` of this frame (sorted by score).
        queries: (Q + n, D) raw decoder queries of this frame (:attr:`VISOutput.queries`), n = ``len(state)``.
        num_static: Q.
        frame: index of this frame in the video (processed order).
        retain: a track not detected for this many frames is dropped from the memory.

    Returns:
        (ids (k,) long track id of each kept detection, sel (k,) long index of the kept detections into ``det``,
        new state). The kept detections are the continued tracks (best first) then the new ones.

    Raises:
        ValueError: ``queries`` does not have Q + n rows.
    """
    state = state if state is not None else RovisState.empty(queries.shape[-1])
    n = len(state)
    if queries.shape[0] != num_static + n:
        raise ValueError(f"rovis_track_step: {queries.shape[0]} queries for {num_static} static + {n} track queries")
    if det.query.numel() == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), state
    queries = queries.detach().float().cpu()
    feats_prev = state.feats.float().cpu()
    q = det.query.cpu()
    old = (q >= num_static).nonzero().flatten()
    old = old[mask_nms(det.masks[old], TRACK_NMS_IOU)]
    slot = q[old] - num_static
    new_feats = queries[q[old]].clone()
    low = det.scores[old].cpu() < QUERY_UPDATE_SCORE
    new_feats[low] = feats_prev[slot[low]]
    new = (q < num_static).nonzero().flatten()
    sel = torch.cat([old, new])
    keep = mask_nms(det.masks[sel], NEW_NMS_IOU, protected=len(old))
    ids = torch.cat([state.ids[slot], torch.arange(state.next_id, state.next_id + len(new), dtype=torch.long)])
    feats = torch.cat([new_feats, queries[q[new]]])
    ids, feats, sel = ids[keep], feats[keep], sel[keep]
    # memory update: continued tracks in place, new ones appended, then tracks unseen for `retain` frames dropped
    mem_ids, mem_feats, mem_last = state.ids.clone(), feats_prev.clone(), state.last_frame.clone()
    pos = {int(t): k for k, t in enumerate(mem_ids.tolist())}
    add = []
    for t, f in zip(ids.tolist(), feats):
        if t in pos:
            mem_feats[pos[t]], mem_last[pos[t]] = f, frame
        else:
            add.append(t)
    if add:
        fresh = torch.isin(ids, torch.tensor(add))
        mem_ids = torch.cat([mem_ids, ids[fresh]])
        mem_feats = torch.cat([mem_feats, feats[fresh]])
        mem_last = torch.cat([mem_last, torch.full((len(add),), frame, dtype=torch.long)])
    alive = frame - mem_last < retain
    new_state = RovisState(mem_ids[alive], mem_feats[alive].to(state.feats.dtype), mem_last[alive],
                           state.next_id + len(new))
    return ids, sel.to(det.query.device), new_state


class TrackResultsAccumulator:
    """Per-video collector of ROVIS tracks -> YouTube-VIS results (mmtrack ``YouTubeVISMetric`` formatting).

    Args:
        video_id: YouTube-VIS video id. num_frames: frames of the video (one segmentation per frame).
        category_ids: (C,) dataset category ids of the model's classes 0..C−1.
        top_k: tracks kept per video, by score (None: all, as the official metric).

    Memory: per detection one RLE; per track the score sum and per-class label counts.
    """

    def __init__(self, video_id: int, num_frames: int, category_ids: list[int], top_k: int | None = 10) -> None:
        self.video_id, self.num_frames, self.category_ids, self.top_k = video_id, num_frames, list(category_ids), top_k
        self.frames_added = 0
        self.tracks: dict[int, dict] = {}

    def add_frame(self, frame_idx: int, ids: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                  masks: torch.Tensor) -> None:
        """Add one frame's tracked detections: ids / labels (k,) long, scores (k,), masks (k, H, W) bool at the
        original frame size.

        Raises:
            ValueError: out-of-order frame, a repeated id in one frame, or lengths that differ.
        """
        if frame_idx != self.frames_added:
            raise ValueError(f"video {self.video_id}: frame {frame_idx} added after {self.frames_added} frames")
        k = int(ids.numel())
        if not (labels.numel() == scores.numel() == masks.shape[0] == k):
            raise ValueError(f"video {self.video_id}, frame {frame_idx}: ids, labels, scores and masks differ in "
                             "length")
        if len(set(ids.tolist())) != k:
            raise ValueError(f"video {self.video_id}, frame {frame_idx}: a track id appears twice: {ids.tolist()}")
        m = masks.detach().cpu().numpy().astype(bool)
        for t, lab, sc, mk in zip(ids.tolist(), labels.tolist(), scores.tolist(), m):
            tr = self.tracks.setdefault(t, {"score": 0.0, "n": 0, "labels": np.zeros(len(self.category_ids), int),
                                            "segs": {}})
            tr["score"] += float(sc)
            tr["n"] += 1
            tr["labels"][int(lab)] += 1
            tr["segs"][frame_idx] = encode_rle(mk)
        self.frames_added += 1

    def results(self) -> list[dict]:
        """One entry per track ``{video_id, category_id, score, segmentations}``: score = mean per-frame score,
        category = majority vote (ties: the lower class index), null where the track was not detected; the
        ``top_k`` best by score (stable order: first track first).

        Raises:
            ValueError: fewer frames were added than ``num_frames``.
        """
        if self.frames_added != self.num_frames:
            raise ValueError(f"video {self.video_id}: {self.frames_added} frames added, expected {self.num_frames}")
        out = [{"video_id": self.video_id, "category_id": self.category_ids[int(np.argmax(tr["labels"]))],
                "score": tr["score"] / tr["n"],
                "segmentations": [tr["segs"].get(f) for f in range(self.num_frames)]}
               for tr in self.tracks.values()]
        out.sort(key=lambda r: -r["score"])
        return out if self.top_k is None else out[:self.top_k]
