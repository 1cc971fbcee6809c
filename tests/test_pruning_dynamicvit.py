"""DynamicViT pruner: hierarchical fixed counts at inference, nesting, training loss and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from vppkit.models.pruning.dynamicvit import DynamicViTPredictor, DynamicViTPruner
from vppkit.models.vit import build_backbone

torch.set_num_threads(1)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_backbone("vit_nano", 96, pruner=DynamicViTPruner(48, **kw))


def _x(b=3):
    return torch.randn(b, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def test_fixed_counts_nested_and_modes_agree():
    m = _model(rho=0.7).eval()
    with torch.no_grad():
        a = m(_x(), execution="masked")
        b = m(_x(), execution="gathered")
    n = 36
    expect = [n] * 3 + [math.floor(n * 0.7)] * 3 + [math.floor(n * 0.49)] * 3 + [math.floor(n * 0.343)] * 3
    assert a.keep.counts.tolist() == [expect] * 3
    masks = a.keep.masks
    assert not (masks[:, 6] & ~masks[:, 3]).any() and not (masks[:, 9] & ~masks[:, 6]).any()   # cumulative
    assert torch.equal(a.keep.masks, b.keep.masks)
    assert torch.allclose(a.tokens, b.tokens, atol=1e-5)


def test_batch_equals_single_runs():
    m = _model().eval()
    x = _x(4)
    with torch.no_grad():
        full = m(x)
        singles = torch.cat([m(x[i:i + 1]).tokens for i in range(4)])
    assert torch.allclose(full.tokens, singles, atol=1e-5)


def test_training_gradients_and_ratio_loss():
    m = _model().train()
    out = m(_x(2))
    masks = out.keep.masks
    assert not (masks[:, 6] & ~masks[:, 3]).any()
    out.tokens.square().mean().backward(retain_graph=True)
    for i, p in enumerate(m.pruner.predictors):
        assert p.out_conv[-1].weight.grad.abs().sum() > 0, f"predictor {i}"
    per_sample = masks[:, [3, 6, 9]].float().mean(-1)                           # (B, 3)
    expect = 2.0 * ((per_sample - torch.tensor([0.7, 0.49, 0.343])) ** 2).mean()
    assert float(out.aux_loss.detach()) == pytest.approx(float(expect), rel=1e-5)


def test_predictor_global_pool_uses_kept_tokens():
    torch.manual_seed(0)
    p = DynamicViTPredictor(16)
    x = torch.randn(1, 6, 16)
    keep = torch.tensor([[1.0, 1, 1, 0, 0, 0]])
    y1 = p(x, keep)
    x2 = x.clone(); x2[:, 3:] += 10.0                                # change only dropped tokens
    y2 = p(x2, keep)
    assert torch.allclose(y1[:, :3], y2[:, :3], atol=1e-6)
    assert y1.shape == (1, 6, 2) and torch.allclose(y1.exp().sum(-1), torch.ones(1, 6))
    with pytest.raises(ValueError):
        DynamicViTPredictor(18)
    with pytest.raises(ValueError):
        DynamicViTPruner(48, blocks=(6, 3))
