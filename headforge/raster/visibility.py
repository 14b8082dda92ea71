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

#: Triangles whose smallest altitude is below this (pixels) are dropped as degenerate.
MIN_ALTITUDE_PX = 1e-6

#: Default number of (triangle, pixel) candidates evaluated per chunk (~200 MB peak).
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

    Drops non-finite and (near) zero-area triangles, triangles with a vertex at ``z <= near``
    (perspective only), clockwise-on-screen triangles when culling, and triangles whose
    bounding box contains no pixel centre of the image.
    """
    corners = screen_vertices[:, faces]  # (B, F, 3, 3)
    x, y, z = corners.unbind(-1)
    twice_area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (
        y[..., 1] - y[..., 0]
    )
    edge_vectors = corners[..., :2] - corners[..., [1, 2, 0], :2]
    longest_edge = torch.linalg.vector_norm(edge_vectors, dim=-1).amax(-1)
    # Slivers thinner than MIN_ALTITUDE_PX behave like the zero-area limit (and would overflow
    # the barycentric gradients in float32).
    keep = torch.isfinite(corners).flatten(-2).all(-1) & (twice_area.abs() > MIN_ALTITUDE_PX * longest_edge)
    if perspective:
        keep &= (z > near).all(-1)
    if cull_backfaces:
        keep &= twice_area < 0
    col_first, col_last = _pixel_range(x.amin(-1), x.amax(-1), width)
    row_first, row_last = _pixel_range(y.amin(-1), y.amax(-1), height)
    return keep & (col_last >= col_first) & (row_last >= row_first)


def _triangle_setup(
    corners: Tensor, origin_x: Tensor, origin_y: Tensor, perspective: bool, compute_dtype: torch.dtype
) -> Tensor:
    """Per-triangle affine functions of the pixel offset from an on-screen origin, (T, 15).

    Columns: the three barycentrics at the origin (a pixel centre), their (d/dx, d/dy) per
    pixel step (6 columns, corner by corner), the z-buffer quantity q at the origin and its
    two derivatives, and per-edge tolerances in barycentric units.  Computed in float64 and
    each barycentric on its own (not as 1 - b1 - b2), so that float32 candidates stay exact
    near every edge even when the triangle's vertices lie far off screen.
    """
    x, y, z = corners.double().unbind(-1)  # (T, 3)
    e1x, e1y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    e2x, e2y = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    det = e1x * e2y - e2x * e1y
    grad_b1 = torch.stack([e2y / det, -e2x / det], dim=-1)  # (T, 2)
    grad_b2 = torch.stack([-e1y / det, e1x / det], dim=-1)
    grad_b0 = -(grad_b1 + grad_b2)
    gradients = torch.stack([grad_b0, grad_b1, grad_b2], dim=1)  # (T, 3, 2)
    # Each barycentric vanishes on its opposite edge: evaluate it from a corner of that edge.
    next_corner = [1, 2, 0]
    offset = torch.stack(
        [origin_x.double()[:, None] - x[:, next_corner], origin_y.double()[:, None] - y[:, next_corner]], -1
    )
    at_origin = (gradients * offset).sum(-1)  # b_k at the origin, (T, 3)
    # q is affine in screen space: z for orthographic, 1/z for perspective projection.
    q = 1.0 / z if perspective else z
    q_at_origin = (q * at_origin).sum(-1, keepdim=True)
    q_gradient = (q[:, :, None] * gradients).sum(1)  # (T, 2)
    # Barycentric b_k equals distance-to-opposite-edge / altitude_k = dist * |edge_k| / |det|.
    edge_len = torch.stack(
        [torch.hypot(x[:, 2] - x[:, 1], y[:, 2] - y[:, 1]), torch.hypot(e2x, e2y), torch.hypot(e1x, e1y)],
        dim=-1,
    )
    tolerance = EDGE_TOLERANCE_PX * edge_len / det.abs()[:, None]
    coefficients = [at_origin, gradients.flatten(1), q_at_origin, q_gradient, tolerance]
    return torch.cat(coefficients, dim=-1).to(compute_dtype)


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
    batch = keep.shape[0]
    compute_dtype = torch.float64 if screen_vertices.dtype == torch.float64 else torch.float32
    zbuffer = torch.full((batch * height * width,), _BACKGROUND_KEY, dtype=torch.int64, device=device)

    tri_batch, tri_face = keep.nonzero(as_tuple=True)  # (T,)
    if tri_batch.numel() > 0:
        corners = screen_vertices[tri_batch[:, None], faces[tri_face]]  # (T, 3, 3)
        col_first, col_last = _pixel_range(corners[..., 0].amin(-1), corners[..., 0].amax(-1), width)
        row_first, row_last = _pixel_range(corners[..., 1].amin(-1), corners[..., 1].amax(-1), height)
        box_width = col_last - col_first + 1
        box_height = row_last - row_first + 1
        box_origin_pixel = (tri_batch * height + row_first) * width + col_first  # flat z-buffer index
        coefficients = _triangle_setup(corners, col_first + 0.5, row_first + 0.5, perspective, compute_dtype)

        # Split boxes larger than the budget into bands of rows.
        rows_per_piece = (candidate_budget // box_width).clamp(min=1)
        piece_tri, piece_index = _ragged_arange((box_height + rows_per_piece - 1) // rows_per_piece)
        piece_first_row = piece_index * rows_per_piece[piece_tri]  # relative to the box
        piece_rows = torch.minimum(rows_per_piece[piece_tri], box_height[piece_tri] - piece_first_row)
        piece_size = piece_rows * box_width[piece_tri]

        # Consecutive pieces whose first candidate falls in the same budget window form a group.
        group = (torch.cumsum(piece_size, 0) - piece_size) // candidate_budget
        group_start = 0
        for group_size in torch.unique_consecutive(group, return_counts=True)[1].tolist():
            owner, local = _ragged_arange(piece_size[group_start : group_start + group_size])
            piece = owner + group_start
            group_start += group_size
            tri = piece_tri.index_select(0, piece)
            width_of_box = box_width.index_select(0, tri)
            row_in_piece = local // width_of_box
            box_row = piece_first_row.index_select(0, piece) + row_in_piece
            box_col = local - row_in_piece * width_of_box
            _splat_candidates(
                zbuffer,
                coefficients.index_select(0, tri),
                tri_face.index_select(0, tri),
                box_origin_pixel.index_select(0, tri) + box_row * width + box_col,
                box_row,
                box_col,
                perspective,
            )

    face_id = torch.where(zbuffer == _BACKGROUND_KEY, -1, zbuffer & ((1 << _FACE_ID_BITS) - 1))
    return face_id.view(batch, height, width)


def _splat_candidates(
    zbuffer: Tensor,
    coefficients: Tensor,
    face: Tensor,
    pixel: Tensor,
    box_row: Tensor,
    box_col: Tensor,
    perspective: bool,
) -> None:
    """Edge-test N candidates and min-reduce the (depth, face) keys of covered ones into the
    flat z-buffer in place.  coefficients (N, 15) from :func:`_triangle_setup`; face, pixel
    (flat z-buffer index), box_row, box_col (offsets from the triangle's box origin): (N,)."""
    coefficients = coefficients.T  # (15, N): rows are cheap views
    dx = box_col.to(coefficients.dtype)
    dy = box_row.to(coefficients.dtype)
    inside = torch.ones_like(dx, dtype=torch.bool)
    for k in range(3):
        bary = coefficients[k] + coefficients[3 + 2 * k] * dx + coefficients[4 + 2 * k] * dy
        inside &= bary >= -coefficients[12 + k]
    q = coefficients[9] + coefficients[10] * dx + coefficients[11] * dy
    if perspective:
        inside &= q > 0
        depth = 1.0 / q
    else:
        depth = q
    inside &= torch.isfinite(depth)
    keys = _depth_face_keys(depth[inside], face[inside])
    zbuffer.scatter_reduce_(0, pixel[inside], keys, reduce="amin")
