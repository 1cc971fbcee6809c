"""The paper's recipe (issue 13): baselines at the paper's keep points, seeded inference noise on by default.

- DynamicViT: fixed-count top-k at rho = 0.6 / 0.4, i.e. floor(N rho^s) tokens per stage (worked out by hand
  below), whose nominal PKR is the paper's DynVit 54.4 % / 40.6 %; SViT targets rho^s with the same rho.
- Inference noise: on by default; a noisy evaluation is repeatable given the seed, differs for another seed and
  from the deterministic one, and leaves the caller's RNG state alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analyses.report import setup_section
from experiments import zoo
from experiments.common import Context
from vppkit.config import load_config
from vppkit.engine.infer import infer_checkpoint, load_keep_records, video_rng
from vppkit.engine.train import train
from vppkit.models.vis.model import build_pruner
from vppkit.models.vit import build_backbone


# ---- baselines at the paper's points ------------------------------------------------------------------------
def test_dynamicvit_variants_keep_floor_n_rho_s():
    p55, p40 = zoo.variants()["dynamicvit55"]["pruning"], zoo.variants()["dynamicvit40"]["pruning"]
    assert p55 == {"method": "dynamicvit", "rho": 0.6} and p40 == {"method": "dynamicvit", "rho": 0.4}
    # N = 144: floor(86.4) = 86, floor(51.84) = 51, floor(31.104) = 31; rho 0.4: floor(57.6) = 57,
    # floor(23.04) = 23, floor(9.216) = 9
    assert list(build_pruner(p55, 48).nominal_counts(144, 12).attn) == [144] * 3 + [86] * 3 + [51] * 3 + [31] * 3
    assert list(build_pruner(p40, 48).nominal_counts(144, 12).attn) == [144] * 3 + [57] * 3 + [23] * 3 + [9] * 3
    # paper scale N = 60 x 34 = 2040: 1224 / 734 / 440 and 816 / 326 / 130 -> PKR 54.39 % and 40.59 %, the paper's
    # DynVit points (54.4 %, 40.6 %)
    c55, c40 = build_pruner(p55, 48).nominal_counts(2040, 12), build_pruner(p40, 48).nominal_counts(2040, 12)
    assert list(c55.attn[3::3]) == [1224, 734, 440] and list(c40.attn[3::3]) == [816, 326, 130]
    assert round(100 * c55.pkr, 1) == 54.4 and round(100 * c40.pkr, 1) == 40.6


@pytest.mark.parametrize("name,counts", [("dynamicvit55", [144] * 3 + [86] * 3 + [51] * 3 + [31] * 3),
                                         ("dynamicvit40", [144] * 3 + [57] * 3 + [23] * 3 + [9] * 3)])
@pytest.mark.parametrize("noise", [False, True])
def test_real_dynamicvit_keeps_its_fixed_counts_in_both_modes(name, counts, noise):
    pruner = build_pruner({**zoo.variants()[name]["pruning"], "inference_noise": noise}, 48)
    bb = build_backbone("vit_nano", (192, 192), pruner=pruner).eval()         # N = 12 x 12 = 144
    with torch.inference_mode():
        rec = bb(torch.rand(2, 3, 192, 192)).keep
    assert rec.counts.tolist() == [counts] * 2


def test_svit_variants_share_the_rho():
    t55 = zoo.variants()["svit55"]["pruning"]["targets"]
    t40 = zoo.variants()["svit40"]["pruning"]["targets"]
    assert t55 == pytest.approx([0.6] * 3 + [0.36] * 3 + [0.216] * 3)
    assert t40 == pytest.approx([0.4] * 3 + [0.16] * 3 + [0.064] * 3)


# ---- inference noise: default, seeded, repeatable -------------------------------------------------------------
TINY = ["data.num_videos=2", "data.num_val_videos=1", "data.num_frames=4", "data.height=64", "data.width=64",
        "model.img_size=[64,64]", "model.dim=32", "model.num_queries=5", "model.dec_layers=2",
        "train.dense.steps=2", "train.sparse.steps=2", "pruning.method=vpp", "pruning.schedule=pkr55"]


def test_video_rng_is_seeded_and_leaves_the_callers_state():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with video_rng(0, 7):
        a = torch.rand(5)
    assert torch.equal(torch.random.get_rng_state(), before)
    with video_rng(0, 7):
        b = torch.rand(5)
    with video_rng(0, 8):
        c = torch.rand(5)
    with video_rng(1, 7):
        d = torch.rand(5)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
    with video_rng(0, "bike"):                          # non-integer ids are hashed
        e = torch.rand(5)
    with video_rng(0, "bike"):
        assert torch.equal(e, torch.rand(5))


def _masks(out_dir):
    recs = load_keep_records(out_dir / "keep_records.npz")
    return np.concatenate([recs[v].masks.numpy() for v in sorted(recs)])


def test_noisy_inference_is_repeatable_given_the_seed(cache):
    cfg = load_config("smoke", TINY)
    assert cfg["eval"]["inference_noise"] is True                                  # the default (official)
    dense = train(cfg, "dense", out_dir=cache / "dense", progress=False)
    sparse = train(cfg, "sparse", init=dense["checkpoint"], out_dir=cache / "sparse", progress=False)
    ck = sparse["checkpoint"]
    a = infer_checkpoint(ck, "train", cache / "a", progress=False)                # noise, the config's seed 0
    torch.manual_seed(999)                                                          # other global RNG state
    b = infer_checkpoint(ck, "train", cache / "b", progress=False)
    c = infer_checkpoint(ck, "train", cache / "c", progress=False, seed=1)
    d = infer_checkpoint(ck, "train", cache / "d", progress=False, noise=False)
    d2 = infer_checkpoint(ck, "train", cache / "d2", progress=False, noise=False, seed=1)
    assert a["noise"] and a["seed"] == 0 and not d["noise"]
    assert (cache / "a" / "results.json").read_text() == (cache / "b" / "results.json").read_text()
    assert np.array_equal(_masks(cache / "a"), _masks(cache / "b"))
    assert not np.array_equal(_masks(cache / "a"), _masks(cache / "c"))             # another seed: other draws
    assert not np.array_equal(_masks(cache / "a"), _masks(cache / "d"))             # deterministic differs
    assert np.array_equal(_masks(cache / "d"), _masks(cache / "d2"))                # ... and ignores the seed
    summary = json.loads((cache / "a" / "summary.json").read_text())
    assert summary["noise"] is True and summary["settings"]["seed"] == 0


@pytest.mark.parametrize("profile, host", [("default", "plain"), ("ytvis21_small", "adapter")])
def test_setup_table_names_the_host(tmp_path, profile, host):
    """The report's setup table (index.md) has a host row naming ``model.host`` and, for the adapter, its sizes
    (issue 13); the paper column names the official ViT-Adapter + Mask2Former."""
    ctx = Context(profile, load_config(profile), results_dir=tmp_path / "r", reports_dir=tmp_path / "p")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in setup_section(ctx) if line.startswith("| ")}
    assert f"`{host}`" in rows["host"] and "ViT-Adapter (spatial prior conv_inplane 64" in rows["host"]
    assert ("deformable attention 6 heads x 4 points" in rows["host"].split(" | ")[1]) == (host == "adapter")
    assert ("Mask2Former: MSDeformAttn" in rows["VIS head"]) == (host == "adapter")
    # every profile but smoke tracks with ROVIS track queries (the paper's tracker; the CPU profiles chose it by
    # measurement); smoke keeps query-embedding matching (configs/smoke.yaml)
    assert "ROVIS track queries (the previous" in rows["tracker"]
    smoke = Context("smoke", load_config("smoke"), results_dir=tmp_path / "rs", reports_dir=tmp_path / "ps")
    smoke_rows = {line.split(" | ")[0].lstrip("| "): line for line in setup_section(smoke) if line.startswith("| ")}
    assert "query-embedding matching" in smoke_rows["tracker"]
