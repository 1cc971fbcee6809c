"""Tests of the speed benchmark harness (vppkit.bench): it runs, its arithmetic gives known answers, and its
report (analyses.bench) is structured.

No speed is asserted here (speed goals live in reports/bench.md): tiny model, one repeat; the speed-up and
breakdown arithmetic is checked with a fake timer that returns fixed times.
"""

from __future__ import annotations

import argparse
import itertools
import json

import pytest
import torch

from analyses.bench import write_report
from vppkit import bench
from vppkit.bench import (DEFAULT_GOAL_PKRS, IQR_FLAG, MethodSpec, ModelCase, block_breakdown, nominal_counts,
                          nominal_masks, resolve_methods, run_speed_benchmark, summarize, time_calls,
                          tome_r_for_pkr)
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
    ts = time_calls({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1,
                    min_run_time=0.0)
    assert set(ts) == {"a", "b"} and all(len(v) == 2 and min(v) >= 0 for v in ts.values())
    # warm-up a, b; then per round a block of a's, then of b's (blocked_autorange: sizing call + timed block)
    assert [k for k, _ in itertools.groupby(calls)] == ["a", "b"] * 3
    with pytest.raises(ValueError):
        time_calls({}, repeats=0)


def test_summarize_known_answers():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])      # linear quantiles: q1 = 2, median = 3, q3 = 4
    assert (s["median"], s["q1"], s["q3"], s["iqr"], s["min"], s["n"]) == (3.0, 2.0, 4.0, 2.0, 1.0, 5)
    assert s["iqr_rel"] == pytest.approx(2 / 3) and s["flagged"]
    # 100..103: q1 = 100 + 0.75, q3 = 102.25, median 101.5: IQR 1.5 = 1.48 % of the median, not flagged
    s = summarize([0.100, 0.101, 0.102, 0.103], scale=1000.0)
    assert s["median"] == pytest.approx(101.5) and s["iqr"] == pytest.approx(1.5)
    assert s["iqr_rel"] == pytest.approx(1.5 / 101.5) and not s["flagged"]
    assert IQR_FLAG == 0.05
    with pytest.raises(ValueError):
        summarize([])


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
        if r["variant"] in ("schedule", "ceiling"):
            assert r["overhead_GMACs"] == 0
        assert r["iqr_ms"] >= 0 and isinstance(r["flagged"], bool) and r["torch_ops"] > 0
    oc = quick_result["models"][0]["op_cost"]
    assert set(oc) == {"1", "2"} and all(v["block_ops"] > 0 and v["us_per_op"] > 0 for v in oc.values())
    assert not any(r["variant"] == "dispatch" for r in rows)       # the per-op cost block is not a row
    ceil = [r for r in rows if r["variant"] == "ceiling"]
    assert {(r["method"], r["batch"], r["part"]) for r in ceil} == {("vpp-pkr40", 1, "backbone"),
                                                                     ("vpp-pkr40", 2, "backbone")}
    for r in rows:
        if r["family"] == "vpp" and r["part"] == "backbone":
            assert r["realized_over_ceiling"] > 0 and r["ceiling_over_ideal"] > 0
    whole = {(r["method"], r["variant"], r["batch"]): r for r in rows if r["part"] == "whole"}
    head = quick_result["models"][0]["head_GMACs"]
    assert head > 0
    for r in rows:
        if r["part"] == "backbone" and r["variant"] != "ceiling":
            assert whole[(r["method"], r["variant"], r["batch"])]["GMACs"] == pytest.approx(r["GMACs"] + head)


def test_time_calls_times_long_calls_alone_after_the_first_round():
    import time as _time
    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        _time.sleep(0.03)

    def fast():
        calls["fast"] += 1

    ts = time_calls({"slow": slow, "fast": fast}, repeats=5, warmup=1, min_run_time=0.01)
    assert len(ts["slow"]) == 5 and all(t >= 0.03 for t in ts["slow"])
    # warm-up 1 + round 1 (blocked_autorange: a sizing call and a timed block of one) + one call per later round;
    # blocked_autorange in every round would have taken at least 1 + 2 x 5 = 11 calls
    assert calls["slow"] <= 1 + 3 + 4
    assert len(ts["fast"]) >= 5 and calls["fast"] > 100                  # short calls still run in blocks


