"""YouTube-VIS annotation files: load, validate, save; masks through pycocotools.

The YouTube-VIS 2019 / 2021 schema (the official ``youtube_vis_20xx_{train,valid}.json``)::

    {"videos":      [{"id", "file_names": [str, ...], "height", "width", "length"}, ...],
     "annotations": [{"id", "video_id", "category_id", "iscrowd",
                      "segmentations": [RLE | polygons | null per frame],
                      "bboxes": [[x, y, w, h] | null per frame], "areas": [float | null per frame]}, ...],
     "categories":  [{"id", "name", "supercategory"?}, ...],
     "info"?, "licenses"?}

A per-frame segmentation is a COCO RLE dict ``{"size": [h, w], "counts": str | list[int]}``
(compressed string, or uncompressed run lengths in column-major order), a list of polygons
``[[x0, y0, x1, y1, ...], ...]``, or ``null`` when the instance is absent from that frame.

vppkit extension (optional, ignored by other tools): ``info.frames_root`` -- where the frames live;
an absolute path, or a path relative to the json file's folder (see :func:`resolve_frames_root`).

Masks are decoded and encoded by :mod:`pycocotools.mask`. pycocotools does not check RLE strings
(a truncated string decodes to garbage), so :func:`validate_ytvis` parses the run lengths itself
(:func:`rle_counts`) and checks that they cover exactly ``h * w`` pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pycocotools import mask as mask_utils

from vppkit.utils.io import atomic_write_json

__all__ = [
    "YTVISFormatError",
    "load_ytvis",
    "validate_ytvis",
    "save_ytvis",
    "decode_segmentation",
    "encode_mask",
    "rle_counts",
    "category_index",
    "annotations_by_video",
    "resolve_frames_root",
    "subset_frames",
    "mask_bbox",
]

VIDEO_KEYS = ("id", "file_names", "height", "width", "length")
ANNOTATION_KEYS = ("id", "video_id", "category_id", "segmentations")
CATEGORY_KEYS = ("id", "name")


class YTVISFormatError(ValueError):
    """A YouTube-VIS file (or dict) breaks the schema; the message names the source and the id at fault."""


# ----------------------------------------------------------------------------------------------- masks


def rle_counts(counts: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string.

    Follows ``rleFrString`` of the COCO API (``maskApi.c``): 6-bit groups offset by 48, bit 5 is the
    continuation flag, the last group's bit 4 the sign, and from the third run on each count is stored
    as the difference to the count two runs earlier.

    Args:
        counts: the ``counts`` string of a compressed RLE.

    Returns:
        The run lengths (alternating background / foreground, starting with background).

    Raises:
        ValueError: a character outside the RLE alphabet or a truncated last run.
    """
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    out: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("truncated RLE string (last run has its continuation bit set)")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} is not in the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _check_rle(seg: dict, height: int, width: int) -> dict:
    """Return a compressed pycocotools RLE for ``seg`` after checking size and run lengths (ValueError)."""
    size = seg.get("size")
    counts = seg.get("counts")
    if size is None or counts is None:
        raise ValueError("RLE must have 'size' and 'counts'")
    if list(size) != [height, width]:
        raise ValueError(f"RLE size {list(size)} != video height/width [{height}, {width}]")
    if isinstance(counts, list):
        runs = counts
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in runs):
            raise ValueError("uncompressed RLE counts must be integers")
    elif isinstance(counts, (str, bytes)):
        runs = rle_counts(counts)
    else:
        raise ValueError(f"RLE counts must be a string or a list of ints, got {type(counts).__name__}")
    if any(c < 0 for c in runs):
        raise ValueError("RLE has a negative run length")
    if sum(runs) != height * width:
        raise ValueError(f"RLE run lengths sum to {sum(runs)}, expected height*width = {height * width}")
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [height, width], "counts": list(map(int, runs))}, height, width)
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _check_polygons(seg: list, height: int, width: int) -> list:
    if not seg:
        raise ValueError("empty polygon list (use null for an absent instance)")
    for poly in seg:
        if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
            raise ValueError("each polygon must be a flat list [x0, y0, x1, y1, ...] of >= 3 points")
        if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in poly):
            raise ValueError("polygon coordinates must be finite numbers")
    return mask_utils.frPyObjects([list(map(float, p)) for p in seg], height, width)


