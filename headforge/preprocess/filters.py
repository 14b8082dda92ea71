"""Video filters (NeRFFaceShop, Sec. V-A): frames with hands over the face or faces too
small are dropped; clips whose expression and jaw barely move are dropped (they teach
the animation branch nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ClipThresholds", "hand_covers_face", "clip_variation", "clip_is_expressive", "smooth_boxes"]


def hand_covers_face(face_box: np.ndarray, hands: list[np.ndarray], min_points: int = 3) -> bool:
    """True when any hand has at least ``min_points`` of its 21 landmarks inside the face box.

    Args:
        face_box: (4,) x0, y0, x1, y1 pixels. hands: (21, 2) pixel landmarks per hand.
    """
    x0, y0, x1, y1 = (float(v) for v in face_box)
    for hand in hands:
        inside = (hand[:, 0] >= x0) & (hand[:, 0] <= x1) & (hand[:, 1] >= y0) & (hand[:, 1] <= y1)
        if int(inside.sum()) >= min_points:
            return True
    return False


@dataclass
class ClipThresholds:
    """Least motion a clip must show to be kept.

    Attributes:
        expression_std: mean over components of the per-component std of the expression
            coefficients across frames (model units).
        jaw_std: std of the jaw opening (pose index 6) across frames, radians.
        min_frames: fewest frames left after the frame filters.
    A clip is kept when it reaches **either** motion threshold and has enough frames. The
    defaults sit above the fit's jitter on a still face (about 0.007 and 0.01).
    """

    expression_std: float = 0.03
    jaw_std: float = 0.03
    min_frames: int = 4


def clip_variation(expression: Tensor, pose: Tensor) -> dict[str, float]:
    """Motion statistics of a fitted clip: (T, E) expressions and (T, 15) poses."""
    if expression.shape[0] < 2:
        return {"expression_std": 0.0, "jaw_std": 0.0}
    return {
        "expression_std": float(expression.std(dim=0).mean()),
        "jaw_std": float(pose[:, 6].std()),
    }


def clip_is_expressive(expression: Tensor, pose: Tensor, thresholds: ClipThresholds) -> tuple[bool, dict]:
    """(keep?, statistics) for a fitted clip."""
    stats = clip_variation(expression, pose)
    enough = expression.shape[0] >= thresholds.min_frames
    moving = stats["expression_std"] >= thresholds.expression_std or stats["jaw_std"] >= thresholds.jaw_std
    return bool(enough and moving), stats


def smooth_boxes(boxes: Tensor, radius: int = 2) -> Tensor:
    """Moving average over time of (T, 3) crop boxes (centre x, centre y, side), edge-clamped.

    The per-frame crop jitters with the landmarks; a steady crop keeps the camera labels
    (not the pixels) responsible for the motion.
    """
    if boxes.shape[0] <= 1 or radius <= 0:
        return boxes.clone()
    padded = torch.cat([boxes[:1].expand(radius, -1), boxes, boxes[-1:].expand(radius, -1)])
    kernel = torch.ones(1, 1, 2 * radius + 1, dtype=boxes.dtype) / (2 * radius + 1)
    return torch.nn.functional.conv1d(padded.T[:, None], kernel)[:, 0].T
