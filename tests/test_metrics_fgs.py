"""FGS linear probes: metric formulas by hand, probes on label-encoding vs random features, bootstrap CI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scipy.stats import binom

from vppkit.metrics.fgs import (FGSConfig, LinearProbes, balanced_accuracy, bootstrap_ci, evaluate_probes, roc_auc,
                                run_fgs, split_by_video, train_probes)


def test_metric_formulas_by_hand():
    # sklearn's documented example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([1.0, 1.0]), np.array([False, True])) == pytest.approx(0.5)   # ties count 1/2
    assert np.isnan(roc_auc(np.array([0.3, 0.2]), np.array([True, True])))
    pred = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    label = torch.tensor([1, 0, 0, 0, 0, 1], dtype=torch.bool)
    assert balanced_accuracy(pred, label) == pytest.approx(0.5 * (1 / 2 + 3 / 4))


def test_bootstrap_identical_frames_is_degenerate():
    counts = np.tile(np.array([[30, 10, 5, 15]]), (8, 1, 1))       # (F=8, L=1, 4): tn fp fn tp
    ci = bootstrap_ci(counts, replicates=200, seed=1)
    point = 0.5 * (15 / 20 + 30 / 40)
    assert ci["balanced_accuracy"][0] == pytest.approx([point, point])
    assert ci["accuracy"][0] == pytest.approx([45 / 60, 45 / 60])


def test_evaluate_probes_known_counts_and_binomial_bootstrap():
    """A fixed probe on constructed frames: the confusion counts, hence FGS, are known exactly, and so is the
    bootstrap distribution. 100 frames of 5 fg + 15 bg patches (+ 2 padding patches); the probe's margin is
    channel 0. 70 "good" frames: every patch right (tp 5, tn 15). 30 "bad" frames: every patch called fg
    (tp 5, fp 15). Pooled: recall_fg = 500/500 = 1, recall_bg = 70 x 15 / (100 x 15) = 0.7 -> FGS = 0.85
    (plain accuracy (500 + 1050) / 2000 = 0.775). A bootstrap resample with k good frames has FGS 0.5 (1 + k/100),
    k ~ Binomial(100, 0.7): its 95 % percentile interval is 0.5 (1 + binom.ppf([0.025, 0.975], 100, 0.7) / 100)."""
    probes = LinearProbes(1, 2, standardize="none")
    with torch.no_grad():
        probes.weight.zero_()
        probes.weight[0, 0, 1] = 1.0                           # logits (0, x[..., 0]): margin = x[..., 0]
    label = torch.tensor([True] * 5 + [False] * 15 + [True, False])   # last two: padding
    valid = torch.tensor([True] * 20 + [False, False])
    good = torch.where(label, 1.0, -1.0)
    bad = torch.ones(22)
    good[20:] = bad[20:] = torch.tensor([-9.0, 9.0])           # padding predictions would be wrong: must not count
    frames = [good] * 70 + [bad] * 30
    batches = []
    for i in range(0, 100, 10):                                # 10 frames per batch
        x = torch.stack(frames[i:i + 10])[..., None].expand(-1, -1, 2).clone()   # (B, N, C=2)
        batches.append(([x], label.expand(10, -1), valid.expand(10, -1)))
    res = evaluate_probes(probes, batches, FGSConfig(bootstrap=20000, seed=0))
    assert res.n_frames == 100 and res.n_patches == 2000 and res.n_fg == 500
    assert res.recall_fg[0] == 1.0 and res.recall_bg[0] == pytest.approx(0.7)
    assert res.balanced_accuracy[0] == pytest.approx(0.85) and res.accuracy[0] == pytest.approx(0.775)
    expected = 0.5 * (1 + binom.ppf([0.025, 0.975], 100, 0.7) / 100)     # [0.805, 0.895]
    assert res.balanced_accuracy_ci[0] == pytest.approx(expected, abs=0.006)   # within one k step (0.005)


def _batches(n_batches: int, seed: int, c: int = 8, n: int = 32, b: int = 4, fg_p: float = 0.2,
             signal: float = 3.0, noise: float = 0.1):
    """Layer 0: pure noise. Layer 1: channel 0 = label + small noise. Layer 2: noise at 10x the scale of
    layer 1 (scale invariance through standardisation). Last 4 patches of each frame are padding
    with garbage labels and a loud signal that must be ignored."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.rand(b, n, generator=g) < fg_p
        valid = torch.ones(b, n, dtype=torch.bool)
        valid[:, -4:] = False
        x0 = torch.randn(b, n, c, generator=g)
        x1 = torch.randn(b, n, c, generator=g)
        x1[..., 0] = signal * y.float() + noise * torch.randn(b, n, generator=g)
        x2 = 10 * x1.clone()
        y_pad = y.clone()
        y_pad[:, -4:] = True
        x1[:, -4:, 0] = -5.0                          # padding: contradicts the label, must be masked out
        out.append(([x0, x1, x2], y_pad, valid))
    return out


