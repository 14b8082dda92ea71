"""The smooth base volume of the head and neck, and rays cast from its centre.

Head: a stack of horizontal superellipse cross-sections. At height y the
cross-section has half-width ``S(y)``, front extent ``F(y)`` (z > 0) and back
extent ``B(y)`` (z < 0) measured from the y axis, with exponents
``n_front(y)`` / ``n_back(y)`` (larger = squarer). The profiles are monotone
cubic interpolants of control points; above ``dome_y`` they shrink as a
super-elliptic dome that closes at the crown. The head is cut from below by
the jaw line ``y = jaw_line(z)`` (a smooth intersection), and a leaning
superelliptic neck cylinder is added with a smooth union.

Every surface vertex is the outermost zero crossing of the field along a
fixed ray (``ray_frame``): rays fan out from ``RAY_ORIGIN`` over the head;
further down their origin slides down the neck axis while they turn
horizontal, so the neck is cut square-on instead of at a grazing angle, and
the last rays turn down onto the bottom cap.

Units: world units (1 mm of a real head ~ 0.002).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

__all__ = ["RAY_ORIGIN", "BASE_KEYS", "BaseShape", "smooth_min", "smooth_max", "ray_directions", "ray_frame"]

#: Geometry parameters that change the base volume (everything else is a feature on top of it).
BASE_KEYS = (
    "crown_y",
    "dome_y",
    "dome_side_power",
    "dome_front_power",
    "head_half_x",
    "temple_half_x",
    "cheek_half_x",
    "jaw_half_x",
    "forehead_z",
    "brow_z",
    "eye_front_z",
    "midface_z",
    "mouth_z",
    "chin_z",
    "head_back",
    "face_squareness",
    "gonion_y",
    "menton_y",
    "jaw_line_blend",
    "neck_z",
    "neck_lean",
    "neck_half_x",
    "neck_half_z",
    "neck_bottom_y",
    "neck_top_y",
    "neck_blend",
)

#: Centre of the ray fan (eye height, mid-depth of the cranium).
RAY_ORIGIN = np.array([0.0, 0.02, 0.0])
_RAY_MAX = 0.75
_TABLE_Y = np.linspace(-0.6, 0.4, 4001)


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (C1) with blend width k (world units)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def smooth_max(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth maximum (C1) with blend width k."""
    return -smooth_min(-a, -b, k)


