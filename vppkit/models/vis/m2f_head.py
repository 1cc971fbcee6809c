"""Mask2Former head of the adapter host (Cheng et al. CVPR'22; vpp-notes §2.1): MSDeformAttn pixel decoder +
masked-attention transformer decoder, both from ``transformers``.

From ``transformers`` (``models.mask2former.modeling_mask2former``, configured by a :class:`Mask2FormerConfig` built
here in code, nothing downloaded):

- ``Mask2FormerPixelDecoder``: 1x1 input projections + GroupNorm(32) of the strides 8/16/32 maps, ``enc_layers``
  multi-scale deformable self-attention encoder layers (3 levels, 8 heads, 4 points; ``transformers`` fixes levels
  and points), an FPN lateral/output conv adding the stride-4 map, the 1x1 mask projection;
- ``Mask2FormerTransformerModule``: Q learnable queries (features + positional embeddings), level embeddings, sine
  position embeddings and ``dec_layers`` masked-attention decoder layers (masked cross-attention -> self-attention ->
  FFN, round robin over the three levels, coarse first), the shared mask embedding MLP.

Written here: the class head (Linear D -> K+1, as ``Mask2FormerForUniversalSegmentation.class_predictor``), the
read-outs in vppkit's decoder-dict layout, the transformer module's forward (the steps of
``Mask2FormerTransformerModule.forward``, on its own submodules, so that ROVIS track queries can be appended after
the static queries with a zero positional embedding, as the official ``AdditionalQueriesFormerHead``), and the
initialisation of the original Mask2Former (``transformers``
initialises only inside its ``PreTrainedModel``): c2_xavier_fill convs, Xavier input projections and decoder
layers, MSDeformAttn offsets, level embeddings normal(0, 1).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoderLayer,
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderLayer,
    Mask2FormerTransformerModule,
)

from vppkit.models.adapter.deform_attn import MSDeformAttn, init_deform_attn_
from vppkit.models.vis.decoder import append_track_queries


def mask2former_config(num_classes: int, dim: int = 256, num_queries: int = 100, dec_layers: int = 9,
                       heads: int = 8, enc_layers: int = 6) -> Mask2FormerConfig:
    """The ``transformers`` config of the head (paper sizes by default: 256-d, 100 queries, 9 decoder layers,
    8 heads, 6 pixel-decoder layers; FFN widths 8·D in the decoder and 4·D in the pixel decoder, 2048 / 1024 at
    D = 256; no dropout, so also no layer drop, which ``transformers`` ties to the dropout).

    ``decoder_layers`` is ``dec_layers + 1``: ``transformers`` (like the original ``DEC_LAYERS: 10``) counts the
    read-out of the initial queries as a layer.

    Raises:
        ValueError: ``dim`` not a multiple of 32 (GroupNorm(32) in the pixel decoder) or of ``heads``.
    """
    if dim % 32 or dim % heads:
        raise ValueError(f"Mask2Former head: dim={dim} must be a multiple of 32 (GroupNorm) and of heads={heads}")
    return Mask2FormerConfig(feature_size=dim, mask_feature_size=dim, hidden_dim=dim, encoder_layers=enc_layers,
                             decoder_layers=dec_layers + 1, num_attention_heads=heads, num_queries=num_queries,
                             dim_feedforward=8 * dim, encoder_feedforward_dim=4 * dim, dropout=0.0,
                             num_labels=num_classes, feature_strides=[4, 8, 16, 32], common_stride=4)


class Mask2FormerHead(nn.Module):
    """Pixel decoder + transformer decoder + class head on the adapter's four maps.

    Args:
        in_channels: channels of the four input maps (the ViT width C).
        num_classes: K object classes (logits have K + 1 entries; the last is "no object").
        dim: D, pixel-decoder and decoder width (256). num_queries: Q (100). dec_layers: masked-attention decoder
        layers (9). heads: attention heads (8). enc_layers: pixel-decoder deformable encoder layers (6).

    Forward:
        features [s4 (B, C, H/4, W/4), s8, s16, s32], optional ``track_queries`` (B, n, D) -> dict with
        ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, H/4, W/4) mask logits, ``embeds`` (B, Q, D) (the
        normalised final query embeddings, for tracking), ``queries`` (B, Q, D) (the last layer's raw output, the
        official ``last_query_feats``, carried as track queries) and ``aux_outputs``: the ``dec_layers`` earlier
        read-outs (the initial queries' first), each ``{"pred_logits", "pred_masks"}`` (deep supervision). With
        track queries every Q is Q + n (static queries first). The same layout as
        :class:`vppkit.models.vis.decoder.MaskDecoder`.
    """

    def __init__(self, in_channels: int, num_classes: int, dim: int = 256, num_queries: int = 100,
                 dec_layers: int = 9, heads: int = 8, enc_layers: int = 6) -> None:
        super().__init__()
        self.config = mask2former_config(num_classes, dim, num_queries, dec_layers, heads, enc_layers)
        self.num_classes, self.num_queries = num_classes, num_queries
        self.pixel_decoder = Mask2FormerPixelDecoder(self.config, feature_channels=[in_channels] * 4)
        self.transformer = Mask2FormerTransformerModule(in_features=dim, config=self.config)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self._init_weights()

    def _init_weights(self) -> None:
        pd = self.pixel_decoder
        with torch.no_grad():
            for m in pd.modules():              # detectron2 c2_xavier_fill for the FPN / mask convs
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight, a=1)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            for proj in pd.input_projections:   # MSDeformAttnPixelDecoder.input_proj
                nn.init.xavier_uniform_(proj[0].weight, gain=1)
                nn.init.zeros_(proj[0].bias)
            for m in pd.modules():              # MSDeformAttnTransformerEncoderOnly._reset_parameters
                if isinstance(m, Mask2FormerPixelDecoderEncoderLayer):
                    for p in m.parameters():
                        if p.dim() > 1:
                            nn.init.xavier_uniform_(p)
            for m in pd.modules():
                if isinstance(m, MSDeformAttn):
                    init_deform_attn_(m)
            nn.init.normal_(pd.level_embed)
            for m in self.transformer.modules():  # decoder layers: Xavier for matrices, zero attention biases
                if isinstance(m, Mask2FormerMaskedAttentionDecoderLayer):
                    for p in m.parameters():
                        if p.dim() > 1:
                            nn.init.xavier_uniform_(p)
                    nn.init.zeros_(m.cross_attn.in_proj_bias)

    def _transformer(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor,
                     track_queries: torch.Tensor | None):
        """``Mask2FormerTransformerModule.forward`` (transformers 5.24) with optional track queries appended."""
        tm = self.transformer
        feats, poss, sizes = [], [], []
        for i in range(tm.num_feature_levels):
            x = multi_scale[i]
            sizes.append(x.shape[-2:])
            poss.append(tm.position_embedder(x.shape, x.device, x.dtype, None).flatten(2).permute(2, 0, 1))
            feats.append((tm.input_projections[i](x).flatten(2) + tm.level_embed.weight[i][None, :, None])
                         .permute(2, 0, 1))
        b = feats[0].shape[1]
        q = tm.queries_features.weight[None].expand(b, -1, -1)
        qpos = tm.queries_embedder.weight[None].expand(b, -1, -1)
        q, qpos = append_track_queries(q, qpos, track_queries)
        return tm.decoder(inputs_embeds=q.transpose(0, 1), multi_stage_positional_embeddings=poss,
                          pixel_embeddings=mask_features, encoder_hidden_states=feats,
                          query_position_embeddings=qpos.transpose(0, 1), feature_size_list=sizes,
                          output_hidden_states=False, output_attentions=False, return_dict=True)

    def pixel(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The pixel decoder: the four maps -> (three multi-scale maps (B, D, h_l, w_l), coarse first; mask
        features (B, D, H/4, W/4)), what :meth:`decode` reads (a frame decoded twice runs this once)."""
        if len(features) != 4:
            raise ValueError(f"Mask2FormerHead: expected 4 maps (strides 4/8/16/32), got {len(features)}")
        pix = self.pixel_decoder(list(features), return_dict=True)
        return list(pix.multi_scale_features), pix.mask_features

    def forward(self, features: list[torch.Tensor], track_queries: torch.Tensor | None = None) -> dict:
        return self.decode(self.pixel(features), track_queries)

    def decode(self, pix: tuple[list[torch.Tensor], torch.Tensor], track_queries: torch.Tensor | None = None) -> dict:
        """The transformer decoder and the read-outs on :meth:`pixel`'s output (the dict of :meth:`forward`)."""
        dec = self._transformer(pix[0], pix[1], track_queries)
        hidden = [h.transpose(0, 1) for h in dec.intermediate_hidden_states]   # (B, Q, D), layer-normed
        logits = [self.class_embed(h) for h in hidden]
        masks = list(dec.masks_queries_logits)
        aux = [{"pred_logits": lg, "pred_masks": mk} for lg, mk in zip(logits[:-1], masks[:-1])]
        return {"pred_logits": logits[-1], "pred_masks": masks[-1], "embeds": hidden[-1],
                "queries": dec.last_hidden_state, "aux_outputs": aux}
