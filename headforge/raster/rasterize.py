"""Triangle rasterization into per-pixel fragments (face id, barycentrics, depth).

Screen space convention (shared by every backend and by :mod:`headforge.raster.projection`):

- ``x`` grows to the right and ``y`` grows downwards, both in pixel units; the centre of
  pixel (row ``i``, column ``j``) is at ``(x, y) = (j + 0.5, i + 0.5)``.
- ``z`` is the depth used by the z-buffer (smaller = nearer).  For a perspective projection
  it is the camera-space depth (> 0 in front of the camera) and attributes are interpolated
  perspective-correctly (screen-space barycentrics weighted by ``1 / z``).  For an
  orthographic projection ``z`` may have any sign and interpolation is affine.

A pixel belongs to a triangle when its centre lies inside it (edges are inclusive, widened by
``EDGE_TOLERANCE_PX`` so that meshes are watertight under float rounding).  The nearest
triangle wins; equal depths go to the lower face id, so results are deterministic.

Visibility is computed without gradients (it is piecewise constant); barycentrics and depth
of the winning triangles are then recomputed with differentiable torch ops, so gradients flow
to attributes and (through the barycentrics, inside triangles) to vertex positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.raster.visibility import (
    DEFAULT_CANDIDATE_BUDGET,
    EDGE_TOLERANCE_PX,
    face_keep_mask,
    visible_face_ids,
)

__all__ = ["EDGE_TOLERANCE_PX", "Fragments", "rasterize", "fragments_from_face_ids", "nvdiffrast_available"]


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize`.

    Attributes:
        face_id: (B, H, W) int64 index of the visible face, -1 on background.
        bary: (B, H, W, 3) barycentric weights of the face's three corners, perspective-correct
            for perspective rasterization; zeros on background.  Within
            ``EDGE_TOLERANCE_PX`` of an edge a weight may be very slightly negative.
        depth: (B, H, W) camera-space z (perspective) or screen z (orthographic) of the
            visible surface; ``+inf`` on background.
        mask: (B, H, W) bool, True where a face is visible.
    """

    face_id: Tensor
    bary: Tensor
    depth: Tensor
    mask: Tensor

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.face_id.shape[1]), int(self.face_id.shape[2])


def nvdiffrast_available() -> bool:
    """True when ``nvdiffrast.torch`` can be imported."""
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True


def _as_batched(screen_vertices: Tensor) -> Tensor:
    if screen_vertices.dim() == 2:
        screen_vertices = screen_vertices.unsqueeze(0)
    if screen_vertices.dim() != 3 or screen_vertices.shape[-1] != 3:
        raise ValueError(f"screen_vertices must be (B, V, 3) or (V, 3), got {tuple(screen_vertices.shape)}")
    if not screen_vertices.is_floating_point():
        raise TypeError("screen_vertices must be a floating point tensor")
    return screen_vertices


def _check_faces(faces: Tensor, num_vertices: int) -> Tensor:
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")
    faces = faces.long()
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise IndexError(f"faces index outside [0, {num_vertices})")
    return faces


