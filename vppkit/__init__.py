"""vppkit: analysis and reproduction toolkit for token/patch pruning on Vision Transformers.

Reproduces the analyses of
- VPP, *Video Patch Pruning: Efficient Video Instance Segmentation via Early Token Reduction*
  (Glandorf, Norrenbrock, Rosenhahn, CVPR 2026 Workshops), and
- EVTP-IVS (arXiv 2508.11886), the InstructSeg TFLOPs calculator and training-free token selectors.

Sub-packages: ``data`` (YouTube-VIS / DAVIS / synthetic), ``models`` (PrunableViT, pruners, VIS head),
``engine`` (train / infer), ``metrics`` (AP, PKR, IoI, FGS), ``flops`` (analytic and measured GMACs).
"""

__version__ = "0.1.0"
