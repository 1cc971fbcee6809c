"""Patch-level ground truth: which ViT patches belong to which instance, to the foreground, to the image.

The pruning metrics (IoI, foreground/background density, FGS probes) compare keep masks over the N patch
tokens with the ground-truth instance masks. This module turns per-pixel instance masks at the *network
input resolution* (frames and masks resized/padded identically) into per-patch labels.

Membership rule (DESIGN.md §4: "state the rule: any pixel, or >= 50 %; default and switch documented"):
a patch belongs to a mask when the fraction of its ``patch_size x patch_size`` pixels covered by the
mask passes the rule:

- ``"any"``: coverage > 0. This is max-pooling with kernel = stride = patch size, the rule of the
  official VPP code's patch-level foreground map (old ``_get_mask_loss``: ``max_pool2d(gt, 16, 16)``,
  vpp-notes §8.3).
- ``"half"`` (**default**): coverage >= 0.5, i.e. the patch takes the label of the majority of its pixels
  (ties go to the mask). Chosen as default because it is symmetric between foreground and background:
  the patch-level mask then has about the pixel-level area, whereas "any" inflates every instance by a
  band of boundary patches that are mostly background (half a patch width around the contour on average),
  which (i) makes IoI of small instances a measure of boundary patches and (ii) gives FGS probes
  labels that say "foreground" for patches that mostly show background.
- a float ``t`` in (0, 1]: coverage >= t (generic threshold; ``"half"`` == ``0.5``).

Use ``rule="any"`` to follow the official code. Instances covering no patch under the rule (tiny objects
under "half") have an all-False row; IoI skips and counts them.

Foreground is the rule applied to the *union* of the instance pixel masks (not the OR of the per-instance
patch memberships: under "half" two instances covering 30 % of a patch each make it foreground).

Token order is timm's: ``(Hp, Wp)`` flattened row-major, so ``labels.flatten(-2)`` is (..., N) and
matches ``PatchEmbed`` output and ``KeepRecord.masks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

Rule = Union[str, float]

#: Default membership rule, see the module docstring for the justification.
DEFAULT_RULE: Rule = "half"


def _as_bool_masks(masks, name: str) -> torch.Tensor:
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    if not torch.is_tensor(masks):
        raise TypeError(f"{name}: expected a (K, H, W) bool tensor or array, got {type(masks).__name__}")
    if masks.dim() == 2:
        masks = masks[None]
    if masks.dim() != 3:
        raise ValueError(f"{name}: expected (K, H, W) masks, got shape {tuple(masks.shape)}")
    return masks.bool()


def rule_threshold(rule: Rule) -> float:
    """Coverage threshold of a membership rule.

    Args:
        rule: ``"any"``, ``"half"`` or a float in (0, 1].

    Returns:
        The threshold t; a patch is a member when coverage >= t. For ``"any"`` t = 0 and the test is
        coverage > 0 (see :func:`apply_rule`); it is returned as 0.0.

    Raises:
        ValueError: unknown rule name or a threshold outside (0, 1].
    """
    if isinstance(rule, str):
        if rule == "any":
            return 0.0
        if rule == "half":
            return 0.5
        raise ValueError(f"unknown patch membership rule {rule!r}; use 'any', 'half' or a float in (0, 1]")
    t = float(rule)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"patch membership threshold must be in (0, 1], got {rule!r}")
    return t


def apply_rule(coverage: torch.Tensor, rule: Rule = DEFAULT_RULE) -> torch.Tensor:
    """Membership from coverage fractions: ``coverage > 0`` for "any", else ``coverage >= t``.

    Args:
        coverage: (..., Hp, Wp) float in [0, 1], fraction of each patch's pixels covered.
        rule: see :func:`rule_threshold`.

    Returns:
        bool tensor of the same shape.
    """
    t = rule_threshold(rule)
    # small tolerance: coverage is a mean of 0/1 values, t = 0.5 must accept exactly half.
    return coverage > 0 if t == 0.0 else coverage >= t - 1e-6


def patch_coverage(masks, patch_size: int) -> torch.Tensor:
    """Fraction of each patch's pixels covered by each mask.

    Args:
        masks: (K, H, W) or (H, W) bool (tensor or numpy) at the network input resolution.
        patch_size: ViT patch size P; H and W must be multiples of P (frames are resized/padded so).

    Returns:
        (K, H/P, W/P) float32 in [0, 1] (average pooling with kernel = stride = P).

    Raises:
        ValueError: bad shape, or H/W not divisible by ``patch_size``.
    """
    masks = _as_bool_masks(masks, "patch_coverage")
    k, h, w = masks.shape
    if patch_size <= 0 or h % patch_size or w % patch_size:
        raise ValueError(f"mask size {h}x{w} is not a multiple of patch size {patch_size}; resize/pad the masks "
                         "exactly like the frames fed to the network")
    if k == 0:
        return torch.zeros(0, h // patch_size, w // patch_size)
    return F.avg_pool2d(masks.float()[:, None], patch_size, patch_size)[:, 0]


def patch_membership(masks, patch_size: int, rule: Rule = DEFAULT_RULE, flatten: bool = False) -> torch.Tensor:
    """Per-instance patch membership.

    Args:
        masks: (K, H, W) bool instance masks at the network input resolution.
        patch_size: ViT patch size P.
        rule: "any", "half" (default) or a float threshold; see the module docstring.
        flatten: return (K, N) in timm token order instead of (K, Hp, Wp).

    Returns:
        (K, Hp, Wp) or (K, N) bool.

    Raises:
        ValueError: see :func:`patch_coverage` and :func:`rule_threshold`.
    """
    member = apply_rule(patch_coverage(masks, patch_size), rule)
    return member.flatten(-2) if flatten else member


def foreground_patches(masks, patch_size: int, rule: Rule = DEFAULT_RULE, flatten: bool = False) -> torch.Tensor:
    """Patch-level foreground: the rule applied to the union of all instance masks.

    Args:
        masks: (K, H, W) bool instance masks (K may be 0: all background).
        patch_size: ViT patch size P.
        rule: membership rule.
        flatten: return (N,) instead of (Hp, Wp).

    Returns:
        (Hp, Wp) or (N,) bool.
    """
    masks = _as_bool_masks(masks, "foreground_patches")
    union = masks.any(0, keepdim=True) if masks.shape[0] else torch.zeros(1, *masks.shape[1:], dtype=torch.bool)
    fg = patch_membership(union, patch_size, rule)[0]
    return fg.flatten() if flatten else fg


def valid_patches(input_hw: tuple[int, int], image_hw: tuple[int, int] | None, patch_size: int,
                  flatten: bool = False) -> torch.Tensor:
    """Patches that contain real image pixels (not only padding).

    The image occupies the top-left ``image_hw`` of the padded ``input_hw`` canvas (mmdet / Mask2Former
    convention: pad bottom/right). A patch is valid when at least one of its pixels is real.

    Args:
        input_hw: (H, W) of the padded network input, multiples of ``patch_size``.
        image_hw: (h, w) of the resized, unpadded frame inside it; None = no padding.
        patch_size: ViT patch size P.
        flatten: return (N,) instead of (Hp, Wp).

    Returns:
        (Hp, Wp) or (N,) bool.

    Raises:
        ValueError: image larger than the input, or sizes not multiples of P.
    """
    h, w = input_hw
    if h % patch_size or w % patch_size:
        raise ValueError(f"input size {h}x{w} is not a multiple of patch size {patch_size}")
    ih, iw = (h, w) if image_hw is None else image_hw
    if not (0 < ih <= h and 0 < iw <= w):
        raise ValueError(f"image size {ih}x{iw} must be positive and fit in the input size {h}x{w}")
    hp, wp = h // patch_size, w // patch_size
    rows = torch.arange(hp) * patch_size < ih
    cols = torch.arange(wp) * patch_size < iw
    valid = rows[:, None] & cols[None, :]
    return valid.flatten() if flatten else valid


def instance_area_share(masks, image_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Share of the frame area covered by each instance (for the IoI size bins, supplementary §D).

    Args:
        masks: (K, H, W) bool at the network input resolution (padding, if any, is never covered).
        image_hw: (h, w) of the unpadded frame inside the input; None = the whole (H, W).

    Returns:
        (K,) float64: instance pixels / (h * w). Resizing keeps this share (up to resampling).
    """
    masks = _as_bool_masks(masks, "instance_area_share")
    h, w = masks.shape[1:] if image_hw is None else image_hw
    return masks.flatten(1).sum(1).double() / float(h * w)


