"""Facial features as smooth displacement fields on the base surface.

Front features (brows, eye sockets, nose, lips, philtrum, chin) push points
along +z as height fields over the face-front coordinates (x, y): moving
along +z keeps every vertex's (x, y), so grid rows can never fold over each
other under the nose or the lips. Side features (cheekbones, temples, ears)
push along the outward horizontal direction. The closed-lid surface is a
sphere around each eyeball merged with a smooth maximum.

All lengths in world units; ``g`` holds the geometry parameters (params.py).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

from headforge.heads.procedural.base_shape import smooth_max
from headforge.heads.procedural.fields import bump, ellipse_bump, norm_max, ridge, smoothstep

__all__ = ["front_height", "side_height", "ear_height", "sculpt", "lid_sphere_z"]


def _nose_height(x: np.ndarray, y: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """Height of the nose above the base face, (N,).

    A swept cross-section ``H(y) * (1 - (x / W(y))^2)^1.5``: the midline
    height H is a monotone cubic through nasion, dorsum, supratip, tip and
    subnasale heights; the half-width W widens from the bridge to the base.
    Alar wings are merged with a norm-max; nostrils are dents underneath.
    """
    ax = np.abs(x - g["nose_shift_x"] * smoothstep(0.04, -0.06, y))
    y_top, y_tip, y_sub = g["nasion_y"], g["nose_tip_y"], g["subnasale_y"]
    h_top, h_tip = g["nasion_h"], g["nose_tip_h"]
    length = y_top - y_tip
    profile_y = [
        y_sub - 0.002,
        y_sub,
        y_tip - 0.6 * (y_tip - y_sub),
        y_tip,
        y_tip + 0.16 * length,
        y_top - 0.45 * length,
        y_top,
        y_top + 0.026,
    ]
    profile_h = [
        0.0,
        0.0,
        0.8 * h_tip,
        h_tip,
        h_tip - g["tip_bulb"],
        h_top + g["dorsum_mid"] * (h_tip - h_top),
        h_top,
        0.0,
    ]
    height = PchipInterpolator(profile_y, profile_h, extrapolate=False)(y)
    height = np.nan_to_num(height, nan=0.0)
    width_y = [y_sub - 0.01, y_sub, y_tip, y_top - 0.5 * length, y_top, y_top + 0.03]
    width_v = [
        g["nose_tip_half_w"] * 0.8,
        g["nose_tip_half_w"] * 0.9,
        g["nose_tip_half_w"],
        g["nose_bridge_half_w"] + 0.004,
        g["nose_bridge_half_w"],
        g["nose_bridge_half_w"] + 0.012,
    ]
    half_w = PchipInterpolator(width_y, width_v, extrapolate=False)(np.clip(y, width_y[0], width_y[-1]))
    dorsum = height * np.clip(1.0 - (ax / half_w) ** 2, 0.0, None) ** 1.5
    alae = g["alar_h"] * ellipse_bump(ax, y, g["alar_x"], y_sub + 0.012, 0.019, 0.016, angle=0.3)
    nose = norm_max(dorsum, alae, 2.5)
    nostril = ellipse_bump(ax, y, 0.0105, y_sub + 0.005, 0.007, 0.0045)
    alar_groove = ellipse_bump(ax, y, g["alar_x"] + 0.016, y_sub + 0.014, 0.006, 0.017, angle=0.3)
    return nose - 0.005 * nostril - 0.002 * alar_groove


def _lip_height(x: np.ndarray, y: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """Vermilion bulges, philtrum, mentolabial sulcus and chin, (N,)."""
    ax = np.abs(x)
    y_m, half_w = g["mouth_y"], g["mouth_half_w"]
    lateral = np.clip(1.0 - (ax / half_w) ** 2, 0.0, None)
    # Upper vermilion: a Cupid's bow, highest at x = +-bow_x, dipping at the midline.
    bow = (
        1.0
        + 0.16 * (np.exp(-(((x - 0.009) / 0.006) ** 2)) + np.exp(-(((x + 0.009) / 0.006) ** 2)))
        - 0.1 * np.exp(-((x / 0.004) ** 2))
    )
    up_h = g["upper_lip_height"] * bow * lateral**0.55 + 1e-4
    v_up = (y - y_m) / up_h
    upper = g["upper_lip_thick"] * lateral**0.6 * np.clip(1.0 - ((v_up - 0.42) / 0.62) ** 2, 0.0, None) ** 0.8
    upper = upper * (y >= y_m - 0.004)
    low_h = g["lower_lip_height"] * lateral**0.45 + 1e-4
    v_low = (y_m - y) / low_h
    lower = g["lower_lip_thick"] * lateral**0.6 * np.clip(1.0 - ((v_low - 0.5) / 0.64) ** 2, 0.0, None) ** 0.8
    lower = lower * (y <= y_m + 0.004)
    lips = np.maximum(upper, lower)
    # Skin around the mouth: philtral columns, the sulcus under the lower lip, the chin pad.
    philtrum_top = g["subnasale_y"] - 0.004
    philtrum = g["philtrum_depth"] * (
        ridge(ax, y, (0.0075, y_m + 0.017), (0.0055, philtrum_top), 0.0045)
        - 0.6 * ridge(ax, y, (0.0, y_m + 0.017), (0.0, philtrum_top), 0.0045)
    )
    sulcus = (
        -g["sulcus_depth"]
        * ridge(x, y, (-0.036, y_m - 0.03), (0.036, y_m - 0.03), 0.011, taper=0.6)
        * (1.0 - 0.25 * (x / 0.036) ** 2)
    )
    chin = g["chin_pad"] * ellipse_bump(ax, y, 0.0, g["menton_y"] + 0.03, g["chin_half_w"], 0.036)
    corner = -0.003 * ellipse_bump(ax, y, half_w + 0.004, y_m, 0.008, 0.01)
    muzzle = g["muzzle"] * ellipse_bump(ax, y, 0.0, y_m + 0.016, 0.075, 0.07)
    return lips + philtrum + sulcus + chin + corner + muzzle


def _box(
    x: np.ndarray, y: np.ndarray, y_range: tuple[float, float], ax_max: float, ax_min: float = 0.0
) -> np.ndarray:
    """Indices of the points inside a (|x|, y) box: where a group of compact features can be non-zero."""
    ax = np.abs(x)
    return np.flatnonzero((y > y_range[0]) & (y < y_range[1]) & (ax < ax_max) & (ax >= ax_min))


def _brow_and_socket(x: np.ndarray, y: np.ndarray, g: dict[str, float]) -> np.ndarray:
    ax = np.abs(x)
    # Both brows are summed (not placed at |x|) so the sum stays smooth across the midline.
    brow = g["brow_ridge"] * (
        ellipse_bump(x, y, 0.052, g["brow_y"] - 0.004, 0.066, 0.026, angle=-0.08)
        + ellipse_bump(x, y, -0.052, g["brow_y"] - 0.004, 0.066, 0.026, angle=0.08)
    )
    glabella = 0.4 * g["brow_ridge"] * ellipse_bump(ax, y, 0.0, g["brow_y"] - 0.006, 0.03, 0.024)
    socket = -g["eye_socket_depth"] * ellipse_bump(ax, y, g["eye_x"], g["eye_y"] + 0.004, 0.052, 0.042)
    under_eye = -0.003 * ellipse_bump(ax, y, g["eye_x"] + 0.004, g["eye_y"] - 0.034, 0.034, 0.02, angle=-0.2)
    return brow + glabella + socket + under_eye


def _nasolabial(x: np.ndarray, y: np.ndarray, g: dict[str, float]) -> np.ndarray:
    return -g["nasolabial_depth"] * ridge(
        np.abs(x),
        y,
        (g["alar_x"] + 0.012, g["subnasale_y"] + 0.006),
        (g["mouth_half_w"] + 0.012, g["mouth_y"] - 0.012),
        0.016,
        taper=0.7,
    )


def front_height(p0: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """Height along +z of the front features above the base surface, (N,)."""
    x, y = p0[:, 0], p0[:, 1]
    h = np.zeros(p0.shape[0])
    upper = _box(x, y, (g["eye_y"] - 0.07, g["brow_y"] + 0.05), 0.13)
    h[upper] += _brow_and_socket(x[upper], y[upper], g)
    nose = _box(x, y, (g["subnasale_y"] - 0.03, g["nasion_y"] + 0.035), 0.075)
    h[nose] += _nose_height(x[nose], y[nose], g)
    mouth = _box(x, y, (g["menton_y"] - 0.03, g["mouth_y"] + 0.095), 0.115)
    h[mouth] += _lip_height(x[mouth], y[mouth], g) + _nasolabial(x[mouth], y[mouth], g)
    return h * smoothstep(0.03, 0.12, p0[:, 2])


def side_height(p0: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """Height along the outward horizontal direction: cheekbones, cheeks, temples, jaw angle, ears, (N,)."""
    x, y, z = p0[:, 0], p0[:, 1], p0[:, 2]
    h = np.zeros(p0.shape[0])
    face = np.flatnonzero((y > -0.145) & (y < 0.125) & (z > -0.02) & (np.abs(x) > 0.01))
    yf, axf = y[face], np.abs(x[face])
    cheekbone = g["cheekbone"] * ellipse_bump(
        axf, yf, g["cheekbone_x"], g["cheekbone_y"], 0.055, 0.036, angle=-0.15
    )
    cheek = g["cheek_fullness"] * ellipse_bump(axf, yf, 0.075, -0.08, 0.05, 0.05)
    temple = -g["temple_hollow"] * ellipse_bump(axf, yf, 0.125, 0.065, 0.04, 0.045)
    # Face features are placed in (|x|, y) but fade out towards the back of the head.
    h[face] += (cheekbone + cheek + temple) * smoothstep(-0.02, 0.08, z[face])
    jaw = np.flatnonzero(
        (np.abs(y - g["gonion_y"] - 0.012) < 0.04) & (np.abs(z - 0.01) < 0.05) & (np.abs(x) > 0.06)
    )
    h[jaw] += (
        g["jaw_angle"]
        * ellipse_bump(z[jaw], y[jaw], 0.01, g["gonion_y"] + 0.012, 0.045, 0.035)
        * smoothstep(0.06, 0.1, np.abs(x[jaw]))
    )
    reach = 0.085 * g["ear_size"]
    ear = np.flatnonzero(
        (np.abs(x) > 0.09) & (np.abs(y - g["ear_y"]) < reach) & (np.abs(z - g["ear_z"]) < reach)
    )
    h[ear] += ear_height(p0[ear], g)
    return h


def ear_height(p0: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """Stylised ear: a shell that stands off the side of the head, (N,).

    Ear-local coordinates: ``a`` front-to-back (tilted back by ``ear_tilt``),
    ``b`` bottom-to-top, both normalised by the ear's half-sizes.
    """
    x, y, z = p0[:, 0], p0[:, 1], p0[:, 2]
    side = smoothstep(0.09, 0.125, np.abs(x))
    size = g["ear_size"]
    half_h, half_w = 0.064 * size, 0.032 * size
    c, s = np.cos(g["ear_tilt"]), np.sin(g["ear_tilt"])
    dz, dy = z - g["ear_z"], y - g["ear_y"]
    a = (c * (-dz) + s * dy) / half_w  # + towards the back edge of the ear
    b = (-s * (-dz) + c * dy) / half_h
    # Outline: an egg, wider at the top; the lobe is narrower.
    width_at = 1.0 + 0.18 * b
    q = np.sqrt((a / width_at) ** 2 + b**2)
    outline = smoothstep(1.05, 0.75, q)
    # Stand-off grows towards the back rim (the ear flares out); the front is attached.
    flare = g["ear_protrusion"] * (0.3 + 0.7 * smoothstep(-1.0, 0.9, a))
    helix = 0.3 * g["ear_protrusion"] * bump((q - 0.8) / 0.2)
    concha = 0.55 * g["ear_protrusion"] * ellipse_bump(a, b, -0.1, -0.12, 0.55, 0.38)
    fossa = 0.25 * g["ear_protrusion"] * ellipse_bump(a, b, 0.05, 0.52, 0.5, 0.22)
    tragus = 0.25 * g["ear_protrusion"] * ellipse_bump(a, b, -0.85, -0.2, 0.25, 0.2)
    shell = (flare + helix - concha - fossa) * outline + tragus
    return shell * side


def lid_sphere_z(x: np.ndarray, y: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """z of the closed-lid surface in front of each eyeball, (N,).

    A paraboloid with its apex ``eye_radius + lid_thickness`` in front of the
    eyeball centre and the sphere's curvature there; it stays outside the
    eyeball everywhere but, unlike a sphere, has no vertical edge, so the
    smooth maximum with the skin (and every blendshape through it) stays smooth.
    """
    apex = g["eye_radius"] + g["lid_thickness"]
    spread = np.sqrt(2.0 * apex * apex)  # curvature radius at the apex equals ``apex``
    out = np.full(x.shape, -1.0)
    for sign in (-1.0, 1.0):
        r2 = (x - sign * g["eye_x"]) ** 2 + (y - g["eye_y"]) ** 2
        out = np.maximum(out, g["eye_z"] + apex * (1.0 - r2 / spread**2))
    return out


def sculpt(p0: np.ndarray, n0: np.ndarray, g: dict[str, float]) -> np.ndarray:
    """Apply all feature displacements to base surface points.

    Each group of features is evaluated only where it can be non-zero
    (front features need z > 0.03, side features the front half or the ear
    band), which keeps rebuilding the mesh for every blendshape cheap.

    Args:
        p0: (N, 3) base surface points.
        n0: (N, 3) base outward unit normals.
    Returns:
        (N, 3) sculpted points.
    """
    p = p0.copy()
    side = np.flatnonzero((p0[:, 2] > -0.02) | (np.abs(p0[:, 0]) > 0.085))
    # Horizontal part of the normal, not renormalised: side features fade out where the surface faces
    # up or down (under the jaw), instead of pushing in a noisy direction.
    horiz = n0[side].copy()
    horiz[:, 1] = 0.0
    p[side] += side_height(p0[side], g)[:, None] * horiz
    front = np.flatnonzero(p0[:, 2] > 0.03)
    p[front, 2] += front_height(p0[front], g)
    lid_zone = front[p0[front, 2] > 0.1]
    lid = lid_sphere_z(p[lid_zone, 0], p[lid_zone, 1], g)
    p[lid_zone, 2] = smooth_max(p[lid_zone, 2], lid, g["lid_blend"])
    return p
