"""Training-free token selection study (experiments/selectors.py, analyses/selectors.py) on the smoke profile:
structure, coverage monotone in the keep ratio, spatial k-center covering better than random, correlation fields,
the dense first pass equal to the backbone's own intermediates, and the rendered tables / figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from experiments import selectors as study
from experiments.common import Context
from vppkit.config import load_config
from vppkit.data.ytvis import subset_frames
from vppkit.engine.checkpoint import load_model
from vppkit.engine.train import train
from vppkit.metrics.coverage import covering_radius

OVERRIDES = ["selectors.keep_ratios=[0.1,0.3,0.5]", "selectors.lambdas=[0,0.5,2]", "selectors.seeds=[0,1]",
             "selectors.max_videos=2", "selectors.max_frames=4", "selectors.block=3"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Train the smoke dense model once (20 steps) and run the study on it."""
    tmp = tmp_path_factory.mktemp("selectors")
    mp = pytest.MonkeyPatch()
    mp.setenv("VPPKIT_CACHE", str(tmp / "cache"))
    torch.set_num_threads(1)
    cfg = load_config("smoke", OVERRIDES)
    ck = train(cfg, "dense", out_dir=tmp / "run", progress=False)["checkpoint"]
    ctx = Context(profile="smoke", cfg=cfg, results_dir=tmp / "results", reports_dir=tmp / "reports")
    result = study.run(ctx, ck)
    yield ctx, result, ck
    mp.undo()


def _rows(result):
    return [r for r in result["rows"] if r["selector"] != "dense"]


def test_structure_and_settings(smoke):
    ctx, result, _ = smoke
    json.dumps(result)  # JSON-serialisable
    s = result["settings"]
    assert s["keep_ratios"] == [0.1, 0.3, 0.5] and s["block"] == 3 and result["layer"] == 4
    assert s["lambdas"] == [0.0, 0.5, 2.0] and s["seeds"] == [0, 1]
    assert result["data"]["videos"] == 2 and result["data"]["frames"] <= 8
    names = {c["name"] for c in result["conditions"]}
    # λ=0 is DivPrune and not repeated; one random condition per seed
    assert {"random_s0", "random_s1", "uniform", "attention", "kcenter", "divprune",
            "spatial_kcenter_l0.5", "spatial_kcenter_l2"} == names
    assert len(_rows(result)) == len(names) * 3
    assert result["data"]["num_patches"] == 36  # smoke: 96x96 px, patch 16
    k = {0.1: 3, 0.3: 10, 0.5: 18, 1.0: 36}  # floor(r * 36), the pruners' count rule
    for r in result["rows"]:
        assert r["k"] == k[r["keep_ratio"]]
        for key in ("coverage", "radius", "IoI", "AP", "AP50"):
            assert key in r
        assert all(f"IoI_{b}" in r for b in "SML")
        assert r["IoI"] is None or 0.0 <= r["IoI"] <= 1.0
    dense = [r for r in result["rows"] if r["selector"] == "dense"]
    assert len(dense) == 1 and dense[0]["coverage"] == 0.0 and dense[0]["IoI"] == 1.0
    assert ctx.result_path("selectors").exists()
    # reused, not recomputed, with the same config
    again = study.run(ctx, smoke[2])
    assert again["provenance"] == result["provenance"]


def test_coverage_decreases_with_keep_ratio(smoke):
    _, result, _ = smoke
    by_cond: dict[str, list] = {}
    for r in _rows(result):
        by_cond.setdefault(r["condition"], []).append((r["keep_ratio"], r["coverage"], r["radius"]))
    for cond, vals in by_cond.items():
        vals.sort()
        cov = [v[1] for v in vals]
        assert all(a > b for a, b in zip(cov, cov[1:])), (cond, cov)


def test_spatial_kcenter_covers_better_than_random(smoke):
    _, result, _ = smoke
    rows = _rows(result)
    for ratio in result["settings"]["keep_ratios"]:
        rnd = np.mean([r["coverage"] for r in rows if r["selector"] == "random" and r["keep_ratio"] == ratio])
        skc = [r for r in rows if r["condition"] == "spatial_kcenter_l2" and r["keep_ratio"] == ratio][0]
        rnd_radius = np.mean([r["radius"] for r in rows if r["selector"] == "random" and r["keep_ratio"] == ratio])
        assert skc["coverage"] < rnd, (ratio, skc["coverage"], rnd)
        assert skc["radius"] < rnd_radius, (ratio, skc["radius"], rnd_radius)


def test_correlation_fields(smoke):
    _, result, _ = smoke
    corr = result["correlations"]
    metrics = {c["metric"] for c in corr}
    assert metrics == {"IoI", "AP"}
    pooled = [c for c in corr if c["metric"] == "IoI" and c["x"] == "coverage" and c["keep_ratio"] is None][0]
    assert pooled["n"] == len(_rows(result))
    for key in ("spearman_rho", "spearman_p", "pearson_r", "pearson_p"):
        assert pooled[key] is not None and math.isfinite(pooled[key])
    per_ratio = [c for c in corr if c["metric"] == "IoI" and c["x"] == "coverage" and c["keep_ratio"] is not None]
    assert len(per_ratio) == 3 and all(c["n"] == len(result["conditions"]) for c in per_ratio)


