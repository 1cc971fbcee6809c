"""`vppkit fgs`, `vppkit ioi`, `vppkit density` on tiny constructed inputs (synthetic set, hand-built records)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vppkit.cli import main
from vppkit.data.synthetic import generate_synthetic
from vppkit.data.video import VideoFrames
from vppkit.engine.infer import load_keep_records
from vppkit.metrics.patch_labels import patch_labels
from vppkit.models.records import KeepRecord

SIZE = 64          # frames 64x64, patch 16 -> 4x4 = 16 patches
DEPTH = 12


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return generate_synthetic(out, num_videos=3, seed=0, num_frames=4, height=SIZE, width=SIZE, progress=False)


def _save_records(path, records: dict[int, KeepRecord]) -> None:
    """The npz layout of vppkit.engine.infer (keys v<video id>_<field>)."""
    arrays = {f"v{vid}_{k}": v for vid, rec in records.items() for k, v in rec.to_packed().items()}
    np.savez_compressed(path, **arrays)


def _gt_records(js, blocks_keeping_fg: int) -> dict[int, KeepRecord]:
    """Block 0 keeps everything; blocks 1..blocks_keeping_fg keep exactly the GT foreground patches (rule 'half')
    and the remaining blocks keep nothing."""
    frames = VideoFrames(js, None, (SIZE, SIZE), cache=False)
    out = {}
    for vi, vid in enumerate(frames.videos):
        masks = []
        for t in range(frames.num_frames(vi)):
            fg = patch_labels(frames.instances(vi, t)[1], 16, "half").foreground
            m = torch.zeros(DEPTH, fg.numel(), dtype=torch.bool)
            m[0] = True
            m[1:blocks_keeping_fg + 1] = fg
            masks.append(m)
        out[vid["id"]] = KeepRecord.from_masks(torch.stack(masks), (SIZE // 16, SIZE // 16))
    return out


def test_ioi_command_exact_values(synth, tmp_path, capsys):
    recs = _gt_records(synth, blocks_keeping_fg=5)   # instance patches kept in blocks 0..5, dropped in 6..11
    npz = tmp_path / "keep_records.npz"
    _save_records(npz, recs)
    assert set(load_keep_records(npz)) == set(recs)
    out = tmp_path / "ioi.json"
    assert main(["ioi", "--records", str(npz), "--gt", str(synth), "--img-size", str(SIZE), str(SIZE),
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["ioi"]["n"] > 0 and res["patch_size"] == 16
    assert res["ioi"]["IoI"] == pytest.approx(0.5)       # 6 of 12 blocks keep every instance patch
    per_block = pd.read_csv(tmp_path / "ioi.csv")
    assert np.allclose(per_block["IoI"], [1.0] * 6 + [0.0] * 6)
    assert "IoI" in capsys.readouterr().out

    # a different rule changes the instance patch sets: "any" adds boundary patches the records did not keep
    assert main(["ioi", "--records", str(npz), "--gt", str(synth), "--patch-size", "16", "--rule", "any",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["ioi"]["IoI"] < 0.5


def test_ioi_command_rejects_mismatched_records(synth, tmp_path, capsys):
    recs = _gt_records(synth, 11)
    vid = next(iter(recs))
    recs[vid] = KeepRecord.from_masks(recs[vid].masks[:2], recs[vid].grid)   # 2 frames instead of 4
    npz = tmp_path / "bad.npz"
    _save_records(npz, recs)
    assert main(["ioi", "--records", str(npz), "--gt", str(synth), "--out", str(tmp_path / "x.json")]) == 1
    assert f"video id {vid} has 2 recorded frames" in capsys.readouterr().err
    assert main(["ioi", "--records", str(npz), "--gt", str(synth), "--img-size", "60", "60",
                 "--out", str(tmp_path / "x.json")]) == 1
    assert not (tmp_path / "x.json").exists()


def test_density_command_first_vs_later(tmp_path, capsys):
    n, grid = 16, (4, 4)
    recs = {}
    for vid, frames in ((1, 3), (7, 2)):
        m = torch.ones(frames, DEPTH, n, dtype=torch.bool)
        m[1:, 1:, n // 2:] = False       # later frames: blocks 1..11 keep half of the patches
        recs[vid] = KeepRecord.from_masks(m, grid)
    npz = tmp_path / "keep_records.npz"
    _save_records(npz, recs)
    out = tmp_path / "density.json"
    assert main(["density", "--records", str(npz), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["frames"] == 5 and res["frames_first"] == 2 and res["frames_later"] == 3
    assert res["pkr_first"] == pytest.approx(1.0)
    assert res["pkr_later"] == pytest.approx((1 + 11 * 0.5) / 12)
    assert res["pkr"] == pytest.approx((2 * 1.0 + 3 * (1 + 11 * 0.5) / 12) / 5)
    assert res["block_density_later"][0] == pytest.approx(1.0)
    assert res["block_density_later"][1] == pytest.approx(0.5)
    table = pd.read_csv(tmp_path / "density.csv")
    assert set(table.split) == {"all", "first", "later"} and len(table) == 3 * DEPTH
    assert "PKR" in capsys.readouterr().out


def test_fgs_command_random_arch_on_json(synth, tmp_path, capsys):
    out = tmp_path / "fgs.json"
    assert main(["fgs", "--arch", "vit_nano", "--img-size", str(SIZE), str(SIZE), "--data", str(synth),
                 "--frame-stride", "1", "--bootstrap", "50", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["feature"] for r in res["layers"]] == [f"x_{i}" for i in range(13)]
    assert all(0.0 <= r["fgs"] <= 1.0 for r in res["layers"])
    # held-out videos were split off the json by video: disjoint
    assert set(res["train"]["videos"]).isdisjoint(res["eval"]["videos"]) and res["eval"]["videos"]
    assert res["settings"]["rule"] == "half" and res["meta"]["kind"] == "random"
    assert len(pd.read_csv(tmp_path / "fgs.csv")) == 13
    assert "x_12" in capsys.readouterr().out


def test_fgs_command_checkpoint(tmp_path, monkeypatch):
    from vppkit.config import load_config
    from vppkit.engine.train import train

    monkeypatch.setenv("VPPKIT_CACHE", str(tmp_path / "cache"))
    summary = train(load_config("smoke", ["train.dense.steps=2"]), stage="dense", out_dir=tmp_path / "run",
                    progress=False)
    out = tmp_path / "fgs_dense.json"
    assert main(["fgs", "--checkpoint", summary["checkpoint"], "--data", "train", "--max-frames", "4",
                 "--bootstrap", "20", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["meta"]["kind"] == "dense" and len(res["layers"]) == 13
    assert res["train"]["data"] == "train split" and res["eval"]["data"] == "val split"
    assert res["train"]["frames"] == res["eval"]["frames"] == 4


def test_fgs_command_errors(tmp_path, capsys):
    assert main(["fgs", "--arch", "vit_nano", "--img-size", "64", "64", "--data", str(tmp_path / "none.json"),
                 "--out", str(tmp_path / "o.json")]) == 1
    assert "neither train/val nor an existing json" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # backbone sources are mutually exclusive
        main(["fgs", "--arch", "vit_nano", "--pretrained", "imgfocus", "--out", str(tmp_path / "o.json")])
