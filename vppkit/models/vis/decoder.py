"""Query-based mask decoder with masked attention (Mask2Former, Cheng et al. CVPR'22, §3.2).

A small port of Mask2Former's ``MultiScaleMaskedTransformerDecoder``: learnable queries attend, layer by layer
and round robin over the pyramid levels (coarse to fine), to the pixels of the mask predicted by the previous
layer (masked attention; a query whose mask is empty attends everywhere), then to each other (self-attention),
then an FFN. Every layer (and the input queries) is read out by shared heads: class logits over
``num_classes + 1`` (last = no object) and mask logits = mask embedding · per-pixel embedding.

The decoder output embeddings are also returned: MinVIS (Huang et al. NeurIPS'22) tracks by matching them
frame to frame (:mod:`vppkit.models.vis.tracker`).

Track queries (ROVIS, :mod:`vppkit.models.vis.rovis`): ``track_queries`` (B, n, D) are appended after the Q static
queries as extra query *features* with a zero positional embedding and run through every layer with them (one
self-attention over all Q + n queries), as ``AdditionalQueriesFormerHead.forward`` of the official code
(``custom_mmtrack/models/track_heads/rovis_head.py``, ``use_query_embed=False``: ``query_embed_dummy`` zeros).
The raw output of the last layer (before the read-out norm, the official ``last_query_feats``) is returned as
``queries``: what is carried to the next frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sine_position_embedding(h: int, w: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """2D sine positional encoding (DETR ``PositionEmbeddingSine``, normalised, scale 2π) -> (h*w, dim).

    Raises:
        ValueError: ``dim`` not divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"sine_position_embedding: dim={dim} must be divisible by 4")
    npf = dim // 2
    y = (torch.arange(h, device=device, dtype=dtype) + 1) / (h + 1e-6) * 2 * math.pi
    x = (torch.arange(w, device=device, dtype=dtype) + 1) / (w + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(npf, device=device, dtype=dtype) // 2) / npf)
    px = x[:, None] / dim_t  # (w, npf)
    py = y[:, None] / dim_t
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((py[:, None, :].expand(h, w, npf), px[None, :, :].expand(h, w, npf)), dim=-1)
    return pos.reshape(h * w, dim)


class _DecoderLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, post-norm (Mask2Former's default)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, q: torch.Tensor, qpos: torch.Tensor, mem: torch.Tensor, mpos: torch.Tensor,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        q = self.norm1(q + self.cross(q + qpos, mem + mpos, mem, attn_mask=attn_mask, need_weights=False)[0])
        qk = q + qpos
        q = self.norm2(q + self.self_attn(qk, qk, q, need_weights=False)[0])
        return self.norm3(q + self.ffn(q))


class MaskDecoder(nn.Module):
    """Mask2Former-style query decoder.

    Args:
        dim: width D of queries and pyramid features.
        num_classes: number of object classes K (logits have K + 1 entries; the last is "no object").
        num_queries: Q.
        num_layers: decoder layers (Mask2Former: 9; vppkit CPU profiles: 3).
        heads: attention heads.
        ffn_dim: FFN hidden width (default 4·D).
        num_levels: pyramid levels cycled through by the layers (3: strides 32/16/8).

    Forward:
        mask_features (B, D, H_m, W_m) and ``levels`` [(B, D, h_l, w_l)] ->
        dict with ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, H_m, W_m) mask logits, ``embeds`` (B, Q, D)
        (normalised decoder output, for tracking), ``queries`` (B, Q, D) (the last layer's raw output, carried as
        track queries) and ``aux_outputs`` (list over the earlier read-outs of ``{"pred_logits", "pred_masks"}``,
        for deep supervision). With ``track_queries`` (B, n, D) every Q above is Q + n, the static queries first.
    """

    def __init__(self, dim: int = 64, num_classes: int = 1, num_queries: int = 10, num_layers: int = 3,
                 heads: int = 4, ffn_dim: int | None = None, num_levels: int = 3) -> None:
        super().__init__()
        self.num_classes, self.num_queries, self.num_levels, self.heads = num_classes, num_queries, num_levels, heads
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(num_levels, dim)
        self.layers = nn.ModuleList(_DecoderLayer(dim, heads, ffn_dim or 4 * dim) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim),
                                        nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def _readout(self, q: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int] | None):
        out = self.decoder_norm(q)
        logits = self.class_embed(out)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(out), mask_features)
        attn_mask = None
        if attn_size is not None:
            # masked attention: attend only where the predicted mask is >= 0.5 (Mask2Former eq. 2)
            m = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
            attn_mask = (m.sigmoid().flatten(2) < 0.5)  # (B, Q, HW); True = not allowed
            attn_mask[attn_mask.all(-1)] = False  # empty mask -> attend everywhere
            attn_mask = attn_mask.repeat_interleave(self.heads, dim=0).detach()
        return out, logits, masks, attn_mask

    def forward(self, mask_features: torch.Tensor, levels: list[torch.Tensor],
                track_queries: torch.Tensor | None = None) -> dict:
        if len(levels) != self.num_levels:
            raise ValueError(f"MaskDecoder: expected {self.num_levels} pyramid levels, got {len(levels)}")
        b = mask_features.shape[0]
        mems, poss, sizes = [], [], []
        for i, feat in enumerate(levels):
            h, w = feat.shape[-2:]
            sizes.append((h, w))
            poss.append(sine_position_embedding(h, w, feat.shape[1], feat.device, feat.dtype)[None].expand(b, -1, -1))
            mems.append(feat.flatten(2).transpose(1, 2) + self.level_embed.weight[i][None, None])
        q = self.query_feat.weight[None].expand(b, -1, -1)
        qpos = self.query_embed.weight[None].expand(b, -1, -1)
        q, qpos = append_track_queries(q, qpos, track_queries)
        aux = []
        _, logits, masks, attn_mask = self._readout(q, mask_features, sizes[0])
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            aux.append({"pred_logits": logits, "pred_masks": masks})
            q = layer(q, qpos, mems[lvl], poss[lvl], attn_mask)
            nxt = sizes[(i + 1) % self.num_levels] if i + 1 < len(self.layers) else None
            out, logits, masks, attn_mask = self._readout(q, mask_features, nxt)
        return {"pred_logits": logits, "pred_masks": masks, "embeds": out, "queries": q, "aux_outputs": aux}


def append_track_queries(q: torch.Tensor, qpos: torch.Tensor,
                         track_queries: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Static query features / positional embeddings (B, Q, D) -> (B, Q + n, D) with the track queries (B, n, D)
    appended as features and zeros as their positional embedding (official ROVIS, ``use_query_embed=False``).

    Raises:
        ValueError: ``track_queries`` not (B, n, D) for the batch size B and width D of ``q``.
    """
    if track_queries is None:
        return q, qpos
    b, _, d = q.shape
    if track_queries.dim() != 3 or track_queries.shape[0] != b or track_queries.shape[2] != d:
        raise ValueError(f"track_queries must be (B={b}, n, D={d}), got {tuple(track_queries.shape)}")
    tq = track_queries.to(q.dtype)
    return torch.cat([q, tq], 1), torch.cat([qpos, torch.zeros_like(tq)], 1)
