"""PrunableViT: dense parity with timm, execution modes, batching, checkpoints, explicit state."""

from __future__ import annotations

import pytest
import timm
import torch

from vppkit.models.pruning.base import ExternalMaskPruner
from vppkit.models.blocks import run_block_gathered, run_block_masked
from vppkit.models.records import tokens_to_map
from vppkit.models.vit import ARCHS, PrunableViT, build_backbone

torch.set_num_threads(1)


def _images(b=2, size=64, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _masks(b, n, seed=1, p=0.5):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(b, 12, n, generator=g) < p
    m[:, 0] = True
    return m


def test_dense_equals_timm_forward_features():
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 64).eval()
    x = _images()
    with torch.no_grad():
        out = m(x, return_intermediates=True)
        ref = m.vit.forward_features(x)
    assert out.grid == (4, 4)
    assert torch.equal(out.tokens, ref[:, 1:]) and torch.equal(out.prefix, ref[:, :1])
    assert len(out.intermediates) == 13
    assert torch.equal(out.keep.counts, torch.full((2, 12), 16))
    assert float(out.aux_loss) == 0.0 and out.state is None
    assert out.feature_map().shape == (2, 48, 4, 4)
    # masked mode of a dense pruner is the same computation
    m.train()
    with torch.no_grad():
        assert torch.allclose(m(x).tokens, ref[:, 1:], atol=1e-6)


def test_intermediates_follow_blocks():
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 64).eval()
    x = _images(1)
    with torch.no_grad():
        out = m(x, return_intermediates=True)
        h = m.vit.norm_pre(m.vit._pos_embed(m.vit.patch_embed(x)))
        assert torch.equal(out.intermediates[0], h[:, 1:])
        for b in range(12):
            h = m.vit.blocks[b](h)
            assert torch.allclose(out.intermediates[b + 1], h[:, 1:], atol=1e-6)


def test_no_class_token_and_registers():
    torch.manual_seed(0)
    for kw, p in (({"class_token": False}, 0), ({"reg_tokens": 2}, 3)):
        m = build_backbone("vit_nano", 64, **kw).eval()
        x = _images()
        with torch.no_grad():
            out = m(x)
            ref = m.vit.forward_features(x)
        assert out.prefix.shape[1] == p
        assert torch.equal(out.tokens, ref[:, p:])


@pytest.mark.parametrize("kw", [{}, {"class_token": False}])
def test_masked_equals_gathered_on_kept_tokens(kw):
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 64, pruner=ExternalMaskPruner(), **kw).eval()
    x = _images(3)
    masks = _masks(3, 16)
    masks[1, 5:] = False                      # a sample with nothing kept at late blocks
    with torch.no_grad():
        a = m(x, masks, execution="masked", return_intermediates=True)
        b = m(x, masks, execution="gathered", return_intermediates=True)
        m.gather_impl = "loop"
        c = m(x, masks, execution="gathered")
    assert torch.isfinite(a.tokens).all()
    assert torch.equal(a.keep.masks, masks) and torch.equal(b.keep.masks, masks)
    assert torch.allclose(a.tokens, b.tokens, atol=1e-5)
    assert torch.allclose(a.tokens, c.tokens, atol=1e-5)
    for xa, xb in zip(a.intermediates, b.intermediates):
        assert torch.allclose(xa, xb, atol=1e-5)
    # pruned tokens carry their last value: a token pruned at block b is unchanged by block b
    for blk in range(1, 12):
        dropped = ~masks[:, blk]
        assert torch.equal(a.intermediates[blk + 1][dropped], a.intermediates[blk][dropped])
    assert torch.equal(b.keep.counts, masks.sum(-1))


@pytest.mark.parametrize("impl", ["auto", "pad", "loop"])
def test_gathered_batch_equals_single_runs(impl):
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 64, pruner=ExternalMaskPruner(), gather_impl=impl).eval()
    x = _images(4)
    masks = torch.stack([_masks(1, 16, seed=s, p=q)[0] for s, q in zip(range(4), (0.2, 0.5, 0.8, 1.0))])
    assert len(set(masks[:, 6].sum(-1).tolist())) > 1            # different kept counts per sample
    with torch.no_grad():
        full = m(x, masks)
        singles = torch.cat([m(x[i:i + 1], masks[i:i + 1]).tokens for i in range(4)])
    assert torch.allclose(full.tokens, singles, atol=1e-5)


