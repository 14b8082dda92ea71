"""UV layout of the procedural head (an atlas in [0, 1]^2, origin bottom-left, v up).

* Head surface: u = column / n_cols (the seam runs down the back of the
  head), v = row position in [0.26, 0.995]; the lid openings appear as almond
  holes because v follows the opened lids. Columns are denser on the face,
  so the face gets more texels.
* Bottom strip v in [0, 0.25]: eight islands side by side, 0.125 wide:
  left eyeball, right eyeball, left socket, right socket, mouth cavity,
  upper teeth, lower teeth, tongue. Spheres and bags are unrolled (u around,
  v along); teeth are unrolled along the arch, their end caps are small discs.

Pole and cap triangles get their own UV corners, so ``uv_coords`` (T, 2)
has more entries than there are vertices; ``uv_faces`` (F, 3) indexes it.
Every UV triangle is counter-clockwise (positive area) and islands are
disjoint, so no two triangles overlap in UV.
"""

from __future__ import annotations

import numpy as np

from headforge.heads.procedural import parts as P
from headforge.heads.procedural.assembly import MeshParts
from headforge.heads.procedural.surface import HeadLayout

__all__ = ["uv_layout", "ISLAND_ORDER"]

ISLAND_ORDER = (
    "left_eyeball",
    "right_eyeball",
    "left_eye_socket",
    "right_eye_socket",
    "mouth_bag",
    "upper_teeth",
    "lower_teeth",
    "tongue",
)
_HEAD_V = (0.26, 0.995)
_MARGIN = 0.006


def _grid_corner_uv(faces: np.ndarray, row: np.ndarray, col: np.ndarray, n_cols: int) -> np.ndarray:
    """Per-corner (u, v) in index units for faces of a wrapped grid; u unwrapped across the seam."""
    r, c = row[faces], col[faces].astype(np.float64)
    # A face touching both the last and the first column crosses the seam: put column 0 at n_cols.
    crosses = (c.max(axis=1) == n_cols - 1) & (c.min(axis=1) == 0)
    c = np.where(crosses[:, None] & (c == 0), float(n_cols), c)
    return np.stack([c, r], axis=-1)


def _fit(
    uv: np.ndarray, lo: np.ndarray, hi: np.ndarray, box: tuple[float, float, float, float]
) -> np.ndarray:
    """Map index-space corners from [lo, hi] into box (u0, v0, u1, v1)."""
    u0, v0, u1, v1 = box
    t = (uv - lo) / (hi - lo)
    return np.stack([u0 + t[..., 0] * (u1 - u0), v0 + t[..., 1] * (v1 - v0)], axis=-1)


