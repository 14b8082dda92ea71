"""Per-sample PNG reports and the contact-sheet index of a preprocess run.

A report is three panels side by side at the crop's resolution: the crop with the
detected (green) and fitted (red) landmarks, the fitted mesh shaded by its normals and
blended over the crop, and the estimated lighting on a sphere
(``headforge.lighting.render_sh_sphere``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from headforge.lighting import irradiance, render_sh_sphere, sphere_normals

__all__ = ["draw_landmarks", "mesh_overlay", "sample_report", "contact_sheet"]


def draw_landmarks(
    image: np.ndarray, groups: Sequence[tuple[np.ndarray, tuple[int, int, int]]]
) -> np.ndarray:
    """Dots for (N, 2) normalised point sets, each with its RGB colour; returns a new uint8 image."""
    canvas = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(canvas)
    size = image.shape[0]
    radius = max(1.0, size / 200.0)
    for points, color in groups:
        for x, y in np.asarray(points) * size:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
    return np.asarray(canvas)


def mesh_overlay(image: np.ndarray, normals: Tensor, cam2world: Tensor, opacity: float = 0.6) -> np.ndarray:
    """Blend the mesh, grey-shaded by ``max(0, n . to_camera)``, over an image.

    Args:
        image: (H, W, 3) uint8. normals: (h, w, 3) world normals (zeros off the mesh), any h = w.
        cam2world: (4, 4).
    """
    facing = (normals @ -cam2world[:3, 2].to(normals)).clamp(min=0.0)
    covered = normals.norm(dim=-1) > 0
    shade = torch.stack([facing * 0.9 + 0.1] * 3, -1) * covered[..., None]
    alpha = covered.float()[..., None] * opacity
    size = image.shape[0]
    shade = torch.nn.functional.interpolate(shade.permute(2, 0, 1)[None], size=(size, size), mode="nearest")[
        0
    ]
    alpha = torch.nn.functional.interpolate(alpha.permute(2, 0, 1)[None], size=(size, size), mode="nearest")[
        0
    ]
    base = torch.from_numpy(np.array(image)).float().permute(2, 0, 1) / 255.0
    mixed = base * (1 - alpha) + shade * alpha
    return (mixed.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def sample_report(
    crop: np.ndarray,
    detected: np.ndarray,
    fitted: np.ndarray,
    normals: Tensor,
    cam2world: Tensor,
    sh: Tensor,
) -> np.ndarray:
    """(R, 3R, 3) uint8: landmarks | mesh overlay | SH sphere, for an (R, R, 3) crop.

    ``detected``/``fitted``: (70, 2) normalised crop coordinates. ``sh``: (9, 3).
    """
    size = crop.shape[0]
    marked = draw_landmarks(crop, [(detected, (0, 255, 0)), (fitted, (255, 40, 40))])
    overlay = mesh_overlay(crop, normals, cam2world)
    # Exposure normalised so the brightest point of the sphere is 0.9: the SH's overall scale
    # depends on the assumed skin albedo, its shape (direction, colour balance) does not.
    normals, mask = sphere_normals(64)
    peak = float(irradiance(normals[mask], sh.float()).max()) / math.pi
    sphere = render_sh_sphere(sh.float(), resolution=size, albedo=0.9 / max(peak, 1e-6)).numpy()
    return np.concatenate([marked, overlay, sphere], axis=1)


def contact_sheet(images: Sequence[np.ndarray], columns: int = 4, thumb_width: int = 384) -> np.ndarray:
    """Tile report images (resized to ``thumb_width``) into one uint8 sheet; blank if none."""
    if not images:
        return np.full((64, thumb_width, 3), 255, dtype=np.uint8)
    thumbs = []
    for image in images:
        height = max(1, round(image.shape[0] * thumb_width / image.shape[1]))
        thumbs.append(
            np.asarray(Image.fromarray(image).resize((thumb_width, height), Image.Resampling.BILINEAR))
        )
    row_height = max(t.shape[0] for t in thumbs)
    columns = min(columns, len(thumbs))
    rows = math.ceil(len(thumbs) / columns)
    sheet = np.full((rows * row_height, columns * thumb_width, 3), 255, dtype=np.uint8)
    for k, thumb in enumerate(thumbs):
        r, c = divmod(k, columns)
        sheet[r * row_height : r * row_height + thumb.shape[0], c * thumb_width : (c + 1) * thumb_width] = (
            thumb
        )
    return sheet
