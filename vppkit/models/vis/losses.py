"""Set criterion: class CE (no-object weight 0.1) + mask BCE + Dice after Hungarian matching (Mask2Former
``SetCriterion``; weights 2 / 5 / 5, vpp-notes §2.1), applied to the final read-out and to every auxiliary
read-out of the decoder (deep supervision).

Targets are per image: ``{"labels": (K,) long in [0, C), "masks": (K, H, W) bool}`` with only the instances that
are visible (valid) in that frame.

Two implementations with the same inputs and outputs; :func:`build_criterion` picks one from the ``loss`` section:

- :class:`SetCriterion` (written here): all stride-4 pixels (``num_points = 0``) or ``num_points`` uniform points
  shared by matching and loss;
- :class:`PointSampledCriterion`: ``transformers``' ``Mask2FormerLoss`` (Hungarian matcher on ``num_points`` uniform
  points, mask losses on ``num_points`` points per mask drawn by importance sampling: ``oversample_ratio`` x
  candidates, the ``importance_sample_ratio`` share with the most uncertain logits, the rest uniform); the
  paper's setting (vpp-notes §2.1: 12,544 points, 3.0, 0.75).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

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
        def match(i, t):
            return hungarian_match(logits[i], masks[i], t["labels"], t["masks"], self.w_class, self.w_mask,
                                   self.w_dice, self.num_points)
        return self._given(logits, masks, targets, match)

    def _given(self, logits: torch.Tensor, masks: torch.Tensor, targets: list[dict], indices) -> dict:
        """The weighted losses for a matching: ``indices`` per image (query_idx (M,), gt_idx (M,)), as a list or
        a function (image index, target) -> pair (called image by image); unmatched queries are trained towards
        "no object"."""
        b, q, _ = logits.shape
        target_classes = torch.full((b, q), self.num_classes, dtype=torch.long, device=logits.device)
        preds, tgts = [], []
        for i, t in enumerate(targets):
            qi, gi = indices(i, t) if callable(indices) else indices[i]
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
        return _sum_over_readouts(self._single, outputs, targets, type(self).__name__)

    def matched(self, outputs: dict, targets: list[dict], indices: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """As :meth:`forward` with a known matching instead of the Hungarian one (ROVIS track queries: each is
        assigned the instance it tracks, official ``matched_loss_single``), the same on every read-out.

        Args:
            indices: per image (query_idx (M,), gt_idx (M,)) long; the other queries' class target is no object.
        """
        return _sum_over_readouts(lambda lg, mk, tg: self._given(lg, mk, tg, indices), outputs, targets,
                                  type(self).__name__)


def _sum_over_readouts(single, outputs: dict, targets: list[dict], name: str) -> dict:
    """``single(logits, masks, targets)`` on the final and every auxiliary read-out, summed; ``loss`` = total."""
    if len(targets) != outputs["pred_logits"].shape[0]:
        raise ValueError(f"{name}: {len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]}")
    total = single(outputs["pred_logits"], outputs["pred_masks"], targets)
    for aux in outputs.get("aux_outputs", []):
        for k, v in single(aux["pred_logits"], aux["pred_masks"], targets).items():
            total[k] = total[k] + v
    total["loss"] = total["loss_ce"] + total["loss_mask"] + total["loss_dice"]
    return total


class PointSampledCriterion(nn.Module):
    """Mask2Former's point-sampled losses, computed by ``transformers``' ``Mask2FormerLoss`` (vpp-notes §2.1).

    Args:
        num_classes: C. w_class, w_mask, w_dice: loss and matching-cost weights (2 / 5 / 5).
        eos_coef: no-object class weight (0.1). num_points: points per mask (12,544).
        oversample_ratio: candidate points / num_points for importance sampling (3.0).
        importance_sample_ratio: share of the points taken where the prediction is most uncertain (0.75).

    Forward: as :class:`SetCriterion` (same input dicts, same output keys ``loss_ce``, ``loss_mask``, ``loss_dice``,
    ``loss``, weighted and summed over the read-outs). The GT masks are sampled at full resolution (normalised point
    coordinates), predictions at their stride-4 grid. Points are drawn from torch's global generator.
    """

    def __init__(self, num_classes: int, w_class: float = 2.0, w_mask: float = 5.0, w_dice: float = 5.0,
                 eos_coef: float = 0.1, num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75) -> None:
        super().__init__()
        if num_points <= 0:
            raise ValueError(f"PointSampledCriterion needs num_points > 0, got {num_points}")
        self.w_class, self.w_mask, self.w_dice = float(w_class), float(w_mask), float(w_dice)
        cfg = Mask2FormerConfig(num_labels=num_classes, no_object_weight=eos_coef, class_weight=w_class,
                                mask_weight=w_mask, dice_weight=w_dice, train_num_points=num_points,
                                oversample_ratio=oversample_ratio, importance_sample_ratio=importance_sample_ratio)
        self.loss = Mask2FormerLoss(cfg, weight_dict={"loss_cross_entropy": w_class, "loss_mask": w_mask,
                                                      "loss_dice": w_dice})

    def _single(self, logits: torch.Tensor, masks: torch.Tensor, targets: list[dict]) -> dict:
        labels = [t["labels"].to(logits.device).long() for t in targets]
        gts = [t["masks"].to(device=masks.device, dtype=masks.dtype) for t in targets]
        if sum(int(l.numel()) for l in labels) == 0:
            # no instance in the batch: only the no-object CE (transformers' point sampler needs >= 1 mask)
            tc = torch.full(logits.shape[:2], logits.shape[-1] - 1, dtype=torch.long, device=logits.device)
            ce = F.cross_entropy(logits.transpose(1, 2).float(), tc, self.loss.empty_weight)
            zero = masks.sum() * 0.0
            return {"loss_ce": self.w_class * ce, "loss_mask": zero, "loss_dice": zero}
        d = self.loss(masks_queries_logits=masks, class_queries_logits=logits, mask_labels=gts, class_labels=labels)
        return {"loss_ce": self.w_class * d["loss_cross_entropy"], "loss_mask": self.w_mask * d["loss_mask"],
                "loss_dice": self.w_dice * d["loss_dice"]}

    def _given(self, logits: torch.Tensor, masks: torch.Tensor, targets: list[dict],
               indices: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Losses for a given matching (``Mask2FormerLoss.loss_labels`` / ``loss_masks``; masks normalised by the
        number of matched queries, min 1)."""
        labels = [t["labels"].to(logits.device).long() for t in targets]
        idx = [(qi.to(logits.device).long(), gi.to(logits.device).long()) for qi, gi in indices]
        ce = self.loss.loss_labels(logits, labels, idx)["loss_cross_entropy"]
        n = sum(int(qi.numel()) for qi, _ in idx)
        if n == 0:
            zero = masks.sum() * 0.0
            return {"loss_ce": self.w_class * ce, "loss_mask": zero, "loss_dice": zero}
        gts = [t["masks"].to(device=masks.device, dtype=masks.dtype) for t in targets]
        d = self.loss.loss_masks(masks, gts, idx, n)
        return {"loss_ce": self.w_class * ce, "loss_mask": self.w_mask * d["loss_mask"],
                "loss_dice": self.w_dice * d["loss_dice"]}

    def forward(self, outputs: dict, targets: list[dict]) -> dict:
        return _sum_over_readouts(self._single, outputs, targets, type(self).__name__)

    def matched(self, outputs: dict, targets: list[dict], indices: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """As :meth:`SetCriterion.matched` (a known matching on every read-out)."""
        return _sum_over_readouts(lambda lg, mk, tg: self._given(lg, mk, tg, indices), outputs, targets,
                                  type(self).__name__)


def build_criterion(lcfg: dict, num_classes: int) -> nn.Module:
    """The set criterion the ``loss`` section asks for: :class:`PointSampledCriterion` (``transformers``) when
    ``num_points > 0`` and ``importance_sample_ratio > 0`` (the paper's setting), else :class:`SetCriterion` (all
    pixels, or uniform points)."""
    common = (num_classes, float(lcfg["w_class"]), float(lcfg["w_mask"]), float(lcfg["w_dice"]),
              float(lcfg["eos_coef"]), int(lcfg["num_points"]))
    if int(lcfg["num_points"]) > 0 and float(lcfg["importance_sample_ratio"]) > 0:
        return PointSampledCriterion(*common, oversample_ratio=float(lcfg["oversample_ratio"]),
                                     importance_sample_ratio=float(lcfg["importance_sample_ratio"]))
    return SetCriterion(*common)
