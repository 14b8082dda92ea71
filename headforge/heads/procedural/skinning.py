"""Kinematic tree, skinning weights and joint regressor of the procedural head.

Joints (FLAME order): 0 root (neck base), 1 neck (head nod / turn), 2 jaw,
3 left eye (+x), 4 right eye. Parents: [-1, 0, 1, 1, 1].

Weights are smooth functions of the template position, except across the
lip slit where the upper copy belongs to the skull (jaw weight 0) and the
lower copy to the jaw (1), which is what lets the lips part.
"""

from __future__ import annotations

import numpy as np

from headforge.heads.procedural.assembly import EYE_NAMES, MeshParts
from headforge.heads.procedural.fields import smoothstep
from headforge.heads.procedural.parts import EYEBALL_EQUATOR_RING, EYEBALL_SEGMENTS
from headforge.heads.procedural.surface import HeadLayout

__all__ = ["PARENTS", "JOINT_NAMES", "lip_side", "jaw_weight", "skinning_weights", "joint_regressor"]

JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)


def lip_side(layout: HeadLayout, mesh: MeshParts) -> np.ndarray:
    """(V,) +1 above the lip slit (upper lip, skull side), -1 below, 0 on the corners.

    Bag vertices take the side of the slit-loop vertex they hang from; parts
    that are not skin get 0.
    """
    topo = layout.topology
    row = layout.slits["mouth"].row
    head = np.sign(topo.row_of - row).astype(np.float64)
    on_row = topo.row_of == row
    head[on_row] = topo.side[on_row]
    side = np.zeros(mesh.n_vertices)
    side[: topo.n_vertices] = head
    for name in ("left_eye_socket", "right_eye_socket", "mouth_bag"):
        sl = mesh.vertex_slices[name]
        side[sl] = head[mesh.anchor[sl]]
    return side


def jaw_weight(
    vertices: np.ndarray,
    side: np.ndarray,
    layout: HeadLayout,
    mesh: MeshParts,
    corner_x: float,
    slit_y: float,
) -> np.ndarray:
    """(V,) weight of the jaw joint.

    Skin below the "jaw line" moves with the jaw: the lip slit between the
    corners, then a line rising from each corner towards the ear, with a
    transition that widens away from the mouth. It fades out behind the jaw
    angle and down the neck.
    """
    x, y, z = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    beyond = np.clip(np.abs(x) - corner_x, 0.0, None)
    line = slit_y + 0.55 * beyond
    width = 0.004 + 0.3 * beyond
    below = smoothstep(width, -width, y - line)
    # Exactly on the slit the copy decides: upper lip stays with the skull, lower lip goes with the jaw.
    between = np.abs(x) < corner_x
    below = np.where(between & (side > 0), 0.0, below)
    below = np.where(between & (side < 0), 1.0, below)
    weight = below * smoothstep(-0.03, 0.05, z) * smoothstep(-0.285, -0.205, y + 0.1 * z)
    sl = mesh.vertex_slices
    weight[sl["mouth_bag"]] = 0.5 * (1.0 - side[sl["mouth_bag"]])  # upper half 0, corners 0.5, lower half 1
    weight[sl["mouth_bag"].stop - 1] = 0.5  # the throat pole
    for name in ("left_eye_socket", "right_eye_socket", "left_eyeball", "right_eyeball", "upper_teeth"):
        weight[sl[name]] = 0.0
    weight[sl["lower_teeth"]] = 1.0
    weight[sl["tongue"]] = 1.0
    return weight


def skinning_weights(
    vertices: np.ndarray,
    side: np.ndarray,
    layout: HeadLayout,
    mesh: MeshParts,
    corner_x: float,
    slit_y: float,
) -> np.ndarray:
    """(V, 5) LBS weights, rows summing to 1.

    Root takes the lower neck (blending over the neck's height, measured along
    a plane tilted with the jaw line so the chin stays on the head); the jaw as
    in ``jaw_weight``; eyeballs belong to their eye joint; everything else to
    the neck joint (the skull).
    """
    weights = np.zeros((vertices.shape[0], 5))
    y, z = vertices[:, 1], vertices[:, 2]
    root = smoothstep(-0.17, -0.3, y + 0.35 * z)
    jaw = jaw_weight(vertices, side, layout, mesh, corner_x, slit_y) * (1.0 - root)
    weights[:, 0] = root
    weights[:, 2] = jaw
    weights[:, 1] = 1.0 - root - jaw
    for joint, name in zip((3, 4), EYE_NAMES):
        sl = mesh.vertex_slices[f"{name}ball"]
        weights[sl] = 0.0
        weights[sl, joint] = 1.0
    for name in ("left_eye_socket", "right_eye_socket", "upper_teeth"):
        weights[mesh.vertex_slices[name]] = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    return weights


def _nearest(vertices: np.ndarray, candidates: np.ndarray, target: np.ndarray) -> int:
    return int(candidates[np.argmin(np.linalg.norm(vertices[candidates] - target, axis=1))])


def joint_regressor(
    vertices: np.ndarray, layout: HeadLayout, mesh: MeshParts, g: dict[str, float]
) -> np.ndarray:
    """(5, V) joint regressor; each row sums to 1 so joints follow shape changes.

    * root: centroid of a ring of neck vertices near the neck base (weighted by spacing);
    * neck: 0.6 x the midpoint of two skin vertices in front of the ears
      (the skull-neck pivot height) + 0.4 x the centroid of an upper neck ring;
    * jaw: midpoint of two skin vertices over the jaw hinges, in front of the ears;
    * eyes: centroid of each eyeball's equator ring (exactly the eyeball centre).
    """
    topo = layout.topology
    n = vertices.shape[0]
    reg = np.zeros((5, n))
    skin = np.arange(topo.n_vertices)

    def ring_row(y_target: float) -> np.ndarray:
        front = topo.grid_index[:, topo.n_cols // 2]
        row = int(np.argmin(np.abs(vertices[front, 1] - y_target)))
        return topo.grid_index[row]

    def ring_weights(ring: np.ndarray) -> np.ndarray:
        spacing = np.linalg.norm(vertices[np.roll(ring, -1)] - vertices[np.roll(ring, 1)], axis=1)
        return spacing / spacing.sum()

    base_ring = ring_row(g["neck_bottom_y"] + 0.09)
    reg[0, base_ring] = ring_weights(base_ring)
    upper_ring = ring_row(-0.2)
    reg[1, upper_ring] = 0.4 * ring_weights(upper_ring)
    for sign in (-1.0, 1.0):
        ear_front = _nearest(vertices, skin, np.array([sign * 0.16, g["ear_y"] - 0.03, g["ear_z"] - 0.02]))
        reg[1, ear_front] += 0.3
        hinge = _nearest(vertices, skin, np.array([sign * 0.16, -0.03, 0.03]))
        reg[2, hinge] += 0.5
    for joint, name in zip((3, 4), EYE_NAMES):
        start = mesh.vertex_slices[f"{name}ball"].start
        equator = start + 1 + EYEBALL_EQUATOR_RING * EYEBALL_SEGMENTS + np.arange(EYEBALL_SEGMENTS)
        reg[joint, equator] = 1.0 / EYEBALL_SEGMENTS
    return reg
