"""Nominal geometry parameters of the procedural head (the mean identity).

Every length is in world units; the head is built at about 0.002 world units
per millimetre of a real adult head (chin to crown ~0.477). Names ending in
``_y`` / ``_z`` are positions on those world axes (the head faces +z, +y is
up); ``_half_x`` / ``_half_w`` are half-widths; ``_h`` heights of a feature
above the surface it sits on.
"""

from __future__ import annotations

__all__ = ["NOMINAL"]

NOMINAL: dict[str, float] = {
    # --- base volume: cranium, face mass, jaw line, neck (base_shape.py)
    "crown_y": 0.262,  # top of the head
    "dome_y": 0.085,  # where the cranial dome starts to close
    "dome_side_power": 2.2,  # >2 makes the dome squarer seen from the front
    "dome_front_power": 2.5,  # >2 keeps the forehead upright longer
    "head_half_x": 0.156,  # widest cranium (parietal)
    "temple_half_x": 0.152,
    "cheek_half_x": 0.143,  # zygomatic width
    "jaw_half_x": 0.108,  # width at the jaw angles
    "forehead_z": 0.198,
    "brow_z": 0.200,
    "eye_front_z": 0.198,
    "midface_z": 0.205,
    "mouth_z": 0.212,
    "chin_z": 0.218,
    "head_back": 0.195,  # back of the cranium from the y axis
    "face_squareness": 2.6,  # superellipse exponent of the face front
    "gonion_y": -0.155,  # height of the jaw angles
    "menton_y": -0.215,  # lowest point of the chin
    "jaw_line_blend": 0.024,  # rounding of the jaw's lower border
    "neck_z": -0.025,
    "neck_lean": -0.2,  # dz/dy of the neck axis (the neck base sits forward)
    "neck_half_x": 0.1,
    "neck_half_z": 0.105,
    "neck_bottom_y": -0.43,
    "neck_top_y": -0.06,
    "neck_blend": 0.06,
    # --- brows, eyes, lids
    "brow_ridge": 0.008,
    "brow_y": 0.062,
    "eye_socket_depth": 0.016,
    "eye_x": 0.063,  # eyeball centre, half the interpupillary distance
    "eye_y": 0.020,
    "eye_z": 0.178,
    "eye_radius": 0.024,
    "lid_thickness": 0.0035,  # closed-lid sphere radius = eye_radius + lid_thickness
    "lid_blend": 0.007,
    "fissure_half_w": 0.03,  # half the corner-to-corner width of the eye opening
    "lid_closure_dy": -0.004,  # where the lids meet, relative to eye_y
    "upper_lid_open": 0.0125,  # upper lid margin above the closure line (centre of the eye)
    "lower_lid_open": 0.0055,  # lower lid margin below the closure line
    "canthal_tilt": 0.003,  # outer corner higher than the inner one by this much
    "cornea_bulge": 0.0015,
    "iris_radius": 0.0115,
    "pupil_radius": 0.0042,
    "socket_margin": 0.002,  # eye-socket lining sits this far outside the eyeball
    # --- nose
    "nose_shift_x": 0.0,
    "nasion_y": 0.030,
    "nose_tip_y": -0.058,
    "subnasale_y": -0.084,
    "nasion_h": 0.004,
    "nose_tip_h": 0.058,
    "tip_bulb": 0.006,
    "dorsum_mid": 0.5,  # 0.5: straight dorsum; lower scoops, higher humps
    "nose_bridge_half_w": 0.017,
    "nose_tip_half_w": 0.027,
    "alar_h": 0.021,
    "alar_x": 0.024,
    # --- mouth and chin
    "mouth_y": -0.125,  # the lip slit (stomion)
    "mouth_half_w": 0.048,
    "upper_lip_height": 0.016,
    "upper_lip_thick": 0.009,
    "lower_lip_height": 0.019,
    "lower_lip_thick": 0.011,
    "sulcus_depth": 0.004,
    "chin_pad": 0.006,
    "chin_half_w": 0.045,
    "muzzle": 0.013,
    "nasolabial_depth": 0.0015,
    "philtrum_depth": 0.0014,
    # --- cheeks, temples, jaw angle
    "cheekbone": 0.007,
    "cheekbone_x": 0.09,
    "cheekbone_y": -0.012,
    "cheek_fullness": 0.013,
    "temple_hollow": 0.006,
    "jaw_angle": 0.003,
    # --- ears
    "ear_size": 1.08,
    "ear_tilt": 0.25,
    "ear_z": -0.012,
    "ear_y": -0.008,
    "ear_protrusion": 0.026,
    # --- regional offsets applied after construction (shape components that move a slit)
    "eye_spacing_offset": 0.0,  # each eye moves outwards (x) by this much
    "eye_height_offset": 0.0,
    "eye_scale": 0.0,  # relative growth of each eye region about its eyeball centre
    "mouth_width_scale": 0.0,  # relative growth of the mouth region along x
    "mouth_height_offset": 0.0,
    "ear_scale": 0.0,  # relative growth of each ear region
    "ear_height_offset": 0.0,
    "ear_depth_offset": 0.0,
    # --- mouth interior
    "teeth_arch_half_w": 0.036,
    "teeth_arch_depth": 0.05,
    "teeth_setback": 0.025,  # incisors' front behind the lip slit's front
    "upper_teeth_height": 0.022,
    "lower_teeth_height": 0.02,
    "tongue_half_w": 0.026,
}
