"""Training / inference engine on tiny synthetic data: overfitting, exact resume, results json in the evaluator,
a VPP sparse fine-tune end to end with its realised PKR."""

from __future__ import annotations

import json

import pytest
import torch

from vppkit.config import load_config
from vppkit.engine.datasets import VideoFrames, resolve_split
from vppkit.engine.infer import infer_checkpoint, load_keep_records
from vppkit.engine.train import load_model, train
from vppkit.metrics.ytvis_ap import evaluate_video_ap

TINY = ["data.num_videos=2", "data.num_val_videos=1", "data.num_frames=4", "data.height=64", "data.width=64",
        "model.img_size=[64,64]", "model.dim=32", "model.num_queries=5", "model.dec_layers=2"]



def test_resume_is_exact(cache):
    cfg = load_config("smoke", TINY + ["train.dense.steps=6", "train.dense.ckpt_every=3"])
    full = train(cfg, "dense", out_dir=cache / "full", progress=False)
    part = train(cfg, "dense", out_dir=cache / "part", stop_at=3, progress=False)
    assert part["steps"] == 3 and not (cache / "part" / "model_final.pt").exists()
    rest = train(cfg, "dense", out_dir=cache / "part", resume=True, progress=False)
    a = torch.load(full["checkpoint"], weights_only=False)["model"]
    b = torch.load(rest["checkpoint"], weights_only=False)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the metrics log of the resumed run has each step exactly once
    rows = (cache / "part" / "metrics.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 7))
    # a run from another seed ends elsewhere (the comparison can fail)
    other = train(load_config("smoke", TINY + ["train.dense.steps=6", "seed=1"]), "dense", out_dir=cache / "o",
                  progress=False)
    c = torch.load(other["checkpoint"], weights_only=False)["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a)
    model, ck = load_model(full["checkpoint"])
    assert ck["step"] == 6 and not model.training


def test_overfit_two_videos_and_results_load_in_evaluator(cache):
    cfg = load_config("smoke", TINY + ["train.dense.steps=70", "train.dense.ckpt_every=70", "train.lr=2e-3",
                                       "train.decay_at=0.85", "train.flip=false"])
    run = train(cfg, "dense", out_dir=cache / "overfit", progress=False)
    rows = (cache / "overfit" / "metrics.csv").read_text().strip().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("loss")]) for r in rows[1:]]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    summary = infer_checkpoint(run["checkpoint"], "train", cache / "infer", progress=False)
    results = json.loads((cache / "infer" / "results.json").read_text())
    assert results and {"video_id", "category_id", "score", "segmentations"} <= set(results[0])
    gt_json, _ = resolve_split(cfg["data"], "train")
    ap = evaluate_video_ap(gt_json, cache / "infer" / "results.json")
    print("overfit AP", ap)
    assert ap["AP50"] > 0.5 and ap["AP"] > 0.3, ap
    recs = load_keep_records(cache / "infer" / "keep_records.npz")
    assert sorted(recs) == [1, 2] and recs[1].counts.shape == (4, 12)
    assert summary["pkr"]["pkr"] == pytest.approx(1.0)


def test_vpp_sparse_finetune_end_to_end(cache):
    cfg = load_config("smoke", TINY + ["train.dense.steps=2", "train.sparse.steps=2", "pruning.method=vpp",
                                       "pruning.schedule=pkr55"])
    dense = train(cfg, "dense", out_dir=cache / "dense", progress=False)
    sparse = train(cfg, "sparse", init=dense["checkpoint"], out_dir=cache / "sparse", progress=False)
    assert sparse["last"]["loss_sparse"] > 0
    out = infer_checkpoint(sparse["checkpoint"], "train", cache / "infer", progress=False)
    pkr = out["pkr"]
    assert 0.2 < pkr["pkr"] < 0.95, pkr
    assert pkr["block_density"][0] == pytest.approx(1.0)
    # first frames: Map-SM off, blocks 1-2 dense
    assert pkr["block_density_first"][1] == pytest.approx(1.0)
    assert pkr["block_density_later"][1] < 1.0
    with pytest.raises(ValueError, match="pruning.method"):
        train(load_config("smoke", TINY + ["pruning.method=none"]), "sparse", out_dir=cache / "x", progress=False)


def test_bad_annotation_is_named(cache):
    cfg = load_config("smoke", TINY)
    js, fr = resolve_split(cfg["data"], "train")
    ds = json.loads(js.read_text())
    ds["annotations"][0]["segmentations"][0] = {"size": [64, 64], "counts": "garbage!!"}
    bad = cache / "bad.json"
    bad.write_text(json.dumps(ds))
    with pytest.raises(ValueError, match=str(ds["annotations"][0]["id"])):
        frames = VideoFrames(bad, fr, 64)
        for t in range(4):
            frames.instances(0, t)
