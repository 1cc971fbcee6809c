"""Private helpers shared by the YouTube-VIS metrics: input checking, RLE handling, quiet pycocotools.

Both :mod:`vppkit.metrics.ytvis_ap` (video AP) and :mod:`vppkit.metrics.coco_frames` (frame-level COCO AP)
read the same two inputs, so they are parsed once here into plain records:

- :class:`VideoInfo` - one ground-truth video (id, number of frames, frame size);
- :class:`Track` - one ground-truth annotation or one prediction: a category, a score (predictions only),
  per-frame compressed RLEs (``None`` where the object is absent) and per-frame areas in pixels.

Masks go through ``pycocotools.mask`` only: polygons via ``frPyObjects`` + ``merge``, uncompressed RLE
(list counts) via ``frPyObjects``, compressed RLE (str or bytes counts) as is, ``None`` = absent.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from vppkit.data.ytvis import load_ytvis

RLE = dict  # compressed RLE: {"size": [H, W], "counts": bytes}


class EvalInputError(ValueError):
    """Bad ground truth or results given to a YouTube-VIS metric; the message names the file / id at fault."""


@dataclass(frozen=True)
class VideoInfo:
    """One ground-truth video: ``id``, ``length`` (frames), ``height`` and ``width`` (pixels)."""

    id: int
    length: int
    height: int
    width: int


@dataclass
class Track:
    """One object track over a whole video (a GT annotation or a prediction).

    Attributes:
        key: original identity for messages (GT annotation id, or index in the results list).
        video_id, category_id: as in the json.
        rles: per-frame compressed RLE or ``None`` (absent), length = video length.
        areas: float array (T,), mask area in pixels per frame (0 where absent).
        score: prediction confidence (``None`` for GT).
        iscrowd: COCO crowd flag (GT only; predictions are never crowd).
        bboxes: optional per-frame ``[x, y, w, h]`` given in the GT json (``None`` entries allowed).
    """

    key: Any
    video_id: int
    category_id: int
    rles: list[RLE | None]
    areas: np.ndarray
    score: float | None = None
    iscrowd: int = 0
    bboxes: list | None = None

    def mean_area(self) -> float:
        """Mean per-frame area over the frames with a non-zero area (official ``avg_area``; 0 if none)."""
        nz = self.areas[self.areas > 0]
        return float(nz.mean()) if nz.size else 0.0


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Swallow pycocotools' stdout prints (``creating index...``, ``DONE``) unless ``verbose``."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def to_rle(seg: Any, height: int, width: int, where: str) -> RLE | None:
    """Convert one per-frame segmentation to compressed RLE.

    Args:
        seg: ``None`` (absent), a compressed RLE dict (``counts`` str/bytes), an uncompressed RLE dict
            (``counts`` list of ints) or a list of polygons (COCO ``[[x1, y1, x2, y2, ...], ...]``).
        height, width: frame size of the video in pixels.
        where: context for error messages (file, video id, annotation id / result index, frame).

    Returns:
        ``{"size": [height, width], "counts": bytes}`` or ``None``.

    Raises:
        EvalInputError: unknown type, or an RLE whose ``size`` differs from (height, width).
    """
    if seg is None:
        return None
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise EvalInputError(f"{where}: RLE needs 'counts' and 'size', got keys {sorted(seg)}")
        size = [int(s) for s in seg["size"]]
        if size != [height, width]:
            raise EvalInputError(f"{where}: RLE size {size} != video frame size {[height, width]}")
        counts = seg["counts"]
        if isinstance(counts, list):
            return mask_utils.frPyObjects(seg, height, width)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if not isinstance(counts, bytes):
            raise EvalInputError(f"{where}: RLE counts must be str, bytes or list, got {type(counts).__name__}")
        return {"size": size, "counts": counts}
    if isinstance(seg, list):
        if len(seg) == 0:  # no polygon at all: an empty mask
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        try:
            return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        except Exception as exc:  # pycocotools raises bare Exception/TypeError on malformed polygons
            raise EvalInputError(f"{where}: malformed polygon segmentation ({exc})") from exc
    raise EvalInputError(f"{where}: segmentation must be null, an RLE dict or polygons, got {type(seg).__name__}")


def rle_areas(rles: Sequence[RLE | None]) -> np.ndarray:
    """Per-frame areas in pixels (float64, 0 where ``None``) of a list of RLEs; shape (T,)."""
    out = np.zeros(len(rles), dtype=np.float64)
    idx = [i for i, r in enumerate(rles) if r is not None]
    if idx:
        out[idx] = np.asarray(mask_utils.area([rles[i] for i in idx]), dtype=np.float64)
    return out


def load_gt_dict(gt: dict | str | os.PathLike) -> tuple[dict, str]:
    """Return ``(dataset dict, source name)``; paths are read with :func:`vppkit.data.ytvis.load_ytvis`."""
    if isinstance(gt, dict):
        return gt, "<gt dict>"
    if isinstance(gt, (str, os.PathLike)):
        return load_ytvis(gt), str(gt)
    raise EvalInputError(f"ground truth must be a dict or a path, got {type(gt).__name__}")


def _int_field(obj: dict, name: str, where: str) -> int:
    if name not in obj:
        raise EvalInputError(f"{where}: missing '{name}'")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise EvalInputError(f"{where}: '{name}' must be an integer, got {value!r}")
    return int(value)


@dataclass
class GroundTruth:
    """Parsed YouTube-VIS ground truth: videos by id, categories (json list) and GT tracks."""

    source: str
    videos: dict[int, VideoInfo]
    categories: list[dict]
    tracks: list[Track]


def parse_gt(gt: "dict | str | os.PathLike | GroundTruth") -> GroundTruth:
    """Parse a YouTube-VIS ground truth (dict or json path) into :class:`GroundTruth` (returned as is if parsed).

    Per-frame GT areas follow the official ``ytvos.py``: the annotation's ``areas`` entry where it is given
    (and not null), else the decoded mask area.

    Raises:
        EvalInputError: missing fields, duplicate ids, an annotation for an unknown video, a
            ``segmentations`` list whose length differs from the video length; the message names the
            source, the video id and the annotation id.
    """
    if isinstance(gt, GroundTruth):
        return gt
    ds, source = load_gt_dict(gt)
    for key in ("videos", "annotations", "categories"):
        if key not in ds or not isinstance(ds[key], list):
            raise EvalInputError(f"ground truth {source}: missing list '{key}'")
    videos: dict[int, VideoInfo] = {}
    for i, v in enumerate(ds["videos"]):
        where = f"ground truth {source}: videos[{i}]"
        vid = _int_field(v, "id", where)
        where = f"ground truth {source}: video id {vid}"
        if vid in videos:
            raise EvalInputError(f"{where}: duplicate video id")
        if "length" in v:
            length = _int_field(v, "length", where)
        elif "file_names" in v:
            length = len(v["file_names"])
        else:
            raise EvalInputError(f"{where}: needs 'length' or 'file_names'")
        videos[vid] = VideoInfo(vid, length, _int_field(v, "height", where), _int_field(v, "width", where))
    cat_ids = set()
    for i, c in enumerate(ds["categories"]):
        cid = _int_field(c, "id", f"ground truth {source}: categories[{i}]")
        if cid in cat_ids:
            raise EvalInputError(f"ground truth {source}: duplicate category id {cid}")
        cat_ids.add(cid)
    tracks: list[Track] = []
    ann_ids = set()
    for i, a in enumerate(ds["annotations"]):
        aid = _int_field(a, "id", f"ground truth {source}: annotations[{i}]")
        where = f"ground truth {source}: annotation id {aid}"
        if aid in ann_ids:
            raise EvalInputError(f"{where}: duplicate annotation id")
        ann_ids.add(aid)
        vid = _int_field(a, "video_id", where)
        if vid not in videos:
            raise EvalInputError(f"{where}: unknown video id {vid}")
        cid = _int_field(a, "category_id", where)
        if cid not in cat_ids:
            raise EvalInputError(f"{where}: unknown category id {cid}")
        info = videos[vid]
        segs = a.get("segmentations")
        if not isinstance(segs, list) or len(segs) != info.length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise EvalInputError(f"{where} (video id {vid}): 'segmentations' has {n} entries, video has "
                                 f"{info.length} frames")
        rles = [to_rle(s, info.height, info.width, f"{where} (video id {vid}) frame {t}")
                for t, s in enumerate(segs)]
        areas = rle_areas(rles)
        given = a.get("areas")
        if isinstance(given, list) and len(given) == info.length:
            for t, value in enumerate(given):
                if value is not None and rles[t] is not None:
                    areas[t] = float(value)
        bboxes = a.get("bboxes") if isinstance(a.get("bboxes"), list) else None
        if bboxes is not None and len(bboxes) != info.length:
            raise EvalInputError(f"{where} (video id {vid}): 'bboxes' has {len(bboxes)} entries, video has "
                                 f"{info.length} frames")
        tracks.append(Track(key=aid, video_id=vid, category_id=cid, rles=rles, areas=areas,
                            iscrowd=int(bool(a.get("iscrowd", 0))), bboxes=bboxes))
    return GroundTruth(source=source, videos=videos, categories=list(ds["categories"]), tracks=tracks)


def read_results_list(results: Sequence[dict] | str | os.PathLike) -> tuple[list, str]:
    """Return ``(list of result dicts, source name)`` from a list or a YouTube-VIS results json path."""
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise EvalInputError(f"results file {path} does not exist") from exc
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"results file {path}: not valid json ({exc})") from exc
        source = str(path)
    else:
        data, source = results, "<results list>"
    if not isinstance(data, list):
        raise EvalInputError(f"results {source}: expected a list of predictions, got {type(data).__name__}")
    return data, source


def parse_results(results: Sequence[dict] | str | os.PathLike, gt: GroundTruth) -> list[Track]:
    """Validate YouTube-VIS predictions against parsed ground truth; return one :class:`Track` each.

    Raises:
        EvalInputError: naming the result index and video id: missing keys, unknown ``video_id`` or
            ``category_id``, a non-finite or non-numeric ``score``, ``segmentations`` length != video
            length, an RLE of the wrong frame size.
    """
    data, source = read_results_list(results)
    cat_ids = {int(c["id"]) for c in gt.categories}
    tracks: list[Track] = []
    for i, r in enumerate(data):
        where = f"results {source}[{i}]"
        if not isinstance(r, dict):
            raise EvalInputError(f"{where}: expected a dict, got {type(r).__name__}")
        missing = [k for k in ("video_id", "category_id", "score", "segmentations") if k not in r]
        if missing:
            raise EvalInputError(f"{where}: missing keys {missing}")
        vid = _int_field(r, "video_id", where)
        if vid not in gt.videos:
            raise EvalInputError(f"{where}: unknown video_id {vid} (not in ground truth {gt.source})")
        where = f"{where} (video_id {vid})"
        cid = _int_field(r, "category_id", where)
        if cid not in cat_ids:
            raise EvalInputError(f"{where}: unknown category_id {cid} (not in ground truth {gt.source})")
        score = r["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float, np.number)):
            raise EvalInputError(f"{where}: score must be a number, got {score!r}")
        if not math.isfinite(float(score)):
            raise EvalInputError(f"{where}: score is {score} (must be finite)")
        info = gt.videos[vid]
        segs = r["segmentations"]
        if not isinstance(segs, list) or len(segs) != info.length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise EvalInputError(f"{where}: 'segmentations' has {n} entries, video has {info.length} frames")
        rles = [to_rle(s, info.height, info.width, f"{where} frame {t}") for t, s in enumerate(segs)]
        tracks.append(Track(key=i, video_id=vid, category_id=cid, rles=rles, areas=rle_areas(rles),
                            score=float(score)))
    return tracks


def summary_stats(coco_eval: Any, verbose: bool = False) -> np.ndarray:
    """Run ``summarize()`` of an evaluated + accumulated ``COCOeval`` quietly; return its 12 ``stats``.

    Order (pycocotools): AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl; -1 = undefined.
    """
    with quiet(verbose):
        coco_eval.summarize()
    return np.asarray(coco_eval.stats, dtype=np.float64)
