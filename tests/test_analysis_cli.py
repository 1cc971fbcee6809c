"""`vppkit fgs`, `vppkit ioi`, `vppkit density` on tiny constructed inputs (synthetic set, hand-built records)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from PIL import Image

from vppkit.cli import main
from vppkit.data.synthetic import generate_synthetic
from vppkit.data.video import VideoFrames
from vppkit.data.ytvis import encode_mask, save_ytvis
from vppkit.engine.infer import load_keep_records
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


def _write_set(root, frames: list[list[np.ndarray]], instances: list[list[list[np.ndarray | None]]]):
    """A YouTube-VIS json + PNG frames (lossless) from hand-made arrays: frames[v][t] (H, W, 3) uint8,
    instances[v][k][t] (H, W) bool mask or None (not visible). Video ids 1, 2, ...; one category."""
    h, w = frames[0][0].shape[:2]
    videos, annotations = [], []
    for vi, (vframes, vinst) in enumerate(zip(frames, instances)):
        names = []
        for t, img in enumerate(vframes):
            name = f"v{vi}/{t:05d}.png"
            (root / "frames" / f"v{vi}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "frames" / name)
            names.append(name)
        videos.append({"id": vi + 1, "name": f"v{vi}", "file_names": names, "height": h, "width": w,
                       "length": len(names)})
        for masks in vinst:
            annotations.append({"id": len(annotations) + 1, "video_id": vi + 1, "category_id": 1, "iscrowd": 0,
                                "segmentations": [None if m is None else encode_mask(m) for m in masks],
                                "areas": [None if m is None else float(m.sum()) for m in masks],
                                "bboxes": [None] * len(masks)})
    ds = {"info": {"frames_root": "frames"}, "licenses": [], "videos": videos, "annotations": annotations,
          "categories": [{"id": 1, "name": "thing", "supercategory": "thing"}]}
    return save_ytvis(ds, root / "instances.json")


def _box(top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """(SIZE, SIZE) bool mask of the pixel rows top..bottom-1 and columns left..right-1."""
    m = np.zeros((SIZE, SIZE), dtype=bool)
    m[top:bottom, left:right] = True
    return m


# Hand-made GT on a 4x4 grid of 16 px patches, tokens row-major (token = 4 row + col):
# frame 0: A = rows 0-15, cols 0-35 -> patches (0,0), (0,1) fully, (0,2) at 4/16 = 25 % coverage;
#          B = rows 40-63, cols 48-63 -> patch (3,3) fully, (2,3) at 8/16 = 50 % (the "half" tie goes to the mask).
# frame 1: A moved one patch row down (rows 16-31): (1,0), (1,1) fully, (1,2) at 25 %; B not visible.
# Rule "half" (coverage >= 0.5): A0 = {0, 1}, B0 = {11, 15}, A1 = {4, 5};
# rule "any" (coverage > 0):     A0 = {0, 1, 2}, B0 = {11, 15}, A1 = {4, 5, 6}.
# Areas: A 16 x 36 = 576 px = 14.1 % of 4096 (size bin M), B 24 x 16 = 384 px = 9.4 % (bin S).
GT_A = [_box(0, 16, 0, 36), _box(16, 32, 0, 36)]
GT_B = [_box(40, 64, 48, 64), None]
# keep masks: block 0 dense; blocks 1-5 keep KEEP_MID, blocks 6-11 keep KEEP_LATE (token lists per frame)
KEEP_MID = [[0, 1, 11, 15], [4, 5]]
KEEP_LATE = [[0, 15], []]


def _hand_records() -> dict[int, KeepRecord]:
    masks = torch.zeros(2, DEPTH, 16, dtype=torch.bool)
    masks[:, 0] = True
    for t in range(2):
        masks[t, 1:6, KEEP_MID[t]] = True
        masks[t, 6:, KEEP_LATE[t]] = True
    return {1: KeepRecord.from_masks(masks, (4, 4))}


def test_ioi_command_exact_values(tmp_path, capsys):
    gray = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    gt = _write_set(tmp_path / "gt", [[gray, gray]], [[GT_A, GT_B]])
    npz = tmp_path / "keep_records.npz"
    _save_records(npz, _hand_records())
    assert set(load_keep_records(npz)) == {1}
    out = tmp_path / "ioi.json"
    assert main(["ioi", "--records", str(npz), "--gt", str(gt), "--img-size", str(SIZE), str(SIZE),
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["patch_size"] == 16 and res["ioi"]["n"] == 3          # (instance, frame) pairs: A0, B0, A1
    # rule "half": blocks 0-5 keep every instance patch (IoI 1); blocks 6-11: A0 1/2, B0 1/2, A1 0 -> 1/3
    per_block = pd.read_csv(tmp_path / "ioi.csv")
    assert np.allclose(per_block["IoI"], [1.0] * 6 + [1 / 3] * 6)
    assert res["ioi"]["IoI"] == pytest.approx((6 + 6 / 3) / 12)      # 2/3
    assert res["ioi"]["IoI_S"] == pytest.approx((6 + 6 * 0.5) / 12)  # B0 only: 0.75
    assert res["ioi"]["IoI_M"] == pytest.approx((6 + 6 * 0.25) / 12)  # A0 and A1: 0.625
    assert res["ioi"]["IoI_L"] is None
    assert "IoI" in capsys.readouterr().out

    # rule "any" adds the 25 %-covered patches 2 and 6, which the records never keep after block 0:
    # block 0: 1; blocks 1-5: (2/3 + 1 + 2/3) / 3 = 7/9; blocks 6-11: (1/3 + 1/2 + 0) / 3 = 5/18
    assert main(["ioi", "--records", str(npz), "--gt", str(gt), "--patch-size", "16", "--rule", "any",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["ioi"]["IoI"] == pytest.approx((1 + 5 * 7 / 9 + 6 * 5 / 18) / 12)


def test_ioi_command_rejects_mismatched_records(synth, tmp_path, capsys):
    frames = VideoFrames(synth, None, (SIZE, SIZE), cache=False)
    recs = {v["id"]: KeepRecord.from_masks(torch.ones(frames.num_frames(vi), DEPTH, 16, dtype=torch.bool), (4, 4))
            for vi, v in enumerate(frames.videos)}
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


def _fg_patch_set(tmp_path, name: str, informative: bool, videos: int = 10, frames: int = 4, grid: int = 6):
    """Frames of grid x grid 16 px patches; in each frame a random 30 % of the patches form one instance whose mask
    is exactly those patches (so the patch labels are known by construction, under any rule).
    informative: fg patches white, bg black (the input separates fg from bg perfectly); else every frame is
    uniform gray, whatever its labels (features depend on the position only, and the labels do not)."""
    rng = np.random.default_rng(0)
    px = 16 * grid
    all_frames, all_inst = [], []
    for _ in range(videos):
        vframes, masks = [], []
        for _ in range(frames):
            fg = rng.random((grid, grid)) < 0.3
            fg[rng.integers(grid), rng.integers(grid)] = True       # at least one fg patch per frame
            m = np.kron(fg, np.ones((16, 16), dtype=bool))
            img = np.where(m[..., None], 255, 0) if informative else np.full((px, px, 3), 128)
            vframes.append(np.broadcast_to(img, (px, px, 3)).astype(np.uint8).copy())
            masks.append(m)
        all_frames.append(vframes)
        all_inst.append([masks])
    return _write_set(tmp_path / name, all_frames, all_inst), px


def _fgs_cli(js, px, out) -> dict:
    assert main(["fgs", "--arch", "vit_nano", "--img-size", str(px), str(px), "--data", str(js),
                 "--frames", str(js.parent / "frames"), "--frame-stride", "1", "--max-frames", "0",
                 "--bootstrap", "200", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_fgs_command_known_answers(tmp_path, capsys):
    """FGS (balanced accuracy of the held-out probe) is 1 where the input separates fg from bg and 1/2 where the
    features carry no label information."""
    js, px = _fg_patch_set(tmp_path, "separable", informative=True)
    res = _fgs_cli(js, px, tmp_path / "fgs.json")
    assert [r["feature"] for r in res["layers"]] == [f"x_{i}" for i in range(13)]
    # x_0 = patch embedding + position: a white patch and a black patch differ by one fixed vector W (1 - 0),
    # far larger than the position embeddings, so a linear probe separates them exactly
    x0 = res["layers"][0]
    assert x0["fgs"] == pytest.approx(1.0, abs=1e-9)
    assert x0["fgs_ci_low"] == pytest.approx(1.0, abs=1e-9)     # every bootstrap replicate is perfect too
    # held-out videos were split off the json by video: disjoint
    assert set(res["train"]["videos"]).isdisjoint(res["eval"]["videos"]) and res["eval"]["videos"]
    assert res["settings"]["rule"] == "half" and res["meta"]["kind"] == "random"
    assert len(pd.read_csv(tmp_path / "fgs.csv")) == 13
    assert "x_12" in capsys.readouterr().out

    # uniform gray frames: every layer's features are a function of the patch position only, and every position
    # is foreground with the same probability, so any probe's recalls satisfy recall_fg + recall_bg = 1 in
    # expectation: balanced accuracy 1/2 up to sampling noise of the held-out frames
    js, px = _fg_patch_set(tmp_path, "blind", informative=False)
    res = _fgs_cli(js, px, tmp_path / "fgs_blind.json")
    fgs = np.array([r["fgs"] for r in res["layers"]])
    assert np.abs(fgs - 0.5).max() < 0.1, fgs


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
