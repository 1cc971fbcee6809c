"""Official checkpoints <-> vppkit's adapter-host VIS model: tensor names, layouts and shapes (docs/pretrained.md).

Which official files (read from the official code; no file could be downloaded here, see docs/pretrained.md):

- the COCO-2017 Mask2Former + ViT-Adapter-T/S checkpoints the paper starts from (``iter_368750.pth``, OSF): an
  mmdet ``Mask2Former`` detector, keys ``backbone.*`` (PatGlan/Video-Patch-Pruning ``custom_mmdet/models/backbones/
  vit_adapter.py`` ``ViTAdapter`` on ``vit.py`` ``TIMMVisionTransformer``, the same names as czczup/ViT-Adapter
  ``detection/mmdet_custom/models/backbones/vit_adapter.py``) and ``panoptic_head.*`` (mmdet ``Mask2FormerHead``);
- the released ROVIS (dense) and VPP (sparse) YouTube-VIS 2021 checkpoints: the mmtrack ``ROVIS`` wrapper, the same
  detector under ``detector.``. The VPP backbone (``selective_vit_adapter.py`` ``SelectiveViTAdapter``) stores its
  blocks as ``blocks.N.TransformerEncoderLayer.*`` (torch ``nn.TransformerEncoderLayer`` names, what the official
  ``ChangeKeyNameHook`` renames the timm keys to), the three SMs as ``backbone.selective_modules.{0,1,2}.*``
  (``selective_module.py``) and Map-SM as ``backbone.interactions.0.matching_module.*``
  (``map_selective_module.py``).

Layouts (:class:`OfficialLayout`, found by :func:`detect_layout`):

- ``blocks``: ``"timm"`` (``blocks.N.attn.qkv``, ``mlp.fc1``; optional layer scale ``gamma1/2``) or
  ``"encoder_layer"`` (``blocks.N.TransformerEncoderLayer.self_attn.in_proj_weight``, ``linear1``). Both store q, k, v
  fused in that order, as timm does: copied as they are.
- ``head``: ``"mmcv"`` (mmdet 2.x and 3.0.0rc<=5, the official ``requirements.txt`` pins mmdet 3.0.0rc5: mmcv
  ``BaseTransformerLayer`` names ``attentions.{0,1}``, ``ffns.0.layers.{0.0,1}``, ``norms.{0,1,2}``) or ``"mmdet3"``
  (mmdet >= 3.0.0rc6: ``cross_attn``, ``self_attn``, ``ffn.layers``, ``norms``).

Layout differences resolved here (the rest is a rename):

- the decoder self-attention: mmcv/torch ``in_proj_weight`` (3D, D) (q, k, v stacked) <-> transformers ``q_proj``,
  ``k_proj``, ``v_proj`` (D, D) each (split / concatenated along dim 0); the cross-attention is a torch
  ``nn.MultiheadAttention`` on both sides;
- ``backbone.pos_embed``: official (1, 1 + g*g, C) at the pretraining grid g = 224/16 = 14 with an unused CLS slot
  (the official forward resamples ``pos_embed[:, 1:]`` bicubic, ``align_corners=False``, to the input's grid) <->
  vppkit's table at ``model.img_size``'s grid: resampled the same way (:func:`resample_pos_grid`); the inverse
  resamples back to :attr:`OfficialLayout.pos_grid` (exact only when the grids are equal);
- the extractor ConvFFN's depth-wise conv: official ``ffn.dwconv.dwconv`` (a wrapper module) <-> ``ffn.dwconv``;
- mmcv ``MultiScaleDeformableAttention`` (adapter injector / extractor, pixel decoder) and transformers' deformable
  attention share ``sampling_offsets`` / ``attention_weights`` / ``value_proj`` / ``output_proj`` and their
  (heads, levels, points, 2) output order: copied as they are.

Mapped nowhere (listed, never dropped silently): official tensors with no vppkit counterpart are returned in
:attr:`OfficialMap.unexpected` with a reason (:data:`NO_COUNTERPART`), vppkit tensors the file cannot fill in
:attr:`OfficialMap.missing` (:data:`VPPKIT_ONLY`). Shapes that differ raise :class:`OfficialShapeError`.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

#: ``key=value`` overrides that make vppkit's model the official architecture (applied before the user's own):
#: the ViT-Adapter + Mask2Former host, no CLS token (the official ViT-Adapter has none), no pretrained backbone
#: file (the weights come from the official checkpoint). ``global_pool=avg`` is what timm needs without a CLS token.
MODEL_OVERRIDES: tuple[str, ...] = (
    "model.host=adapter",
    "model.backbone_kwargs.class_token=false",
    "model.backbone_kwargs.global_pool=avg",
    "model.pretrained=null",
    "model.backbone_checkpoint=null",
)

#: Official pos_embed grid: ``pretrain_size`` 224 / patch 16 (``ViTAdapter._get_pos_embed``).
OFFICIAL_POS_GRID = (14, 14)

BLOCK_LAYOUTS = ("timm", "encoder_layer")
HEAD_LAYOUTS = ("mmcv", "mmdet3")

#: (regex on the official key without its wrapper prefix, reason): official tensors vppkit has no counterpart for.
NO_COUNTERPART: tuple[tuple[str, str], ...] = (
    (r"^backbone\.interactions\.\d+\.matching_module\.(init_mlp|norm_input)\.",
     "Map-SM: defined in the official Mapping_Selective_Module but never used in its forward"),
    (r"^backbone\.interactions\.\d+\.matching_module\.dist_scale$",
     "Map-SM: constant Phi_dist table of the older Downsize_Attention_with_selector; vppkit computes Phi_dist "
     "on the fly"),
    (r"^backbone\.cls_token$", "CLS token: the vppkit model was built without one (the official adapter has none)"),
    (r"^backbone\.(norm|fc_norm|head)\.", "ViT classifier-side norm / head: unused by the adapter host"),
    (r"^panoptic_head\.decoder_input_projs\.",
     "decoder input projection (enforce_decoder_input_project): transformers' Mask2FormerTransformerModule has "
     "none when the pixel-decoder and decoder widths are equal"),
)

#: (regex on the vppkit key, reason): vppkit tensors the official checkpoints have no counterpart for.
VPPKIT_ONLY: tuple[tuple[str, str], ...] = (
    (r"^backbone\.vit\.cls_token$",
     "the official ViT-Adapter has no CLS token: build with model.backbone_kwargs.class_token=false, or the "
     "token (kept at its init) changes every block's attention"),
    (r"^backbone\.vit\.reg_token$", "the official ViT-Adapter has no register tokens"),
    (r"^backbone\.vit\.(norm|fc_norm)\.",
     "the official backbone has no final norm; unused by the adapter host (kept at its init)"),
    (r"^backbone\.vit\.blocks\.\d+\.ls[12]\.", "layer scale: the official VPP blocks have none"),
    (r"^backbone\.pruner\.", "pruner module with no official counterpart"),
)


class OfficialCheckpointError(ValueError):
    """The file is not a readable official checkpoint (names the file and what is wrong)."""


class OfficialShapeError(ValueError):
    """Official tensors whose shapes do not fit the vppkit model (the message names every key and both shapes)."""


@dataclass(frozen=True)
class OfficialLayout:
    """Naming layout of an official state dict.

    Attributes:
        prefix: key prefix of the detector: ``"detector."`` (mmtrack ROVIS / VPP) or ``""`` (mmdet COCO Mask2Former).
        blocks: ``"timm"`` or ``"encoder_layer"`` (module docstring).
        head: ``"mmcv"`` or ``"mmdet3"`` (module docstring).
        matching_interaction: i of ``backbone.interactions.<i>.matching_module`` (Map-SM; 0 in the official configs,
            ``matching_module_idx=1`` lies in the range [0, 2]).
        pos_grid: (g_h, g_w) grid of the official ``pos_embed`` table (14 x 14; square in the official code).
    """

    prefix: str = "detector."
    blocks: str = "timm"
    head: str = "mmcv"
    matching_interaction: int = 0
    pos_grid: tuple[int, int] = OFFICIAL_POS_GRID

    def __post_init__(self) -> None:
        if self.blocks not in BLOCK_LAYOUTS:
            raise ValueError(f"OfficialLayout.blocks must be one of {BLOCK_LAYOUTS}, got {self.blocks!r}")
        if self.head not in HEAD_LAYOUTS:
            raise ValueError(f"OfficialLayout.head must be one of {HEAD_LAYOUTS}, got {self.head!r}")


@dataclass(frozen=True)
class Rule:
    """How one vppkit tensor comes from one official tensor.

    Attributes:
        official: the official key (with the layout's prefix).
        op: ``"copy"``; ``"qkv"`` (``index``-th third of dim 0 of a fused in-projection); ``"pos_embed"``
            (:func:`resample_pos_grid`).
        index: q / k / v = 0 / 1 / 2 for ``"qkv"``.
    """

    official: str
    op: str = "copy"
    index: int = 0


@dataclass
class OfficialMap:
    """Result of :func:`map_to_vppkit`.

    Attributes:
        state_dict: vppkit key -> tensor, for every mapped key (load with ``strict=False``; the rest is ``missing``).
        mapped: (official key, vppkit key, official shape, vppkit shape, op) per mapped vppkit tensor.
        missing: (vppkit key, shape, reason) for vppkit tensors the file does not fill.
        unexpected: (official key, shape, reason) for official tensors no vppkit tensor comes from.
        layout: the layout used.
    """

    state_dict: dict
    mapped: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    layout: OfficialLayout = field(default_factory=OfficialLayout)

    def summary(self) -> dict:
        """JSON-able record: counts, the layout and every row (shapes as lists)."""
        return {
            "layout": {**asdict(self.layout), "pos_grid": list(self.layout.pos_grid)},
            "counts": {"mapped": len(self.mapped), "missing": len(self.missing),
                       "unexpected": len(self.unexpected)},
            "mapped": [{"official": o, "vppkit": v, "official_shape": list(so), "vppkit_shape": list(sv), "op": op}
                       for o, v, so, sv, op in self.mapped],
            "missing": [{"vppkit": k, "shape": list(s), "reason": r} for k, s, r in self.missing],
            "unexpected": [{"official": k, "shape": list(s), "reason": r} for k, s, r in self.unexpected],
        }


# ------------------------------------------------------------------------------------------------- reading files


def load_official_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read an official checkpoint on the CPU and unwrap its state dict.

    ``{'state_dict': ...}`` (mmcv / mmengine, with ``meta``, ``optimizer``, ``message_hub``...), ``{'model': ...}``
    and a bare state dict are accepted; a ``module.`` prefix on every key (DDP) is removed. The file is first read
    with ``torch.load(weights_only=True)``; mmengine checkpoints hold non-tensor objects (``message_hub``), so on
    failure it is read again with ``weights_only=False`` (which runs pickle code: only convert files you trust).

    Returns:
        (official key -> tensor, notes): the notes say how the file was read and what was left out.

    Raises:
        OfficialCheckpointError: the file is missing, unreadable or holds no tensors (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"official checkpoint {path} not found")
    notes: list[str] = []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err2:  # noqa: BLE001 - any unpickling failure means: not a checkpoint we can read
            raise OfficialCheckpointError(f"{path}: cannot read it with torch.load: {err2}") from err2
        notes.append(f"read with weights_only=False (non-tensor objects in the file: {str(err).splitlines()[0]})")
    sd = obj
    for key in ("state_dict", "model"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            other = sorted(k for k in sd if k != key)
            notes.append(f"state dict taken from [{key!r}]" + (f"; also in the file: {other}" if other else ""))
            sd = sd[key]
            break
    if not isinstance(sd, Mapping):
        raise OfficialCheckpointError(f"{path}: not a state dict (a {type(sd).__name__})")
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    skipped = sorted(str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if skipped:
        notes.append(f"non-tensor entries left out: {skipped[:10]}{' ...' if len(skipped) > 10 else ''}")
    if not tensors:
        raise OfficialCheckpointError(f"{path}: no tensors in its state dict (keys {list(sd)[:10]})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        notes.append("'module.' prefix removed")
    return tensors, notes


def detect_layout(keys: Iterable[str]) -> OfficialLayout:
    """The :class:`OfficialLayout` of an official state dict, from its key names (and the pos_embed grid is left at
    its default: :func:`map_to_vppkit` reads the table's own size)."""
    keys = list(keys)
    prefix = "detector." if any(k.startswith("detector.") for k in keys) else ""
    blocks = "encoder_layer" if any(".TransformerEncoderLayer." in k for k in keys) else "timm"
    mmdet3 = re.compile(r"panoptic_head\.(transformer_decoder\.layers\.\d+\.(cross_attn|self_attn)\.|"
                        r"pixel_decoder\.encoder\.layers\.\d+\.self_attn\.)")
    head = "mmdet3" if any(mmdet3.search(k) for k in keys) else "mmcv"
    mi = 0
    for k in keys:
        m = re.search(r"backbone\.interactions\.(\d+)\.matching_module\.", k)
        if m:
            mi = int(m.group(1))
            break
    return OfficialLayout(prefix=prefix, blocks=blocks, head=head, matching_interaction=mi)


# ------------------------------------------------------------------------------------------------- the name rules


def _swap(rest: str, pairs: Sequence[tuple[str, str | None]], keep: bool = True) -> str | None:
    """``rest`` with its first matching prefix replaced (None when that pair maps to nothing); when no prefix
    matches: ``rest`` unchanged (``keep``) or None."""
    for a, b in pairs:
        if rest.startswith(a):
            return None if b is None else b + rest[len(a):]
    return rest if keep else None


def _block_rule(rest: str, layout: OfficialLayout) -> str | None:
    """Suffix after ``blocks.N.`` (timm names) -> the official suffix."""
    if layout.blocks == "timm":
        return _swap(rest, [("ls1.gamma", "gamma1"), ("ls2.gamma", "gamma2")])
    t = "TransformerEncoderLayer."
    return _swap(rest, [("attn.qkv.weight", t + "self_attn.in_proj_weight"),
                        ("attn.qkv.bias", t + "self_attn.in_proj_bias"),
                        ("attn.proj.", t + "self_attn.out_proj."), ("mlp.fc1.", t + "linear1."),
                        ("mlp.fc2.", t + "linear2."), ("norm1.", t + "norm1."), ("norm2.", t + "norm2."),
                        ("ls1.", None), ("ls2.", None)], keep=False)


def _decoder_layer_rule(rest: str, layout: OfficialLayout) -> Rule | None:
    """Suffix after ``head.transformer.decoder.layers.J.`` -> the official rule (prefix added by the caller)."""
    cross, self_, ffn = (("attentions.0.attn.", "attentions.1.attn.", "ffns.0.layers.") if layout.head == "mmcv"
                         else ("cross_attn.attn.", "self_attn.attn.", "ffn.layers."))
    m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
    if m:
        part = "in_proj_weight" if m.group(2) == "weight" else "in_proj_bias"
        return Rule(self_ + part, "qkv", "qkv".index(m.group(1)))
    out = _swap(rest, [("cross_attn.", cross), ("self_attn.out_proj.", self_ + "out_proj."),
                       ("cross_attn_layer_norm.", "norms.0."), ("self_attn_layer_norm.", "norms.1."),
                       ("final_layer_norm.", "norms.2."), ("fc1.", ffn + "0.0."), ("fc2.", ffn + "1.")],
                keep=False)
    return None if out is None else Rule(out)


def _encoder_layer_rule(rest: str, layout: OfficialLayout) -> str | None:
    """Suffix after ``head.pixel_decoder.encoder.layers.J.`` -> the official suffix."""
    attn, ffn = ("attentions.0.", "ffns.0.layers.") if layout.head == "mmcv" else ("self_attn.", "ffn.layers.")
    return _swap(rest, [("self_attn.", attn), ("self_attn_layer_norm.", "norms.0."),
                        ("final_layer_norm.", "norms.1."), ("fc1.", ffn + "0.0."), ("fc2.", ffn + "1.")],
                 keep=False)


def official_rule(vkey: str, layout: OfficialLayout) -> Rule | str:
    """The :class:`Rule` giving vppkit tensor ``vkey``, or the reason (a str) why no official tensor gives it.

    Covers the adapter host (``backbone.vit.*``, ``backbone.pruner.{map_sm,sms}.*`` of VPP, ``adapter.*``,
    ``head.*``); see the module docstring for the layouts.
    """
    p = layout.prefix
    if re.fullmatch(r"backbone\.vit\.(cls_token|reg_token|(norm|fc_norm)\..+)", vkey):
        return _reason(vkey)
    if vkey == "backbone.vit.pos_embed":
        return Rule(p + "backbone.pos_embed", "pos_embed")
    if vkey.startswith("backbone.vit.patch_embed."):
        return Rule(p + "backbone." + vkey[len("backbone.vit."):])
    m = re.fullmatch(r"backbone\.vit\.blocks\.(\d+)\.(.+)", vkey)
    if m:
        rest = _block_rule(m.group(2), layout)
        return _reason(vkey) if rest is None else Rule(f"{p}backbone.blocks.{m.group(1)}.{rest}")
    m = re.fullmatch(r"backbone\.pruner\.map_sm\.(norm|mlp)\.(.+)", vkey)
    if m:
        mod = "norm_selector" if m.group(1) == "norm" else "selector"
        return Rule(f"{p}backbone.interactions.{layout.matching_interaction}.matching_module.{mod}.{m.group(2)}")
    m = re.fullmatch(r"backbone\.pruner\.sms\.(\d+)\.(norm\..+|mlp\..+)", vkey)
    if m:
        return Rule(f"{p}backbone.selective_modules.{m.group(1)}.{m.group(2)}")
    if vkey.startswith("adapter."):
        return Rule(p + "backbone." + vkey[len("adapter."):].replace(".ffn.dwconv.", ".ffn.dwconv.dwconv."))
    if vkey.startswith("head."):
        rule = _head_rule(vkey[len("head."):], layout)
        if rule is not None:
            return replace(rule, official=f"{p}panoptic_head.{rule.official}")
    return _reason(vkey)


def _head_rule(rest: str, layout: OfficialLayout) -> Rule | None:
    pd = "pixel_decoder."
    if rest == pd + "level_embed":
        return Rule(pd + "level_encoding.weight")
    m = re.fullmatch(r"pixel_decoder\.input_projections\.(\d+)\.([01])\.(weight|bias)", rest)
    if m:
        return Rule(f"{pd}input_convs.{m.group(1)}.{'conv' if m.group(2) == '0' else 'gn'}.{m.group(3)}")
    m = re.fullmatch(r"pixel_decoder\.(adapter|layer)_(\d+)\.([01])\.(weight|bias)", rest)
    if m:
        convs = "lateral_convs" if m.group(1) == "adapter" else "output_convs"
        return Rule(f"{pd}{convs}.{int(m.group(2)) - 1}.{'conv' if m.group(3) == '0' else 'gn'}.{m.group(4)}")
    if rest.startswith(pd + "mask_projection."):
        return Rule(pd + "mask_feature." + rest[len(pd + "mask_projection."):])
    m = re.fullmatch(r"pixel_decoder\.encoder\.layers\.(\d+)\.(.+)", rest)
    if m:
        out = _encoder_layer_rule(m.group(2), layout)
        return None if out is None else Rule(f"{pd}encoder.layers.{m.group(1)}.{out}")
    simple = {"transformer.queries_embedder.weight": "query_embed.weight",
              "transformer.queries_features.weight": "query_feat.weight",
              "transformer.level_embed.weight": "level_embed.weight",
              "class_embed.weight": "cls_embed.weight", "class_embed.bias": "cls_embed.bias",
              "transformer.decoder.layernorm.weight": "transformer_decoder.post_norm.weight",
              "transformer.decoder.layernorm.bias": "transformer_decoder.post_norm.bias"}
    if rest in simple:
        return Rule(simple[rest])
    m = re.fullmatch(r"transformer\.decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.(weight|bias)", rest)
    if m:
        return Rule(f"mask_embed.{2 * int(m.group(1))}.{m.group(2)}")
    m = re.fullmatch(r"transformer\.decoder\.layers\.(\d+)\.(.+)", rest)
    if m:
        rule = _decoder_layer_rule(m.group(2), layout)
        return None if rule is None else replace(rule, official=f"transformer_decoder.layers.{m.group(1)}."
                                                                  + rule.official)
    return None


def _reason(vkey: str) -> str:
    for pattern, reason in VPPKIT_ONLY:
        if re.search(pattern, vkey):
            return reason
    return "no official counterpart (no rule for this vppkit tensor)"


def no_counterpart_reason(okey: str, layout: OfficialLayout) -> str:
    """Why official tensor ``okey`` gives no vppkit tensor (:data:`NO_COUNTERPART`, else a generic reason)."""
    key = okey[len(layout.prefix):] if layout.prefix and okey.startswith(layout.prefix) else okey
    for pattern, reason in NO_COUNTERPART:
        if re.search(pattern, key):
            return reason
    return "no vppkit counterpart (no rule maps this official tensor)"


# ------------------------------------------------------------------------------------------------- pos_embed


def _pos_split(n: int) -> tuple[int, int]:
    """(prefix slots, grid side) of a square official table with ``n`` rows (1 + g*g or g*g)."""
    for prefix in (1, 0):
        side = int(round((n - prefix) ** 0.5))
        if side > 0 and side * side == n - prefix:
            return prefix, side
    raise ValueError(f"pos_embed with {n} positions is neither 1 + g*g nor g*g")


def resample_pos_grid(table: torch.Tensor, grid: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Resample a patch position table as the official ``ViTAdapter._get_pos_embed`` does:
    ``F.interpolate(mode="bicubic", align_corners=False)``, no antialias.

    Args:
        table: (1, h*w, C), rows in row-major order of ``grid`` = (h, w).
        size: target (H, W).

    Returns:
        (1, H*W, C) in ``table``'s dtype; ``table`` itself when the grids are equal.
    """
    (h, w), (hh, ww) = tuple(int(g) for g in grid), tuple(int(s) for s in size)
    if (h, w) == (hh, ww):
        return table
    c = table.shape[-1]
    x = table.reshape(1, h, w, c).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(hh, ww), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, hh * ww, c).to(table.dtype)


def _pos_to_vppkit(t: torch.Tensor, vshape: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    if t.dim() != 3 or t.shape[0] != 1:
        raise ValueError("not a (1, N, C) table")
    prefix, side = _pos_split(t.shape[1])
    hh, ww = (int(g) for g in grid)
    vprefix = int(vshape[1]) - hh * ww
    if len(vshape) != 3 or vprefix not in (0, 1) or int(vshape[2]) != t.shape[2]:
        raise ValueError(f"cannot give a {tuple(vshape)} table on a {hh}x{ww} grid")
    patches = resample_pos_grid(t[:, prefix:], (side, side), (hh, ww))
    if vprefix:
        cls = t[:, :1] if prefix else t.new_zeros(1, 1, t.shape[2])
        patches = torch.cat([cls, patches], 1)
    return patches


def _pos_to_official(t: torch.Tensor, grid: Sequence[int], pos_grid: Sequence[int]) -> torch.Tensor:
    hh, ww = (int(g) for g in grid)
    n = hh * ww
    if t.dim() != 3 or t.shape[1] - n not in (0, 1):
        raise ValueError(f"pos_embed {tuple(t.shape)} does not fit a {hh}x{ww} grid")
    cls = t[:, :1] if t.shape[1] > n else t.new_zeros(1, 1, t.shape[2])
    return torch.cat([cls, resample_pos_grid(t[:, t.shape[1] - n:], (hh, ww), pos_grid)], 1)


# ------------------------------------------------------------------------------------------------- the maps


def map_to_vppkit(official: Mapping[str, torch.Tensor], target_shapes: Mapping[str, Sequence[int]],
                  grid: Sequence[int], layout: OfficialLayout | None = None,
                  source: str = "<state dict>") -> OfficialMap:
    """Map an official state dict onto vppkit's adapter-host model.

    Args:
        official: official key -> tensor (:func:`load_official_state_dict`).
        target_shapes: vppkit key -> shape, e.g. ``{k: v.shape for k, v in model.state_dict().items()}``.
        grid: vppkit's patch grid (H_p, W_p) (``model.backbone.vit.patch_embed.grid_size``): the pos_embed target.
        layout: the naming layout; None: :func:`detect_layout` of ``official``.
        source: name of the file, for messages.

    Returns:
        :class:`OfficialMap` (tensors for the mapped vppkit keys, the mapped / missing / unexpected lists).

    Raises:
        OfficialShapeError: official tensors whose shapes do not fit their vppkit tensors; the message counts them
            and lists (the first 40 of) them, each key with both shapes.
    """
    layout = layout or detect_layout(official)
    if layout.prefix + "backbone.pos_embed" in official:
        _, side = _pos_split(official[layout.prefix + "backbone.pos_embed"].shape[1])
        layout = replace(layout, pos_grid=(side, side))
    res = OfficialMap(state_dict={}, layout=layout)
    used: set[str] = set()
    errors: list[str] = []
    has_vpp = any(".selective_modules." in k or ".matching_module." in k for k in official)
    for vkey, vshape in target_shapes.items():
        vshape = tuple(int(s) for s in vshape)
        rule = official_rule(vkey, layout)
        if isinstance(rule, str):
            res.missing.append((vkey, vshape, rule))
            continue
        if rule.official not in official:
            why = (f"dense checkpoint: no {rule.official} (the pruner's modules start fresh, as in the official "
                   "sparse stage)" if vkey.startswith("backbone.pruner.") and not has_vpp
                   else f"{rule.official} is not in the file")
            res.missing.append((vkey, vshape, why))
            continue
        t = official[rule.official]
        used.add(rule.official)
        try:
            v = _to_vppkit(rule, t, vshape, grid)
        except ValueError as err:
            errors.append(f"{rule.official} {tuple(t.shape)} -> {vkey} {vshape}: {err}")
            continue
        if tuple(v.shape) != vshape:
            errors.append(f"{rule.official} {tuple(t.shape)} -> {vkey} {vshape}"
                          + (f" (after {rule.op}: {tuple(v.shape)})" if rule.op != "copy" else ""))
            continue
        res.state_dict[vkey] = v
        res.mapped.append((rule.official, vkey, tuple(t.shape), vshape, rule.op))
    if errors:
        more = f"\n  ... and {len(errors) - 40} more" if len(errors) > 40 else ""
        raise OfficialShapeError(f"{source}: {len(errors)} official tensor(s) do not fit the vppkit model "
                                 "(official key shape -> vppkit key shape):\n  " + "\n  ".join(errors[:40]) + more)
    res.unexpected = [(k, tuple(t.shape), no_counterpart_reason(k, layout))
                      for k, t in official.items() if k not in used]
    return res


def _to_vppkit(rule: Rule, t: torch.Tensor, vshape: tuple[int, ...], grid: Sequence[int]) -> torch.Tensor:
    if rule.op == "copy":
        return t
    if rule.op == "qkv":
        if t.shape[0] % 3:
            raise ValueError(f"a fused q/k/v projection needs a first dim divisible by 3, got {tuple(t.shape)}")
        return t.chunk(3, dim=0)[rule.index]
    if rule.op == "pos_embed":
        return _pos_to_vppkit(t, vshape, grid)
    raise ValueError(f"unknown op {rule.op!r}")


def map_to_official(state_dict: Mapping[str, torch.Tensor], grid: Sequence[int],
                    layout: OfficialLayout | None = None) -> tuple[dict[str, torch.Tensor], list]:
    """The inverse map: a vppkit adapter-host state dict -> official names and layouts (export).

    Args:
        state_dict: vppkit key -> tensor (``model.state_dict()``).
        grid: the model's patch grid (H_p, W_p).
        layout: the official layout to write (default :class:`OfficialLayout`: ROVIS names, timm blocks, mmcv
            head, pos_embed at 14 x 14; ``blocks="encoder_layer"`` for a VPP file).

    Returns:
        (official key -> tensor, skipped): ``skipped`` lists (vppkit key, shape, reason) of tensors with no
        official counterpart. ``pos_embed`` gets a zero CLS slot when the model has none, and is resampled to
        ``layout.pos_grid`` (exact round trip only when that equals ``grid``).

    Raises:
        ValueError: a fused in-projection whose q, k or v part is absent from ``state_dict``.
    """
    layout = layout or OfficialLayout()
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    skipped = []
    for vkey, t in state_dict.items():
        rule = official_rule(vkey, layout)
        if isinstance(rule, str):
            skipped.append((vkey, tuple(t.shape), rule))
        elif rule.op == "copy":
            out[rule.official] = t
        elif rule.op == "qkv":
            parts.setdefault(rule.official, {})[rule.index] = t
        else:
            out[rule.official] = _pos_to_official(t, grid, layout.pos_grid)
    for okey, pieces in parts.items():
        if sorted(pieces) != [0, 1, 2]:
            raise ValueError(f"map_to_official: {okey} needs q, k and v; got parts {sorted(pieces)}")
        out[okey] = torch.cat([pieces[i] for i in range(3)], 0)
    return out, skipped


# ------------------------------------------------------------------------------------------------- the report


def format_report(res: OfficialMap, mapped_rows: bool = True) -> str:
    """Plain-text table: the layout, counts, then the mapped rows (official -> vppkit, shape; the op when it is not a
    plain copy), the missing vppkit keys and the unexpected official keys, each with shape and reason."""
    lay = res.layout
    lines = [f"layout: prefix={lay.prefix!r} blocks={lay.blocks} head={lay.head} "
             f"matching_interaction={lay.matching_interaction} pos_grid={lay.pos_grid[0]}x{lay.pos_grid[1]}",
             f"mapped {len(res.mapped)}  missing (vppkit) {len(res.missing)}  unexpected (official) "
             f"{len(res.unexpected)}"]
    if mapped_rows:
        lines.append(f"\nmapped ({len(res.mapped)}): official name -> vppkit name  shape")
        for o, v, so, sv, op in res.mapped:
            shape = f"{tuple(so)}" if op == "copy" else f"{tuple(so)} -> {tuple(sv)} [{op}]"
            lines.append(f"  {o} -> {v}  {shape}")
    lines.append(f"\nmissing vppkit keys ({len(res.missing)}): kept at the model's initialisation")
    lines += [f"  {k}  {tuple(s)}  {r}" for k, s, r in res.missing]
    lines.append(f"\nunexpected official keys ({len(res.unexpected)}): not used")
    lines += [f"  {k}  {tuple(s)}  {r}" for k, s, r in res.unexpected]
    return "\n".join(lines)
