"""YouTube-VIS video AP (vppkit.metrics.ytvis_ap): known answers computed by hand on tiny masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vppkit.metrics.ytvis_ap import (
    EvalInputError,
    evaluate_video_ap,
    load_results,
    spatio_temporal_iou,
)

H = W = 16


def box(y0, x0, y1, x1, h=H, w=W):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(mask):
    """Compressed RLE with str counts, as in a YouTube-VIS json."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode("ascii")}


def track(masks):
    return [None if m is None else rle(m) for m in masks]


def make_gt(videos, anns, num_cats=2):
    """videos: {vid: (length, h, w)}; anns: list of (ann_id, vid, cat, masks[, iscrowd])."""
    return {
        "videos": [{"id": v, "length": n, "height": h, "width": w,
                    "file_names": [f"{v}/{t:05d}.jpg" for t in range(n)]} for v, (n, h, w) in videos.items()],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_cats + 1)],
        "annotations": [{"id": a[0], "video_id": a[1], "category_id": a[2], "iscrowd": a[4] if len(a) > 4 else 0,
                         "segmentations": track(a[3])} for a in anns],
    }


def pred(vid, cat, score, masks):
    return {"video_id": vid, "category_id": cat, "score": score, "segmentations": track(masks)}


SQ = box(0, 0, 12, 12)  # 144 px


def test_perfect_predictions_give_one():
    gt = make_gt({1: (2, H, W), 2: (3, H, W)},
                 [(1, 1, 1, [SQ, box(2, 2, 8, 8)]), (2, 2, 2, [None, SQ, box(4, 4, 6, 6)])])
    res = [pred(1, 1, 0.9, [SQ, box(2, 2, 8, 8)]), pred(2, 2, 0.8, [None, SQ, box(4, 4, 6, 6)])]
    out = evaluate_video_ap(gt, res)
    assert set(out) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10"}
    for k in ("AP", "AP50", "AP75", "APs", "AR1", "AR10"):
        assert out[k] == pytest.approx(1.0, abs=1e-9), k
    assert out["APm"] == -1 and out["APl"] == -1  # no GT of those sizes: undefined, as COCO


def test_shifted_mask_counts_only_thresholds_below_its_iou():
    # 12x12 GT, prediction shifted 2 columns: IoU = 12*10 / (12*14) = 0.714 -> thresholds 0.50..0.70 = 5 of 10
    gt = make_gt({1: (1, H, W)}, [(1, 1, 1, [SQ])])
    shifted = box(0, 2, 12, 14)
    iou = spatio_temporal_iou([track([shifted])], [track([SQ])])
    assert iou[0, 0] == pytest.approx(120 / 168)
    out = evaluate_video_ap(gt, [pred(1, 1, 0.5, [shifted])])
    assert out["AP"] == pytest.approx(0.5, abs=1e-9)
    assert out["AP50"] == pytest.approx(1.0, abs=1e-9)
    assert out["AP75"] == pytest.approx(0.0)
    assert out["AR1"] == pytest.approx(0.5)


def test_wrong_category_scores_zero():
    gt = make_gt({1: (1, H, W)}, [(1, 1, 1, [SQ])])
    out = evaluate_video_ap(gt, [pred(1, 2, 0.9, [SQ])])
    assert out["AP"] == 0.0 and out["AR10"] == 0.0  # category 2 has no GT: left out of the mean


def test_category_without_gt_is_excluded_from_mean():
    gt = make_gt({1: (1, H, W)}, [(1, 1, 1, [SQ])])
    out = evaluate_video_ap(gt, [pred(1, 1, 0.9, [SQ]), pred(1, 2, 0.8, [SQ])])
    assert out["AP"] == pytest.approx(1.0, abs=1e-9)


def test_duplicate_detection_is_a_false_positive():
    # two GTs (two videos); ranked detections: TP (v1), duplicate FP (v1), TP (v2)
    # precision 1, 1/2, 2/3 at recall .5, .5, 1 -> interpolated: 1 for recall <= .5 (51 points), 2/3 above (50)
    gt = make_gt({1: (1, H, W), 2: (1, H, W)}, [(1, 1, 1, [SQ]), (2, 2, 1, [SQ])])
    res = [pred(1, 1, 0.9, [SQ]), pred(1, 1, 0.8, [SQ]), pred(2, 1, 0.7, [SQ])]
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    out = evaluate_video_ap(gt, res)
    assert out["AP"] == pytest.approx(expected, abs=1e-9)
    assert out["AP50"] == pytest.approx(expected, abs=1e-9)
    assert out["AR1"] == pytest.approx(1.0)  # the duplicate is not the top detection of any video
    # without the duplicate the AP is 1: the difference is the FP
    assert evaluate_video_ap(gt, [res[0], res[2]])["AP"] == pytest.approx(1.0, abs=1e-9)


