"""`vppkit eval-ytvis` command and the metrics on the real DAVIS-2016 subset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vppkit.cli import main
from vppkit.metrics.coco_frames import evaluate_frame_ap
from vppkit.metrics.ytvis_ap import evaluate_video_ap, load_results, spatio_temporal_iou
from vppkit.utils.paths import davis_root

H = W = 16


def _rle(m):
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode("ascii")}


def _write_inputs(tmp_path, video_id=1):
    sq = np.zeros((H, W), bool)
    sq[:12, :12] = True
    gt = {"videos": [{"id": 1, "length": 2, "height": H, "width": W, "file_names": ["a/0.jpg", "a/1.jpg"]}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                           "segmentations": [_rle(sq), _rle(sq)]}]}
    res = [{"video_id": video_id, "category_id": 1, "score": 0.9, "segmentations": [_rle(sq), None]}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    return tmp_path / "gt.json", tmp_path / "res.json"


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    gt, res = _write_inputs(tmp_path)
    out_json = tmp_path / "out" / "ap.json"
    assert main(["eval-ytvis", "--gt", str(gt), "--results", str(res), "--json", str(out_json), "--frames"]) == 0
    printed = capsys.readouterr().out
    assert "| AP" in printed and "mAP_segm" in printed
    assert "Running per image evaluation" not in printed  # pycocotools silenced without --verbose
    data = json.loads(out_json.read_text())
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "mAP_bbox", "mAP_segm"):
        assert key in data
    # one of two frames predicted: track IoU = 144 / 288 = 0.5 -> only the 0.50 threshold counts
    assert data["AP"] == pytest.approx(0.1, abs=1e-9) and data["AP50"] == pytest.approx(1.0, abs=1e-9)
    assert data["mAP_segm"] == pytest.approx(51 / 101)
    assert data["APm"] == -1 and "provenance" in data


def test_cli_bad_results_exit_2_naming_video(tmp_path, capsys):
    gt, res = _write_inputs(tmp_path, video_id=42)
    assert main(["eval-ytvis", "--gt", str(gt), "--results", str(res)]) == 2
    assert "unknown video_id 42" in capsys.readouterr().err


def _davis_val():
    root = davis_root()
    if not root.is_dir():
        pytest.skip(f"DAVIS-2016 subset not found at {root} (set VPPKIT_DAVIS_ROOT)")
    davis = pytest.importorskip("vppkit.data.davis")
    return davis.davis_to_ytvis(root, "val", progress=False)


def test_davis_gt_as_predictions_and_half_tracks():
    gt = _davis_val()
    perfect = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    assert evaluate_video_ap(gt, perfect)["AP"] == pytest.approx(1.0, abs=1e-9)
    frame = evaluate_frame_ap(gt, perfect)
    assert frame["mAP_segm"] == pytest.approx(1.0, abs=1e-9) and frame["mAP_bbox"] == pytest.approx(1.0, abs=1e-9)
    # keep only the first half of each track: spatio-temporal IoU = (area of kept frames) / (total GT area)
    half = []
    for p in perfect:
        n = len(p["segmentations"])
        half.append(p | {"segmentations": p["segmentations"][: n // 2] + [None] * (n - n // 2)})
    tracks_p = load_results(half, gt)
    tracks_g = load_results(perfect, gt)
    for tp, tg in zip(tracks_p, tracks_g):
        iou = spatio_temporal_iou([tp.rles], [tg.rles])[0, 0]
        assert iou == pytest.approx(tg.areas[: len(tg.areas) // 2].sum() / tg.areas.sum())
