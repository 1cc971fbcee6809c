"""Multi-scale deformable attention for the ViT-Adapter host: built from ``transformers``, initialised as MSDeformAttn.

The attention itself is ``transformers``' pure-PyTorch Deformable-DETR module
(:class:`~transformers.models.mask2former.modeling_mask2former.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention`,
which calls ``multi_scale_deformable_attention``: per level ``F.grid_sample(bilinear, zeros, align_corners=False)``
of the value map at ``reference point + offset / (W_l, H_l)``, weighted by a softmax over levels x points). Its
parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``) are those of mmcv's
``MultiScaleDeformableAttention`` that the official VPP adapter uses, so an official state dict maps name for name.

What is written here: the Deformable-DETR initialisation (``transformers`` does it only inside its
``PreTrainedModel``), the reference points and the call (:func:`deform_attend`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention as MSDeformAttn,
)

__all__ = ["MSDeformAttn", "build_deform_attn", "init_deform_attn_", "reference_points", "level_start_index",
           "deform_attend"]


def init_deform_attn_(attn: MSDeformAttn) -> MSDeformAttn:
    """Deformable-DETR / MSDeformAttn initialisation, in place (mmcv ``MultiScaleDeformableAttention.init_weights``).

    Sampling offsets: weight 0, bias = head h points along direction 2πh/heads (scaled so the larger coordinate
    is 1), point p at distance p + 1 cells, the same on every level. Attention weights: 0 (uniform softmax).
    Value / output projections: Xavier-uniform, bias 0.
    """
    heads, levels, points = attn.n_heads, attn.n_levels, attn.n_points
    with torch.no_grad():
        nn.init.zeros_(attn.sampling_offsets.weight)
        thetas = torch.arange(heads, dtype=torch.float32) * (2.0 * math.pi / heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(heads, 1, 1, 2).repeat(1, levels, points, 1)
        grid = grid * torch.arange(1, points + 1, dtype=torch.float32).view(1, 1, points, 1)
        attn.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(attn.attention_weights.weight)
        nn.init.zeros_(attn.attention_weights.bias)
        nn.init.xavier_uniform_(attn.value_proj.weight)
        nn.init.zeros_(attn.value_proj.bias)
        nn.init.xavier_uniform_(attn.output_proj.weight)
        nn.init.zeros_(attn.output_proj.bias)
    return attn


def build_deform_attn(dim: int, heads: int, levels: int, points: int) -> MSDeformAttn:
    """A ``transformers`` multi-scale deformable attention of width ``dim``, initialised by :func:`init_deform_attn_`.

    Raises:
        ValueError: ``dim`` not divisible by ``heads`` (raised by ``transformers``).
    """
    return init_deform_attn_(MSDeformAttn(embed_dim=dim, num_heads=heads, n_levels=levels, n_points=points))


def reference_points(shapes: Sequence[tuple[int, int]], device=None, dtype=torch.float32) -> torch.Tensor:
    """Cell centres of each (h, w) grid in turn, as normalised (x, y) in (0, 1): ((j + 0.5) / w, (i + 0.5) / h).

    Returns:
        (1, sum h*w, 1, 2), row-major per level; the level axis is 1 so it broadcasts over the value levels
        (ViT-Adapter's ``get_reference_points``).
    """
    refs = []
    for h, w in shapes:
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1))
    return torch.cat(refs, 0)[None, :, None, :]


def level_start_index(shapes: Sequence[tuple[int, int]], device=None) -> torch.Tensor:
    """(L,) long: offset of each level's first token in the flattened value sequence."""
    sizes = [h * w for h, w in shapes]
    starts = [0]
    for s in sizes[:-1]:
        starts.append(starts[-1] + s)
    return torch.tensor(starts, dtype=torch.long, device=device)


def deform_attend(attn: MSDeformAttn, query: torch.Tensor, ref: torch.Tensor, value: torch.Tensor,
                  shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Multi-scale deformable cross-attention from ``query`` to the multi-level ``value``.

    Args:
        attn: from :func:`build_deform_attn` (``n_levels == len(shapes)``).
        query: (B, Q, C) queries (already normalised by the caller).
        ref: (1 or B, Q, 1 or L, 2) reference points, normalised (x, y) (:func:`reference_points`).
        value: (B, sum h*w, C) the levels' tokens, flattened row-major and concatenated in ``shapes`` order.
        shapes: the L levels' (h, w).

    Returns:
        (B, Q, C): ``output_proj`` of the sampled, attention-weighted values (no residual, no dropout).

    Raises:
        ValueError: ``len(shapes)`` differs from the module's levels, or the value length from sum h*w.
    """
    shapes = [(int(h), int(w)) for h, w in shapes]
    if len(shapes) != attn.n_levels:
        raise ValueError(f"deform_attend: {len(shapes)} value levels for an attention built for {attn.n_levels}")
    if value.shape[1] != sum(h * w for h, w in shapes):
        raise ValueError(f"deform_attend: value has {value.shape[1]} tokens, levels {shapes} need "
                         f"{sum(h * w for h, w in shapes)}")
    out, _ = attn(hidden_states=query, encoder_hidden_states=value, reference_points=ref,
                  spatial_shapes_list=shapes, level_start_index=level_start_index(shapes, query.device))
    return out
