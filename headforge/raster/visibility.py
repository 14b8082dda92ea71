"""Vectorised z-buffer visibility: which face covers each pixel (pure PyTorch reference).

How it works, all in batched tensor ops:

1. Per triangle (batch x faces), compute the pixel-centre bounding box, the affine maps from
   pixel position to barycentrics and to the z-buffer quantity, and drop unusable triangles.
2. Split every bounding box into "pieces" of at most ``candidate_budget`` pixels (only huge
   triangles get more than one) and group pieces so that one group holds about
   ``candidate_budget`` (triangle, pixel) candidates; memory is bounded by the budget.
3. For each group, enumerate the candidates of all its pieces at once (ragged arange via
   ``repeat_interleave``), evaluate the edge functions, and pack ``(depth, face id)`` of the
   inside candidates into one int64 key that is reduced with ``scatter_reduce('amin')`` into
   the z-buffer.  The key orders by depth first and face id second, so the nearest face wins
   and exact ties go to the lower face id; the reduction is order independent, hence
   deterministic on CPU and CUDA.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DEFAULT_CANDIDATE_BUDGET", "EDGE_TOLERANCE_PX", "face_keep_mask", "visible_face_ids"]

#: Pixel centres within this distance (pixels) outside an edge still count as covered, so that
#: float rounding cannot open holes between triangles sharing an edge.
EDGE_TOLERANCE_PX = 1e-4

#: Default number of (triangle, pixel) candidates evaluated per chunk (~150 MB peak).
DEFAULT_CANDIDATE_BUDGET = 1 << 20

_BACKGROUND_KEY = torch.iinfo(torch.int64).max
_FACE_ID_BITS = 32


def _pixel_range(lo: Tensor, hi: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """First and last pixel index whose centre (index + 0.5) lies in [lo, hi], clipped to the image."""
    lo = lo.clamp(-2.0, size + 2.0)  # keeps the int conversion finite for far-away vertices
    hi = hi.clamp(-2.0, size + 2.0)
    first = torch.ceil(lo - 0.5).long().clamp(min=0)
    last = torch.floor(hi - 0.5).long().clamp(max=size - 1)
    return first, last


def face_keep_mask(
    screen_vertices: Tensor,
    faces: Tensor,
    height: int,
    width: int,
    perspective: bool,
    cull_backfaces: bool,
    near: float,
) -> Tensor:
    """(B, F) bool: triangles that may cover a pixel centre.

    Drops non-finite and zero-area triangles, triangles with a vertex at ``z <= near``
    (perspective only), clockwise-on-screen triangles when culling, and triangles whose
    bounding box contains no pixel centre of the image.
    """
    corners = screen_vertices[:, faces]  # (B, F, 3, 3)
    x, y, z = corners.unbind(-1)
    twice_area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (
        y[..., 1] - y[..., 0]
    )
    keep = torch.isfinite(corners).flatten(-2).all(-1) & (twice_area != 0)
    if perspective:
        keep &= (z > near).all(-1)
    if cull_backfaces:
        keep &= twice_area < 0
    col_first, col_last = _pixel_range(x.amin(-1), x.amax(-1), width)
    row_first, row_last = _pixel_range(y.amin(-1), y.amax(-1), height)
    return keep & (col_last >= col_first) & (row_last >= row_first)


def _triangle_setup(corners: Tensor, perspective: bool, compute_dtype: torch.dtype) -> Tensor:
    """Per-triangle coefficients, (T, 12): origin x0, y0; 2x2 inverse edge matrix (row major);
    z-buffer quantity q at corner 0 and its increments along b1, b2; per-edge tolerance in
    barycentric units.  Computed in float64 so that tiny triangles keep accurate inverses.
    """
    corners = corners.double()
    x, y, z = corners.unbind(-1)  # (T, 3)
    e1x, e1y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    e2x, e2y = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    det = e1x * e2y - e2x * e1y
    # q is affine in screen space: z for orthographic, 1/z for perspective projection.
    q = 1.0 / z if perspective else z
    # Barycentric b_k equals distance-to-opposite-edge / altitude_k = dist * |edge_k| / |det|.
    edge_len = torch.stack(
        [
            torch.hypot(x[:, 2] - x[:, 1], y[:, 2] - y[:, 1]),
            torch.hypot(e2x, e2y),
            torch.hypot(e1x, e1y),
        ],
        dim=-1,
    )
    tolerance = EDGE_TOLERANCE_PX * edge_len / det.abs()[:, None]
    coefficients = torch.stack(
        [
            x[:, 0],
            y[:, 0],
            e2y / det,
            -e2x / det,
            -e1y / det,
            e1x / det,
            q[:, 0],
            q[:, 1] - q[:, 0],
            q[:, 2] - q[:, 0],
        ],
        dim=-1,
    )
    return torch.cat([coefficients, tolerance], dim=-1).to(compute_dtype)


def _ragged_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For counts (N,), return (owner, local): owner[k] = n and local[k] = 0..counts[n]-1."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=counts.device) - starts.index_select(0, owner)
    return owner, local


def _depth_face_keys(depth: Tensor, face: Tensor) -> Tensor:
    """Pack float depth and face id into int64 keys whose order is (depth, face id)."""
    bits = depth.float().contiguous().view(torch.int32)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits of negatives.
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.long() * (1 << _FACE_ID_BITS) + face


def visible_face_ids(
    screen_vertices: Tensor,
    faces: Tensor,
    keep: Tensor,
    height: int,
    width: int,
    perspective: bool,
    candidate_budget: int = DEFAULT_CANDIDATE_BUDGET,
) -> Tensor:
    """Z-buffer the kept triangles and return the visible face per pixel.

    Args:
        screen_vertices: (B, V, 3) screen-space vertices (no gradient needed).
        faces: (F, 3) int64 vertex indices; F < 2**31.
        keep: (B, F) bool from :func:`face_keep_mask`.
        height, width: image size in pixels.
        perspective: z-buffer on perspective-correct camera depth (else affine screen z).
        candidate_budget: approximate number of (triangle, pixel) pairs per chunk.

    Returns:
        (B, H, W) int64 face ids, -1 where no triangle covers the pixel centre.
    """
    device = screen_vertices.device
    batch, num_faces = keep.shape
    compute_dtype = torch.float64 if screen_vertices.dtype == torch.float64 else torch.float32
    zbuffer = torch.full((batch * height * width,), _BACKGROUND_KEY, dtype=torch.int64, device=device)

    tri_batch, tri_face = keep.nonzero(as_tuple=True)  # (T,)
    if tri_batch.numel() > 0:
        corners = screen_vertices[tri_batch[:, None], faces[tri_face]]  # (T, 3, 3)
        coefficients = _triangle_setup(corners, perspective, compute_dtype)
        col_first, col_last = _pixel_range(corners[..., 0].amin(-1), corners[..., 0].amax(-1), width)
        row_first, row_last = _pixel_range(corners[..., 1].amin(-1), corners[..., 1].amax(-1), height)
        box_width = col_last - col_first + 1
        box_height = row_last - row_first + 1

        # Split boxes larger than the budget into bands of rows.
        rows_per_piece = (candidate_budget // box_width).clamp(min=1)
        piece_tri, piece_index = _ragged_arange((box_height + rows_per_piece - 1) // rows_per_piece)
        piece_row = row_first[piece_tri] + piece_index * rows_per_piece[piece_tri]
        piece_rows = torch.minimum(rows_per_piece[piece_tri], row_last[piece_tri] + 1 - piece_row)
        piece_size = piece_rows * box_width[piece_tri]

        # Consecutive pieces whose first candidate falls in the same budget window form a group.
        group = (torch.cumsum(piece_size, 0) - piece_size) // candidate_budget
        group_sizes = torch.unique_consecutive(group, return_counts=True)[1].tolist()
        for pieces in torch.arange(piece_tri.numel(), device=device).split(group_sizes):
            owner, local = _ragged_arange(piece_size[pieces])
            piece = pieces.index_select(0, owner)
            tri = piece_tri.index_select(0, piece)
            width_of_box = box_width.index_select(0, tri)
            row_offset = local // width_of_box
            row = piece_row.index_select(0, piece) + row_offset
            col = col_first.index_select(0, tri) + (local - row_offset * width_of_box)
            _splat_candidates(
                zbuffer,
                coefficients.index_select(0, tri),
                tri_batch.index_select(0, tri),
                tri_face.index_select(0, tri),
                row,
                col,
                height,
                width,
                perspective,
            )

    face_id = torch.where(zbuffer == _BACKGROUND_KEY, -1, zbuffer & ((1 << _FACE_ID_BITS) - 1))
    return face_id.view(batch, height, width)


def _splat_candidates(
    zbuffer: Tensor,
    coefficients: Tensor,
    batch_index: Tensor,
    face: Tensor,
    row: Tensor,
    col: Tensor,
    height: int,
    width: int,
    perspective: bool,
) -> None:
    """Edge-test candidate pixels (N,) against their triangles' coefficients (N, 12) and
    min-reduce the (depth, face) keys of the covered ones into the flat z-buffer in place."""
    x0, y0, m00, m01, m10, m11, q0, dq1, dq2, tol0, tol1, tol2 = coefficients.unbind(-1)
    dx = col.to(coefficients.dtype) + 0.5 - x0
    dy = row.to(coefficients.dtype) + 0.5 - y0
    b1 = m00 * dx + m01 * dy
    b2 = m10 * dx + m11 * dy
    q = q0 + dq1 * b1 + dq2 * b2
    inside = (b1 >= -tol1) & (b2 >= -tol2) & (1.0 - b1 - b2 >= -tol0)
    if perspective:
        inside &= q > 0
        depth = 1.0 / q
    else:
        depth = q
    inside &= torch.isfinite(depth)
    pixel = (batch_index * height + row) * width + col
    keys = _depth_face_keys(depth[inside], face[inside])
    zbuffer.scatter_reduce_(0, pixel[inside], keys, reduce="amin")
