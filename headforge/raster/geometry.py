"""Mesh geometry helpers: face and vertex normals."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["face_normals", "vertex_normals"]


def _scaled_face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """(B, F, 3) cross products (v1 - v0) x (v2 - v0); length = twice the face area."""
    corners = vertices[:, faces.long()]  # (B, F, 3, 3)
    return torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)


def face_normals(vertices: Tensor, faces: Tensor, eps: float = 1e-12) -> Tensor:
    """Unit face normals by the right-hand rule (counter-clockwise winding points outwards).

    Args:
        vertices: (B, V, 3) or (V, 3) positions.
        faces: (F, 3) vertex indices.
        eps: degenerate faces get a zero normal instead of NaN.

    Returns:
        (B, F, 3), or (F, 3) for unbatched input.
    """
    unbatched = vertices.dim() == 2
    normals = F.normalize(
        _scaled_face_normals(vertices[None] if unbatched else vertices, faces), dim=-1, eps=eps
    )
    return normals[0] if unbatched else normals


def vertex_normals(vertices: Tensor, faces: Tensor, eps: float = 1e-12) -> Tensor:
    """Area-weighted unit vertex normals (sum of adjacent faces' area-scaled normals).

    Args:
        vertices: (B, V, 3) or (V, 3) positions.
        faces: (F, 3) vertex indices.
        eps: vertices without (non-degenerate) faces get a zero normal instead of NaN.

    Returns:
        (B, V, 3), or (V, 3) for unbatched input.  Differentiable.
    """
    unbatched = vertices.dim() == 2
    if unbatched:
        vertices = vertices[None]
    scaled = _scaled_face_normals(vertices, faces)  # (B, F, 3)
    batch, num_vertices = vertices.shape[:2]
    accumulated = vertices.new_zeros(batch, num_vertices, 3)
    for corner in range(3):
        accumulated = accumulated.index_add(1, faces[:, corner].long(), scaled)
    normals = F.normalize(accumulated, dim=-1, eps=eps)
    return normals[0] if unbatched else normals
