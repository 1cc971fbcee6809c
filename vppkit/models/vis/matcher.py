"""Hungarian matching of predicted queries to ground-truth instances (Mask2Former ``HungarianMatcher``).

Cost = w_class · (−p(class)) + w_mask · BCE + w_dice · Dice, weights 2 / 5 / 5 (Mask2Former, vpp-notes §2.1),
solved with :func:`scipy.optimize.linear_sum_assignment`. The mask costs are computed on the same set of pixels
for predictions and targets: all pixels of the prediction grid (``num_points=0``, the default at CPU sizes; GT
masks are area-downsampled to that grid) or ``num_points`` uniformly sampled points (Mask2Former's matcher
samples 12,544 random points; used at paper sizes).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def point_sample(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample (M, H, W) maps at normalised (P, 2) xy points in [0, 1] -> (M, P)."""
    grid = (coords * 2 - 1)[None, None].expand(masks.shape[0], -1, -1, -1)  # (M, 1, P, 2)
    return F.grid_sample(masks[:, None].float(), grid, align_corners=False)[:, 0, 0]


def mask_targets_on(pred_masks: torch.Tensor, gt_masks: torch.Tensor, num_points: int = 0,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Put predictions (Q, h, w) logits and GT (K, H, W) bool on a common pixel set.

    Returns:
        (pred (Q, P) logits, target (K, P) float in [0, 1]). ``num_points=0``: P = h·w, GT area-downsampled to
        (h, w); otherwise P = num_points uniform random points (``generator`` for reproducibility).
    """
    if num_points <= 0:
        h, w = pred_masks.shape[-2:]
        tgt = gt_masks.float()
        if tgt.shape[-2:] != (h, w):
            tgt = F.interpolate(tgt[None], size=(h, w), mode="area")[0] if tgt.shape[0] else tgt.new_zeros(0, h, w)
        return pred_masks.flatten(1), tgt.flatten(1)
    coords = torch.rand(num_points, 2, generator=generator, device=pred_masks.device if generator is None else "cpu")
    coords = coords.to(pred_masks.device)
    tgt = point_sample(gt_masks, coords) if gt_masks.shape[0] else gt_masks.new_zeros(0, num_points, dtype=torch.float)
    return point_sample(pred_masks, coords), tgt


def batch_dice_cost(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Pairwise Dice loss, pred (Q, P) logits, tgt (K, P) in [0, 1] -> (Q, K)."""
    p = pred.sigmoid()
    num = 2 * p @ tgt.T
    den = p.sum(-1)[:, None] + tgt.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def batch_bce_cost(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Pairwise mean sigmoid BCE, pred (Q, P) logits, tgt (K, P) in [0, 1] -> (Q, K)."""
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ tgt.T + neg @ (1 - tgt).T) / pred.shape[-1]


@torch.no_grad()
def hungarian_match(pred_logits: torch.Tensor, pred_masks: torch.Tensor, gt_labels: torch.Tensor,
                    gt_masks: torch.Tensor, w_class: float = 2.0, w_mask: float = 5.0, w_dice: float = 5.0,
                    num_points: int = 0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Match the Q queries of one image to its K ground-truth instances.

    Args:
        pred_logits: (Q, C+1) class logits.
        pred_masks: (Q, h, w) mask logits.
        gt_labels: (K,) long in [0, C).
        gt_masks: (K, H, W) bool.

    Returns:
        (query_idx (M,), gt_idx (M,)) long, M = min(Q, K), sorted by query index.

    Raises:
        ValueError: K > Q (more instances than queries) or a label outside [0, C).
    """
    q, k = pred_logits.shape[0], gt_labels.shape[0]
    if k == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    if k > q:
        raise ValueError(f"hungarian_match: {k} ground-truth instances but only {q} queries")
    if int(gt_labels.max()) >= pred_logits.shape[1] - 1 or int(gt_labels.min()) < 0:
        raise ValueError(f"hungarian_match: labels {gt_labels.tolist()} outside [0, {pred_logits.shape[1] - 1})")
    prob = pred_logits.float().softmax(-1)
    cost_class = -prob[:, gt_labels]
    pm, tm = mask_targets_on(pred_masks.float(), gt_masks, num_points, generator)
    cost = w_class * cost_class + w_mask * batch_bce_cost(pm, tm) + w_dice * batch_dice_cost(pm, tm)
    cost = torch.nan_to_num(cost.cpu(), nan=1e6, posinf=1e6, neginf=-1e6).numpy()
    rows, cols = linear_sum_assignment(cost)
    order = np.argsort(rows)
    return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long)
