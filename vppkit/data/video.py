"""Videos for online inference and clips (key + reference frames) for training.

- :class:`VideoReader`: one video, frames and per-frame instance masks loaded lazily, frame by frame
  (online VIS inference processes frame t after frame t-1; the caller carries the temporal state).
- :class:`VideoSet`: all videos of a YouTube-VIS dict, ``VideoSet[i] -> VideoReader``.
- :class:`VideoFrames`: the engine's view (training, inference, FGS, selectors): every frame and its visible
  instances resized to the model input size (bilinear for images, nearest for masks), read through
  :class:`VideoSet`, optionally kept in memory; clips of consecutive frames with random gaps.
- :func:`sample_reference_frames`: 1 or 2 reference frames within +-``window`` frames of a key frame (key
  excluded), as mmtrack's ``ref_img_sampler`` in the official VPP configs (``num_ref_imgs=2``, ``frame_range=5``;
  vpp-notes §7.3), chained for VPP's sparse stage (reff -> ref -> key) in one of three orders:

  - ``"random"``: references in sampled order, then the key (official: ``sort_ref_imgs=False``, so the
    "previous" frame may lie in the future);
  - ``"sorted"``: the same frames sorted in time (the key's position is returned);
  - ``"causal"``: references drawn from the ``window`` frames *before* the key only, sorted, key last
    (matches online inference).

  The training engine builds its batches from it (:class:`vppkit.engine.train.StepBatches`).

A :class:`VideoReader` frame has the same instance order K = all annotations of the video (sorted by id); an
instance absent from a frame has an all-False mask and ``valid[k] = False``. ``labels`` are contiguous 0-based
class indices (:func:`vppkit.data.ytvis.category_index`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vppkit.config import img_size_hw
from vppkit.data.transforms import ClipTransform
from vppkit.data.ytvis import annotations_by_video, category_index, decode_segmentation, load_ytvis, \
    resolve_frames_root

__all__ = ["VideoReader", "VideoSet", "VideoFrames", "sample_reference_frames", "has_instance", "open_ytvis"]

ORDERS = ("random", "sorted", "causal")


def open_ytvis(ds_or_path: dict | str | os.PathLike,
               frames_root: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """Load (if a path) a YouTube-VIS dict and find its frames folder.

    ``frames_root`` wins; otherwise ``info.frames_root`` (relative to the json's folder).

    Raises:
        ValueError: no frames folder can be determined.
    """
    json_path = None
    if isinstance(ds_or_path, dict):
        ds = ds_or_path
    else:
        json_path = Path(ds_or_path)
        ds = load_ytvis(json_path, check_masks=False)
    root = Path(frames_root) if frames_root is not None else resolve_frames_root(ds, json_path)
    if root is None:
        raise ValueError(f"{json_path or '<dict>'}: no frames_root given and no info.frames_root in the json")
    return ds, root


def has_instance(annotations: list[dict], t: int) -> bool:
    """Whether frame ``t`` has a segmentation in any of a video's annotations (YouTube-VIS marks an absent
    instance with ``null``)."""
    return any(a["segmentations"][t] is not None for a in annotations)


class VideoReader:
    """One video of a YouTube-VIS dict; frames and masks are read on access.

    Args:
        video: the ``videos`` entry.
        annotations: its annotations (instance order = this list's order).
        frames_root: folder that ``file_names`` are relative to.
        cat_index: category id -> contiguous class index.
        transform: applied to every frame (no flip: called without rng); None = ``ClipTransform(pad_to=1)``.

    Attributes:
        video_id, length, height, width; ``instance_ids`` (K,) int64 annotation ids; ``labels`` (K,) int64.
    """

    def __init__(self, video: dict, annotations: list[dict], frames_root: str | os.PathLike,
                 cat_index: dict[int, int], transform: ClipTransform | None = None):
        self.video = video
        self.annotations = list(annotations)
        self.frames_root = Path(frames_root)
        self.transform = transform or ClipTransform(pad_to=1)
        self.video_id = video["id"]
        self.length = int(video["length"])
        self.height, self.width = int(video["height"]), int(video["width"])
        self.instance_ids = torch.tensor([a["id"] for a in self.annotations], dtype=torch.int64)
        try:
            self.labels = torch.tensor([cat_index[a["category_id"]] for a in self.annotations], dtype=torch.int64)
        except KeyError as e:
            raise ValueError(f"video id {self.video_id}: annotation with unknown category id {e.args[0]}") from e

    def __len__(self) -> int:
        return self.length

    def frame_path(self, t: int) -> Path:
        """Path of frame t (``frames_root / file_names[t]``)."""
        return self.frames_root / self.video["file_names"][t]

    def load_frame(self, t: int) -> np.ndarray:
        """Frame t as uint8 (H, W, 3) RGB. Raises FileNotFoundError naming the file and video id."""
        path = self.frame_path(t)
        if not path.is_file():
            raise FileNotFoundError(f"video id {self.video_id}, frame {t}: missing frame file {path}")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    def load_masks(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks of frame t: (K, H, W) bool and valid (K,) bool (False = absent, mask all-False)."""
        k = len(self.annotations)
        masks = np.zeros((k, self.height, self.width), bool)
        valid = np.zeros(k, bool)
        for i, ann in enumerate(self.annotations):
            try:
                m = decode_segmentation(ann["segmentations"][t], self.height, self.width)
            except (ValueError, IndexError) as e:
                raise ValueError(f"video id {self.video_id}, annotation id {ann['id']}, frame {t}: {e}") from e
            if m is not None:
                masks[i], valid[i] = m, True
        return masks, valid

    def __getitem__(self, t: int) -> dict[str, Any]:
        """Frame t for inference: ``image`` (3, H', W') float, ``masks`` (K, H', W') bool, ``valid`` (K,),
        ``labels``, ``instance_ids``, ``video_id``, ``frame_index``, ``meta`` (transform sizes)."""
        if not 0 <= t < self.length:
            raise IndexError(f"video id {self.video_id}: frame {t} out of range 0..{self.length - 1}")
        masks, valid = self.load_masks(t)
        image, out_masks, meta = self.transform([self.load_frame(t)], [masks])
        return {"image": image[0], "masks": out_masks[0], "valid": torch.from_numpy(valid),
                "labels": self.labels, "instance_ids": self.instance_ids, "video_id": self.video_id,
                "frame_index": t, "meta": meta}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for t in range(self.length):
            yield self[t]


class VideoSet:
    """All videos of a YouTube-VIS dataset for online inference: ``VideoSet[i] -> VideoReader``.

    Args:
        ds_or_path: YouTube-VIS dict or json path.
        frames_root: frames folder (default: the json's ``info.frames_root``).
        transform: per-frame transform (no flip).
    """

    def __init__(self, ds_or_path: dict | str | os.PathLike, frames_root: str | os.PathLike | None = None,
                 transform: ClipTransform | None = None):
        self.ds, self.frames_root = open_ytvis(ds_or_path, frames_root)
        self.category_index = category_index(self.ds)
        self.by_video = annotations_by_video(self.ds)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ds["videos"])

    def __getitem__(self, i: int) -> VideoReader:
        video = self.ds["videos"][i]
        return VideoReader(video, self.by_video[video["id"]], self.frames_root, self.category_index, self.transform)


