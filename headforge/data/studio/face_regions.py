"""Soft masks of facial areas on the template surface, placed from the 68 + 2 landmarks.

The skin painter and the facial-hair builder share these masks. Every mask
is a function of template-space points (N, 3) -> (N,) in [0, 1]; the front
features (lips, brows, cheeks) are measured in the frontal (x, y) projection
and limited to the front of the head. Landmark indices follow iBUG 68
(0-based): jaw 0-16, brows 17-21 / 22-26, nose 27-35, eyes 36-41 / 42-47,
outer lips 48-59, inner lips 60-67; 68 / 69 are the iris centres.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "polygon_signed_distance",
    "polyline_distance",
    "soft_band",
    "lip_mask",
    "brow_distance",
    "gaussian_blob",
    "beard_mask",
    "interp1d",
    "front_weight",
]

OUTER_LIP = list(range(48, 60))
RIGHT_BROW = list(range(17, 22))  # image left (-x)
LEFT_BROW = list(range(22, 27))  # image right (+x)


def _segments(points: Tensor, closed: bool) -> tuple[Tensor, Tensor]:
    starts = points
    ends = torch.roll(points, -1, 0)
    if not closed:
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


def polyline_distance(queries: Tensor, points: Tensor, closed: bool = False) -> tuple[Tensor, Tensor]:
    """Distance (N,) from 2D ``queries`` (N, 2) to a polyline ``points`` (M, 2), and the
    arc-length position (N,) in [0, 1] of the closest point along it."""
    starts, ends = _segments(points, closed)
    edge = ends - starts  # (S, 2)
    lengths = edge.norm(dim=-1).clamp(min=1e-9)
    relative = queries[:, None, :] - starts[None]  # (N, S, 2)
    t = ((relative * edge[None]).sum(-1) / (lengths * lengths)[None]).clamp(0.0, 1.0)
    closest = starts[None] + t[..., None] * edge[None]
    distance = (queries[:, None, :] - closest).norm(dim=-1)  # (N, S)
    best = distance.argmin(1)
    cumulative = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
    along = (cumulative[best] + t.gather(1, best[:, None])[:, 0] * lengths[best]) / cumulative[-1]
    return distance.gather(1, best[:, None])[:, 0], along


def polygon_signed_distance(queries: Tensor, polygon: Tensor) -> Tensor:
    """Signed distance (N,) from 2D points (N, 2) to a closed polygon (M, 2); negative inside."""
    distance, _ = polyline_distance(queries, polygon, closed=True)
    starts, ends = _segments(polygon, closed=True)
    # Even-odd rule: count edge crossings of a ray towards +x.
    x, y = queries[:, 0:1], queries[:, 1:2]
    crosses = ((starts[None, :, 1] > y) != (ends[None, :, 1] > y)) & (
        x
        < starts[None, :, 0]
        + (y - starts[None, :, 1])
        * (ends[None, :, 0] - starts[None, :, 0])
        / (ends[None, :, 1] - starts[None, :, 1] + 1e-12)
    )
    inside = crosses.sum(1) % 2 == 1
    return torch.where(inside, -distance, distance)


def soft_band(value: Tensor, edge: float, softness: float) -> Tensor:
    """1 well below ``edge``, 0 well above, smooth over ``softness`` (a logistic step)."""
    return torch.sigmoid((edge - value) / max(softness, 1e-6))


def front_weight(points: Tensor, landmarks: Tensor, depth: float = 0.06) -> Tensor:
    """(N,) 1 on the face front, fading to 0 over ``depth`` behind the eyes' outer corners."""
    reference = 0.5 * (landmarks[36, 2] + landmarks[45, 2]) - 0.02
    return ((points[:, 2] - (reference - depth)) / depth).clamp(0.0, 1.0)


def lip_mask(points: Tensor, landmarks: Tensor, softness: float = 0.0015) -> Tensor:
    """(N,) vermilion mask: inside the outer lip contour (frontal projection) on the face front."""
    polygon = landmarks[OUTER_LIP, :2]
    signed = polygon_signed_distance(points[:, :2], polygon)
    front = (points[:, 2] > landmarks[OUTER_LIP, 2].min() - 0.02).to(points.dtype)
    return soft_band(signed, 0.0, softness) * front


def brow_distance(points: Tensor, landmarks: Tensor, flatten: float = 0.5) -> tuple[Tensor, Tensor]:
    """Distance (N,) to the nearer brow line and the position (N,) along it (0 inner end, 1 tail).

    The brow line runs through the brow landmarks with its arch flattened by
    ``flatten`` towards the arch's peak height (painted brows sit a little
    higher at the ends than a strongly arched landmark line).
    """
    queries = points[:, :2]

    def line(indices: list[int]) -> Tensor:
        xy = landmarks[indices, :2].clone()
        peak = xy[:, 1].max()
        xy[:, 1] = xy[:, 1] + flatten * (peak - xy[:, 1])
        return xy

    left_d, left_t = polyline_distance(queries, line(LEFT_BROW))
    right_d, right_t = polyline_distance(queries, line(RIGHT_BROW))
    # Landmarks 17 and 26 are the outer tails, 21 and 22 the inner ends.
    right_t = 1.0 - right_t  # 17 (tail) -> 21 (inner); the left brow runs 22 (inner) -> 26 (tail)
    use_left = left_d < right_d
    return torch.where(use_left, left_d, right_d), torch.where(use_left, left_t, right_t)


def gaussian_blob(points: Tensor, centre: Tensor, radius: float) -> Tensor:
    """(N,) exp(-|p - c|^2 / (2 r^2)) in 3D."""
    return torch.exp(-((points - centre) ** 2).sum(-1) / (2.0 * radius * radius))


def interp1d(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (like numpy.interp; xp any order, clamped ends)."""
    order = torch.argsort(xp)
    xp, fp = xp[order], fp[order]
    index = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, xp.shape[0] - 1)
    x0, x1 = xp[index - 1], xp[index]
    t = ((x - x0) / (x1 - x0).clamp(min=1e-9)).clamp(0.0, 1.0)
    return fp[index - 1] * (1.0 - t) + fp[index] * t


def beard_mask(points: Tensor, landmarks: Tensor, ear_centres: Tensor, softness: float = 0.006) -> Tensor:
    """(N,) area where beard hair grows: upper lip, cheeks below the cheekbones, jaw, chin, under the chin.

    Upper boundary: the nose base near the midline, rising to the sideburns at
    ear height; lower boundary: the jaw line (landmarks 0-16) minus an
    under-chin band; the lips themselves are excluded, and so is everything
    behind the ears.
    """
    x, y, z = points.unbind(-1)
    ax = x.abs()
    nose_base = landmarks[33, 1]
    ear_y = ear_centres[:, 1].mean()
    ear_x = ear_centres[:, 0].abs().mean()
    rise = ((ax - 0.045) / (0.8 * ear_x - 0.045)).clamp(0.0, 1.0)
    top = nose_base - 0.004 + (ear_y - nose_base) * rise * rise * (3.0 - 2.0 * rise)
    jaw_y = interp1d(x, landmarks[0:17, 0], landmarks[0:17, 1])
    bottom = jaw_y - 0.025
    in_front_of_ears = soft_band(-z, -float(ear_centres[:, 2].mean() + 0.025), softness)
    mask = soft_band(y - top, 0.0, softness) * soft_band(bottom - y, 0.0, 2.0 * softness) * in_front_of_ears
    return mask * (1.0 - lip_mask(points, landmarks, 0.002))
