"""Set criterion: class CE (no-object weight 0.1) + mask BCE + Dice after Hungarian matching (Mask2Former
``SetCriterion``; weights 2 / 5 / 5, vpp-notes §2.1), applied to the final read-out and to every auxiliary
read-out of the decoder (deep supervision).

Targets are per image: ``{"labels": (K,) long in [0, C), "masks": (K, H, W) bool}`` with only the instances that
are visible (valid) in that frame.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vppkit.models.vis.matcher import hungarian_match, mask_targets_on


def dice_loss(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Sum over masks of 1 − Dice, pred (M, P) logits, tgt (M, P) in [0, 1] -> scalar."""
    p = pred.sigmoid()
    return (1 - (2 * (p * tgt).sum(-1) + 1) / (p.sum(-1) + tgt.sum(-1) + 1)).sum()


class SetCriterion(nn.Module):
    """Mask2Former losses for one batch of frames.

    Args:
        num_classes: C (the logits have C + 1 entries).
        w_class, w_mask, w_dice: loss (and matching cost) weights, default 2 / 5 / 5.
        eos_coef: weight of the no-object class in the CE, default 0.1.
        num_points: 0 = all pixels of the prediction grid; > 0 = uniformly sampled points.

    Forward:
        outputs: decoder dict (``pred_logits`` (B, Q, C+1), ``pred_masks`` (B, Q, h, w), ``aux_outputs``),
        targets: list of B dicts -> dict of weighted losses ``loss_ce``, ``loss_mask``, ``loss_dice`` (summed over
        read-outs) and ``loss`` (their sum). Mask losses are normalised by the number of GT instances (min 1).
    """

    def __init__(self, num_classes: int, w_class: float = 2.0, w_mask: float = 5.0, w_dice: float = 5.0,
                 eos_coef: float = 0.1, num_points: int = 0) -> None:
        super().__init__()
        self.num_classes, self.w_class, self.w_mask, self.w_dice = num_classes, w_class, w_mask, w_dice
        self.num_points = num_points
        weight = torch.ones(num_classes + 1)
        weight[-1] = eos_coef
        self.register_buffer("empty_weight", weight, persistent=False)

    def _single(self, logits: torch.Tensor, masks: torch.Tensor, targets: list[dict]) -> dict:
        b, q, _ = logits.shape
        target_classes = torch.full((b, q), self.num_classes, dtype=torch.long, device=logits.device)
        preds, tgts = [], []
        for i, t in enumerate(targets):
            qi, gi = hungarian_match(logits[i], masks[i], t["labels"], t["masks"], self.w_class, self.w_mask,
                                     self.w_dice, self.num_points)
            if qi.numel() == 0:
                continue
            qi, gi = qi.to(logits.device), gi.to(logits.device)
            target_classes[i, qi] = t["labels"].to(logits.device)[gi]
            pm, tm = mask_targets_on(masks[i][qi], t["masks"].to(logits.device)[gi], self.num_points)
            preds.append(pm)
            tgts.append(tm)
        loss_ce = F.cross_entropy(logits.transpose(1, 2).float(), target_classes, self.empty_weight)
        n = max(sum(p.shape[0] for p in preds), 1)
        if preds:
            pm, tm = torch.cat(preds), torch.cat(tgts)
            loss_mask = F.binary_cross_entropy_with_logits(pm, tm, reduction="none").mean(1).sum() / n
            loss_dice = dice_loss(pm, tm) / n
        else:
            loss_mask = loss_dice = masks.sum() * 0.0
        return {"loss_ce": self.w_class * loss_ce, "loss_mask": self.w_mask * loss_mask,
                "loss_dice": self.w_dice * loss_dice}

    def forward(self, outputs: dict, targets: list[dict]) -> dict:
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(f"SetCriterion: {len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]}")
        total = self._single(outputs["pred_logits"], outputs["pred_masks"], targets)
        for aux in outputs.get("aux_outputs", []):
            for k, v in self._single(aux["pred_logits"], aux["pred_masks"], targets).items():
                total[k] = total[k] + v
        total["loss"] = total["loss_ce"] + total["loss_mask"] + total["loss_dice"]
        return total
