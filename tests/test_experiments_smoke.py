"""End to end on the smoke profile: every artifact computed, rendered and linked from the report index.

Sizes are cut below the smoke profile (fewer steps, one short validation video) so that the whole chain
(data generation -> dense training -> 8 sparse fine-tunes -> evaluations -> tables/figures/index) stays
within the test budget; the numbers are meaningless at this size, the test checks the plumbing and that
every file a reader is pointed to exists.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from experiments import training, zoo
from experiments.common import Context
from experiments.common import ARTIFACTS
from vppkit.commands.run import run_artifact
from vppkit.config import load_config

OVERRIDES = [
    "train.dense.steps=6", "train.dense.ckpt_every=6", "train.sparse.steps=2", "train.sparse.ckpt_every=2",
    "data.num_val_videos=1", "data.num_frames=4",
    "selectors.keep_ratios=[0.2,0.5]", "selectors.lambdas=[0.5]", "selectors.seeds=[0]", "selectors.max_videos=1",
    "fgs.max_frames=4", "oracle.fractions=[0.5]",
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    mp = pytest.MonkeyPatch()
    mp.setenv("VPPKIT_CACHE", str(root / "cache"))
    ctx = Context(profile="smoke", cfg=load_config("smoke", OVERRIDES), results_dir=root / "results" / "smoke",
                  reports_dir=root / "reports" / "smoke")
    from analyses import report
    from vppkit import bench
    from vppkit.utils.io import atomic_write_json

    # speed is measured by `make bench`, not in tests: a quick-suite result stands in for it, so the cost table's
    # benchmark rows are exercised too
    quick = bench.run_suite(bench.default_suite(quick=True), profile="smoke")
    atomic_write_json(ctx.results_dir.parent / "bench" / "bench.json", {**quick, "config_hash": "quick"})
    names = [n for n in ARTIFACTS if n != "bench"]
    results = {n: run_artifact(ctx, n) for n in names}
    report.write_index(ctx)
    yield ctx, results
    mp.undo()


@pytest.mark.slow
def test_every_artifact_has_a_result_with_provenance(smoke_run):
    ctx, results = smoke_run
    for name, res in results.items():
        saved = json.loads(ctx.result_path(name).read_text())
        assert saved["config_hash"] == res["config_hash"]
        assert saved["code_version"] == res["code_version"] and saved["code"], name
        prov = saved["provenance"]
        assert prov["profile"] == "smoke" and prov["seed"] == 0 and prov["commit"] and prov["time_utc"]


@pytest.mark.slow
def test_index_links_every_table_and_figure(smoke_run):
    ctx, _ = smoke_run
    index = (ctx.reports_dir / "index.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", index)
    assert links, "index has no links"
    for link in links:
        assert (ctx.reports_dir / link).is_file(), f"index links a missing file: {link}"
    manifest = json.loads((ctx.reports_dir / "manifest.json").read_text())
    for name, info in manifest.items():
        kinds = {e["kind"] for e in info["entries"]}
        for e in info["entries"]:
            fmts = set(e["files"])
            assert fmts == ({"md", "csv", "tex"} if e["kind"] == "table" else {"png", "pdf"}), (name, fmts)
        assert kinds, name
    for must in ("fgs", "results", "ioi", "density", "kappa", "curves", "qualitative", "flops", "evtp", "selectors",
                 "oracle", "training", "featcache"):
        assert must in manifest, f"artifact {must} not rendered"
    # smoke trains its backbone: the cached-vs-uncached comparison is skipped, with the reason in the index
    assert "cannot be cached" in index.split("## Dense AP at equal wall time")[1].split("\n## ")[0]
    assert any("measured speed" in e["title"] for e in manifest["flops"]["entries"])
    top = (ctx.reports_dir.parent / "index.md").read_text()
    assert "smoke/index.md" in top
    # every result was computed by this code just now: none flagged as from another commit or stale code
    provenance = index.split("## Provenance of the results")[1].split("\n## ")[0]
    assert "not the current" not in provenance and "code changed" not in provenance
    assert "no code version recorded" not in provenance


@pytest.mark.slow
def test_index_states_the_setup_and_the_backbone_of_every_model(smoke_run):
    ctx, _ = smoke_run
    index = (ctx.reports_dir / "index.md").read_text()
    assert "## Models and their backbones" in index
    setup = index.split("## Setup of this run vs the paper")[1].split("\n## ")[0]
    assert "| sparse stage | 2 steps (one sample per video)" in setup  # read from the run's config (OVERRIDES)
    assert "| dense stage | 6 steps" in setup
    assert "| segmentation loss per frame | dense x0.5 / x1.0; sparse x0.0 / x0.5 / x1.0" in setup
    assert "| inference | Gumbel noise kept, seeded per video" in setup
    section = index.split("## Models and their backbones")[1].split("\n## ")[0]
    for path in ctx.results_dir.glob("eval_*.json"):
        name = path.stem.removeprefix("eval_")
        backbone = json.loads(path.read_text())["backbone"]
        assert backbone["source"] and backbone["fallback"] is not None, name
        assert f"| {name} | {backbone['source']} |" in section, name


@pytest.mark.slow
def test_reading_evaluates_the_paper_trends(smoke_run):
    ctx, _ = smoke_run
    reading = (ctx.reports_dir / "reading.md").read_text()
    assert reading.count("\n| ") >= 10
    assert "not run" not in reading


@pytest.mark.slow
def test_rerun_reuses_saved_results(smoke_run):
    ctx, results = smoke_run
    again = run_artifact(ctx, "results")
    assert again["provenance"]["time_utc"] == results["results"]["provenance"]["time_utc"]


@pytest.mark.slow
def test_analysis_settings_reuse_trained_models(smoke_run):
    """Models are named by the sections training reads: a new analysis setting (selectors, oracle, fgs, eval) finds
    the trained checkpoints; a training setting does not."""
    from experiments import zoo
    from vppkit.config import config_hash
    from vppkit.engine.train import training_config

    ctx, _ = smoke_run
    changed = load_config("smoke", OVERRIDES + ["selectors.max_videos=3", "oracle.fractions=[0.25]", "eval.top_k=3",
                                                "fgs.max_frames=2"])
    ctx2 = Context(profile="smoke", cfg=changed, results_dir=ctx.results_dir, reports_dir=ctx.reports_dir)
    before = {p: p.stat().st_mtime for p in (ctx.results_dir / "runs").glob("*/model_final.pt")}
    assert zoo.checkpoint(ctx2, "vpp55") in before and zoo.checkpoint(ctx2, "dense") in before
    assert {p: p.stat().st_mtime for p in (ctx.results_dir / "runs").glob("*/model_final.pt")} == before
    retrain = load_config("smoke", OVERRIDES + ["train.dense.steps=7"])
    assert config_hash(training_config(retrain)) != config_hash(training_config(ctx.cfg))


@pytest.mark.slow
def test_results_show_both_inference_modes_and_captions_state_the_mode(smoke_run):
    ctx, results = smoke_run
    rows = results["results"]["rows"]
    assert [(r["variant"], r["mode"]) for r in rows] == [("dense", "—"), ("vpp55", "noise"), ("vpp40", "noise"),
                                                         ("vpp55", "deterministic"), ("vpp40", "deterministic")]
    assert [r["noise"] for r in rows] == [False, True, True, False, False]
    assert results["results"]["profile_mode"] == "noise" and results["ioi"]["config"]["mode"] == "noise"
    manifest = json.loads((ctx.reports_dir / "manifest.json").read_text())
    for name in ("ioi", "density", "kappa", "curves", "qualitative", "flops"):
        assert any("Gumbel noise kept at inference" in e["caption"] for e in manifest[name]["entries"]), name


@pytest.mark.slow
def test_training_curves_of_every_trained_model(smoke_run):
    ctx, results = smoke_run
    runs = results["training"]["runs"]
    assert set(runs) == set(zoo.variants())
    assert runs["dense"]["stage"] == "dense" and runs["dense"]["steps"] == 6 and not runs["dense"]["pruning_blocks"]
    vpp = runs["vpp55"]
    assert vpp["steps"] == 2 and vpp["pruning_blocks"] == [1, 3, 6, 9] and vpp["keep_logged"]
    # smoke grid 6 x 6 = 36 tokens: Map-SM keeps floor(36 * 0.7) = 25 -> 25/36; SMs 0.7 * 0.8^i
    assert vpp["targets"] == pytest.approx({"1": 25 / 36, "3": 0.56, "6": 0.448, "9": 0.3584})
    assert len(vpp["series"]["step"]) == 2 and set(vpp["series"]) >= {"loss_seg", "loss_sparse", "keep_b1"}
    # Map-SM's top-k count is exact on the chain frames that have a previous frame
    assert vpp["series"]["keep_b1"] == pytest.approx([25 / 36] * 2)
    assert runs["dynamicvit40"]["pruning_blocks"] == [3, 6, 9]
    assert (ctx.reports_dir / "training_curves.png").is_file()
    # training cost (issue 15): measured from each run's metrics.csv, in its own table
    cost = vpp["cost"]
    assert cost["steps_timed"] == 2 and cost["ms_q25"] <= cost["ms_median"] <= cost["ms_q75"] and cost["wall_s"] > 0
    assert cost["load1_median"] is not None and cost["cpu_ms_median"] > 0
    table = (ctx.reports_dir / "training_cost.md").read_text()
    assert "ms / step (median)" in table and "VPP" in table


def test_step_cost_reads_the_logged_step_times():
    """step_cost: median / IQR of the wall ``sec`` in ms, CPU ms and load from metrics.csv rows; {} without ``sec``
    (runs logged before step times)."""
    df = pd.DataFrame({"step": [1, 2, 3, 4, 5], "sec": [0.5, 0.1, 0.2, 0.3, 0.2], "cpu_sec": [1.0, 0.2, 0.4, 0.6, 0.4],
                       "load1": [1.0, 1.0, 2.0, 2.0, 3.0]})
    c = training.step_cost(df)
    assert c["ms_median"] == pytest.approx(200.0) and c["ms_q25"] == pytest.approx(200.0)
    assert c["ms_q75"] == pytest.approx(300.0) and c["wall_s"] == pytest.approx(1.3)
    assert c["cpu_ms_median"] == pytest.approx(400.0) and c["load1_median"] == pytest.approx(2.0)
    assert training.step_cost(df.drop(columns=["sec"])) == {}
