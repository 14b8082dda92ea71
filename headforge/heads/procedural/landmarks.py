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
lower copies), so blinks and mouth opening move them exactly; the others are
the skin vertices nearest to anatomical target points on the template.
"""

from __future__ import annotations

import numpy as np

from headforge.heads.procedural.assembly import MeshParts
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


def landmark_vertices(
    vertices: np.ndarray, layout: HeadLayout, mesh: MeshParts, g: dict[str, float]
) -> np.ndarray:
    """(70,) vertex index of each landmark on the template ``vertices`` (V, 3)."""
    skin = np.arange(layout.topology.n_vertices)
    front = skin[vertices[skin, 2] > 0.05]
    ids = np.zeros(70, dtype=np.int64)

    # Jaw contour: static points from the front of the ear, along the jaw's lower border, to the chin.
    gonion = np.array([g["jaw_half_x"] + 0.004, g["gonion_y"] + 0.006, 0.04])
    # The chin point is the lowest midline skin vertex of the chin (the menton).
    midline = skin[(np.abs(vertices[skin, 0]) < 1e-9) & (vertices[skin, 2] > 0.1)]
    chin = vertices[midline[np.argmin(vertices[midline, 1])]]
    top = np.array([g["cheek_half_x"] - 0.002, g["eye_y"] - 0.02, 0.06])
    for k in range(17):
        t = abs(k - 8) / 8.0  # 0 at the chin, 1 at the ear
        side = -1.0 if k < 8 else 1.0
        if t <= 0.55:
            target = chin + (gonion - chin) * (t / 0.55)
        else:
            target = gonion + (top - gonion) * ((t - 0.55) / 0.45)
        target = target * np.array([side, 1.0, 1.0])
        ids[k] = int(skin[np.argmin(np.linalg.norm(vertices[skin] - target, axis=1))])

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
