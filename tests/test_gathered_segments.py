"""Gathered inference that stays gathered between mask changes (issue 15) gives the block-by-block result.

Reference: the same model with every point a full-grid point (``full_token_points = all``), which runs
``run_block_gathered`` block by block, the path tested against masked execution in test_vit_backbone.py.
"""

from __future__ import annotations

import pytest
import torch

from vppkit.models.blocks import run_block_gathered, run_blocks_gathered
from vppkit.models.pruning.base import ExternalMaskPruner, ForcedSchedulePruner, mask_change_points
from vppkit.models.pruning.vpp import VPPPruner
from vppkit.models.vit import build_backbone

ALL_POINTS = frozenset(range(13))


def _pair(model, *args):
    with torch.inference_mode():
        seg = model(*args)
        model.full_token_points = ALL_POINTS
        ref = model(*args)
        model.full_token_points = frozenset()
    return seg, ref


def _nested_masks(b, n, counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(b, len(counts), n, dtype=torch.bool)
    for i in range(b):
        order = torch.randperm(n, generator=g)
        for j, k in enumerate(counts):
            m[i, j, order[: k if isinstance(k, int) else k[i]]] = True
    return m


def test_mask_change_points_known_answer():
    m = _nested_masks(2, 6, [6, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1])
    assert mask_change_points(m) == frozenset({0, 1, 3, 7})


@pytest.mark.parametrize("impl", ["auto", "pad", "loop"])
@pytest.mark.parametrize("equal", [True, False])
def test_external_masks_segments_equal_block_by_block(impl, equal):
    n = 16
    counts = [16, 10, 10, 7, 7, 7, 5, 5, 5, 3, 3, 3] if equal else \
        [16, (10, 12), (10, 12), (7, 4), (7, 4), (7, 4), (5, 2), (5, 2), (5, 2), (3, 0), (3, 0), (3, 0)]
    masks = _nested_masks(2, n, counts)
    m = build_backbone("vit_nano", 64, pruner=ExternalMaskPruner(), gather_impl=impl).eval()
    x = torch.rand(2, 3, 64, 64)
    seg, ref = _pair(m, x, masks)
    assert torch.allclose(seg.tokens, ref.tokens, atol=1e-5) and torch.allclose(seg.prefix, ref.prefix, atol=1e-5)
    assert torch.equal(seg.keep.masks, ref.keep.masks) and torch.equal(seg.keep.masks, masks)


def test_vpp_segments_equal_block_by_block_and_state():
    m = build_backbone("vit_nano", 64, pruner=VPPPruner(48, "pkr40", inference_noise=False)).eval()
    assert m.pruner.full_token_points(12, None) == frozenset({1, 3, 6, 9})
    x0, x1 = torch.rand(2, 2, 3, 64, 64)
    with torch.inference_mode():
        st = m(x0).state.detach()
    seg, ref = _pair(m, x1, st)
    assert torch.equal(seg.keep.masks, ref.keep.masks)
    assert torch.allclose(seg.tokens, ref.tokens, atol=1e-5)
    for a, b in ((seg.state.key, ref.state.key), (seg.state.value, ref.state.value)):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(seg.state.mask, ref.state.mask)
    assert torch.equal(seg.keep.overhead_macs, ref.keep.overhead_macs)


def test_forced_schedule_points_include_mask_changes():
    masks = _nested_masks(1, 16, [16, 10, 10, 7, 7, 7, 5, 5, 5, 3, 3, 3])
    f = ForcedSchedulePruner(VPPPruner(48, "pkr40", inference_noise=False), masks)
    assert f.full_token_points(12, None) == frozenset({0, 1, 3, 6, 9})


def test_host_points_and_grad_fall_back():
    m = build_backbone("vit_nano", 64, pruner=ExternalMaskPruner()).eval()
    m.full_token_points = frozenset({5})
    masks = _nested_masks(1, 16, [16, 10, 10, 7, 7, 7, 5, 5, 5, 3, 3, 3])
    with torch.inference_mode():
        assert m._full_points("gathered", False, m.pruner.begin(torch.zeros(1, 16, 48), (4, 4), masks), 12) \
            == frozenset({0, 1, 3, 5, 6, 9})
    with torch.enable_grad():
        assert m._full_points("gathered", False, None, 12) is None      # autograd on: block by block


def test_run_blocks_gathered_equals_chain_of_single_blocks():
    blocks = build_backbone("vit_nano", 64).vit.blocks[:3].eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 17, 48, generator=g)
    keep = (torch.rand(3, 16, generator=g) < 0.5).float()
    with torch.inference_mode():
        ref = x
        for blk in blocks:
            ref, _ = run_block_gathered(blk, ref, keep, 1, impl="pad")
        for impl in ("pad", "loop", "auto"):
            assert torch.allclose(run_blocks_gathered(blocks, x, keep, 1, impl), ref, atol=1e-5)
            own = x.clone()                  # inplace: the result is written into the caller's tensor
            out = run_blocks_gathered(blocks, own, keep, 1, impl, inplace=True)
            assert out.data_ptr() == own.data_ptr() and torch.allclose(own, ref, atol=1e-5)
        keep[0] = 0.0                        # a sample with nothing kept and no prefix: carried unchanged
        out = run_blocks_gathered(blocks, x[:, 1:], keep, 0, "pad")
        assert torch.equal(out[0], x[0, 1:])