class VideoFrames:
    """Frames and visible instances of one YouTube-VIS set at the model input size (what the engine reads).

    Frames are resized (bilinear, no aspect-ratio preservation, no padding) to ``img_size``; masks with
    nearest-neighbour interpolation; an instance is *visible* in a frame when its resized mask is non-empty.
    Files are read through :class:`VideoSet` / :class:`VideoReader` (errors name the file, video id and
    annotation id).

    Args:
        json_path: YouTube-VIS json (validated on load; errors name the file and the video/annotation id).
        frames_root: frames folder (None: ``info.frames_root`` of the json).
        img_size: model input (H, W) px or int.
        cache: keep decoded, resized frames and masks in memory (small sets).

    Attributes:
        ds: the dataset dict; ``videos`` its video list; ``category_ids`` the dataset category ids of the model's
        classes 0..C−1 (sorted); ``size`` (H, W).

    Raises:
        ValueError: no frames root given and none in the json.
    """

    def __init__(self, json_path: str | os.PathLike, frames_root: str | os.PathLike | None, img_size,
                 cache: bool = True) -> None:
        self.json_path = Path(json_path)
        self.video_set = VideoSet(self.json_path, frames_root)
        self.ds = self.video_set.ds
        self.frames_root = self.video_set.frames_root
        self.videos = self.ds["videos"]
        self.category_ids = sorted(self.video_set.category_index)
        self.size = img_size_hw(img_size)
        self.cache = cache
        self._readers = [self.video_set[i] for i in range(len(self.video_set))]
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
        arr = self._readers[vi].load_frame(t)
        if arr.shape[:2] != self.size:
            arr = np.asarray(Image.fromarray(arr).resize((self.size[1], self.size[0]), Image.BILINEAR))
        out = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
        if self.cache:
            self._frames[key] = out
        return out

    def instances(self, vi: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible instances of frame ``t``: (labels (K,) long in [0, C), masks (K, H, W) bool at model size).

        Raises:
            ValueError: an undecodable segmentation (names the annotation id, video id and frame).
        """
        masks, visible = self._visible(vi, t)
        return self._readers[vi].labels[visible], masks[visible]

    def instance_ids(self, vi: int, t: int) -> torch.Tensor:
        """Annotation ids (K,) int64 of the visible instances of frame ``t``, in the order of :meth:`instances`
        (an instance's identity across the frames of its video: ROVIS track-query targets)."""
        return self._readers[vi].instance_ids[self._visible(vi, t)[1]]

    def _visible(self, vi: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every annotation's mask (K_all, H, W) bool at model size and which are visible (K_all,) bool."""
        key, reader = (vi, t), self._readers[vi]
        if key in self._masks:
            masks = self._masks[key]
        else:
            masks = torch.from_numpy(reader.load_masks(t)[0])
            if masks.shape[0] == 0:
                masks = torch.zeros(0, *self.size, dtype=torch.bool)
            elif masks.shape[-2:] != self.size:
                masks = F.interpolate(masks[None].float(), size=self.size, mode="nearest")[0].bool()
            if self.cache:
                self._masks[key] = masks
        visible = masks.flatten(1).any(1) if masks.shape[0] else torch.zeros(0, dtype=torch.bool)
        return masks, visible

    def sample_clip(self, vi: int, length: int, max_gap: int, rng: np.random.Generator) -> list[int]:
        """``length`` frame indices of video ``vi`` in temporal order, consecutive gaps in [1, max_gap]
        (fewer frames than needed: indices repeat). Training chains run them in this order (reff → ref → key);
        causal, like online inference (the official mmtrack sampler is :func:`sample_reference_frames`)."""
        n = self.num_frames(vi)
        gaps = rng.integers(1, max(1, max_gap) + 1, size=length - 1)
        span = int(gaps.sum())
        if span >= n:
            gaps = np.minimum(gaps, max(0, (n - 1) // max(1, length - 1)))
            span = int(gaps.sum())
        start = int(rng.integers(0, n - span)) if n - span > 0 else 0
        return [start] + [start + int(g) for g in np.cumsum(gaps)]


def sample_reference_frames(key: int, length: int, num_ref: int, window: int, order: str,
                            rng: np.random.Generator) -> tuple[list[int], int]:
    """Pick reference frames for a key frame and order the chain.

    Args:
        key: key frame index (0-based).
        length: number of frames of the video.
        num_ref: reference frames (1 or 2).
        window: max |ref - key| in frames (annotated frames for YouTube-VIS).
        order: "random" | "sorted" | "causal" (module docstring).
        rng: numpy generator.

    Returns:
        (frame indices in chain order, position of the key in that list). References are distinct when
        the window holds enough frames, else drawn with replacement; a 1-frame video repeats the key.
        "causal" with key 0 has no earlier frame: it falls back to the frames after the key (chain
        refs -> key, not in time order); the training engine keeps such keys.

    Raises:
        ValueError: unknown order, num_ref < 1, key out of range.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if num_ref < 1:
        raise ValueError(f"num_ref must be >= 1, got {num_ref}")
    if not 0 <= key < length:
        raise ValueError(f"key frame {key} out of range for a video of {length} frames")
    lo = max(0, key - window)
    hi = key - 1 if order == "causal" else min(length - 1, key + window)
    cand = [t for t in range(lo, hi + 1) if t != key]
    if not cand:
        cand = [t for t in range(max(0, key - window), min(length - 1, key + window) + 1) if t != key] or [key]
    refs = [int(t) for t in rng.choice(cand, size=num_ref, replace=len(cand) < num_ref)]
    if order == "random":
        return refs + [key], num_ref
    if order == "causal":
        return sorted(refs) + [key], num_ref
    frames = sorted(refs + [key])
    return frames, max(i for i, t in enumerate(frames) if t == key)
