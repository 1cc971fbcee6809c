"""Frames read ahead by DataLoader processes (``train.workers``, ``eval.workers``): the same training batches, the
same trained weights and the same inference results with 0 or 2 workers, so the worker count is a speed setting
outside every config hash."""

from __future__ import annotations

import pytest
import torch

from vppkit.config import config_hash, load_config
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.engine.distributed import DistInfo
from vppkit.engine.infer import frame_loader, infer_checkpoint
from vppkit.engine.train import StepBatches, StepSampler, stage_config, step_loader, train, training_samples

TINY = ["data.num_videos=3", "data.num_val_videos=1", "data.num_frames=6", "data.height=64", "data.width=64",
        "model.img_size=[64,64]", "model.dim=32", "model.num_queries=5", "model.dec_layers=2"]


def _flat(batch):
    """Every tensor of one step's batch, in order."""
    out = []
    for images, targets in batch:
        out.append(images)
        for t in targets:
            out += [t["labels"], t["masks"]]
    return out


def test_step_batches_do_not_depend_on_the_worker_count(cache):
    cfg = load_config("smoke", TINY + ["train.batch=2"])
    js, fr = resolve_split(cfg["data"], "train")
    frames = VideoFrames(js, fr, 64)
    samples = training_samples(frames, "video")
    tcfg = stage_config(cfg, "sparse")
    sampler = StepSampler(len(samples), 2, 0, DistInfo())
    batches = StepBatches(frames, samples, sampler, 3, tcfg, seed=0, rank=0)
    direct = [_flat(batches[s]) for s in range(2, 8)]
    for workers in (0, 2):
        loaded = [_flat(b) for b in step_loader(batches, 2, 8, workers)]
        assert len(loaded) == len(direct)
        for a, b in zip(direct, loaded):
            assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    # another seed draws other clips (the comparison above can fail)
    other = StepBatches(frames, samples, sampler, 3, tcfg, seed=1, rank=0)
    assert not all(torch.equal(x, y) for x, y in zip(_flat(other[2]), direct[0]))
    with pytest.raises(ValueError, match="train.workers"):
        step_loader(batches, 0, 2, -1)


def test_trained_weights_do_not_depend_on_the_worker_count(cache):
    base = TINY + ["train.dense.steps=4", "train.sparse.steps=3", "pruning.method=vpp"]
    weights, hashes = [], set()
    for workers in (0, 2):
        cfg = load_config("smoke", base + [f"train.workers={workers}"])
        hashes.add(config_hash(cfg))
        dense = train(cfg, "dense", out_dir=cache / f"d{workers}", progress=False)
        sparse = train(cfg, "sparse", out_dir=cache / f"s{workers}", init=dense["checkpoint"], progress=False)
        weights.append(torch.load(sparse["checkpoint"], weights_only=False)["model"])
    a, b = weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(hashes) == 1  # the worker count is not part of the config hash
    assert config_hash(load_config("smoke", base + ["train.sparse.steps=4"])) not in hashes


def test_inference_results_do_not_depend_on_the_worker_count(cache):
    cfg = load_config("smoke", TINY + ["train.dense.steps=2", "train.sparse.steps=2", "pruning.method=vpp"])
    dense = train(cfg, "dense", out_dir=cache / "d", progress=False)
    sparse = train(cfg, "sparse", out_dir=cache / "s", init=dense["checkpoint"], progress=False)
    runs = [infer_checkpoint(sparse["checkpoint"], "train", cache / f"i{w}", progress=False, workers=w)
            for w in (0, 2)]
    a, b = runs
    assert a["frames"] == b["frames"] > 6 and a["results"] == b["results"]
    assert a["records"].keys() == b["records"].keys()
    for vid in a["records"]:
        assert torch.equal(a["records"][vid].masks, b["records"][vid].masks)
    assert (cache / "i0" / "results.json").read_bytes() == (cache / "i2" / "results.json").read_bytes()
    # the loader hands out every frame of every video once, in order
    js, fr = resolve_split(cfg["data"], "train")
    frames = VideoFrames(js, fr, 64)
    direct = [frames.frame(vi, t) for vi in range(len(frames)) for t in range(frames.num_frames(vi))]
    loaded = list(frame_loader(frames, len(frames), 2))
    assert len(loaded) == len(direct) and all(torch.equal(x, y) for x, y in zip(direct, loaded))
    with pytest.raises(ValueError, match="eval.workers"):
        frame_loader(frames, 1, -1)


def test_inference_takes_the_callers_eval_settings(cache):
    cfg = load_config("smoke", TINY + ["train.dense.steps=2", "eval.top_k=4"])
    dense = train(cfg, "dense", out_dir=cache / "d", progress=False)
    stored = infer_checkpoint(dense["checkpoint"], "train", None, progress=False)
    given = infer_checkpoint(dense["checkpoint"], "train", None, progress=False, eval_cfg={"top_k": 1})
    per_video = lambda res: max(sum(r["video_id"] == v for r in res["results"]) for v in res["records"])  # noqa: E731
    assert per_video(stored) == 4 and per_video(given) == 1
