"""EViT: attentive top-k with fusion (pure function) and the backbone pruner."""

from __future__ import annotations

import math

import pytest
import torch

from vppkit.models.pruning.evit import EViTPruner, evit_topk_fuse
from vppkit.models.vit import build_backbone

torch.set_num_threads(1)


def _x(b=3):
    return torch.randn(b, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def test_evit_topk_fuse():
    x = torch.arange(10.0).reshape(1, 5, 2)
    s = torch.tensor([[0.1, 0.5, 0.2, 0.05, 0.15]])
    kept, fused, idx = evit_topk_fuse(x, s, 2)
    assert idx.tolist() == [[1, 2]] and torch.equal(kept, x[:, [1, 2]])
    w = torch.tensor([0.1, 0.05, 0.15])
    expect = (x[0, [0, 3, 4]] * w[:, None]).sum(0) / w.sum()
    assert torch.allclose(fused[0, 0], expect)
    assert evit_topk_fuse(x, s, 5)[1] is None
    with pytest.raises(ValueError):
        evit_topk_fuse(x, s, 6)


@pytest.mark.parametrize("kw", [{}, {"class_token": False}])
def test_modes_agree_and_counts(kw):
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 96, pruner=EViTPruner(), **kw).eval()
    assert m.pruner.needs_attention == {2, 5, 8}
    with torch.no_grad():
        a = m(_x(), execution="masked")
        b = m(_x(), execution="gathered")
        m.gather_impl = "loop"
        c = m(_x(), execution="gathered")
    k1 = math.ceil(36 * 0.7); k2 = math.ceil(k1 * 0.7); k3 = math.ceil(k2 * 0.7)
    assert a.keep.counts[0].tolist() == [36] * 3 + [k1] * 3 + [k2] * 3 + [k3] * 3
    assert torch.equal(a.keep.masks, b.keep.masks) and torch.equal(a.keep.masks, c.keep.masks)
    assert torch.allclose(a.tokens, b.tokens, atol=1e-5) and torch.allclose(a.tokens, c.tokens, atol=1e-5)
    assert not (a.keep.masks[:, 6] & ~a.keep.masks[:, 3]).any()


def test_selects_most_attended_tokens():
    """The mask at block 3 is the top-k of block 2's CLS attention (recomputed independently)."""
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 96, pruner=EViTPruner({3: 0.5})).eval()
    x = _x(2)
    with torch.no_grad():
        out = m(x, return_intermediates=True)
        v = m.vit
        h = v.norm_pre(v._pos_embed(v.patch_embed(x)))
        for blk in v.blocks[:2]:
            h = blk(h)
        blk = v.blocks[2]
        a = blk.attn
        qkv = a.qkv(blk.norm1(h)).reshape(2, 37, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] * a.scale) @ qkv[1].transpose(-2, -1)).softmax(-1)
        cls = attn[:, :, 0, 1:].mean(1)
    top = cls.topk(18, dim=1).indices
    expect = torch.zeros(2, 36, dtype=torch.bool).scatter(1, top, True)
    assert torch.equal(out.keep.masks[:, 3], expect)


def test_bad_rates():
    with pytest.raises(ValueError):
        EViTPruner({0: 0.5})
    with pytest.raises(ValueError):
        EViTPruner({3: 1.5})
