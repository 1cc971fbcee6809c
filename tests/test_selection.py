"""Training-free token selectors (vppkit.models.pruning.selection)."""

from __future__ import annotations

import pytest
import torch

from vppkit.models.pruning.selection import (
    SELECTORS,
    keep_mask_from_indices,
    select_attention,
    select_divprune,
    select_kcenter,
    select_random,
    select_spatial_kcenter,
    select_uniform_grid,
    spatial_coverage,
)

GRID = (6, 8)
N = GRID[0] * GRID[1]


def _tokens(b=3, n=N, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g)


def _call(name, x, k, **kw):
    if name == "attention":
        kw.setdefault("attention", x.norm(dim=-1) if x.dim() == 3 else x.norm(dim=-1))
    if name in ("random",):
        kw.setdefault("seed", 0)
    return SELECTORS[name](x, k, GRID, **kw)


@pytest.mark.parametrize("name", sorted(SELECTORS))
@pytest.mark.parametrize("k", [1, 7, 20, N])
def test_exact_counts_sorted_unique(name, k):
    x = _tokens()
    idx = _call(name, x, k)
    assert idx.shape == (3, k) and idx.dtype == torch.long
    assert bool((idx[:, 1:] > idx[:, :-1]).all()), "indices must be strictly increasing (sorted, unique)"
    mask = keep_mask_from_indices(idx, N)
    assert mask.shape == (3, N)
    assert mask.sum(-1).tolist() == [k] * 3


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_two_dim_input_gives_batch_one(name):
    x = _tokens()[0]
    assert _call(name, x, 5).shape == (1, 5)


def test_kcenter_lambda_zero_equals_divprune():
    x = _tokens(b=4)
    for k in (1, 5, 12, 30):
        a = select_divprune(x, k, GRID)
        b = select_spatial_kcenter(x, k, GRID, lam=0.0, init="isolated")
        assert torch.equal(a, b)


def test_spatial_term_changes_selection_and_improves_coverage():
    # features that cluster in one corner: DivPrune picks by feature only, large lambda spreads over the grid
    x = _tokens(b=1)
    k = 8
    a = select_spatial_kcenter(x, k, GRID, lam=0.0)
    b = select_spatial_kcenter(x, k, GRID, lam=50.0)
    ca = spatial_coverage(keep_mask_from_indices(a, N), GRID)
    cb = spatial_coverage(keep_mask_from_indices(b, N), GRID)
    assert not torch.equal(a, b)
    assert float(cb) < float(ca)


def test_divprune_hand_case():
    # 4 tokens: two near-duplicates (0, 1), and two orthogonal ones (2, 3). k=3 must pick one of the pair + 2 + 3.
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.01, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    idx = select_divprune(x, 3).tolist()[0]
    assert 2 in idx and 3 in idx and len({0, 1} & set(idx)) == 1
    # the first pick is the most isolated token: 3 (all its neighbours at cosine distance exactly 1;
    # token 2 is slightly closer to token 1)
    assert select_divprune(x, 1).tolist()[0] == [3]
    # exact ties break towards the lowest index: three orthonormal tokens -> 0 first
    assert select_divprune(torch.eye(3), 1).tolist()[0] == [0]


def test_random_determinism_per_seed():
    x = _tokens()
    a = select_random(x, 10, seed=3)
    b = select_random(x, 10, seed=3)
    c = select_random(x, 10, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1 = torch.Generator().manual_seed(3)
    assert torch.equal(select_random(x, 10, generator=g1), a)
    with pytest.raises(ValueError):
        select_random(x, 10, seed=1, generator=torch.Generator())


def test_deterministic_selectors_repeatable():
    x = _tokens()
    for name in ("uniform", "divprune", "spatial_kcenter", "kcenter"):
        assert torch.equal(_call(name, x, 9), _call(name, x, 9))
    r1 = select_spatial_kcenter(x, 9, GRID, init="random", seed=5)
    r2 = select_spatial_kcenter(x, 9, GRID, init="random", seed=5)
    assert torch.equal(r1, r2)


def test_uniform_grid_spreads_evenly():
    grid = (27, 27)
    n = 729
    x = torch.zeros(1, n, 1)
    idx36 = select_uniform_grid(x, 36, grid)[0]
    rows, cols = idx36 // 27, idx36 % 27
    # a 6 x 6 lattice using the first and last row / column
    assert sorted(set(rows.tolist())) == [0, 5, 10, 16, 21, 26]
    assert sorted(set(cols.tolist())) == [0, 5, 10, 16, 21, 26]
    for r in set(rows.tolist()):
        assert int((rows == r).sum()) == 6
    idx146 = select_uniform_grid(x, 146, grid)[0]
    assert idx146.numel() == 146 and int(idx146.max()) >= 27 * 26  # reaches the last row (no arange pitfall)
    # better coverage than a contiguous block of the same size, and than most random draws
    cov_u = float(spatial_coverage(keep_mask_from_indices(idx146, n), grid))
    cov_block = float(spatial_coverage(keep_mask_from_indices(torch.arange(146), n), grid))
    cov_rand = spatial_coverage(keep_mask_from_indices(select_random(x.expand(8, -1, -1), 146, seed=0), n), grid)
    assert cov_u < cov_block
    assert cov_u < float(cov_rand.min())


def test_attention_selector_topk_and_errors():
    x = _tokens(b=2)
    att = torch.zeros(2, N)
    att[0, [3, 10, 40]] = torch.tensor([1.0, 3.0, 2.0])
    att[1, [0, 47]] = 1.0
    idx = select_attention(x, 2, GRID, attention=att)
    assert idx[0].tolist() == [10, 40]
    assert idx[1].tolist() == [0, 47]
    with pytest.raises(ValueError, match="attention"):
        select_attention(x, 2, GRID, attention=None)
    with pytest.raises(ValueError, match="attention"):
        select_attention(x, 2, GRID, attention=torch.ones(N + 1))


def test_kcenter_picks_the_far_point():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 10.0]])
    idx = select_kcenter(x, 2).tolist()[0]
    assert 3 in idx


def test_bad_inputs_raise():
    x = _tokens()
    with pytest.raises(ValueError, match="grid"):
        select_uniform_grid(x, 4, (5, 5))
    with pytest.raises(ValueError, match="k must be"):
        select_divprune(x, 0)
    with pytest.raises(ValueError, match="shape"):
        select_divprune(torch.zeros(N), 3)
    with pytest.raises(ValueError, match="lam"):
        select_spatial_kcenter(x, 3, GRID, lam=-1.0)
    with pytest.raises(ValueError, match="indices"):
        keep_mask_from_indices(torch.tensor([[0, N]]), N)


def test_spatial_coverage_values():
    all_kept = torch.ones(2, N, dtype=torch.bool)
    assert torch.equal(spatial_coverage(all_kept, GRID), torch.zeros(2))
    # 1 x 3 grid keeping only the middle: distances 1, 0, 1 -> mean 2/3
    cov = spatial_coverage(torch.tensor([False, True, False]), (1, 3))
    assert cov.shape == (1,) and abs(float(cov) - 2 / 3) < 1e-6
    with pytest.raises(ValueError, match="keep no patch"):
        spatial_coverage(torch.zeros(1, N, dtype=torch.bool), GRID)