def test_probes_separate_encoded_from_random_features():
    cfg = FGSConfig(lr=5e-2, bootstrap=300, seed=0)
    res = run_fgs(_batches(25, seed=0), _batches(10, seed=1), cfg)
    bacc = res.balanced_accuracy
    assert bacc[1] > 0.97 and bacc[2] > 0.97, bacc
    assert abs(bacc[0] - 0.5) < 0.08, bacc
    assert res.roc_auc[1] > 0.99 and abs(res.roc_auc[0] - 0.5) < 0.1
    assert res.n_frames == 40 and res.n_patches == 40 * 28        # padding excluded
    # intervals against the true values: the encoded layers separate fg/bg (true FGS 1): a narrow interval near 1;
    # layer 0 is independent of the labels (true FGS 1/2 for any probe): its interval covers 1/2
    assert (res.balanced_accuracy_ci[1:, 0] > 0.95).all(), res.balanced_accuracy_ci
    lo, hi = res.balanced_accuracy_ci[0]
    assert lo < 0.5 < hi and hi - lo < 0.15, (lo, hi)
    assert res.train.r_fg == pytest.approx(0.2, abs=0.04)
    assert res.train.lr == pytest.approx([5e-2, 5e-3])           # lr x 0.1 after the first epoch
    df = res.to_frame()
    assert list(df["feature"]) == ["x_0", "x_1", "x_2"] and "fgs_ci_low" in df.columns
    d = json.loads(json.dumps(res.to_dict()))
    assert d["layers"][1]["fgs"] == pytest.approx(float(bacc[1]))


def test_weighted_loss_balances_a_rare_foreground():
    # 5 % foreground, weakly informative feature (label shift = 1 noise std): plain CE favours "background"
    # (low foreground recall); the r_fg-weighted loss of §C balances both recalls.
    train, held = _batches(40, seed=2, fg_p=0.05, noise=3.0), _batches(10, seed=3, fg_p=0.05, noise=3.0)
    res = run_fgs(train, held, FGSConfig(lr=5e-2, bootstrap=0))
    plain = run_fgs(train, held, FGSConfig(lr=5e-2, bootstrap=0, weighted=False))
    assert res.recall_fg[1] > 0.5 and res.recall_bg[1] > 0.5, (res.recall_fg, res.recall_bg)
    assert plain.recall_fg[1] < 0.2, plain.recall_fg
    assert res.balanced_accuracy[1] > plain.balanced_accuracy[1]
    assert np.isnan(res.balanced_accuracy_ci).all()                 # bootstrap disabled


def test_sgd_option_and_data_errors():
    data = _batches(5, seed=0)
    probes, info = train_probes(lambda: iter(data), FGSConfig(optimizer="sgd", lr=0.1, epochs=1))
    assert isinstance(probes, LinearProbes) and probes.weight.shape == (3, 8, 2) and info.frames == [20]
    with pytest.raises(ValueError, match="one-shot iterator"):
        train_probes(iter(data), FGSConfig())
    with pytest.raises(ValueError, match="epoch 0 batch 1: got 2 feature layers, expected 3"):
        train_probes([data[0], (data[1][0][:2], data[1][1])], FGSConfig(epochs=1))
    with pytest.raises(ValueError, match=r"labels must be \(B, N\)"):
        train_probes([(data[0][0], data[0][1][:, :5])], FGSConfig(epochs=1))
    with pytest.raises(ValueError, match="optimizer"):
        FGSConfig(optimizer="lbfgs")


def test_split_by_video_is_disjoint_and_deterministic():
    ids = list(range(10))
    tr, ev = split_by_video(ids, 0.3, seed=5)
    assert len(ev) == 3 and sorted(tr + ev) == ids and not set(tr) & set(ev)
    assert split_by_video(ids, 0.3, seed=5) == (tr, ev)
    with pytest.raises(ValueError):
        split_by_video([1], 0.5)