def _fake_time_calls(seconds):
    """A stand-in for ``time_calls`` that returns fixed times: ``seconds(key)`` per timed call, nothing run."""
    def fake(fns, repeats, warmup=1, device="cpu", **kw):
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
                "embed_norm": 0.25e-3, "map_sm": 1e-3, "sm0": 0.1e-3, "sm1": 0.1e-3,
                "sm2": 0.1e-3}.get(kind, 3e-3)
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
    assert [x["batch"] for x in t] == [1] and t[0]["goal"] == 0.90      # batch 2 has no goal
    assert t[0]["ceiling_over_ideal"] > 0 and isinstance(t[0]["within_ceiling_gap"], bool)
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
                              no_memory=True, memory_frames=None, min_run_time=0.0)
    suite = build_suite(args, load_config("default"))
    (case,) = suite["cases"]
    assert case.arch == "vit_nano" and case.img_size == (32, 48) and case.batches == (1, 2)
    assert case.variants == ("schedule",) and case.repeats == 1 and case.repeats_by_batch == {}
    assert case.min_run_time == 0.0
    assert suite["breakdown"] is None and suite["memory"] is None
    res = run_speed_benchmark(case)
    assert {r["variant"] for r in res["rows"]} == {"dense", "schedule", "ceiling"}


def test_cli_registered():
    from vppkit.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--no-memory", "--batch", "1"])
    assert args.command == "bench" and args.quick and args.batch == [1]


def test_ceiling_from_fixed_times(monkeypatch):
    # dense 10 ms, VPP schedule 5 ms, ceiling 4 ms per batch-1 forward: realized/ceiling = 4 / 5,
    # ceiling/ideal = (10 / 4) / ideal, with ideal worked by hand from the MACs (as above)
    monkeypatch.setattr("vppkit.bench.speed.time_calls", _fake_time_calls(
        lambda k: {"dense": 0.010, "schedule": 0.005, "ceiling": 0.004, "dispatch": 0.0001}[k[2]]))
    case = ModelCase("fake", "vit_nano", (32, 48), methods=("dense", "vpp-pkr40"), batches=(1,), repeats=4,
                     variants=("schedule",))
    rows = {r["variant"]: r for r in run_speed_benchmark(case)["rows"]}
    ideal = 2600064 / 1398528
    assert rows["ceiling"]["GMACs"] == pytest.approx(VPP40_N6_MACS / 1e9)
    assert rows["schedule"]["realized_over_ceiling"] == pytest.approx(0.8)
    assert rows["schedule"]["ceiling_over_ideal"] == pytest.approx(2.5 / ideal)
    assert rows["schedule"]["iqr_ms"] == 0 and not rows["schedule"]["flagged"]


def test_ceiling_forward_equals_dense_blocks_on_kept_tokens():
    # with masks that keep every token the ceiling is the plain timm forward (features, before the head)
    bb = build_backbone("vit_nano", (32, 48)).eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.inference_mode():
        ref = bb.vit.forward_features(x)
        out = bench.ceiling_forward(bb.vit, x, torch.ones(2, 12, 6, dtype=torch.bool))()
        assert torch.allclose(out, ref, atol=1e-5)
        spec = resolve_methods(["vpp-pkr40"])[0]
        m = nominal_masks(spec, 6, batch=2)
        assert bench.ceiling_forward(bb.vit, x, m)().shape == (2, 1 + VPP40_N6[-1], 48)
    with pytest.raises(ValueError):
        bench.ceiling_forward(bb.vit, x, torch.rand(2, 12, 6) < 0.5)     # unequal / not nested


