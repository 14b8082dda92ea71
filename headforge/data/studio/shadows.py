"""Cast shadows from a distant light with a shadow map and percentage-closer filtering.

The opaque scene is rasterized orthographically along the light direction.
Light space: rows of :func:`light_frame` are the world directions of the
shadow map's pixel x axis, its pixel y axis and the light direction ``l``;
``orthographic_screen_vertices`` with ``depth_axis_sign = -1`` then stores
``-p . l`` as depth, so the smallest depth is the surface nearest the light.
A point is lit when its own light-space depth is at most the stored depth
plus a bias; the comparison is averaged over a tent-weighted neighbourhood
of texels (percentage-closer filtering) which gives soft shadow edges and
hides the map's texels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.raster import orthographic_screen_vertices, rasterize

__all__ = ["ShadowMap", "light_frame", "render_shadow_map"]


def light_frame(direction: Tensor) -> Tensor:
    """(3, 3) orthonormal rows: shadow-map x axis, y axis, and the unit light direction."""
    forward = F.normalize(direction, dim=-1)
    helper = torch.tensor([0.0, 1.0, 0.0], dtype=forward.dtype, device=forward.device)
    if forward[1].abs() > 0.9:  # light from (nearly) straight above or below
        helper = torch.tensor([1.0, 0.0, 0.0], dtype=forward.dtype, device=forward.device)
    x_axis = F.normalize(torch.linalg.cross(helper, forward), dim=-1)
    y_axis = torch.linalg.cross(forward, x_axis)
    return torch.stack([x_axis, y_axis, forward])


@dataclass
class ShadowMap:
    """Depth of the surface nearest a distant light, per texel.

    Attributes:
        depth: (R, R) light-space depth ``-p . l`` of the nearest occluder, +inf where none.
        frame: (3, 3) rows from :func:`light_frame`.
        extent: half size (world units) of the square the map covers, centred on ``center``.
        center: (3,) world point at the map's centre.
    """

    depth: Tensor
    frame: Tensor
    extent: float
    center: Tensor

    @property
    def texel(self) -> float:
        """World size of one texel."""
        return 2.0 * self.extent / self.depth.shape[0]

    def project(self, points: Tensor) -> Tensor:
        """World points (N, 3) -> (N, 3): continuous texel x, texel y (centres at k + 0.5), depth."""
        screen = orthographic_screen_vertices(
            points - self.center,
            self.frame,
            self.extent,
            height=self.depth.shape[0],
            width=self.depth.shape[1],
        )
        return screen[0]

    def visibility(self, points: Tensor, normals: Tensor, filter_radius: float = 1.5) -> Tensor:
        """Fraction (N,) in [0, 1] of the light reaching world ``points`` (N, 3).

        Biases against self-shadowing ("acne"): points are pushed one texel
        along their ``normals`` (N, 3) before projection, and the depth test
        allows a slope-scaled margin. The comparison is filtered with a tent of
        half-width ``filter_radius`` texels.
        """
        light = self.frame[2]
        cosine = (normals * light).sum(-1).clamp(0.05, 1.0)
        offset_points = points + normals * self.texel
        projected = self.project(offset_points)
        tangent = torch.sqrt(1.0 - cosine * cosine) / cosine
        bias = self.texel * (0.5 + torch.clamp(tangent, max=4.0))
        point_depth = projected[:, 2] - bias

        size = self.depth.shape[0]
        centre = projected[:, :2] - 0.5  # texel-index coordinates (texel k centred at k)
        reach = int(math.ceil(filter_radius))
        taps = torch.arange(-reach + 1, reach + 1, device=points.device)
        base = torch.floor(centre).long()
        cols = base[:, 0:1] + taps[None, :]  # (N, T)
        rows = base[:, 1:2] + taps[None, :]
        weight_x = (1.0 - (cols.to(points.dtype) - centre[:, 0:1]).abs() / (filter_radius + 0.5)).clamp(
            min=0.0
        )
        weight_y = (1.0 - (rows.to(points.dtype) - centre[:, 1:2]).abs() / (filter_radius + 0.5)).clamp(
            min=0.0
        )
        inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
        flat = rows.clamp(0, size - 1)[:, :, None] * size + cols.clamp(0, size - 1)[:, None, :]  # (N, T, T)
        stored = self.depth.reshape(-1)[flat]
        lit = (point_depth[:, None, None] <= stored) | ~inside  # outside the map: nothing blocks the light
        weight = weight_y[:, :, None] * weight_x[:, None, :]
        return (weight * lit.to(points.dtype)).sum((1, 2)) / weight.sum((1, 2)).clamp(min=1e-12)


def render_shadow_map(
    vertices: Tensor,
    faces: Tensor,
    direction: Tensor,
    resolution: int,
    extent: float,
    center: Tensor | None = None,
) -> ShadowMap:
    """Rasterize the occluders as seen from a distant light.

    Args:
        vertices: (V, 3) world positions of every shadow-casting surface.
        faces: (F, 3) vertex indices, counter-clockwise seen from outside (closed surfaces, or
            two-sided sheets given with both windings).
        direction: (3,) direction towards the light.
        resolution: map size in texels (square).
        extent: half size in world units of the covered square (must contain the scene).
        center: (3,) centre of the covered square (default: origin).

    Returns:
        :class:`ShadowMap`.
    """
    frame = light_frame(direction.to(vertices))
    center = torch.zeros(3, dtype=vertices.dtype, device=vertices.device) if center is None else center
    screen = orthographic_screen_vertices(
        vertices - center, frame, extent, height=resolution, width=resolution
    )
    fragments = rasterize(screen, faces, resolution, resolution, perspective=False)
    return ShadowMap(depth=fragments.depth[0], frame=frame, extent=float(extent), center=center)
