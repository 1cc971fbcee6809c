"""The adapter host (issue 13; vpp-notes §2.2, DESIGN.md §7): deformable attention against a grid_sample reference,
masked vs gathered execution, pruned tokens still feeding the injector and extractor, gate gradients through the
host, and a tiny adapter-host VISModel training on the smoke profile."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vppkit.config import load_config
from vppkit.engine.infer import infer_checkpoint
from vppkit.engine.train import train
from vppkit.models.adapter import AdapterRun, Extractor, Injector, ViTAdapter, build_deform_attn, deform_attend
from vppkit.models.adapter.deform_attn import reference_points
from vppkit.models.pruning.base import ExternalMaskPruner
from vppkit.models.pruning.tome import ToMePruner
from vppkit.models.pruning.vpp import VPPPruner
from vppkit.models.vis.losses import PointSampledCriterion, build_criterion
from vppkit.models.vis.model import VISModel, build_vis_model
from vppkit.models.vit import build_backbone

torch.set_num_threads(1)

IMG = (64, 96)          # vit_nano, patch 16 -> grid 4 x 6 (N = 24); spatial prior 8x12, 4x6, 2x3 at s8/16/32
GRID = (4, 6)
N = 24
C = 48
SMALL = dict(conv_inplane=8, deform_heads=6, deform_points=2)


def _images(b=2, seed=0):
    return torch.randn(b, 3, *IMG, generator=torch.Generator().manual_seed(seed))


def _randomize_(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Random values everywhere (the MSDeformAttn init has zero offsets weights / attention logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


# ------------------------------------------------------------------------------------------------------------------
# reference multi-scale deformable attention, written out: per level, per head, grid_sample of the value map
# ------------------------------------------------------------------------------------------------------------------
def _reference_deform_attn(attn, query, ref, value, shapes):
    """Deformable DETR eq. (3) with the module's four Linear layers:
    out_q = W_o sum_h [ sum_l sum_p softmax_lp(A_hq) * V_{h,l}(ref_q,l + Δ_hlpq / (W_l, H_l)) ],
    V_{h,l} sampled bilinearly with zero padding, align_corners=False (grid coords 2 * loc - 1)."""
    b, q, c = query.shape
    heads, levels, points = attn.n_heads, attn.n_levels, attn.n_points
    d = c // heads
    v = F.linear(value, attn.value_proj.weight, attn.value_proj.bias)                       # (B, S, C)
    off = F.linear(query, attn.sampling_offsets.weight, attn.sampling_offsets.bias).view(b, q, heads, levels,
                                                                                          points, 2)
    logits = F.linear(query, attn.attention_weights.weight, attn.attention_weights.bias).view(b, q, heads,
                                                                                             levels * points)
    w = logits.softmax(-1).view(b, q, heads, levels, points)
    ref = ref.expand(b, q, levels, 2) if ref.shape[2] == levels else ref.expand(b, q, 1, 2).repeat(1, 1, levels, 1)
    out = torch.zeros(b, q, heads, d, dtype=query.dtype)
    start = 0
    for l, (h, wd) in enumerate(shapes):
        vl = v[:, start:start + h * wd].view(b, h, wd, heads, d)
        start += h * wd
        for hh in range(heads):
            vmap = vl[..., hh, :].permute(0, 3, 1, 2)                                         # (B, d, h, w)
            loc = ref[:, :, l, None, :] + off[:, :, hh, l] / torch.tensor([wd, h], dtype=query.dtype)  # (B,Q,P,2)
            s = F.grid_sample(vmap, 2 * loc - 1, mode="bilinear", padding_mode="zeros", align_corners=False)
            out[:, :, hh] += (s * w[:, None, :, hh, l, :]).sum(-1).permute(0, 2, 1)             # (B, Q, d)
    return F.linear(out.reshape(b, q, c), attn.output_proj.weight, attn.output_proj.bias)


def test_deform_attention_equals_grid_sample_reference():
    torch.manual_seed(0)
    shapes = [(5, 7), (3, 4), (2, 2)]
    attn = build_deform_attn(dim=24, heads=3, levels=3, points=4).double()
    _randomize_(attn, seed=1, scale=0.5)                   # offsets of several cells, some points outside the map
    g = torch.Generator().manual_seed(2)
    query = torch.randn(2, 9, 24, generator=g, dtype=torch.float64)
    value = torch.randn(2, sum(h * w for h, w in shapes), 24, generator=g, dtype=torch.float64)
    for ref in (torch.rand(2, 9, 3, 2, generator=g, dtype=torch.float64),          # per-level reference points
                reference_points([(3, 3)], dtype=torch.float64)):                  # (1, Q, 1, 2) grid centres
        got = deform_attend(attn, query, ref, value, shapes)
        want = _reference_deform_attn(attn, query, ref, value, shapes)
        assert got.shape == (2, 9, 24)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    # float32, the dtype the model runs in
    attn32 = copy.deepcopy(attn).float()
    got = deform_attend(attn32, query.float(), ref.float(), value.float(), shapes)
    assert torch.allclose(got.double(), _reference_deform_attn(attn, query, ref, value, shapes), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="levels"):
        deform_attend(attn32, query.float(), ref.float(), value.float(), shapes[:2])


def test_reference_points_are_cell_centres():
    r = reference_points([(2, 4)])
    assert r.shape == (1, 8, 1, 2)
    assert torch.allclose(r[0, :4, 0, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))   # x = (j + 0.5) / 4
    assert torch.allclose(r[0, ::4, 0, 1], torch.tensor([0.25, 0.75]))                   # y = (i + 0.5) / 2


def test_injector_and_extractor_wire_the_attention_as_vit_adapter():
    """Injector: x + γ·(attn(LN x, LN c) [+ LN x, official mmcv]); γ = 0 at init leaves x unchanged.
    Extractor: c + attn(LN c, LN x) [+ LN c] + ConvFFN(LN(·))."""
    torch.manual_seed(0)
    shapes = [(8, 12), (4, 6), (2, 3)]
    x = torch.randn(2, N, C)
    c = torch.randn(2, sum(h * w for h, w in shapes), C)
    xref, cref = reference_points([GRID]), reference_points(shapes)
    inj = Injector(C, heads=6, points=2).eval()
    assert torch.equal(inj(x, xref, c, shapes), x)                     # γ initialised to 0
    for residual in (True, False):
        inj = Injector(C, heads=6, points=2, query_residual=residual).eval()
        _randomize_(inj, seed=3)
        ln = F.layer_norm(x, (C,), inj.query_norm.weight, inj.query_norm.bias, 1e-6)
        lc = F.layer_norm(c, (C,), inj.feat_norm.weight, inj.feat_norm.bias, 1e-6)
        attn = _reference_deform_attn(inj.attn, ln, xref, lc, shapes)
        want = x + inj.gamma * (attn + ln if residual else attn)
        assert torch.allclose(inj(x, xref, c, shapes), want, atol=1e-5)
    ex = Extractor(C, heads=6, points=2, cffn_ratio=0.25).eval()
    _randomize_(ex, seed=4)
    lc = F.layer_norm(c, (C,), ex.query_norm.weight, ex.query_norm.bias, 1e-6)
    lx = F.layer_norm(x, (C,), ex.feat_norm.weight, ex.feat_norm.bias, 1e-6)
    c1 = c + _reference_deform_attn(ex.attn, lc, cref, lx, [GRID]) + lc
    assert ex.ffn.fc1.out_features == C // 4
    want = c1 + ex.ffn(F.layer_norm(c1, (C,), ex.ffn_norm.weight, ex.ffn_norm.bias, 1e-6), shapes)
    assert torch.allclose(ex(c, cref, shapes, x, GRID), want, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# the host around PrunableViT
# ------------------------------------------------------------------------------------------------------------------
def _masks(b, seed=1, p=0.5):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(b, 12, N, generator=g) < p
    m[:, 0] = True
    return m


def _adapter(**kw) -> ViTAdapter:
    ad = ViTAdapter(C, **{**SMALL, **kw})
    for blk in ad.interactions:                         # γ = 0 at init would make the injectors no-ops
        torch.nn.init.normal_(blk.injector.gamma, 0.5, 0.1)
    return ad


def test_adapter_outputs_and_placement():
    torch.manual_seed(0)
    bb = build_backbone("vit_nano", IMG, pruner=ExternalMaskPruner()).eval()
    ad = _adapter().eval()
    assert [len(b.extra_extractors or []) for b in ad.interactions] == [0, 0, 0, 2]
    calls = []

    class Spy(AdapterRun):
        def before_block(self, b, x):
            calls.append(("before", b))
            return super().before_block(b, x)

        def after_block(self, b, x):
            calls.append(("after", b))
            super().after_block(b, x)

    x = _images()
    with torch.no_grad():
        out = ad(bb, x, _masks(2))
        c1, c2, c3, c4 = ad.spm(x)
    assert [tuple(f.shape) for f in out.features] == [(2, C, 16, 24), (2, C, 8, 12), (2, C, 4, 6), (2, C, 2, 3)]
    assert tuple(c2.shape[-2:]) == (8, 12) and tuple(c4.shape[-2:]) == (2, 3)
    # the hook runs around every block, before the pruner decides (see the pruned-token test for its effect)
    shapes = [(8, 12), (4, 6), (2, 3)]
    cat = torch.cat([m.flatten(2).transpose(1, 2) for m in (c2, c3, c4)], 1)
    run = Spy(ad, cat, shapes, GRID)
    with torch.no_grad():
        bb(x, _masks(2), interaction=run)
    assert calls == [(k, b) for b in range(12) for k in ("before", "after")]
    assert run.x_out is not None and run.x_out.shape == (2, N, C)
    tome = build_backbone("vit_nano", IMG, pruner=ToMePruner(2)).eval()
    with pytest.raises(ValueError, match="merges tokens"):
        ad(tome, x)
    with pytest.raises(ValueError, match="end at block"):
        ViTAdapter(C, **SMALL, interaction_indexes=[[0, 2], [3, 5]])(bb, x, _masks(2))
    with pytest.raises(ValueError, match="ranges"):
        ViTAdapter(C, **SMALL, interaction_indexes=[[0, 5], [3, 11]])


def test_map_sm_and_sms_decide_after_the_injectors():
    """Map-SM (before block 1) sees block 0's output of the injected tokens; the SM at block 3 sees the tokens right
    after injector 1 (official InteractionBlockWithInitialSelection: injector, then the selection per block)."""
    torch.manual_seed(0)
    bb = build_backbone("vit_nano", IMG, pruner=VPPPruner(C, inference_noise=False)).eval()
    ad = _adapter().eval()
    seen, injected = {}, {}
    orig = bb.pruner.before_block

    def spy(b, x, keep, ctx):
        seen[b] = x.clone()
        return orig(b, x, keep, ctx)

    bb.pruner.before_block = spy

    class Spy(AdapterRun):
        def before_block(self, b, x):
            y = super().before_block(b, x)
            injected[b] = y.clone()
            return y

    x = _images()
    with torch.no_grad():
        c1, c2, c3, c4 = ad.spm(x)
        cat = torch.cat([m.flatten(2).transpose(1, 2) + ad.level_embed[i] for i, m in enumerate((c2, c3, c4))], 1)
        bb(x, None, interaction=Spy(ad, cat, [(8, 12), (4, 6), (2, 3)], GRID))
    for b in (3, 6, 9):
        assert torch.equal(seen[b], injected[b])
    assert not torch.equal(injected[3], seen[2])        # injector 1 changed the tokens before SM 3 decided


@pytest.mark.parametrize("kw", [{}, {"class_token": False}])
def test_masked_and_gathered_agree_with_the_adapter_host(kw):
    torch.manual_seed(0)
    bb = build_backbone("vit_nano", IMG, pruner=ExternalMaskPruner(), **kw).eval()
    ad = _adapter().eval()
    x = _images(3)
    masks = _masks(3)
    masks[1, 5:] = False                                # a sample with nothing kept at late blocks
    with torch.no_grad():
        a = ad(bb, x, masks, execution="masked", return_intermediates=True)
        b = ad(bb, x, masks, execution="gathered", return_intermediates=True)
        bb.gather_impl = "loop"
        c = ad(bb, x, masks, execution="gathered")
    assert torch.equal(a.backbone.keep.masks, masks) and torch.equal(b.backbone.keep.masks, masks)
    for fa, fb, fc in zip(a.features, b.features, c.features):
        assert torch.isfinite(fa).all()
        assert torch.allclose(fa, fb, atol=1e-4) and torch.allclose(fa, fc, atol=1e-4)
    assert torch.allclose(a.backbone.tokens, b.backbone.tokens, atol=1e-5)
    for xa, xb in zip(a.backbone.intermediates, b.backbone.intermediates):
        assert torch.allclose(xa, xb, atol=1e-5)
    # a token pruned at block b is not changed by block b itself (only by an injector before it)
    inter = a.backbone.intermediates
    for blk in (1, 2, 4, 5, 7, 8, 10, 11):                # blocks with no injector in front
        dropped = ~masks[:, blk]
        assert torch.equal(inter[blk + 1][dropped], inter[blk][dropped])


def test_masked_and_gathered_agree_for_a_vpp_chain_through_the_vis_model():
    torch.manual_seed(0)
    bb = build_backbone("vit_nano", IMG, pruner=VPPPruner(C, inference_noise=False))
    model = VISModel(bb, 3, dim=32, num_queries=5, dec_layers=2, heads=4, host="adapter",
                     adapter={**SMALL, "pixel_decoder_layers": 1}).double().eval()
    frames = [_images(2, seed=s).double() for s in (0, 1)]
    outs = {}
    with torch.no_grad():
        for mode in ("masked", "gathered"):
            o0 = model(frames[0], None, execution=mode)
            outs[mode] = (o0, model(frames[1], o0.backbone.state, execution=mode))
    for i in range(2):
        a, b = outs["masked"][i], outs["gathered"][i]
        assert torch.equal(a.backbone.keep.masks, b.backbone.keep.masks)
        assert (a.backbone.keep.counts[:, 3:] < N).any()           # something was pruned
        for k in ("pred_logits", "pred_masks", "embeds"):
            assert torch.allclose(getattr(a, k), getattr(b, k), atol=1e-8), k
    assert (outs["masked"][1].backbone.keep.counts[:, 1] < N).all()   # Map-SM active on the second frame


def test_a_pruned_token_still_feeds_the_injector_and_the_extractor():
    """Token j is pruned from block 1 on. Perturbing its carried value before block 3 changes what injector 1
    returns for it and what the extractor after block 5 computes (c), and through c (injector 2) the kept tokens
    after block 6, in both execution modes. A pruned-adapter variant (the official prune_injector/extractor
    options, unused in the final configs) would not see it."""
    torch.manual_seed(0)
    j = 7
    masks = torch.ones(2, 12, N, dtype=torch.bool)
    masks[:, 1:, j] = False
    bb = build_backbone("vit_nano", IMG, pruner=ExternalMaskPruner()).eval()
    ad = _adapter().eval()
    x = _images()
    shapes = [(8, 12), (4, 6), (2, 3)]

    class Probe(AdapterRun):
        def __init__(self, *a, delta=0.0):
            super().__init__(*a)
            self.delta, self.rec = delta, {}

        def before_block(self, b, x):
            if b == 3:
                x = x.clone()
                x[:, j] = x[:, j] + self.delta
            y = super().before_block(b, x)
            self.rec[("in", b)] = y
            return y

        def after_block(self, b, x):
            super().after_block(b, x)
            self.rec[("c", b)] = self.c
            self.rec[("out", b)] = x

    for mode in ("masked", "gathered"):
        runs = []
        delta = torch.randn(C, generator=torch.Generator().manual_seed(5))    # not a constant: LN would remove it
        for delta in (0.0, delta):
            with torch.no_grad():
                c1, c2, c3, c4 = ad.spm(x)
                cat = torch.cat([m.flatten(2).transpose(1, 2) + ad.level_embed[i]
                                 for i, m in enumerate((c2, c3, c4))], 1)
                run = Probe(ad, cat, shapes, GRID, delta=delta)
                bb(x, masks, execution=mode, interaction=run)
            runs.append(run.rec)
        base, pert = runs
        kept = torch.arange(N) != j
        # injector 1 refreshes the pruned token (a query like any other) and its output moves with the input
        assert (base[("in", 3)][:, j] - base[("out", 2)][:, j]).abs().max() > 1e-3
        assert not torch.allclose(base[("in", 3)][:, j], pert[("in", 3)][:, j])
        assert torch.equal(base[("in", 3)][:, kept], pert[("in", 3)][:, kept])    # injector reads only c
        # blocks 3-5 never compute token j, so the kept tokens after block 5 are unchanged ...
        assert torch.allclose(base[("out", 5)][:, kept], pert[("out", 5)][:, kept], atol=1e-6)
        # ... but the extractor after block 5 reads the pruned token's value: c changes
        assert (base[("c", 5)] - pert[("c", 5)]).abs().max() > 1e-3
        assert torch.equal(base[("c", 2)], pert[("c", 2)])
        # and injector 2 carries that into the kept tokens before block 6
        assert (base[("in", 6)][:, kept] - pert[("in", 6)][:, kept]).abs().max() > 1e-4


def test_gradients_reach_every_gate_through_the_adapter_host_masked():
    torch.manual_seed(0)
    bb = build_backbone("vit_nano", IMG, pruner=VPPPruner(C))
    model = VISModel(bb, 3, dim=32, num_queries=5, dec_layers=2, heads=4, host="adapter",
                     adapter={**SMALL, "pixel_decoder_layers": 1}).train()
    f0, f1 = _images(2, seed=0), _images(2, seed=1)
    st = model(f0, None).backbone.state
    out = model(f1, st)
    assert out.backbone.keep.meta["execution"] == "masked"
    # task outputs only (no sparsity loss): the gradient reaches the gates through the straight-through masks,
    # the adapter's extractors / injectors and the Mask2Former head
    (out.pred_masks.pow(2).mean() + out.pred_logits.pow(2).mean()).backward()
    names = [n for n, _ in model.backbone.pruner.named_parameters()]
    assert any(n.startswith("map_sm.") for n in names) and sum(n.startswith("sms.") for n in names) >= 6
    for name, p in model.backbone.pruner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in model.adapter.named_parameters():      # the adapter trains too (γ gets a gradient)
        if name.endswith("injector.gamma"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------------------------
# config, criterion, training
# ------------------------------------------------------------------------------------------------------------------
def test_host_config_builds_the_adapter_host_and_keeps_plain_by_default():
    cfg = load_config("smoke")
    assert cfg["model"]["host"] == "plain"
    assert cfg["model"]["adapter"]["interaction_indexes"] == [[0, 2], [3, 5], [6, 8], [9, 11]]
    assert cfg["model"]["adapter"]["conv_inplane"] == 64 and cfg["model"]["adapter"]["deform_points"] == 4
    plain = build_vis_model(cfg["model"], 2)
    assert plain.host == "plain" and hasattr(plain, "pyramid") and not hasattr(plain, "adapter")
    cfg = load_config("smoke", ["model.host=adapter", "model.adapter.conv_inplane=8",
                                "model.adapter.pixel_decoder_layers=2", "model.backbone_kwargs={drop_path_rate: 0.1}"])
    m = build_vis_model(cfg["model"], 2)
    assert m.host == "adapter" and len(m.head.pixel_decoder.encoder.layers) == 2
    assert len(m.head.transformer.decoder.layers) == cfg["model"]["dec_layers"]
    assert m.adapter.interactions[0].extractor.drop_path.drop_prob == pytest.approx(0.1)
    # the adapter is part of the backbone's lr group (lr x backbone_lr_mult, as the official code) but is not
    # frozen with the ViT: it is new (random init) where the ViT is the pretrained part
    groups = m.param_groups(1.0, 0.05, backbone_lr_mult=0.1)
    adapter_ids = {id(p) for p in m.adapter.parameters()}
    assert all(g["lr"] == pytest.approx(0.1) for g in groups if any(id(p) in adapter_ids for p in g["params"]))
    m.freeze_backbone(True)
    assert all(p.requires_grad for p in m.adapter.parameters())
    assert not any(p.requires_grad for n, p in m.backbone.named_parameters() if ".pruner." not in n)
    assert m._backbone_needs_grad()          # the injectors feed the frozen blocks: gradients must cross them
    with pytest.raises(ValueError, match="host"):
        VISModel(m.backbone, 2, host="nope")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_vis_model({**cfg["model"], "dim": 48}, 2)


def test_point_sampled_criterion_is_chosen_by_the_loss_section():
    cfg = load_config("smoke")
    assert type(build_criterion(cfg["loss"], 3)).__name__ == "SetCriterion"
    lcfg = {**cfg["loss"], "num_points": 64, "importance_sample_ratio": 0.75}
    crit = build_criterion(lcfg, 3)
    assert isinstance(crit, PointSampledCriterion)
    assert crit.loss.num_points == 64 and crit.loss.oversample_ratio == 3.0
    assert crit.loss.importance_sample_ratio == 0.75 and float(crit.loss.empty_weight[-1]) == pytest.approx(0.1)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 4, generator=g, requires_grad=True)
    masks = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    tg = [{"labels": torch.tensor([0, 2]), "masks": torch.rand(2, 32, 32, generator=g) > 0.5},
          {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32, dtype=torch.bool)}]
    out = {"pred_logits": logits, "pred_masks": masks, "aux_outputs": [{"pred_logits": logits, "pred_masks": masks}]}
    torch.manual_seed(0)
    losses = crit(out, tg)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    losses["loss"].backward()
    assert masks.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0
    # no instance in the batch: the no-object CE only, class weight 0.1 everywhere -> CE = log(4) at uniform logits
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32, dtype=torch.bool)}] * 2
    flat = {"pred_logits": torch.zeros(2, 4, 4), "pred_masks": torch.zeros(2, 4, 8, 8)}
    e = crit(flat, empty)
    assert float(e["loss_ce"]) == pytest.approx(2.0 * torch.log(torch.tensor(4.0)).item(), rel=1e-6)
    assert float(e["loss_mask"]) == 0 and float(e["loss_dice"]) == 0


TINY = ["data.num_videos=2", "data.num_val_videos=1", "data.num_frames=4", "data.height=64", "data.width=64",
        "model.img_size=[64,64]", "model.dim=32", "model.num_queries=5", "model.dec_layers=2",
        "model.host=adapter", "model.adapter.conv_inplane=8", "model.adapter.deform_points=2",
        "model.adapter.pixel_decoder_layers=1", "loss.num_points=64", "loss.importance_sample_ratio=0.75"]


def test_tiny_adapter_host_trains_dense_and_sparse_and_infers_on_the_smoke_profile(cache):
    cfg = load_config("smoke", TINY + ["train.dense.steps=2", "train.sparse.steps=2", "pruning.method=vpp",
                                       "pruning.schedule=pkr55"])
    dense = train(cfg, "dense", out_dir=cache / "dense", progress=False)
    sparse = train(cfg, "sparse", init=dense["checkpoint"], out_dir=cache / "sparse", progress=False)
    for run in (dense, sparse):
        assert all(torch.isfinite(torch.tensor(float(v))) for k, v in run["last"].items()
                   if k.startswith("loss")), run["last"]
    assert sparse["last"]["loss_sparse"] > 0
    # online inference (gathered, batch 1, tracker) reads the adapter host's outputs like the plain host's
    out = infer_checkpoint(sparse["checkpoint"], "train", cache / "infer", progress=False)
    assert 0.0 < out["pkr"]["pkr"] < 1.0
    assert out["pkr"]["block_density_later"][1] < 1.0          # Map-SM active after the first frame
