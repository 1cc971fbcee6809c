"""SViT pruner: gates, reactivation, ratio loss, masked vs gathered, gradients."""

from __future__ import annotations

import pytest
import torch

from vppkit.models.pruning.svit import SVIT_DEFAULT_TARGETS, SViTPruner, svit_nominal_pkr, svit_targets_for_pkr
from vppkit.models.vit import build_backbone

torch.set_num_threads(1)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_backbone("vit_nano", 96, pruner=SViTPruner(48, **kw))


def _x(b=3):
    return torch.randn(b, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def test_targets_for_pkr():
    assert svit_nominal_pkr(SVIT_DEFAULT_TARGETS) == pytest.approx(0.6333, abs=1e-4)
    t55, rho55 = svit_targets_for_pkr(0.55)
    t40, rho40 = svit_targets_for_pkr(0.40)
    assert rho55 == pytest.approx(0.60, abs=0.01) and rho40 == pytest.approx(0.39, abs=0.01)
    assert svit_nominal_pkr(t55) == pytest.approx(0.55, abs=1e-9) and len(t40) == 9
    assert svit_targets_for_pkr(0.6333)[1] == pytest.approx(0.7, abs=1e-3)
    with pytest.raises(ValueError):
        svit_targets_for_pkr(0.2)


def test_masked_equals_gathered_eval():
    m = _model().eval()
    x = _x()
    with torch.no_grad():
        a = m(x, execution="masked")
        b = m(x, execution="gathered")
    assert torch.equal(a.keep.masks, b.keep.masks)
    assert torch.allclose(a.tokens, b.tokens, atol=1e-5)
    c = a.keep.counts
    assert c[:, :3].eq(36).all() and (c[:, 3:] < 36).any()
    assert len(set(c[:, 3].tolist())) > 1 or len(set(c[:, 7].tolist())) > 1        # dynamic per image
    assert a.keep.meta["method"] == "svit" and a.keep.overhead_macs[0] == 9 * 36 * (48 * 12 + 12 * 2)


def test_batch_equals_single_runs():
    m = _model().eval()
    x = _x(4)
    with torch.no_grad():
        full = m(x)
        singles = torch.cat([m(x[i:i + 1]).tokens for i in range(4)])
    assert torch.allclose(full.tokens, singles, atol=1e-5)


def test_reactivation():
    m = _model().eval()
    with torch.no_grad():
        m.pruner.gates[0].fc2.bias.copy_(torch.tensor([-50.0, 50.0]))   # block 3: drop everything
        m.pruner.gates[1].fc2.bias.copy_(torch.tensor([50.0, -50.0]))   # block 4: keep everything
        out = m(_x())
    assert out.keep.counts[:, 3].eq(0).all() and out.keep.counts[:, 4].eq(36).all()


def test_gradients_reach_every_gate_in_masked_mode():
    m = _model().train()
    out = m(_x(2))
    assert out.keep.meta["execution"] == "masked"
    out.tokens.square().mean().backward()          # task loss only: straight-through through x = m*blk + (1-m)*x
    for i, g in enumerate(m.pruner.gates):
        assert g.fc1.weight.grad is not None and g.fc1.weight.grad.abs().sum() > 0, f"gate {i}"


def test_ratio_loss_value():
    m = _model().train()
    torch.manual_seed(3)
    out = m(_x(2))
    fr = out.keep.masks[:, 3:].float().mean(dim=(0, 2))
    expect = 4.0 * ((fr - torch.tensor(SVIT_DEFAULT_TARGETS)) ** 2).mean()
    assert float(out.aux_loss.detach()) == pytest.approx(float(expect), rel=1e-5)
    out.aux_loss.backward()
    assert m.pruner.gates[-1].fc2.weight.grad.abs().sum() > 0


def test_inference_noise_switch():
    m = _model(inference_noise=True).eval()
    x = _x(2)
    with torch.no_grad():
        torch.manual_seed(0); a = m(x).keep.masks
        torch.manual_seed(1); b = m(x).keep.masks
    assert not torch.equal(a, b)
    m.pruner.inference_noise = False
    with torch.no_grad():
        assert torch.equal(m(x).keep.masks, m(x).keep.masks)


def test_bad_targets():
    with pytest.raises(ValueError):
        SViTPruner(48, targets=[0.5] * 12)
    with pytest.raises(ValueError):
        SViTPruner(48, targets=[1.5])
