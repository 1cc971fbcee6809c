"""Pruner protocol and the Gumbel / straight-through / top-k helpers."""

from __future__ import annotations

import pytest
import torch

from vppkit.models.pruning.base import DensePruner, ExternalMaskPruner, Pruner
from vppkit.models.pruning.gumbel import (gumbel_softmax_st, keep_from_logprobs, straight_through, topk_mask,
                                          topk_mask_st)
from vppkit.models.vit import build_backbone

torch.set_num_threads(1)


def test_topk_mask_counts_and_valid():
    s = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    m = topk_mask(s, 2)
    assert m.tolist() == [[False, True, False, True], [True, True, False, False]]
    valid = torch.tensor([[True, False, True, True], [False, False, True, True]])
    m = topk_mask(s, torch.tensor([2, 3]), valid=valid)
    assert m.tolist() == [[False, False, True, True], [False, False, True, True]]   # capped by valid count
    assert not topk_mask(s, 0).any()
    with pytest.raises(ValueError):
        topk_mask(s, -1)
    with pytest.raises(ValueError):
        topk_mask(s[0], 1)


def test_topk_mask_int_fast_path_equals_the_per_row_path():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(5, 37, generator=g)
    s[0, :4] = 0.5                                                   # ties
    for k in (0, 1, 13, 37, 40):
        fast = topk_mask(s, k)
        general = topk_mask(s, torch.full((5,), k))                  # a tensor k takes the per-row path
        assert torch.equal(fast, general) and fast.sum(1).tolist() == [min(k, 37)] * 5


def test_keep_from_logprobs_deterministic_inference_equals_graph_path():
    g = torch.Generator().manual_seed(1)
    logp = torch.randn(4, 50, 2, generator=g).log_softmax(-1)
    logp[0, :3] = torch.tensor([-0.6931, -0.6931])                    # exact ties -> keep (argmax: first channel)
    graph = keep_from_logprobs(10 * logp.clone().requires_grad_(True), 10.0, noise=False)
    with torch.no_grad():
        fast = keep_from_logprobs(10 * logp, 10.0, noise=False)
    assert torch.equal(fast, graph.detach()) and fast[0, :3].tolist() == [1.0, 1.0, 1.0]


def test_keep_from_logprobs_noisy_inference_equals_graph_path_same_draws():
    # same generator seed: the no-graph comparison and the graph path's softmax + argmax pick the same channel
    logp = torch.randn(3, 400, 2, generator=torch.Generator().manual_seed(2)).log_softmax(-1)
    graph = keep_from_logprobs(10 * logp.clone().requires_grad_(True), 10.0, noise=True,
                               generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fast = keep_from_logprobs(10 * logp, 10.0, noise=True, generator=torch.Generator().manual_seed(5))
        other = keep_from_logprobs(10 * logp, 10.0, noise=True, generator=torch.Generator().manual_seed(6))
    assert torch.equal(fast, graph.detach()) and not torch.equal(fast, other)


def test_straight_through_values_and_gradients():
    p = torch.tensor([[0.2, 0.8, 0.6]], requires_grad=True)
    m = topk_mask_st(p, 1)
    assert m.tolist() == [[0.0, 1.0, 0.0]]
    (m * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert p.grad.tolist() == [[1.0, 2.0, 3.0]]
    h = torch.tensor([1.0, 0.0]); s = torch.tensor([0.3, 0.4], requires_grad=True)
    assert torch.equal(straight_through(h, s), h)


def test_gumbel_softmax_deterministic_and_noisy():
    logits = torch.log_softmax(torch.randn(4, 50, 2), -1)
    y = gumbel_softmax_st(logits, 1.0, noise=False)
    assert torch.equal(y.argmax(-1), logits.argmax(-1))
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    g = torch.Generator().manual_seed(0)
    k1 = keep_from_logprobs(logits, noise=True, generator=g)
    k2 = keep_from_logprobs(logits, noise=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(k1, k2) and not torch.equal(k1, (logits[..., 0] > logits[..., 1]).float())
    with pytest.raises(ValueError):
        gumbel_softmax_st(logits, 0.0)
    with pytest.raises(ValueError):
        keep_from_logprobs(torch.zeros(2, 3, 3))
    # noisy keep rate follows the probability
    lp = torch.log(torch.tensor([0.8, 0.2])).expand(1, 20000, 2)
    assert abs(keep_from_logprobs(lp, noise=True).mean().item() - 0.8) < 0.02


class _Recorder(Pruner):
    """A test pruner: logs the protocol calls, keeps every other token from block 4, returns a state."""

    name = "recorder"
    needs_attention = frozenset({3})

    def begin(self, x0, grid, state=None):
        ctx = super().begin(x0, grid, state)
        ctx.data["calls"] = [("begin", tuple(x0.shape), grid, state)]
        return ctx

    def before_block(self, b, x, keep, ctx):
        ctx.data["calls"].append(("before", b))
        if b == 4:
            keep = torch.zeros_like(keep)
            keep[:, ::2] = 1
        return keep

    def after_block(self, b, x, keep, ctx, attn=None):
        ctx.data["calls"].append(("after", b, attn is not None))
        if b == 3:
            ctx.data["attn"] = attn

    def finish(self, ctx):
        _, loss, over = super().finish(ctx)
        return ctx.data, loss + 1.5, over + 7


def test_protocol_call_order_and_outputs():
    m = build_backbone("vit_nano", 64, pruner=_Recorder()).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 64), state="prev")
    calls = out.state["calls"]
    assert calls[0] == ("begin", (2, 16, 48), (4, 4), "prev")
    assert calls[1:] == [c for b in range(12) for c in (("before", b), ("after", b, b == 3))]
    a = out.state["attn"]
    assert a.cls.shape == (2, 16) and a.received.shape == (2, 16)
    assert ((a.cls.sum(1) > 0) & (a.cls.sum(1) < 1)).all()   # CLS attention minus its self-attention
    assert torch.equal(a.score(), a.cls)
    assert out.keep.counts[:, 4:].eq(8).all() and out.keep.counts[:, :4].eq(16).all()
    assert float(out.aux_loss) == 1.5 and out.keep.overhead_macs.tolist() == [7.0, 7.0]
    assert out.keep.meta["method"] == "recorder"


def test_dense_and_external_pruners():
    assert DensePruner().name == "dense"
    m = build_backbone("vit_nano", 64, pruner=ExternalMaskPruner()).eval()
    sched = torch.ones(12, 16, dtype=torch.bool)
    sched[6:, 8:] = False
    with torch.no_grad():
        out = m(torch.randn(3, 3, 64, 64), sched)
    assert out.keep.counts[:, 6:].eq(8).all() and out.state is sched
    with pytest.raises(ValueError, match="N=16"):
        m(torch.randn(1, 3, 64, 64), torch.ones(12, 9, dtype=torch.bool))


def test_build_pruner_names():
    from vppkit.models.pruning import build_pruner
    from vppkit.models.pruning.dynamicvit import DynamicViTPruner
    from vppkit.models.pruning.tome import ToMePruner
    assert isinstance(build_pruner("DynamicViT", 48, rho=0.5), DynamicViTPruner)
    assert isinstance(build_pruner("tome", 48, r=2), ToMePruner)
    for name in ("dense", "external", "svit", "evit"):
        assert build_pruner(name, 48).name == name
    with pytest.raises(ValueError, match="unknown pruner"):
        build_pruner("spvit", 48)
