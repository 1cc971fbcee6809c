"""Tests of the speed benchmark harness (vppkit.bench): it runs, and its report is structured and consistent.

No speed is asserted here (speed goals live in reports/bench.md): tiny model, one repeat.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from vppkit import bench
from vppkit.bench import (DEFAULT_GOAL_PKRS, ForcedSchedulePruner, MethodSpec, ModelCase, nominal_counts,
                          nominal_masks, resolve_methods, run_speed_benchmark, time_calls, tome_r_for_pkr)
from vppkit.models.pruning.schedules import nominal_pkr


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
    assert counts[1] == counts[2] == math.floor(960 * 0.6)
    assert abs(sum(counts) / (12 * 960) - nominal_pkr("pkr40")) < 2e-3


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


def test_forced_pruner_runs_modules_and_imposes_masks():
    from vppkit.models.pruning.vpp import VPPPruner
    from vppkit.models.vit import build_backbone

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


def test_quick_suite_ratios_consistent(quick_result):
    rows = quick_result["models"][0]["rows"]
    ref = {(r["part"], r["batch"]): r for r in rows if r["family"] == "dense"}
    for r in rows:
        d = ref[(r["part"], r["batch"])]
        assert r["speedup_measured"] == pytest.approx(d["ms_per_frame"] / r["ms_per_frame"])
        assert r["speedup_ideal"] == pytest.approx(d["GMACs"] / r["GMACs"])
        assert r["realized_over_ideal"] == pytest.approx(r["speedup_measured"] / r["speedup_ideal"])
        if r["family"] == "dense":
            assert r["realised_pkr"] == 1.0 and r["speedup_ideal"] == pytest.approx(1.0)
        if r["family"] == "vpp":
            # timed PKR is the nominal schedule's (non-first frame), schedule and real alike
            assert r["block_counts"] == [float(c) for c in nominal_counts(MethodSpec(
                r["method"], "vpp", r["goal_pkr"], {"schedule": "pkr40"}), 6)]
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
    tot = bd["totals"]["2"]
    assert tot["gather_scatter"] == pytest.approx(tot["gathered"] - tot["compute_K"])
    assert sum(len(g["blocks"]) for g in bd["groups"] if g["batch"] == 1) == 12
    assert "map_sm_ms" in bd["pruner_modules"]["1"]
    bench.write_report(res, tmp_path / "b.json", tmp_path / "b.md")
    md = (tmp_path / "b.md").read_text()
    assert "realized/ideal" in md and "vpp-pkr40" in md and "load average" in md
    assert json.loads((tmp_path / "b.json").read_text())["models"][0]["num_patches"] == 6


def test_memory_worker_and_summary():
    # in-process (make bench runs each length in a fresh subprocess: `python -m vppkit.bench --memory-worker`)
    mcfg = {"arch": "vit_nano", "img_size": [32, 32], "dim": 16, "num_queries": 4, "dec_layers": 1, "heads": 2}
    runs = [bench._memory_worker(t, mode, mcfg, {"method": "vpp", "schedule": "pkr40"}, "cpu", 3)
            for mode in ("state-chain", "online") for t in (2, 3)]
    for r in runs:
        assert r["peak_MiB"] > 0 and r["frames_run"] == r["frames"]
        assert r["growth_MiB"] == pytest.approx(r["peak_MiB"] - r["after_warmup_MiB"])
    s = bench.summarize_memory(runs)
    assert set(s) == {"state-chain", "online"}
    assert s["online"]["diff_MiB"] == pytest.approx(runs[3]["peak_MiB"] - runs[2]["peak_MiB"])
    with pytest.raises(ValueError):
        bench._memory_worker(2, "nope", mcfg, {}, "cpu", 3)


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
