"""The 68 iBUG landmarks + 2 iris centres as vertices of the procedural head.

Order (0-based, iBUG/dlib): 0-16 jaw contour from the subject's right ear
(-x) to the left; 17-21 right brow (outer -> inner), 22-26 left brow (inner
-> outer); 27-30 nose bridge (top -> tip); 31-35 nostril base (right ->
left); 36-41 right eye (outer corner, two upper-lid points, inner corner,
two lower-lid points); 42-47 left eye (inner corner, upper lid, outer
corner, lower lid); 48-59 outer lip contour (right corner, upper lip right
-> left, left corner, lower lip left -> right); 60-67 inner lip contour
(right corner, upper inner lip, left corner, lower inner lip); 68 left iris
centre, 69 right iris centre.

Lid and inner-lip points are the slit's own vertices (corners, upper copies,
lower copies), so blinks and mouth opening move them exactly; the jaw contour
is the template's frontal silhouette; the others are the front-most skin
vertices at anatomical target points. All are fixed vertices (a static
embedding, like FLAME's).
"""

from __future__ import annotations

import numpy as np

from headforge.heads.procedural.assembly import MeshParts
from headforge.heads.procedural.regions import ear_mask
from headforge.heads.procedural.surface import HeadLayout

__all__ = ["landmark_vertices"]


def _front_vertex(vertices: np.ndarray, candidates: np.ndarray, x: float, y: float) -> int:
    """Front-most skin vertex near (x, y): the point a frontal photo would show there."""
    d = np.hypot(vertices[candidates, 0] - x, vertices[candidates, 1] - y)
    near = candidates[d < d.min() + 0.002]
    return int(near[np.argmax(vertices[near, 2])])


