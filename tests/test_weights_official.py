"""Official checkpoints -> vppkit's adapter-host model (vppkit.weights.official, ``vppkit weights official``).

The official state dicts here are written out by hand from the official code (not from the map under test), at a
tiny size: a ViT-nano (48 wide, 2 heads, depth 12) in a ViT-Adapter (stem 8, 6 deformable heads, 2 points) and a
Mask2Former head (32 wide, 4 heads, 5 queries, 2 decoder and 2 pixel-decoder layers, 3 classes):

- backbone: PatGlan/Video-Patch-Pruning ``vit.py`` ``TIMMVisionTransformer`` (timm block names) or, for VPP,
  ``selective_vit.py`` ``nnBlock`` (``TransformerEncoderLayer.*``); ``vit_adapter.py`` / ``adapter_modules.py``
  (``level_embed``, ``spm``, ``interactions.N.{injector, extractor, extra_extractors}``, mmcv
  ``MultiScaleDeformableAttention``, ``ffn.dwconv.dwconv``, ``up``, ``norm1..4``), ``map_selective_module.py``
  (``interactions.0.matching_module``), ``selective_module.py`` (``selective_modules.J``);
- head: mmdet ``Mask2FormerHead`` + ``MSDeformAttnPixelDecoder`` with mmcv ``BaseTransformerLayer`` names (mmdet
  3.0.0rc5, the official pin) or the mmdet >= 3.0.0rc6 names.
"""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.nn.functional as F

from vppkit.cli import main as cli_main
from vppkit.engine.checkpoint import load_model
from vppkit.models.vis.model import build_vis_model
from vppkit.weights import official as om

C, HEADS, DEPTH, STEM, DH, DP = 48, 2, 12, 8, 6, 2      # ViT width / heads / depth, adapter stem, deform heads/points
D, NH, Q, DEC, ENC, K = 32, 4, 5, 2, 2, 3               # head width / heads, queries, decoder / encoder layers, classes
IMG, GRID = 64, (4, 4)
MODEL = {"arch": "vit_nano", "img_size": [IMG, IMG], "host": "adapter", "dim": D, "num_queries": Q,
         "dec_layers": DEC, "heads": NH, "adapter": {"conv_inplane": STEM, "deform_points": DP,
                                                     "pixel_decoder_layers": ENC},
         "backbone_kwargs": {"class_token": False, "global_pool": "avg"}}
OVERRIDES = [f"model.img_size=[{IMG},{IMG}]", f"model.dim={D}", f"model.num_queries={Q}", f"model.dec_layers={DEC}",
             f"model.heads={NH}", f"model.adapter.conv_inplane={STEM}", f"model.adapter.deform_points={DP}",
             f"model.adapter.pixel_decoder_layers={ENC}"]
UNUSED_MAPSM = {"detector.backbone.interactions.0.matching_module.init_mlp.weight",
                "detector.backbone.interactions.0.matching_module.norm_input.weight",
                "detector.backbone.interactions.0.matching_module.norm_input.bias"}


def _bn(sd, key, n):
    sd.update({f"{key}.weight": (n,), f"{key}.bias": (n,), f"{key}.running_mean": (n,), f"{key}.running_var": (n,),
               f"{key}.num_batches_tracked": ()})


def _ln(sd, key, n):
    sd.update({f"{key}.weight": (n,), f"{key}.bias": (n,)})


def _lin(sd, key, n_out, n_in, bias=True):
    sd[f"{key}.weight"] = (n_out, n_in)
    if bias:
        sd[f"{key}.bias"] = (n_out,)


def _msda(sd, key, dim, heads, levels, points):
    """mmcv MultiScaleDeformableAttention (value_proj_ratio 1)."""
    _lin(sd, f"{key}.sampling_offsets", heads * levels * points * 2, dim)
    _lin(sd, f"{key}.attention_weights", heads * levels * points, dim)
    _lin(sd, f"{key}.value_proj", dim, dim)
    _lin(sd, f"{key}.output_proj", dim, dim)


