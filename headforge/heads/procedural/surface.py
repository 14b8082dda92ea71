"""Head-surface layout (rows, columns, slits) and vertex positions.

Every head-surface vertex is a fixed ray with parameters (theta, phi)
(``base_shape.ray_frame``); its position is the outermost crossing of the base
surface along that ray plus the feature displacements (features.py), and a
fixed smoothing of the throat. The rows and columns are placed once,
from the nominal geometry: columns are denser at the front, rows follow the
surface's arc length with extra density on the face, and one row passes
exactly through each lid closure line and the lip slit.

Eyelids open by moving ray directions: on the upper side of an eye slit the
rows are pushed up (towards smaller theta) by an almond-shaped amount that
fades over the lid, on the lower side pushed down. The lid margins then lie
on the closed-lid surface in front of the eyeball, and a blink is simply the
same construction with a smaller opening.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from headforge.heads.procedural.base_shape import BASE_KEYS, BaseShape, ray_frame
from headforge.heads.procedural.features import sculpt
from headforge.heads.procedural.fields import smoothstep
from headforge.heads.procedural.topology import HeadTopology, Slit, build_head_topology

__all__ = [
    "HeadLayout",
    "LidState",
    "build_layout",
    "base_points",
    "surface_points",
    "lid_warp",
    "HeadSurfaceBuilder",
]

_COLUMN_WARP = 0.6  # column density at the front is (1 + w) / (1 - w) times that at the back
_UPPER_LID_REACH = 0.2  # radians of rows above a lid slit that the opening compresses
_LOWER_LID_REACH = 0.14


@dataclass(frozen=True)
class LidState:
    """Opening of both eyes' lids: 1 = nominal open, 0 = closed, >1 wider."""

    left_upper: float = 1.0
    left_lower: float = 1.0
    right_upper: float = 1.0
    right_lower: float = 1.0


@dataclass
class HeadLayout:
    """Fixed sampling of the head surface.

    Attributes:
        topology: slit grid indexing and faces.
        theta_rows: (n_rows,) ray polar angle of each row (decreasing upwards).
        phi_cols: (n_cols,) ray azimuth of each column, in [-pi, pi).
        theta, phi: (n_head,) nominal ray angles of every head vertex (poles included).
        slits: name -> Slit ("left_eye", "right_eye", "mouth").
        nominal_radius: (n_head,) base-surface distances of the nominal, open-lid template.
    """

    topology: HeadTopology
    theta_rows: np.ndarray
    phi_cols: np.ndarray
    theta: np.ndarray
    phi: np.ndarray
    slits: dict[str, Slit]
    nominal_radius: np.ndarray | None = None