def _slit_row_vertex(layout: HeadLayout, slit_name: str, fraction: float, upper: bool) -> int:
    """Vertex of a slit at ``fraction`` (0 = col_start corner, 1 = col_end corner), upper or lower copy."""
    slit = layout.slits[slit_name]
    col = int(round(slit.col_start + fraction * (slit.col_end - slit.col_start)))
    col = min(max(col, slit.col_start), slit.col_end)
    index = layout.topology.upper_index if upper else layout.topology.grid_index
    return int(index[slit.row, col])


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals of a (sub)mesh (zero for unused vertices)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    face_normal = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normal)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def landmark_vertices(
    vertices: np.ndarray, layout: HeadLayout, mesh: MeshParts, g: dict[str, float]
) -> np.ndarray:
    """(70,) vertex index of each landmark on the template ``vertices`` (V, 3)."""
    skin = np.arange(layout.topology.n_vertices)
    front = skin[vertices[skin, 2] > 0.05]
    ids = np.zeros(70, dtype=np.int64)

    # Jaw contour: the template's frontal silhouette. Point k is the skin vertex farthest from the face
    # centre (in x, y) within a narrow wedge of directions, sweeping from the right ear (k = 0, 10 degrees
    # below horizontal) under the chin (k = 8, straight down) to the left ear. Ears and the neck are left
    # out, so the contour follows the cheeks, the jaw and the chin.
    p = vertices[skin]
    jaw_line = np.interp(
        p[:, 2],
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
    # Surfaces facing down (under the chin and jaw) are hidden from a frontal camera, which sits
    # slightly above the chin: they cannot hold the silhouette.
    normals = _vertex_normals(vertices, layout.topology.faces)[skin]
    keep = (p[:, 2] > -0.02) & (p[:, 1] > jaw_line - 0.01) & ~ear_mask(p, g) & (normals[:, 1] > -0.92)
    cand = skin[keep]
    rel = vertices[cand, :2] - np.array([0.0, g["eye_y"] - 0.08])
    angle = np.arctan2(rel[:, 1], rel[:, 0])
    radius = np.hypot(rel[:, 0], rel[:, 1])
    for k in range(17):
        target = -np.pi / 2 + (k - 8) / 8.0 * np.radians(80.0)
        wedge = np.abs(np.angle(np.exp(1j * (angle - target)))) < np.radians(2.5)
        if k == 8:
            wedge &= np.abs(vertices[cand, 0]) < 1e-9  # the chin point on the midline
        ids[k] = int(cand[wedge][np.argmax(radius[wedge])])

    brow_x = np.linspace(0.105, 0.018, 5)
    brow_y = g["brow_y"] + 0.002 - 18.0 * (brow_x - 0.058) ** 2
    for k in range(5):
        ids[17 + k] = _front_vertex(vertices, front, -brow_x[k], brow_y[k])  # right brow, outer -> inner
        ids[26 - k] = _front_vertex(vertices, front, brow_x[k], brow_y[k])  # left brow, mirrored
    for k, y in enumerate(np.linspace(g["nasion_y"] - 0.004, g["nose_tip_y"], 4)):
        ids[27 + k] = _front_vertex(vertices, front, 0.0, y)
    for k, x in enumerate((-0.017, -0.009, 0.0, 0.009, 0.017)):
        ids[31 + k] = _front_vertex(vertices, front, x, g["subnasale_y"] + (0.003 if x else 0.001))

    # Eyes: corners and lid points are slit vertices. Right eye: col_start is the outer corner.
    ids[36] = _slit_row_vertex(layout, "right_eye", 0.0, False)
    ids[37] = _slit_row_vertex(layout, "right_eye", 1 / 3, True)
    ids[38] = _slit_row_vertex(layout, "right_eye", 2 / 3, True)
    ids[39] = _slit_row_vertex(layout, "right_eye", 1.0, False)
    ids[40] = _slit_row_vertex(layout, "right_eye", 2 / 3, False)
    ids[41] = _slit_row_vertex(layout, "right_eye", 1 / 3, False)
    ids[42] = _slit_row_vertex(layout, "left_eye", 0.0, False)  # left eye: col_start is the inner corner
    ids[43] = _slit_row_vertex(layout, "left_eye", 1 / 3, True)
    ids[44] = _slit_row_vertex(layout, "left_eye", 2 / 3, True)
    ids[45] = _slit_row_vertex(layout, "left_eye", 1.0, False)
    ids[46] = _slit_row_vertex(layout, "left_eye", 2 / 3, False)
    ids[47] = _slit_row_vertex(layout, "left_eye", 1 / 3, False)

    # Lips: outer contour on the vermilion border, inner contour on the slit.
    ids[48] = ids[60] = _slit_row_vertex(layout, "mouth", 0.0, False)
    ids[54] = ids[64] = _slit_row_vertex(layout, "mouth", 1.0, False)
    y_m, w = g["mouth_y"], g["mouth_half_w"]
    for k, x in enumerate((-0.55, -0.25, 0.0, 0.25, 0.55)):
        lateral = max(1.0 - x * x, 0.0)
        ids[49 + k] = _front_vertex(
            vertices, front, x * w, y_m + g["upper_lip_height"] * lateral**0.55 * 0.92
        )
        ids[59 - k] = _front_vertex(
            vertices, front, x * w, y_m - g["lower_lip_height"] * lateral**0.45 * 0.95
        )
    ids[61] = _slit_row_vertex(layout, "mouth", 0.25, True)
    ids[62] = _slit_row_vertex(layout, "mouth", 0.5, True)
    ids[63] = _slit_row_vertex(layout, "mouth", 0.75, True)
    ids[65] = _slit_row_vertex(layout, "mouth", 0.75, False)
    ids[66] = _slit_row_vertex(layout, "mouth", 0.5, False)
    ids[67] = _slit_row_vertex(layout, "mouth", 0.25, False)
    # Iris centres: the front pole of each eyeball (the pupil centre).
    ids[68] = mesh.vertex_slices["left_eyeball"].start
    ids[69] = mesh.vertex_slices["right_eyeball"].start
    return ids
