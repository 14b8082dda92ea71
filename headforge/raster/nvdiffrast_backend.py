"""Optional nvdiffrast visibility backend (CUDA only; not a dependency).

nvdiffrast only replaces the z-buffer pass: it returns the visible face per pixel and
:func:`headforge.raster.rasterize.fragments_from_face_ids` recomputes barycentrics and depth
exactly as the torch reference does, so both backends produce the same Fragments semantics.

Conversion from headforge screen space (x right, y down in pixels, z depth) to clip space:

- ``x_ndc = 2 x / W - 1`` and ``y_ndc = 2 y / H - 1``.  nvdiffrast writes NDC ``y = -1`` to
  output row 0 (OpenGL's bottom row), so its rows already match our y-down rows; no flip.
- Perspective: ``w = z`` (camera depth) and ``(x, y) = ndc * w`` keep nvdiffrast's
  perspective-correct visibility identical; ``z_clip`` is an OpenGL depth mapping with
  near/far planes bracketing the mesh's depth range.
- Orthographic: ``w = 1`` and z is mapped affinely onto [-0.9, 0.9].
- Faces dropped by :func:`headforge.raster.visibility.face_keep_mask` (culling, near plane,
  degenerate) are collapsed to a point so that nvdiffrast never draws them; to allow that per
  batch item, every face gets its own three vertices (instanced mode, one shared triangle list).

Differences from the torch backend: pixels whose centre lies exactly on an edge follow
nvdiffrast's fill rule, and exact depth ties are not guaranteed to go to the lower face id.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clip_space_corners", "nvdiffrast_face_ids"]

_CONTEXTS: dict[torch.device, object] = {}


def _context(device: torch.device):
    """One RasterizeCudaContext per device, created lazily (creation is expensive)."""
    import nvdiffrast.torch as dr

    if device not in _CONTEXTS:
        _CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
    return _CONTEXTS[device]


def clip_space_corners(corners: Tensor, keep: Tensor, height: int, width: int, perspective: bool) -> Tensor:
    """(B, F, 3, 3) screen-space corners -> (B, F, 3, 4) clip-space corners, float32.

    ``keep`` (B, F) bool marks the faces to draw; the others become zero-area points.
    """
    x, y, z = corners.double().unbind(-1)
    x_ndc = 2.0 * x / width - 1.0
    y_ndc = 2.0 * y / height - 1.0
    kept_depth = z[keep]
    low = kept_depth.min() if kept_depth.numel() else z.new_tensor(1.0)
    high = kept_depth.max() if kept_depth.numel() else z.new_tensor(2.0)
    if perspective:
        near, far = 0.5 * low, 2.0 * high
        w = torch.where(keep[..., None], z, torch.ones_like(z))
        z_clip = (far + near) / (far - near) * w - 2.0 * far * near / (far - near)
    else:
        margin = 0.1 * (high - low) + 1e-6
        w = torch.ones_like(z)
        z_clip = 1.8 * (z - low + margin) / (high - low + 2.0 * margin) - 0.9
    clip = torch.stack([x_ndc * w, y_ndc * w, z_clip, w], dim=-1)
    # Collapse dropped faces (which may hold NaNs) to the point (0, 0, 0, 1): zero area, never drawn.
    collapsed = clip.new_tensor([0.0, 0.0, 0.0, 1.0]).expand_as(clip)
    return torch.where(keep[..., None, None], clip, collapsed).float()


def nvdiffrast_face_ids(
    screen_vertices: Tensor, faces: Tensor, keep: Tensor, height: int, width: int, perspective: bool
) -> Tensor:
    """Visible face per pixel computed by nvdiffrast.

    Args:
        screen_vertices: (B, V, 3) CUDA screen-space vertices.
        faces: (F, 3) int64 vertex indices (F < 2**24, nvdiffrast stores ids as float32).
        keep: (B, F) bool faces allowed to be drawn.
        height, width: image size in pixels.
        perspective: see :func:`headforge.raster.rasterize.rasterize`.

    Returns:
        (B, H, W) int64 face ids, -1 on background.
    """
    import nvdiffrast.torch as dr

    if not screen_vertices.is_cuda:
        raise ValueError("the nvdiffrast backend needs CUDA tensors")
    batch, num_faces = keep.shape
    if num_faces == 0:
        return torch.full((batch, height, width), -1, dtype=torch.int64, device=screen_vertices.device)
    clip = clip_space_corners(screen_vertices[:, faces], keep, height, width, perspective)
    positions = clip.reshape(batch, num_faces * 3, 4).contiguous()
    triangles = torch.arange(num_faces * 3, dtype=torch.int32, device=clip.device).view(num_faces, 3)
    raster, _ = dr.rasterize(_context(clip.device), positions, triangles, resolution=[height, width])
    return raster[..., 3].round().long() - 1