def base_points(
    theta: np.ndarray, phi: np.ndarray, base: BaseShape, radius_guess: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base-surface points along rays, before any feature.

    Args:
        theta, phi: (N,) ray angles.
        base: the base volume.
        radius_guess: (N,) distances of a nearby solution (Newton refinement
            instead of a full search), or None.
    Returns:
        points (N, 3), outward unit normals (N, 3), distances along the rays (N,).
    """
    origins, dirs = ray_frame(theta, phi)
    if radius_guess is None:
        radius = base.solve_radius(origins, dirs)
    else:
        radius = base.refine_radius(origins, dirs, radius_guess)
    p0 = origins + radius[:, None] * dirs
    return p0, base.normals(p0), radius


def surface_points(
    theta: np.ndarray,
    phi: np.ndarray,
    g: dict[str, float],
    base: BaseShape,
    radius_guess: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sculpted surface points along rays: (N, 3) points and (N,) base distances."""
    p0, normals, radius = base_points(theta, phi, base, radius_guess)
    return sculpt(p0, normals, g), radius


def _row_angles(
    g: dict[str, float], base: BaseShape, n_rows: int, theta_eye: float, theta_mouth: float
) -> np.ndarray:
    """Row angles by weighted arc length over many meridians, rows snapped to the slit lines."""
    fine = np.linspace(1e-3, np.pi - 1e-3, 900)
    # Meridians through the face count three times: rows must follow the nose and lips.
    meridians = np.concatenate([np.linspace(-np.pi, np.pi, 24, endpoint=False), np.linspace(-0.45, 0.45, 10)])
    meridian_weight = np.concatenate([np.ones(24), np.full(10, 24 * 2.0 / 10)])
    tt, pp = np.meshgrid(fine, meridians, indexing="ij")
    pts, _ = surface_points(tt.ravel(), pp.ravel(), g, base)
    pts = pts.reshape(fine.size, meridians.size, 3)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=-1) @ meridian_weight / meridian_weight.sum()
    mid = 0.5 * (fine[1:] + fine[:-1])
    # Extra rows on the face and around the lids and lips, where the detail is.
    weight = (
        1.0
        + 0.8
        * smoothstep(np.pi / 2 - 0.55, np.pi / 2 - 0.35, mid)
        * smoothstep(np.pi / 2 + 0.75, np.pi / 2 + 0.55, mid)
        + 2.5 * np.exp(-(((mid - theta_eye) / 0.09) ** 2))
        + 2.5 * np.exp(-(((mid - theta_mouth) / 0.07) ** 2))
    )
    cdf = np.concatenate([[0.0], np.cumsum(seg * weight)])
    targets = np.linspace(0.0, cdf[-1], n_rows + 2)[1:-1]
    theta = np.interp(targets, cdf, fine)
    for snap in (theta_eye, theta_mouth):
        theta[np.argmin(np.abs(theta - snap))] = snap
    return np.sort(theta)[::-1]  # row 0 at the bottom (largest theta)


def _theta_for_height(phi: float, y_target: float, g: dict[str, float], base: BaseShape) -> float:
    """Ray angle at azimuth phi whose sculpted surface point has height y_target.

    Samples the meridian finely near the equator (where y falls monotonically
    with theta there) and interpolates.
    """
    theta = np.linspace(np.pi / 2 - 0.7, np.pi / 2 + 0.7, 2801)
    y = surface_points(theta, np.full(theta.size, phi), g, base)[0][:, 1]
    return float(np.interp(-y_target, -y, theta))


def build_layout(g: dict[str, float], n_rows: int = 108, n_cols: int = 152) -> HeadLayout:
    """Place rows, columns and slits for the nominal geometry ``g``."""
    if n_cols % 2:
        raise ValueError("n_cols must be even (mirror symmetry)")
    base = BaseShape(g)
    s = -np.pi + 2.0 * np.pi * np.arange(n_cols) / n_cols
    phi_cols = s - _COLUMN_WARP * np.sin(s)
    eye_phi = float(np.arctan2(g["eye_x"], g["eye_z"] + g["eye_radius"]))
    theta_eye = _theta_for_height(eye_phi, g["eye_y"] + g["lid_closure_dy"], g, base)
    theta_mouth = _theta_for_height(0.0, g["mouth_y"], g, base)
    theta_rows = _row_angles(g, base, n_rows, theta_eye, theta_mouth)
    row_eye = int(np.argmin(np.abs(theta_rows - theta_eye)))
    row_mouth = int(np.argmin(np.abs(theta_rows - theta_mouth)))

    def nearest_column(row: int, x_target: float) -> int:
        front = np.flatnonzero(np.abs(phi_cols) < 1.2)
        pts, _ = surface_points(np.full(front.size, theta_rows[row]), phi_cols[front], g, base)
        return int(front[np.argmin(np.abs(pts[:, 0] - x_target))])

    inner = nearest_column(row_eye, g["eye_x"] - g["fissure_half_w"])
    outer = nearest_column(row_eye, g["eye_x"] + g["fissure_half_w"])
    corner = nearest_column(row_mouth, g["mouth_half_w"])
    mirror = lambda j: n_cols - j  # noqa: E731 - column j at +x mirrors to column n_cols - j at -x
    slits = {
        "left_eye": Slit("left_eye", row_eye, inner, outer),
        "right_eye": Slit("right_eye", row_eye, mirror(outer), mirror(inner)),
        "mouth": Slit("mouth", row_mouth, mirror(corner), corner),
    }
    topology = build_head_topology(n_rows, n_cols, list(slits.values()))
    theta = np.zeros(topology.n_vertices)
    phi = np.zeros(topology.n_vertices)
    grid = topology.row_of < n_rows
    grid &= topology.row_of >= 0
    theta[grid] = theta_rows[topology.row_of[grid]]
    phi[grid] = phi_cols[topology.col_of[grid]]
    theta[topology.bottom_pole] = np.pi
    theta[topology.top_pole] = 0.0
    layout = HeadLayout(topology, theta_rows, phi_cols, theta, phi, slits)
    _, layout.nominal_radius = surface_points(*lid_warp(layout, g, LidState()), g, base)
    return layout


