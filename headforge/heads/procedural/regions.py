"""Per-vertex semantic regions of the procedural head."""

from __future__ import annotations

import numpy as np

from headforge.heads.procedural.assembly import MeshParts
from headforge.heads.procedural.features import _nose_height
from headforge.heads.procedural.surface import HeadLayout

__all__ = ["REGION_NAMES", "REGION_GROUPS", "vertex_regions", "ear_mask"]

REGION_NAMES: tuple[str, ...] = (
    "skin",
    "hair",
    "brows",
    "nose",
    "ears",
    "lips",
    "neck",
    "eye_socket",
    "sclera",
    "iris",
    "pupil",
    "mouth_cavity",
    "gums",
    "teeth",
    "tongue",
)
#: Names accepted by ``region_mask`` that stand for several regions.
REGION_GROUPS: dict[str, tuple[str, ...]] = {
    "eyes": ("sclera", "iris", "pupil"),
    "mouth_interior": ("mouth_cavity", "gums", "teeth", "tongue"),
    "face": ("skin", "nose", "lips", "brows"),
}

# Hairline height against the ray azimuth |phi| (0 = forehead, pi = nape): it dips in front of the ear
# (sideburn), passes over the ear and falls behind it to the nape.
_HAIRLINE_PHI = np.array([0.0, 0.4, 0.7, 0.95, 1.2, 1.33, 1.48, 1.75, 2.0, 2.3, np.pi])
_HAIRLINE_Y = np.array([0.148, 0.14, 0.115, 0.088, 0.06, 0.025, 0.066, 0.07, 0.0, -0.06, -0.1])


def ear_mask(p: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """(N,) True for points (N, 3) on the ear shells."""
    size = g["ear_size"]
    c, s = np.cos(g["ear_tilt"]), np.sin(g["ear_tilt"])
    dz, dy = p[:, 2] - g["ear_z"], p[:, 1] - g["ear_y"]
    a = (c * (-dz) + s * dy) / (0.032 * size)
    b = (-s * (-dz) + c * dy) / (0.064 * size)
    q = np.sqrt((a / (1.0 + 0.18 * b)) ** 2 + b**2)
    return (q < 1.0) & (np.abs(p[:, 0]) > 0.1)


def vertex_regions(
    vertices: np.ndarray, layout: HeadLayout, mesh: MeshParts, g: dict[str, float]
) -> np.ndarray:
    """(V,) region index into ``REGION_NAMES`` for the template ``vertices`` (V, 3)."""
    label = np.zeros(vertices.shape[0], dtype=np.int64)
    idx = {name: i for i, name in enumerate(REGION_NAMES)}
    head = mesh.vertex_slices["head"]
    p = vertices[head]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    front = z > 0.1
    head_label = np.zeros(p.shape[0], dtype=np.int64)
    neck = y < np.interp(
        z,
        [-0.3, -0.05, 0.0, 0.06, 0.12, 0.17, 0.4],
        [
            -0.1,
            -0.13,
            g["gonion_y"] - 0.02,
            g["gonion_y"] - 0.045,
            g["menton_y"] - 0.02,
            g["menton_y"] - 0.012,
            g["menton_y"] - 0.012,
        ],
    )
    head_label[neck] = idx["neck"]
    nose = (
        front & (_nose_height(x, y, g) > 0.004) & (y < g["nasion_y"] + 0.005) & (y > g["subnasale_y"] - 0.006)
    )
    head_label[nose] = idx["nose"]
    lateral = np.clip(1.0 - (ax / g["mouth_half_w"]) ** 2, 0.0, None)
    lips = (
        front
        & (ax < g["mouth_half_w"])
        & (y < g["mouth_y"] + g["upper_lip_height"] * lateral**0.55)
        & (y > g["mouth_y"] - g["lower_lip_height"] * lateral**0.45)
    )
    head_label[lips] = idx["lips"]
    arch = g["brow_y"] + 0.004 - 18.0 * (ax - 0.058) ** 2
    brows = (
        front
        & (ax > 0.012)
        & (ax < 0.108)
        & (np.abs(y - arch) < 0.0095 * (1.0 - 0.45 * (ax - 0.012) / 0.096))
    )
    head_label[brows] = idx["brows"]
    hair = y > np.interp(np.abs(layout.phi), _HAIRLINE_PHI, _HAIRLINE_Y)
    head_label[hair] = idx["hair"]
    head_label[ear_mask(p, g)] = idx["ears"]
    label[head] = head_label

    for name in ("left_eye_socket", "right_eye_socket"):
        label[mesh.vertex_slices[name]] = idx["eye_socket"]
    bag = mesh.vertex_slices["mouth_bag"]
    loop = layout.topology.loops["mouth"].vertices.size
    label[bag] = idx["mouth_cavity"]
    label[bag.start : bag.start + loop] = idx["lips"]  # first ring: the inner lining of the lips
    alpha = mesh.eyeball_alpha
    eye_label = np.full(alpha.size, idx["sclera"])
    eye_label[alpha < np.arcsin(g["iris_radius"] / g["eye_radius"])] = idx["iris"]
    eye_label[alpha < np.arcsin(g["pupil_radius"] / g["eye_radius"])] = idx["pupil"]
    start = mesh.vertex_slices["left_eyeball"].start
    label[start : start + alpha.size] = eye_label
    teeth = slice(mesh.vertex_slices["upper_teeth"].start, mesh.vertex_slices["lower_teeth"].stop)
    label[teeth] = np.where(mesh.teeth_height > 0.75, idx["gums"], idx["teeth"])
    label[mesh.vertex_slices["tongue"]] = idx["tongue"]
    return label