def test_block_cost_curve_reports_a_failed_compile_and_keeps_the_eager_rows(monkeypatch):
    """Where torch.compile fails (e.g. no C++ compiler for inductor) the block-cost table keeps its eager rows and
    says why the compiled ones are missing (issue 15: whether compilation lifts the small model's floor)."""
    from analyses.bench import _render_block_cost
    from vppkit.bench.breakdown import block_cost_curve

    def broken_compile(mod, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    bc = block_cost_curve("vit_nano", (32, 48), fractions=(1.0, 0.0), batches=(1,), repeats=1, compiled=True,
                          min_run_time=0.0)
    assert bc["compiled"] is False and "no compiler here" in bc["compiled_error"]
    res = bc["batches"]["1"]
    assert res["compiled"] is None and set(res["eager"]) == {6, 0} and "eager" in res["fit"]
    text = "\n".join(_render_block_cost(bc))
    assert "torch.compile was not available here (RuntimeError: no compiler here)" in text
    assert "| eager |" in text and "| compiled |" not in text


def test_time_account_known_answer_and_report_table(tmp_path):
    from vppkit.bench.suite import check_targets, time_account

    def row(method, family, variant, ms, batch=1):
        return {"part": "backbone", "method": method, "family": family, "variant": variant, "batch": batch,
                "ms_per_frame": ms, "speedup_measured": 10.0 / ms}
    rows = [row("dense", "dense", "dense", 10.0), row("vpp-pkr40", "vpp", "ceiling", 5.0),
            row("vpp-pkr40", "vpp", "schedule", 6.0), row("vpp-pkr40", "vpp", "real", 8.0)]
    a = time_account(rows, rows[-1])
    assert a["modules_ms"] == pytest.approx(2.0) and a["execution_overhead_ms"] == pytest.approx(1.0)
    assert a["speedup_ceiling"] == pytest.approx(2.0) and a["speedup_without_overhead"] == pytest.approx(10 / 7)
    assert "modules_ms" not in time_account(rows[:2] + rows[3:], rows[-1])          # no schedule row timed
    res = {"models": [{"case": {"label": "m", "target": "speedup"}, "rows": rows}], "breakdown": None}
    t = check_targets(res)
    assert t[0]["kind"] == "speedup" and t[0]["account"]["modules_ms"] == pytest.approx(2.0)
    from analyses.bench import _render_targets
    md = "\n".join(_render_targets({"targets": t}))
    assert "Where the time goes" in md and "| m | 1 | 10.0 | 5.0 | 6.0 | 8.0 | 2.00 | 1.00 | 2.00x | 1.43x |" in md


def test_count_torch_ops_counts_dispatched_calls_not_attribute_reads():
    from vppkit.bench.timing import count_torch_ops
    x = torch.randn(3, 4)

    def three():
        y = x + 1                      # 1
        _ = y.shape, y.dtype           # attribute reads: not ops
        return y.view(-1).sum()        # 2
    assert count_torch_ops(three) == 3
    assert count_torch_ops(lambda: None) == 0
    lin = torch.nn.Linear(4, 2)
    assert count_torch_ops(lambda: lin(x)) == 1        # F.linear once; nothing inside it counted again


def test_time_account_op_counts_and_dispatch_estimate():
    """extra ops = real - ceiling; dispatch_ms = extra x us_per_op / batch, with the per-op cost measured beside the
    model's rows at the same batch (issue 15: the default model's floor)."""
    from analyses.bench import _render_targets
    from vppkit.bench.suite import check_targets, time_account

    def row(variant, family, ms, ops, batch=2):
        return {"part": "backbone", "method": "dense" if family == "dense" else "vpp-pkr40", "family": family,
                "variant": variant, "batch": batch, "ms_per_frame": ms, "speedup_measured": 10.0 / ms,
                "torch_ops": ops}
    rows = [row("dense", "dense", 10.0, 250), row("ceiling", "vpp", 5.0, 240), row("schedule", "vpp", 6.0, 340),
            row("real", "vpp", 8.0, 490)]
    a = time_account(rows, rows[-1], us_per_op=10.0)
    assert a["ops"] == {"dense": 250, "ceiling": 240, "schedule": 340, "real": 490} and a["extra_ops"] == 250
    assert a["dispatch_ms"] == pytest.approx(250 * 10.0 / 1000 / 2) and a["gap_ms"] == pytest.approx(3.0)
    assert "dispatch_ms" not in time_account(rows, rows[-1])                       # no per-op cost measured
    case = {"label": "m", "target": "speedup"}
    rows1 = [dict(r, batch=1) for r in rows]
    t = check_targets({"models": [{"case": case, "rows": rows1, "op_cost": {"1": {"us_per_op": 12.0}}}],
                       "breakdown": None})
    assert t[0]["account"]["dispatch_ms"] == pytest.approx(250 * 12.0 / 1000)
    t2 = check_targets({"models": [{"case": case, "rows": rows1, "op_cost": {"8": {"us_per_op": 12.0}}}],
                        "breakdown": None})                       # measured at another batch only: not used
    assert "dispatch_ms" not in t2[0]["account"]
    md = "\n".join(_render_targets({"targets": t}))
    assert "| m | 1 | 250 | 240 | 340 | 490 | 250 | 12.0 | 3.00 | 3.00 |" in md


def test_steady_host_allocator_reports_what_it_set():
    import platform
    import subprocess
    import sys

    code = ("from vppkit.bench.timing import steady_host_allocator as s, _mallopt\n"
            "with s() as d: print(d)\n"
            "print(_mallopt(mmap_max=65536))")                   # settable again after the block
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert out.startswith("glibc mallopt M_MMAP_MAX=0") and out.splitlines()[1] == "None"
    else:
        assert out.startswith("system default")
