"""Small smooth scalar fields used to sculpt features: compact bumps, ridges, steps.

Every function is vectorised over numpy arrays, float64, and C2 (or C1 where
noted), so displacement fields built from them give smooth shading and
well-behaved linear blendshapes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bump", "ellipse_bump", "smoothstep", "ridge", "segment_distance", "norm_max"]


def bump(q: np.ndarray) -> np.ndarray:
    """Compact C2 bump of a normalised distance: (1 - q^2)^3 for |q| < 1, else 0."""
    return np.clip(1.0 - q * q, 0.0, None) ** 3


def ellipse_bump(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0
) -> np.ndarray:
    """``bump`` over a (rotated) ellipse centred at (cx, cy) with radii (rx, ry).

    ``angle`` (radians) rotates the ellipse counter-clockwise in the (x, y) plane.
    """
    dx, dy = x - cx, y - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return bump(np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2))


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """C2 smootherstep from 0 (x <= edge0) to 1 (x >= edge1); edges may be reversed."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0)


def segment_distance(
    x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from points to the segment a-b and the clamped position t in [0, 1] along it."""
    ax, ay = a
    bx, by = b
    vx, vy = bx - ax, by - ay
    t = np.clip(((x - ax) * vx + (y - ay) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(x - (ax + t * vx), y - (ay + t * vy)), t


def ridge(
    x: np.ndarray,
    y: np.ndarray,
    a: tuple[float, float],
    b: tuple[float, float],
    width: float,
    taper: float = 1.0,
) -> np.ndarray:
    """A bump swept along segment a-b (width = half-width), fading towards both ends.

    ``taper`` in (0, 1]: fraction of the length over which each end fades out.
    """
    dist, t = segment_distance(x, y, a, b)
    ends = smoothstep(0.0, 0.5 * taper, t) * smoothstep(1.0, 1.0 - 0.5 * taper, t)
    return bump(dist / width) * ends


def norm_max(a: np.ndarray, b: np.ndarray, p: float = 4.0) -> np.ndarray:
    """Soft maximum of two non-negative heights, (a^p + b^p)^(1/p).

    Equals the other argument exactly where one is zero, so compact features
    stay compact (unlike a polynomial smooth max, which lifts max(0, 0)).
    """
    a = np.clip(a, 0.0, None)
    b = np.clip(b, 0.0, None)
    return (a**p + b**p) ** (1.0 / p)
