"""Frame-level COCO AP of video predictions: mAP_bbox and mAP_segm (VPP's ``CocoMetric_CovertVideo2Image``).

VPP reports, next to the YouTube-VIS track AP, the COCO AP obtained by treating every frame as an image
(``papers/vpp-notes.md`` §8.1): each video is expanded into frames, the GT of a frame is every annotation
with a mask in that frame, and the predictions of a frame are the per-frame masks of the predicted tracks,
each carrying its track score. pycocotools' ``COCOeval`` then runs unchanged for ``bbox`` and ``segm``
(standard COCO parameters: area ranges 32² / 96² on the per-frame area, maxDets 1/10/100 per frame).

Rules (documented choices where the official code is not available):

- a prediction frame with ``null`` is no detection; a non-null frame is a detection even when the mask is
  empty (it then matches nothing and counts as a false positive), its box is ``pycocotools.mask.toBbox``;
- a GT frame with ``null`` or an all-zero mask is absent (YouTube-VIS marks absence with null; a zero-area
  GT could never be matched); GT boxes come from the annotation's ``bboxes`` when given, else from the
  mask; GT areas from ``areas`` when given, else from the mask;
- crowd GTs keep ``iscrowd`` (ignored regions as in COCO).

Values are fractions in [0, 1]; -1 where undefined (no GT), as pycocotools.
"""

from __future__ import annotations

import os
from typing import Sequence

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vppkit.metrics._ytvis_eval import GroundTruth, Track, parse_gt, parse_results, quiet, summary_stats

__all__ = ["FRAME_AP_KEYS", "evaluate_frame_ap", "frames_to_coco"]

#: Keys always returned by :func:`evaluate_frame_ap`.
FRAME_AP_KEYS = ("mAP_bbox", "mAP_segm")
_SUFFIXES = ("", "_50", "_75", "_s", "_m", "_l")  # summarize() stats 0..5


def frames_to_coco(gt: GroundTruth, preds: Sequence[Track]) -> tuple[COCO, COCO]:
    """Expand videos into per-frame COCO ground truth and detections.

    Image ids are 1..F in (video order of the GT json, frame index) order; annotation ids are 1..N.

    Returns:
        (coco_gt, coco_dt) ``pycocotools.coco.COCO`` objects; annotations carry ``segmentation`` (compressed
        RLE), ``bbox`` [x, y, w, h] in pixels, ``area`` in pixels, ``iscrowd`` and (detections) ``score``.
    """
    image_id: dict[tuple[int, int], int] = {}
    images = []
    for v in gt.videos.values():
        for t in range(v.length):
            image_id[v.id, t] = len(images) + 1
            images.append({"id": len(images) + 1, "height": v.height, "width": v.width,
                           "video_id": v.id, "frame_id": t})
    cats = [{"id": int(c["id"]), "name": c.get("name", str(c["id"]))} for c in gt.categories]

    gt_anns = []
    for tr in gt.tracks:
        for t, rle in enumerate(tr.rles):
            if rle is None or tr.areas[t] <= 0:
                continue
            box = tr.bboxes[t] if tr.bboxes is not None and tr.bboxes[t] is not None else None
            if box is None:
                box = mask_utils.toBbox(rle).tolist()
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id[tr.video_id, t],
                            "category_id": tr.category_id, "segmentation": rle,
                            "bbox": [float(b) for b in box], "area": float(tr.areas[t]), "iscrowd": tr.iscrowd})
    dt_anns = []
    for tr in preds:
        for t, rle in enumerate(tr.rles):
            if rle is None:
                continue
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": image_id[tr.video_id, t],
                            "category_id": tr.category_id, "segmentation": rle,
                            "bbox": mask_utils.toBbox(rle).tolist(), "area": float(tr.areas[t]),
                            "iscrowd": 0, "score": tr.score})

    def build(anns: list[dict]) -> COCO:
        coco = COCO()
        coco.dataset = {"images": images, "categories": cats, "annotations": anns}
        with quiet():
            coco.createIndex()
        return coco

    return build(gt_anns), build(dt_anns)


def evaluate_frame_ap(gt: dict | str | os.PathLike | GroundTruth,
                      results: Sequence[dict] | str | os.PathLike, *,
                      extras: bool = False, verbose: bool = False) -> dict[str, float]:
    """Frame-level COCO mAP_bbox / mAP_segm (AP@[.5:.95], all areas, maxDets 100) of YouTube-VIS results.

    Args:
        gt: YouTube-VIS ground truth dict or json path (or a parsed ``GroundTruth``).
        results: YouTube-VIS results list or json path (validated as in
            :func:`vppkit.metrics.ytvis_ap.load_results`).
        extras: also return ``mAP_{bbox,segm}_{50,75,s,m,l}`` (AP50, AP75 and the COCO area ranges).
        verbose: let pycocotools print.

    Returns:
        ``{mAP_bbox, mAP_segm}`` (+ extras), fractions in [0, 1], -1 where undefined.

    Raises:
        EvalInputError (ValueError): bad ground truth or results, naming the file / id at fault.

    Source: VPP config metric ``CocoMetric_CovertVideo2Image`` (``papers/vpp-notes.md`` §8.1).
    """
    gt_parsed = parse_gt(gt)
    preds = parse_results(results, gt_parsed)
    coco_gt, coco_dt = frames_to_coco(gt_parsed, preds)
    out: dict[str, float] = {}
    for iou_type in ("bbox", "segm"):
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        with quiet(verbose):
            evaluator.evaluate()
            evaluator.accumulate()
        stats = summary_stats(evaluator, verbose)
        for i, suffix in enumerate(_SUFFIXES):
            if suffix == "" or extras:
                out[f"mAP_{iou_type}{suffix}"] = float(stats[i])
    return out

