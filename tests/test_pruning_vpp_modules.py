"""VPP pure parts: schedules / PKR arithmetic, Map-SM, SM, sparsity loss, TemporalState (vpp-notes §3-5, §7, §11)."""

from __future__ import annotations

import math

import pytest
import torch

from vppkit.models.pruning.schedules import PRESETS, VPPSchedule, keep_count, nominal_pkr, rho_for_pkr
from vppkit.models.pruning.vpp import TemporalState, vpp_sparsity_loss
from vppkit.models.pruning.vpp_modules import SM, MapSM, map_sm_macs, sm_macs, spatial_prior

B, H, W, C = 2, 4, 6, 16
N = H * W


def _inputs(seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(B, N, C, generator=g).requires_grad_(requires_grad) for _ in range(3)]
    mask_prev = torch.rand(B, N, generator=g) > 0.5
    mask_prev[:, 0] = True
    return (*xs, mask_prev)


# ---------------------------------------------------------------- schedules / PKR arithmetic
def test_nominal_pkr_of_presets():
    assert nominal_pkr("pkr55") == pytest.approx(0.5416, abs=1e-4)
    assert nominal_pkr("pkr40") == pytest.approx(0.41328, abs=1e-4)
    # closed form (1 + 2m + 3(k1 + k2 + k3)) / 12
    for name, (m, rho) in PRESETS.items():
        k = [m * rho ** i for i in (1, 2, 3)]
        assert nominal_pkr(name) == pytest.approx((1 + 2 * m + 3 * sum(k)) / 12)


def test_block_keep_fractions_layout():
    s = VPPSchedule.preset("pkr55")
    k1, k2, k3 = s.sm_targets
    assert s.sm_targets == pytest.approx((0.56, 0.448, 0.3584))
    assert s.block_keep_fractions() == pytest.approx([1, .7, .7, k1, k1, k1, k2, k2, k2, k3, k3, k3])
    first = s.block_keep_fractions(first_frame=True)
    assert first[:3] == [1.0, 1.0, 1.0] and first[3:] == pytest.approx([k1] * 3 + [k2] * 3 + [k3] * 3)
    # first-frame correction (§11.1): 54.33 % at L = 30 frames
    assert s.video_pkr(30) == pytest.approx(0.5416 + 2 * (1 - 0.7) / (12 * 30), abs=1e-9)


def test_pkr40_is_the_same_for_small():
    # §11.3: the Small 0.4 config copy bug is fixed; one preset, m = 0.6, rho = 0.7
    s = VPPSchedule.preset("pkr40")
    assert (s.m, s.rho) == (0.6, 0.7)
    with pytest.raises(KeyError, match="pkr55"):
        VPPSchedule.preset("pkr40_small")


def test_rho_for_pkr_matches_notes():
    assert rho_for_pkr(0.55, 0.7) == pytest.approx(0.8105, abs=1e-4)
    assert rho_for_pkr(0.40, 0.6) == pytest.approx(0.6767, abs=1e-4)
    # reported PKRs -> rho (§11.2)
    assert rho_for_pkr(0.527, 0.7) == pytest.approx(0.781, abs=1e-3)
    assert rho_for_pkr(0.393, 0.6) == pytest.approx(0.664, abs=1e-3)
    rho = rho_for_pkr(0.55, 0.7)
    assert rho + rho ** 2 + rho ** 3 == pytest.approx((12 * 0.55 - 1 - 1.4) / 2.1)
    with pytest.raises(ValueError, match="not reachable"):
        rho_for_pkr(0.9, 0.6)
    with pytest.raises(ValueError, match="fraction"):
        rho_for_pkr(55, 0.7)


def test_keep_count_floor():
    assert keep_count(2040, 0.7) == 1428 and keep_count(2040, 0.6) == 1224
    assert keep_count(10, 0.75) == 7
    with pytest.raises(ValueError):
        keep_count(10, 0.0)
    with pytest.raises(ValueError):
        keep_count(3, 0.2)


# ---------------------------------------------------------------- Map-SM
def test_spatial_prior_values():
    d = spatial_prior((H, W))
    assert d.shape == (N, N)
    assert torch.allclose(d.diagonal(), torch.ones(N), atol=1e-5)
    # opposite corners: d = 2 -> log10(1e-6) = -6
    assert d[0, N - 1].item() == pytest.approx(-6.0, abs=1e-3)
    # one full axis apart (d = 1): log10(5)
    assert d[0, W - 1].item() == pytest.approx(math.log10(5.0), abs=1e-5)
    assert spatial_prior((H, W)) is d  # cached constant
    # exactly symmetric: MapSM.map_features_sparse reads the prior's rows at the kept keys as its columns
    assert torch.equal(d, d.t())
    assert torch.equal(spatial_prior((24, 40)), spatial_prior((24, 40)).t())


