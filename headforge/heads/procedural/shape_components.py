"""Identity (shape) components of the procedural head.

Each component is a named change of geometry parameters (params.py) by one
population standard deviation. Its blendshape is the resulting change of
every vertex, so shape coefficients are in units of standard deviations and
are sampled from N(0, 1).

Components that would move a slit (eye spacing / height / size, mouth width
/ height) are regional offsets applied after construction: a smooth weight
that is 1 over the whole eye (lids, socket, eyeball) or mouth (lips, cavity,
teeth) and 0 far away moves everything in the region together, so the slit
topology never changes. Ears move the same way (their sharp shell would
turn into fins under a linearised re-sculpting).
"""

from __future__ import annotations

import numpy as np

from headforge.heads.procedural.fields import smoothstep

__all__ = ["SHAPE_COMPONENTS", "SHAPE_NAMES", "regional_offsets"]

#: (name, {parameter: change at +1 standard deviation}).
SHAPE_COMPONENTS: tuple[tuple[str, dict[str, float]], ...] = (
    ("head_width", {"head_half_x": 0.005, "temple_half_x": 0.005, "cheek_half_x": 0.002}),
    ("head_length", {"head_back": 0.008}),
    ("head_height", {"crown_y": 0.009}),
    ("crown_squareness", {"dome_side_power": 0.25, "dome_front_power": 0.25}),
    ("forehead_slope", {"forehead_z": -0.006, "dome_front_power": -0.3}),
    ("brow_height", {"brow_y": 0.004}),
    ("brow_ridge", {"brow_ridge": 0.0025}),
    ("temple_hollow", {"temple_hollow": 0.003}),
    ("face_width", {"cheek_half_x": 0.005, "jaw_half_x": 0.003}),
    ("face_length", {"menton_y": -0.008, "gonion_y": -0.004}),
    ("face_flatness", {"face_squareness": 0.25}),
    ("midface_projection", {"midface_z": 0.005, "eye_front_z": 0.002}),
    ("cheekbone_prominence", {"cheekbone": 0.004}),
    ("cheekbone_height", {"cheekbone_y": 0.008}),
    ("cheekbone_width", {"cheekbone_x": 0.006}),
    ("cheek_fullness", {"cheek_fullness": 0.005}),
    ("jaw_width", {"jaw_half_x": 0.007}),
    ("jaw_angle", {"jaw_angle": 0.004, "gonion_y": 0.004}),
    ("jaw_softness", {"jaw_line_blend": 0.007}),
    ("chin_length", {"menton_y": -0.006}),
    ("chin_width", {"chin_half_w": 0.008}),
    ("chin_protrusion", {"chin_z": 0.006, "chin_pad": 0.002}),
    ("nose_length", {"nose_tip_y": -0.004, "subnasale_y": -0.003}),
    ("nose_width", {"nose_tip_half_w": 0.003, "alar_x": 0.003}),
    ("nose_bridge_height", {"nasion_h": 0.003, "dorsum_mid": 0.05}),
    ("nose_bridge_width", {"nose_bridge_half_w": 0.003}),
    ("nose_tip_size", {"tip_bulb": 0.003, "nose_tip_half_w": 0.002}),
    ("nose_tip_rotation", {"nose_tip_y": 0.004}),
    ("nose_protrusion", {"nose_tip_h": 0.006}),
    ("nostril_flare", {"alar_h": 0.004}),
    ("dorsum_hump", {"dorsum_mid": 0.08}),
    ("nose_deviation", {"nose_shift_x": 0.002}),
    ("eye_spacing", {"eye_spacing_offset": 0.003}),
    ("eye_height", {"eye_height_offset": 0.003}),
    ("eye_size", {"eye_scale": 0.06}),
    ("eye_depth", {"eye_z": -0.003, "eye_socket_depth": 0.003}),
    ("eye_openness", {"upper_lid_open": 0.0015, "lower_lid_open": 0.0006}),
    ("canthal_tilt", {"canthal_tilt": 0.002}),
    ("eye_socket_depth", {"eye_socket_depth": 0.004}),
    ("ear_size", {"ear_scale": 0.07}),
    ("ear_height", {"ear_height_offset": 0.005}),
    ("ear_protrusion", {"ear_protrusion": 0.005}),
    ("ear_position", {"ear_depth_offset": -0.005}),
    ("ear_angle", {"ear_tilt": 0.05}),
    ("upper_lip_thickness", {"upper_lip_thick": 0.002, "upper_lip_height": 0.002}),
    ("lower_lip_thickness", {"lower_lip_thick": 0.0025, "lower_lip_height": 0.002}),
    ("mouth_width", {"mouth_width_scale": 0.06}),
    ("mouth_height", {"mouth_height_offset": 0.004}),
    ("lip_protrusion", {"muzzle": 0.004}),
    ("philtrum_depth", {"philtrum_depth": 0.0008}),
    ("nasolabial_depth", {"nasolabial_depth": 0.0015}),
    ("neck_width", {"neck_half_x": 0.007, "neck_half_z": 0.005}),
    ("neck_angle", {"neck_lean": 0.08}),
)
SHAPE_NAMES: tuple[str, ...] = tuple(name for name, _ in SHAPE_COMPONENTS)


