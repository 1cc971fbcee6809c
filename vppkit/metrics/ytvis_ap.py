"""YouTube-VIS video AP: spatio-temporal mask IoU between whole tracks, COCO-style matching and PR curves.

Semantics follow the official YouTube-VIS API (``youtubevis/cocoapi`` ``PythonAPI/pycocotools/ytvoseval.py``,
a fork of pycocotools' ``COCOeval``) and DESIGN.md §4:

- a GT object is an annotation: one track over the whole video, per-frame segmentations, null where absent;
  a prediction is ``{video_id, category_id, score, segmentations}`` with per-frame RLE (or null);
- IoU(prediction, GT) = Σ_t |P_t ∩ G_t| / Σ_t |P_t ∪ G_t| (frames where both are null add nothing;
  0 when the union is empty);
- 10 IoU thresholds 0.50:0.05:0.95, 101 recall points, maxDets 1/10/100 *per video*;
- area ranges on the track's mean per-frame area over the frames where it is present (non-zero area):
  all [0, 1e5²], small [0, 128²], medium [128², 256²], large [256², 1e5²] (official ``Params.setDetParams``);
  GT areas come from the annotation's ``areas`` entry when given (official ``ytvos.py``), else the mask.

Matching, precision interpolation and the summary are pycocotools' own ``COCOeval.evaluate`` /
``accumulate`` / ``summarize``: :class:`TrackCOCOeval` only overrides the documented extension point
``computeIoU`` with the spatio-temporal IoU, and "images" are videos.

Deliberate difference from ``ytvoseval.py``: a crowd GT (``iscrowd=1``) is handled as in COCO, i.e. its
IoU with a prediction is Σ|P∩G| / Σ|P| (the official fork computes the plain IoU there); crowd GTs are
ignored in matching exactly as COCO does. YouTube-VIS itself has no crowd annotations.

Results are fractions in [0, 1]; -1 marks an undefined value (no GT in that category / area range), as
pycocotools does, and categories without GT are left out of the mean.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vppkit.metrics._ytvis_eval import (
    RLE,
    EvalInputError,
    GroundTruth,
    Track,
    parse_gt,
    parse_results,
    quiet,
    summary_stats,
)

__all__ = [
    "YTVIS_AREA_RANGES",
    "VIDEO_AP_KEYS",
    "EvalInputError",
    "GroundTruth",
    "Track",
    "TrackCOCOeval",
    "evaluate_video_ap",
    "load_results",
    "per_category_ap",
    "run_video_eval",
    "spatio_temporal_iou",
]

#: Official ytvoseval area ranges (pixels², on the mean per-frame area): all, small, medium, large.
YTVIS_AREA_RANGES = [[0.0, 1e5**2], [0.0, 128.0**2], [128.0**2, 256.0**2], [256.0**2, 1e5**2]]
#: Keys returned by :func:`evaluate_video_ap` (``summarize`` order of pycocotools).
VIDEO_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")
_EXTRA_KEYS = ("AR100", "ARs", "ARm", "ARl")


def spatio_temporal_iou(dts: Sequence[Sequence[RLE | None]], gts: Sequence[Sequence[RLE | None]],
                        iscrowd: Sequence[int | bool] | None = None) -> np.ndarray:
    """Spatio-temporal mask IoU between prediction tracks and GT tracks.

    IoU[d, g] = Σ_t |D_t ∩ G_t| / Σ_t |D_t ∪ G_t|, where a ``None`` frame is an empty mask; frames where
    both are ``None`` contribute nothing; 0 when the union is empty. For a crowd GT the denominator is
    Σ_t |D_t| (COCO's crowd rule). Intersections come from ``pycocotools.mask.iou`` with the crowd flag
    (|D∩G| / |D|) times |D|, rounded to whole pixels, so no mask is ever decoded.

    Args:
        dts: D tracks, each a list of T compressed RLEs or ``None``.
        gts: G tracks, each a list of T compressed RLEs or ``None``.
        iscrowd: G flags (default all 0).

    Returns:
        float64 array (D, G) in [0, 1].

    Raises:
        ValueError: tracks of different lengths, or ``iscrowd`` of the wrong length.

    Source: official ``ytvoseval.py`` ``computeIoU.iou_seq`` (same sums; crowd rule from COCO).
    """
    D, G = len(dts), len(gts)
    crowd = np.zeros(G, dtype=bool) if iscrowd is None else np.asarray(iscrowd, dtype=bool)
    if crowd.shape != (G,):
        raise ValueError(f"iscrowd has {crowd.size} flags for {G} GT tracks")
    lengths = {len(t) for t in list(dts) + list(gts)}
    if len(lengths) > 1:
        raise ValueError(f"tracks have different numbers of frames: {sorted(lengths)}")
    if D == 0 or G == 0:
        return np.zeros((D, G), dtype=np.float64)
    T = lengths.pop()
    inter = np.zeros((D, G))
    union = np.zeros((D, G))
    dt_total = np.zeros(D)
    for t in range(T):
        d_idx = [i for i in range(D) if dts[i][t] is not None]
        g_idx = [j for j in range(G) if gts[j][t] is not None]
        if d_idx:
            d_rles = [dts[i][t] for i in d_idx]
            a_d = np.asarray(mask_utils.area(d_rles), dtype=np.float64)
            union[d_idx, :] += a_d[:, None]
            dt_total[d_idx] += a_d
        if g_idx:
            g_rles = [gts[j][t] for j in g_idx]
            a_g = np.asarray(mask_utils.area(g_rles), dtype=np.float64)
            union[:, g_idx] += a_g[None, :]
        if d_idx and g_idx:
            ratio = np.asarray(mask_utils.iou(d_rles, g_rles, [1] * len(g_idx)), dtype=np.float64)
            it = np.rint(ratio * a_d[:, None])
            block = np.ix_(d_idx, g_idx)
            inter[block] += it
            union[block] -= it
    denom = union.copy()
    denom[:, crowd] = dt_total[:, None]
    return np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)


class TrackCOCOeval(COCOeval):
    """pycocotools ``COCOeval`` over videos: "images" are videos, annotations are whole tracks.

    Only ``computeIoU`` is overridden (spatio-temporal IoU, :func:`spatio_temporal_iou`); ``evaluate``,
    ``accumulate`` and ``summarize`` are pycocotools' own. The base class is built with
    ``iouType="bbox"`` purely so that its ``_prepare`` does not try to turn per-image ``segmentation``
    fields into masks (tracks have none); the IoU is the mask IoU above, never a box IoU. Area ranges are
    set to :data:`YTVIS_AREA_RANGES`.

    Args:
        coco_gt, coco_dt: ``COCO`` objects whose images are videos and whose annotations carry
            ``id`` (> 0), ``image_id`` (= video id), ``category_id``, ``area`` (mean per-frame area),
            ``iscrowd`` (GT) / ``score`` (predictions).
        gt_rles, dt_rles: per-frame RLE lists by annotation id.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, gt_rles: dict[int, list], dt_rles: dict[int, list]):
        super().__init__(coco_gt, coco_dt, iouType="bbox")
        self.params.areaRng = [list(r) for r in YTVIS_AREA_RANGES]
        self.params.areaRngLbl = ["all", "small", "medium", "large"]
        self.gt_rles = gt_rles
        self.dt_rles = dt_rles

    def computeIoU(self, imgId: int, catId: int) -> np.ndarray | list:  # noqa: N802 (pycocotools name)
        """IoU matrix (D, G) for one video and category; predictions sorted by score, cut at maxDets[-1]."""
        p = self.params
        if p.useCats:
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 or len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        return spatio_temporal_iou([self.dt_rles[d["id"]] for d in dt], [self.gt_rles[g["id"]] for g in gt],
                                   [int(g["iscrowd"]) for g in gt])


