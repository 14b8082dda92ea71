"""Material ids, segmentation classes and per-material constants of the studio.

Every rendered face carries a *material* (how it is coloured and shaded);
each material belongs to one *segmentation class* (what the segmentation map
says). Brows and lips are painted on the skin, so their class comes from the
skin texture's masks rather than from the material.
"""

from __future__ import annotations

import torch

__all__ = [
    "Material",
    "SEGMENT_NAMES",
    "SEGMENT_IDS",
    "SEGMENT_PALETTE",
    "MATERIAL_SEGMENT",
    "SPECULAR_STRENGTH",
    "SPECULAR_SHININESS",
    "HAIR_MATERIALS",
]


class Material:
    """Material ids (ints, so they index tensors)."""

    SKIN = 0
    NECK = 1
    EAR = 2
    EYEBALL = 3
    EYE_SOCKET = 4
    MOUTH_CAVITY = 5
    TEETH = 6
    TONGUE = 7
    HAIR = 8
    HAIR_CURTAIN = 9
    HAIR_BUN = 10
    FACIAL_HAIR = 11
    CLOTHING = 12
    BODY_SKIN = 13
    GUMS = 14
    COUNT = 15


#: Segmentation classes, by id (the values stored in the segmentation maps).
SEGMENT_NAMES = (
    "background",
    "skin",
    "hair",
    "eyes",
    "brows",
    "lips",
    "mouth_interior",
    "neck",
    "clothing",
    "ears",
    "facial_hair",
    "nose",
)
SEGMENT_IDS = {name: index for index, name in enumerate(SEGMENT_NAMES)}

#: Class of each material (brows and lips are decided by the skin texture instead).
MATERIAL_SEGMENT = torch.tensor(
    [
        SEGMENT_IDS["skin"],  # SKIN
        SEGMENT_IDS["neck"],  # NECK
        SEGMENT_IDS["ears"],  # EAR
        SEGMENT_IDS["eyes"],  # EYEBALL
        SEGMENT_IDS["eyes"],  # EYE_SOCKET (the inner lid lining)
        SEGMENT_IDS["mouth_interior"],  # MOUTH_CAVITY
        SEGMENT_IDS["mouth_interior"],  # TEETH
        SEGMENT_IDS["mouth_interior"],  # TONGUE
        SEGMENT_IDS["hair"],  # HAIR
        SEGMENT_IDS["hair"],  # HAIR_CURTAIN
        SEGMENT_IDS["hair"],  # HAIR_BUN
        SEGMENT_IDS["facial_hair"],  # FACIAL_HAIR
        SEGMENT_IDS["clothing"],  # CLOTHING
        SEGMENT_IDS["neck"],  # BODY_SKIN (neck / chest skin above the clothing)
        SEGMENT_IDS["mouth_interior"],  # GUMS
    ]
)

#: Schlick F0 of each material (hair: Kajiya-Kay strength instead).
SPECULAR_STRENGTH = torch.tensor(
    [0.028, 0.025, 0.025, 0.4, 0.05, 0.02, 0.12, 0.1, 0.05, 0.05, 0.05, 0.03, 0.012, 0.025, 0.1]
)
#: Blinn-Phong exponent of each material (hair: Kajiya-Kay exponent).
SPECULAR_SHININESS = torch.tensor(
    [24.0, 18.0, 18.0, 400.0, 60.0, 10.0, 60.0, 40.0, 60.0, 60.0, 60.0, 30.0, 6.0, 18.0, 40.0]
)

HAIR_MATERIALS = (Material.HAIR, Material.HAIR_CURTAIN, Material.HAIR_BUN, Material.FACIAL_HAIR)

#: A distinct display colour per class for palette segmentation PNGs (flat RGB list, 256 entries).
_CLASS_COLORS = [
    (0, 0, 0),
    (230, 180, 150),
    (90, 60, 30),
    (80, 160, 240),
    (140, 90, 50),
    (220, 60, 80),
    (120, 20, 40),
    (240, 220, 120),
    (60, 160, 90),
    (250, 140, 40),
    (160, 110, 200),
    (200, 140, 120),
]
SEGMENT_PALETTE = [channel for color in _CLASS_COLORS for channel in color] + [0] * (
    3 * (256 - len(_CLASS_COLORS))
)
