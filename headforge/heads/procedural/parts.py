"""Geometry of the eyeballs, eye sockets, mouth cavity, teeth and tongue.

Vertex layouts match ``topology.sphere_faces`` / ``bag_faces`` /
``tube_faces``. All functions are pure numpy in float64, world units.

Mouth frame: ``(0, mouth_centre_y, mouth_front_z)`` is the front of the lip
slit on the midline; the dental arch and the cavity are placed behind it.
"""

from __future__ import annotations

import numpy as np

from headforge.heads.procedural.fields import bump

__all__ = [
    "EYEBALL_RING_ANGLES",
    "eyeball_vertices",
    "socket_rings",
    "MOUTH_RINGS",
    "mouth_rings",
    "TEETH_SECTIONS",
    "TEETH_AROUND",
    "teeth_vertices",
    "TONGUE_RINGS",
    "TONGUE_SEGMENTS",
    "tongue_vertices",
    "SOCKET_RING_STEPS",
]

#: Polar angles (from the gaze axis) of the eyeball rings: dense over the iris, symmetric about pi/2
#: so that the equator ring (index 9) is exactly centred on the eyeball centre.
_FRONT = np.array([0.07, 0.14, 0.2, 0.27, 0.34, 0.42, 0.5, 0.6, 0.82, 1.08, 1.33])
EYEBALL_RING_ANGLES = np.concatenate([_FRONT, [np.pi / 2], (np.pi - _FRONT)[::-1]])
EYEBALL_EQUATOR_RING = _FRONT.size
EYEBALL_SEGMENTS = 24
#: Fraction of the way from the lid rim's polar angle to the back pole for each socket ring.
SOCKET_RING_STEPS = np.array([0.0, 0.18, 0.38, 0.6, 0.8])


