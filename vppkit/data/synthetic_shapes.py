"""Shape geometry shared by the synthetic generator's two appearance styles (:mod:`vppkit.data.synthetic`).

Shapes live in object coordinates (u, v): the pixel offset from the shape's centre, rotated by its angle and
divided by its radius, so radius 1 is the shape's outer extent.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["OBJECT_SHAPES", "DISTRACTOR_SHAPES", "shape_mask", "object_coords", "area_factor"]

#: shapes of the annotated categories
OBJECT_SHAPES = ("disc", "square", "triangle", "star")
#: shapes only unannotated distractors take (style "pool")
DISTRACTOR_SHAPES = ("bar", "cross", "crescent")


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bool mask of a unit shape at object coordinates (u, v) (same shape as ``u``).

    Raises:
        ValueError: unknown shape (not in :data:`OBJECT_SHAPES` or :data:`DISTRACTOR_SHAPES`).
    """
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == "triangle":  # equilateral, circumradius 1
        out = np.ones(u.shape, bool)
        for k in range(3):
            a = np.pi / 2 + k * 2 * np.pi / 3
            out &= (u * np.cos(a) + v * np.sin(a)) >= -0.5
        return out
    if shape == "star":  # smooth 5-point star
        rho, theta = np.hypot(u, v), np.arctan2(v, u)
        return rho <= 0.68 + 0.32 * np.cos(5 * theta)
    if shape == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.3)
    if shape == "cross":
        return ((np.abs(u) <= 1.0) & (np.abs(v) <= 0.24)) | ((np.abs(v) <= 1.0) & (np.abs(u) <= 0.24))
    if shape == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.72)
    raise ValueError(f"unknown shape {shape!r}")


def object_coords(yy, xx, cx: float, cy: float, r: float, angle: float):
    """Object coordinates (u, v) of pixel grids (yy, xx) for a shape centred at (cx, cy) px, radius ``r`` px,
    rotated by ``angle`` radians."""
    dx, dy = (xx - cx) / r, (yy - cy) / r
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


@functools.lru_cache(maxsize=None)
def area_factor(shape: str) -> float:
    """Area of the unit shape (in units of radius^2), measured on a fine grid."""
    g = np.linspace(-1, 1, 801)
    u, v = np.meshgrid(g, g)
    return float(shape_mask(shape, u, v).mean() * 4.0)
