"""Antialiasing by supersampling: rasterize at ``factor`` x resolution, box-filter down."""

from __future__ import annotations

import torch
from torch import Tensor

from headforge.raster.interpolate import interpolate
from headforge.raster.rasterize import Fragments, rasterize

__all__ = ["rasterize_supersampled", "render_attributes", "resolve_supersampled"]


def rasterize_supersampled(
    screen_vertices: Tensor,
    faces: Tensor,
    height: int,
    width: int,
    factor: int = 2,
    **rasterize_kwargs,
) -> Fragments:
    """Rasterize ``factor x factor`` samples per output pixel.

    Screen coordinates stay in *output* pixel units; each output pixel (i, j) is covered by the
    sub-pixel centres ``(j + (s + 0.5) / factor, i + (t + 0.5) / factor)``.

    Args:
        screen_vertices: (B, V, 3) or (V, 3) screen-space vertices at the output resolution.
        faces: (F, 3) vertex indices.
        height, width: output resolution.
        factor: samples per pixel along each axis (1 = plain rasterization).
        **rasterize_kwargs: forwarded to :func:`~headforge.raster.rasterize.rasterize`.

    Returns:
        Fragments of size (B, height * factor, width * factor).
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if screen_vertices.dim() == 2:
        screen_vertices = screen_vertices.unsqueeze(0)
    scaled = screen_vertices * screen_vertices.new_tensor([factor, factor, 1.0])
    return rasterize(scaled, faces, height * factor, width * factor, **rasterize_kwargs)


def resolve_supersampled(image: Tensor, factor: int) -> Tensor:
    """Box-filter (B, H * factor, W * factor, C) supersampled values down to (B, H, W, C)."""
    batch, high_height, high_width, channels = image.shape
    if high_height % factor or high_width % factor:
        raise ValueError(f"image size {high_height}x{high_width} is not a multiple of {factor}")
    blocks = image.reshape(batch, high_height // factor, factor, high_width // factor, factor, channels)
    return blocks.mean(dim=(2, 4))


def render_attributes(
    screen_vertices: Tensor,
    faces: Tensor,
    attributes: Tensor | None,
    height: int,
    width: int,
    supersample: int = 1,
    background: float | Tensor = 0.0,
    face_attributes: Tensor | None = None,
    **rasterize_kwargs,
) -> tuple[Tensor, Tensor]:
    """Rasterize, interpolate attributes and resolve: an antialiased attribute image.

    Args:
        screen_vertices: (B, V, 3) or (V, 3) screen-space vertices.
        faces: (F, 3) vertex indices (also used to index ``attributes``).
        attributes: (B, V, C) or (V, C) per-vertex values, or None with ``face_attributes``.
        height, width: output resolution.
        supersample: samples per pixel along each axis.
        background: value of uncovered samples (scalar or (C,) tensor).
        face_attributes: optional (B, F, 3, C) or (F, 3, C) per-corner values.
        **rasterize_kwargs: forwarded to :func:`~headforge.raster.rasterize.rasterize`
            (``perspective``, ``cull_backfaces``, ``backend``...).

    Returns:
        image (B, H, W, C): mean over samples, background blended in by coverage;
        coverage (B, H, W, 1): fraction of samples covered by the mesh, in [0, 1].
    """
    fragments = rasterize_supersampled(screen_vertices, faces, height, width, supersample, **rasterize_kwargs)
    values = interpolate(attributes, faces, fragments, face_attributes=face_attributes)
    covered = fragments.mask[..., None].to(values.dtype)
    background = torch.as_tensor(background, dtype=values.dtype, device=values.device)
    values = values + (1.0 - covered) * background
    image = resolve_supersampled(values, supersample)
    coverage = resolve_supersampled(covered, supersample)
    return image, coverage
