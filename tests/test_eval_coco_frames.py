"""Frame-level COCO mAP_bbox / mAP_segm (vppkit.metrics.coco_frames): known answers on tiny masks."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vppkit.metrics._ytvis_eval import EvalInputError
from vppkit.metrics.coco_frames import evaluate_frame_ap
from vppkit.metrics.ytvis_ap import evaluate_video_ap

H = W = 16


def box(y0, x0, y1, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def track(masks):
    out = []
    for m in masks:
        if m is None:
            out.append(None)
        else:
            r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            out.append({"size": r["size"], "counts": r["counts"].decode("ascii")})
    return out


def make_gt(length, anns):
    return {
        "videos": [{"id": 1, "length": length, "height": H, "width": W}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [{"id": i + 1, "video_id": 1, "category_id": c, "iscrowd": 0, "segmentations": track(m)}
                        for i, (c, m) in enumerate(anns)],
    }


def pred(cat, score, masks):
    return {"video_id": 1, "category_id": cat, "score": score, "segmentations": track(masks)}


SQ = box(0, 0, 12, 12)
SMALL = box(12, 12, 16, 16)


def test_perfect_predictions_give_one():
    gt = make_gt(3, [(1, [SQ, SQ, None]), (2, [None, SMALL, SMALL])])
    out = evaluate_frame_ap(gt, [pred(1, 0.9, [SQ, SQ, None]), pred(2, 0.8, [None, SMALL, SMALL])], extras=True)
    assert out["mAP_segm"] == pytest.approx(1.0) and out["mAP_bbox"] == pytest.approx(1.0)
    assert out["mAP_segm_50"] == pytest.approx(1.0) and out["mAP_bbox_75"] == pytest.approx(1.0)
    assert out["mAP_segm_m"] == -1  # no 32^2..96^2 GT: undefined


def test_missing_frame_halves_recall():
    # GT in 2 frames, prediction only in frame 0: precision 1 up to recall 0.5 -> 51 of 101 recall points
    gt = make_gt(2, [(1, [SQ, SQ])])
    out = evaluate_frame_ap(gt, [pred(1, 0.9, [SQ, None])])
    assert out["mAP_segm"] == pytest.approx(51 / 101) and out["mAP_bbox"] == pytest.approx(51 / 101)


def test_frame_level_differs_from_track_level():
    # frames with IoU 1 and 0 (different areas): track IoU 144/152 -> video AP 0.9;
    # frame level: one TP (frame 0) + one FP (frame 1) with the same score -> AP 51/101
    gt = make_gt(2, [(1, [SQ, box(12, 12, 14, 14)])])
    res = [pred(1, 0.9, [SQ, box(0, 14, 2, 16)])]
    assert evaluate_video_ap(gt, res)["AP"] == pytest.approx(0.9, abs=1e-9)
    out = evaluate_frame_ap(gt, res)
    assert out["mAP_segm"] == pytest.approx(51 / 101) and out["mAP_bbox"] == pytest.approx(51 / 101)


def test_empty_mask_frame_is_a_false_positive_null_is_none():
    gt = make_gt(1, [(1, [SQ])])
    empty = np.zeros((H, W), bool)
    # ranked: empty mask (0.95, FP), SQ (0.9, TP): precision 0, 1/2 at recall 0, 1 -> interpolated 1/2
    out = evaluate_frame_ap(gt, [pred(1, 0.95, [empty]), pred(1, 0.9, [SQ])])
    assert out["mAP_segm"] == pytest.approx(0.5) and out["mAP_bbox"] == pytest.approx(0.5)
    out = evaluate_frame_ap(gt, [pred(1, 0.95, [None]), pred(1, 0.9, [SQ])])
    assert out["mAP_segm"] == pytest.approx(1.0)


def test_gt_boxes_from_bboxes_field_when_given():
    gt = make_gt(1, [(1, [SQ])])
    gt["annotations"][0]["bboxes"] = [[14.0, 14.0, 2.0, 2.0]]  # a box unrelated to the mask
    out = evaluate_frame_ap(gt, [pred(1, 0.9, [SQ])])
    assert out["mAP_bbox"] == 0.0 and out["mAP_segm"] == pytest.approx(1.0)


def test_empty_predictions_and_bad_results():
    gt = make_gt(2, [(1, [SQ, SQ])])
    assert evaluate_frame_ap(gt, []) == {"mAP_bbox": 0.0, "mAP_segm": 0.0}
    bad = pred(1, float("nan"), [SQ, SQ])
    with pytest.raises(EvalInputError, match=r"\[0\].*score is nan"):
        evaluate_frame_ap(gt, [bad])
    bad = pred(1, 0.5, [SQ, SQ]) | {"video_id": 3}
    with pytest.raises(EvalInputError, match="unknown video_id 3"):
        evaluate_frame_ap(gt, [bad])
