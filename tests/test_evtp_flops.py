"""EVTP-IVS InstructSeg TFLOPs calculator (vppkit.flops.instructseg) and the ``evtp-flops`` command."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from vppkit.flops.instructseg import (
    BENCHMARKS,
    COMPONENTS,
    KEEP_TOKENS,
    PAPER_REPORTED,
    FlopsOptions,
    InstructSegConstants,
    component_flops,
    evtp_breakdown_long,
    evtp_flops_table,
    get_benchmark,
    lm_flops,
    mask_decoder_flops,
    named_interpretation,
    paper_comparison,
    prune_flops,
    sequence_length,
    temporal_flops,
    vision_flops,
    vmtf_flops,
)


# ---------------------------------------------------------------- hand-computed small cases
def test_component_formulas_hand_cases():
    # LM, S=2 d=3 d_int=5 L=1 |V|=7: 3*2*9 + 2*4*3 + 2*9 + 2*2*3*5 + 2*3*7
    assert lm_flops(2, 3, 5, 1, 7) == 54 + 24 + 18 + 60 + 42
    # vision, N=2 d_v=3 L_v=2 d=5: 2 * (6*2*9 + 2*4*3) + 2*3*5
    assert vision_flops(2, 3, 2, 5) == 2 * (108 + 24) + 30
    # prune, V=10 V'=5 d=2: 2*10*2 + 10*5*2/10 + 5*2
    assert prune_flops(10, 5, 2) == 40 + 10 + 10
    # mask, Q=2 d_m=3 L_d=1 V'=4: 12*2*9 + 2*4*3 + 2*2*4*3 + 2*3*4
    assert mask_decoder_flops(2, 3, 1, 4) == 216 + 24 + 48 + 24
    # temporal, Q_t=2 F=3 d=5 L_t=2: 2 * (2*3*25 + 4*2*25)
    assert temporal_flops(2, 3, 5, 2) == 700
    # VMTF, T_eff=2 d=3 d_f=4 d_v=5 V'=6 L_f=1: 2*3*4 + 6*5*4 + 2*2*6*4
    assert vmtf_flops(2, 3, 4, 5, 6, 1) == 24 + 120 + 96


def test_default_constants_and_benchmarks():
    c = InstructSegConstants()
    assert (c.d, c.d_int, c.L, c.vocab, c.d_v, c.N, c.L_v) == (2560, 10240, 32, 51200, 1152, 729, 27)
    assert (c.Q, c.d_m, c.L_d, c.Q_t, c.L_t, c.F_ref, c.d_f, c.L_f, c.T_fixed) == (100, 256, 9, 128, 3, 4, 1024, 3, 100)
    assert [(b.T, b.F) for b in BENCHMARKS] == [(15, 1), (15, 1), (23, 1), (50, 1), (80, 1), (20, 4), (18, 4), (25, 4)]
    assert all(b.V == 729 for b in BENCHMARKS) and KEEP_TOKENS == (729, 146, 73, 36)
    assert get_benchmark("revos").name == "ReVOS"
    with pytest.raises(KeyError, match="unknown benchmark"):
        get_benchmark("COCO")


def test_component_values_match_notes():
    """evtp-notes §3.2 single-frame component values (TFLOPs)."""
    c = InstructSegConstants()
    ref = get_benchmark("RefCOCO")
    tf = lambda x: x / 1e12  # noqa: E731
    assert tf(vision_flops(c.N, c.d_v, c.L_v, c.d)) == pytest.approx(0.1919, abs=1e-4)
    assert tf(lm_flops(sequence_length(ref, 729), c.d, c.d_int, c.L, c.vocab)) == pytest.approx(2.3513, abs=1e-4)
    assert tf(lm_flops(sequence_length(ref, 146), c.d, c.d_int, c.L, c.vocab)) == pytest.approx(0.7022, abs=1e-4)
    assert [round(tf(prune_flops(729, v, c.d)) * 1e5, 1) for v in (146, 73, 36)] == [3.1, 1.8, 1.1]
    assert tf(mask_decoder_flops(c.Q, c.d_m, c.L_d, 729)) == pytest.approx(0.00111, abs=1e-5)
    assert tf(mask_decoder_flops(c.Q, c.d_m, c.L_d, 36)) == pytest.approx(0.00077, abs=1e-5)
    assert tf(temporal_flops(c.Q_t, 1, c.d, c.L_t)) == pytest.approx(0.0126, abs=1e-4)
    assert tf(temporal_flops(c.Q_t, 4, c.d, c.L_t)) == pytest.approx(0.0201, abs=1e-4)
    assert tf(vmtf_flops(15, c.d, c.d_f, c.d_v, 729, c.L_f)) == pytest.approx(0.00277, abs=1e-5)


@pytest.mark.parametrize("interp,bench,expected", [
    ("I1", "RefYouTube", (2.582, 0.929, 0.730, 0.630)),
    ("I3", "RefYouTube", (10.340, 2.735, 1.908, 1.499)),
    ("I5", "ReVOS", (9.783, 2.173, 1.346, 0.937)),
    ("I6", "RefYouTube", (3.350, 1.697, 1.498, 1.398)),
    ("I1", "RefCOCO", (2.547, 0.896, 0.697, 0.597)),
    ("I1", "ReasonSeg", (2.739, 1.075, 0.874, 0.773)),
])
def test_totals_match_notes_interpretations(interp, bench, expected):
    """evtp-notes §3.3 totals (TFLOPs) for the named readings."""
    df = evtp_flops_table([get_benchmark(bench)], options=named_interpretation(interp))
    assert df["total_TFLOPs"].round(3).tolist() == pytest.approx(list(expected), abs=1.5e-3)


def test_default_options_are_literal_and_reported():
    o = FlopsOptions()
    assert o.video_tokens_in_sequence == "all_frames" and o.vision_passes == "once"
    assert o.temporal_on_images and o.t_eff == "T" and not o.prune_at_full_keep and o.flop_factor == 1
    df = evtp_flops_table()
    assert set(df["options"]) == {o.describe()}
    assert len(df) == len(BENCHMARKS) * len(KEEP_TOKENS)
    full = df[df.V_keep == 729]
    assert (full.reduction_pct == 0).all() and (full.token_pruning_TFLOPs == 0).all()
    # S: image 15 + 100 + 146 = 261; video 20 + 100 + 146 * 4
    assert df.query("benchmark == 'RefCOCO' and V_keep == 146").S.item() == 261
    assert df.query("benchmark == 'RefYouTube' and V_keep == 146").S.item() == 20 + 100 + 584
    comp_cols = [f"{k}_TFLOPs" for k in COMPONENTS]
    assert (df[comp_cols].sum(axis=1) - df.total_TFLOPs).abs().max() < 1e-12
    row = df.query("benchmark == 'ReVOS' and V_keep == 36").iloc[0]
    assert row.reduction_pct == pytest.approx(100 * (1 - row.total_TFLOPs / row.full_TFLOPs))


def test_options_change_what_they_say():
    b = get_benchmark("RefDAVIS")
    base = component_flops(b, 146)
    per_frame = component_flops(b, 146, options=FlopsOptions(vision_passes="per_frame"))
    assert per_frame["vision_encoder"] == 4 * base["vision_encoder"]
    refs = component_flops(b, 146, options=FlopsOptions(vision_passes="key_plus_refs"))
    assert refs["vision_encoder"] == 5 * base["vision_encoder"]
    img = get_benchmark("RefCOCO")
    assert component_flops(img, 146, options=FlopsOptions(temporal_on_images=False))["temporal"] == 0
    assert component_flops(img, 146, options=FlopsOptions(temporal_frames="reference"))["temporal"] == \
        temporal_flops(128, 4, 2560, 3)
    assert component_flops(b, 729, options=FlopsOptions(prune_at_full_keep=True))["token_pruning"] > 0
    assert component_flops(b, 146, options=FlopsOptions(prune_per_frame=True))["token_pruning"] == \
        4 * base["token_pruning"]
    t1 = component_flops(b, 146, options=FlopsOptions(t_eff="T+1"))["vmtf"]
    assert t1 == vmtf_flops(19, 2560, 1024, 1152, 146, 3)
    two = component_flops(b, 146, options=FlopsOptions(flop_factor=2))
    assert all(two[k] == 2 * base[k] for k in COMPONENTS)
    with pytest.raises(ValueError, match="vision_passes"):
        FlopsOptions(vision_passes="twice")
    with pytest.raises(ValueError, match="RefDAVIS"):
        component_flops(b, 800)


def test_breakdown_long_and_paper_constant():
    long = evtp_breakdown_long([get_benchmark("RefCOCO")], (729, 146))
    assert len(long) == 2 * len(COMPONENTS)
    assert set(long.component) == set(COMPONENTS)
    assert long.groupby("V_keep").share.sum().round(12).tolist() == [1.0, 1.0]
    cmp = paper_comparison()
    paper_rows = cmp[cmp.source.str.startswith("paper")]
    assert paper_rows.value.tolist() == [PAPER_REPORTED["image_speedup"], PAPER_REPORTED["video_speedup"]]
    assert "NOT FLOPs" in PAPER_REPORTED["metric"]
    assert cmp[cmp.source.str.startswith("computed")].value.gt(1).all()


# ---------------------------------------------------------------- cross-check against FlopCounterMode
class _TinyDecoderLayer(nn.Module):
    """Decoder-only layer with the structure the LM formula models (no bias / norm / activation cost)."""

    def __init__(self, d, d_int, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.fc1 = nn.Linear(d, d_int)
        self.fc2 = nn.Linear(d_int, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x):
        b, s, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, s, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / (d // h) ** 0.5
        causal = torch.ones(s, s, dtype=torch.bool).triu(1)
        att = att.masked_fill(causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.out(y)
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


def _flop_counter_macs(module, x):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as mode:
        module(x)
    return mode.get_total_flops() / 2  # FlopCounterMode counts 2 FLOPs per multiply-add


def test_lm_formula_matches_flop_counter():
    d, d_int, L, vocab, S, heads = 32, 80, 3, 50, 11, 4
    lm = nn.Sequential(*[_TinyDecoderLayer(d, d_int, heads) for _ in range(L)], nn.LayerNorm(d),
                       nn.Linear(d, vocab, bias=False)).eval()
    measured = _flop_counter_macs(lm, torch.randn(1, S, d))
    assert measured == lm_flops(S, d, d_int, L, vocab)


def test_vision_formula_matches_flop_counter():
    from timm.models.vision_transformer import Block

    from vppkit.flops.measure import unfused_attention

    d_v, L_v, N, d, heads = 24, 2, 9, 40, 2
    # the formula's 6 N d_v^2 = 4 (qkv + proj) + 2 (MLP with hidden width d_v, i.e. mlp_ratio 1)
    enc = nn.Sequential(*[Block(d_v, heads, mlp_ratio=1.0) for _ in range(L_v)], nn.Linear(d_v, d)).eval()
    with unfused_attention(enc):
        measured = _flop_counter_macs(enc, torch.randn(1, N, d_v))
    assert measured == vision_flops(N, d_v, L_v, d)


# ---------------------------------------------------------------- CLI
def test_cli_evtp_flops_formats(capsys, tmp_path):
    from vppkit.cli import main

    assert main(["evtp-flops", "--benchmarks", "RefCOCO", "ReVOS"]) == 0
    out = capsys.readouterr().out
    assert "| benchmark" in out and "options: video_tokens_in_sequence=all_frames" in out and "TFLOPs" in out
    target = tmp_path / "evtp.json"
    assert main(["evtp-flops", "--format", "json", "--interpretation", "I3", "--out", str(target)]) == 0
    data = json.loads(target.read_text())
    assert data["options"]["vision_passes"] == "per_frame" and len(data["rows"]) == 32
    assert main(["evtp-flops", "--format", "csv", "--breakdown", "--keep-tokens", "146", "--paper"]) == 0
    out = capsys.readouterr().out
    assert "component" in out and "paper (quoted)" in out
    assert main(["evtp-flops", "--benchmarks", "COCO"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_named_interpretation_unknown():
    with pytest.raises(KeyError):
        named_interpretation("I9")
    assert replace(named_interpretation("I3"), flop_factor=2).flop_factor == 2