def eyeball_vertices(centre: np.ndarray, g: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """UV-sphere eyeball looking along +z, with a corneal bulge.

    Returns:
        vertices ((2 + rings * segments), 3): front pole (pupil centre), rings, back pole;
        polar angle of each vertex from the gaze axis (for iris / pupil labels).
    """
    radius = g["eye_radius"]
    iris_angle = np.arcsin(g["iris_radius"] / radius)
    beta = 2.0 * np.pi * np.arange(EYEBALL_SEGMENTS) / EYEBALL_SEGMENTS
    alpha = np.concatenate([[0.0], np.repeat(EYEBALL_RING_ANGLES, EYEBALL_SEGMENTS), [np.pi]])
    beta_all = np.concatenate([[0.0], np.tile(beta, EYEBALL_RING_ANGLES.size), [0.0]])
    r = radius + g["cornea_bulge"] * np.clip(1.0 - (alpha / iris_angle) ** 2, 0.0, None) ** 2
    dirs = np.stack([np.sin(alpha) * np.cos(beta_all), np.sin(alpha) * np.sin(beta_all), np.cos(alpha)], 1)
    return centre + r[:, None] * dirs, alpha


def socket_rings(
    rim: np.ndarray, nominal_rim: np.ndarray, centre: np.ndarray, g: dict[str, float]
) -> np.ndarray:
    """Eye-socket lining behind the lid rim: a sphere just outside the eyeball.

    The first ring is the lid margin's inner edge and follows the rim as the
    lids open and close; deeper rings are fixed by the *open* rim, so a blink
    does not swing them across the eyeball.

    Args:
        rim: (L, 3) current lid-rim loop positions (``SlitLoop`` order).
        nominal_rim: (L, 3) rim positions with the lids open, relative to the
            eyeball centre.
        centre: (3,) eyeball centre.
    Returns:
        (len(SOCKET_RING_STEPS) * L + 1, 3): rings (ring-major), then the back pole.
    """
    radius = g["eye_radius"] + g["socket_margin"]
    current = rim - centre
    rings = [centre + radius * current / np.linalg.norm(current, axis=1, keepdims=True)]
    alpha = np.arccos(np.clip(nominal_rim[:, 2] / np.linalg.norm(nominal_rim, axis=1), -1.0, 1.0))
    beta = np.arctan2(nominal_rim[:, 1], nominal_rim[:, 0])
    for step in SOCKET_RING_STEPS[1:]:
        a = alpha + (np.pi - alpha) * step
        rings.append(
            centre + radius * np.stack([np.sin(a) * np.cos(beta), np.sin(a) * np.sin(beta), np.cos(a)], 1)
        )
    pole = centre + np.array([0.0, 0.0, -radius])
    return np.concatenate(rings + [pole[None]])


#: Mouth-cavity rings behind the lip slit: (half-width, half-height, depth behind the slit front).
#: Ring 1 is the inner surface of the lips; the cavity then opens around the dental arches.
MOUTH_RINGS = np.array(
    [
        [0.98, 0.005, 0.007],  # half-width of the first two rings is relative to the mouth corners
        [0.93, 0.014, 0.013],
        [0.040, 0.026, 0.022],
        [0.049, 0.036, 0.042],
        [0.054, 0.037, 0.060],
        [0.048, 0.033, 0.085],
        [0.030, 0.022, 0.100],
    ]
)
_MOUTH_CURVATURE = 6.0  # the cavity bends back with the face: dz = -k x^2


def mouth_rings(rim: np.ndarray, side: np.ndarray, centre_y: float, front_z: float) -> np.ndarray:
    """Mouth-cavity bag behind the lip-slit loop.

    Args:
        rim: (L, 3) lip-slit loop positions (``SlitLoop`` order).
        side: (L,) +1 upper lip, -1 lower lip, 0 corner.
        centre_y, front_z: the slit's height and its midline front.
    Returns:
        (len(MOUTH_RINGS) * L + 1, 3): rings then the back pole (throat).
    """
    corner_x = np.abs(rim[side == 0, 0]).mean()
    cos_psi = np.clip(rim[:, 0] / corner_x, -1.0, 1.0)
    sin_psi = np.where(side == 0, 0.0, np.sign(side) * np.sqrt(1.0 - cos_psi**2))
    rings = []
    for k, (half_w, half_h, depth) in enumerate(MOUTH_RINGS):
        w = half_w * corner_x if k < 2 else half_w
        x = w * cos_psi
        y = centre_y + half_h * sin_psi
        z = front_z - depth - _MOUTH_CURVATURE * x**2
        if k < 2:
            # Lip lining: follow the actual rim so the lips keep their shape as they part.
            x = rim[:, 0] * half_w
            y = rim[:, 1] + half_h * sin_psi
            z = rim[:, 2] - depth
        rings.append(np.stack([x, y, z], 1))
    pole = np.array([0.0, centre_y, front_z - MOUTH_RINGS[-1, 2] - 0.006])
    return np.concatenate(rings + [pole[None]])


TEETH_SECTIONS = 56
TEETH_AROUND = 10
#: Arc length (world units) from the midline at which each tooth ends: incisors, canine, premolars, molars.
_TOOTH_EDGES = np.cumsum([0.0172, 0.0132, 0.0152, 0.014, 0.014, 0.02, 0.02])


def teeth_vertices(
    g: dict[str, float], centre_y: float, front_z: float, upper: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One dental arch as a closed swept tube.

    The arch is the parabola ``z = front - setback - depth * a^2, x = a * half_w``
    (a in [-1, 1]); the cross-section is a rounded rectangle whose outer face
    lies on the arch, thin at the incisors and thick at the molars. The biting
    edge dips between neighbouring teeth.

    Returns:
        vertices (TEETH_SECTIONS * TEETH_AROUND + 2, 3) and, per vertex, the
        height fraction from the biting edge (0) to the gum end (1).
    """
    half_w = g["teeth_arch_half_w"] * (1.0 if upper else 0.93)
    depth = g["teeth_arch_depth"] * (1.0 if upper else 0.95)
    setback = g["teeth_setback"] + (0.0 if upper else 0.004)
    height = g["upper_teeth_height"] if upper else g["lower_teeth_height"]
    a = np.linspace(-1.0, 1.0, TEETH_SECTIONS)
    arch_x, arch_z = a * half_w, front_z - setback - depth * a**2
    tangent = np.stack([np.full_like(a, half_w), -2.0 * depth * a], 1)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    outward = np.stack([-tangent[:, 1], tangent[:, 0]], 1)  # (x, z), +z at the midline
    # Arc length from the midline, for tooth boundaries.
    seg = np.hypot(np.diff(arch_x), np.diff(arch_z))
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    arc = np.abs(arc - np.interp(0.0, a, arc))
    gap = np.min(np.abs(arc[:, None] - np.concatenate([[0.0], _TOOTH_EDGES])[None]), axis=1)
    notch = bump(gap / 0.0028)
    thickness = 0.0065 + 0.011 * np.abs(a) ** 1.5
    # Cross-section: gamma runs around the rounded rectangle.
    # Upper arch: gum towards +y; the lower arch is mirrored, so its loop runs the other way round to
    # keep the faces' outward orientation (see topology.tube_faces).
    direction = 1.0 if upper else -1.0
    gamma = direction * 2.0 * np.pi * np.arange(TEETH_AROUND) / TEETH_AROUND
    cx = np.sign(np.cos(gamma)) * np.abs(np.cos(gamma)) ** 0.5  # across the arch (+ = outward)
    cy = np.sign(np.sin(gamma)) * np.abs(np.sin(gamma)) ** 0.5  # along the tooth (+ = towards the gum)
    frac = 0.5 * (cy + 1.0)
    edge_y = centre_y - (0.0015 if upper else 0.003)
    sections = []
    for k in range(TEETH_SECTIONS):
        along = edge_y + direction * (notch[k] * 0.0022 * (1.0 - frac) + frac * height)
        across = 0.5 * thickness[k] * (cx - 1.0) * (1.0 - 0.08 * notch[k])
        x = arch_x[k] + across * outward[k, 0]
        z = arch_z[k] + across * outward[k, 1]
        sections.append(np.stack([x, along, z], 1))
    verts = np.concatenate(sections)
    # Cap centres sit a little beyond each end of the arch, along its tangent.
    caps = [
        sections[0].mean(0) - 0.002 * np.array([tangent[0, 0], 0.0, tangent[0, 1]]),
        sections[-1].mean(0) + 0.002 * np.array([tangent[-1, 0], 0.0, tangent[-1, 1]]),
    ]
    heights = np.concatenate([np.tile(frac, TEETH_SECTIONS), [0.5, 0.5]])
    return np.concatenate([verts, np.stack(caps)]), heights


TONGUE_RINGS = 12
TONGUE_SEGMENTS = 20


def tongue_vertices(g: dict[str, float], centre_y: float, front_z: float) -> np.ndarray:
    """A flattened ellipsoid inside the lower arch, tip forwards, with a shallow midline groove.

    Returns:
        (TONGUE_RINGS * TONGUE_SEGMENTS + 2, 3) in ``sphere_faces`` layout (front pole first).
    """
    centre = np.array([0.0, centre_y - 0.0135, front_z - g["teeth_setback"] - 0.036])
    semi = np.array([g["tongue_half_w"], 0.0095, 0.036])
    alpha = np.concatenate(
        [[0.0], np.repeat(np.linspace(0.0, np.pi, TONGUE_RINGS + 2)[1:-1], TONGUE_SEGMENTS), [np.pi]]
    )
    beta = np.concatenate(
        [[0.0], np.tile(2.0 * np.pi * np.arange(TONGUE_SEGMENTS) / TONGUE_SEGMENTS, TONGUE_RINGS), [0.0]]
    )
    unit = np.stack([np.sin(alpha) * np.cos(beta), np.sin(alpha) * np.sin(beta), np.cos(alpha)], 1)
    verts = centre + unit * semi
    top = np.clip(unit[:, 1], 0.0, None)
    verts[:, 1] -= 0.0025 * top * bump(unit[:, 0] / 0.45)
    return verts