def eye_region_weight(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """1 within 0.032 of an eyeball centre (lids, socket, eyeball), 0 beyond 0.06, (N,)."""
    return smoothstep(0.06, 0.032, np.linalg.norm(points - centre, axis=1))


def mouth_region_weight(points: np.ndarray, centre_y: float, front_z: float) -> np.ndarray:
    """1 over the lips, the cavity and the teeth, fading out over the cheeks and chin, (N,)."""
    q = np.sqrt(
        (points[:, 0] / 0.075) ** 2
        + ((points[:, 1] - centre_y) / 0.05) ** 2
        + ((points[:, 2] - (front_z - 0.06)) / 0.1) ** 2
    )
    return smoothstep(1.0, 0.6, q)


def ear_region_weight(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """1 over the ear on the side of ``centre`` (within 0.07 in the side plane), 0 beyond 0.1, (N,)."""
    side = smoothstep(0.08, 0.11, points[:, 0] * np.sign(centre[0]))
    dist = np.hypot(points[:, 1] - centre[1], points[:, 2] - centre[2])
    return side * smoothstep(0.1, 0.07, dist)


def regional_offsets(
    points: np.ndarray,
    g: dict[str, float],
    eye_centres: dict[str, np.ndarray],
    mouth_centre_y: float,
    mouth_front_z: float,
) -> np.ndarray:
    """(N, 3) displacement from the regional-offset parameters (all zero at the nominal).

    Args:
        points: (N, 3) vertices before the offsets.
        eye_centres: "left_eye" / "right_eye" -> (3,) eyeball centre.
        mouth_centre_y, mouth_front_z: the lip slit's height and midline front.
    """
    disp = np.zeros_like(points)
    for centre in eye_centres.values():
        w = eye_region_weight(points, centre)[:, None]
        outward = np.array([np.sign(centre[0]), 0.0, 0.0])
        move = g["eye_spacing_offset"] * outward + np.array([0.0, g["eye_height_offset"], 0.0])
        disp += w * (move + g["eye_scale"] * (points - centre))
    w = mouth_region_weight(points, mouth_centre_y, mouth_front_z)
    disp[:, 0] += w * g["mouth_width_scale"] * points[:, 0]
    disp[:, 1] += w * g["mouth_height_offset"]
    for sign in (-1.0, 1.0):
        centre = np.array([sign * 0.15, g["ear_y"], g["ear_z"]])
        w = ear_region_weight(points, centre)[:, None]
        grow = points - centre
        grow[:, 0] = np.clip(grow[:, 0] * sign, 0.0, None) * sign  # the ear grows outwards, not into the head
        disp += w * (np.array([0.0, g["ear_height_offset"], g["ear_depth_offset"]]) + g["ear_scale"] * grow)
    return disp