def test_map_sm_keeps_exactly_floor_n_m():
    torch.manual_seed(0)
    mod = MapSM(C)
    xq, xk, xv, mp = _inputs()
    for m in (0.7, 0.6, 0.5):
        mask, p = mod(xq, xk, xv, mp, (H, W), m)
        assert mask.shape == (B, N) and p.shape == (B, N)
        assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}
        assert mask.detach().sum(-1).tolist() == [math.floor(N * m)] * B
        assert ((p > 0) & (p < 1)).all()


def test_map_sm_never_maps_onto_pruned_tokens():
    torch.manual_seed(1)
    mod = MapSM(C)
    xq, xk, xv, mp = _inputs(3)
    # make pruned keys very attractive: without the -inf mask they would win the argmax
    xk = xk + 50.0 * (~mp)[..., None].float() * xq.mean(1, keepdim=True)
    for train in (True, False):
        mod.train(train)
        a = mod.associate(xq, xk, mp, (H, W), noise=True)
        j = a.argmax(-1)  # (B, N) previous token each current token maps onto
        assert torch.gather(mp, 1, j).all()
        assert torch.allclose(a.detach().sum(-1), torch.ones(B, N))


def _association_by_hand(xq: torch.Tensor, xk: torch.Tensor, mask_prev: torch.Tensor,
                         use_prior: bool = True) -> torch.Tensor:
    """Deterministic A (B, N, N) from Map-SM's definition (vpp-notes §4.2 steps 1-4), written out per token pair:
    Phi[i, j] = x_q[i] . x_k[j] + Phi_dist[i, j], Phi_dist = log10(10 (2 - d_ij) / 2 + 1e-6) with d_ij the L1
    distance of the patch centres on a grid normalised to [0, 1] per axis (col / (W - 1), row / (H - 1));
    previous tokens pruned in ``mask_prev`` are excluded; A[i, j*] = 1 for j* = argmax_j Phi[i, j]."""
    a = torch.zeros(B, N, N, dtype=xq.dtype)
    for b in range(B):
        for i in range(N):
            best, best_j = -math.inf, None
            for j in range(N):
                if not mask_prev[b, j]:
                    continue
                d = abs(i % W - j % W) / (W - 1) + abs(i // W - j // W) / (H - 1)
                phi = float(xq[b, i] @ xk[b, j]) + (math.log10(5.0 * (2.0 - d) + 1e-6) if use_prior else 0.0)
                if phi > best:
                    best, best_j = phi, j
            a[b, i, best_j] = 1.0
    return a


def test_map_sm_uses_mapped_value():
    """x_hat = A x_v: the features the selector sees are the previous frame's values at the associated tokens."""
    g = torch.Generator().manual_seed(4)
    xq, xk, xv = (torch.randn(B, N, C, generator=g, dtype=torch.float64) for _ in range(3))
    xq, xk = xq * 0.5, xk * 0.5  # similarity and spatial prior of the same order: both decide some rows
    mask_prev = torch.rand(B, N, generator=g) > 0.4
    a = _association_by_hand(xq, xk, mask_prev)
    expected = a @ xv
    # the case exercises every term: the mapping is not the identity, the prior and the mask change it
    assert not torch.equal(a.argmax(-1), torch.arange(N).expand(B, N))
    assert not torch.equal(a, _association_by_hand(xq, xk, mask_prev, use_prior=False))
    assert not torch.equal(a, _association_by_hand(xq, xk, torch.ones(B, N, dtype=torch.bool)))
    mod = MapSM(C, inference_noise=False).double().eval()
    assert torch.equal(mod.associate(xq, xk, mask_prev, (H, W), noise=False).detach(), a)
    seen = []  # x_hat as it enters the selector (its LayerNorm), through the module's public hook API
    mod.norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    mod(xq, xk, xv, mask_prev, (H, W), 0.7)             # graph path: A @ x_v (straight-through A)
    with torch.no_grad():
        mod(xq, xk, xv, mask_prev, (H, W), 0.7)         # inference path: gathered from the kept keys only
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-12)
    # inference: the selector runs on the K kept previous tokens' values; gathered by the association they
    # are x_hat (the per-token selector's log-probs are gathered the same way in MapSM.forward)
    with torch.no_grad():
        order, match = mod.associate_sparse(xq, xk, mask_prev, (H, W), noise=False)
        assert seen[1].shape == (B, order.shape[1], C) and order.shape[1] < N
        x_hat = seen[1].gather(1, match[..., None].expand(-1, -1, C))
        torch.testing.assert_close(x_hat, expected, rtol=0, atol=0)
        torch.testing.assert_close(mod.map_features_sparse(xq, xk, xv, mask_prev, (H, W), False), expected,
                                   rtol=0, atol=0)


