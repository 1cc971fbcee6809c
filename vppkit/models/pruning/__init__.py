"""vppkit.models.pruning: one file per method, pure selection functions + a thin :class:`Pruner` module.

- ``base``: the Pruner protocol (``begin / before_block / after_block / finish``), ``PruneContext``,
  ``BlockAttention``, ``DensePruner``, ``ExternalMaskPruner`` (keep masks given through ``state``);
- ``gumbel``: Gumbel-softmax, straight-through, top-k helpers;
- ``svit``, ``dynamicvit``, ``evit``, ``tome``: baselines; ``vpp``: Map-SM + SM; ``selection``: training-free
  selectors (EVTP-IVS).

Temporal state (VPP) is passed in and returned, never stored on a module.
"""

from vppkit.models.pruning.base import (BlockAttention, DensePruner, ExternalMaskPruner, PruneContext,  # noqa: F401
                                        Pruner)


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
        from vppkit.models.pruning.svit import SViTPruner
        return SViTPruner(dim, **kw)
    if key == "dynamicvit":
        from vppkit.models.pruning.dynamicvit import DynamicViTPruner
        return DynamicViTPruner(dim, **kw)
    if key == "evit":
        from vppkit.models.pruning.evit import EViTPruner
        return EViTPruner(**kw)
    if key == "tome":
        from vppkit.models.pruning.tome import ToMePruner
        return ToMePruner(**kw)
    if key == "vpp":
        from vppkit.models.pruning.vpp import VPPPruner
        return VPPPruner(dim, **kw)
    raise ValueError(f"unknown pruner {name!r}; choose from dense, external, svit, dynamicvit, evit, tome, vpp")
