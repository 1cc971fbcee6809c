"""DAVIS folder -> YouTube-VIS dict (class-agnostic: one category, id 1 "object").

DAVIS layout (Perazzi et al., CVPR 2016; Pont-Tuset et al., 2017)::

    <root>/JPEGImages/<res>/<seq>/%05d.jpg
    <root>/Annotations/<res>/<seq>/%05d.png
    <root>/ImageSets/<res>/<split>.txt     lines "/JPEGImages/<res>/<seq>/00000.jpg /Annotations/<res>/<seq>/00000.png"

Mask PNGs are read through :func:`read_davis_labels`:

- DAVIS-2016: binary masks (0 / 255, mode 'L' or '1') -> one object (label 1).
- DAVIS-2017: palette PNGs (mode 'P'), the palette index is the object id (0 = background,
  255 = void / ignored) -> one instance per object id.
- The quirk of DAVIS-2016 ``Annotations/480p/bear/00077.png`` (a two-channel 'LA' PNG) is handled by
  taking the L channel; 'RGB(A)' masks are read as "any non-zero channel = foreground".

Each (sequence, object id) becomes one YouTube-VIS annotation; frames where the object is absent get a
``null`` segmentation / bbox / area. ``file_names`` are relative to ``<root>/JPEGImages/<res>``, which is
also stored (absolute) in ``info.frames_root``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vppkit.data.ytvis import encode_mask, mask_bbox

__all__ = ["davis_to_ytvis", "read_davis_labels", "read_imageset", "DAVIS_CATEGORY", "VOID_LABEL"]

DAVIS_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
VOID_LABEL = 255


def read_davis_labels(path: str | os.PathLike, binary: bool | None = None) -> np.ndarray:
    """Read a DAVIS annotation PNG as a (H, W) uint8 label map (0 = background, 255 = void).

    Args:
        path: the PNG.
        binary: True for DAVIS-2016 (every non-zero pixel is object 1), False for DAVIS-2017 object ids,
            None = decide by PNG mode ('P' -> object ids, anything else -> binary).

    Raises:
        ValueError: an image mode this reader does not know (named with the path).
    """
    path = Path(path)
    with Image.open(path) as im:
        mode = im.mode
        if mode == "P":
            labels = np.array(im)  # palette indices = object ids
        elif mode in ("L", "1", "I", "I;16"):
            labels = np.array(im)
        elif mode == "LA":
            labels = np.array(im.getchannel("L"))
        elif mode in ("RGB", "RGBA"):
            labels = np.array(im.convert("RGB")).max(axis=2)
        else:
            raise ValueError(f"{path}: unsupported annotation PNG mode {mode!r}")
    if binary is None:
        binary = mode != "P"
    if binary:
        return (labels != 0).astype(np.uint8)
    return labels.astype(np.uint8)


def read_imageset(root: Path, split: str, res: str) -> "OrderedDict[str, list[tuple[str, str]]]":
    """Parse ``ImageSets/<res>/<split>.txt`` -> {sequence: [(jpeg relative path, png relative path), ...]}.

    Paths are relative to ``root``. Raises FileNotFoundError / ValueError naming the list file and line.
    """
    list_file = root / "ImageSets" / res / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"DAVIS image set {list_file} not found (root={root}, split={split}, res={res})")
    seqs: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{list_file}:{n}: expected '<jpeg path> <png path>', got {line!r}")
        jpg, png = (p.lstrip("/") for p in parts)
        jparts = Path(jpg).parts
        if len(jparts) < 4 or jparts[0] != "JPEGImages":
            raise ValueError(f"{list_file}:{n}: frame path {parts[0]!r} is not /JPEGImages/<res>/<seq>/<frame>")
        seqs.setdefault(jparts[-2], []).append((jpg, png))
    return seqs


def davis_to_ytvis(root: str | os.PathLike, split: str, res: str = "240p", binary: bool | None = None,
                   progress: bool = True) -> dict:
    """Convert a DAVIS split to a YouTube-VIS dict (class-agnostic, category id 1 "object").

    Args:
        root: DAVIS folder (contains ``JPEGImages``, ``Annotations``, ``ImageSets``).
        split: image-set name, e.g. ``train`` / ``val``.
        res: resolution folder name (``480p``, or ``240p`` for the shared subset).
        binary: see :func:`read_davis_labels` (None = by PNG mode).
        progress: tqdm bar over frames.

    Returns:
        YouTube-VIS dict: one video per sequence (video ids 1.. in list order, ``name`` = sequence),
        one annotation per (sequence, object id) with per-frame RLE / bbox / area or null.

    Raises:
        FileNotFoundError: missing list file, frame or annotation PNG (named).
        ValueError: a mask whose size differs from its frame (named), bad list lines.
    """
    root = Path(root)
    seqs = read_imageset(root, split, res)
    frames_root = root / "JPEGImages" / res
    videos, annotations = [], []
    total = sum(len(v) for v in seqs.values())
    bar = tqdm(total=total, desc=f"DAVIS {split} -> YTVIS", unit="frame", disable=not progress)
    for vid_id, (seq, frames) in enumerate(seqs.items(), 1):
        first = root / frames[0][0]
        if not first.is_file():
            raise FileNotFoundError(f"DAVIS frame {first} (sequence {seq}) not found")
        with Image.open(first) as im:
            width, height = im.size
        file_names, label_maps = [], []
        for jpg, png in frames:
            jpg_path, png_path = root / jpg, root / png
            if not jpg_path.is_file():
                raise FileNotFoundError(f"DAVIS frame {jpg_path} (sequence {seq}) not found")
            if not png_path.is_file():
                raise FileNotFoundError(f"DAVIS annotation {png_path} (sequence {seq}) not found")
            labels = read_davis_labels(png_path, binary=binary)
            if labels.shape != (height, width):
                raise ValueError(f"{png_path}: mask is {labels.shape[0]}x{labels.shape[1]}, "
                                 f"frames of sequence {seq} are {height}x{width}")
            file_names.append(Path(jpg_path).relative_to(frames_root).as_posix())
            label_maps.append(labels)
            bar.update(1)
        videos.append({"id": vid_id, "name": seq, "file_names": file_names, "height": height, "width": width,
                       "length": len(file_names)})
        object_ids = sorted(set(np.unique(np.stack(label_maps)).tolist()) - {0, VOID_LABEL})
        for obj in object_ids:
            segs, boxes, areas = [], [], []
            for labels in label_maps:
                m = labels == obj
                if m.any():
                    segs.append(encode_mask(m))
                    boxes.append(mask_bbox(m))
                    areas.append(float(m.sum()))
                else:
                    segs.append(None)
                    boxes.append(None)
                    areas.append(None)
            annotations.append({"id": len(annotations) + 1, "video_id": vid_id, "category_id": DAVIS_CATEGORY["id"],
                                "iscrowd": 0, "davis_object_id": int(obj), "segmentations": segs,
                                "bboxes": boxes, "areas": areas})
    bar.close()
    return {"info": {"description": f"DAVIS {split} ({res}) converted by vppkit, class-agnostic",
                     "frames_root": str(frames_root.resolve())},
            "licenses": [], "videos": videos, "annotations": annotations, "categories": [dict(DAVIS_CATEGORY)]}
