"""Appearance style "pool" of the synthetic generator (generator v3, issue 14): nothing in a frame gives an
object away by its colour or texture.

Each video draws ONE appearance pool (:func:`appearance_pool`: a few textures x a per-video colour palette) and
everything in the frame takes its colour and texture from it:

- the background (:func:`background`) is a Voronoi mosaic whose cells are filled with pooled appearances, with
  unannotated distractors (bars, crosses, crescents, some with two parts) drawn by the same :func:`draw` as the
  objects;
- the annotated categories (:data:`CATEGORIES`) differ by shape, part layout and motion (spin and wobble ranges),
  not by appearance: each part of an object is one pooled appearance;
- every shape edge and every mosaic cell border carries the same dark outline, and one smooth light field
  (:func:`light_field`) covers the whole frame (objects have no shading of their own).

So a patch inside an object looks like a background cell; telling instances from background needs context across
patches. Measured (pixels, tests/test_data_synthetic.py): a linear classifier on a 16-px patch's pixels scores a
balanced accuracy of about 0.5 (style "hues": 0.94), and an instance's mean colour tells its category at chance.
The geometry (:mod:`vppkit.data.synthetic_shapes`) and the motion, occlusion and size-bin logic
(:mod:`vppkit.data.synthetic`) are shared with style "hues".
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion
from scipy.spatial import cKDTree

from vppkit.data.synthetic_shapes import DISTRACTOR_SHAPES, area_factor, object_coords, shape_mask

__all__ = ["CATEGORIES", "TEXTURES", "POOL_SIZE", "appearance_pool", "draw", "edge_width", "background",
           "light_field"]

#: category id -> name, shape, part layout (which pixels take the second pooled appearance) and motion ranges
#: (spin: radians per frame, +-; wobble: amplitude as a fraction of min(H, W))
CATEGORIES = [
    {"id": 1, "name": "rimmed_disc", "shape": "disc", "parts": "rim", "spin": 0.02, "wobble": 0.02},
    {"id": 2, "name": "quartered_square", "shape": "square", "parts": "quarters", "spin": 0.10, "wobble": 0.01},
    {"id": 3, "name": "cored_triangle", "shape": "triangle", "parts": "core", "spin": 0.03, "wobble": 0.07},
    {"id": 4, "name": "hubbed_star", "shape": "star", "parts": "hub", "spin": 0.15, "wobble": 0.03},
]
#: textures of the pool (periods in pixels, so a texture looks the same on objects and on the background)
TEXTURES = ("flat", "stripes", "checker", "dots", "rings")
#: appearances per video pool
POOL_SIZE = 6
#: colours per video palette
_PALETTE_SIZE = 5
#: texture period range as a fraction of min(H, W) (192 px: 6..15 px, about one 16-px patch)
_PERIOD = (0.03, 0.08)
#: Voronoi cells of the background per (192 px)^2 of canvas (16 cells and 3-6 distractors per frame gave the same
#: patch-level result but a busier frame)
_CELLS = 9
#: distractors per video: [low, high)
_DISTRACTORS = (2, 5)
#: darkening of outlines (every shape edge and every Voronoi cell border alike)
_EDGE_GAIN = 0.3


def _second_part(layout: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bool map of the pixels that take a shape's second appearance (part layout, object coordinates)."""
    if layout == "single":
        return np.zeros(u.shape, bool)
    if layout == "rim":
        return u * u + v * v > 0.62 ** 2
    if layout == "quarters":
        return u * v > 0
    if layout == "core":
        return shape_mask("triangle", u / 0.45, v / 0.45)
    if layout == "hub":
        return u * u + v * v < 0.38 ** 2
    if layout == "halves":
        return u > 0
    raise ValueError(f"unknown part layout {layout!r}")


