"""One inference loop (issue 12 §2): the selector study's and the oracle's "no pruning" rows are the results
table's dense AP when they process the same frames, because all three run :func:`vppkit.engine.infer.infer_video`
with the profile's ``eval`` settings."""

from __future__ import annotations

import pytest
import torch

from experiments import oracle
from experiments import selectors as study
from experiments.common import Context
from vppkit.config import load_config
from vppkit.data.video import VideoFrames
from vppkit.engine.infer import EvalSettings, evaluate_run, infer_checkpoint, infer_video
from vppkit.engine.train import train

# every frame of every held-out video in both studies (smoke: 2 val videos x 6 frames)
OVERRIDES = ["selectors.frame_stride=1", "selectors.max_frames=100", "selectors.max_videos=100",
             "selectors.selectors=[uniform]", "selectors.keep_ratios=[0.5]", "oracle.fractions=[0.5]",
             "oracle.frame_stride=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oneloop")
    mp = pytest.MonkeyPatch()
    mp.setenv("VPPKIT_CACHE", str(tmp / "cache"))
    torch.set_num_threads(1)
    cfg = load_config("smoke", OVERRIDES)
    ck = train(cfg, "dense", out_dir=tmp / "run", progress=False)["checkpoint"]
    ctx = Context(profile="smoke", cfg=cfg, results_dir=tmp / "results", reports_dir=tmp / "reports")
    table = infer_checkpoint(ck, "val", tmp / "eval", progress=False, eval_cfg=cfg["eval"])
    ap = evaluate_run(tmp / "eval", table["gt_json"])
    yield ctx, ck, table, ap
    mp.undo()


@pytest.mark.slow
def test_no_pruning_rows_equal_the_results_table_dense_ap(trained):
    ctx, ck, table, ap = trained
    assert ap["AP"] > 0, "the tiny model must find something, else equal APs say nothing"
    sel = study.compute_study(ctx, ck, study.study_settings(ctx.cfg))
    dense_row = [r for r in sel["rows"] if r["selector"] == "dense"][0]
    assert sel["data"]["frames"] == table["frames"]
    assert dense_row["AP"] == pytest.approx(ap["AP"], abs=1e-9)
    orc = oracle.compute(ctx, ck, oracle.settings_for(ctx.cfg))
    dense = [r for r in orc["rows"] if r["condition"] == "dense"][0]
    assert dense["AP"] == pytest.approx(100 * ap["AP"], abs=1e-7)


@pytest.mark.slow
def test_all_kept_external_schedule_gives_the_dense_results(trained):
    """Same tracks, classes and masks as the results table's dense run (batched frames, external all-kept
    masks); scores equal to float round-off."""
    ctx, ck, table, _ = trained
    model = study.pruned_dense_model(ck)
    frames = VideoFrames(table["gt_json"], None, ctx.cfg["model"]["img_size"], cache=False)
    depth, n = model.backbone.depth, 36
    ours = []
    for vi in range(len(frames)):
        t = frames.num_frames(vi)
        res, recs = infer_video(model, frames, vi, EvalSettings.from_config(ctx.cfg["eval"]),
                                keep_masks=torch.ones(t, depth, n, dtype=torch.bool), batch=4)
        assert len(recs) == t and all(r.batch == 1 for r in recs)
        ours.extend(res)
    ref = table["results"]
    assert [(r["video_id"], r["category_id"], r["segmentations"]) for r in ours] == \
        [(r["video_id"], r["category_id"], r["segmentations"]) for r in ref]
    assert [r["score"] for r in ours] == pytest.approx([r["score"] for r in ref], rel=1e-5, abs=1e-7)


def test_eval_settings_come_from_the_default_profile():
    default = load_config("default")["eval"]
    s = EvalSettings.from_config({"top_k": 3})
    assert s.top_k == 3 and s.score == default["score"] and s.mask_threshold == default["mask_threshold"]
    assert s.tracker_momentum == default["tracker_momentum"]


def test_batched_inference_needs_an_external_schedule():
    class _Frames:
        videos = [{"id": 1, "height": 8, "width": 8}]
        category_ids = [1]

        def num_frames(self, vi):
            return 2

    with pytest.raises(ValueError, match="batch must be 1"):
        infer_video(None, _Frames(), 0, {}, batch=2)
    with pytest.raises(ValueError, match="keep_masks must be"):
        infer_video(None, _Frames(), 0, {}, keep_masks=torch.ones(3, 12, 4, dtype=torch.bool), batch=2)