def load_results(results: Sequence[dict] | str | os.PathLike, gt: dict | str | os.PathLike | GroundTruth
                 ) -> list[Track]:
    """Load and validate YouTube-VIS results (a list or a results json path) against the ground truth.

    Args:
        results: list of ``{video_id, category_id, score, segmentations}``; ``segmentations`` has one
            entry per frame of the video: compressed RLE (str/bytes counts), uncompressed RLE (list
            counts), polygons, or null (absent).
        gt: YouTube-VIS ground truth (dict, json path, or an already parsed ``GroundTruth``).

    Returns:
        one ``Track`` per prediction (in input order) with compressed RLEs and per-frame areas.

    Raises:
        EvalInputError (a ValueError): naming the result index and video id: unknown ``video_id`` or
            ``category_id``, NaN/inf or non-numeric ``score``, wrong ``segmentations`` length or RLE size.
    """
    gt_parsed = gt if isinstance(gt, GroundTruth) else parse_gt(gt)
    return parse_results(results, gt_parsed)


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with quiet():
        coco.createIndex()
    return coco


def build_track_eval(gt: GroundTruth, preds: list[Track]) -> TrackCOCOeval:
    """Build (not run) the :class:`TrackCOCOeval` for parsed GT and predictions.

    Internal annotation ids are 1..N (pycocotools uses 0 for "unmatched"), so GT ids of 0 are safe.
    """
    images = [{"id": v.id, "height": v.height, "width": v.width} for v in gt.videos.values()]
    cats = [{"id": int(c["id"]), "name": c.get("name", str(c["id"]))} for c in gt.categories]
    gt_anns, gt_rles = [], {}
    for k, tr in enumerate(gt.tracks, start=1):
        gt_anns.append({"id": k, "image_id": tr.video_id, "category_id": tr.category_id,
                        "area": tr.mean_area(), "iscrowd": tr.iscrowd, "source_id": tr.key})
        gt_rles[k] = tr.rles
    dt_anns, dt_rles = [], {}
    for k, tr in enumerate(preds, start=1):
        dt_anns.append({"id": k, "image_id": tr.video_id, "category_id": tr.category_id,
                        "area": tr.mean_area(), "iscrowd": 0, "score": tr.score, "source_id": tr.key})
        dt_rles[k] = tr.rles
    return TrackCOCOeval(_coco(images, cats, gt_anns), _coco(images, cats, dt_anns), gt_rles, dt_rles)


