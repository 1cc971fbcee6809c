"""Online tracker: match query embeddings frame to frame (MinVIS, Huang et al. NeurIPS'22, §3.2).

Every frame yields Q query embeddings. The queries of frame t are permuted so that query slot j of frame t is the
one most similar (cosine similarity, Hungarian assignment) to slot j of frame t−1; each slot is then one track
through the whole video. The state is explicit (:class:`TrackerState`, passed in and returned; DESIGN.md
"explicit over hidden state").

MinVIS matches against the previous frame's embeddings only; ``momentum > 0`` optionally matches against an
exponential moving average of each track's embeddings instead (more robust to one-frame glitches).

:class:`VideoTrackAccumulator` turns the per-frame, per-track predictions into YouTube-VIS results with bounded
memory: per frame it keeps only compact RLEs (pycocotools) and a running sum of class probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment


@dataclass
class TrackerState:
    """Tracker state of one video.

    Attributes:
        embeds: (Q, D) reference embedding of each track slot (detached, no graph).
        num_frames: frames seen so far.
    """

    embeds: torch.Tensor
    num_frames: int


def match_queries(ref: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """Permutation of the current queries that best matches the reference tracks.

    Args:
        ref: (Q, D) track reference embeddings.
        cur: (Q, D) current-frame query embeddings.

    Returns:
        perm (Q,) long such that ``cur[perm][j]`` continues track j (maximises the summed cosine similarity).

    Raises:
        ValueError: shapes differ.
    """
    if ref.shape != cur.shape:
        raise ValueError(f"match_queries: reference {tuple(ref.shape)} and current {tuple(cur.shape)} differ")
    sim = F.normalize(ref.float(), dim=-1) @ F.normalize(cur.float(), dim=-1).T  # (Q_ref, Q_cur)
    rows, cols = linear_sum_assignment(-sim.detach().cpu().numpy())
    perm = np.empty(ref.shape[0], dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm).to(cur.device)


def track_step(state: TrackerState | None, embeds: torch.Tensor,
               momentum: float = 0.0) -> tuple[torch.Tensor, TrackerState]:
    """Assign the Q queries of a new frame to tracks.

    Args:
        state: previous state of this video, or None at its first frame (identity assignment).
        embeds: (Q, D) query embeddings of the frame.
        momentum: 0 = match against the previous frame (MinVIS); m > 0 = reference ← m·ref + (1−m)·new.

    Returns:
        (perm (Q,), new state); apply ``perm`` to every per-query output of the frame.
    """
    embeds = embeds.detach()
    if state is None:
        perm = torch.arange(embeds.shape[0], device=embeds.device)
        return perm, TrackerState(embeds.clone(), 1)
    perm = match_queries(state.embeds, embeds)
    new = embeds[perm]
    if momentum > 0:
        new = momentum * state.embeds + (1 - momentum) * new
    return perm, TrackerState(new, state.num_frames + 1)


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO RLE with a str ``counts`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


SCORE_MODES = ("mean", "present", "present_mask")


class VideoTrackAccumulator:
    """Per-video collector of tracked predictions -> YouTube-VIS results entries.

    Args:
        video_id: YouTube-VIS video id.
        num_frames: frames of the video (results carry one segmentation per frame).
        category_ids: (C,) dataset category ids of the model's classes 0..C−1.
        top_k: instances kept per video (MinVIS keeps 10).
        score: how a (track, class) pair is scored:
            ``"mean"`` (MinVIS): class probability averaged over all frames of the video;
            ``"present"``: averaged over the frames where the track's mask is non-empty (a track that enters late
            or leaves early is not penalised for the frames it is absent);
            ``"present_mask"``: ``"present"`` × the track's mean mask score (mean mask probability inside the
            binary mask over its present frames; Mask2Former's instance score, needs ``mask_scores``).

    Memory: per frame only Q RLE dicts (``None`` for an empty mask) and (Q, C) / (Q,) running sums.
    """

    def __init__(self, video_id: int, num_frames: int, category_ids: list[int], top_k: int = 10,
                 score: str = "mean") -> None:
        if score not in SCORE_MODES:
            raise ValueError(f"VideoTrackAccumulator: score must be one of {SCORE_MODES}, got {score!r}")
        self.video_id, self.num_frames, self.category_ids, self.top_k = video_id, num_frames, list(category_ids), top_k
        self.score = score
        self.prob_sum: torch.Tensor | None = None
        self.present_prob_sum: torch.Tensor | None = None
        self.present_count: torch.Tensor | None = None
        self.mask_score_sum: torch.Tensor | None = None
        self.rles: list[list[dict | None]] = []

    def add_frame(self, frame_idx: int, probs: torch.Tensor, masks: torch.Tensor,
                  mask_scores: torch.Tensor | None = None) -> None:
        """Add one frame, already in track order.

        Args:
            frame_idx: 0-based frame index (frames must come in order).
            probs: (Q, C+1) class probabilities (last = no object).
            masks: (Q, H, W) bool masks at the original frame size.
            mask_scores: (Q,) mask quality in [0, 1] (mean mask probability inside the mask); used by
                ``score="present_mask"`` (1 when not given).

        Raises:
            ValueError: out-of-order frame or a shape mismatch.
        """
        if frame_idx != len(self.rles):
            raise ValueError(f"video {self.video_id}: frame {frame_idx} added after {len(self.rles)} frames")
        p = probs[:, :-1].detach().float().cpu()
        if self.prob_sum is not None and p.shape != self.prob_sum.shape:
            raise ValueError(f"video {self.video_id}: probs {tuple(p.shape)} vs {tuple(self.prob_sum.shape)}")
        m = masks.detach().cpu().numpy().astype(bool)
        present = torch.from_numpy(m.reshape(m.shape[0], -1).any(1)).float()
        ms = (torch.ones(p.shape[0]) if mask_scores is None else mask_scores.detach().float().cpu()) * present
        if self.prob_sum is None:
            self.prob_sum = torch.zeros_like(p)
            self.present_prob_sum = torch.zeros_like(p)
            self.present_count = torch.zeros(p.shape[0])
            self.mask_score_sum = torch.zeros(p.shape[0])
        self.prob_sum += p
        self.present_prob_sum += p * present[:, None]
        self.present_count += present
        self.mask_score_sum += ms
        self.rles.append([encode_rle(mq) if mq.any() else None for mq in m])

    def scores(self) -> torch.Tensor:
        """(Q, C) score of every (track, class) pair under ``self.score``."""
        if self.score == "mean":
            return self.prob_sum / self.num_frames
        n = self.present_count.clamp(min=1)[:, None]
        s = self.present_prob_sum / n
        if self.score == "present_mask":
            s = s * (self.mask_score_sum[:, None] / n)
        return s

    def results(self) -> list[dict]:
        """Top-k (track, class) pairs by score (default: mean class probability over the frames, MinVIS).

        Returns:
            list of ``{video_id, category_id, score, segmentations}``; tracks empty in every frame are skipped.

        Raises:
            ValueError: fewer frames were added than ``num_frames``.
        """
        if len(self.rles) != self.num_frames:
            raise ValueError(f"video {self.video_id}: {len(self.rles)} frames added, expected {self.num_frames}")
        if self.prob_sum is None:
            return []
        scores = self.scores()  # (Q, C)
        q, c = scores.shape
        flat = scores.flatten()
        order = torch.argsort(flat, descending=True)
        out = []
        for idx in order.tolist():
            if len(out) >= self.top_k:
                break
            tq, tc = divmod(idx, c)
            segs = [frame[tq] for frame in self.rles]
            if all(s is None for s in segs):
                continue
            out.append({"video_id": self.video_id, "category_id": self.category_ids[tc],
                        "score": float(flat[idx]), "segmentations": segs})
        return out
