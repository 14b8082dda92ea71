"""Where every texel of a head model's UV layout lies on the template surface.

The UV layout is rasterized as a flat mesh (u right, v up, so texel row 0 is
v = 1): each covered texel learns its face, its barycentrics and hence its
template-space position and its material. Skin textures are then painted as
functions of the template position (``skin_texture.py``), which makes them
independent of how the UV islands are laid out and seamless across seams.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.raster import interpolate, rasterize

__all__ = ["UVAtlas", "build_uv_atlas", "dilate_texture"]


@dataclass
class UVAtlas:
    """Texel -> surface lookup of a UV layout at ``resolution`` x ``resolution``.

    Attributes:
        resolution: texture size in texels.
        texel_rows, texel_cols: (N,) long, the covered texels.
        positions: (N, 3) template-space position of each covered texel.
        materials: (N,) long material id of each covered texel (from the face it lies on).
        features: (N, C) per-vertex features interpolated at each covered texel.
    """

    resolution: int
    texel_rows: Tensor
    texel_cols: Tensor
    positions: Tensor
    materials: Tensor
    features: Tensor

    def scatter(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """Texel values (N, C) -> texture (C, R, R), ``fill`` where no surface lies."""
        texture = values.new_full((values.shape[1], self.resolution, self.resolution), fill)
        texture[:, self.texel_rows, self.texel_cols] = values.T
        return texture

    def coverage(self) -> Tensor:
        """(R, R) bool mask of covered texels."""
        mask = torch.zeros(self.resolution, self.resolution, dtype=torch.bool, device=self.positions.device)
        mask[self.texel_rows, self.texel_cols] = True
        return mask


def build_uv_atlas(
    uv_coords: Tensor,
    uv_faces: Tensor,
    faces: Tensor,
    template_vertices: Tensor,
    face_materials: Tensor,
    resolution: int,
    vertex_features: Tensor | None = None,
) -> UVAtlas:
    """Rasterize a UV layout and look up every covered texel on the template mesh.

    Args:
        uv_coords: (T, 2) texture coordinates in [0, 1] (u right, v up).
        uv_faces: (F, 3) indices into ``uv_coords``, same face order as ``faces``.
        faces: (F, 3) vertex indices.
        template_vertices: (V, 3) template-space positions.
        face_materials: (F,) long material id per face.
        resolution: texture size.
        vertex_features: optional (V, C) values to interpolate at each texel (e.g. region indicators).
    """
    screen = torch.stack(
        [
            uv_coords[:, 0] * resolution,
            (1.0 - uv_coords[:, 1]) * resolution,
            torch.zeros_like(uv_coords[:, 0]),
        ],
        dim=-1,
    )
    fragments = rasterize(screen, uv_faces, resolution, resolution, perspective=False)
    features = (
        template_vertices.new_zeros(template_vertices.shape[0], 0)
        if vertex_features is None
        else (vertex_features)
    )
    values = interpolate(torch.cat([template_vertices, features], -1), faces, fragments)[0]  # (R, R, 3 + C)
    _, rows, cols = fragments.mask.nonzero(as_tuple=True)
    face_id = fragments.face_id[0, rows, cols]
    texels = values[rows, cols]
    return UVAtlas(resolution, rows, cols, texels[:, :3], face_materials[face_id], texels[:, 3:])


def dilate_texture(texture: Tensor, coverage: Tensor, steps: int = 4) -> Tensor:
    """Grow a texture (C, R, R) outwards from its covered texels (R, R) by ``steps`` texels.

    Empty texels next to covered ones take the mean of their covered
    neighbours, repeatedly; bilinear lookups near UV island borders then never
    blend in the empty background (no dark seams).
    """
    weights = coverage.to(texture.dtype)[None, None]
    values = (texture * weights[0])[None]
    kernel = torch.ones(1, 1, 3, 3, dtype=texture.dtype, device=texture.device)
    channels = texture.shape[0]
    for _ in range(steps):
        summed = F.conv2d(values, kernel.expand(channels, 1, 3, 3), padding=1, groups=channels)
        count = F.conv2d(weights, kernel, padding=1)
        grown = (count > 0) & (weights == 0)
        values = torch.where(grown, summed / count.clamp(min=1e-6), values)
        weights = torch.where(grown, torch.ones_like(weights), weights)
    return values[0]
