"""EG3D-style crop: put the face where the project's default camera would see it.

The studio and EG3D cameras look at the pivot (0, 0, 0.2) from 2.7 world units away
(2.5 from the pivot when frontal) with normalised focal 4.2647. A crop that matches them
therefore has (a) the head's pivot at its centre and (b) a side that spans
``PIVOT_DISTANCE / FFHQ_FOCAL`` ~= 0.586 world units at the pivot's depth.

We measure both from the landmarks with a scaled-orthographic (affine) fit of the mean
head's 70 landmarks to the detected ones (:func:`headforge.preprocess.pose_fit.initial_camera`'s
affine camera): its scale ``s`` (pixels per world unit) gives the side ``s * 0.586``
and the affine image of the pivot gives the centre. The crop is square, axis-aligned
(no in-plane rotation: as in EG3D, roll stays in the camera label) and resampled to the
output resolution. Faces whose crop side in the source is below ``min_face_px`` are left
out (the FFHQ rule against upsampled, blurry faces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from headforge.cameras import FFHQ_FOCAL, FFHQ_PIVOT, FFHQ_RADIUS

__all__ = ["PIVOT_DISTANCE", "CropBox", "crop_box_from_landmarks", "crop_image", "landmarks_to_crop"]

#: Distance from the frontal default camera to the pivot, world units.
PIVOT_DISTANCE = FFHQ_RADIUS - FFHQ_PIVOT[2]


@dataclass
class CropBox:
    """A square crop: centre (pixels, x right, y down) and side (pixels) in the source image."""

    center_x: float
    center_y: float
    side: float

    @property
    def corner(self) -> tuple[float, float]:
        return self.center_x - self.side / 2.0, self.center_y - self.side / 2.0

    def to_list(self) -> list[float]:
        return [self.center_x, self.center_y, self.side]


def crop_box_from_landmarks(
    observed: Tensor, model_landmarks: Tensor, weights: Tensor | None = None
) -> CropBox:
    """The EG3D-framed crop for one face.

    Args:
        observed: (70, 2) detected landmarks, pixels.
        model_landmarks: (70, 3) the mean head's landmarks, world units.
        weights: (70,) landmark weights (default ones).

    Returns:
        ``CropBox`` in source pixels.
    """
    obs = observed.double()
    pts = model_landmarks.double()
    w = torch.ones(pts.shape[0], dtype=torch.float64) if weights is None else weights.double()
    design = torch.cat([pts, torch.ones_like(pts[:, :1])], dim=-1) * w.sqrt()[:, None]
    affine = torch.linalg.lstsq(design, obs * w.sqrt()[:, None]).solution.T  # (2, 4)
    scale = float(affine[:, :3].norm(dim=-1).mean())
    pivot = affine @ torch.tensor([*FFHQ_PIVOT, 1.0], dtype=torch.float64)
    return CropBox(float(pivot[0]), float(pivot[1]), scale * PIVOT_DISTANCE / FFHQ_FOCAL)


def crop_image(image: np.ndarray, box: CropBox, resolution: int) -> np.ndarray:
    """Resample the crop to (resolution, resolution, 3) uint8; outside the source: edge-replicated.

    Args:
        image: (H, W, 3) uint8 RGB.
        box: the crop. resolution: output side in pixels.
    """
    height, width = image.shape[:2]
    x0, y0 = box.corner
    margin = int(np.ceil(max(0.0, -x0, -y0, x0 + box.side - width, y0 + box.side - height))) + 2
    padded = np.pad(image[..., :3], ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    left, top = x0 + margin, y0 + margin
    source = Image.fromarray(padded)
    cropped = source.transform(
        (resolution, resolution),
        Image.Transform.EXTENT,
        (left, top, left + box.side, top + box.side),
        resample=Image.Resampling.BICUBIC,
    )
    if box.side > 2 * resolution:  # EXTENT samples point-wise: pre-filter strong minification
        scale = int(box.side // resolution)
        small = source.resize((padded.shape[1] // scale, padded.shape[0] // scale), Image.Resampling.BOX)
        cropped = small.transform(
            (resolution, resolution),
            Image.Transform.EXTENT,
            tuple(v / scale for v in (left, top, left + box.side, top + box.side)),
            resample=Image.Resampling.BICUBIC,
        )
    return np.asarray(cropped, dtype=np.uint8)


def landmarks_to_crop(points: Tensor, box: CropBox) -> Tensor:
    """(..., 2) source pixels -> normalised crop coordinates in [0, 1] (x right, y down)."""
    corner = points.new_tensor(box.corner)
    return (points - corner) / box.side
