"""Covering radius of a kept-patch set on the patch grid (the k-center objective).

The companion of :func:`vppkit.models.pruning.selection.spatial_coverage` (mean distance from every patch to its
nearest kept patch): the covering radius is the *largest* such distance. The training-free selector study
(``experiments/selectors.py``) reports both per frame.
"""

from __future__ import annotations

import torch

from vppkit.models.pruning.selection import grid_distance

__all__ = ["covering_radius"]


def covering_radius(keep: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Max over patches of the Euclidean distance (patch units) to the nearest kept patch.

    Args:
        keep: (B, N) or (N,) bool keep mask, N = H·W patches in row-major order.
        grid: (H, W) patch grid.

    Returns:
        (B,) float tensor (B = 1 for a 1-D input); 0 when every patch is kept.

    Raises:
        ValueError: ``N != H·W``, or a sample that keeps no patch (no nearest kept patch: the radius is undefined).
    """
    m = (keep.unsqueeze(0) if keep.dim() == 1 else keep).bool()
    if m.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"covering_radius: {m.shape[-1]} patches do not fit grid {tuple(grid)}")
    empty = ~m.any(dim=-1)
    if bool(empty.any()):
        raise ValueError(f"covering_radius: sample(s) {empty.nonzero().squeeze(1).tolist()} keep no patch")
    d = grid_distance(grid, device=m.device).unsqueeze(0).masked_fill(~m.unsqueeze(1), float("inf"))
    return d.amin(dim=-1).amax(dim=-1)