def ray_directions(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit directions (..., 3); theta from +y, phi from +z towards +x."""
    st = np.sin(theta)
    return np.stack([st * np.sin(phi), np.cos(theta), st * np.cos(phi)], axis=-1)


# Ray frame below the head (fixed, from the nominal neck). The neck rays start later at the front, after
# the rays from RAY_ORIGIN have swept the whole underside of the chin, and earlier at the back (the nape).
_NECK_RAYS_START_BACK, _NECK_RAYS_START_FRONT = 2.35, 2.8
_NECK_RAYS_TURN = 0.4  # fraction of the remaining theta range over which origins slide down and rays turn
_CAP_RAYS_START = np.pi - 0.12
_NECK_AXIS = (-0.025, -0.2)  # axis z at y = -0.25, and dz/dy
_NECK_ORIGIN_TOP, _NECK_ORIGIN_BOTTOM = -0.27, -0.39


def _smoothstep(e0: np.ndarray | float, e1: np.ndarray | float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ray_frame(theta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and unit directions for ray parameters (theta, phi), each (N, 3).

    Up to ``t1(phi)`` (2.8 at the front, 2.35 at the back) rays leave
    ``RAY_ORIGIN`` along ``ray_directions(theta, phi)``. Over the next 40 % of
    the theta range left before the cap, the origin slides down to the neck
    axis at y = -0.27 and the ray aims at a target that moves from where the
    last fan ray pointed to a point straight out from the axis, so the hits
    run monotonically down the throat and nape. Then the origin goes on down
    the axis with horizontal rays, and over the last 0.12 rad the rays turn
    straight down onto the bottom cap.
    """
    theta = np.asarray(theta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    start = (
        _NECK_RAYS_START_BACK
        + (_NECK_RAYS_START_FRONT - _NECK_RAYS_START_BACK) * (0.5 + 0.5 * np.cos(phi)) ** 2
    )
    full = start + _NECK_RAYS_TURN * (_CAP_RAYS_START - start)
    blend = _smoothstep(start, full, theta)[:, None]
    along = np.clip((theta - full) / (_CAP_RAYS_START - full), 0.0, 1.0)
    y_axis = _NECK_ORIGIN_TOP + (_NECK_ORIGIN_BOTTOM - _NECK_ORIGIN_TOP) * along
    axis = np.stack([np.zeros_like(y_axis), y_axis, _NECK_AXIS[0] + _NECK_AXIS[1] * (y_axis + 0.25)], -1)
    origins = RAY_ORIGIN + blend * (axis - RAY_ORIGIN)
    outward = np.stack([np.sin(phi), np.zeros_like(phi), np.cos(phi)], -1)
    last_fan_target = RAY_ORIGIN + 0.35 * ray_directions(np.minimum(theta, start), phi)
    target = last_fan_target + blend * (axis + 0.2 * outward - last_fan_target)
    dirs = target - origins
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # Fan rays keep their exact direction (the target formula gives the same ray, up to rounding).
    fan = theta <= start
    dirs[fan] = ray_directions(theta[fan], phi[fan])
    cap = _smoothstep(_CAP_RAYS_START, np.pi, theta) * (np.pi / 2)
    tilted = ray_directions(np.pi / 2 + cap, phi)
    dirs = np.where((theta > _CAP_RAYS_START)[:, None], tilted, dirs)
    return origins, dirs


def _tabulate(ys: list[float], values: list[float], smoothing: float = 0.014) -> np.ndarray:
    """Profile through control points, sampled on ``_TABLE_Y``.

    Piecewise-linear interpolation blurred by a Gaussian of ``smoothing``
    world units: smooth to all orders (no visible bands at the control
    points) and, being a convex combination, it never overshoots.
    """
    order = np.argsort(ys)
    linear = np.interp(
        _TABLE_Y, np.asarray(ys, dtype=np.float64)[order], np.asarray(values, dtype=np.float64)[order]
    )
    return gaussian_filter1d(linear, smoothing / (_TABLE_Y[1] - _TABLE_Y[0]), mode="nearest")


@dataclass
class BaseShape:
    """Tabulated base-volume profiles built from geometry parameters ``g``."""

    g: dict[str, float]

    def __post_init__(self) -> None:
        g = self.g
        top, dome = g["crown_y"], g["dome_y"]
        ys = [dome + 0.03, dome, 0.045, 0.0, -0.04, -0.08, -0.12, -0.16, -0.20, -0.26, -0.34]
        half_x = [
            g["head_half_x"],
            g["head_half_x"],
            g["head_half_x"] - 0.002,
            g["temple_half_x"],
            g["cheek_half_x"],
            g["cheek_half_x"] - 0.008,
            g["jaw_half_x"] + 0.008,
            g["jaw_half_x"],
            g["jaw_half_x"] - 0.016,
            g["jaw_half_x"] - 0.03,
            g["jaw_half_x"] - 0.04,
        ]
        front = [
            g["forehead_z"],
            g["forehead_z"],
            g["brow_z"],
            g["eye_front_z"],
            g["midface_z"],
            g["midface_z"] + 0.004,
            g["mouth_z"],
            g["mouth_z"] - 0.004,
            g["chin_z"],
            g["chin_z"] - 0.02,
            g["chin_z"] - 0.04,
        ]
        back = [
            g["head_back"],
            g["head_back"],
            g["head_back"] + 0.003,
            g["head_back"] - 0.004,
            g["head_back"] - 0.025,
            g["head_back"] - 0.06,
            g["head_back"] - 0.085,
            g["head_back"] - 0.095,
            g["head_back"] - 0.1,
            g["head_back"] - 0.1,
            g["head_back"] - 0.1,
        ]
        n_front = [
            2.4,
            2.4,
            2.5,
            g["face_squareness"],
            g["face_squareness"],
            g["face_squareness"] - 0.2,
            g["face_squareness"] - 0.4,
            2.1,
            2.0,
            2.0,
            2.0,
        ]
        self._s = _tabulate(ys, half_x)
        self._f = _tabulate(ys, front)
        self._b = _tabulate(ys, back)
        self._nf = _tabulate(ys, n_front)
        # Super-elliptic dome above `dome`: each extent shrinks to zero at the crown.
        u = np.clip((_TABLE_Y - dome) / (top - dome), 0.0, 1.0)

        def dome_factor(p: float) -> np.ndarray:
            return np.where(dome < _TABLE_Y, (1.0 - u**p) ** (1.0 / p), 1.0)

        self._s = self._s * dome_factor(g["dome_side_power"])
        self._f = self._f * dome_factor(g["dome_front_power"])
        self._b = self._b * dome_factor(2.0)
        for arr in (self._s, self._f, self._b):
            arr[top <= _TABLE_Y] = 1e-6
        self._nf = np.nan_to_num(self._nf, nan=2.0)

    def _interp(self, table: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.interp(y, _TABLE_Y, table)

    def head_field(self, p: np.ndarray) -> np.ndarray:
        """Approximate signed distance of the head body (no neck), negative inside."""
        g = self.g
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        s = np.maximum(self._interp(self._s, y), 1e-6)
        ext = np.where(
            z > 0, np.maximum(self._interp(self._f, y), 1e-6), np.maximum(self._interp(self._b, y), 1e-6)
        )
        n = np.where(z > 0, self._interp(self._nf, y), 2.1)
        norm = ((np.abs(x) / s) ** n + (np.abs(z) / ext) ** n) ** (1.0 / n)
        cross = (norm - 1.0) * np.minimum(s, 0.15)
        # Below the crown the field must stay positive above the top.
        cross = np.where(y >= g["crown_y"], np.maximum(cross, y - g["crown_y"]), cross)
        jaw_line = np.interp(
            z,
            [-0.3, -0.05, 0.0, 0.06, 0.12, 0.17, 0.4],
            [
                -0.07,
                -0.11,
                g["gonion_y"],
                g["gonion_y"] - 0.028,
                g["menton_y"] - 0.006,
                g["menton_y"],
                g["menton_y"],
            ],
        )
        return smooth_max(cross, jaw_line - y, g["jaw_line_blend"])

    def neck_field(self, p: np.ndarray) -> np.ndarray:
        """Leaning superelliptic neck cylinder with a rounded bottom cap."""
        g = self.g
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        zc = g["neck_z"] + g["neck_lean"] * (y + 0.25)
        nz = (z - zc) / np.where(z > zc, g["neck_half_z"], g["neck_half_z"] * 1.05)
        side = ((np.abs(x) / g["neck_half_x"]) ** 2.3 + np.abs(nz) ** 2.3) ** (1.0 / 2.3)
        f = (side - 1.0) * g["neck_half_x"]
        f = smooth_max(f, g["neck_bottom_y"] - y, 0.02)
        # The top is buried inside the head; a soft cap keeps the union smooth at the back.
        return smooth_max(f, y - g["neck_top_y"], 0.04)

    def field(self, p: np.ndarray) -> np.ndarray:
        """Base volume: head smooth-union neck. p (..., 3) -> (...,)."""
        return smooth_min(self.head_field(p), self.neck_field(p), self.g["neck_blend"])

    def normals(self, p: np.ndarray) -> np.ndarray:
        """Outward unit normals of the level set through p (central differences), (N, 3)."""
        h = 1e-5
        grad = np.stack([self.field(p + h * e) - self.field(p - h * e) for e in np.eye(3)], axis=1)
        return grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)

    def solve_radius(
        self, origins: np.ndarray, dirs: np.ndarray, n_march: int = 24, n_bisect: int = 36
    ) -> np.ndarray:
        """Distance from each ray origin (N, 3) to the outermost crossing along its unit direction (N, 3)."""
        ts = np.linspace(_RAY_MAX, 0.0, n_march + 1)
        outer = np.full(dirs.shape[0], _RAY_MAX)
        inner = np.zeros(dirs.shape[0])
        found = np.zeros(dirs.shape[0], dtype=bool)
        for k in range(1, n_march + 1):
            todo = ~found
            f = self.field(origins[todo] + ts[k] * dirs[todo])
            hit_local = f < 0
            idx = np.flatnonzero(todo)[hit_local]
            inner[idx] = ts[k]
            outer[idx] = ts[k - 1]
            found[idx] = True
            if found.all():
                break
        for _ in range(n_bisect):
            mid = 0.5 * (inner + outer)
            inside = self.field(origins + mid[:, None] * dirs) < 0
            inner = np.where(inside, mid, inner)
            outer = np.where(inside, outer, mid)
        return 0.5 * (inner + outer)

    def refine_radius(
        self, origins: np.ndarray, dirs: np.ndarray, t0: np.ndarray, n_iter: int = 3
    ) -> np.ndarray:
        """Newton steps from a nearby solution t0 (N,), for slightly changed parameters or rays."""
        t = t0.copy()
        h = 1e-5
        for _ in range(n_iter):
            f = self.field(origins + t[:, None] * dirs)
            df = (self.field(origins + (t + h)[:, None] * dirs) - f) / h
            step = np.clip(-f / np.where(df < 1e-2, 1e-2, df), -0.01, 0.01)
            t = t + step
        return t