def decode_segmentation(seg: dict | list | None, height: int, width: int) -> np.ndarray | None:
    """Decode one per-frame segmentation to a bool mask.

    Args:
        seg: RLE dict (compressed ``counts`` string or uncompressed list), polygon list, or None.
        height, width: the video's frame size in pixels.

    Returns:
        (height, width) bool array, or None when ``seg`` is None (instance absent from the frame).

    Raises:
        ValueError: malformed RLE / polygons, or an RLE whose size differs from (height, width).
    """
    if seg is None:
        return None
    if isinstance(seg, dict):
        rle = _check_rle(seg, height, width)
        return mask_utils.decode(rle).astype(bool)
    if isinstance(seg, list):
        rles = _check_polygons(seg, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    raise ValueError(f"segmentation must be an RLE dict, a polygon list or null, got {type(seg).__name__}")


def encode_mask(mask: np.ndarray) -> dict:
    """Encode a (H, W) bool / 0-1 mask as a compressed COCO RLE with ``counts`` as str (JSON-ready).

    Raises:
        ValueError: ``mask`` is not 2-D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode_mask expects a (H, W) mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_bbox(mask: np.ndarray) -> list[float] | None:
    """COCO box [x, y, w, h] (pixels) of a (H, W) bool mask; None when the mask is empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


# ----------------------------------------------------------------------------------------------- dataset


def _fail(source: str, where: str, msg: str) -> YTVISFormatError:
    return YTVISFormatError(f"{source}: {where}: {msg}")


def _require_keys(obj: Any, keys: Iterable[str], source: str, where: str) -> None:
    if not isinstance(obj, dict):
        raise _fail(source, where, f"expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise _fail(source, where, f"missing key(s) {missing}")


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return h, w


def validate_ytvis(ds: dict, frames_root: str | os.PathLike | None = None, source: str = "<dict>",
                   check_masks: bool = True, progress: bool = False) -> None:
    """Check a YouTube-VIS dict against the schema; raise on the first problem.

    Checks: top-level / per-record keys; duplicate video, annotation and category ids; ``length`` and
    ``file_names`` agree; every annotation names a known video and category; per-frame lists
    (``segmentations``, and ``bboxes`` / ``areas`` when present) have one entry per frame; every RLE /
    polygon is well-formed (run lengths parsed, sum = height * width) and its size equals the video's
    height / width. With ``frames_root``: every frame file exists and its image size equals the declared
    height / width (reads only the image header).

    Args:
        ds: the parsed json.
        frames_root: folder that ``file_names`` are relative to, or None to skip file checks.
        source: name used in messages (the json path when called by :func:`load_ytvis`).
        check_masks: decode-check every segmentation (the slow part on full YouTube-VIS).
        progress: show a tqdm bar over annotations.

    Raises:
        YTVISFormatError: naming ``source`` and the video / annotation / category id at fault.
    """
    _require_keys(ds, ("videos", "annotations", "categories"), source, "top level")
    for key in ("videos", "annotations", "categories"):
        if not isinstance(ds[key], list):
            raise _fail(source, "top level", f"'{key}' must be a list")

    categories: set = set()
    for i, cat in enumerate(ds["categories"]):
        _require_keys(cat, CATEGORY_KEYS, source, f"category #{i} (id {cat.get('id') if isinstance(cat, dict) else '?'})")
        if cat["id"] in categories:
            raise _fail(source, f"category id {cat['id']}", "duplicate category id")
        categories.add(cat["id"])

    videos: dict = {}
    for i, vid in enumerate(ds["videos"]):
        where = f"video #{i} (id {vid.get('id') if isinstance(vid, dict) else '?'})"
        _require_keys(vid, VIDEO_KEYS, source, where)
        where = f"video id {vid['id']}"
        if vid["id"] in videos:
            raise _fail(source, where, "duplicate video id")
        if not isinstance(vid["file_names"], list) or len(vid["file_names"]) != vid["length"]:
            n = len(vid["file_names"]) if isinstance(vid["file_names"], list) else "non-list"
            raise _fail(source, where, f"file_names has {n} entries but length = {vid['length']}")
        if int(vid["height"]) <= 0 or int(vid["width"]) <= 0:
            raise _fail(source, where, f"invalid frame size {vid['height']}x{vid['width']}")
        videos[vid["id"]] = vid
        if frames_root is not None:
            _check_frames(vid, Path(frames_root), source, where)

    seen: set = set()
    anns = ds["annotations"]
    if progress:
        from tqdm import tqdm

        anns = tqdm(anns, desc="validate annotations", unit="ann")
    for i, ann in enumerate(anns):
        _require_keys(ann, ANNOTATION_KEYS, source,
                      f"annotation #{i} (id {ann.get('id') if isinstance(ann, dict) else '?'})")
        where = f"annotation id {ann['id']} (video id {ann['video_id']})"
        if ann["id"] in seen:
            raise _fail(source, where, "duplicate annotation id")
        seen.add(ann["id"])
        vid = videos.get(ann["video_id"])
        if vid is None:
            raise _fail(source, where, f"annotation for unknown video id {ann['video_id']}")
        if ann["category_id"] not in categories:
            raise _fail(source, where, f"unknown category id {ann['category_id']}")
        length, h, w = int(vid["length"]), int(vid["height"]), int(vid["width"])
        for key in ("segmentations", "bboxes", "areas"):
            if key in ann and (not isinstance(ann[key], list) or len(ann[key]) != length):
                n = len(ann[key]) if isinstance(ann[key], list) else "non-list"
                raise _fail(source, where, f"'{key}' has {n} entries but the video has length {length}")
        if check_masks:
            for t, seg in enumerate(ann["segmentations"]):
                try:
                    decode_segmentation(seg, h, w)
                except Exception as e:  # noqa: BLE001 - pycocotools raises ValueError, TypeError or bare Exception
                    raise _fail(source, f"{where}, frame {t}", f"invalid segmentation: {e}") from e


def _check_frames(vid: dict, root: Path, source: str, where: str) -> None:
    for t, name in enumerate(vid["file_names"]):
        path = root / name
        if not path.is_file():
            raise _fail(source, where, f"missing frame file {path} (frame {t})")
        h, w = _image_size(path)
        if (h, w) != (int(vid["height"]), int(vid["width"])):
            raise _fail(source, where, f"frame {path} is {h}x{w} (HxW), declared {vid['height']}x{vid['width']}")


def load_ytvis(path: str | os.PathLike, frames_root: str | os.PathLike | None = None, validate: bool = True,
               check_masks: bool = True) -> dict:
    """Read a YouTube-VIS json.

    Args:
        path: the json file.
        frames_root: when given (and ``validate``), also check frame files and their sizes.
        validate: run :func:`validate_ytvis` (errors name ``path``).
        check_masks: passed to :func:`validate_ytvis`.

    Returns:
        The parsed dict, unchanged.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        YTVISFormatError: not valid JSON, or a schema error (see :func:`validate_ytvis`).
    """
    path = Path(path)
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise YTVISFormatError(f"{path}: not valid JSON: {e}") from e
    if validate:
        validate_ytvis(ds, frames_root=frames_root, source=str(path), check_masks=check_masks)
    return ds


def save_ytvis(ds: dict, path: str | os.PathLike, validate: bool = True) -> Path:
    """Write a YouTube-VIS dict as json (atomically, through :mod:`vppkit.utils.io`).

    RLE ``counts`` given as bytes are written as str. Raises :class:`YTVISFormatError` first if
    ``validate`` and the dict is invalid (nothing is written then).
    """
    if validate:
        validate_ytvis(ds, source=f"save_ytvis({path})")
    return atomic_write_json(path, _jsonable(ds), indent=None)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    return obj


# ----------------------------------------------------------------------------------------------- helpers


def category_index(ds: dict) -> dict[int, int]:
    """Map category id -> contiguous 0-based class index (categories sorted by id)."""
    return {cid: i for i, cid in enumerate(sorted(c["id"] for c in ds["categories"]))}


def annotations_by_video(ds: dict) -> dict[Any, list[dict]]:
    """Annotations grouped by video id (every video present, in annotation-id order)."""
    out: dict[Any, list[dict]] = {v["id"]: [] for v in ds["videos"]}
    for ann in sorted(ds["annotations"], key=lambda a: a["id"]):
        out.setdefault(ann["video_id"], []).append(ann)
    return out


def resolve_frames_root(ds: dict, json_path: str | os.PathLike | None = None) -> Path | None:
    """Frames folder named by the vppkit extension ``info.frames_root`` (relative to the json's folder).

    Returns None when the dict carries no such entry.
    """
    root = (ds.get("info") or {}).get("frames_root")
    if root is None:
        return None
    root = Path(root)
    if not root.is_absolute() and json_path is not None:
        root = Path(json_path).parent / root
    return root


def subset_frames(ds: dict, videos: dict[int, list[int]]) -> dict:
    """Ground truth restricted to some videos and frames (video AP of results computed on a frame subset).

    Args:
        ds: YouTube-VIS dict.
        videos: video id -> kept frame indices (in the order the results list them).

    Returns:
        a new dict: those videos, with every per-frame list (``file_names``, ``segmentations``, ``areas``,
        ``bboxes``) subset and ``length`` updated; annotations of other videos dropped; other top-level keys kept.
    """
    out = {k: v for k, v in ds.items() if k not in ("videos", "annotations")}
    out["videos"], out["annotations"] = [], []
    for v in ds["videos"]:
        if v["id"] in videos:
            ts = videos[v["id"]]
            out["videos"].append(dict(v, file_names=[v["file_names"][t] for t in ts], length=len(ts)))
    for a in ds["annotations"]:
        if a["video_id"] in videos:
            ts = videos[a["video_id"]]
            na = dict(a)
            for key in ("segmentations", "areas", "bboxes"):
                if isinstance(a.get(key), list):
                    na[key] = [a[key][t] for t in ts]
            out["annotations"].append(na)
    return out