def lid_warp(layout: HeadLayout, g: dict[str, float], lids: LidState) -> tuple[np.ndarray, np.ndarray]:
    """Ray angles with both eyes' lids opened as ``lids`` says, (n_head,) each."""
    topo = layout.topology
    theta = layout.theta.copy()
    row_theta = layout.theta
    scales = {
        "left_eye": (lids.left_upper, lids.left_lower),
        "right_eye": (lids.right_upper, lids.right_lower),
    }
    for name, (up_scale, low_scale) in scales.items():
        slit = layout.slits[name]
        theta_s = layout.theta_rows[slit.row]
        phi_a, phi_b = layout.phi_cols[slit.col_start], layout.phi_cols[slit.col_end]
        u = 2.0 * (layout.phi - phi_a) / (phi_b - phi_a) - 1.0
        u_io = u if name == "left_eye" else -u  # -1 inner corner, +1 outer corner
        inside = np.abs(u) <= 1.0
        radius_eye = 0.2
        # Almond: the upper lid peaks a little towards the nose, the lower lid a little outwards.
        up_shape = np.where(inside, np.clip(1.0 - u_io**2, 0.0, None) ** 0.8 * (1.0 - 0.18 * u_io), 0.0)
        low_shape = np.where(inside, np.clip(1.0 - u_io**2, 0.0, None) ** 0.9 * (1.0 + 0.2 * u_io), 0.0)
        up_amount = up_scale * g["upper_lid_open"] / radius_eye * up_shape
        low_amount = low_scale * g["lower_lid_open"] / radius_eye * low_shape
        tilt = g["canthal_tilt"] / radius_eye * 0.5 * u_io * smoothstep(1.8, 1.0, np.abs(u_io))
        above = (row_theta < theta_s) | ((topo.row_of == slit.row) & (topo.side == 1))
        below = (row_theta > theta_s) | ((topo.row_of == slit.row) & (topo.side == -1))
        on_row = topo.row_of == slit.row
        dist = np.abs(row_theta - theta_s)
        fall_up = np.clip(1.0 - dist / _UPPER_LID_REACH, 0.0, None) ** 2
        fall_low = np.clip(1.0 - dist / _LOWER_LID_REACH, 0.0, None) ** 2
        lateral = smoothstep(2.2, 1.0, np.abs(u))
        shift = np.zeros_like(theta)
        shift = np.where(above, -up_amount * fall_up - tilt * fall_up * lateral, shift)
        shift = np.where(below, low_amount * fall_low - tilt * fall_low * lateral, shift)
        # Corners and the rest of the slit row (outside the corners) only follow the tilt.
        shift = np.where(on_row & (topo.side == 0), -tilt * lateral, shift)
        theta = theta + shift
    return theta, layout.phi