def test_gathered_keeps_straight_through_gradient():
    torch.manual_seed(0)
    blk = build_backbone("vit_nano", 64).vit.blocks[3]
    x = torch.randn(2, 17, 48)
    soft = torch.rand(2, 16, requires_grad=True)
    hard = (soft > 0.5).float()
    keep = hard - soft.detach() + soft
    ym, _ = run_block_masked(blk, x, keep, 1)
    yg, _ = run_block_gathered(blk, x, keep, 1)
    gm, = torch.autograd.grad(ym.square().sum(), soft)
    gg, = torch.autograd.grad(yg.square().sum(), soft)
    assert torch.allclose(ym, yg, atol=1e-5)
    kept = hard.bool()
    # masked mode: gradient at every gate; gathered: the same gradient at kept tokens, none at pruned ones
    assert (gm[~kept] != 0).all() and (gm[kept] != 0).all()
    assert torch.allclose(gm[kept], gg[kept], atol=1e-4) and (gg[~kept] == 0).all()


def test_attention_stats_agree_between_modes():
    torch.manual_seed(0)
    blk = build_backbone("vit_nano", 64).vit.blocks[2].eval()
    x = torch.randn(3, 17, 48)
    keep = (torch.rand(3, 16) > 0.4).float()
    ym, am = run_block_masked(blk, x, keep, 1, want_attn=True, has_cls=True)
    yg, ag = run_block_gathered(blk, x, keep, 1, want_attn=True, has_cls=True)
    yl, al = run_block_gathered(blk, x, keep, 1, want_attn=True, has_cls=True, impl="loop")
    for a in (ag, al):
        assert torch.allclose(am.cls, a.cls, atol=1e-6) and torch.allclose(am.received, a.received, atol=1e-6)
    assert torch.allclose(ym, yg, atol=1e-5) and torch.allclose(ym, yl, atol=1e-5)
    assert (am.cls[keep == 0] == 0).all()
    # CLS attention over kept patches + CLS itself sums to 1
    with torch.no_grad():
        ref = blk(x, attn_mask=torch.cat([torch.ones(3, 1, dtype=torch.bool), keep.bool()], 1)[:, None, None])
    assert torch.allclose(ym[:, 0], ref[:, 0], atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    plain = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0)
    m = build_backbone("vit_tiny", 64).eval()
    assert list(m.timm_state_dict().keys()) == list(plain.state_dict().keys())
    path = tmp_path / "vit.pth"
    torch.save(plain.state_dict(), path)
    m.load_timm_checkpoint(path)
    plain.eval()
    x = _images(1)
    with torch.no_grad():
        assert torch.equal(m(x).tokens, plain.forward_features(x)[:, 1:])
    # save from PrunableViT, load in plain timm
    torch.save(m.timm_state_dict(), tmp_path / "back.pth")
    plain2 = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0)
    plain2.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True), strict=True)
    # a classification checkpoint at another size: head dropped, pos embed resampled, via build_backbone
    cls = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=96)
    torch.save({"model": cls.state_dict()}, tmp_path / "cls.pth")
    m2 = build_backbone("deit_tiny", 64, checkpoint=tmp_path / "cls.pth")
    assert torch.equal(m2.vit.blocks[0].attn.qkv.weight, cls.blocks[0].attn.qkv.weight)
    assert m2.vit.pos_embed.shape == (1, 17, 192)
    with pytest.raises(RuntimeError, match="bad.pth"):
        torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
        m.load_timm_checkpoint(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        m.load_timm_checkpoint(tmp_path / "missing.pth")


def test_arch_shapes():
    expect = {"vit_nano": (48, 2, 16), "vit_micro": (96, 3, 16), "vit_tiny": (192, 3, 16),
              "vit_small_patch14_dinov2": (384, 6, 14)}
    for arch, (c, h, p) in expect.items():
        m = build_backbone(arch, 4 * p)
        assert (m.embed_dim, m.vit.blocks[0].attn.num_heads, m.patch_size[0], m.depth) == (c, h, p, 12)
    assert {"vit_small", "vit_base", "deit_small", "deit_base"} <= set(ARCHS)
    with pytest.raises(ValueError, match="unknown backbone arch"):
        build_backbone("vit_huge", 64)


def test_dynamic_img_size_and_bad_inputs():
    m = build_backbone("vit_nano", 64, dynamic_img_size=True).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 48, 80))
    assert out.grid == (3, 5) and out.tokens.shape == (1, 15, 48)
    fixed = build_backbone("vit_nano", 64)
    with pytest.raises(ValueError, match="grid"):
        fixed(torch.randn(1, 3, 48, 80))
    with pytest.raises(ValueError, match="execution"):
        fixed(torch.randn(1, 3, 64, 64), execution="sparse")
    with pytest.raises(ValueError, match="images"):
        fixed(torch.randn(3, 64, 64))
    with pytest.raises(TypeError):
        PrunableViT(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ExternalMaskPruner"):
        build_backbone("vit_nano", 64, pruner=ExternalMaskPruner())(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError):
        tokens_to_map(torch.zeros(1, 15, 4), (4, 4))


def test_forward_does_not_change_module_state():
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 64, pruner=ExternalMaskPruner()).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    attrs = {n: dict(vars(mod)) for n, mod in m.named_modules()}
    x, masks = _images(), _masks(2, 16)
    with torch.no_grad():
        o1 = m(x, masks)
        o2 = m(x, masks)
    assert torch.equal(o1.tokens, o2.tokens)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    for n, mod in m.named_modules():
        assert vars(mod).keys() == attrs[n].keys()


