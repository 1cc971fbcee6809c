"""Measured MACs (vppkit.flops.measure) against the closed form, and fvcore vs FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import Block, VisionTransformer

from vppkit.flops.analytic import ViTSpec, backbone_macs, block_macs, counts_schedule, dense_schedule
from vppkit.flops.measure import (
    block_ratios_from_records,
    count_macs,
    macs_from_records,
    measure_block_macs,
    measure_schedule_macs,
    measure_video_macs,
    unfused_attention,
)
from vppkit.models.pruning.dynamicvit import DynamicViTPruner
from vppkit.models.pruning.evit import evit_counts
from vppkit.models.pruning.tome import ToMePruner


def _vit(dim=192, heads=3, img=64):
    return VisionTransformer(img_size=img, patch_size=16, embed_dim=dim, depth=12, num_heads=heads,
                             num_classes=0).eval()


@pytest.mark.parametrize("counter", ["torch", "fvcore"])
def test_single_block_matches_closed_form(counter):
    blk = Block(64, 4, mlp_ratio=4.0).eval()
    n = 17
    measured = measure_block_macs(blk, n, counter=counter)
    closed = block_macs(n, 64, 4.0)["total"]
    if counter == "torch":
        assert measured == closed  # matmuls only, exactly
    else:
        # fvcore also counts the two layer norms: 5 MACs per element each
        assert measured == closed + 2 * 5 * n * 64


def test_fused_attention_hidden_unless_disabled():
    from fvcore.nn import FlopCountAnalysis

    blk = Block(64, 4).eval()
    blk.attn.fused_attn = True
    x = torch.zeros(1, 17, 64)
    with torch.no_grad():
        fused = FlopCountAnalysis(blk, (x,)).unsupported_ops_warnings(False).total()
    counted = count_macs(blk, x, counter="fvcore")
    assert counted - fused == pytest.approx(2 * 17 * 17 * 64, rel=0.02)  # QK^T + AV became visible
    assert blk.attn.fused_attn is True  # restored
    with unfused_attention(blk):
        assert blk.attn.fused_attn is False
    assert blk.attn.fused_attn is True


@pytest.mark.parametrize("make", [
    lambda n: dense_schedule(n),
    lambda n: counts_schedule(DynamicViTPruner(48, rho=0.7).nominal_counts(n, 12)),
    lambda n: counts_schedule(evit_counts(n, 12, {3: 0.7, 6: 0.7, 9: 0.7}, fused_token=True, inside_block=True)),
    lambda n: counts_schedule(ToMePruner(3).nominal_counts(n, 12))])
def test_schedules_counters_agree_with_analytic(make):
    vit = _vit()
    spec = ViTSpec.from_timm(vit)
    sched = make(16)
    ana = backbone_macs(spec, sched).backbone
    torch_m = measure_schedule_macs(vit, sched, 64, counter="torch")
    fv = measure_schedule_macs(vit, sched, 64, counter="fvcore")
    assert torch_m == pytest.approx(ana, rel=1e-9)  # same terms, exactly
    assert abs(fv / torch_m - 1) < 0.01  # counters agree within 1 % when attention is counted


def _nano(pruner):
    from vppkit.models.vit import build_backbone

    return build_backbone("vit_nano", 64, pruner=pruner).eval()


def test_real_dynamicvit_measured_equals_records():
    from vppkit.models.pruning.dynamicvit import DynamicViTPruner

    model = _nano(DynamicViTPruner(48))
    spec = ViTSpec.from_timm(model.vit)
    g = torch.Generator().manual_seed(0)
    videos = [torch.randn(2, 3, 64, 64, generator=g)]
    m = measure_video_macs(model, videos, counter="torch")
    assert m.frames == 2
    ana = macs_from_records(spec, m.records)
    assert m.backbone == pytest.approx(ana.backbone, rel=1e-9)
    assert m.overhead == pytest.approx(m.reported_overhead, rel=1e-9)  # the pruner reports what it runs
    assert m.block_ratios[:3] == [1.0, 1.0, 1.0] and m.block_ratios[3] < 1.0
    dense = backbone_macs(spec, dense_schedule(16)).backbone
    assert m.backbone < dense


def test_real_vpp_video_state_and_fvcore():
    from vppkit.models.pruning.vpp import VPPPruner

    model = _nano(VPPPruner(48, inference_noise=False))
    spec = ViTSpec.from_timm(model.vit)
    g = torch.Generator().manual_seed(1)
    video = torch.randn(3, 3, 64, 64, generator=g)
    m_t = measure_video_macs(model, [video], counter="torch")
    m_f = measure_video_macs(model, [video], counter="fvcore")
    assert m_t.frames == m_f.frames == 3
    assert m_t.block_ratios == pytest.approx(m_f.block_ratios)  # deterministic inference: same keep masks
    assert m_t.backbone == pytest.approx(macs_from_records(spec, m_t.records).backbone, rel=1e-9)
    assert abs(m_f.backbone / m_t.backbone - 1) < 0.03  # fvcore adds layer norms (~1.7 % at width 48)
    # frame 0 has no Map-SM: its overhead is the three SMs' alone (each on the tokens kept at the block before
    # it); the next frames add Map-SM's
    from vppkit.models.pruning.vpp_modules import sm_macs

    sms = [sum(sm_macs(int(r.counts[0, b - 1]), 48) for b in (3, 6, 9)) for r in m_t.records]
    per_frame = [float(r.overhead_macs.sum()) for r in m_t.records]
    assert per_frame[0] == sms[0]
    assert all(f > s for f, s in zip(per_frame[1:], sms[1:]))
    assert m_t.overhead == pytest.approx(m_t.reported_overhead, rel=1e-9)  # the pruner reports what it runs
    assert m_t.block_ratios[1] < 1.0  # Map-SM pruned on frames 1-2


def test_block_ratios_from_records_errors():
    with pytest.raises(ValueError, match="no KeepRecords"):
        block_ratios_from_records([])
    with pytest.raises(ValueError, match="video 0"):
        measure_video_macs(_nano(None), [torch.zeros(3, 64, 64)])


def test_real_tome_and_evit_records():
    from vppkit.models.pruning.evit import EViTPruner
    from vppkit.models.pruning.tome import ToMePruner

    g = torch.Generator().manual_seed(2)
    video = torch.randn(1, 3, 64, 64, generator=g)
    ev = _nano(EViTPruner())
    m = measure_video_macs(ev, [video])
    assert m.backbone == pytest.approx(macs_from_records(ViTSpec.from_timm(ev.vit), m.records).backbone, rel=1e-9)
    tm = _nano(ToMePruner(3))
    m = measure_video_macs(tm, [video])
    ana = macs_from_records(ViTSpec.from_timm(tm.vit), m.records).backbone  # uses meta['mlp_counts']
    # measured also sees ToMe's matching scores and the unmerge to the grid: slightly more, never less
    assert 0 < m.backbone - ana < 0.01 * ana


def test_vpp_macs_over_real_davis_frames(davis_dir):
    """Dynamic pruner averaged over real frames (DAVIS-2016 subset, 3 frames resized to 64 x 96)."""
    import numpy as np
    from PIL import Image

    from vppkit.models.pruning.vpp import VPPPruner

    frames_dir = davis_dir / "JPEGImages" / "240p"
    video_dir = sorted(p for p in frames_dir.iterdir() if p.is_dir())[0]
    files = sorted(video_dir.glob("*.jpg"))[:3]
    if len(files) < 3:
        pytest.skip(f"{video_dir} has fewer than 3 frames")
    frames = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((96, 64)), dtype=np.float32))
              for f in files]
    video = (torch.stack(frames).permute(0, 3, 1, 2) / 255.0 - 0.45) / 0.225
    from vppkit.models.vit import build_backbone

    model = build_backbone("vit_nano", (64, 96), pruner=VPPPruner(48, inference_noise=False)).eval()
    m = measure_video_macs(model, [video])
    spec = ViTSpec.from_timm(model.vit)
    assert m.frames == 3
    assert m.backbone == pytest.approx(macs_from_records(spec, m.records).backbone, rel=1e-9)
    assert m.backbone < backbone_macs(spec, dense_schedule(24)).backbone
