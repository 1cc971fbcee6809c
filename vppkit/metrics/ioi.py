"""IoI (Intersection over Instance) by instance size, and foreground/background patch density.

Definitions (VPP supplementary §D, Table 8; DESIGN.md §4; vpp-notes §8.3):

- For a frame, a ground-truth instance i and a block b, with K_b the patches processed by block b (the keep
  mask in force at b, ``KeepRecord.masks[:, b]``) and P_i the patches of instance i (rule of
  :mod:`vppkit.metrics.patch_labels`, default "half")::

      IoI(b, i) = |K_b ∩ P_i| / |P_i|

  It is the recall of the instance's patches at block b; 1 means no instance patch was pruned.
- Block average: the mean over all ``depth`` blocks (block 0 included, like PKR, so IoI and PKR describe
  the same forward); per-block values are reported too.
- Pooling over instances and frames, two variants:

  * ``"instance"`` (**default**): the mean over (instance, frame) pairs of the per-pair IoI. Every
    instance occurrence weighs the same, whatever its size. §D reads IoI per instance ("VPP allocates a
    higher patch density to smaller objects"), and in Table 8 the overall IoI lies close to IoI_S
    (e.g. 82.3 with S/M/L = 87.3/76.2/72.2), as expected when the many small YouTube-VIS instances
    weigh as much as the few large ones; a patch-pooled mean would sit near IoI_M/IoI_L.
  * ``"pooled"``: sum over pairs of |K_b ∩ P_i| / sum over pairs of |P_i| (large instances weigh more).

- Size bins by the instance's share of the (unpadded) frame area, per frame (§D): S <= 10 %,
  10 % < M <= 20 %, L > 20 %.
- Instances with zero patches under the membership rule (tiny objects) have no IoI: they are skipped and
  counted (``skipped``, ``skipped_S`` ...).
- Foreground/background density over the valid (non-padding) patches, per block, F = union foreground:
  ``fg_share_of_kept`` = |K_b ∩ F| / |K_b| (how much of the kept budget lands on instances),
  ``density_fg`` = |K_b ∩ F| / |F|, ``density_bg`` = |K_b \\ F| / |not F|; all global sums over frames.
  ``fg_ratio`` = |F| / |valid| is what ``fg_share_of_kept`` would be under uniformly random keeping.

For merging methods (ToMe) the keep mask marks representatives of merged tokens, so IoI is only indicative.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from vppkit.metrics.patch_labels import PatchLabels
from vppkit.models.records import KeepRecord

#: Size bins of §D: (name, lower bound exclusive, upper bound inclusive) on the area share.
SIZE_BINS: tuple[tuple[str, float, float], ...] = (("S", 0.0, 0.10), ("M", 0.10, 0.20), ("L", 0.20, float("inf")))
BIN_NAMES = tuple(name for name, _, _ in SIZE_BINS)
POOLINGS = ("instance", "pooled")
DEFAULT_POOLING = "instance"


def size_bin(area_share: float) -> str:
    """Size bin of an instance by its share of the frame area (supplementary §D).

    Args:
        area_share: instance pixels / frame pixels, in [0, 1].

    Returns:
        "S" (<= 0.10), "M" (0.10 < share <= 0.20) or "L" (> 0.20).

    Raises:
        ValueError: share outside [0, 1] or not finite.
    """
    a = float(area_share)
    if not (0.0 <= a <= 1.0 + 1e-9):
        raise ValueError(f"instance area share must be in [0, 1], got {area_share!r}")
    for name, _, hi in SIZE_BINS:
        if a <= hi:
            return name
    raise AssertionError("unreachable")


def instance_ioi(keep: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    """Per-instance, per-block IoI of one frame.

    Args:
        keep: (depth, N) bool, keep mask in force at each block.
        instances: (K, N) bool, patch membership of each instance.

    Returns:
        (K, depth) float64: |keep_b ∩ P_i| / |P_i|; NaN rows for instances with no patch.

    Raises:
        ValueError: N differs between the two inputs.
    """
    keep, instances = keep.bool(), instances.bool()
    if keep.dim() != 2 or instances.dim() != 2 or keep.shape[1] != instances.shape[1]:
        raise ValueError(f"instance_ioi: expected keep (depth, N) and instances (K, N), got {tuple(keep.shape)} "
                         f"and {tuple(instances.shape)}")
    inter = instances.double() @ keep.double().T  # (K, depth)
    size = instances.sum(1, keepdim=True).double()
    return torch.where(size > 0, inter / size.clamp_min(1), torch.full_like(inter, float("nan")))


def fg_bg_density(keep: torch.Tensor, foreground: torch.Tensor, valid: torch.Tensor | None = None) -> dict:
    """Foreground/background density of the kept patches of one frame (see module docstring).

    Args:
        keep: (depth, N) bool.
        foreground: (N,) bool.
        valid: (N,) bool, False on padding patches; None = all valid.

    Returns:
        dict of (depth,) float64 arrays ``fg_share_of_kept``, ``density_fg``, ``density_bg`` (NaN when the
        denominator is 0) and the float ``fg_ratio``.
    """
    acc = IoIAccumulator(depth=keep.shape[0])
    acc._add_fg_bg(keep.bool(), foreground.bool(), torch.ones_like(foreground.bool()) if valid is None else valid)
    return acc.fg_bg()


def _ratio(num: np.ndarray, den) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


class IoIAccumulator:
    """Accumulates IoI by size bin and fg/bg density over frames (global sums; explicit caller-owned state).

    Args:
        depth: number of blocks; None = taken from the first frame.

    Example:
        >>> acc = IoIAccumulator()
        >>> acc.update_record(out.keep, [patch_labels(m, 16) for m in masks_of_batch])
        >>> acc.to_frame()   # columns IoI, IoI_S, IoI_M, IoI_L, n, n_S, n_M, n_L, skipped, ...
    """

    def __init__(self, depth: int | None = None) -> None:
        self.depth: int | None = None
        self.frames = 0
        if depth is not None:
            self._init(depth)

    def _init(self, depth: int) -> None:
        if depth <= 0:
            raise ValueError(f"IoIAccumulator: depth must be positive, got {depth}")
        self.depth = depth
        z = lambda dt: np.zeros(depth, dt)  # noqa: E731
        self.pair_sum = {k: z(np.float64) for k in BIN_NAMES}      # sum over pairs of IoI(b, i)
        self.pair_n = {k: 0 for k in BIN_NAMES}                     # number of (instance, frame) pairs
        self.pooled_kept = {k: z(np.int64) for k in BIN_NAMES}      # sum of |K_b ∩ P_i|
        self.pooled_total = {k: 0 for k in BIN_NAMES}               # sum of |P_i|
        self.skipped = {k: 0 for k in BIN_NAMES}                    # instances with no patch
        self.kept_fg = z(np.int64)
        self.kept_bg = z(np.int64)
        self.n_fg = 0
        self.n_bg = 0

    # ---- accumulation ----
    def _add_fg_bg(self, keep: torch.Tensor, fg: torch.Tensor, valid: torch.Tensor) -> None:
        if self.depth is None:
            self._init(keep.shape[0])
        fgv, bgv = fg & valid, ~fg & valid
        self.kept_fg += (keep & fgv).sum(1).numpy().astype(np.int64)
        self.kept_bg += (keep & bgv).sum(1).numpy().astype(np.int64)
        self.n_fg += int(fgv.sum())
        self.n_bg += int(bgv.sum())

    def update(self, keep: torch.Tensor, labels: PatchLabels, source: str = "<frame>") -> None:
        """Add one frame.

        Args:
            keep: (depth, N) bool keep masks of the frame (``KeepRecord.masks[i]``).
            labels: the frame's :class:`PatchLabels` (same N and grid order).
            source: frame name (video id / frame index) for error messages.

        Raises:
            ValueError: naming ``source`` on a shape mismatch or a depth differing from earlier frames.
        """
        keep = torch.as_tensor(keep).detach().cpu().bool()
        if keep.dim() != 2:
            raise ValueError(f"{source}: keep must be (depth, N), got shape {tuple(keep.shape)}")
        depth, n = keep.shape
        if labels.num_patches != n or labels.instances.shape[-1] != n:
            raise ValueError(f"{source}: keep masks have N={n} patches, patch labels have {labels.num_patches} "
                             f"(grid {labels.grid}); labels must be built at the network input resolution")
        if self.depth is None:
            self._init(depth)
        if depth != self.depth:
            raise ValueError(f"{source}: keep masks have depth {depth}, the accumulator has {self.depth}")
        inst = labels.instances.cpu().bool()
        ioi = instance_ioi(keep, inst).numpy()                       # (K, depth)
        inter = (inst.double() @ keep.double().T).numpy().astype(np.int64)
        sizes = inst.sum(1).numpy()
        for i, share in enumerate(labels.area_share.tolist()):
            try:
                name = size_bin(share)
            except ValueError as exc:
                raise ValueError(f"{source}, instance {i}: {exc}") from exc
            if sizes[i] == 0:
                self.skipped[name] += 1
                continue
            self.pair_sum[name] += ioi[i]
            self.pair_n[name] += 1
            self.pooled_kept[name] += inter[i]
            self.pooled_total[name] += int(sizes[i])
        self._add_fg_bg(keep, labels.foreground.cpu().bool(), labels.valid.cpu().bool())
        self.frames += 1

    def update_record(self, record: KeepRecord, labels: Sequence[PatchLabels],
                      sources: Sequence[str] | None = None) -> None:
        """Add every frame of a batch record.

        Args:
            record: KeepRecord of B frames.
            labels: B :class:`PatchLabels`, in batch order.
            sources: B frame names for error messages (default ``"sample <i>"``).

        Raises:
            ValueError: the number of labels differs from the batch size, or see :meth:`update`.
        """
        if len(labels) != record.batch:
            raise ValueError(f"update_record: {len(labels)} patch labels for a batch of {record.batch} frames")
        for i, lab in enumerate(labels):
            self.update(record.masks[i], lab, sources[i] if sources is not None else f"sample {i}")

    def merge(self, other: "IoIAccumulator") -> "IoIAccumulator":
        """Add another accumulator's sums; returns self. Raises ValueError on different depths."""
        if other.depth is None:
            return self
        if self.depth is None:
            self._init(other.depth)
        if other.depth != self.depth:
            raise ValueError(f"cannot merge IoI accumulators of depth {self.depth} and {other.depth}")
        for k in BIN_NAMES:
            self.pair_sum[k] += other.pair_sum[k]
            self.pair_n[k] += other.pair_n[k]
            self.pooled_kept[k] += other.pooled_kept[k]
            self.pooled_total[k] += other.pooled_total[k]
            self.skipped[k] += other.skipped[k]
        self.kept_fg += other.kept_fg
        self.kept_bg += other.kept_bg
        self.n_fg += other.n_fg
        self.n_bg += other.n_bg
        self.frames += other.frames
        return self

    # ---- results ----
    def _bins(self, size: str | None) -> tuple[str, ...]:
        if size is None:
            return BIN_NAMES
        if size not in BIN_NAMES:
            raise ValueError(f"unknown size bin {size!r}; use one of {BIN_NAMES} or None")
        return (size,)

    def count(self, size: str | None = None) -> int:
        """Number of (instance, frame) pairs with an IoI in ``size`` (None = all bins)."""
        return 0 if self.depth is None else sum(self.pair_n[k] for k in self._bins(size))

    def num_skipped(self, size: str | None = None) -> int:
        """Number of (instance, frame) pairs skipped for having no patch under the rule."""
        return 0 if self.depth is None else sum(self.skipped[k] for k in self._bins(size))

    def per_block(self, size: str | None = None, pooling: str = DEFAULT_POOLING) -> np.ndarray:
        """IoI per block (0-based), for one size bin or all (None).

        Args:
            size: "S", "M", "L" or None (all instances).
            pooling: "instance" (mean over pairs, default) or "pooled" (ratio of patch sums).

        Returns:
            (depth,) float64 in [0, 1]; NaN when no instance falls in the bin.
        """
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
        if self.depth is None:
            return np.zeros(0)
        bins = self._bins(size)
        if pooling == "instance":
            return _ratio(sum(self.pair_sum[k] for k in bins), sum(self.pair_n[k] for k in bins))
        return _ratio(sum(self.pooled_kept[k] for k in bins), sum(self.pooled_total[k] for k in bins))

    def ioi(self, size: str | None = None, pooling: str = DEFAULT_POOLING,
            blocks: Sequence[int] | None = None) -> float:
        """IoI averaged over blocks (all ``depth`` blocks by default), see :meth:`per_block`. NaN if empty."""
        pb = self.per_block(size, pooling)
        if blocks is not None:
            pb = pb[list(blocks)]
        return float(pb.mean()) if pb.size and np.all(np.isfinite(pb)) else float("nan")

    def fg_bg(self) -> dict:
        """Foreground/background density per block (see module docstring): dict of (depth,) arrays
        ``fg_share_of_kept``, ``density_fg``, ``density_bg`` and the float ``fg_ratio``."""
        if self.depth is None:
            return {"fg_share_of_kept": np.zeros(0), "density_fg": np.zeros(0), "density_bg": np.zeros(0),
                    "fg_ratio": float("nan")}
        total = self.n_fg + self.n_bg
        return {
            "fg_share_of_kept": _ratio(self.kept_fg, self.kept_fg + self.kept_bg),
            "density_fg": _ratio(self.kept_fg, self.n_fg),
            "density_bg": _ratio(self.kept_bg, self.n_bg),
            "fg_ratio": self.n_fg / total if total else float("nan"),
        }

    def to_dict(self) -> dict:
        """Summary as plain JSON types (fractions; None where undefined).

        Keys: ``IoI``, ``IoI_S``, ``IoI_M``, ``IoI_L`` (default pooling, block-averaged), the same with
        ``_pooled`` suffix, ``n``/``n_S``/``n_M``/``n_L`` (pairs), ``skipped``/``skipped_S``/..., ``frames``,
        ``pooling``, ``per_block`` (lists per 0-based block for each key), ``fg_bg`` (per-block lists and
        block means) and the raw ``sums``.
        """
        def clean(x) -> float | None:
            return None if x is None or not np.isfinite(x) else float(x)

        out: dict = {"pooling": DEFAULT_POOLING, "frames": self.frames}
        per_block: dict = {}
        for suffix, pooling in (("", DEFAULT_POOLING), ("_pooled", "pooled")):
            for size in (None,) + BIN_NAMES:
                key = "IoI" + (f"_{size}" if size else "") + suffix
                out[key] = clean(self.ioi(size, pooling))
                per_block[key] = [clean(v) for v in self.per_block(size, pooling)]
        for size in (None,) + BIN_NAMES:
            tag = f"_{size}" if size else ""
            out[f"n{tag}"] = self.count(size)
            out[f"skipped{tag}"] = self.num_skipped(size)
        fb = self.fg_bg()
        out["fg_bg"] = {k: ([clean(v) for v in fb[k]] if k != "fg_ratio" else clean(fb[k])) for k in fb}
        for k in ("fg_share_of_kept", "density_fg", "density_bg"):
            out[k] = clean(float(np.mean(fb[k]))) if fb[k].size else None
        out["fg_ratio"] = clean(fb["fg_ratio"])
        out["per_block"] = per_block
        out["sums"] = self.state_dict()
        return out

    def to_frame(self) -> pd.DataFrame:
        """One-row table: IoI, IoI_S, IoI_M, IoI_L, n, n_S, n_M, n_L, skipped (+ per-bin), the pooled
        variants and the block-mean fg/bg densities."""
        d = self.to_dict()
        cols = ["IoI", "IoI_S", "IoI_M", "IoI_L", "n", "n_S", "n_M", "n_L", "skipped", "skipped_S", "skipped_M",
                "skipped_L", "IoI_pooled", "IoI_S_pooled", "IoI_M_pooled", "IoI_L_pooled", "fg_share_of_kept",
                "density_fg", "density_bg", "fg_ratio", "frames"]
        return pd.DataFrame([{c: (np.nan if d[c] is None else d[c]) for c in cols}], columns=cols)

    def per_block_frame(self) -> pd.DataFrame:
        """One row per block: block (0-based), layer (1-based), IoI, IoI_S, IoI_M, IoI_L (default pooling),
        IoI_pooled, fg_share_of_kept, density_fg, density_bg."""
        if self.depth is None:
            return pd.DataFrame()
        fb = self.fg_bg()
        data = {"block": np.arange(self.depth), "layer": np.arange(1, self.depth + 1)}
        for size in (None,) + BIN_NAMES:
            data["IoI" + (f"_{size}" if size else "")] = self.per_block(size)
        data["IoI_pooled"] = self.per_block(None, "pooled")
        for k in ("fg_share_of_kept", "density_fg", "density_bg"):
            data[k] = fb[k]
        return pd.DataFrame(data)

    # ---- serialisation ----
    def state_dict(self) -> dict:
        """Raw sums as plain JSON types (inverse: :meth:`from_state_dict`)."""
        if self.depth is None:
            return {"depth": None, "frames": 0}
        return {
            "depth": self.depth, "frames": self.frames,
            "pair_sum": {k: v.tolist() for k, v in self.pair_sum.items()}, "pair_n": dict(self.pair_n),
            "pooled_kept": {k: v.tolist() for k, v in self.pooled_kept.items()},
            "pooled_total": dict(self.pooled_total), "skipped": dict(self.skipped),
            "kept_fg": self.kept_fg.tolist(), "kept_bg": self.kept_bg.tolist(), "n_fg": self.n_fg, "n_bg": self.n_bg,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "IoIAccumulator":
        """Rebuild an accumulator from :meth:`state_dict` output."""
        acc = cls(state["depth"])
        if state["depth"] is None:
            return acc
        acc.frames = int(state["frames"])
        acc.pair_sum = {k: np.asarray(v, np.float64) for k, v in state["pair_sum"].items()}
        acc.pair_n = {k: int(v) for k, v in state["pair_n"].items()}
        acc.pooled_kept = {k: np.asarray(v, np.int64) for k, v in state["pooled_kept"].items()}
        acc.pooled_total = {k: int(v) for k, v in state["pooled_total"].items()}
        acc.skipped = {k: int(v) for k, v in state["skipped"].items()}
        acc.kept_fg = np.asarray(state["kept_fg"], np.int64)
        acc.kept_bg = np.asarray(state["kept_bg"], np.int64)
        acc.n_fg, acc.n_bg = int(state["n_fg"]), int(state["n_bg"])
        return acc