def test_spatio_temporal_iou_not_mean_of_frame_ious():
    # frame 0: identical 144-px masks (IoU 1); frame 1: disjoint 4-px masks (IoU 0)
    # mean per-frame IoU = 0.5 (-> AP 0.1); spatio-temporal IoU = 144 / 152 = 0.947 (-> 9 thresholds, AP 0.9)
    gt_masks = [SQ, box(12, 12, 14, 14)]
    pr_masks = [SQ, box(0, 14, 2, 16)]
    iou = spatio_temporal_iou([track(pr_masks)], [track(gt_masks)])
    assert iou[0, 0] == pytest.approx(144 / 152)
    gt = make_gt({1: (2, H, W)}, [(1, 1, 1, gt_masks)])
    assert evaluate_video_ap(gt, [pred(1, 1, 0.9, pr_masks)])["AP"] == pytest.approx(0.9, abs=1e-9)


def test_null_frames_count_in_union_only_where_one_side_present():
    gt_t = track([SQ, box(0, 0, 2, 2), None])
    pr_t = track([SQ, None, None])
    assert spatio_temporal_iou([pr_t], [gt_t])[0, 0] == pytest.approx(144 / 148)


def test_spatio_temporal_iou_matches_dense_numpy():
    rng = np.random.default_rng(0)
    T, D, G = 3, 3, 2

    def rand_track():
        return [None if rng.random() < 0.25 else rng.random((8, 8)) < 0.4 for _ in range(T)]

    dts, gts = [rand_track() for _ in range(D)], [rand_track() for _ in range(G)]
    crowd = [0, 1]
    got = spatio_temporal_iou([track(t) for t in dts], [track(t) for t in gts], crowd)
    z = np.zeros((8, 8), bool)
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            dd = [z if m is None else m for m in d]
            gg = [z if m is None else m for m in g]
            inter = sum((a & b).sum() for a, b in zip(dd, gg))
            den = sum(a.sum() for a in dd) if crowd[j] else sum((a | b).sum() for a, b in zip(dd, gg))
            assert got[i, j] == pytest.approx(inter / den if den else 0.0), (i, j)


def test_crowd_gt_is_ignored_not_a_false_positive():
    gt = make_gt({1: (1, H, W)}, [(1, 1, 1, [box(0, 0, 6, 6)]), (2, 1, 1, [box(8, 8, 16, 16)], 1)])
    res = [pred(1, 1, 0.9, [box(10, 10, 14, 14)]), pred(1, 1, 0.5, [box(0, 0, 6, 6)])]
    # the top detection lies inside the crowd region (crowd IoU = 1): ignored, so AP = 1
    assert evaluate_video_ap(gt, res)["AP"] == pytest.approx(1.0, abs=1e-9)


def test_empty_predictions_and_empty_masks_give_zero():
    gt = make_gt({1: (2, H, W)}, [(1, 1, 1, [SQ, SQ])])
    out = evaluate_video_ap(gt, [])
    assert out["AP"] == 0.0 and out["AR10"] == 0.0 and out["APm"] == -1
    empty = np.zeros((H, W), bool)
    assert spatio_temporal_iou([track([empty, empty])], [track([SQ, SQ])])[0, 0] == 0.0
    assert spatio_temporal_iou([track([empty, None])], [track([empty, None])])[0, 0] == 0.0  # empty union
    assert evaluate_video_ap(gt, [pred(1, 1, 0.9, [empty, empty])])["AP"] == 0.0


def test_area_ranges_use_mean_area_over_present_frames():
    # 150x150 = 22500 px in one of two frames: mean over present frames = 22500 (medium: 128^2..256^2);
    # averaging over both frames would give 11250 (small)
    big = box(0, 0, 150, 150, 200, 200)
    gt = make_gt({1: (2, 200, 200)}, [(1, 1, 1, [big, None])])
    out = evaluate_video_ap(gt, [pred(1, 1, 0.9, [big, None])])
    assert out["APs"] == -1 and out["APl"] == -1
    assert out["APm"] == pytest.approx(1.0, abs=1e-9)


