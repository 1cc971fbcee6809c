"""Training / inference engine on tiny synthetic data: overfitting, exact resume, results json in the evaluator,
a VPP sparse fine-tune end to end with its realised PKR."""

from __future__ import annotations

import json

import pytest
import torch

from vppkit.config import load_config
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.engine.infer import infer_checkpoint, load_keep_records
from vppkit.engine.checkpoint import load_model
from vppkit.engine.train import train
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


def test_frame_unit_walks_key_frames_and_derives_steps_from_epochs(cache):
    """sample_unit=frame (official mmtrack iteration): one sample per annotated frame with an instance, references
    within +-ref_window, steps = ceil(epochs x samples / batch)."""
    import numpy as np

    from vppkit.engine.train import clip_indices, stage_config, steps_for, training_samples

    cfg = load_config("smoke", TINY + ["train.sample_unit=frame", "train.epochs=1", "train.dense.steps=null",
                                       "train.batch=3", "train.ref_window=1"])
    js, fr = resolve_split(cfg["data"], "train")
    frames = VideoFrames(js, fr, 64)
    keys = training_samples(frames, "frame")
    ds = json.loads(js.read_text())
    expected = [(vi, t) for vi, v in enumerate(ds["videos"]) for t in range(v["length"])
                if any(a["segmentations"][t] is not None for a in ds["annotations"] if a["video_id"] == v["id"])]
    assert keys == expected and len(keys) > len(frames)
    assert training_samples(frames, "video") == [(vi, None) for vi in range(len(frames))]
    tcfg = stage_config(cfg, "dense")
    assert steps_for(tcfg, len(keys), 1) == -(-len(keys) // 3)
    assert steps_for(tcfg, len(keys), 2) == -(-len(keys) // 6)
    assert steps_for({"steps": 7}, 1000, 8) == 7
    with pytest.raises(ValueError, match=r"train.<stage>.steps or train.epochs"):
        steps_for({"steps": None}, 10, 1)
    with pytest.raises(ValueError, match="sample_unit"):
        training_samples(frames, "clip")
    rng = np.random.default_rng(0)
    for vi, key in keys:
        chain = clip_indices(frames, (vi, key), 3, {"ref_window": 1, "ref_order": "random"}, rng)
        assert chain[-1] == key and len(chain) == 3 and all(abs(t - key) <= 1 for t in chain)
    run = train(cfg, "dense", out_dir=cache / "frames", progress=False)
    assert run["steps"] == -(-len(keys) // 3)


def test_video_frames_reads_through_the_video_set(cache):
    """VideoFrames (engine view) = VideoReader's frame / masks resized to the model size, visible instances only."""
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    cfg = load_config("smoke", TINY)
    js, fr = resolve_split(cfg["data"], "train")
    frames = VideoFrames(js, fr, (48, 40), cache=False)
    reader = frames.video_set[0]
    raw = reader.load_frame(2)
    expected = np.asarray(Image.fromarray(raw).resize((40, 48), Image.BILINEAR))
    assert torch.equal(frames.frame(0, 2), torch.from_numpy(expected.copy()).permute(2, 0, 1))
    masks, valid = reader.load_masks(2)
    resized = F.interpolate(torch.from_numpy(masks)[None].float(), size=(48, 40), mode="nearest")[0].bool()
    visible = resized.flatten(1).any(1)
    labels, got = frames.instances(0, 2)
    assert torch.equal(got, resized[visible]) and torch.equal(labels, reader.labels[visible])
    assert visible.sum() <= valid.sum()
