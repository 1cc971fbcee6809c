"""One owner for "tokens kept by method X at block b": each pruner's ``nominal_counts``.

Known answers worked out by hand at N = 12 x 12 = 144; the real pruners keep exactly their nominal counts where
their count is fixed; the FLOPs counter and the benchmark derive their schedules from the pruner at several grids.
"""

from __future__ import annotations

import pytest
import torch

from vppkit.bench import MethodSpec, nominal_counts, nominal_masks, resolve_methods
from vppkit.flops.analytic import get_spec, method_schedule
from vppkit.models.pruning.base import BlockCounts, DensePruner, ExternalMaskPruner
from vppkit.models.pruning.dynamicvit import DynamicViTPruner
from vppkit.models.pruning.evit import EViTPruner, evit_counts
from vppkit.models.pruning.svit import SViTPruner
from vppkit.models.pruning.tome import ToMePruner
from vppkit.models.pruning.vpp import VPPPruner
from vppkit.models.vit import build_backbone

N = 144
GRIDS = [(12, 12), (24, 40), (34, 60)]


# ---- known answers, by hand, N = 144 ----------------------------------------------------------------------
def test_dense_known():
    c = DensePruner().nominal_counts(N, 12)
    assert c.attn == c.mlp == (144,) * 12 and c.pkr == 1.0


def test_dynamicvit_known():
    # floor(144 * 0.7) = floor(100.8) = 100; floor(144 * 0.49) = floor(70.56) = 70; floor(144 * 0.343) = 49
    c = DynamicViTPruner(48, rho=0.7).nominal_counts(N, 12)
    assert list(c.attn) == [144] * 3 + [100] * 3 + [70] * 3 + [49] * 3 and c.mlp == c.attn
    # rho = 0.5: 72, 36, 18
    assert list(DynamicViTPruner(48, rho=0.5).nominal_counts(N, 12).attn) == [144] * 3 + [72] * 3 + [36] * 3 + [18] * 3


def test_vpp_known():
    # pkr55 (m = 0.7, rho = 0.8): Map-SM floor(100.8) = 100; SM targets 144 * 0.56 = 80.64, 144 * 0.448 = 64.512,
    # 144 * 0.3584 = 51.6096 (expected counts: the SMs' count is dynamic)
    c = VPPPruner(48, "pkr55").nominal_counts(N, 12)
    assert list(c.attn) == pytest.approx([144, 100, 100] + [80.64] * 3 + [64.512] * 3 + [51.6096] * 3)
    # first frame: no Map-SM, blocks 1-2 dense
    first = VPPPruner(48, "pkr55").nominal_counts(N, 12, first_frame=True)
    assert list(first.attn[:3]) == [144, 144, 144] and list(first.attn[3:]) == list(c.attn[3:])
    # pkr40 (m = 0.6, rho = 0.7): floor(86.4) = 86; 60.48, 42.336, 29.6352
    c = VPPPruner(48, "pkr40").nominal_counts(N, 12)
    assert list(c.attn) == pytest.approx([144, 86, 86] + [60.48] * 3 + [42.336] * 3 + [29.6352] * 3)


def test_svit_known():
    c = SViTPruner(48).nominal_counts(N, 12)      # targets 0.7, 0.49, 0.343 from block 3
    assert list(c.attn) == pytest.approx([144] * 3 + [100.8] * 3 + [70.56] * 3 + [49.392] * 3)


def test_evit_known():
    # vppkit's pruner: ceil(0.7 * 144) = ceil(100.8) = 101, ceil(70.7) = 71, ceil(49.7) = 50, whole block pruned
    c = EViTPruner().nominal_counts(N, 12)
    assert list(c.attn) == [144] * 3 + [101] * 3 + [71] * 3 + [50] * 3 and c.mlp == c.attn
    # official EViT (fused token, pruning inside the block): 101 + 1 = 102; ceil(71.4) + 1 = 73; ceil(51.1) + 1 = 53
    o = evit_counts(N, 12, {3: 0.7, 6: 0.7, 9: 0.7}, fused_token=True, inside_block=True)
    assert list(o.attn) == [144] * 4 + [102] * 3 + [73] * 3 + [53] * 2
    assert list(o.mlp) == [144] * 3 + [102] * 3 + [73] * 3 + [53] * 3
    # a rate that keeps every token prunes nothing and adds no fused token
    assert evit_counts(4, 12, {3: 0.9}, fused_token=True).attn == (4,) * 12


def test_tome_known():
    # r = 13: 144 - 13 = 131, ... , 27 - 13 = 14, then min(13, 14 // 2) = 7 -> 7, then min(13, 3) = 3 -> 4
    c = ToMePruner(13).nominal_counts(N, 12)
    assert list(c.attn) == [144, 131, 118, 105, 92, 79, 66, 53, 40, 27, 14, 7]
    assert list(c.mlp) == [131, 118, 105, 92, 79, 66, 53, 40, 27, 14, 7, 4]


