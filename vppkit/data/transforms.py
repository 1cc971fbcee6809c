"""Clip transforms applied identically to every frame of a clip and to its instance masks.

Follows the official VPP / ROVIS pipeline (mmdet): resize to a long side keeping the aspect ratio
(``Resize(scale=(960, 960), keep_ratio=True)``), random horizontal flip shared by all frames of a
sample (mmtrack ``SeqRandomFlip(share_params=True)``), ImageNet normalisation, and padding of the
bottom / right edges to a multiple of a stride (32 in the official configs; the patch size here).
Images are resized bilinearly (antialiased), masks with nearest-exact; padded pixels are 0 in the
normalised image and False in the masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ["ClipTransform", "resized_size"]


def resized_size(height: int, width: int, long_side: int | None) -> tuple[int, int]:
    """(H, W) after scaling so that the long side equals ``long_side`` (rounded; None = unchanged)."""
    if long_side is None:
        return height, width
    scale = long_side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


@dataclass
class ClipTransform:
    """Resize -> flip -> normalise -> pad, identical for all frames and masks of one clip.

    Args:
        long_side: target long side in pixels (keep aspect ratio); None keeps the size.
        pad_to: pad height and width up to a multiple of this (e.g. the patch size 16); 1 = no padding.
        hflip_prob: probability of flipping the whole clip horizontally (training; 0 at inference).
        normalize: ImageNet mean / std normalisation (timm constants); otherwise values stay in 0..1.
        mean, std: per-channel normalisation constants (RGB, 0..1 scale).
    """

    long_side: int | None = None
    pad_to: int = 16
    hflip_prob: float = 0.0
    normalize: bool = True
    mean: tuple = field(default=IMAGENET_DEFAULT_MEAN)
    std: tuple = field(default=IMAGENET_DEFAULT_STD)

    def __call__(self, images: list[np.ndarray], masks: list[np.ndarray] | None = None,
                 rng: np.random.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor] | None, dict]:
        """Transform one clip.

        Args:
            images: T uint8 arrays (H, W, 3), all the same size.
            masks: T bool arrays (K, H, W) or None.
            rng: random generator for the flip; None = never flip.

        Returns:
            images (T, 3, H', W') float32; masks: T bool tensors (K, H', W') (or None); meta dict with
            ``orig_size`` (H, W), ``size`` (resized, before padding), ``padded_size``, ``flipped``.

        Raises:
            ValueError: frames of different sizes, or masks not matching the frames.
        """
        if not images:
            raise ValueError("ClipTransform needs at least one frame")
        h, w = images[0].shape[:2]
        if any(im.shape[:2] != (h, w) for im in images):
            raise ValueError(f"all frames of a clip must share one size; got {[im.shape[:2] for im in images]}")
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
        nh, nw = resized_size(h, w, self.long_side)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        flipped = bool(rng is not None and self.hflip_prob > 0 and rng.uniform() < self.hflip_prob)
        if flipped:
            x = x.flip(-1)
        if self.normalize:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
        stride = max(1, int(self.pad_to))
        ph, pw = -(-nh // stride) * stride, -(-nw // stride) * stride
        if (ph, pw) != (nh, nw):
            x = F.pad(x, (0, pw - nw, 0, ph - nh), value=0.0)
        out_masks = None
        if masks is not None:
            if len(masks) != len(images):
                raise ValueError(f"{len(masks)} mask stacks for {len(images)} frames")
            out_masks = []
            for m in masks:
                if m.shape[1:] != (h, w):
                    raise ValueError(f"mask stack of shape {m.shape} does not match frames of size {(h, w)}")
                mt = torch.from_numpy(np.ascontiguousarray(m)).bool()
                if (nh, nw) != (h, w) and mt.shape[0] > 0:
                    mt = F.interpolate(mt[None].float(), size=(nh, nw), mode="nearest-exact")[0] > 0.5
                elif (nh, nw) != (h, w):
                    mt = torch.zeros((0, nh, nw), dtype=torch.bool)
                if flipped:
                    mt = mt.flip(-1)
                if (ph, pw) != (nh, nw):
                    mt = F.pad(mt, (0, pw - nw, 0, ph - nh), value=False)
                out_masks.append(mt)
        meta = {"orig_size": (h, w), "size": (nh, nw), "padded_size": (ph, pw), "flipped": flipped}
        return x, out_masks, meta
