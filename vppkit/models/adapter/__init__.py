"""ViT-Adapter host around the pruned ViT (vpp-notes §2.2, DESIGN.md §7): spatial prior, injectors, extractors.

Small files, one job each: ``deform_attn`` (multi-scale deformable attention from ``transformers``, initialised as
MSDeformAttn), ``spatial_prior`` (the conv stem), ``interaction`` (Injector, Extractor, ConvFFN), ``vit_adapter``
(``ViTAdapter`` and the per-forward ``AdapterRun`` hook that ``PrunableViT.forward(interaction=...)`` calls).
"""

from vppkit.models.adapter.deform_attn import build_deform_attn, deform_attend, reference_points
from vppkit.models.adapter.interaction import ConvFFN, Extractor, Injector
from vppkit.models.adapter.spatial_prior import SpatialPriorModule
from vppkit.models.adapter.vit_adapter import INTERACTION_INDEXES, AdapterOutput, AdapterRun, ViTAdapter

__all__ = ["build_deform_attn", "deform_attend", "reference_points", "ConvFFN", "Extractor", "Injector",
           "SpatialPriorModule", "INTERACTION_INDEXES", "AdapterOutput", "AdapterRun", "ViTAdapter"]
