"""Tests of the speed benchmark harness (vppkit.bench): it runs, its arithmetic gives known answers, and its
report (analyses.bench) is structured.

No speed is asserted here (speed goals live in reports/bench.md): tiny model, one repeat; the speed-up and
breakdown arithmetic is checked with a fake timer that returns fixed times.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from analyses.bench import write_report
from vppkit import bench
from vppkit.bench import (DEFAULT_GOAL_PKRS, MethodSpec, ModelCase, block_breakdown, nominal_counts,
                          nominal_masks, resolve_methods, run_speed_benchmark, time_calls, tome_r_for_pkr)
from vppkit.bench.memory import _memory_worker
from vppkit.models.pruning.base import ForcedSchedulePruner
from vppkit.models.pruning.schedules import nominal_pkr
from vppkit.models.pruning.vpp import VPPPruner
from vppkit.models.vit import build_backbone

# vit_nano (C = 48, 1 CLS token) at 32 x 48 px: N = 2 x 3 = 6 patches. VPP pkr40 (m = 0.6, rho = 0.7), worked by
# hand: floor(6 * 0.6) = 3 at blocks 1-2; SM targets 6 * 0.42 = 2.52 -> 3, 6 * 0.294 = 1.764 -> 2,
# 6 * 0.2058 = 1.2348 -> 1.
VPP40_N6 = [6, 3, 3, 3, 3, 3, 2, 2, 2, 1, 1, 1]
# MACs of one vit_nano block on n tokens (CLS included): 12 n C^2 + 2 n^2 C = 27648 n + 96 n^2; patch embedding
# 6 * (3 * 16 * 16) * 48 = 221184. Dense: 12 blocks on 7 tokens; VPP40_N6: n = count + 1.
DENSE_N6_MACS = 221184 + 12 * (27648 * 7 + 96 * 49)                                   # 2,600,064
VPP40_N6_MACS = 221184 + sum(27648 * (k + 1) + 96 * (k + 1) ** 2 for k in VPP40_N6)   # 1,398,528


def test_resolve_methods_dense_first_and_presets():
    specs = resolve_methods(["vpp", "svit", "dense", "tome"], num_patches=960)
    names = [s.name for s in specs]
    assert names[0] == "dense"
    assert {"vpp-pkr55", "vpp-pkr40"} <= set(names)
    assert sum(s.method == "svit" for s in specs) == len(DEFAULT_GOAL_PKRS)
    assert resolve_methods(["svit@0.5"])[0].goal_pkr == 0.5
    with pytest.raises(ValueError):
        resolve_methods(["nope"])
    with pytest.raises(ValueError):
        resolve_methods(["tome"])          # needs num_patches


@pytest.mark.parametrize("name", ["vpp-pkr55", "vpp-pkr40", "svit", "dynamicvit", "evit", "tome"])
def test_nominal_counts_match_goal_pkr(name):
    n = 960
    for spec in resolve_methods([name], num_patches=n):
        counts = nominal_counts(spec, n)
        assert len(counts) == 12 and counts[0] == n
        pkr = sum(counts) / (12 * n)
        tol = 0.03 if spec.method == "tome" else 0.01
        assert abs(pkr - spec.goal_pkr) < tol, (spec.name, pkr)
        if spec.method in ("vpp", "dynamicvit", "evit", "tome"):
            assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_vpp_nominal_counts_are_the_schedule():
    spec = resolve_methods(["vpp-pkr40"])[0]
    counts = nominal_counts(spec, 960)
    # 960 * 0.6 = 576; 960 * 0.42 = 403.2 -> 403; 960 * 0.294 = 282.24 -> 282; 960 * 0.2058 = 197.568 -> 198
    assert counts == [960, 576, 576, 403, 403, 403, 282, 282, 282, 198, 198, 198]
    assert nominal_counts(spec, 6) == VPP40_N6
    assert abs(sum(counts) / (12 * 960) - nominal_pkr("pkr40")) < 2e-3


def test_nominal_counts_known_answers():
    n = 144
    dyn = MethodSpec("d", "dynamicvit", 0.5, {"rho": 0.7})
    assert nominal_counts(dyn, n) == [144] * 3 + [100] * 3 + [70] * 3 + [49] * 3      # floor(144 * 0.7^s)
    ev = MethodSpec("e", "evit", 0.5, {"keep_rates": {"3": 0.7, "6": 0.7, "9": 0.7}})
    assert nominal_counts(ev, n) == [144] * 3 + [101] * 3 + [71] * 3 + [50] * 3       # ceil(.7 K), no fused token
    sv = MethodSpec("s", "svit", 0.5, {"targets": [0.7] * 3 + [0.49] * 3 + [0.343] * 3})
    assert nominal_counts(sv, n) == [144] * 3 + [101] * 3 + [71] * 3 + [49] * 3       # round(100.8, 70.56, 49.392)
    tm = MethodSpec("t", "tome", 0.5, {"r": 13})
    assert nominal_counts(tm, n) == [144, 131, 118, 105, 92, 79, 66, 53, 40, 27, 14, 7]


def test_nominal_masks_exact_counts_and_nesting():
    spec = resolve_methods(["vpp-pkr40"])[0]
    m = nominal_masks(spec, 60, batch=3, seed=1)
    assert m.shape == (3, 12, 60) and m.dtype == torch.bool
    assert (m.sum(-1) == torch.tensor(nominal_counts(spec, 60))).all()
    assert not (m[:, 1:] & ~m[:, :-1]).any()                   # nested
    assert not torch.equal(m[0], m[1])                          # per-sample random tokens
    with pytest.raises(ValueError):
        nominal_masks(resolve_methods(["tome"], num_patches=60)[-1], 60, 1)


def test_tome_r_for_pkr_monotone():
    assert tome_r_for_pkr(960, 1.0) == 0
    assert tome_r_for_pkr(960, 0.4) > tome_r_for_pkr(960, 0.55) > 0
    # N = 12, r = 1: tokens 12, 11, ..., 1 -> PKR 78 / 144 = 0.5417; r = 2: 12, 10, ..., 2, then 1 x 6 -> 48 / 144
    assert tome_r_for_pkr(12, 0.54) == 1 and tome_r_for_pkr(12, 0.34) == 2


def test_forced_pruner_runs_modules_and_imposes_masks():
    bb = build_backbone("vit_nano", (32, 48)).eval()
    spec = resolve_methods(["vpp-pkr40"])[0]
    masks = nominal_masks(spec, 6, batch=2)
    bb.pruner = ForcedSchedulePruner(VPPPruner(bb.embed_dim, "pkr40", inference_noise=False), masks).eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.inference_mode():
        o1 = bb(x)
        o2 = bb(x, o1.state.detach())
    assert torch.equal(o2.keep.masks, masks)
    assert (o2.keep.overhead_macs > o1.keep.overhead_macs).all()     # Map-SM ran on the second frame


def test_time_calls_structure():
    calls = []
    ts = time_calls({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1)
    assert set(ts) == {"a", "b"} and all(len(v) == 2 and min(v) >= 0 for v in ts.values())
    assert calls == ["a", "b"] * 3                               # interleaved
    with pytest.raises(ValueError):
        time_calls({}, repeats=0)


@pytest.fixture(scope="module")
def quick_result():
    suite = bench.default_suite(quick=True)
    suite["memory"] = None                                      # tested separately
    return bench.run_suite(suite, profile="test")


def test_quick_suite_report_structure(quick_result):
    res = quick_result
    h = res["header"]
    for key in ("commit", "time_utc", "device", "torch", "threads", "loadavg_start", "loadavg_end", "inference"):
        assert key in h
    rows = res["models"][0]["rows"]
    parts = {r["part"] for r in rows}
    assert parts == {"backbone", "whole"}
    assert {r["batch"] for r in rows} == {1, 2}
    assert {r["family"] for r in rows} == {"dense", "vpp", "svit", "tome"}
    assert not any(r["family"] == "tome" and r["variant"] == "schedule" for r in rows)
    for r in rows:
        assert r["ms_per_frame"] > 0 and r["GMACs"] > 0 and len(r["times_ms"]) == 1
        assert 0 < r["realised_pkr"] <= 1
    json.dumps(res)                                             # JSON-able


def test_quick_suite_rows(quick_result):
    rows = quick_result["models"][0]["rows"]
    for r in rows:
        if r["family"] == "dense":
            assert r["realised_pkr"] == 1.0 and r["speedup_ideal"] == 1.0
        if r["family"] == "vpp":
            # timed PKR is the nominal schedule's (non-first frame), schedule and real alike
            assert r["block_counts"] == [float(c) for c in VPP40_N6]
            assert r["realised_pkr"] == pytest.approx(sum(VPP40_N6) / 72)
        if r["variant"] == "real" and r["family"] in ("vpp", "svit"):
            assert r["overhead_GMACs"] > 0
        if r["variant"] == "schedule":
            assert r["overhead_GMACs"] == 0
    whole = {(r["method"], r["variant"], r["batch"]): r for r in rows if r["part"] == "whole"}
    head = quick_result["models"][0]["head_GMACs"]
    assert head > 0
    for r in rows:
        if r["part"] == "backbone":
            assert whole[(r["method"], r["variant"], r["batch"])]["GMACs"] == pytest.approx(r["GMACs"] + head)


def _fake_time_calls(seconds):
    """A stand-in for ``time_calls`` that returns fixed times: ``seconds(key)`` per timed call, nothing run."""
    def fake(fns, repeats, warmup=1, device="cpu"):
        return {k: [seconds(k)] * repeats for k in fns}
    return fake


def test_speedups_from_fixed_times(monkeypatch):
    # dense 10 ms per batch-2 forward, VPP 4 ms: 5 and 2 ms/frame, measured 2.5; ideal from the MACs worked by hand
    monkeypatch.setattr("vppkit.bench.speed.time_calls",
                        _fake_time_calls(lambda k: 0.010 if k[1] == "dense" else 0.004))
    case = ModelCase("fake", "vit_nano", (32, 48), methods=("dense", "vpp-pkr40"), batches=(2,), repeats=3,
                     variants=("schedule",))
    res = run_speed_benchmark(case)
    rows = {r["family"]: r for r in res["rows"]}
    assert rows["dense"]["ms_per_frame"] == pytest.approx(5.0) and rows["vpp"]["ms_per_frame"] == pytest.approx(2.0)
    assert rows["dense"]["GMACs"] == pytest.approx(DENSE_N6_MACS / 1e9)
    assert rows["vpp"]["GMACs"] == pytest.approx(VPP40_N6_MACS / 1e9)
    ideal = 2600064 / 1398528
    assert rows["vpp"]["speedup_measured"] == pytest.approx(2.5)
    assert rows["vpp"]["speedup_ideal"] == pytest.approx(ideal)
    assert rows["vpp"]["realized_over_ideal"] == pytest.approx(2.5 / ideal)
    assert rows["vpp"]["realized_over_ideal_min"] == pytest.approx(2.5 / ideal)


def test_breakdown_from_fixed_times(monkeypatch):
    # per timed block: dense 2 ms, compute_K = K / 6 ms, gathered = compute_K + 0.5 ms; embed 0.25 ms
    def seconds(key):
        k, kind = key
        return {"dense_block": 2e-3, "compute_K": k / 6 * 1e-3, "gathered": (k / 6 + 0.5) * 1e-3,
                "embed_norm": 0.25e-3, "map_sm": 1e-3, "sm": 0.1e-3}.get(kind, 3e-3)
    monkeypatch.setattr("vppkit.bench.breakdown.time_calls", _fake_time_calls(seconds))
    bd = block_breakdown("vit_nano", (32, 48), "vpp-pkr40", batches=(1,), repeats=1)
    assert bd["counts"] == VPP40_N6
    tot = bd["totals"]["1"]
    assert tot["dense_blocks"] == pytest.approx(24.0)                          # 12 blocks x 2 ms
    assert tot["compute_K"] == pytest.approx(5.0)                     # (6 + 5 x 3 + 3 x 2 + 3 x 1) / 6 ms
    assert tot["gathered"] == pytest.approx(5.0 + 11 * 0.5)          # block 0 keeps all: not gathered
    assert tot["gather_scatter"] == pytest.approx(5.5)
    assert tot["embed_norm"] == pytest.approx(0.25)
    assert bd["pruner_modules"]["1"]["all_modules_ms"] == pytest.approx(1.0 + 3 * 0.1)
    assert {g["kept"]: g["blocks"] for g in bd["groups"]} == {6: [0], 3: [1, 2, 3, 4, 5], 2: [6, 7, 8],
                                                              1: [9, 10, 11]}


def test_quick_suite_targets_breakdown_markdown(quick_result, tmp_path):
    res = quick_result
    t = [x for x in res["targets"] if x["kind"] == "measured"]
    assert [x["batch"] for x in t] == [1] and t[0]["goal"] == 0.75      # batch 2 has no goal
    assert isinstance(t[0]["met"], bool)
    assert t[0]["realized_over_ideal_min"] > 0
    est = [x for x in res["targets"] if x["kind"] == "estimate"]
    assert [x["batch"] for x in est] == [1] and res["breakdown"]["ideal_speedup"] > 1
    bd = res["breakdown"]
    assert set(bd["totals"]) == {"1", "2"}
    assert sum(len(g["blocks"]) for g in bd["groups"] if g["batch"] == 1) == 12
    assert "map_sm_ms" in bd["pruner_modules"]["1"]
    write_report(res, tmp_path / "b.json", tmp_path / "b.md")
    md = (tmp_path / "b.md").read_text()
    assert "realized/ideal" in md and "vpp-pkr40" in md and "load average" in md
    assert json.loads((tmp_path / "b.json").read_text())["models"][0]["num_patches"] == 6


def test_memory_worker_and_summary():
    # in-process (make bench runs each length in a fresh subprocess: vppkit.bench.memory.run_worker)
    mcfg = {"arch": "vit_nano", "img_size": [32, 32], "dim": 16, "num_queries": 4, "dec_layers": 1, "heads": 2}
    runs = [_memory_worker(t, mode, mcfg, {"method": "vpp", "schedule": "pkr40"}, "cpu", 3)
            for mode in ("state-chain", "online") for t in (2, 3)]
    for r in runs:
        assert r["peak_MiB"] > 0 and r["frames_run"] == r["frames"]
        assert r["growth_MiB"] == pytest.approx(r["peak_MiB"] - r["after_warmup_MiB"])
    s = bench.summarize_memory(runs)
    assert set(s) == {"state-chain", "online"}
    assert s["online"]["diff_MiB"] == pytest.approx(runs[3]["peak_MiB"] - runs[2]["peak_MiB"])
    with pytest.raises(ValueError):
        _memory_worker(2, "nope", mcfg, {}, "cpu", 3)


def test_cli_build_suite_overrides():
    from vppkit.commands.bench import build_suite
    from vppkit.config import load_config

    args = argparse.Namespace(quick=False, arch="vit_nano", img_size=[32, 48], batch=[1, 2], methods=["dense", "vpp"],
                              pkr=None, variants=["schedule"], parts=None, repeats=1, warmup=0, no_breakdown=True,
                              no_memory=True, memory_frames=None)
    suite = build_suite(args, load_config("default"))
    (case,) = suite["cases"]
    assert case.arch == "vit_nano" and case.img_size == (32, 48) and case.batches == (1, 2)
    assert case.variants == ("schedule",) and case.repeats == 1 and case.repeats_by_batch == {}
    assert suite["breakdown"] is None and suite["memory"] is None
    res = run_speed_benchmark(case)
    assert {r["variant"] for r in res["rows"]} == {"dense", "schedule"}


def test_cli_registered():
    from vppkit.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--no-memory", "--batch", "1"])
    assert args.command == "bench" and args.quick and args.batch == [1]