def run_video_eval(gt: dict | str | os.PathLike | GroundTruth, results: Sequence[dict] | str | os.PathLike, *,
                   verbose: bool = False) -> TrackCOCOeval:
    """Build, ``evaluate()`` and ``accumulate()`` the :class:`TrackCOCOeval` (for per-category or PR-curve use).

    ``eval["precision"]`` is (T=10, R=101, K categories, A=4 areas, M=3 maxDets), -1 where undefined.

    Raises:
        EvalInputError (ValueError): bad ground truth or results, naming the file / id at fault.
    """
    gt_parsed = parse_gt(gt)
    preds = load_results(results, gt_parsed)
    evaluator = build_track_eval(gt_parsed, preds)
    if verbose:
        print("YouTube-VIS video AP: pycocotools prints iouType 'bbox' below; the IoU used is the "
              "spatio-temporal mask IoU of TrackCOCOeval.computeIoU")
    with quiet(verbose):
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def per_category_ap(coco_eval: COCOeval) -> dict[int, float]:
    """AP@[.5:.95] (all areas, largest maxDets) per category id of an accumulated ``COCOeval``; -1 = no GT.

    Works for :class:`TrackCOCOeval` (video AP) and plain pycocotools ``COCOeval`` (frame AP) alike; the
    mean of the values that are not -1 is the overall AP.
    """
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # (T, R, K)
    out = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k]
        out[int(cat_id)] = float(p[p > -1].mean()) if np.any(p > -1) else -1.0
    return out


def evaluate_video_ap(gt: dict | str | os.PathLike | GroundTruth,
                      results: Sequence[dict] | str | os.PathLike, *,
                      extras: bool = False, verbose: bool = False) -> dict[str, float]:
    """YouTube-VIS video AP of a results list / json against ground truth (DESIGN.md §4, official ytvoseval).

    Args:
        gt: YouTube-VIS ground truth dict or json path (paths go through ``vppkit.data.ytvis.load_ytvis``),
            or a ``GroundTruth`` already parsed by ``_ytvis_eval.parse_gt`` (to share it between metrics).
        results: YouTube-VIS results list or json path (see :func:`load_results`).
        extras: also return AR100, ARs, ARm, ARl.
        verbose: let pycocotools print its progress and summary table.

    Returns:
        ``{AP, AP50, AP75, APs, APm, APl, AR1, AR10}`` (+ extras) as fractions in [0, 1]; -1 where the
        value is undefined (no GT at all, or none in that area range), as pycocotools. With no predictions
        every defined value is 0. AP is the mean over categories that have GT.

    Raises:
        EvalInputError (ValueError): bad ground truth or results, naming the file / id at fault.
    """
    evaluator = run_video_eval(gt, results, verbose=verbose)
    stats = summary_stats(evaluator, verbose)
    keys = VIDEO_AP_KEYS + (_EXTRA_KEYS if extras else ())
    return {k: float(v) for k, v in zip(VIDEO_AP_KEYS + _EXTRA_KEYS, stats) if k in keys}
