"""PKR (Patch Keep Ratio) and per-block patch density from KeepRecords.

Definition (DESIGN.md §4, vpp-notes §8.2, official ``log_block_sparsity.py``):

    density_b = (sum over evaluated frames of the patch tokens block b processed)
                / (sum over evaluated frames of N)                     for b = 0 .. depth-1
    PKR       = (1 / depth) * sum_b density_b

- Only patch tokens count (``KeepRecord`` has no CLS / register tokens). Block 0 is dense, so it adds 1.0.
- Tokens processed are ``KeepRecord.counts`` (equal to the keep-mask sums for pruners; the number of merged
  tokens for merging methods).
- Sums are **global over every evaluated frame**. The official hook divides ``SmoothedValue.avg`` values,
  i.e. means over a deque of the *last 20 logged forwards only*; taken literally, its PKR describes the
  last 20 frames each process saw. That is a bug we deliberately fix (vpp-notes §8.2, §12). With frames of
  different sizes N, global sums weight each frame by its N (the ratio of total work), which differs from
  the mean of per-frame PKRs (:func:`frame_pkr`); we follow global sums, like the official ratio of sums.
- The split by ``is_first``: VPP's first frame of a video has no temporal prior (no Map-SM, blocks 1-2
  dense), so its density differs from the later frames; the caller says which frames are first.

Nominal PKR of a schedule of keep fractions: :func:`nominal_pkr`, e.g. VPP "0.55 PKR" (m = 0.7, rho = 0.8)
gives 54.16 % and "0.4 PKR" (m = 0.6, rho = 0.7) gives 41.33 % (fractions from
:meth:`vppkit.models.pruning.schedules.VPPSchedule.block_keep_fractions`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from vppkit.models.records import KeepRecord

#: Splits reported by :class:`PKRAccumulator`: every frame, first frames of videos, later frames.
SPLITS = ("all", "first", "later")


def nominal_pkr(block_fractions: Sequence[float]) -> float:
    """PKR of a nominal schedule: the mean of the per-block keep fractions.

    Args:
        block_fractions: keep fraction in force at each block (block 0 first; usually 12 values, block 0 = 1.0).

    Returns:
        PKR as a fraction in [0, 1].

    Raises:
        ValueError: empty schedule or a fraction outside [0, 1].
    """
    f = np.asarray(list(block_fractions), dtype=np.float64)
    if f.size == 0:
        raise ValueError("nominal_pkr: empty block_fractions")
    if np.any(f < 0) or np.any(f > 1) or not np.all(np.isfinite(f)):
        raise ValueError(f"nominal_pkr: keep fractions must be in [0, 1], got {f.tolist()}")
    return float(f.mean())


def frame_pkr(record: KeepRecord) -> torch.Tensor:
    """Per-frame PKR of each sample of a record: mean over blocks of counts / N.

    Args:
        record: KeepRecord with counts (B, depth) over N patch tokens.

    Returns:
        (B,) float64. Averaging these over frames of different N is the *mean of means*, not the PKR
        (which uses global sums, :class:`PKRAccumulator`).
    """
    return (record.counts.double() / record.num_patches).mean(1)


def _first_flags(is_first, batch: int, source: str) -> torch.Tensor:
    if isinstance(is_first, (bool, np.bool_)):
        return torch.full((batch,), bool(is_first))
    flags = torch.as_tensor(np.asarray(is_first) if not torch.is_tensor(is_first) else is_first).bool().flatten()
    if flags.numel() != batch:
        raise ValueError(f"{source}: is_first has {flags.numel()} flags for a batch of {batch} frames")
    return flags.cpu()


class PKRAccumulator:
    """Global-sum accumulator of per-block patch density and PKR over evaluated frames.

    The caller owns the object (explicit state: it is never stored on a model) and feeds it every
    evaluated frame's :class:`KeepRecord`. See the module docstring for the definition.

    Args:
        depth: number of blocks; None = taken from the first record.

    Example:
        >>> acc = PKRAccumulator()
        >>> acc.update(record, is_first=(frame_idx == 0))
        >>> acc.pkr(), acc.block_density("later")
    """

    def __init__(self, depth: int | None = None) -> None:
        self.depth = depth
        # processed[split]: (depth,) int64 sums of tokens processed; dense[split]: sum of N; frames[split]: count.
        self.processed: dict[str, np.ndarray] = {}
        self.dense: dict[str, int] = {"first": 0, "later": 0}
        self.frames: dict[str, int] = {"first": 0, "later": 0}
        if depth is not None:
            self._init(depth)

    def _init(self, depth: int) -> None:
        if depth <= 0:
            raise ValueError(f"PKRAccumulator: depth must be positive, got {depth}")
        self.depth = depth
        self.processed = {"first": np.zeros(depth, np.int64), "later": np.zeros(depth, np.int64)}

    def update(self, record: KeepRecord, is_first: bool | Sequence[bool] | torch.Tensor = False,
               source: str = "<record>") -> None:
        """Add the frames of one record.

        Args:
            record: KeepRecord of B frames (counts (B, depth), N patch tokens each).
            is_first: per frame (B,) or one bool for all: True for the first frame of a video.
            source: name of the batch (video id / frame index) used in error messages.

        Raises:
            ValueError: naming ``source`` when depth differs from earlier records, counts fall outside [0, N],
                or the flags do not match the batch size.
        """
        if not isinstance(record, KeepRecord):
            raise TypeError(f"{source}: expected a KeepRecord, got {type(record).__name__}")
        b, depth, n = record.batch, record.depth, record.num_patches
        if self.depth is None or not self.processed:
            self._init(depth)
        if depth != self.depth:
            raise ValueError(f"{source}: KeepRecord has depth {depth}, the accumulator has {self.depth}")
        counts = record.counts.to(torch.int64).cpu()
        if counts.numel() and (int(counts.min()) < 0 or int(counts.max()) > n):
            raise ValueError(f"{source}: KeepRecord counts must lie in [0, N={n}], got range "
                             f"[{int(counts.min())}, {int(counts.max())}]")
        flags = _first_flags(is_first, b, source)
        for split, sel in (("first", flags), ("later", ~flags)):
            k = int(sel.sum())
            if k:
                self.processed[split] += counts[sel].sum(0).numpy()
                self.dense[split] += k * n
                self.frames[split] += k

    def _sums(self, split: str) -> tuple[np.ndarray, int, int]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        if not self.processed:
            return np.zeros(0, np.int64), 0, 0
        if split == "all":
            return (self.processed["first"] + self.processed["later"], self.dense["first"] + self.dense["later"],
                    self.frames["first"] + self.frames["later"])
        return self.processed[split], self.dense[split], self.frames[split]

    def num_frames(self, split: str = "all") -> int:
        """Number of frames accumulated in ``split`` ("all", "first", "later")."""
        return self._sums(split)[2]

    def block_density(self, split: str = "all") -> np.ndarray:
        """Per-block density: global sum of tokens processed / global sum of N.

        Returns:
            (depth,) float64 in [0, 1]; all NaN when the split has no frames.
        """
        processed, dense, _ = self._sums(split)
        if dense == 0:
            return np.full(self.depth or 0, np.nan)
        return processed / dense

    def pkr(self, split: str = "all") -> float:
        """PKR: mean over blocks of :meth:`block_density` (fraction; NaN when the split has no frames)."""
        d = self.block_density(split)
        return float(d.mean()) if d.size and np.all(np.isfinite(d)) else float("nan")

    def merge(self, other: "PKRAccumulator") -> "PKRAccumulator":
        """Add another accumulator's sums (e.g. from another process); returns self.

        Raises:
            ValueError: the depths differ.
        """
        if not other.processed:
            return self
        if not self.processed:
            self._init(other.depth)
        if other.depth != self.depth:
            raise ValueError(f"cannot merge PKR accumulators of depth {self.depth} and {other.depth}")
        for split in ("first", "later"):
            self.processed[split] += other.processed[split]
            self.dense[split] += other.dense[split]
            self.frames[split] += other.frames[split]
        return self

    # ---- serialisation ----
    def state_dict(self) -> dict:
        """Raw sums as plain JSON types (inverse: :meth:`from_state_dict`)."""
        return {
            "depth": self.depth,
            "processed": {k: v.tolist() for k, v in self.processed.items()},
            "dense": dict(self.dense),
            "frames": dict(self.frames),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "PKRAccumulator":
        """Rebuild an accumulator from :meth:`state_dict` output."""
        acc = cls(state["depth"])
        if state["depth"] is not None:
            for split in ("first", "later"):
                acc.processed[split] = np.asarray(state["processed"][split], dtype=np.int64)
                acc.dense[split] = int(state["dense"][split])
                acc.frames[split] = int(state["frames"][split])
        return acc

    def to_dict(self) -> dict:
        """Summary as plain JSON types.

        Keys: ``pkr``, ``pkr_first``, ``pkr_later`` (fractions, None when undefined), ``block_density``,
        ``block_density_first``, ``block_density_later`` (lists per 0-based block), ``frames``,
        ``frames_first``, ``frames_later``, ``definition`` and the raw ``sums`` (:meth:`state_dict`).
        """
        def clean(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        out: dict = {}
        for split in SPLITS:
            suffix = "" if split == "all" else f"_{split}"
            out[f"pkr{suffix}"] = clean(self.pkr(split))
            out[f"block_density{suffix}"] = [clean(v) for v in self.block_density(split)]
            out[f"frames{suffix}"] = self.num_frames(split)
        out["definition"] = ("PKR = mean over blocks of (global sum of patch tokens processed by the block / "
                             "global sum of N) over all evaluated frames; CLS excluded; block 0 counts 1.0")
        out["sums"] = self.state_dict()
        return out

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (split, block) with columns split, block (0-based), layer (1-based),
        density, frames."""
        rows = []
        for split in SPLITS:
            for b, d in enumerate(self.block_density(split)):
                rows.append({"split": split, "block": b, "layer": b + 1, "density": float(d),
                             "frames": self.num_frames(split)})
        return pd.DataFrame(rows, columns=["split", "block", "layer", "density", "frames"])
