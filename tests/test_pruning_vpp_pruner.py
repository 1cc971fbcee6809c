"""VPPPruner inside PrunableViT: Map-SM / SM placement, temporal state, losses, execution modes (vpp-notes §3, §7, §14)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vppkit.metrics.pkr import frame_pkr
from vppkit.models.pruning.schedules import VPPSchedule, rho_for_pkr
from vppkit.models.pruning.vpp import TemporalState, VPPPruner
from vppkit.models.records import KeepRecord
from vppkit.models.vit import build_backbone

IMG = (64, 96)  # vit_nano, patch 16 -> grid 4 x 6, N = 24
GRID = (4, 6)
N = 24
C = 48

# Overhead MACs per sample worked out by hand (vpp-notes §4.2 "Cost", §5; multiply-adds of the matmuls only,
# LayerNorm / softmax / pooling / top-k left out), at N = 24 tokens of width C = 48:
# SM = MLP C -> C/4 -> 2: 48 x 12 + 12 x 2 = 600 per token it runs on; with a graph (training) on all N tokens,
# 24 x 600 = 14_400; at inference on the tokens kept before its block only (SM.forward).
SM_MACS = 14_400
SM_MACS_PER_TOKEN = 600
# Map-SM selector = MLP C -> C/2 -> 2: 48 x 24 + 24 x 2 = 1_200 per token; with a graph on the N mapped tokens,
# 24 x 1_200 = 28_800.
MAP_SM_SELECTOR_MACS = 28_800
# Map-SM at inference against the K kept previous keys: Phi_sim = x_q (N x C) @ x_k^T (C x K) = N K C
# = 24 x 48 = 1_152 MACs per kept key (the mapping is an argmax, no matmul), plus the selector on those K tokens
# (its log-probs are gathered onto the N current tokens): 1_152 + 1_200 = 2_352 MACs per kept key.
MAP_SM_MACS_PER_KEPT_KEY = 2_352


def _sm_inference_macs(record: KeepRecord) -> list[float]:
    """Per-sample inference MACs of the three SMs: each on the tokens kept at the block before it (2, 5, 8)."""
    return (SM_MACS_PER_TOKEN * record.counts[:, [2, 5, 8]].sum(1)).double().tolist()


def _counted_pruner_macs(model: torch.nn.Module, frame: torch.Tensor, state, grad: bool = False) -> float:
    """MACs that Map-SM and the SMs really execute in one forward of a batch-1 ``frame`` (with or without a
    graph), counted by ``torch.utils.flop_counter`` (FLOPs of mm / addmm / bmm / baddbmm = 2 x MACs),
    independent of the pruner's own bookkeeping. Batch 1: no padding of the kept keys, so executed = per-sample
    work."""
    assert frame.shape[0] == 1
    with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as counter:
        model(frame, state)
    per_module = counter.get_flop_counts()
    names = [k for k in per_module if re.search(r"\.pruner\.(map_sm|sms\.\d+)$", k)]
    assert names, list(per_module)
    return sum(sum(per_module[k].values()) for k in names) / 2


def _model(**kw) -> torch.nn.Module:
    return build_backbone("vit_nano", img_size=IMG, pruner=VPPPruner(C, **kw))


def _frames(t: int = 3, b: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, 3, *IMG, generator=g)
    return [base + 0.1 * torch.randn(b, 3, *IMG, generator=g) for _ in range(t)]


def _is_nested(masks: torch.Tensor, start: int = 1) -> bool:
    """masks (B, depth, N) bool: the mask in force at block b+1 is a subset of that at block b."""
    return not (masks[:, start + 1:] & ~masks[:, start:-1]).any()


def test_first_frame_has_no_map_sm_and_returns_state():
    model = _model().eval()
    (x,) = _frames(1)
    with torch.no_grad():
        out = model(x, None, return_intermediates=True)
    masks = out.keep.masks
    assert masks[:, :3].all()  # blocks 0-2 dense
    assert _is_nested(masks, 3)
    # overhead: only the three SMs, each on the tokens kept before it (the first on all N: blocks 0-2 dense)
    sm = _sm_inference_macs(out.keep)
    assert out.keep.overhead_macs.tolist() == sm and sm[0] < 3 * SM_MACS and min(sm) >= SM_MACS
    det = _model(inference_noise=False).eval()      # deterministic: the counted forward keeps the same tokens
    with torch.no_grad():
        assert _counted_pruner_macs(det, x[:1], None) == _sm_inference_macs(det(x[:1], None).keep)[0]
    st = out.state
    assert isinstance(st, TemporalState) and st.valid.all() and st.grid == GRID
    assert torch.equal(st.key, out.intermediates[1])  # block-0 output
    assert torch.equal(st.value, out.intermediates[6])  # block-5 output
    assert torch.equal(st.mask, masks[:, 5])  # mask in force at block 5


@pytest.mark.parametrize("execution", ["masked", "gathered"])
def test_second_frame_map_sm_keeps_floor_nm_and_masks_nest(execution):
    model = _model().eval()
    f0, f1 = _frames(2)
    with torch.no_grad():
        st = model(f0, None, execution=execution).state
        out = model(f1, st, execution=execution, return_intermediates=True)
    masks = out.keep.masks
    k = math.floor(N * 0.7)
    assert out.keep.counts[:, 1].tolist() == [k, k] and out.keep.counts[:, 2].tolist() == [k, k]
    assert torch.equal(masks[:, 1], masks[:, 2])
    assert _is_nested(masks, 1)
    # inference maps from the previous frame's kept tokens only: N K C + K selector instead of 2 N^2 C + N
    expected = [MAP_SM_MACS_PER_KEPT_KEY * int(kp) + sm
                for kp, sm in zip(st.mask.sum(-1), _sm_inference_macs(out.keep))]
    assert out.keep.overhead_macs.tolist() == expected
    assert st.mask.sum(-1).tolist() != [N, N]  # the K of the formula is the kept count, not N
    # the next key is the block-0 output, not the block-2 output (official in-place scatter bug, §12.1)
    assert torch.equal(out.state.key, out.intermediates[1])
    kept = masks[:, 1]
    assert not torch.allclose(out.state.key[kept], out.intermediates[3][kept])


def test_reported_overhead_equals_counted_macs():
    """The reported overhead is the work Map-SM and the SMs execute (counted by torch), in both Map-SM paths."""
    model = _model(inference_noise=False).eval()   # deterministic: the counted forward keeps the same tokens
    f0, f1 = (f[:1] for f in _frames(2))
    with torch.no_grad():
        st = model(f0, None).state
        out = model(f1, st)
    reported = out.keep.overhead_macs.item()
    k = int(st.mask.sum())
    assert 0 < k < N
    sm = _sm_inference_macs(out.keep)[0]
    assert sm < 43_200      # each SM on the tokens kept before it only
    assert reported == _counted_pruner_macs(model, f1, st) == (1_152 + 1_200) * k + sm
    # graph path (training): Phi_sim and A @ x_v over all N previous tokens, 2 N^2 C = 2 x 24^2 x 48 = 55_296
    model.train()
    reported = model(f1, st).keep.overhead_macs.item()
    assert reported == _counted_pruner_macs(model, f1, st, grad=True) == 55_296 + 28_800 + 43_200


def test_mixed_batch_new_video_runs_dense_blocks_1_2():
    model = _model().eval()
    f0, f1 = _frames(2)
    with torch.no_grad():
        st = model(f0, None).state.reset(torch.tensor([True, False]))
        out = model(f1, st)
    counts = out.keep.counts
    assert counts[0, 1:3].tolist() == [N, N]
    assert counts[1, 1:3].tolist() == [math.floor(N * 0.7)] * 2
    oh = out.keep.overhead_macs - torch.tensor(_sm_inference_macs(out.keep), dtype=torch.float64)
    assert oh[0] == 0 and oh[1] == MAP_SM_MACS_PER_KEPT_KEY * int(st.mask[1].sum())
    assert out.state.valid.all()  # both samples now have a previous frame
    # the continuing sample gets the same mask as when run alone (deterministic mode)
    det = _model(inference_noise=False).eval()
    det.load_state_dict(model.state_dict())
    with torch.no_grad():
        st = det(f0, None).state
        mixed = det(f1, st.reset(torch.tensor([True, False]))).keep.masks
        alone = det(f1[1:], TemporalState(st.key[1:], st.value[1:], st.mask[1:], st.grid, st.valid[1:])).keep.masks
    assert torch.equal(mixed[1], alone[0])


def test_deterministic_mode_is_repeatable():
    model = _model(inference_noise=False).eval()
    f0, f1 = _frames(2)
    with torch.no_grad():
        runs = []
        for _ in range(2):
            o0 = model(f0, None)
            o1 = model(f1, o0.state)
            runs.append((o0.keep.masks, o1.keep.masks, o1.tokens))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert model.pruner.extra_meta()["inference_noise"] is False


def test_masked_and_gathered_agree_in_deterministic_mode():
    model = _model(inference_noise=False).double().eval()
    f0, f1 = (f.double() for f in _frames(2))
    with torch.no_grad():
        outs = {}
        for mode in ("masked", "gathered"):
            o0 = model(f0, None, execution=mode)
            outs[mode] = (o0, model(f1, o0.state, execution=mode))
    for i in range(2):
        a, b = outs["masked"][i], outs["gathered"][i]
        assert torch.equal(a.keep.masks, b.keep.masks)
        assert torch.allclose(a.tokens, b.tokens, atol=1e-9)
        assert torch.allclose(a.state.value, b.state.value, atol=1e-9)


def test_gradients_reach_map_sm_and_sms_through_task_loss_masked_mode():
    model = _model().train()
    f0, f1 = _frames(2)
    st = model(f0, None).state
    out = model(f1, st)
    assert out.keep.meta["execution"] == "masked"
    out.tokens.pow(2).mean().backward()  # task loss only: gradient via the straight-through masks
    for name, p in model.pruner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_three_frame_chain_passes_state_and_gradient():
    model = _model().train()
    frames = _frames(3)
    frames[0].requires_grad_(True)
    st, losses = None, []
    for t, f in enumerate(frames):
        out = model(f, st)
        assert out.keep.counts[:, 1].tolist() == ([N, N] if t == 0 else [math.floor(N * 0.7)] * 2)
        assert out.aux_loss.requires_grad and out.aux_loss.item() >= 0
        losses.append(out.aux_loss)
        st = out.state
    out.tokens.sum().backward()  # frame-2 output depends on frame 0 only through the chained states
    assert frames[0].grad is not None and frames[0].grad.abs().sum() > 0
    # detached state: no gradient reaches the previous frame
    a = _frames(2, seed=1)
    a[0].requires_grad_(True)
    model(a[1], model(a[0], None).state.detach()).tokens.sum().backward()
    assert a[0].grad is None


def test_sparsity_loss_value_matches_recorded_masks():
    model = _model(inference_noise=False).eval()
    f0, f1 = _frames(2)
    with torch.no_grad():
        o0 = model(f0, None)
        o1 = model(f1, o0.state)
    targets = VPPSchedule.preset("pkr55").sm_targets
    frac = [o0.keep.masks[:, b].double().mean().item() for b in (3, 6, 9)]
    expected = 40 * sum((f - k) ** 2 for f, k in zip(frac, targets)) / 3
    assert o0.aux_loss.item() == pytest.approx(expected, rel=1e-5)
    assert o1.aux_loss.item() > 0


def test_bad_state_is_rejected():
    model = _model().eval()
    f0, f1 = _frames(2)
    with torch.no_grad():
        st = model(f0, None).state
        with pytest.raises(ValueError, match="TemporalState"):
            model(f1, {"key": st.key})
        with pytest.raises(ValueError, match="new video"):
            model(f1[:1], st)
    with pytest.raises(ValueError, match="value_block"):
        VPPPruner(C, value_block=0)
    with pytest.raises(ValueError, match="C=48"):
        build_backbone("vit_micro", img_size=IMG, pruner=VPPPruner(C))(f0)


def _force_sm_ratio(pruner: VPPPruner, ratio: float) -> None:
    """Make every SM keep each incoming token with probability ``ratio`` (noise on): f0 - f1 = logit(ratio)/tau."""
    for sm in pruner.sms:
        torch.nn.init.zeros_(sm.mlp.fc2.weight)
        with torch.no_grad():
            sm.mlp.fc2.bias.copy_(torch.tensor([math.log(ratio / (1 - ratio)) / sm.tau, 0.0]))


@pytest.mark.parametrize("preset", ["pkr55", "pkr40"])
def test_realised_pkr_matches_nominal_when_targets_are_hit(preset):
    """An untrained pruner whose SMs realise their targets in expectation gives the nominal PKR (§11.1)."""
    sched = VPPSchedule.preset(preset)
    pruner = VPPPruner(16, preset).eval()  # official inference noise on
    _force_sm_ratio(pruner, sched.rho)
    grid, b = (40, 40), 2
    n = grid[0] * grid[1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, 16, generator=g)

    def run(state):
        ctx = pruner.begin(x, grid, state)
        keep, masks = torch.ones(b, n), []
        for blk in range(12):
            keep = pruner.before_block(blk, x, keep, ctx)
            masks.append(keep > 0.5)
            pruner.after_block(blk, x, keep, ctx)
        st, _, overhead = pruner.finish(ctx)
        return st, KeepRecord.from_masks(torch.stack(masks, 1), grid, overhead)

    with torch.no_grad():
        st, rec0 = run(None)
        _, rec1 = run(st)
    assert frame_pkr(rec1).mean().item() == pytest.approx(sched.nominal_pkr(), abs=0.01)
    assert rec0.masks[:, :3].all()  # first frame: no Map-SM
    assert rec1.counts[:, 1].tolist() == [math.floor(n * sched.m)] * b
    realised = (rec1.counts.double() / n).mean(0).tolist()
    assert realised == pytest.approx(sched.block_keep_fractions(), abs=0.03)


def test_schedule_overrides_and_rho_for_pkr():
    rho = rho_for_pkr(0.55, 0.7)
    p = VPPPruner(C, "pkr55", rho=rho)
    assert p.schedule.nominal_pkr() == pytest.approx(0.55, abs=1e-9)
    assert VPPPruner(C, "pkr40").schedule.sm_targets == pytest.approx((0.42, 0.294, 0.2058))
