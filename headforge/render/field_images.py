"""Render a field from EG3D camera labels into images: one (B, K, h, w) map per composited output.

The step every tri-plane system shares between "a field" and "a low-resolution
feature image": pixel rays from the 25-number labels, the volume renderer, and
the reshape of (B, h * w, K) ray outputs into NCHW maps.
"""

from __future__ import annotations

import torch

from headforge.cameras import pixel_rays
from headforge.render.renderer import Field, VolumeRenderer

__all__ = ["render_field_images"]

# Renderer outputs that are per sample, not per pixel.
_PER_SAMPLE_OUTPUTS = ("weights", "sample_depths")


def render_field_images(
    renderer: VolumeRenderer,
    field: Field,
    camera: torch.Tensor,
    resolution: int,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Volume-render ``field`` at ``resolution`` x ``resolution`` pixels per camera.

    Args:
        renderer: the volume renderer (its options decide sampling).
        field: renderer field callable (``field(points, directions) -> dict``).
        camera: (B, 25) EG3D labels (cam2world 4x4 + normalised intrinsics 3x3).
        resolution: image side in pixels.
        generator: optional RNG for the renderer's jitter.

    Returns:
        Every per-ray output of the renderer as an image: ``features``
        (B, C, h, w), ``depth`` (B, 1, h, w) (distance along the ray, world
        units), ``opacity`` (B, 1, h, w) and each extra field output (B, K, h, w).
    """
    cam2world = camera[:, :16].reshape(-1, 4, 4)
    intrinsics = camera[:, 16:25].reshape(-1, 3, 3)
    origins, directions = pixel_rays(cam2world, intrinsics, resolution, resolution)
    rendered = renderer(field, origins, directions, generator=generator)
    batch = camera.shape[0]
    return {
        name: value.permute(0, 2, 1).reshape(batch, -1, resolution, resolution)
        for name, value in rendered.items()
        if name not in _PER_SAMPLE_OUTPUTS
    }