def test_area_cutoffs_are_youtube_vis_not_coco():
    # 50x40 = 2000 px: COCO would call it medium (> 32^2); YouTube-VIS small (< 128^2)
    mid = box(0, 0, 50, 40, 64, 64)
    gt = make_gt({1: (1, 64, 64)}, [(1, 1, 1, [mid])])
    out = evaluate_video_ap(gt, [pred(1, 1, 0.9, [mid])])
    assert out["APs"] == pytest.approx(1.0, abs=1e-9) and out["APm"] == -1
    # the GT json's own ``areas`` entry decides the range when given (official ytvos.py)
    gt["annotations"][0]["areas"] = [200.0**2]
    out = evaluate_video_ap(gt, [pred(1, 1, 0.9, [mid])])
    assert out["APs"] == -1 and out["APm"] == pytest.approx(1.0, abs=1e-9)


def test_gt_annotation_id_zero_and_list_counts_rle():
    gt = make_gt({1: (1, H, W)}, [(0, 1, 1, [SQ])])
    fortran = np.asfortranarray(SQ.astype(np.uint8)).ravel(order="F")
    counts, prev, run = [], 0, 0
    for v in fortran:  # uncompressed RLE: alternating runs starting with zeros
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    res = [{"video_id": 1, "category_id": 1, "score": 1.0, "segmentations": [{"size": [H, W], "counts": counts}]}]
    assert evaluate_video_ap(gt, res)["AP"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("bad, match", [
    ({"video_id": 99}, r"\[0\].*unknown video_id 99"),
    ({"score": float("nan")}, r"\[0\].*score is nan"),
    ({"score": float("inf")}, r"\[0\].*score is inf"),
    ({"category_id": 7}, r"unknown category_id 7"),
    ({"segmentations": [None, None, None]}, r"video_id 1.*3 entries, video has 2 frames"),
    ({"segmentations": [{"size": [8, 8], "counts": "0"}, None]}, r"frame 0: RLE size \[8, 8\]"),
])
def test_bad_results_raise_naming_the_culprit(bad, match):
    gt = make_gt({1: (2, H, W)}, [(1, 1, 1, [SQ, SQ])])
    r = pred(1, 1, 0.9, [SQ, SQ])
    r.update(bad)
    with pytest.raises(EvalInputError, match=match):
        evaluate_video_ap(gt, [r])


def test_bad_gt_names_annotation():
    gt = make_gt({1: (2, H, W)}, [(5, 1, 1, [SQ, SQ])])
    gt["annotations"][0]["segmentations"].append(None)
    with pytest.raises(EvalInputError, match=r"annotation id 5.*3 entries"):
        evaluate_video_ap(gt, [])


def test_paths_for_gt_and_results(tmp_path):
    pytest.importorskip("vppkit.data.ytvis")
    gt = make_gt({1: (2, H, W)}, [(1, 1, 1, [SQ, None])])
    res = [pred(1, 1, 0.9, [SQ, None])]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    out = evaluate_video_ap(tmp_path / "gt.json", str(tmp_path / "res.json"))
    assert out["AP"] == pytest.approx(1.0, abs=1e-9)
    tracks = load_results(tmp_path / "res.json", gt)
    assert len(tracks) == 1 and tracks[0].areas.tolist() == [144.0, 0.0]
    with pytest.raises(EvalInputError, match="does not exist"):
        load_results(tmp_path / "missing.json", gt)


def test_per_category_ap():
    from vppkit.metrics.ytvis_ap import per_category_ap, run_video_eval

    gt = make_gt({1: (1, H, W)}, [(1, 1, 1, [SQ]), (2, 1, 2, [box(12, 12, 16, 16)])], num_cats=3)
    res = [pred(1, 1, 0.9, [SQ]), pred(1, 2, 0.8, [SQ])]
    per_cat = per_category_ap(run_video_eval(gt, res))
    assert per_cat[1] == pytest.approx(1.0, abs=1e-9) and per_cat[2] == 0.0 and per_cat[3] == -1
    assert evaluate_video_ap(gt, res)["AP"] == pytest.approx(0.5, abs=1e-9)  # mean over categories with GT
