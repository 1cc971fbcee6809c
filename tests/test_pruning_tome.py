"""ToMe: bipartite soft matching, merge / unmerge, backbone integration (gathered only)."""

from __future__ import annotations

import pytest
import torch

from vppkit.models.pruning.tome import (ToMePruner, bipartite_soft_matching, merge_source, merge_wavg,
                                        unmerge_to_grid)
from vppkit.models.vit import build_backbone

torch.set_num_threads(1)


def _x(b=3):
    return torch.randn(b, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def test_bipartite_matching_merges_most_similar_pair():
    # token 0 (set A) and token 1 (set B) are identical; others orthogonal-ish
    x = torch.eye(6).unsqueeze(0)
    x[0, 0] = x[0, 1]
    merge, unmerge = bipartite_soft_matching(x, 1)
    size = torch.ones(1, 6, 1)
    y, s = merge_wavg(merge, x, size)
    assert y.shape == (1, 5, 6) and s.sum() == 6 and s.max() == 2
    src = merge_source(merge, torch.eye(6).unsqueeze(0))
    assert src.sum(1).eq(1).all()                                   # a partition of the 6 positions
    merged_row = src[0, s[0, :, 0] == 2][0]
    assert merged_row.nonzero().flatten().tolist() == [0, 1]
    back = unmerge(y)
    assert torch.allclose(back[0, 0], back[0, 1])
    assert torch.allclose(unmerge_to_grid(y, src), back)
    m0, u0 = bipartite_soft_matching(x, 0)
    assert m0(x) is x and u0(x) is x


def test_r0_equals_dense_and_masked_raises():
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 96, pruner=ToMePruner(r=0, prop_attn=True)).eval()
    with torch.no_grad():
        out = m(_x())
        ref = m.vit.forward_features(_x())
    assert torch.allclose(out.tokens, ref[:, 1:], atol=1e-5)
    with pytest.raises(ValueError, match="masked"):
        m(_x(), execution="masked")
    m.train()
    with pytest.raises(ValueError, match="masked"):
        m(_x())
    out = m(_x(), execution="gathered")
    out.tokens.sum().backward()
    assert m.vit.blocks[0].attn.qkv.weight.grad is not None


def test_counts_representatives_batch():
    torch.manual_seed(0)
    m = build_backbone("vit_nano", 96, pruner=ToMePruner(r=3)).eval()
    x = _x(4)
    with torch.no_grad():
        out = m(x, return_intermediates=True)
        singles = torch.cat([m(x[i:i + 1]).tokens for i in range(4)])
    assert out.keep.counts[0].tolist() == [36, 33, 30, 27, 24, 21, 18, 15, 12, 9, 6, 3]
    assert out.keep.meta["mlp_counts"][-1] == 2
    assert torch.allclose(out.tokens, singles, atol=1e-5)
    assert len(out.intermediates) == 13 and out.intermediates[5].shape == (4, 36, 48)
    # in an unmerged intermediate, the merged groups share one value: #distinct rows == tokens left
    distinct = torch.unique(out.intermediates[12][0], dim=0).shape[0]
    assert distinct == out.keep.meta["mlp_counts"][-1]
    with pytest.raises(ValueError):
        ToMePruner(r=[1] * 5)
