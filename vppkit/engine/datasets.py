"""Which data a profile trains / evaluates on, and the frame-level reading the engine needs.

:func:`resolve_split` turns the config's ``data`` section into a YouTube-VIS json + frames folder:

- ``source: synthetic``: generated on first use under ``cache_dir()/synthetic/<split>-<hash>`` with
  :func:`vppkit.data.synthetic.generate_synthetic` (train: ``data.seed``, val: ``data.val_seed``);
- ``source: davis``: ``data.root`` (or :func:`vppkit.utils.paths.davis_root`) converted once with
  :func:`vppkit.data.davis.davis_to_ytvis` (class-agnostic) to ``cache_dir()/davis/<split>-<hash>.json``;
- ``source: ytvis``: ``data.<split>_json`` and ``data.<split>_frames`` (paths, relative to ``data.root``).

:class:`VideoFrames` reads frames and instance masks of one dataset, resized to the model input size
(bilinear for images, nearest for masks); decoded frames of small sets are kept in memory (``cache=True``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vppkit.config import config_hash
from vppkit.data.ytvis import (annotations_by_video, category_index, decode_segmentation, load_ytvis,
                               resolve_frames_root, save_ytvis)
from vppkit.utils.paths import cache_dir, davis_root


def resolve_split(dcfg: dict, split: str, progress: bool = False) -> tuple[Path, Path]:
    """(json path, frames root) of ``split`` ("train" / "val") for the ``data`` config section.

    Raises:
        ValueError: unknown ``data.source``.
        FileNotFoundError: a configured path does not exist (named).
    """
    source = dcfg.get("source", "synthetic")
    if source == "synthetic":
        from vppkit.data.synthetic import GENERATOR_VERSION, JSON_NAME, generate_synthetic

        key = "num_videos" if split == "train" else "num_val_videos"
        args = dict(num_videos=int(dcfg.get(key, dcfg.get("num_videos", 4))),
                    seed=int(dcfg.get("seed", 0) if split == "train" else dcfg.get("val_seed", 1000)),
                    num_frames=int(dcfg.get("num_frames", 16)), height=int(dcfg.get("height", 192)),
                    width=int(dcfg.get("width", 192)))
        # the generator version is part of the key: a changed generator never reuses stale cached frames
        out = cache_dir() / "synthetic" / f"{split}-{config_hash({**args, 'generator': GENERATOR_VERSION})}"
        js = out / JSON_NAME
        if not js.exists():
            generate_synthetic(out, progress=progress, **args)
        return js, out / "JPEGImages"
    if source == "davis":
        from vppkit.data.davis import davis_to_ytvis

        root = Path(dcfg.get("root") or davis_root())
        if not (root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"DAVIS folder {root} has no JPEGImages/ (set data.root or DATA=...)")
        res = dcfg.get("res", "240p")
        dsplit = dcfg.get(f"{split}_split", split)
        js = cache_dir() / "davis" / f"{dsplit}-{config_hash({'root': str(root.resolve()), 'res': res})}.json"
        if not js.exists():
            ds = davis_to_ytvis(root, dsplit, res=res, progress=progress)
            ds.setdefault("info", {})["frames_root"] = str((root / "JPEGImages" / res).resolve())
            save_ytvis(ds, js)
        return js, root / "JPEGImages" / res
    if source == "ytvis":
        root = Path(dcfg.get("root") or ".")
        js, frames = root / dcfg[f"{split}_json"], root / dcfg[f"{split}_frames"]
        for p in (js, frames):
            if not p.exists():
                raise FileNotFoundError(f"YouTube-VIS {split} path {p} not found (data.root={root})")
        return js, frames
    raise ValueError(f"unknown data.source {source!r} (synthetic, davis, ytvis)")


def _size(img_size) -> tuple[int, int]:
    return (int(img_size[0]), int(img_size[1])) if isinstance(img_size, (list, tuple)) else (int(img_size),) * 2


class VideoFrames:
    """Frames and masks of one YouTube-VIS set at the model input size.

    Args:
        json_path: YouTube-VIS json.
        frames_root: frames folder (None: ``info.frames_root`` of the json).
        img_size: model input (H, W) or int.
        cache: keep decoded, resized frames in memory.

    Attributes:
        ds: the dataset dict; ``videos`` its video list; ``category_ids`` the dataset category ids of the model's
        classes 0..C−1 (sorted).
    """

    def __init__(self, json_path: str | Path, frames_root: str | Path | None, img_size, cache: bool = True) -> None:
        self.json_path = Path(json_path)
        self.ds = load_ytvis(self.json_path, validate=True, check_masks=False)
        root = frames_root or resolve_frames_root(self.ds, self.json_path)
        if root is None:
            raise ValueError(f"{self.json_path}: no frames root given and no info.frames_root in the json")
        self.frames_root = Path(root)
        self.size = _size(img_size)
        self.videos = self.ds["videos"]
        self.cat_index = category_index(self.ds)
        self.category_ids = sorted(self.cat_index)
        self.anns = annotations_by_video(self.ds)
        self.cache = cache
        self._frames: dict[tuple[int, int], torch.Tensor] = {}
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.videos)

    def num_frames(self, vi: int) -> int:
        return len(self.videos[vi]["file_names"])

    def frame(self, vi: int, t: int) -> torch.Tensor:
        """(3, H, W) uint8 frame ``t`` of video index ``vi`` at the model size.

        Raises:
            FileNotFoundError: the frame file is missing (named with the video id).
        """
        key = (vi, t)
        if key in self._frames:
            return self._frames[key]
        vid = self.videos[vi]
        path = self.frames_root / vid["file_names"][t]
        if not path.is_file():
            raise FileNotFoundError(f"frame {path} of video id {vid['id']} not found")
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (self.size[1], self.size[0]):
                im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
            arr = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()
        if self.cache:
            self._frames[key] = arr
        return arr

    def instances(self, vi: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible instances of frame ``t``: (labels (K,) long in [0, C), masks (K, H, W) bool at model size)."""
        key = (vi, t)
        if key in self._masks:
            masks = self._masks[key]
        else:
            vid = self.videos[vi]
            h, w = vid["height"], vid["width"]
            ms = []
            for ann in self.anns[vid["id"]]:
                try:
                    m = decode_segmentation(ann["segmentations"][t], h, w)
                except Exception as exc:  # name the annotation at fault
                    raise ValueError(f"{self.json_path}: annotation id {ann['id']} (video id {vid['id']}) frame {t}:"
                                     f" {exc}") from exc
                ms.append(np.zeros((h, w), bool) if m is None else m)
            masks = torch.from_numpy(np.stack(ms)) if ms else torch.zeros(0, h, w, dtype=torch.bool)
            if masks.shape[-2:] != self.size and masks.shape[0]:
                masks = F.interpolate(masks[None].float(), size=self.size, mode="nearest")[0].bool()
            elif masks.shape[-2:] != self.size:
                masks = torch.zeros(0, *self.size, dtype=torch.bool)
            if self.cache:
                self._masks[key] = masks
        labels = torch.tensor([self.cat_index[a["category_id"]] for a in self.anns[self.videos[vi]["id"]]],
                              dtype=torch.long)
        visible = masks.flatten(1).any(1) if masks.shape[0] else torch.zeros(0, dtype=torch.bool)
        return labels[visible], masks[visible]

    def sample_clip(self, vi: int, length: int, max_gap: int, rng: np.random.Generator) -> list[int]:
        """``length`` frame indices of video ``vi`` in temporal order, consecutive gaps in [1, max_gap]
        (fewer frames than needed: indices repeat). Training chains run them in this order (reff → ref → key)."""
        n = self.num_frames(vi)
        gaps = rng.integers(1, max(1, max_gap) + 1, size=length - 1)
        span = int(gaps.sum())
        if span >= n:
            gaps = np.minimum(gaps, max(0, (n - 1) // max(1, length - 1)))
            span = int(gaps.sum())
        start = int(rng.integers(0, n - span)) if n - span > 0 else 0
        return [start] + [start + int(g) for g in np.cumsum(gaps)]


def gt_json_for_eval(json_path: str | Path) -> dict:
    """The ground-truth dict for the evaluator (plain json read)."""
    return json.loads(Path(json_path).read_text(encoding="utf-8"))
