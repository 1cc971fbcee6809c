"""vppkit.flops: cost accounting.

- :mod:`vppkit.flops.analytic`: closed-form MACs of a ViT backbone under a per-block token schedule
  (GMACs, 1 multiply-add = 1), nominal schedules and pruner overheads of each method.
- :mod:`vppkit.flops.measure`: measured MACs with fvcore / ``FlopCounterMode`` (attention fusion off while
  counting), on plain timm blocks, static schedules, or a real PrunableViT over real frames.
- :mod:`vppkit.flops.instructseg`: the EVTP-IVS InstructSeg TFLOPs calculator (supplementary §C.2).

Submodules are imported on demand (``from vppkit.flops.analytic import backbone_macs``) so that importing
the package stays cheap.
"""