def rasterize(
    screen_vertices: Tensor,
    faces: Tensor,
    height: int,
    width: int,
    perspective: bool = True,
    cull_backfaces: bool = False,
    backend: str = "auto",
    near: float = 1e-6,
    candidate_budget: int = DEFAULT_CANDIDATE_BUDGET,
) -> Fragments:
    """Rasterize triangles given in screen space.

    Args:
        screen_vertices: (B, V, 3) or (V, 3) float; x, y in pixels (see module docstring) and
            z = depth.  A (V, 3) input is treated as a batch of one.
        faces: (F, 3) integer vertex indices shared by the batch; F may be 0.
        height, width: output resolution in pixels.
        perspective: interpolate with perspective correction and drop every triangle that
            has a vertex with ``z <= near`` (no near-plane clipping: such triangles vanish
            entirely; keep meshes in front of the camera).
        cull_backfaces: drop triangles that wind clockwise *as seen on screen* (x right,
            y down), i.e. the back faces of a counter-clockwise (outward normal) mesh seen
            through a right-handed camera such as OpenCV's.  Orthographic tri-plane views
            from :func:`~headforge.raster.projection.orthographic_screen_vertices` may be
            mirrored; see its docstring.
        backend: ``"torch"`` (reference), ``"nvdiffrast"`` (CUDA, needs the package) or
            ``"auto"`` (nvdiffrast for CUDA tensors when importable, else torch).
        near: near-plane depth for perspective rasterization.
        candidate_budget: torch backend only; upper bound (to within 2x) on the number of
            (triangle, pixel) candidates processed at once, which bounds memory to roughly
            ``200 bytes * candidate_budget``.

    Returns:
        :class:`Fragments` with (B, H, W) tensors on the input's device.
    """
    screen_vertices = _as_batched(screen_vertices)
    faces = _check_faces(faces, screen_vertices.shape[1]).to(screen_vertices.device)
    if height <= 0 or width <= 0:
        raise ValueError(f"resolution must be positive, got {height}x{width}")

    if backend not in ("auto", "torch", "nvdiffrast"):
        raise ValueError(f"unknown backend {backend!r}")
    use_nvdiffrast = backend == "nvdiffrast" or (
        backend == "auto" and screen_vertices.is_cuda and nvdiffrast_available()
    )

    with torch.no_grad():
        keep = face_keep_mask(
            screen_vertices.detach(), faces, height, width, perspective, cull_backfaces, near
        )
        if use_nvdiffrast:
            from headforge.raster.nvdiffrast_backend import nvdiffrast_face_ids

            face_id = nvdiffrast_face_ids(screen_vertices.detach(), faces, keep, height, width, perspective)
        else:
            face_id = visible_face_ids(
                screen_vertices.detach(), faces, keep, height, width, perspective, candidate_budget
            )
    return fragments_from_face_ids(screen_vertices, faces, face_id, perspective)


def fragments_from_face_ids(
    screen_vertices: Tensor, faces: Tensor, face_id: Tensor, perspective: bool = True
) -> Fragments:
    """Build :class:`Fragments` from a visibility buffer, differentiably.

    Barycentrics are evaluated at pixel centres from the winning triangle's screen-space
    vertices; with ``perspective`` they are reweighted by ``1 / z`` (camera-space depth is the
    reciprocal of an affine function of screen position).  This is the one place where
    Fragments semantics are defined, so every backend only has to provide ``face_id``.

    Args:
        screen_vertices: (B, V, 3) screen-space vertices (see module docstring).
        faces: (F, 3) int64 vertex indices.
        face_id: (B, H, W) int64 visible face per pixel, -1 on background.
        perspective: perspective-correct barycentrics and camera depth if True.

    Returns:
        Fragments; ``bary`` and ``depth`` carry gradients to ``screen_vertices``.
    """
    batch, height, width = face_id.shape
    mask = face_id >= 0
    batch_idx, rows, cols = mask.nonzero(as_tuple=True)
    corners = screen_vertices[batch_idx[:, None], faces[face_id[batch_idx, rows, cols]]]  # (P, 3, 3)

    dtype = screen_vertices.dtype
    dx = cols.to(dtype) + 0.5 - corners[:, 0, 0]
    dy = rows.to(dtype) + 0.5 - corners[:, 0, 1]
    e1 = corners[:, 1, :2] - corners[:, 0, :2]
    e2 = corners[:, 2, :2] - corners[:, 0, :2]
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    b1 = (e2[:, 1] * dx - e2[:, 0] * dy) / det
    b2 = (e1[:, 0] * dy - e1[:, 1] * dx) / det
    screen_bary = torch.stack([1.0 - b1 - b2, b1, b2], dim=-1)
    z = corners[:, :, 2]
    if perspective:
        weights = screen_bary / z
        inverse_depth = weights.sum(-1)
        bary = weights / inverse_depth[:, None]
        depth = 1.0 / inverse_depth
    else:
        bary = screen_bary
        depth = (screen_bary * z).sum(-1)

    index = (batch_idx, rows, cols)
    bary_image = screen_vertices.new_zeros(batch, height, width, 3).index_put(index, bary)
    depth_image = screen_vertices.new_full((batch, height, width), float("inf")).index_put(index, depth)
    return Fragments(face_id=face_id, bary=bary_image, depth=depth_image, mask=mask)
