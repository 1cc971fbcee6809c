"""Analytic ViT MACs (vppkit.flops.analytic): closed forms, published numbers, schedules."""

from __future__ import annotations

import pytest

from vppkit.flops.analytic import (
    ViTSpec,
    backbone_macs,
    block_macs,
    dense_schedule,
    dynamicvit_predictor_macs,
    get_spec,
    method_schedule,
    patch_embed_macs,
    ratio_schedule,
)


def test_block_closed_form_hand_case():
    # n=10, C=4, r=4: qkv 3*10*16=480, QK^T 100*4=400, AV 400, proj 160, MLP 2*4*10*16=1280 -> 2720
    t = block_macs(10, 4, 4.0)
    assert t == {"qkv": 480, "attn_qk": 400, "attn_av": 400, "proj": 160, "mlp": 1280, "total": 2720}
    assert t["total"] == 12 * 10 * 16 + 2 * 100 * 4
    assert block_macs(10, 4, 4.0, include_attention=False)["total"] == 2720 - 800
    # separate MLP count (EViT / ToMe): MLP on 6 tokens
    assert block_macs(10, 4, 4.0, n_mlp=6)["mlp"] == 2 * 4 * 6 * 16


def test_patch_embed_and_grid():
    assert patch_embed_macs(196, 384, 16, 3) == 196 * 768 * 384
    spec = get_spec("deit_small")
    assert spec.grid(224) == (14, 14) and spec.grid((480, 640)) == (30, 40)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        spec.grid(225)
    with pytest.raises(KeyError, match="unknown arch"):
        get_spec("resnet50")


@pytest.mark.parametrize("arch,published", [("deit_tiny", 1.3), ("deit_small", 4.6), ("deit_base", 17.6)])
def test_published_dense_deit(arch, published):
    """DeiT Table 1 (Touvron et al. 2021): Ti 1.3, S 4.6, B 17.6 GFLOPs (fvcore MACs, head included)."""
    g = backbone_macs(get_spec(arch), dense_schedule(196), include_head=True).gmacs
    assert round(g, 1) == published


def test_published_pruned_deit_small():
    spec = get_spec("deit_small")
    # DynamicViT-DeiT-S/0.7: 2.9 GFLOPs published (Rao et al. 2021). Our backbone count matches; the three
    # predictors add ~0.10 G on kept tokens (0.14 G on all N as vppkit runs them), reported separately.
    dyn = method_schedule("dynamicvit", spec, (14, 14), rho=0.7)[0]
    assert [int(a) for a in dyn.attn] == [196] * 3 + [137] * 3 + [96] * 3 + [67] * 3
    assert round(backbone_macs(spec, dyn, include_head=True).gmacs, 1) == 2.9
    # EViT-DeiT-S/0.7 ~3.0 G (official: fused token, pruning inside blocks 3/6/9), ToMe DeiT-S r=13 2.7 G
    # (anchors.md §3-4)
    evit = method_schedule("evit", spec, (14, 14), keep=0.7)[0]
    # ceil(.7 * 196) = 138 (+ fused = 139), ceil(.7 * 139) = 98 (+ 1 = 99), ceil(.7 * 99) = 70 (+ 1 = 71)
    assert list(evit.attn) == [196] * 4 + [139] * 3 + [99] * 3 + [71] * 2
    assert list(evit.mlp) == [196] * 3 + [139] * 3 + [99] * 3 + [71] * 3
    assert round(backbone_macs(spec, evit, include_head=True).gmacs, 1) == 3.0
    tome = method_schedule("tome", spec, (14, 14), tome_r=13)[0]
    assert list(tome.attn)[:3] == [196, 183, 170] and list(tome.mlp)[:3] == [183, 170, 157]
    assert round(backbone_macs(spec, tome, include_head=True).gmacs, 1) == 2.7


def test_overhead_reported_separately():
    spec = get_spec("deit_small")
    sched, over, note = method_schedule("dynamicvit", spec, (14, 14))
    res = backbone_macs(spec, sched, overhead_macs=over, include_head=True)
    assert res.overhead == over > 0
    assert res.total == pytest.approx(res.backbone + over)
    assert res.summary()["overhead_GMACs"] == pytest.approx(over / 1e9)
    assert "predictors" in note


def test_dynamicvit_predictor_formula_matches_module():
    from vppkit.models.pruning.dynamicvit import DynamicViTPredictor

    for c, n in ((48, 16), (384, 196)):
        assert dynamicvit_predictor_macs(n, c) == pytest.approx(DynamicViTPredictor(c).macs(n))


def test_vpp_schedule_pkr_and_method_schedules():
    """vpp-notes §11.1: 0.55PKR config (m=0.7, rho=0.8) -> 54.16 %, 0.4PKR (m=0.6, rho=0.7) -> 41.33 %."""
    spec = get_spec("deit_tiny")
    # N = 10 x 10 = 100: N m is an integer, so the nominal PKR is the closed form's
    assert method_schedule("vpp", spec, (10, 10))[0].pkr == pytest.approx(0.5416, abs=1e-4)
    assert method_schedule("vpp", spec, (10, 10), keep=0.6, rho=0.7)[0].pkr == pytest.approx(0.41328, abs=1e-4)
    # N = 14 x 14 = 196: Map-SM keeps floor(196 * 0.7) = 137 (not 137.2), SMs target 196 * 0.7 * 0.8^i
    vpp = method_schedule("vpp", spec, (14, 14))[0]
    assert list(vpp.attn[:3]) == [196, 137, 137]
    assert list(vpp.attn[3:]) == pytest.approx([109.76] * 3 + [87.808] * 3 + [70.2464] * 3)
    for m in ("dense", "vpp", "svit", "dynamicvit", "evit", "tome"):
        sched, over, _ = method_schedule(m, spec, (14, 14))
        assert sched.depth == 12 and over >= 0
        assert backbone_macs(spec, sched).total <= backbone_macs(spec, dense_schedule(196)).total
    with pytest.raises(ValueError, match="unknown method"):
        method_schedule("foo", spec, (14, 14))
    with pytest.raises(ValueError, match="block-ratios"):
        method_schedule("tome", spec, (14, 14), block_ratios=[1.0] * 12)


def test_ratio_schedule_validation_and_depth_check():
    s = ratio_schedule(100, [1.0] + [0.5] * 11, "svit")
    assert s.pkr == pytest.approx((1 + 5.5) / 12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ratio_schedule(100, [1.2] * 12)
    with pytest.raises(ValueError, match="blocks"):
        backbone_macs(get_spec("deit_tiny"), ratio_schedule(100, [1.0] * 6))


def test_spec_from_timm():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0)
    spec = ViTSpec.from_timm(vit)
    assert (spec.embed_dim, spec.depth, spec.num_heads, spec.mlp_ratio, spec.num_prefix) == (192, 12, 3, 4.0, 1)