def _orient(uv: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Mirror an island in u if its triangles came out clockwise."""
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    if np.median(area) < 0:
        uv = uv.copy()
        uv[..., 0] = box[0] + box[2] - uv[..., 0]
    return uv


def _fan_corners(faces: np.ndarray, row: dict[int, float], col: dict[int, float]) -> np.ndarray:
    """Index-space corners for faces given per-vertex row/col lookups (dicts for speed on small parts)."""
    return np.array([[[col[v], row[v]] for v in f] for f in faces], dtype=np.float64)


def _ringed_uv(
    faces: np.ndarray,
    ring_of: dict[int, float],
    seg_of: dict[int, float],
    n_seg: int,
    poles: set[int],
    box: tuple[float, float, float, float],
    n_levels: float,
) -> np.ndarray:
    """Unroll a ringed part: u = segment around (seam unwrapped), v = ring; poles split per face."""
    corners = _fan_corners(faces, ring_of, seg_of)
    seg = corners[..., 0]
    crosses = (seg.max(axis=1) == n_seg - 1) & (seg.min(axis=1) == 0)
    seg = np.where(crosses[:, None] & (seg == 0), float(n_seg), seg)
    is_pole = np.isin(faces, list(poles))
    others = np.where(is_pole, np.nan, seg)
    seg = np.where(is_pole, np.nanmean(others, axis=1, keepdims=True), seg)
    corners[..., 0] = seg
    uv = _fit(corners, np.array([0.0, 0.0]), np.array([float(n_seg), n_levels]), box)
    return _orient(uv, box)


def _island_box(k: int) -> tuple[float, float, float, float]:
    width = 1.0 / len(ISLAND_ORDER)
    return (k * width + _MARGIN, _MARGIN, (k + 1) * width - _MARGIN, _HEAD_V[0] - 0.01 - _MARGIN)


def uv_layout(layout: HeadLayout, mesh: MeshParts, head_theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Build the atlas.

    Args:
        head_theta: (n_head,) template ray polar angles with the lids open.
    Returns:
        uv_coords (T, 2) float64 and uv_faces (F, 3) int64.
    """
    topo = layout.topology
    n_rows, n_cols = topo.n_rows, topo.n_cols
    corner_uv = np.zeros(mesh.faces.shape + (2,))
    # Head: fractional row from the (lid-warped) ray angle; poles sit half a row beyond the ends.
    row = np.interp(-head_theta, -layout.theta_rows, np.arange(n_rows, dtype=np.float64))
    row[topo.bottom_pole], row[topo.top_pole] = -1.0, float(n_rows)
    col = topo.col_of.copy()
    fs = mesh.face_slices["head"]
    faces = mesh.faces[fs]
    corners = _grid_corner_uv(faces, row, col, n_cols)
    is_pole = (faces == topo.bottom_pole) | (faces == topo.top_pole)
    others = np.where(is_pole, np.nan, corners[..., 0])
    corners[..., 0] = np.where(is_pole, np.nanmean(others, axis=1, keepdims=True), corners[..., 0])
    box = (0.0, _HEAD_V[0], 1.0, _HEAD_V[1])
    corner_uv[fs] = _fit(corners, np.array([0.0, -1.0]), np.array([float(n_cols), float(n_rows)]), box)

    for k, name in enumerate(ISLAND_ORDER):
        fs, vs = mesh.face_slices[name], mesh.vertex_slices[name]
        faces = mesh.faces[fs]
        box = _island_box(k)
        if name.endswith("ball") or name == "tongue":
            n_rings, n_seg = (
                (P.EYEBALL_RING_ANGLES.size, P.EYEBALL_SEGMENTS)
                if name.endswith("ball")
                else (P.TONGUE_RINGS, P.TONGUE_SEGMENTS)
            )
            local = np.arange(vs.stop - vs.start)
            ring = np.concatenate([[0.0], np.repeat(np.arange(1, n_rings + 1), n_seg), [n_rings + 1.0]])
            seg = np.concatenate([[0.0], np.tile(np.arange(n_seg), n_rings), [0.0]])
            ring_of = dict(zip((vs.start + local).tolist(), ring.tolist()))
            seg_of = dict(zip((vs.start + local).tolist(), seg.tolist()))
            poles = {vs.start, vs.stop - 1}
            corner_uv[fs] = _ringed_uv(faces, ring_of, seg_of, n_seg, poles, box, n_rings + 1.0)
        elif name in ("left_eye_socket", "right_eye_socket", "mouth_bag"):
            bag = "mouth" if name == "mouth_bag" else name.replace("_socket", "")
            rings = mesh.bag_rings[bag]
            n_levels, n_seg = rings.shape
            ring_of = {int(v): float(k_) for k_ in range(n_levels) for v in rings[k_]}
            seg_of = {int(v): float(m) for k_ in range(n_levels) for m, v in enumerate(rings[k_])}
            pole = mesh.bag_poles[bag]
            ring_of[pole], seg_of[pole] = float(n_levels), 0.0
            corner_uv[fs] = _ringed_uv(faces, ring_of, seg_of, n_seg, {pole}, box, float(n_levels))
        else:  # teeth: a swept tube with two capped ends
            corner_uv[fs] = _tube_uv(faces, vs.start, box)
    flat = corner_uv.reshape(-1, 2)
    keyed = np.round(flat * 1e9).astype(np.int64)
    # Unique UV corners per (vertex, uv) pair is not needed: identical UVs can be shared across vertices.
    _, first, inverse = np.unique(keyed, axis=0, return_index=True, return_inverse=True)
    return flat[first], inverse.reshape(-1, 3).astype(np.int64)


def _tube_uv(faces: np.ndarray, start: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """Teeth: the tube side in the left 80 % of the island, the two caps as discs on the right."""
    n_sec, n_around = P.TEETH_SECTIONS, P.TEETH_AROUND
    local = faces - start
    cap_start, cap_end = n_sec * n_around, n_sec * n_around + 1
    u0, v0, u1, v1 = box
    side_box = (u0, v0, u0 + 0.78 * (u1 - u0), v1)
    uv = np.zeros(faces.shape + (2,))
    is_cap = np.isin(local, [cap_start, cap_end]).any(axis=1)
    side = local[~is_cap]
    sec, around = (side // n_around).astype(np.float64), (side % n_around).astype(np.float64)
    crosses = (around.max(axis=1) == n_around - 1) & (around.min(axis=1) == 0)
    around = np.where(crosses[:, None] & (around == 0), float(n_around), around)
    side_uv = _fit(
        np.stack([sec, around], -1), np.array([0.0, 0.0]), np.array([n_sec - 1.0, float(n_around)]), side_box
    )
    uv[~is_cap] = _orient(side_uv, side_box)
    radius = 0.45 * min(0.22 * (u1 - u0), 0.5 * (v1 - v0))
    for which, cap in enumerate((cap_start, cap_end)):
        rows = np.flatnonzero((local == cap).any(axis=1))
        centre = np.array([u0 + 0.89 * (u1 - u0), v0 + (0.27 + 0.46 * which) * (v1 - v0)])
        fan = local[rows]
        angle = 2.0 * np.pi * (fan % n_around) / n_around
        disc = centre + radius * np.stack([np.cos(angle), np.sin(angle)], -1)
        disc[fan == cap] = centre
        cap_box = (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius)
        uv[rows] = _orient(disc, cap_box)
    return uv
