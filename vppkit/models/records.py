"""KeepRecord: which patch tokens each ViT block processed, for one batch of frames.

This is the contract between the model (which produces it) and the metrics (PKR, per-block density,
IoI, FLOPs) that consume it. DESIGN.md §3-4.

Conventions:
- blocks are 0-based (0..depth-1); figures label them "layer b+1";
- only patch tokens are recorded: CLS / register tokens are never pruned and never counted;
- ``masks[:, b]`` is the bool keep mask *in force at block b* over the N patch tokens of the full grid;
- ``counts[:, b]`` is the number of patch tokens block b actually processed. For pruners that drop
  tokens it equals ``masks[:, b].sum(-1)``; for merging methods (ToMe) the count is the number of
  merged tokens and ``masks`` marks the grid positions that are representatives of a kept token;
- ``overhead_macs`` is the pruner's own cost per sample (e.g. Map-SM's N x N association), in MACs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class KeepRecord:
    """Keep masks of one forward pass.

    Attributes:
        masks: (B, depth, N) bool, keep mask in force at each block.
        counts: (B, depth) int64, patch tokens processed by each block.
        grid: (H_p, W_p) patch grid, ``H_p * W_p == N``.
        overhead_macs: (B,) float64, pruner overhead in MACs per sample (0 for dense).
        meta: free-form extra information (method name, keep targets, ...).
    """

    masks: torch.Tensor
    counts: torch.Tensor
    grid: tuple[int, int]
    overhead_macs: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.masks.dim() != 3 or self.masks.dtype != torch.bool:
            raise ValueError(f"KeepRecord.masks must be a (B, depth, N) bool tensor, got {tuple(self.masks.shape)} "
                             f"{self.masks.dtype}")
        b, d, n = self.masks.shape
        if tuple(self.counts.shape) != (b, d):
            raise ValueError(f"KeepRecord.counts must be (B, depth)=({b}, {d}), got {tuple(self.counts.shape)}")
        if self.grid[0] * self.grid[1] != n:
            raise ValueError(f"KeepRecord.grid {self.grid} does not match N={n}")

    @classmethod
    def from_masks(cls, masks: torch.Tensor, grid: tuple[int, int], overhead_macs: torch.Tensor | float = 0.0,
                   **meta) -> "KeepRecord":
        """Build a record whose counts are the mask sums. ``masks``: (B, depth, N) bool."""
        masks = masks.detach().bool().cpu()
        counts = masks.sum(-1).to(torch.int64)
        if not torch.is_tensor(overhead_macs):
            overhead_macs = torch.full((masks.shape[0],), float(overhead_macs), dtype=torch.float64)
        return cls(masks=masks, counts=counts, grid=tuple(grid), overhead_macs=overhead_macs.double().cpu(), meta=meta)

    @classmethod
    def dense(cls, batch: int, depth: int, grid: tuple[int, int]) -> "KeepRecord":
        """Record of a dense forward: every block processes all N patch tokens."""
        return cls.from_masks(torch.ones(batch, depth, grid[0] * grid[1], dtype=torch.bool), grid, method="dense")

    @property
    def batch(self) -> int:
        return self.masks.shape[0]

    @property
    def depth(self) -> int:
        return self.masks.shape[1]

    @property
    def num_patches(self) -> int:
        return self.masks.shape[2]

    def __getitem__(self, i: int) -> "KeepRecord":
        """Record of sample ``i`` (batch dimension kept, size 1)."""
        return KeepRecord(self.masks[i:i + 1], self.counts[i:i + 1], self.grid, self.overhead_macs[i:i + 1],
                          dict(self.meta))

    # ---- compact storage (per-frame records of a whole video set) ----
    def to_packed(self) -> dict:
        """Compact numpy form (masks bit-packed along N) for ``np.savez_compressed``."""
        return {
            "masks_packed": np.packbits(self.masks.numpy(), axis=-1),
            "counts": self.counts.numpy(),
            "grid": np.asarray(self.grid, dtype=np.int64),
            "overhead_macs": self.overhead_macs.numpy(),
        }

    @classmethod
    def from_packed(cls, d: dict) -> "KeepRecord":
        """Inverse of :meth:`to_packed`."""
        grid = tuple(int(v) for v in d["grid"])
        n = grid[0] * grid[1]
        masks = np.unpackbits(d["masks_packed"], axis=-1, count=n).astype(bool)
        return cls(torch.from_numpy(masks), torch.from_numpy(np.asarray(d["counts"])).to(torch.int64), grid,
                   torch.from_numpy(np.asarray(d["overhead_macs"])).double())


@dataclass
class BackboneOutput:
    """Output of :meth:`PrunableViT.forward` (docs/contracts.md).

    Attributes:
        tokens: (B, N, C) patch tokens of the full grid after the final norm; pruned tokens carry their
            last value.
        grid: (H_p, W_p).
        prefix: (B, P, C) CLS/register tokens after the final norm (P may be 0).
        intermediates: ``depth + 1`` tensors (B, N, C) of patch tokens before the final norm: x_0 = patch
            embedding + pos embed, x_b = output of block b-1; ``None`` unless requested.
        keep: KeepRecord (masks (B, depth, N) in force at each block, counts, overhead MACs).
        state: next temporal state from the pruner (``None`` for stateless pruners).
        aux_loss: scalar tensor, the pruner's sparsity loss (0 for dense).
    """

    tokens: torch.Tensor
    grid: tuple[int, int]
    prefix: torch.Tensor
    intermediates: list[torch.Tensor] | None
    keep: KeepRecord
    state: Any
    aux_loss: torch.Tensor

    def feature_map(self) -> torch.Tensor:
        """Final tokens as a (B, C, H_p, W_p) map."""
        return tokens_to_map(self.tokens, self.grid)

    def to(self, device) -> "BackboneOutput":
        """A copy with ``tokens``, ``prefix``, ``intermediates`` and ``aux_loss`` on ``device`` (the keep record
        stays on the CPU, as always; ``state`` is passed as is). Used for precomputed outputs fed to
        :meth:`vppkit.models.vis.model.VISModel.forward` (the dense stage's feature cache)."""
        return BackboneOutput(tokens=self.tokens.to(device), grid=self.grid, prefix=self.prefix.to(device),
                              intermediates=None if self.intermediates is None
                              else [t.to(device) for t in self.intermediates],
                              keep=self.keep, state=self.state, aux_loss=self.aux_loss.to(device))


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) patch tokens -> (B, C, H_p, W_p). Raises ValueError when N != H_p * W_p."""
    b, n, c = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"tokens_to_map: N={n} does not match grid {grid}")
    return tokens.transpose(1, 2).reshape(b, c, grid[0], grid[1])


@dataclass
class BlockAttention:
    """Attention statistics of one block, on the full patch grid (0 at tokens that did not take part).

    Attributes:
        cls: (B, N) attention from the CLS token to each patch token, mean over heads; ``None`` when the
            backbone has no CLS token.
        received: (B, N) attention each patch token receives, mean over the block's (kept) query tokens,
            prefix queries included, then over heads (VisPruner's SigLIP path, evtp-notes).
    """

    cls: torch.Tensor | None
    received: torch.Tensor

    def score(self) -> torch.Tensor:
        """CLS attention when available, else the attention received (EViT's rule, evtp-notes). (B, N)."""
        return self.cls if self.cls is not None else self.received