def test_layout_errors():
    with pytest.raises(ValueError):
        SViTPruner(48).nominal_counts(N, 6)
    with pytest.raises(ValueError):
        VPPPruner(48).nominal_counts(N, 6)
    with pytest.raises(ValueError):
        ToMePruner(2).nominal_counts(N, 6)
    with pytest.raises(ValueError):
        DynamicViTPruner(48).nominal_counts(N, 6)
    with pytest.raises(ValueError):
        ExternalMaskPruner().nominal_counts(N, 12)
    with pytest.raises(ValueError):
        BlockCounts(N, (1.0, 2.0), (1.0,))


# ---- the real pruners keep their nominal counts where the count is fixed --------------------------------
@pytest.mark.parametrize("make", [lambda c: DynamicViTPruner(c, rho=0.7), lambda c: EViTPruner(),
                                  lambda c: ToMePruner(3)])
def test_fixed_count_pruners_keep_their_nominal_counts(make):
    bb = build_backbone("vit_nano", (64, 96), pruner=make(48)).eval()     # N = 4 x 6 = 24
    with torch.inference_mode():
        rec = bb(torch.rand(2, 3, 64, 96)).keep
    nominal = bb.pruner.nominal_counts(24, 12)
    assert rec.counts.tolist() == [list(nominal.attn)] * 2
    if "mlp_counts" in rec.meta:
        assert list(rec.meta["mlp_counts"]) == list(nominal.mlp)


def test_vpp_map_sm_keeps_its_nominal_count():
    bb = build_backbone("vit_nano", (64, 96), pruner=VPPPruner(48, "pkr55", inference_noise=False)).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.inference_mode():
        first = bb(x)
        second = bb(x, first.state.detach())
    assert first.keep.counts[:, 1:3].tolist() == [[24, 24]] * 2                          # first frame: dense
    assert second.keep.counts[:, 1:3].tolist() == [[16, 16]] * 2                         # floor(24 * 0.7) = 16
    assert list(bb.pruner.nominal_counts(24, 12).attn[1:3]) == [16, 16]


# ---- consumers derive their schedules from the pruner -----------------------------------------------------
@pytest.mark.parametrize("grid", GRIDS)
def test_flops_counter_uses_the_pruners_counts(grid):
    spec = get_spec("deit_small")
    n, c = grid[0] * grid[1], spec.embed_dim
    cases = [("dense", {}, DensePruner()),
             ("vpp", {}, VPPPruner(c, "pkr55")),
             ("vpp", {"keep": 0.6, "rho": 0.7}, VPPPruner(c, "pkr40")),
             ("svit", {}, SViTPruner(c)),
             ("svit", {"rho": 0.5}, SViTPruner(c, targets=[0.5] * 3 + [0.25] * 3 + [0.125] * 3)),
             ("dynamicvit", {"rho": 0.6}, DynamicViTPruner(c, rho=0.6)),
             ("tome", {"tome_r": 9}, ToMePruner(9))]
    for method, kw, pruner in cases:
        sched = method_schedule(method, spec, grid, **kw)[0]
        want = pruner.nominal_counts(n, 12)
        assert list(sched.attn) == pytest.approx(list(want.attn), rel=1e-12), (method, kw)
        assert list(sched.mlp) == pytest.approx(list(want.mlp), rel=1e-12), (method, kw)
    # EViT: the counter reports the official form of the pruner's rule (fused token, pruning inside the block)
    sched = method_schedule("evit", spec, grid, keep=0.6)[0]
    want = evit_counts(n, 12, EViTPruner({3: 0.6, 6: 0.6, 9: 0.6}).keep_rates, fused_token=True, inside_block=True)
    assert (sched.attn, sched.mlp) == (want.attn, want.mlp)
    assert sched.mlp[3] == EViTPruner({3: 0.6}).nominal_counts(n, 12).attn[3] + 1       # same keep count + fused


@pytest.mark.parametrize("grid", GRIDS)
def test_benchmark_uses_the_pruners_counts(grid):
    n = grid[0] * grid[1]
    for spec in resolve_methods(["dense", "vpp", "svit", "dynamicvit", "evit", "tome"], num_patches=n):
        p = spec.params
        pruner = {"dense": lambda: DensePruner(),
                  "vpp": lambda: VPPPruner(48, p.get("schedule", "pkr55")),
                  "svit": lambda: SViTPruner(48, targets=p.get("targets", ())),
                  "dynamicvit": lambda: DynamicViTPruner(48, rho=p.get("rho", 0.7)),
                  "evit": lambda: EViTPruner(p.get("keep_rates")),
                  "tome": lambda: ToMePruner(p.get("r", 0))}[spec.method]()
        counts = nominal_counts(spec, n)
        exact = pruner.nominal_counts(n, 12).attn
        assert counts == [round(v) for v in exact], spec.name     # integers: exact counts, targets rounded
        if spec.method != "tome":
            masks = nominal_masks(spec, n, batch=2)
            assert masks.sum(-1).tolist() == [counts] * 2


def test_benchmark_spec_json_round_trip():
    spec = MethodSpec("e", "evit", 0.5, {"keep_rates": {"3": 0.5, "6": 0.5, "9": 0.5}})    # keys as JSON gives them
    assert nominal_counts(spec, 144) == [144] * 3 + [72] * 3 + [36] * 3 + [18] * 3
