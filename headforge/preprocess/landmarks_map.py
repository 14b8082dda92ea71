"""MediaPipe face-mesh (478 points) -> the head models' 70 landmarks (68 iBUG + 2 irises).

The head models (``headforge.heads``) embed the 68 iBUG/dlib points in standard order,
then the subject's left iris centre (row 68) and right iris centre (row 69). MediaPipe's
face mesh has 468 surface points plus two 5-point irises (refined mode): 468-472 the
subject's right iris (468 = its centre), 473-477 the subject's left (473 = centre).

The table below picks, for every iBUG point, the MediaPipe vertex with the same
anatomical meaning (docs/preprocess.md lists it with the groups). "Right" is the
subject's right, which is image left in a photo. The jaw contour (iBUG 0-16) is a
silhouette in iBUG but a fixed surface curve in MediaPipe, so fitting gives it a lower
weight (``LANDMARK_FIT_WEIGHTS``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "MEDIAPIPE_TO_IBUG70",
    "IBUG_GROUPS",
    "IBUG_MIRROR",
    "LANDMARK_FIT_WEIGHTS",
    "mediapipe_to_ibug70",
    "inter_ocular_distance",
]

#: MediaPipe vertex index for each of the 70 model landmarks (68 iBUG + left iris + right iris).
# fmt: off
MEDIAPIPE_TO_IBUG70: tuple[int, ...] = (
    # 0-16 jaw contour, subject's right ear -> chin (8) -> left ear
    93, 132, 58, 172, 136, 150, 149, 176, 152, 400, 378, 379, 365, 397, 288, 361, 323,
    # 17-21 right brow (outer -> inner), 22-26 left brow (inner -> outer); lower brow edge
    46, 53, 52, 65, 55, 285, 295, 282, 283, 276,
    # 27-30 nose bridge (top -> tip), 31-35 nostril base (right -> left)
    168, 6, 195, 4, 98, 97, 2, 326, 327,
    # 36-41 right eye: outer corner, upper lid x2, inner corner, lower lid x2
    33, 160, 158, 133, 153, 144,
    # 42-47 left eye: inner corner, upper lid x2, outer corner, lower lid x2
    362, 385, 387, 263, 373, 380,
    # 48-59 outer lips: right corner, upper lip -> left corner, lower lip back
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # 60-67 inner lips: right corner, upper, left corner, lower
    78, 81, 13, 311, 308, 402, 14, 178,
    # 68 left iris centre, 69 right iris centre
    473, 468,
)
# fmt: on

#: Index ranges of the iBUG groups (for reports and per-group errors).
IBUG_GROUPS: dict[str, range] = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
    "irises": range(68, 70),
}

#: Each landmark's mirror partner (subject left <-> right), iBUG 68 convention + irises.
# fmt: off
IBUG_MIRROR: tuple[int, ...] = (
    *range(16, -1, -1),
    *range(26, 16, -1),
    27, 28, 29, 30, 35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
    64, 63, 62, 61, 60, 67, 66, 65,
    69, 68,
)
# fmt: on


def _fit_weights() -> Tensor:
    weights = torch.ones(70)
    # The jaw contour is where detectors and head models disagree most: on the studio's
    # heads MediaPipe's face oval sits 0.1-0.3 inter-ocular distances above the model's
    # iBUG jaw line (docs/preprocess.md); it only steadies the fit.
    weights[0:17] = 0.05
    weights[8] = 0.2
    return weights


#: Per-landmark weights used by the pose and model fits, (70,).
LANDMARK_FIT_WEIGHTS: Tensor = _fit_weights()


def mediapipe_to_ibug70(points: Tensor) -> Tensor:
    """Select the 70 model landmarks from MediaPipe output.

    Args:
        points: (..., 478, C) MediaPipe points (C = 2 or 3; pixel or normalised units).

    Returns:
        (..., 70, C) in the head models' landmark order.
    """
    if points.shape[-2] != 478:
        raise ValueError(f"expected 478 MediaPipe points (refined face mesh), got {points.shape[-2]}")
    index = torch.tensor(MEDIAPIPE_TO_IBUG70, device=points.device)
    return points.index_select(-2, index)


def inter_ocular_distance(landmarks: Tensor) -> Tensor:
    """Distance between the outer eye corners (iBUG 36 and 45), (...,) from (..., 70, C)."""
    return (landmarks[..., 36, :] - landmarks[..., 45, :]).norm(dim=-1)