def _texture(texture: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Bool pattern (True: second colour) at local pixel coordinates (x, y), ``period`` pixels per cycle."""
    if texture == "flat":
        return np.zeros(x.shape, bool)
    if texture == "stripes":
        return np.sin(2 * np.pi * x / period) > 0
    if texture == "checker":
        return ((np.floor(x / period * 2) + np.floor(y / period * 2)) % 2) == 0
    if texture == "dots":
        fx, fy = (x / period) % 1.0 - 0.5, (y / period) % 1.0 - 0.5
        return fx * fx + fy * fy < 0.09
    if texture == "rings":
        return np.sin(2 * np.pi * np.hypot(x, y) / period) > 0
    raise ValueError(f"unknown texture {texture!r}")


def _hsv(h: float, s: float, val: float) -> np.ndarray:
    rgb = np.clip(np.abs(((h * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)
    return 255 * val * (1 - s + s * rgb)


def appearance_pool(rng: np.random.Generator, size: int) -> list[dict]:
    """A video's shared appearance pool: :data:`POOL_SIZE` dicts (``texture``, colours ``c1`` / ``c2`` float32 RGB
    0..255, ``period`` px, ``angle`` rad) for frames of min side ``size`` px.

    The palette (``_PALETTE_SIZE`` colours, hues spread around the circle from a random offset) is the video's own,
    so no colour belongs to a category; the first ``len(TEXTURES)`` entries cover every texture once.
    """
    off = rng.uniform(0, 1)
    palette = [_hsv((off + k / _PALETTE_SIZE + rng.uniform(-0.06, 0.06)) % 1.0, rng.uniform(0.25, 0.85),
                    rng.uniform(0.35, 0.95)) for k in range(_PALETTE_SIZE)]
    textures = list(TEXTURES) + [TEXTURES[int(i)] for i in rng.integers(len(TEXTURES), size=POOL_SIZE)]
    pool = []
    for k in range(POOL_SIZE):
        i, j = rng.choice(_PALETTE_SIZE, 2, replace=False)
        pool.append({"texture": textures[k], "c1": palette[int(i)].astype(np.float32),
                     "c2": palette[int(j)].astype(np.float32), "period": rng.uniform(*_PERIOD) * size,
                     "angle": rng.uniform(0, np.pi)})
    return pool


def _paint(app: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Colours (..., 3) float of appearance ``app`` at local pixel coordinates (x, y) (rotated by its angle)."""
    c, s = np.cos(app["angle"]), np.sin(app["angle"])
    tex = _texture(app["texture"], c * x + s * y, -s * x + c * y, app["period"])
    return np.where(tex[..., None], app["c2"], app["c1"])


def edge_width(size: int) -> int:
    """Outline width in pixels for frames of min side ``size`` px (1 px per 128 px, at least 1)."""
    return max(1, int(round(size / 128)))


def draw(img: np.ndarray, sl, m: np.ndarray, u: np.ndarray, v: np.ndarray, r: float, layout: str,
         apps: tuple[dict, dict], edge: int) -> None:
    """Paint a shape, in place: bool mask ``m`` on the crop ``sl`` of ``img`` (H, W, 3) float, object coordinates
    (u, v) of the crop, radius ``r`` px, part ``layout``, two pooled appearances ``apps`` and a dark outline
    ``edge`` px wide. Textures live in the shape's frame (px = object coordinates x radius), so they move with it.
    Objects and distractors are drawn by this one function."""
    x, y = u * r, v * r
    col = np.where(_second_part(layout, u, v)[..., None], _paint(apps[1], x, y), _paint(apps[0], x, y))
    rim = m & ~binary_erosion(m, iterations=edge, border_value=1)
    col[rim] *= _EDGE_GAIN
    crop = img[sl]
    crop[m] = col[m]


def background(rng: np.random.Generator, pool: list[dict], h: int, w: int, size: int) -> np.ndarray:
    """Background canvas (h, w, 3) float: a Voronoi mosaic of pooled appearances with outlined cell borders and
    unannotated distractors (bars, crosses, crescents) drawn from the same pool. ``size``: the frame's min(H, W)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n_cells = max(4, int(round(_CELLS * h * w / 192.0 ** 2)))
    seeds = np.stack([rng.uniform(0, w, n_cells), rng.uniform(0, h, n_cells)], axis=1)
    cell = cKDTree(seeds).query(np.stack([xx.ravel(), yy.ravel()], axis=1))[1].reshape(h, w)
    app_of_cell = rng.integers(len(pool), size=n_cells)
    img = np.zeros((h, w, 3), np.float32)
    for k in range(n_cells):
        m = cell == k
        img[m] = _paint(pool[int(app_of_cell[k])], xx[m] - seeds[k, 0], yy[m] - seeds[k, 1])
    edge = edge_width(size)
    border = np.zeros((h, w), bool)  # cell borders, as dark and as wide as the shapes' outlines
    border[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    border[1:, :] |= cell[1:, :] != cell[:-1, :]
    if edge > 1:
        border = ~binary_erosion(~border, iterations=edge - 1, border_value=1)
    img[border] *= _EDGE_GAIN
    frame_area = float(size) * size
    for _ in range(int(rng.integers(*_DISTRACTORS))):
        shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
        r = float(np.sqrt(rng.uniform(0.01, 0.10) * frame_area / area_factor(shape)))
        cx, cy, angle = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * np.pi)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        u, v = object_coords(yy[y0:y1, x0:x1], xx[y0:y1, x0:x1], cx, cy, r, angle)
        i, j = rng.choice(len(pool), 2, replace=False)
        layout = "halves" if rng.uniform() < 0.5 else "single"
        draw(img, (slice(y0, y1), slice(x0, x1)), shape_mask(shape, u, v), u, v, r, layout,
             (pool[int(i)], pool[int(j)]), edge)
    return img


def light_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One smooth multiplicative light field (h, w, 1) float32 over the whole frame, in 0.6 .. 1.4."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gain = np.ones((h, w), np.float32)
    for _ in range(3):
        f = rng.uniform(0.5, 2.0) * 2 * np.pi / max(h, w)
        a = rng.uniform(0, 2 * np.pi)
        gain += rng.uniform(0.05, 0.12) * np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 2 * np.pi))
    return np.clip(gain, 0.6, 1.4)[..., None]
