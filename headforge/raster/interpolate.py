"""Barycentric interpolation of vertex or face-corner attributes over rasterized fragments."""

from __future__ import annotations

import torch
from torch import Tensor

from headforge.raster.rasterize import Fragments

__all__ = ["interpolate"]


def interpolate(
    attributes: Tensor | None,
    faces: Tensor | None,
    fragments: Fragments,
    face_attributes: Tensor | None = None,
) -> Tensor:
    """Interpolate attributes at every pixel with the fragments' barycentrics.

    Differentiable w.r.t. the attributes and (through ``fragments.bary``) the screen-space
    vertex positions.  Give either per-vertex ``attributes`` with ``faces`` or per-corner
    ``face_attributes``.  Texture coordinates with seams work either way: pass the UV array
    with ``uv_faces`` (same face order as the rasterized faces) as ``attributes, faces``.

    Args:
        attributes: (B, V, C) or (V, C) per-vertex values, or None with ``face_attributes``.
        faces: (F, 3) int64 indices into ``attributes``; F and face order must match the
            faces that produced ``fragments``.
        fragments: output of :func:`~headforge.raster.rasterize.rasterize`, (B, H, W).
        face_attributes: (B, F, 3, C) or (F, 3, C) values at each face's three corners.

    Returns:
        (B, H, W, C) interpolated values; 0 on background pixels.
    """
    batch, height, width = fragments.face_id.shape
    batch_idx, rows, cols = fragments.mask.nonzero(as_tuple=True)
    face = fragments.face_id[batch_idx, rows, cols]

    if face_attributes is not None:
        if face_attributes.dim() == 3:
            corners = face_attributes[face]
        elif face_attributes.dim() == 4:
            corners = face_attributes[_batch_index(face_attributes, batch, batch_idx), face]
        else:
            raise ValueError(
                f"face_attributes must be (B, F, 3, C) or (F, 3, C), got {tuple(face_attributes.shape)}"
            )
    else:
        if attributes is None or faces is None:
            raise ValueError("give attributes and faces, or face_attributes")
        vertex_ids = faces.long()[face]  # (P, 3)
        if attributes.dim() == 2:
            corners = attributes[vertex_ids]
        elif attributes.dim() == 3:
            corners = attributes[_batch_index(attributes, batch, batch_idx)[:, None], vertex_ids]
        else:
            raise ValueError(f"attributes must be (B, V, C) or (V, C), got {tuple(attributes.shape)}")

    dtype = torch.promote_types(corners.dtype, fragments.bary.dtype)
    weights = fragments.bary[batch_idx, rows, cols].to(dtype)  # (P, 3)
    values = torch.einsum("pk,pkc->pc", weights, corners.to(dtype))
    image = values.new_zeros(batch, height, width, values.shape[-1])
    return image.index_put((batch_idx, rows, cols), values)


def _batch_index(tensor: Tensor, batch: int, batch_idx: Tensor) -> Tensor:
    """Index of each fragment's batch item in ``tensor``; a batch of one broadcasts."""
    if tensor.shape[0] == batch:
        return batch_idx
    if tensor.shape[0] == 1:
        return torch.zeros_like(batch_idx)
    raise ValueError(f"attribute batch {tensor.shape[0]} does not match fragments batch {batch}")