@dataclass
class PatchLabels:
    """Patch-level ground truth of one frame, in timm token order.

    Attributes:
        instances: (K, N) bool, instance membership under ``rule``.
        foreground: (N,) bool, union membership under ``rule``.
        valid: (N,) bool, patches with real pixels (False on padding).
        area_share: (K,) float64, instance pixels / unpadded frame area.
        grid: (Hp, Wp), ``Hp * Wp == N``.
        rule: the membership rule used.
    """

    instances: torch.Tensor
    foreground: torch.Tensor
    valid: torch.Tensor
    area_share: torch.Tensor
    grid: tuple[int, int]
    rule: Rule = DEFAULT_RULE

    @property
    def num_instances(self) -> int:
        return int(self.instances.shape[0])

    @property
    def num_patches(self) -> int:
        return int(self.valid.shape[0])


def patch_labels(masks, patch_size: int, rule: Rule = DEFAULT_RULE,
                 image_hw: tuple[int, int] | None = None, source: str = "<masks>") -> PatchLabels:
    """All patch-level labels of one frame.

    Args:
        masks: (K, H, W) bool instance masks at the network input resolution (K may be 0).
        patch_size: ViT patch size P.
        rule: membership rule ("any", "half" = default, or float threshold).
        image_hw: (h, w) of the unpadded frame inside the (H, W) input; None = no padding.
        source: name of the frame (video id / frame index) used in error messages.

    Returns:
        :class:`PatchLabels`.

    Raises:
        ValueError: naming ``source`` when the masks have a bad shape, cover padding, or do not fit the patch size.
    """
    try:
        masks = _as_bool_masks(masks, "masks")
        h, w = masks.shape[1:]
        valid = valid_patches((h, w), image_hw, patch_size)
        if image_hw is not None and masks.shape[0]:
            ih, iw = image_hw
            if masks[:, ih:, :].any() or masks[:, :, iw:].any():
                raise ValueError(f"instance masks cover padding outside the image area {ih}x{iw}")
        instances = patch_membership(masks, patch_size, rule, flatten=True)
        fg = foreground_patches(masks, patch_size, rule, flatten=True)
        share = instance_area_share(masks, image_hw)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{source}: {exc}") from exc
    return PatchLabels(instances=instances, foreground=fg, valid=valid.flatten(), area_share=share,
                       grid=(h // patch_size, w // patch_size), rule=rule)