def throat_smoother(
    layout: HeadLayout, head: np.ndarray, g: dict[str, float], iterations: int = 16, rate: float = 0.5
) -> scipy.sparse.csr_matrix:
    """Fixed linear smoothing of the concave throat, (n_head, n_head).

    Where the underside of the jaw meets the neck the rays graze the surface and
    leave faint ridges. ``iterations`` steps of Laplacian smoothing, weighted by
    a mask that is 1 along that junction and 0 elsewhere (computed once, from
    the nominal surface ``head``), remove them. The operator is fixed and
    linear, so applying it to every construction keeps the blendshapes
    consistent with the template.
    """
    faces = layout.topology.faces
    n = layout.topology.n_vertices
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    adjacency = scipy.sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    average = scipy.sparse.diags(1.0 / degree) @ adjacency
    y, z = head[:, 1], head[:, 2]
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
    below = jaw_line - y  # > 0 under the jaw line
    mask = (
        smoothstep(-0.02, 0.005, below)
        * smoothstep(0.11, 0.07, below)
        * smoothstep(0.16, 0.12, z)
        * (y < -0.1)
    )
    step = scipy.sparse.identity(n) + rate * scipy.sparse.diags(mask) @ (average - scipy.sparse.identity(n))
    operator = scipy.sparse.identity(n, format="csr")
    for _ in range(iterations):
        operator = step @ operator
    return operator.tocsr()


class HeadSurfaceBuilder:
    """Rebuilds the head surface quickly for parameters near the nominal ones.

    The nominal surface is solved once; for new base parameters the ray
    distances are corrected by three chord-Newton steps (using the nominal
    d field / d t; rays that do not converge are solved afresh), and rays whose
    direction moved (opened or closed lids) are refined by Newton steps.
    Normals of the base surface are kept from the nominal solution except on
    moved rays: they only orient small side features, so the error is of
    second order in the parameter change.
    """

    def __init__(self, layout: HeadLayout, g: dict[str, float]) -> None:
        self.layout = layout
        self.g0 = dict(g)
        self.base0 = BaseShape(g)
        self.smoother: scipy.sparse.csr_matrix | None = None
        self.theta0, phi = lid_warp(layout, g, LidState())
        self.origins0, self.dirs0 = ray_frame(self.theta0, phi)
        p0, self.normals0, self.radius0 = base_points(self.theta0, phi, self.base0)
        h = 1e-5
        self.slope0 = (self.base0.field(p0 + h * self.dirs0) - self.base0.field(p0 - h * self.dirs0)) / (
            2 * h
        )
        self.slope0 = np.maximum(self.slope0, 1e-2)

    def __call__(self, g: dict[str, float], lids: LidState = LidState()) -> np.ndarray:  # noqa: B008 - frozen
        """(n_head, 3) head-surface vertices for geometry ``g`` and lid state ``lids``."""
        base = self.base0 if all(g[k] == self.g0[k] for k in BASE_KEYS) else BaseShape(g)
        theta, phi = lid_warp(self.layout, g, lids)
        radius = self.radius0.copy()
        origins, dirs = self.origins0, self.dirs0
        if base is not self.base0:
            for _ in range(3):
                step = base.field(origins + radius[:, None] * dirs) / self.slope0
                radius -= np.clip(step, -0.01, 0.01)
            # Rays that did not converge (none expected after the neck frame, but be safe): solve afresh.
            residual = np.abs(base.field(origins + radius[:, None] * dirs))
            stuck = np.flatnonzero(residual > 1e-7)
            if stuck.size:
                radius[stuck] = base.solve_radius(origins[stuck], dirs[stuck])
        normals = self.normals0
        moved = np.flatnonzero(theta != self.theta0)
        if moved.size:
            origins, dirs = origins.copy(), dirs.copy()
            origins[moved], dirs[moved] = ray_frame(theta[moved], phi[moved])
            radius[moved] = base.refine_radius(origins[moved], dirs[moved], radius[moved])
        p0 = origins + radius[:, None] * dirs
        if moved.size:
            normals = normals.copy()
            normals[moved] = base.normals(p0[moved])
        points = sculpt(p0, normals, g)
        if self.smoother is None:
            self.smoother = throat_smoother(self.layout, points, g)
        return self.smoother @ points