def _count_block_calls(bb):
    calls = []
    for i, blk in enumerate(bb.vit.blocks):
        blk.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    return calls


def test_forward_intermediates_equal_forward_intermediates():
    bb = build_backbone("vit_nano", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = bb(x, return_intermediates=True)
        out, feats = bb.forward_intermediates(x)
        last3 = bb.forward_intermediates(x, 3, intermediates_only=True)
        picked = bb.forward_intermediates(x, [5, 0], return_prefix_tokens=True, norm=True, intermediates_only=True)
    assert len(feats) == 13
    for a, b in zip(feats, ref.intermediates):
        assert torch.equal(a, b)
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.keep.masks, ref.keep.masks)
    assert [torch.equal(a, b) for a, b in zip(last3, ref.intermediates[10:])] == [True] * 3
    # ascending order; x_12 normed is the final output
    (p0, c0), (p5, c5) = picked
    assert c0.shape == (2, 1, 48) and torch.allclose(p5, bb.vit.norm(ref.intermediates[5]), atol=1e-6)
    final = bb.forward_intermediates(x, [12], norm=True, return_prefix_tokens=True, intermediates_only=True)[0]
    with torch.no_grad():
        assert torch.equal(final[0], ref.tokens) and torch.equal(final[1], ref.prefix)


def test_forward_intermediates_stop_early_runs_only_the_blocks_needed():
    bb = build_backbone("vit_nano", img_size=64).eval()
    calls = _count_block_calls(bb)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = bb(x, return_intermediates=True)
        calls.clear()
        out, [x3] = bb.forward_intermediates(x, [3], stop_early=True)
    assert calls == [0, 1, 2] and out is None          # x_3 = output of block 2; blocks 3..11 not run
    assert torch.equal(x3, ref.intermediates[3])
    calls.clear()
    with torch.no_grad():
        bb.forward_intermediates(x, [0], stop_early=True)
        assert calls == []
        out, _ = bb.forward_intermediates(x, [12], stop_early=True)
    assert len(calls) == 12 and out is not None
    with pytest.raises(ValueError, match="feature indices"):
        bb.forward_intermediates(x, [13])
    with pytest.raises(ValueError, match="last n features"):
        bb.forward_intermediates(x, 0)


def test_forward_intermediates_pass_the_pruner_state():
    bb = build_backbone("vit_nano", img_size=64, pruner=ExternalMaskPruner()).eval()
    x = torch.randn(1, 3, 64, 64)
    masks = torch.ones(12, 16, dtype=torch.bool)
    masks[2:, :8] = False
    with torch.no_grad():
        ref = bb(x, masks, return_intermediates=True)
        out, feats = bb.forward_intermediates(x, state=masks)
    assert all(torch.equal(a, b) for a, b in zip(feats, ref.intermediates))
    assert torch.equal(out.keep.masks[0], masks)


def test_patch_grid_without_building_matches_the_built_model():
    from vppkit.models.vit import arch_patch_size, patch_grid

    assert arch_patch_size("vit_small_patch14_dinov2") == 14 and arch_patch_size("vit_nano") == 16
    assert patch_grid("vit_small_patch14_dinov2", (84, 98)) == (6, 7) and patch_grid("vit_tiny", 96) == (6, 6)
    for arch in ("vit_tiny", "vit_nano", "vit_small_patch14_dinov2"):
        size = (112, 224)
        assert patch_grid(arch, size) == build_backbone(arch, img_size=size).grid_for(*size), arch
    with pytest.raises(ValueError, match="unknown backbone arch"):
        patch_grid("nope", 64)