def _extractor(sd, key):
    _ln(sd, f"{key}.query_norm", C)
    _ln(sd, f"{key}.feat_norm", C)
    _msda(sd, f"{key}.attn", C, DH, 1, DP)
    hid = int(C * 0.25)
    _lin(sd, f"{key}.ffn.fc1", hid, C)
    sd[f"{key}.ffn.dwconv.dwconv.weight"] = (hid, 1, 3, 3)
    sd[f"{key}.ffn.dwconv.dwconv.bias"] = (hid,)
    _lin(sd, f"{key}.ffn.fc2", C, hid)
    _ln(sd, f"{key}.ffn_norm", C)


def official_shapes(prefix="detector.", blocks="timm", head="mmcv", vpp=False, pos_side=4) -> dict:
    """{official key: shape} of the tiny official model (module docstring)."""
    sd: dict = {}
    b = prefix + "backbone."
    sd[b + "pos_embed"] = (1, 1 + pos_side * pos_side, C)
    sd[b + "patch_embed.proj.weight"] = (C, 3, 16, 16)
    sd[b + "patch_embed.proj.bias"] = (C,)
    for n in range(DEPTH):
        blk = f"{b}blocks.{n}."
        if blocks == "timm":
            _ln(sd, blk + "norm1", C)
            _lin(sd, blk + "attn.qkv", 3 * C, C)
            _lin(sd, blk + "attn.proj", C, C)
            _ln(sd, blk + "norm2", C)
            _lin(sd, blk + "mlp.fc1", 4 * C, C)
            _lin(sd, blk + "mlp.fc2", C, 4 * C)
        else:
            t = blk + "TransformerEncoderLayer."
            sd[t + "self_attn.in_proj_weight"] = (3 * C, C)
            sd[t + "self_attn.in_proj_bias"] = (3 * C,)
            _lin(sd, t + "self_attn.out_proj", C, C)
            _lin(sd, t + "linear1", 4 * C, C)
            _lin(sd, t + "linear2", C, 4 * C)
            _ln(sd, t + "norm1", C)
            _ln(sd, t + "norm2", C)
    sd[b + "level_embed"] = (3, C)
    i = STEM
    for idx, (cout, cin) in zip((0, 3, 6), ((i, 3), (i, i), (i, i))):
        sd[f"{b}spm.stem.{idx}.weight"] = (cout, cin, 3, 3)
        _bn(sd, f"{b}spm.stem.{idx + 1}", cout)
    for name, (cout, cin) in {"conv2": (2 * i, i), "conv3": (4 * i, 2 * i), "conv4": (4 * i, 4 * i)}.items():
        sd[f"{b}spm.{name}.0.weight"] = (cout, cin, 3, 3)
        _bn(sd, f"{b}spm.{name}.1", cout)
    for n, cin in enumerate((i, 2 * i, 4 * i, 4 * i), 1):
        sd[f"{b}spm.fc{n}.weight"] = (C, cin, 1, 1)
        sd[f"{b}spm.fc{n}.bias"] = (C,)
    for k in range(4):
        it = f"{b}interactions.{k}."
        sd[it + "injector.gamma"] = (C,)
        _ln(sd, it + "injector.query_norm", C)
        _ln(sd, it + "injector.feat_norm", C)
        _msda(sd, it + "injector.attn", C, DH, 3, DP)
        _extractor(sd, it + "extractor")
        if k == 3:
            for j in range(2):
                _extractor(sd, f"{it}extra_extractors.{j}")
    if vpp:
        mm = b + "interactions.0.matching_module."
        _lin(sd, mm + "init_mlp", C // 2, C, bias=False)
        _ln(sd, mm + "norm_input", C)
        _lin(sd, mm + "selector.fc1", C // 2, C)
        _lin(sd, mm + "selector.fc2", 2, C // 2)
        _ln(sd, mm + "norm_selector", C)
        for j in range(3):
            sm = f"{b}selective_modules.{j}."
            _ln(sd, sm + "norm", C)
            _lin(sd, sm + "mlp.fc1", C // 4, C)
            _lin(sd, sm + "mlp.fc2", 2, C // 4)
    sd[b + "up.weight"] = (C, C, 2, 2)
    sd[b + "up.bias"] = (C,)
    for n in range(1, 5):
        _bn(sd, f"{b}norm{n}", C)

    h = prefix + "panoptic_head."
    pd = h + "pixel_decoder."
    for n in range(3):
        sd[f"{pd}input_convs.{n}.conv.weight"] = (D, C, 1, 1)
        sd[f"{pd}input_convs.{n}.conv.bias"] = (D,)
        _ln(sd, f"{pd}input_convs.{n}.gn", D)
    attn, ffn = ("attentions.0", "ffns.0.layers") if head == "mmcv" else ("self_attn", "ffn.layers")
    for j in range(ENC):
        lay = f"{pd}encoder.layers.{j}."
        _msda(sd, lay + attn, D, NH, 3, 4)
        _lin(sd, f"{lay}{ffn}.0.0", 4 * D, D)
        _lin(sd, f"{lay}{ffn}.1", D, 4 * D)
        _ln(sd, lay + "norms.0", D)
        _ln(sd, lay + "norms.1", D)
    sd[pd + "level_encoding.weight"] = (3, D)
    sd[pd + "lateral_convs.0.conv.weight"] = (D, C, 1, 1)
    _ln(sd, pd + "lateral_convs.0.gn", D)
    sd[pd + "output_convs.0.conv.weight"] = (D, D, 3, 3)
    _ln(sd, pd + "output_convs.0.gn", D)
    sd[pd + "mask_feature.weight"] = (D, D, 1, 1)
    sd[pd + "mask_feature.bias"] = (D,)
    cross, self_, ffn = (("attentions.0.attn", "attentions.1.attn", "ffns.0.layers") if head == "mmcv"
                         else ("cross_attn.attn", "self_attn.attn", "ffn.layers"))
    for j in range(DEC):
        lay = f"{h}transformer_decoder.layers.{j}."
        for a in (cross, self_):
            sd[f"{lay}{a}.in_proj_weight"] = (3 * D, D)
            sd[f"{lay}{a}.in_proj_bias"] = (3 * D,)
            _lin(sd, f"{lay}{a}.out_proj", D, D)
        _lin(sd, f"{lay}{ffn}.0.0", 8 * D, D)
        _lin(sd, f"{lay}{ffn}.1", D, 8 * D)
        for n in range(3):
            _ln(sd, f"{lay}norms.{n}", D)
    _ln(sd, h + "transformer_decoder.post_norm", D)
    sd[h + "query_embed.weight"] = (Q, D)
    sd[h + "query_feat.weight"] = (Q, D)
    sd[h + "level_embed.weight"] = (3, D)
    _lin(sd, h + "cls_embed", K + 1, D)
    for n in (0, 2, 4):
        _lin(sd, f"{h}mask_embed.{n}", D, D)
    return sd


def official_state_dict(seed=0, **kw) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {k: (torch.tensor(7) if s == () else torch.randn(s, generator=g)) for k, s in official_shapes(**kw).items()}
    return {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in sd.items()}


@pytest.fixture(scope="module")
def vpp_model():
    torch.manual_seed(0)
    return build_vis_model(MODEL, K, {"method": "vpp"}).eval()


@pytest.fixture(scope="module")
def dense_model():
    torch.manual_seed(0)
    return build_vis_model(MODEL, K, None).eval()


def _shapes(model):
    return {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kw", [dict(blocks="encoder_layer", vpp=True),
                                dict(blocks="encoder_layer", vpp=True, head="mmdet3"),
                                dict(prefix="", blocks="timm")], ids=["vpp-mmcv", "vpp-mmdet3", "coco-dense"])
def test_map_loads_strictly_for_the_mapped_part(kw, vpp_model, dense_model):
    sd = official_state_dict(**kw)
    model = vpp_model if kw.get("vpp") else dense_model
    lay = om.detect_layout(sd)
    assert (lay.prefix, lay.blocks, lay.head) == (kw.get("prefix", "detector."), kw["blocks"], kw.get("head", "mmcv"))
    res = om.map_to_vppkit(sd, _shapes(model), GRID)
    expected_missing = {"backbone.vit.fc_norm.weight", "backbone.vit.fc_norm.bias"}
    assert {k for k, _, _ in res.missing} == expected_missing
    assert {k for k, _, _ in res.unexpected} == (UNUSED_MAPSM if kw.get("vpp") else set())
    assert all("never used" in r for _, _, r in res.unexpected)
    # every other official tensor gives vppkit tensors (a decoder self-attention in-projection gives three)
    assert {o for o, *_ in res.mapped} == set(sd) - {k for k, _, _ in res.unexpected}
    assert len(res.mapped) == len(sd) - len(res.unexpected) + 2 * 2 * DEC
    fresh = build_vis_model(MODEL, K, {"method": "vpp"} if kw.get("vpp") else None)
    missing, unexpected = fresh.load_state_dict(res.state_dict, strict=False)
    assert unexpected == [] and set(missing) == expected_missing
    p = kw.get("prefix", "detector.")
    own = fresh.state_dict()
    # the layout changes: fused in-projection split, dwconv wrapper, mask_embed indices, pos_embed CLS slot
    dec_self = ("attentions.1.attn" if kw.get("head", "mmcv") == "mmcv" else "self_attn.attn")
    in_proj = sd[f"{p}panoptic_head.transformer_decoder.layers.1.{dec_self}.in_proj_weight"]
    assert torch.equal(own["head.transformer.decoder.layers.1.self_attn.k_proj.weight"], in_proj[D:2 * D])
    assert torch.equal(own["adapter.interactions.3.extra_extractors.1.ffn.dwconv.weight"],
                       sd[f"{p}backbone.interactions.3.extra_extractors.1.ffn.dwconv.dwconv.weight"])
    assert torch.equal(own["head.transformer.decoder.mask_predictor.mask_embedder.2.0.bias"],
                       sd[f"{p}panoptic_head.mask_embed.4.bias"])
    assert torch.equal(own["backbone.vit.pos_embed"], sd[f"{p}backbone.pos_embed"][:, 1:])
    qkv = "TransformerEncoderLayer.self_attn.in_proj_weight" if kw["blocks"] != "timm" else "attn.qkv.weight"
    assert torch.equal(own["backbone.vit.blocks.7.attn.qkv.weight"], sd[f"{p}backbone.blocks.7.{qkv}"])
    if kw.get("vpp"):
        assert torch.equal(own["backbone.pruner.map_sm.mlp.fc2.weight"],
                           sd["detector.backbone.interactions.0.matching_module.selector.fc2.weight"])
        assert torch.equal(own["backbone.pruner.sms.2.norm.bias"],
                           sd["detector.backbone.selective_modules.2.norm.bias"])
    with torch.no_grad():
        out = fresh.eval()(torch.rand(1, 3, IMG, IMG))
    assert out.pred_logits.shape == (1, Q, K + 1) and torch.isfinite(out.pred_masks).all()


#: vppkit key -> official key (without "detector."), from the official code: mmcv BaseTransformerLayer numbers its
#: attentions / norms in operation_order (decoder: cross_attn, norm, self_attn, norm, ffn, norm; pixel-decoder encoder:
#: self_attn, norm, ffn, norm); the pixel decoder's input_convs[0] and level_encoding[0] are the coarsest level (stride
#: 32), as transformers' input_projections[0] / level_embed[0]; query_embed is the positional embedding (transformers'
#: queries_embedder), query_feat the content (queries_features); mask_embed is Linear, ReLU, Linear, ReLU, Linear.
SPEC = {
    "head.transformer.decoder.layers.1.cross_attn.in_proj_weight":
        "panoptic_head.transformer_decoder.layers.1.attentions.0.attn.in_proj_weight",
    "head.transformer.decoder.layers.1.self_attn.out_proj.bias":
        "panoptic_head.transformer_decoder.layers.1.attentions.1.attn.out_proj.bias",
    "head.transformer.decoder.layers.0.cross_attn_layer_norm.weight":
        "panoptic_head.transformer_decoder.layers.0.norms.0.weight",
    "head.transformer.decoder.layers.0.self_attn_layer_norm.weight":
        "panoptic_head.transformer_decoder.layers.0.norms.1.weight",
    "head.transformer.decoder.layers.0.final_layer_norm.weight":
        "panoptic_head.transformer_decoder.layers.0.norms.2.weight",
    "head.transformer.decoder.layers.0.fc1.weight": "panoptic_head.transformer_decoder.layers.0.ffns.0.layers.0.0.weight",
    "head.transformer.decoder.layers.0.fc2.bias": "panoptic_head.transformer_decoder.layers.0.ffns.0.layers.1.bias",
    "head.transformer.decoder.layernorm.weight": "panoptic_head.transformer_decoder.post_norm.weight",
    "head.transformer.decoder.mask_predictor.mask_embedder.1.0.weight": "panoptic_head.mask_embed.2.weight",
    "head.transformer.queries_embedder.weight": "panoptic_head.query_embed.weight",
    "head.transformer.queries_features.weight": "panoptic_head.query_feat.weight",
    "head.transformer.level_embed.weight": "panoptic_head.level_embed.weight",
    "head.pixel_decoder.level_embed": "panoptic_head.pixel_decoder.level_encoding.weight",
    "head.pixel_decoder.input_projections.0.0.weight": "panoptic_head.pixel_decoder.input_convs.0.conv.weight",
    "head.pixel_decoder.input_projections.2.1.bias": "panoptic_head.pixel_decoder.input_convs.2.gn.bias",
    "head.pixel_decoder.encoder.layers.1.self_attn.sampling_offsets.bias":
        "panoptic_head.pixel_decoder.encoder.layers.1.attentions.0.sampling_offsets.bias",
    "head.pixel_decoder.encoder.layers.1.self_attn_layer_norm.bias":
        "panoptic_head.pixel_decoder.encoder.layers.1.norms.0.bias",
    "head.pixel_decoder.encoder.layers.1.final_layer_norm.bias":
        "panoptic_head.pixel_decoder.encoder.layers.1.norms.1.bias",
    "head.pixel_decoder.encoder.layers.0.fc1.weight": "panoptic_head.pixel_decoder.encoder.layers.0.ffns.0.layers.0.0.weight",
    "head.pixel_decoder.adapter_1.1.weight": "panoptic_head.pixel_decoder.lateral_convs.0.gn.weight",
    "head.pixel_decoder.layer_1.0.weight": "panoptic_head.pixel_decoder.output_convs.0.conv.weight",
    "head.pixel_decoder.mask_projection.bias": "panoptic_head.pixel_decoder.mask_feature.bias",
    "head.class_embed.weight": "panoptic_head.cls_embed.weight",
    "adapter.interactions.2.injector.attn.attention_weights.weight":
        "backbone.interactions.2.injector.attn.attention_weights.weight",
    "adapter.spm.conv3.1.running_mean": "backbone.spm.conv3.1.running_mean",
    "adapter.norm4.num_batches_tracked": "backbone.norm4.num_batches_tracked",
    "backbone.vit.blocks.11.mlp.fc1.weight": "backbone.blocks.11.TransformerEncoderLayer.linear1.weight",
    "backbone.vit.blocks.11.attn.proj.bias": "backbone.blocks.11.TransformerEncoderLayer.self_attn.out_proj.bias",
    "backbone.vit.blocks.0.norm2.weight": "backbone.blocks.0.TransformerEncoderLayer.norm2.weight",
    "backbone.pruner.map_sm.norm.weight": "backbone.interactions.0.matching_module.norm_selector.weight",
    "backbone.pruner.map_sm.mlp.fc1.bias": "backbone.interactions.0.matching_module.selector.fc1.bias",
    "backbone.pruner.sms.0.mlp.fc2.weight": "backbone.selective_modules.0.mlp.fc2.weight",
}


def test_names_follow_the_official_code(vpp_model):
    sd = official_state_dict(blocks="encoder_layer", vpp=True)
    res = om.map_to_vppkit(sd, _shapes(vpp_model), GRID)
    rows = {v: o for o, v, *_ in res.mapped}
    for vkey, okey in SPEC.items():
        assert rows[vkey] == "detector." + okey, vkey
        assert torch.equal(res.state_dict[vkey], sd["detector." + okey]), vkey
    q, k, v = (res.state_dict[f"head.transformer.decoder.layers.0.self_attn.{n}_proj.bias"] for n in "qkv")
    assert torch.equal(torch.cat([q, k, v]),
                       sd["detector.panoptic_head.transformer_decoder.layers.0.attentions.1.attn.in_proj_bias"])


def test_dense_file_leaves_the_pruner_fresh(vpp_model):
    res = om.map_to_vppkit(official_state_dict(), _shapes(vpp_model), GRID)
    pruner = [(k, r) for k, _, r in res.missing if k.startswith("backbone.pruner.")]
    assert len(pruner) == 4 * 6 and all(r.startswith("dense checkpoint") for _, r in pruner)


@pytest.mark.parametrize("blocks, head", [("encoder_layer", "mmcv"), ("timm", "mmdet3")])
def test_round_trips(blocks, head, vpp_model):
    lay = om.OfficialLayout(blocks=blocks, head=head, pos_grid=GRID)
    own = vpp_model.state_dict()
    exported, skipped = om.map_to_official(own, GRID, lay)
    assert {k for k, _, _ in skipped} == {"backbone.vit.fc_norm.weight", "backbone.vit.fc_norm.bias"}
    back = om.map_to_vppkit(exported, _shapes(vpp_model), GRID, lay)
    assert back.unexpected == [] and {k for k, _, _ in back.missing} == {k for k, _, _ in skipped}
    assert set(back.state_dict) == set(own) - {k for k, _, _ in skipped}
    for k, v in back.state_dict.items():
        assert torch.equal(v, own[k]), k
    # official -> vppkit -> official: identical, but for the unused CLS slot of pos_embed (written as zeros)
    sd = official_state_dict(blocks=blocks, head=head, vpp=True)
    res = om.map_to_vppkit(sd, _shapes(vpp_model), GRID, lay)
    again, _ = om.map_to_official(res.state_dict, GRID, lay)
    assert set(again) == set(sd) - UNUSED_MAPSM
    for k, v in again.items():
        ref = sd[k][:, 1:] if k.endswith("pos_embed") else sd[k]
        assert torch.equal(v[:, 1:] if k.endswith("pos_embed") else v, ref), k
    assert not again["detector.backbone.pos_embed"][:, 0].any()


def test_pos_embed_resampled_as_the_official_forward(dense_model):
    """A 2x2 official table on the model's 4x4 grid: F.interpolate(bicubic, align_corners=False) of pos[:, 1:]."""
    sd = official_state_dict(pos_side=2)
    res = om.map_to_vppkit(sd, _shapes(dense_model), GRID)
    table = sd["detector.backbone.pos_embed"][:, 1:].reshape(1, 2, 2, C).permute(0, 3, 1, 2)
    ref = F.interpolate(table, size=GRID, mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    assert torch.allclose(res.state_dict["backbone.vit.pos_embed"], ref, atol=0, rtol=0)
    assert res.layout.pos_grid == (2, 2)
    assert [r for r in res.mapped if r[1] == "backbone.vit.pos_embed"][0][2:] == ((1, 5, C), (1, 16, C), "pos_embed")


def test_wrong_shape_names_the_key_and_both_shapes(dense_model):
    sd = official_state_dict()
    sd["detector.panoptic_head.query_feat.weight"] = torch.zeros(Q + 2, D)
    sd["detector.backbone.blocks.3.attn.qkv.weight"] = torch.zeros(3 * C, C + 1)
    with pytest.raises(om.OfficialShapeError) as info:
        om.map_to_vppkit(sd, _shapes(dense_model), GRID, source="ckpt.pth")
    msg = str(info.value)
    assert msg.startswith("ckpt.pth: 2 official tensor(s)")
    assert f"detector.panoptic_head.query_feat.weight ({Q + 2}, {D}) -> head.transformer.queries_features.weight " \
           f"({Q}, {D})" in msg
    assert f"detector.backbone.blocks.3.attn.qkv.weight ({3 * C}, {C + 1}) -> backbone.vit.blocks.3.attn.qkv" in msg


def test_missing_and_unexpected_lists(dense_model):
    sd = official_state_dict()
    del sd["detector.backbone.up.bias"]
    sd["detector.backbone.bogus.weight"] = torch.zeros(3)
    sd["detector.backbone.norm.weight"] = torch.zeros(C)
    res = om.map_to_vppkit(sd, _shapes(dense_model), GRID)
    missing = {k: r for k, _, r in res.missing}
    assert missing["adapter.up.bias"] == "detector.backbone.up.bias is not in the file"
    assert "no final norm" in missing["backbone.vit.fc_norm.weight"]
    unexpected = {k: (s, r) for k, s, r in res.unexpected}
    assert set(unexpected) == {"detector.backbone.bogus.weight", "detector.backbone.norm.weight"}
    assert unexpected["detector.backbone.bogus.weight"] == ((3,), "no vppkit counterpart (no rule maps this "
                                                                   "official tensor)")
    assert "unused by the adapter host" in unexpected["detector.backbone.norm.weight"][1]
    text = om.format_report(res)
    assert "missing vppkit keys (3)" in text and "unexpected official keys (2)" in text
    assert "detector.panoptic_head.transformer_decoder.layers.0.attentions.1.attn.in_proj_weight -> " \
           "head.transformer.decoder.layers.0.self_attn.q_proj.weight  (96, 32) -> (32, 32) [qkv]" in text


def test_load_unwraps_mmengine_files(tmp_path):
    """mmengine files hold non-tensor objects (weights_only fails: read again, noted); DDP 'module.' is removed."""
    path = tmp_path / "f.pth"
    torch.save({"meta": {"time": datetime.date(2026, 4, 24)}, "state_dict": {"module.a.weight": torch.ones(2),
                                                                             "module.a.step": 3}}, path)
    sd, notes = om.load_official_state_dict(path)
    assert list(sd) == ["a.weight"] and torch.equal(sd["a.weight"], torch.ones(2))
    assert any("weights_only=False" in n for n in notes) and any("'module.a.step'" in n for n in notes)
    torch.save({"state_dict": {"step": 3}}, path)
    with pytest.raises(om.OfficialCheckpointError, match="f.pth: no tensors"):
        om.load_official_state_dict(path)
    with pytest.raises(om.OfficialCheckpointError, match="not found"):
        om.load_official_state_dict(tmp_path / "none.pth")


def test_cli_writes_a_checkpoint_that_load_model_reads(tmp_path, capsys):
    sd = official_state_dict(blocks="encoder_layer", vpp=True)
    src = tmp_path / "vpp_official.pth"
    torch.save({"meta": {"epoch": 6}, "state_dict": sd}, src)
    out = tmp_path / "vpp_vppkit.pt"
    rc = cli_main(["weights", "official", "--checkpoint", str(src), "--out", str(out), "--config", "smoke",
                   "--summary", "--report", str(tmp_path / "map.json"), *OVERRIDES])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert f"mapped {len(sd) - 3 + 2 * 2 * DEC}  missing (vppkit) 2  unexpected (official) 3" in text
    assert "stage sparse" in text
    model, ck = load_model(out)
    assert ck["stage"] == "sparse" and ck["num_classes"] == K and ck["official"]["counts"]["unexpected"] == 3
    assert ck["config"]["model"]["host"] == "adapter" and ck["config"]["model"]["backbone_kwargs"]["class_token"] is False
    own = model.state_dict()
    assert torch.equal(own["adapter.spm.stem.4.running_var"], sd["detector.backbone.spm.stem.4.running_var"])
    assert torch.equal(own["head.class_embed.weight"], sd["detector.panoptic_head.cls_embed.weight"])
    assert (tmp_path / "map.json").is_file()

    bad = tmp_path / "bad.pth"
    sd["detector.panoptic_head.cls_embed.bias"] = torch.zeros(K + 2)
    torch.save({"state_dict": sd}, bad)
    assert cli_main(["weights", "official", "--checkpoint", str(bad), "--out", str(tmp_path / "x.pt"),
                     "--config", "smoke", *OVERRIDES]) == 1
    err = capsys.readouterr().err
    assert f"detector.panoptic_head.cls_embed.bias ({K + 2},) -> head.class_embed.bias ({K + 1},)" in err
    assert not (tmp_path / "x.pt").exists()