def test_map_sm_empty_previous_mask_is_defined():
    mod = MapSM(C)
    xq, xk, xv, mp = _inputs()
    mp[0] = False
    mask, p = mod(xq, xk, xv, mp, (H, W), 0.7)
    assert torch.isfinite(p).all() and mask.detach().sum(-1).tolist() == [math.floor(N * 0.7)] * B


def test_map_sm_shape_errors():
    mod = MapSM(C)
    xq, xk, xv, mp = _inputs()
    with pytest.raises(ValueError, match="grid"):
        mod(xq, xk, xv, mp, (H, W + 1), 0.7)
    with pytest.raises(ValueError, match="x_v"):
        mod(xq, xk, xv[:, :-1], mp, (H, W), 0.7)
    with pytest.raises(ValueError, match="bool"):
        mod(xq, xk, xv, mp.float(), (H, W), 0.7)


def test_map_sm_deterministic_mode_repeatable_and_noise_mode_not():
    torch.manual_seed(0)
    mod = MapSM(C, inference_noise=False).eval()
    xq, xk, xv, mp = _inputs()
    m1, p1 = mod(xq, xk, xv, mp, (H, W), 0.5)
    m2, p2 = mod(xq, xk, xv, mp, (H, W), 0.5)
    assert torch.equal(m1, m2) and torch.equal(p1, p2)
    # noise on (official inference): the soft probabilities differ between calls
    n1 = mod(xq, xk, xv, mp, (H, W), 0.5, noise=True)[1]
    n2 = mod(xq, xk, xv, mp, (H, W), 0.5, noise=True)[1]
    assert not torch.equal(n1, n2)
    # training is always noisy, whatever the switch
    mod.train()
    assert mod.use_noise(False) is True


def test_map_sm_gradients_straight_through():
    torch.manual_seed(0)
    mod = MapSM(C)
    xq, xk, xv, mp = _inputs(requires_grad=True)
    mask, p = mod(xq, xk, xv, mp, (H, W), 0.7)
    (mask * torch.randn(B, N)).sum().backward()
    for name, prm in mod.named_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, name
    for t in (xq, xk, xv):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_map_sm_has_no_unused_parameters():
    names = {n.split(".")[0] for n, _ in MapSM(C).named_parameters()}
    assert names == {"norm", "mlp"}
    assert MapSM(C).mlp.fc1.out_features == C // 2 and SM(C).mlp.fc1.out_features == C // 4


def test_overhead_macs():
    assert map_sm_macs(2040, 192) == 2 * 2040 ** 2 * 192 + 2040 * (192 * 96 + 96 * 2)
    assert map_sm_macs(2040, 192) / 1e9 == pytest.approx(1.636, abs=1e-3)  # §4.2 "≈ 1.6 GMAC (Tiny)"
    assert sm_macs(10, 16) == 10 * (16 * 4 + 4 * 2)
    # inference: association against K kept keys, selector on those K tokens (not on the N mapped ones)
    assert map_sm_macs(960, 384, 300) == 960 * 300 * 384 + 300 * (384 * 192 + 192 * 2)


# ---------------------------------------------------------------- SM
def test_sm_nested_no_reactivation():
    torch.manual_seed(0)
    sm = SM(C)
    x = torch.randn(B, N, C)
    prev = (torch.rand(B, N) > 0.5).float()
    m = sm(x, prev)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert not ((m > 0) & (prev == 0)).any()
    chain = sm(x, sm(x, m))
    assert not ((chain > 0) & (m == 0)).any()


def test_sm_deterministic_is_argmax():
    sm = SM(C, inference_noise=False).eval()
    x = torch.randn(B, N, C)
    f = sm.mlp(sm.norm(x)).log_softmax(-1)
    assert torch.equal(sm(x).bool(), f[..., 0] > f[..., 1])
    assert torch.equal(sm(x), sm(x))


def test_sm_inference_gates_kept_tokens_only_with_the_same_mask():
    """Without a graph the SM runs on the kept tokens only (issue 15): same mask as the all-N graph path."""
    torch.manual_seed(1)
    sm = SM(C, inference_noise=False).eval()
    x = torch.randn(B, N, C)
    prev = (torch.rand(B, N) > 0.4).float()
    prev[1, :] = 0.0                                       # a sample with nothing kept: all zeros
    full = sm(x, prev)                                     # autograd on: all N tokens
    seen = []
    hook = sm.norm.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    with torch.no_grad():
        kept_only = sm(x, prev)
        kept_bool = sm(x, prev.bool())
    hook.remove()
    assert torch.equal(kept_only, full.detach()) and torch.equal(kept_bool, kept_only)
    assert seen == [int(prev.sum())] * 2                   # the LayerNorm saw the K kept rows, not B x N
    assert kept_only[1].sum() == 0


