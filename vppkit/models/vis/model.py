"""The frame-level VIS model: PrunableViT -> simple pyramid -> masked-attention query decoder.

Online video use (MinVIS style, docs/vis_model.md): the model runs frame by frame; the backbone's temporal state
(VPP Map-SM) and the tracker state are passed in and returned by the caller (:mod:`vppkit.engine.infer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from vppkit.models.vis.decoder import MaskDecoder
from vppkit.models.vis.pyramid import SimplePyramid

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class VISOutput:
    """Output of :class:`VISModel` for a batch of B frames.

    Attributes:
        pred_logits: (B, Q, C+1) class logits (last = no object).
        pred_masks: (B, Q, H/4, W/4) mask logits at stride 4 of the input.
        embeds: (B, Q, D) decoder query embeddings (tracking).
        aux_outputs: earlier decoder read-outs (deep supervision).
        backbone: the :class:`BackboneOutput` (keep record, next temporal state, sparsity ``aux_loss``).
    """

    pred_logits: torch.Tensor
    pred_masks: torch.Tensor
    embeds: torch.Tensor
    aux_outputs: list = field(default_factory=list)
    backbone: Any = None

    def decoder_dict(self) -> dict:
        """The dict :class:`vppkit.models.vis.losses.SetCriterion` consumes."""
        return {"pred_logits": self.pred_logits, "pred_masks": self.pred_masks, "aux_outputs": self.aux_outputs}


class VISModel(nn.Module):
    """PrunableViT + :class:`SimplePyramid` + :class:`MaskDecoder`.

    Args:
        backbone: a ``PrunableViT`` (vppkit.models.vit), forward(images, state, execution=...) -> BackboneOutput.
        num_classes: C object classes.
        dim: pyramid / decoder width D.
        num_queries: Q.
        dec_layers: decoder layers.
        heads: decoder attention heads.

    Forward:
        images (B, 3, H, W), float in [0, 1] or uint8 in [0, 255] (ImageNet normalisation is done here),
        ``state`` the backbone's temporal state of the previous frame (None at a video's first frame) ->
        :class:`VISOutput`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dim: int = 64, num_queries: int = 10,
                 dec_layers: int = 3, heads: int = 4) -> None:
        super().__init__()
        self.backbone = backbone
        embed_dim = getattr(backbone, "embed_dim", None) or backbone.vit.embed_dim
        self.num_classes = num_classes
        self.pyramid = SimplePyramid(embed_dim, dim)
        self.decoder = MaskDecoder(dim, num_classes, num_queries, dec_layers, heads)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] or float [0, 1] (B, 3, H, W) -> ImageNet-normalised float."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"VISModel: images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor, state: Any = None, execution: str | None = None,
                return_intermediates: bool = False) -> VISOutput:
        bb = self.backbone(self.normalize(images), state, execution=execution,
                           return_intermediates=return_intermediates)
        mask_features, levels = self.pyramid(bb.tokens, tuple(bb.grid))
        out = self.decoder(mask_features, levels)
        return VISOutput(out["pred_logits"], out["pred_masks"], out["embeds"], out["aux_outputs"], bb)

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_mult: float = 0.1) -> list[dict]:
        """AdamW parameter groups (vpp-notes §7.2): backbone lr × ``backbone_lr_mult`` except the pruner's
        modules (lr × 1, like VPP's selective/matching modules); no weight decay on norms, biases, queries,
        position / level embeddings and the CLS token."""
        groups: dict[tuple[float, float], list] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            in_backbone = name.startswith("backbone.") and ".pruner." not in name and not name.startswith(
                "backbone.pruner.")
            no_decay = (p.ndim <= 1 or name.endswith(".bias") or "query_" in name or "level_embed" in name
                        or "pos_embed" in name or "cls_token" in name or "reg_token" in name)
            key = (lr * (backbone_lr_mult if in_backbone else 1.0), 0.0 if no_decay else weight_decay)
            groups.setdefault(key, []).append(p)
        return [{"params": ps, "lr": k[0], "initial_lr": k[0], "weight_decay": k[1]} for k, ps in groups.items()]


def build_pruner(pcfg: dict | None, dim: int):
    """Pruner for token width ``dim`` from the config's ``pruning`` section, or None for dense.

    ``pcfg``: ``{"method": "none"|"dense"|"vpp"|"svit"|"dynamicvit", "schedule": "pkr55"|"pkr40", ...}``; every
    other key is passed to the pruner's constructor (method-specific).

    Raises:
        ValueError: unknown method.
    """
    if not pcfg or str(pcfg.get("method", "none")).lower() in ("none", "dense", "null"):
        return None
    method = str(pcfg["method"]).lower()
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in pcfg.items() if k != "method"}
    if method == "vpp":
        from vppkit.models.pruning.vpp import VPPPruner
        return VPPPruner(dim, **kwargs)
    if method == "svit":
        from vppkit.models.pruning.svit import SViTPruner
        return SViTPruner(dim, **kwargs)
    if method == "dynamicvit":
        from vppkit.models.pruning.dynamicvit import DynamicViTPruner
        return DynamicViTPruner(dim, **kwargs)
    raise ValueError(f"unknown pruning.method {pcfg['method']!r} (known: none, vpp, svit, dynamicvit)")


def build_vis_model(mcfg: dict, num_classes: int, pcfg: dict | None = None) -> VISModel:
    """Build the VIS model from the config's ``model`` (and ``pruning``) sections.

    ``mcfg`` keys: ``arch`` (backbone name for ``build_backbone``), ``img_size`` ([H, W] or int), ``dim``,
    ``num_queries``, ``dec_layers``, ``heads``, optional ``backbone_checkpoint`` (a local timm state dict) and
    ``backbone_kwargs`` (forwarded to timm, e.g. ``drop_path_rate``). The pruner gets the backbone width.
    """
    from vppkit.models.vit import PrunableViT, build_backbone

    img_size = mcfg["img_size"]
    img_size = tuple(img_size) if isinstance(img_size, (list, tuple)) else (int(img_size), int(img_size))
    dense = build_backbone(mcfg["arch"], img_size=img_size, checkpoint=mcfg.get("backbone_checkpoint"),
                           **(mcfg.get("backbone_kwargs") or {}))
    pruner = build_pruner(pcfg, dense.embed_dim)
    backbone = PrunableViT(dense.vit, pruner) if pruner is not None else dense
    return VISModel(backbone, num_classes, dim=int(mcfg.get("dim", 64)), num_queries=int(mcfg.get("num_queries", 10)),
                    dec_layers=int(mcfg.get("dec_layers", 3)), heads=int(mcfg.get("heads", 4)))
