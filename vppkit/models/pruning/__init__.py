"""vppkit.models.pruning: one file per method, pure selection functions + a thin :class:`Pruner` module.

- ``base``: the Pruner protocol (``begin / before_block / after_block / finish``, and ``nominal_counts``: the
  method's own nominal tokens per block, :class:`BlockCounts`), ``PruneContext``, ``BlockAttention``,
  ``DensePruner``, ``ExternalMaskPruner`` (keep masks given through ``state``), ``ForcedSchedulePruner``
  (a real pruner's modules run, given keep masks imposed: the speed benchmark);
- ``gumbel``: Gumbel-softmax, straight-through, top-k helpers;
- ``svit``, ``dynamicvit``, ``evit``, ``tome``: baselines; ``vpp``: Map-SM + SM; ``selection``: training-free
  selectors (EVTP-IVS).

Temporal state (VPP) is passed in and returned, never stored on a module.
"""

from vppkit.models.pruning.base import (  # noqa: F401
    BlockAttention,
    BlockCounts,
    DensePruner,
    ExternalMaskPruner,
    ForcedSchedulePruner,
    PruneContext,
    Pruner,
)
from vppkit.models.pruning.dynamicvit import DynamicViTPruner
from vppkit.models.pruning.evit import EViTPruner
from vppkit.models.pruning.svit import SViTPruner
from vppkit.models.pruning.tome import ToMePruner
from vppkit.models.pruning.vpp import VPPPruner


def build_pruner(name: str, dim: int, **kw) -> Pruner:
    """Pruner by method name: ``dense``, ``external``, ``svit``, ``dynamicvit``, ``evit``, ``tome``, ``vpp``.

    Args:
        name: method name (case-insensitive).
        dim: token width C (used by the learned gates).
        **kw: the method's constructor arguments (e.g. ``rho`` for DynamicViT, ``r`` for ToMe).

    Raises:
        ValueError: unknown name.
    """
    key = name.lower()
    if key == "dense":
        return DensePruner(**kw)
    if key == "external":
        return ExternalMaskPruner(**kw)
    if key == "svit":
        return SViTPruner(dim, **kw)
    if key == "dynamicvit":
        return DynamicViTPruner(dim, **kw)
    if key == "evit":
        return EViTPruner(**kw)
    if key == "tome":
        return ToMePruner(**kw)
    if key == "vpp":
        return VPPPruner(dim, **kw)
    raise ValueError(f"unknown pruner {name!r}; choose from dense, external, svit, dynamicvit, evit, tome, vpp")