def test_correlate_known_answers_and_degenerate_inputs():
    # ranks 1..5 against 2,1,4,3,5: d = -1,1,-1,1,0, so rho = 1 - 6*4/(5*24) = 0.8; both inputs are ranks, so
    # Pearson's r is 0.8 too. Two-sided p of t = r sqrt(3 / (1 - r^2)) with 3 df, closed form of the t(3) CDF:
    # p = 1 - (2/pi) (u / (1 + u^2) + atan u), u = t / sqrt 3 = 4/3.
    c = study.correlate([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    u = 4 / 3
    p = 1 - 2 / math.pi * (u / (1 + u * u) + math.atan(u))
    assert c["n"] == 5
    assert c["spearman_rho"] == pytest.approx(0.8) and c["pearson_r"] == pytest.approx(0.8)
    assert c["spearman_p"] == pytest.approx(p, rel=1e-6) and c["pearson_p"] == pytest.approx(p, rel=1e-6)
    # a strictly decreasing but non-linear relation: Spearman exactly -1, Pearson above -1
    d = study.correlate([1, 2, 3, 4], [8, 4, 2, 1])
    assert d["spearman_rho"] == pytest.approx(-1.0) and -1.0 < d["pearson_r"] < -0.9
    assert study.correlate([1, 2], [3, 4])["spearman_rho"] is None
    assert study.correlate([1, 1, 1], [1, 2, 3])["note"] == "constant input"
    assert study.correlate([1, None, 2, 3], [1, 2, None, 3])["n"] == 2


def test_block_features_match_backbone_intermediates(smoke):
    _, _, ck = smoke
    model, _ = load_model(ck, pruning={"method": "none"})
    images = torch.randint(0, 255, (2, 3, 96, 96), dtype=torch.uint8)
    xb, recv, grid = study.block_features(model, images, 3)
    with torch.no_grad():
        ref = model.backbone(model.normalize(images), None, return_intermediates=True).intermediates[3]
    assert grid == (6, 6) and recv.shape == (2, 36)
    torch.testing.assert_close(xb, ref, atol=1e-5, rtol=1e-5)
    # attention received is a mean of softmax rows over the patch columns: sums to <= 1 per query, >= 0
    assert bool((recv >= 0).all()) and float(recv.sum(-1).max()) <= 1.0 + 1e-5


def test_schedule_and_frames_helpers():
    sel = torch.tensor([[True, False, True, False]])
    m = study.schedule_masks(sel, 2, 4)
    assert m.shape == (1, 4, 4) and bool(m[0, :2].all()) and torch.equal(m[0, 2], sel[0])
    assert study.frame_indices(16, 2, 8) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert study.frame_indices(40, 2, 8) == [0, 5, 10, 15, 20, 25, 30, 35]
    with pytest.raises(ValueError, match="unknown setting"):
        study.study_settings({"selectors": {"blok": 3}})
    with pytest.raises(ValueError, match="unknown selector"):
        study.study_settings({"selectors": {"selectors": ["nope"]}})


def test_covering_radius_by_hand():
    # 1x3 grid, one end kept: the other end is 2 patches away
    assert covering_radius(torch.tensor([[True, False, False]]), (1, 3)).tolist() == [2.0]
    # 3x3 grid, centre kept: the corners are sqrt(2) away; corner (0, 0) kept: corner (2, 2) is 2 sqrt(2) away
    centre = torch.zeros(9, dtype=torch.bool)
    centre[4] = True
    corner = torch.zeros(9, dtype=torch.bool)
    corner[0] = True
    assert covering_radius(torch.stack([centre, corner]), (3, 3)).tolist() == pytest.approx([2 ** 0.5, 8 ** 0.5])
    # 2x3 grid, opposite corners kept: every other patch has a kept neighbour 1 away
    assert covering_radius(torch.tensor([True, False, False, False, False, True]), (2, 3)).tolist() == [1.0]
    assert covering_radius(torch.ones(1, 4, dtype=torch.bool), (2, 2)).tolist() == [0.0]
    with pytest.raises(ValueError, match="keep no patch"):
        covering_radius(torch.zeros(1, 4, dtype=torch.bool), (2, 2))


def test_subset_frames_keeps_the_listed_frames_of_the_listed_videos():
    ds = {"info": {"x": 1}, "categories": [{"id": 1, "name": "a"}],
          "videos": [{"id": 1, "file_names": ["a0", "a1", "a2"], "length": 3, "height": 4, "width": 4},
                     {"id": 2, "file_names": ["b0", "b1"], "length": 2, "height": 4, "width": 4}],
          "annotations": [{"id": 10, "video_id": 1, "category_id": 1, "segmentations": ["s0", None, "s2"],
                           "areas": [5, None, 7], "bboxes": [[0], None, [2]]},
                          {"id": 11, "video_id": 2, "category_id": 1, "segmentations": ["t0", "t1"]}]}
    out = subset_frames(ds, {1: [0, 2]})
    assert out["info"] == {"x": 1} and out["categories"] == ds["categories"]
    assert out["videos"] == [{"id": 1, "file_names": ["a0", "a2"], "length": 2, "height": 4, "width": 4}]
    assert out["annotations"] == [{"id": 10, "video_id": 1, "category_id": 1, "segmentations": ["s0", "s2"],
                                   "areas": [5, 7], "bboxes": [[0], [2]]}]
    assert ds["videos"][0]["length"] == 3  # input left alone


def test_renderers_write_tables_and_figures(smoke):
    from analyses import selectors as render

    ctx, result, _ = smoke
    entries = render.table(ctx, result) + render.figure(ctx, result)
    kinds = [e.kind for e in entries]
    assert kinds.count("table") == 2 and kinds.count("figure") == 3
    for e in entries:
        for path in e.files.values():
            assert (ctx.reports_dir / path).stat().st_size > 0
        assert "beyond the paper" in e.caption and "layer 4" in e.caption
    md = (ctx.reports_dir / "selectors_study.md").read_text()
    assert "DivPrune" in md and "random (mean of 2 seeds)" in md
