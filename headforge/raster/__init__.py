"""Pure-PyTorch mesh rasterizer (with an optional nvdiffrast backend on CUDA).

Typical use::

    screen = perspective_screen_vertices(vertices, cam2world, intrinsics, H, W)
    fragments = rasterize(screen, faces, H, W)
    albedo = interpolate(vertex_colors, faces, fragments)          # (B, H, W, 3)

Conventions (screen space, fragments, orthographic tri-plane views) are documented in
:mod:`headforge.raster.rasterize` and :mod:`headforge.raster.projection`.
"""

from headforge.raster.geometry import face_normals, vertex_normals
from headforge.raster.interpolate import interpolate
from headforge.raster.projection import (
    orthographic_screen_vertices,
    orthographic_view_matrix,
    perspective_screen_vertices,
)
from headforge.raster.rasterize import Fragments, fragments_from_face_ids, nvdiffrast_available, rasterize
from headforge.raster.supersample import rasterize_supersampled, render_attributes, resolve_supersampled

__all__ = [
    "Fragments",
    "face_normals",
    "fragments_from_face_ids",
    "interpolate",
    "nvdiffrast_available",
    "orthographic_screen_vertices",
    "orthographic_view_matrix",
    "perspective_screen_vertices",
    "rasterize",
    "rasterize_supersampled",
    "render_attributes",
    "resolve_supersampled",
    "vertex_normals",
]
