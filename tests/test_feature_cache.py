"""train.dense.feature_cache (issue 15): the dense stage on a frozen backbone trained on backbone outputs computed
once per (frame, flip) gives the weights of the uncached run (same batches, flips, seeds, loss); the cache is read,
reused and keyed by what determines it; settings where the backbone's output is not fixed are refused; the
`featcache` artifact compares both and skips profiles it does not apply to."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from analyses.tables import featcache_table
from experiments import featcache, zoo
from experiments.common import Context
from vppkit.config import load_config
from vppkit.data.splits import resolve_split
from vppkit.data.video import VideoFrames
from vppkit.engine.distributed import DistInfo
from vppkit.engine.feature_cache import FeatureCache, check_feature_cache, stochastic_modules
from vppkit.engine.train import StepBatches, StepSampler, stage_config, train, training_samples
from vppkit.models.records import BackboneOutput
from vppkit.models.vis.model import build_vis_model
from vppkit.weights import imgfocus

TINY = ["data.num_videos=2", "data.num_val_videos=1", "data.num_frames=4", "data.height=64", "data.width=64",
        "model.img_size=[64,64]", "model.dim=32", "model.num_queries=5", "model.dec_layers=2",
        "train.freeze_backbone=true", "train.dense.steps=6", "train.dense.ckpt_every=3"]


def _weights(run):
    return torch.load(run["checkpoint"], weights_only=False)["model"]


def _cfg(*extra):
    return load_config("smoke", TINY + list(extra))


def test_cached_run_gives_the_uncached_weights(cache):
    plain = train(_cfg(), "dense", out_dir=cache / "plain", progress=False)
    cached = train(_cfg("train.dense.feature_cache=true"), "dense", out_dir=cache / "cached", progress=False)
    info = cached["feature_cache"]
    assert plain["feature_cache"] is None and info["used"] and info["built"] == info["entries"] > 0
    assert json.loads((cache / "cached" / "feature_cache.json").read_text())["key"] == info["key"]
    a, b = _weights(plain), _weights(cached)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), k
    losses = [pd.read_csv(cache / d / "metrics.csv")["loss"] for d in ("plain", "cached")]
    assert losses[0].tolist() == pytest.approx(losses[1].tolist(), rel=1e-5)
    # the head trained (the comparison is not between two untouched models)
    init = build_vis_model(_cfg()["model"], 1).state_dict()
    assert any(not torch.equal(init[k], b[k]) for k in b if k.startswith("decoder."))

    # a second run reuses every entry and reports the same build cost; training reads the stored features:
    # zeroed entries give other weights
    again = train(_cfg("train.dense.feature_cache=true"), "dense", out_dir=cache / "again", progress=False)
    assert again["feature_cache"]["built"] == 0
    assert again["feature_cache"]["build_seconds"] == pytest.approx(info["build_seconds"])
    for path in (cache / "cache" / "features" / info["key"]).rglob("*.pt"):
        item = torch.load(path, weights_only=True)
        torch.save({**item, "tokens": torch.zeros_like(item["tokens"])}, path)
    zeroed = train(_cfg("train.dense.feature_cache=true"), "dense", out_dir=cache / "zeroed", progress=False)
    z = _weights(zeroed)
    assert any(not torch.allclose(z[k].float(), b[k].float(), atol=1e-4) for k in b if k.startswith("decoder."))


def test_cached_batches_hold_the_backbone_output_of_the_drawn_frames(cache):
    cfg = _cfg("train.dense.steps=8")
    tcfg = stage_config(cfg, "dense")
    js, fr = resolve_split(cfg["data"], "train")
    frames = VideoFrames(js, fr, cfg["model"]["img_size"])
    samples = training_samples(frames, "video")
    batches = StepBatches(frames, samples, StepSampler(len(samples), 2, 0, DistInfo()), 2, tcfg, seed=0, rank=0)
    entries = batches.entries(0, 8)
    assert {fl for _, _, fl in entries} == {False, True}       # flips drawn: both kinds of entries
    model = build_vis_model(cfg["model"], 1)
    model.freeze_backbone(True)
    model.train()
    fc = FeatureCache.for_model(model, frames, cfg["model"])
    assert fc.missing(entries) == sorted(entries)
    assert fc.ensure(model, entries, batch=3)["built"] == len(entries) and not fc.missing(entries)
    cached = StepBatches(frames, samples, batches.sampler, 2, tcfg, seed=0, rank=0, features=fc)
    for step in (0, 5):
        for (images, tg), (bb, tg2) in zip(batches[step], cached[step]):
            assert isinstance(bb, BackboneOutput) and bb.tokens.shape[0] == images.shape[0]
            with torch.no_grad():
                ref = model.run_backbone(images)
            assert torch.allclose(ref.tokens, bb.tokens, atol=1e-5) and tuple(ref.grid) == tuple(bb.grid)
            assert torch.allclose(ref.prefix, bb.prefix, atol=1e-5)
            for g, h in zip(tg, tg2):
                assert torch.equal(g["labels"], h["labels"]) and torch.equal(g["masks"], h["masks"])
            out, out2 = model(images), model(bb)                   # the head on either input
            assert torch.allclose(out.pred_masks, out2.pred_masks, atol=1e-4)


def test_cache_key_follows_what_determines_the_features(cache):
    cfg = _cfg()
    js, fr = resolve_split(cfg["data"], "train")
    frames = VideoFrames(js, fr, cfg["model"]["img_size"])

    def key(seed=0, mcfg=None):
        torch.manual_seed(seed)
        model = build_vis_model(mcfg or cfg["model"], 1)
        return FeatureCache.for_model(model, frames, mcfg or cfg["model"]).key

    assert key(0) == key(0)
    assert key(1) != key(0)                                          # other weights
    assert key(0, {**cfg["model"], "arch": "vit_micro"}) != key(0)   # other arch (and weights)
    other = VideoFrames(resolve_split(_cfg("data.num_frames=5")["data"], "train")[0], None, 64)
    torch.manual_seed(0)
    m = build_vis_model(cfg["model"], 1)
    assert FeatureCache.for_model(m, other, cfg["model"]).key != key(0)  # other data json / frames


def test_settings_without_fixed_features_are_refused(cache):
    with pytest.raises(ValueError, match="sparse stage"):
        train(_cfg("train.sparse.feature_cache=true", "pruning.method=vpp"), "sparse", out_dir=cache / "s",
              progress=False)
    with pytest.raises(ValueError, match="frozen backbone"):
        train(_cfg("train.dense.feature_cache=true", "train.freeze_backbone=false"), "dense", out_dir=cache / "u",
              progress=False)
    cfg = _cfg("train.dense.feature_cache=true", "model.host=adapter")
    with pytest.raises(ValueError, match="adapter"):
        check_feature_cache(cfg, "dense", stage_config(cfg, "dense"))
    with pytest.raises(ValueError, match="random in training mode"):
        train(_cfg("train.dense.feature_cache=true", "model.backbone_kwargs={drop_path_rate: 0.1}"), "dense",
              out_dir=cache / "dp", progress=False)
    assert stochastic_modules(build_vis_model(_cfg()["model"], 1).backbone) == []
    with pytest.raises(ValueError, match="plain host"):
        model = build_vis_model({**_cfg()["model"], "host": "adapter", "img_size": [64, 64]}, 1)
        model(BackboneOutput(torch.zeros(1, 16, 48), (4, 4), torch.zeros(1, 1, 48), None, None, None,
                             torch.zeros(())))
    assert not check_feature_cache(_cfg(), "dense", stage_config(_cfg(), "dense"))   # default: off


def test_fallback_backbone_ignores_the_cache_with_the_reason(cache, monkeypatch):
    def missing(*a, **k):
        raise imgfocus.ImgFocusError(imgfocus.MISSING_MESSAGE)

    monkeypatch.setattr(imgfocus, "ensure_imgfocus_checkpoint", missing)
    cfg = _cfg("model.arch=vit_small_patch14_dinov2", "model.pretrained=imgfocus", "model.img_size=[112,112]",
               "model.fallback={arch: vit_nano}", "train.dense.steps=1", "train.dense.feature_cache=true")
    run = train(cfg, "dense", out_dir=cache / "fb", progress=False)
    assert not run["feature_cache"]["used"] and "not frozen" in run["feature_cache"]["reason"]
    assert "feature_cache ignored" in json.loads((cache / "fb" / "feature_cache.json").read_text())["reason"]


def test_featcache_artifact_compares_both_and_skips_unfrozen_profiles(cache):
    ov = [o for o in TINY if not o.startswith("train.dense.ckpt")] + [
        "data.num_frames=3", "train.dense.steps=3", "featcache.uncached_steps=3", "featcache.cached_steps=5",
        "eval.top_k=3"]
    ctx = Context(profile="smoke", cfg=load_config("smoke", ov), results_dir=cache / "results",
                  reports_dir=cache / "reports")
    res = featcache.run(ctx)
    rows = {r["arm"]: r for r in res["rows"]}
    assert res["skipped"] is None and set(rows) == {"uncached", "cached"}
    assert rows["uncached"]["steps"] == 3 and rows["cached"]["steps"] == 5
    assert rows["cached"]["feature_cache"] and rows["cached"]["cache_seconds"] > 0 and rows["cached"]["entries"]
    assert not rows["uncached"]["feature_cache"] and rows["uncached"]["cache_seconds"] == 0
    for r in rows.values():
        assert r["seconds"] == pytest.approx(r["train_seconds"] + r["cache_seconds"]) and 0 <= r["AP"] <= 100
    # the uncached arm (3 steps, no cache) is the profile's dense model: trained and evaluated once
    assert rows["uncached"]["profile_dense"] and not rows["cached"]["profile_dense"]
    assert zoo.checkpoint(ctx, "dense").parent.name == rows["uncached"]["run"]
    assert ctx.result_path("eval_dense").exists() and ctx.result_path("eval_dense_cached").exists()
    assert not ctx.result_path("eval_dense_uncached").exists()
    assert featcache.run(ctx)["provenance"]["time_utc"] == res["provenance"]["time_utc"]     # reused
    entry = featcache_table(ctx, res)[0]
    assert "wall total (s)" in entry.inline and "cached" in entry.inline

    # arms of an epoch-based profile drop the epochs so that their steps count
    epochs = load_config("smoke", ov + ["train.epochs=2"])
    assert featcache.arm_settings(epochs)["cached"] == {"steps": 5, "feature_cache": True, "epochs": None}
    assert featcache.arm_settings(ctx.cfg)["uncached"] == {"steps": 3, "feature_cache": False}

    unfrozen = Context(profile="smoke", cfg=load_config("smoke", ["data.num_videos=2"]),
                       results_dir=cache / "r2", reports_dir=cache / "rep2")
    skipped = featcache.run(unfrozen)
    assert "freeze_backbone false" in skipped["skipped"] and skipped["rows"] == []
    assert "not run" in featcache_table(unfrozen, skipped)[0].inline
    assert not (cache / "r2" / "runs").exists()                                            # nothing trained