def test_sm_gradients_reach_parameters():
    sm = SM(C)
    x = torch.randn(B, N, C, requires_grad=True)
    (sm(x, torch.ones(B, N)) * torch.randn(B, N)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sm.parameters())


# ---------------------------------------------------------------- sparsity loss
def test_sparsity_loss_hand_numbers():
    # SM means 0.5, 0.25, 0.25 vs targets 0.56, 0.448, 0.3584; Map-SM p mean 0.6 vs kappa 0.5
    m3 = torch.tensor([[1., 0., 1., 0.]])
    m6 = torch.tensor([[1., 0., 0., 0.]])
    m9 = torch.tensor([[0., 0., 0., 1.]])
    p = torch.tensor([[0.6, 0.6, 0.6, 0.6]])
    targets = (0.56, 0.448, 0.3584)
    sm_term = (0.5 - 0.56) ** 2 + (0.25 - 0.448) ** 2 + (0.25 - 0.3584) ** 2
    assert vpp_sparsity_loss([m3, m6, m9], targets, p).item() == pytest.approx(
        40 * (10 * 0.1 ** 2 + sm_term) / 13, rel=1e-6)
    assert vpp_sparsity_loss([m3, m6, m9], targets, None).item() == pytest.approx(40 * sm_term / 3, rel=1e-6)
    # kappa_init ablation (Table 7)
    assert vpp_sparsity_loss([m3, m6, m9], targets, p, kappa_init=0.3).item() == pytest.approx(
        40 * (10 * 0.3 ** 2 + sm_term) / 13, rel=1e-6)
    with pytest.raises(ValueError):
        vpp_sparsity_loss([m3], targets)


# ---------------------------------------------------------------- TemporalState
def test_temporal_state_reset_detach_check():
    key = torch.randn(B, N, C, requires_grad=True)
    st = TemporalState.create(key * 2, key * 3, torch.ones(B, N), (H, W))
    assert st.valid.all() and st.mask.dtype == torch.bool
    r = st.reset(torch.tensor([True, False]))
    assert r.valid.tolist() == [False, True] and st.valid.all()  # new object, old untouched
    d = st.detach()
    assert st.key.requires_grad and not d.key.requires_grad and not d.value.requires_grad
    st.check(torch.zeros(B, N, C), (H, W))
    with pytest.raises(ValueError, match="grid"):
        st.check(torch.zeros(B, N, C), (W, H))
    with pytest.raises(ValueError, match="new video"):
        st.check(torch.zeros(B + 1, N, C), (H, W))
    with pytest.raises(ValueError, match="bool"):
        TemporalState(key, key, torch.ones(B, N), (H, W), torch.ones(B, dtype=torch.bool))


def test_map_sm_inference_path_equals_full_association():
    """Without a graph Map-SM maps from the kept previous tokens only; the result equals the N x N path."""
    from vppkit.models.pruning.vpp_modules import MapSM

    torch.manual_seed(3)
    b, grid, c = 3, (4, 5), 16
    n = grid[0] * grid[1]
    msm = MapSM(c, inference_noise=False).eval()
    xq, xk, xv = torch.randn(b, n, c), torch.randn(b, n, c), torch.randn(b, n, c)
    mask_prev = torch.rand(b, n) > 0.5
    mask_prev[1] = False
    mask_prev[1, 7] = True  # very different kept counts per sample (padding in the sparse path)
    full = msm.associate(xq, xk, mask_prev, grid, noise=False) @ xv
    with torch.no_grad():
        sparse = msm.map_features_sparse(xq, xk, xv, mask_prev, grid, noise=False)
        mask_ng, p_ng = msm(xq, xk, xv, mask_prev, grid, 0.6)
    torch.testing.assert_close(sparse, full)
    mask_g, p_g = msm(xq, xk, xv, mask_prev, grid, 0.6)
    torch.testing.assert_close(p_ng, p_g.detach())
    assert torch.equal(mask_ng, mask_g.detach())
    # the selector on the K kept previous tokens, gathered: the same log-probs as on the N mapped tokens
    with torch.no_grad():
        order, match = msm.associate_sparse(xq, xk, mask_prev, grid, noise=False)
        assert order.shape == (b, int(mask_prev.sum(-1).max())) and match.shape == (b, n)
        src = order.gather(1, match)
        assert mask_prev.gather(1, src).all()  # every current token is mapped onto a kept previous token
        torch.testing.assert_close(msm.selector(sparse), msm.selector(full))
