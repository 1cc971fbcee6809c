"""Procedural video instance segmentation data in YouTube-VIS format (the project's embedded default data).

Deterministic from a seed (numpy ``default_rng([seed, video_index])``). Two appearance styles (``style``), which
share the geometry, motion, occlusion, presence and size-bin logic below:

- ``"hues"`` (generator v2, the default profile's data; byte-identical to v2): each category has its own hue
  family, so colour tells the category and, largely, objects from background: a random-init ViT's patch
  embedding separates instance from background patches (FGS 0.89 at x_0, issue 14);
- ``"pool"`` (generator v3, :mod:`vppkit.data.synthetic_pool`, issue 14): objects, distractors and a Voronoi
  mosaic background draw colour and texture from ONE per-video appearance pool; categories differ by shape, part
  layout and motion only, so a patch inside an object looks like a background cell (random-init FGS at x_0
  about 0.5);
- ``"mixed"`` (issue 14's trade-off between the two): each video is drawn in style "pool" with probability
  ``pool_fraction`` (from ``default_rng([seed, video_index, 991])``), else in style "hues", and rendered exactly
  as that style renders it (the running instance index, which cycles categories and size bins, is the set's).
  Category ids and shapes agree between the styles (disc, square, triangle, star), so one label set serves both;
  the json names the hues categories and each video's style (``videos[i].style``).

Style ``"hues"`` in detail (every item but the first and the background one holds for ``"pool"`` too). Each video
has:

- 2-4 instances from 4 categories that differ in shape AND texture (striped disc, checkered square,
  dotted triangle, ringed star), each with its own colour pair drawn from its category's hue family
  (hues 0.25 apart, +-0.07; generator v2) and a little shading. Hue families make the categories learnable by
  the CPU-sized ViT trained from scratch (with random hues, v1, its class predictions stayed at chance);
  blurred distractors use the same families, so colour alone does not tell objects from background;
- smooth motion (start -> roughly mirrored end point through a crossing point near the frame centre, each
  instance its own point (v2: centre +- 0.45 of the reach, so paths cross without every instance stacking on
  the centre at mid-video), plus a sinusoidal wobble), rotation and a scale change over the video
  (area x0.78 .. x1.28);
- occlusions: instances are drawn in a fixed depth order (larger size bins behind smaller ones, random
  within a bin) and the annotation is the *visible* (modal) mask, as in YouTube-VIS; paths cross near
  the centre so occlusions are common;
- instances entering late and leaving early (``null`` segmentation while absent), and in every third
  video (index % 3 == 1) the first two frames contain no object at all;
- a cluttered, textured, slowly panning background with distractors: the same shapes and textures but
  low-contrast or blurred, not annotated, so early-layer features are not trivially foreground-selective;
- instance sizes assigned per instance to the IoI size bins (S <= 10 %, 10 % < M <= 20 %, L > 20 % of the
  frame area, supplementary §D) by cycling over the generated set, so all bins are covered
  (check with :func:`size_bin_stats`; occlusion can move a visible size across a bin edge).

Output layout: ``<out_dir>/JPEGImages/<video name>/%05d.{jpg,png}`` and ``<out_dir>/instances.json``
(``file_names`` relative to ``<out_dir>/JPEGImages``; ``info.frames_root = "JPEGImages"``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from pycocotools import mask as mask_utils
from tqdm import tqdm

from vppkit.data import synthetic_pool
from vppkit.data.synthetic_shapes import area_factor as _area_factor
from vppkit.data.synthetic_shapes import object_coords as _object_coords
from vppkit.data.synthetic_shapes import shape_mask as _shape
from vppkit.data.ytvis import encode_mask, mask_bbox, save_ytvis
from vppkit.utils.io import atomic_write_bytes
from vppkit.utils.paths import cache_dir

__all__ = ["CATEGORIES", "STYLES", "SIZE_BINS", "JSON_NAME", "GENERATOR_VERSION", "size_bin", "categories",
           "generate_synthetic", "synthetic_dataset", "size_bin_stats", "render_video", "video_style"]

#: appearance styles (module docstring): "hues" = generator v2's look, "pool" = v3's shared appearance pool
STYLES = ("hues", "pool", "mixed")
#: style "hues": category id -> (name, shape, texture, hue family); style "pool": synthetic_pool.CATEGORIES
CATEGORIES = [
    {"id": 1, "name": "striped_disc", "shape": "disc", "texture": "stripes", "hue": 0.0},
    {"id": 2, "name": "checkered_square", "shape": "square", "texture": "checker", "hue": 0.25},
    {"id": 3, "name": "dotted_triangle", "shape": "triangle", "texture": "dots", "hue": 0.5},
    {"id": 4, "name": "ringed_star", "shape": "star", "texture": "rings", "hue": 0.75},
]
#: half-width of a category's hue family (hue in 0..1; families are 0.25 apart)
_HUE_JITTER = 0.07
#: IoI size bins by the instance's share of the frame area: (low, high], supplementary §D.
SIZE_BINS = {"S": (0.0, 0.10), "M": (0.10, 0.20), "L": (0.20, 1.0)}
#: target (amodal) area fraction at mid-video per bin; the zoom keeps it inside the bin.
_TARGET_AREA = {"S": (0.03, 0.065), "M": (0.145, 0.17), "L": (0.27, 0.32)}
_BIN_CYCLE = ("S", "M", "L")
#: instance paths cross at centre ± this fraction of their reach (0: every path through the frame centre)
_CROSS_SPREAD = 0.45
JSON_NAME = "instances.json"
#: bump when the generator's output changes (part of the cache key of :func:`synthetic_dataset` and of ``info``).
#: v3 added style "pool"; style "hues" output is byte-identical to v2.
GENERATOR_VERSION = 3


def categories(style: str = "hues") -> list[dict]:
    """The category dicts of appearance ``style`` (ids 1..4 and their shapes agree; names and drawing differ;
    "mixed" uses the hues dicts).

    Raises:
        ValueError: unknown style (not in :data:`STYLES`).
    """
    if style not in STYLES:
        raise ValueError(f"synthetic style (data.synthetic_style) must be one of {list(STYLES)}, got {style!r}")
    return synthetic_pool.CATEGORIES if style == "pool" else CATEGORIES


def video_style(style: str, seed: int, video_index: int, pool_fraction: float = 0.5) -> str:
    """The style a video is drawn in: ``style`` itself, or for "mixed" "pool" with probability ``pool_fraction``.

    Raises:
        ValueError: unknown style, or ``pool_fraction`` outside [0, 1] (data.pool_fraction).
    """
    categories(style)
    if style != "mixed":
        return style
    if not 0.0 <= float(pool_fraction) <= 1.0:
        raise ValueError(f"data.pool_fraction must lie in [0, 1], got {pool_fraction!r}")
    u = np.random.default_rng([int(seed), int(video_index), 991]).random()
    return "pool" if u < float(pool_fraction) else "hues"


def size_bin(fraction: float) -> str:
    """IoI size bin ("S" / "M" / "L") of an area fraction of the frame (0..1), bins as in :data:`SIZE_BINS`."""
    if fraction <= SIZE_BINS["S"][1]:
        return "S"
    if fraction <= SIZE_BINS["M"][1]:
        return "M"
    return "L"


# ----------------------------------------------------------------------------------------------- drawing


def _texture(texture: str, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    """Bool pattern in object coordinates, ``freq`` periods per unit radius."""
    if texture == "stripes":
        return np.sin(2 * np.pi * freq * u) > 0
    if texture == "checker":
        return ((np.floor(freq * u) + np.floor(freq * v)) % 2) == 0
    if texture == "dots":
        fu, fv = (freq * u) % 1.0 - 0.5, (freq * v) % 1.0 - 0.5
        return fu * fu + fv * fv < 0.09
    if texture == "rings":
        return np.sin(2 * np.pi * freq * np.hypot(u, v)) > 0
    raise ValueError(f"unknown texture {texture!r}")


def _vivid(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    """A saturated RGB colour (float 0..255); ``hue`` (0..1) picks a hue family (± ``_HUE_JITTER``), else any hue."""
    h = rng.uniform(0, 1) if hue is None else (hue + rng.uniform(-_HUE_JITTER, _HUE_JITTER)) % 1.0
    rgb = np.clip(np.abs(((h * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)  # hsv->rgb with s=v=1
    s, val = rng.uniform(0.55, 0.9), rng.uniform(0.6, 0.95)
    return 255 * val * (1 - s + s * rgb)


def _dull(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    return np.clip(base + rng.normal(0, 40, 3), 0, 255)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured, cluttered background canvas (h, w, 3) float with unannotated distractor shapes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(70, 180, 3)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()  # float32 canvas throughout
    for _ in range(3):  # smooth colour field
        f = rng.uniform(0.5, 2.5) * 2 * np.pi / max(h, w)
        a = rng.uniform(0, 2 * np.pi)
        wave = np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 2 * np.pi))
        img += wave[..., None] * rng.normal(0, 18, 3)
    # clutter: patches of background-coloured stripes / checker / dots (low contrast)
    for _ in range(int(rng.integers(6, 11))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.08, 0.3) * min(h, w)
        u, v = _object_coords(yy, xx, cx, cy, r, rng.uniform(0, np.pi))
        region = (np.abs(u) <= 1) & (np.abs(v) <= rng.uniform(0.4, 1))
        tex = _texture(str(rng.choice(["stripes", "checker", "dots"])), u, v, rng.uniform(2, 6))
        img[region & tex] = 0.45 * img[region & tex] + 0.55 * _dull(rng, base)
    # distractors: object shapes + textures, low-contrast or blurred, never annotated
    layer = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    blur_layer = np.zeros((h, w, 3), np.float32)
    blur_alpha = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(4, 8))):
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        r = np.sqrt(rng.uniform(0.01, 0.08) * h * w / _area_factor(cat["shape"]))
        u, v = _object_coords(yy, xx, rng.uniform(0, w), rng.uniform(0, h), r, rng.uniform(0, 2 * np.pi))
        m = _shape(cat["shape"], u, v)
        tex = _texture(cat["texture"], u, v, rng.uniform(2, 4))
        blurred = rng.uniform() < 0.5
        c1 = _vivid(rng, cat["hue"]) if blurred else _dull(rng, base)  # same colour family as the category
        c2 = _dull(rng, base)
        col = np.where(tex[..., None], c1, c2)
        if blurred:
            blur_layer[m], blur_alpha[m] = col[m], rng.uniform(0.6, 0.9)
        else:
            layer[m], alpha[m] = col[m], rng.uniform(0.35, 0.6)
    img = img * (1 - alpha[..., None]) + layer * alpha[..., None]
    radius = float(rng.uniform(1.5, 2.5))
    pre = np.concatenate([blur_layer * blur_alpha[..., None], blur_alpha[..., None] * 255], axis=2)
    pre = np.asarray(Image.fromarray(np.clip(pre, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)),
                     np.float32)
    a = pre[..., 3:] / 255.0
    img = img * (1 - a) + pre[..., :3]
    return img


def _plan_instances(rng: np.random.Generator, video_index: int, first_instance: int, num_frames: int,
                    height: int, width: int, style: str = "hues") -> list[dict]:
    """Per-instance category, size bin, trajectory, presence interval and appearance (style "hues": two colours
    of the category's hue family; "pool": two distinct indices into the video's appearance pool)."""
    cats = categories(style)
    k_count = int(rng.integers(2, 5))
    t_last = max(num_frames - 1, 1)
    empty_start = 2 if (video_index % 3 == 1 and num_frames > 3) else 0
    plans = []
    for k in range(k_count):
        g = first_instance + k
        cat = cats[g % len(cats)]
        sbin = _BIN_CYCLE[(g + g // len(CATEGORIES)) % 3]
        if sbin == "L" and any(p["bin"] == "L" for p in plans):
            sbin = "M"  # at most one L instance per video: two would hide each other
        area = rng.uniform(*_TARGET_AREA[sbin]) * height * width
        r0 = float(np.sqrt(area / _area_factor(cat["shape"])))
        centre = np.array([width / 2, height / 2])
        reach = np.maximum(np.array([width, height]) / 2 - 0.9 * r0, 0.1 * min(height, width))
        # each path crosses its own point of the central region, so paths cross (occlusions) without
        # every instance stacking on the frame centre at mid-video
        cross = centre + rng.uniform(-_CROSS_SPREAD, _CROSS_SPREAD, 2) * reach
        a = rng.uniform(0, 2 * np.pi)
        p0 = np.clip(cross + rng.uniform(0.5, 1.0) * reach * np.array([np.cos(a), np.sin(a)]),
                     centre - reach, centre + reach)
        p1 = np.clip(cross - (p0 - cross) * rng.uniform(0.6, 1.0) + rng.normal(0, 0.1, 2) * reach,
                     centre - reach, centre + reach)
        t_in, t_out = empty_start, num_frames
        if k > 0 and num_frames >= 6:
            u = rng.uniform()
            if u < 0.35:
                t_in = int(rng.integers(max(empty_start, 1), num_frames // 2))
            elif u < 0.7:
                t_out = int(rng.integers(num_frames // 2 + 1, num_frames))
        if style == "hues":
            plans.append({"category": cat, "bin": sbin, "r0": r0, "p0": p0, "p1": p1, "t_in": t_in,
                          "t_out": t_out, "zoom": rng.uniform(-0.25, 0.25), "angle0": rng.uniform(0, 2 * np.pi),
                          "spin": rng.uniform(-0.08, 0.08), "wobble": rng.uniform(0, 0.06) * min(height, width),
                          "wphase": rng.uniform(0, 2 * np.pi), "wfreq": rng.uniform(0.5, 1.5) * 2 * np.pi / t_last,
                          "freq": rng.uniform(2.5, 4.5),
                          "colours": (_vivid(rng, cat["hue"]), _vivid(rng, cat["hue"]) * 0.45),
                          "depth": rng.uniform()})
        else:  # "pool": spin and wobble ranges are the category's (categories differ by motion too)
            apps = rng.choice(synthetic_pool.POOL_SIZE, 2, replace=False)
            plans.append({"category": cat, "bin": sbin, "r0": r0, "p0": p0, "p1": p1, "t_in": t_in,
                          "t_out": t_out, "zoom": rng.uniform(-0.25, 0.25), "angle0": rng.uniform(0, 2 * np.pi),
                          "spin": rng.uniform(-1, 1) * cat["spin"],
                          "wobble": rng.uniform(0.5, 1.0) * cat["wobble"] * min(height, width),
                          "wphase": rng.uniform(0, 2 * np.pi), "wfreq": rng.uniform(0.5, 1.5) * 2 * np.pi / t_last,
                          "appearances": (int(apps[0]), int(apps[1])),
                          "depth": rng.uniform()})
    return plans


def _pose(p: dict, t: int, tau: float) -> tuple[float, float, float, float]:
    """Centre x, centre y, radius (pixels) and rotation (radians) of instance plan ``p`` at frame t."""
    d = p["p1"] - p["p0"]
    perp = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6)
    pos = p["p0"] + d * tau + perp * p["wobble"] * np.sin(p["wfreq"] * t + p["wphase"])
    r = p["r0"] * np.exp(p["zoom"] * (tau - 0.5))
    return float(pos[0]), float(pos[1]), float(r), float(p["angle0"] + p["spin"] * t)


def _amodal(p: dict, t: int, tau: float, height: int, width: int):
    """Full (amodal) mask of instance ``p`` at frame t on its bounding-box crop.

    Returns (crop slices, bool mask, u, v) or None when absent / outside the frame.
    """
    if not p["t_in"] <= t < p["t_out"]:
        return None
    cx, cy, r, angle = _pose(p, t, tau)
    x0, x1 = max(0, int(np.floor(cx - r))), min(width, int(np.ceil(cx + r)) + 1)
    y0, y1 = max(0, int(np.floor(cy - r))), min(height, int(np.ceil(cy + r)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u, v = _object_coords(yy, xx, cx, cy, r, angle)
    m = _shape(p["category"]["shape"], u, v)
    return (slice(y0, y1), slice(x0, x1)), m, u, v


def _visible_masks(plans: list[dict], order: list[int], num_frames: int, height: int,
                   width: int) -> list[list[np.ndarray]]:
    """Visible (modal) masks per instance and frame: amodal mask minus everything drawn in front."""
    t_last = max(num_frames - 1, 1)
    masks: list[list[np.ndarray]] = [[] for _ in plans]
    for t in range(num_frames):
        front = np.zeros((height, width), bool)
        for k in reversed(order):  # front to back
            full = np.zeros((height, width), bool)
            a = _amodal(plans[k], t, t / t_last, height, width)
            if a is not None:
                full[a[0]] = a[1]
            masks[k].append(full & ~front)
            front |= full
    return masks


def _fit_sizes(plans: list[dict], masks: list[list[np.ndarray]]) -> bool:
    """Rescale instances whose mean visible area left their assigned size bin; True if any changed."""
    changed = False
    for p, inst in zip(plans, masks):
        fracs = [float(m.mean()) for m in inst if m.any()]
        if not fracs:
            continue
        mean = float(np.mean(fracs))
        if size_bin(mean) != p["bin"]:
            target = float(np.mean(_TARGET_AREA[p["bin"]]))
            p["r0"] *= float(np.sqrt(np.clip(target / mean, 0.6, 1.8)))
            changed = True
    return changed


_FIT_ITERS = 5


def render_video(seed: int, video_index: int, first_instance: int = 0, num_frames: int = 16, height: int = 192,
                 width: int = 192, style: str = "hues", pool_fraction: float = 0.5
                 ) -> tuple[list[np.ndarray], list[dict], list[list[np.ndarray]]]:
    """Render one synthetic video in memory.

    Instance radii are first planned from the target area of their size bin, then refitted (up to
    ``_FIT_ITERS`` rounds) until the mean *visible* area (after occlusion and frame clipping) lies in the
    assigned bin.

    Args:
        seed: generator seed; with ``video_index`` it fixes everything.
        video_index: index of the video in its set (drives empty-frame videos).
        first_instance: global index of the video's first instance (drives category / size-bin cycling).
        num_frames, height, width: video length and frame size (pixels).
        style: appearance style, :data:`STYLES` (module docstring).
        pool_fraction: style "mixed" only: the probability of drawing this video in style "pool".

    Returns:
        frames: list of T uint8 arrays (H, W, 3);
        plans: per-instance dicts (``category``, ``bin`` = assigned size bin, ...), in instance order;
        masks: per instance, T visible bool masks (H, W) (all-False when absent or fully occluded).

    Raises:
        ValueError: unknown style.
    """
    style = video_style(style, seed, video_index, pool_fraction)  # validates; "mixed" -> this video's style
    rng = np.random.default_rng([int(seed), int(video_index)])
    size = min(height, width)
    pool = synthetic_pool.appearance_pool(rng, size) if style == "pool" else None
    plans = _plan_instances(rng, video_index, first_instance, num_frames, height, width, style)
    pad = max(8, int(0.12 * max(height, width)))
    if pool is None:
        canvas, light = _background(rng, height + 2 * pad, width + 2 * pad), None
    else:
        canvas = synthetic_pool.background(rng, pool, height + 2 * pad, width + 2 * pad, size)
        light = synthetic_pool.light_field(rng, height, width)
    edge = synthetic_pool.edge_width(size)
    pan = rng.uniform(-1, 1, 2) * pad
    noise_rng = np.random.default_rng([int(seed), int(video_index), 1])
    # back to front: larger size bins behind smaller ones (random within a bin), so occlusion is partial
    order = sorted(range(len(plans)), key=lambda k: (-_BIN_CYCLE.index(plans[k]["bin"]), plans[k]["depth"]))
    masks = _visible_masks(plans, order, num_frames, height, width)
    for _ in range(_FIT_ITERS):
        if not _fit_sizes(plans, masks):
            break
        masks = _visible_masks(plans, order, num_frames, height, width)
    t_last = max(num_frames - 1, 1)
    frames: list[np.ndarray] = []
    for t in range(num_frames):
        tau = t / t_last
        ox, oy = (pad + pan * (tau - 0.5)).round().astype(int)
        img = canvas[oy:oy + height, ox:ox + width].copy()
        for k in order:  # back to front
            p = plans[k]
            a = _amodal(p, t, tau, height, width)
            if a is None:
                continue
            sl, m, u, v = a
            if pool is not None:
                i, j = p["appearances"]
                synthetic_pool.draw(img, sl, m, u, v, _pose(p, t, tau)[2], p["category"]["parts"], (pool[i], pool[j]),
                                    edge)
                continue
            tex = _texture(p["category"]["texture"], u, v, p["freq"])
            shade = (1.0 - 0.2 * (u * u + v * v))[..., None]
            c1, c2 = p["colours"]
            col = np.where(tex[..., None], c1.astype(np.float32), c2.astype(np.float32)) * shade
            crop = img[sl]
            crop[m] = col[m]
        if light is not None:
            img *= light
        img += 3.0 * noise_rng.standard_normal(img.shape, dtype=np.float32)
        frames.append(np.clip(img, 0, 255).round().astype(np.uint8))
    return frames, plans, masks


# ----------------------------------------------------------------------------------------------- dataset


def _encode_frame(frame: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def generate_synthetic(out_dir: str | os.PathLike, num_videos: int = 24, seed: int = 0, num_frames: int = 16,
                       height: int = 192, width: int = 192, image_format: str = "jpg",
                       progress: bool = True, style: str = "hues", pool_fraction: float = 0.5) -> Path:
    """Generate a synthetic YouTube-VIS dataset (frames + json) under ``out_dir``.

    Args:
        out_dir: output folder (frames in ``JPEGImages/``, annotations in ``instances.json``).
        num_videos: number of videos (>= 1).
        seed: random seed; the same arguments give byte-identical files.
        num_frames: frames per video (>= 1; 12-24 is typical).
        height, width: frame size in pixels (192x192 -> 12x12 = 144 patch tokens at patch 16).
        image_format: "jpg" (quality 90) or "png".
        progress: tqdm bar over videos.
        style: appearance style, :data:`STYLES` (module docstring; recorded in ``info.generator.style``).
        pool_fraction: style "mixed" only (recorded in ``info.generator.pool_fraction``; each video's drawn
            style in ``videos[i].style``).

    Returns:
        Path of the json. It is written last, so its presence means the set is complete.

    Raises:
        ValueError: bad sizes, format or style.
    """
    if num_videos < 1 or num_frames < 1 or height < 16 or width < 16:
        raise ValueError(f"need num_videos >= 1, num_frames >= 1, height/width >= 16; got "
                         f"{num_videos}, {num_frames}, {height}x{width}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    cats = categories(style)
    video_style(style, seed, 0, pool_fraction)  # validates pool_fraction before anything is written
    out_dir = Path(out_dir)
    frames_root = out_dir / "JPEGImages"
    videos, annotations = [], []
    first_instance = 0
    for vi in tqdm(range(num_videos), desc="synthetic videos", unit="video", disable=not progress):
        vstyle = video_style(style, seed, vi, pool_fraction)  # "mixed": this video's pure style, drawn once
        frames, plans, masks = render_video(seed, vi, first_instance, num_frames, height, width, vstyle)
        first_instance += len(plans)
        name = f"synth_{vi:04d}"
        file_names = []
        for t, frame in enumerate(frames):
            rel = f"{name}/{t:05d}.{image_format}"
            atomic_write_bytes(frames_root / rel, _encode_frame(frame, image_format))
            file_names.append(rel)
        vid_id = vi + 1
        videos.append({"id": vid_id, "name": name, "file_names": file_names, "height": height, "width": width,
                       "length": num_frames,
                       **({"style": vstyle} if style == "mixed" else {})})
        for p, inst_masks in zip(plans, masks):
            segs, boxes, areas = [], [], []
            for m in inst_masks:
                present = bool(m.any())
                segs.append(encode_mask(m) if present else None)
                boxes.append(mask_bbox(m) if present else None)
                areas.append(float(m.sum()) if present else None)
            if all(s is None for s in segs):
                continue  # never visible (fully occluded throughout): not an instance of the video
            annotations.append({"id": len(annotations) + 1, "video_id": vid_id, "category_id": p["category"]["id"],
                                "iscrowd": 0, "size_bin_target": p["bin"], "segmentations": segs,
                                "bboxes": boxes, "areas": areas})
    ds = {"info": {"description": "vppkit synthetic video instance segmentation set",
                   "frames_root": "JPEGImages",
                   "generator": {"version": GENERATOR_VERSION, "num_videos": num_videos, "seed": seed, "num_frames": num_frames,
                                 "height": height, "width": width, "image_format": image_format,
                                 **({"style": style} if style != "hues" else {}),
                                 **({"pool_fraction": float(pool_fraction)} if style == "mixed" else {})}},
          "licenses": [], "videos": videos, "annotations": annotations,
          "categories": [{"id": c["id"], "name": c["name"], "supercategory": "shape"} for c in cats]}
    return save_ytvis(ds, out_dir / JSON_NAME)


def synthetic_dataset(num_videos: int = 24, seed: int = 0, num_frames: int = 16, height: int = 192,
                      width: int = 192, image_format: str = "jpg", root: str | os.PathLike | None = None,
                      progress: bool = True, style: str = "hues", pool_fraction: float = 0.5) -> Path:
    """Json path of a cached synthetic set, generating it on first use.

    The set lives in ``<root or cache_dir()>/synthetic/g{GENERATOR_VERSION}[_{style}]_v{N}_s{seed}_f{F}_{H}x{W}_{fmt}/``
    (the style is named when it is not "hues"; "mixed" also names ``pool_fraction``, e.g. ``_mixed0.5``).
    """
    video_style(style, seed, 0, pool_fraction)  # validates the style and pool_fraction
    base = Path(root) if root is not None else cache_dir()
    tag = f"g{GENERATOR_VERSION}" + (f"_{style}" if style != "hues" else "") + (
        f"{float(pool_fraction):g}" if style == "mixed" else "")
    out = base / "synthetic" / f"{tag}_v{num_videos}_s{seed}_f{num_frames}_{height}x{width}_{image_format}"
    path = out / JSON_NAME
    if not path.is_file():
        generate_synthetic(out, num_videos, seed, num_frames, height, width, image_format, progress, style,
                           pool_fraction)
    return path


def size_bin_stats(ds: dict) -> dict:
    """Size-bin coverage of a YouTube-VIS dict (IoI bins, :data:`SIZE_BINS`).

    An instance's size is its mean visible area over the frames where it is present, as a fraction of
    the frame area (areas from ``areas`` when present, else from the RLE via pycocotools).

    Returns:
        dict with ``instances`` {bin: count}, ``frame_instances`` {bin: count over (frame, instance)
        pairs with the instance present}, ``per_instance`` [(annotation id, mean fraction, bin)],
        ``frames`` (total frames), ``empty_frames`` (frames where no instance is present).
    """
    vids = {v["id"]: v for v in ds["videos"]}
    inst = {b: 0 for b in SIZE_BINS}
    frame_inst = {b: 0 for b in SIZE_BINS}
    per_instance = []
    present: dict = {v["id"]: np.zeros(int(v["length"]), bool) for v in ds["videos"]}
    for ann in ds["annotations"]:
        v = vids[ann["video_id"]]
        frame_area = float(v["height"]) * float(v["width"])
        fracs = []
        for t, seg in enumerate(ann["segmentations"]):
            if seg is None:
                continue
            if ann.get("areas") and ann["areas"][t] is not None:
                a = float(ann["areas"][t])
            else:
                rle = mask_utils.frPyObjects(seg, int(v["height"]), int(v["width"]))
                a = float(np.sum(mask_utils.area(rle)))
            if a <= 0:
                continue
            fracs.append(a / frame_area)
            frame_inst[size_bin(a / frame_area)] += 1
            present[v["id"]][t] = True
        if fracs:
            mean = float(np.mean(fracs))
            inst[size_bin(mean)] += 1
            per_instance.append((ann["id"], mean, size_bin(mean)))
    frames = sum(len(p) for p in present.values())
    empty = sum(int((~p).sum()) for p in present.values())
    return {"instances": inst, "frame_instances": frame_inst, "per_instance": per_instance, "frames": frames,
            "empty_frames": empty}
