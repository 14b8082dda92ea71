"""World -> screen-space vertices for :func:`headforge.raster.rasterize`.

Screen space: x right and y down in pixels, pixel (row i, column j) centred at (j + 0.5, i + 0.5),
z = depth (smaller is nearer).
"""

from __future__ import annotations

import torch
from torch import Tensor

from headforge.cameras import project_points

__all__ = ["orthographic_screen_vertices", "orthographic_view_matrix", "perspective_screen_vertices"]

_AXIS_INDEX = {"x": 0, "y": 1, "z": 2}


def _plane_axes_matrix(axes: str) -> Tensor:
    """Rows: world direction of the pixel x axis, the pixel y axis and the dropped (depth) axis."""
    if len(axes) != 2 or set(axes) - set(_AXIS_INDEX) or axes[0] == axes[1]:
        raise ValueError(f"axes must name two different world axes such as 'xy', 'xz', 'yz', got {axes!r}")
    first, second = _AXIS_INDEX[axes[0]], _AXIS_INDEX[axes[1]]
    return torch.eye(3)[[first, second, 3 - first - second]]


def perspective_screen_vertices(
    vertices_world: Tensor, cam2world: Tensor, intrinsics: Tensor, height: int, width: int
) -> Tensor:
    """Project world points through an OpenCV pinhole camera into screen space.

    ``(u, v, 1) = K @ (X / Z, Y / Z, 1)`` with normalised intrinsics (docs/architecture.md,
    computed by :func:`headforge.cameras.project_points`), then pixel ``x = u * width`` and
    ``y = v * height``, so the pixel centre (j + 0.5, i + 0.5) is where the camera's ray through
    ``((j + 0.5) / W, (i + 0.5) / H)`` lands (:func:`headforge.cameras.pixel_rays`).
    Differentiable.

    Args:
        vertices_world: (B, V, 3) or (V, 3) world points.
        cam2world: (B, 4, 4) or (4, 4) rigid OpenCV camera-to-world matrices (x right,
            y down, z forward).
        intrinsics: (B, 3, 3) or (3, 3) intrinsics normalised by image size.
        height, width: image size in pixels.

    Returns:
        (B, V, 3): pixel x, pixel y, camera-space depth Z (> 0 in front of the camera).
    """
    if vertices_world.dim() == 2:
        vertices_world = vertices_world.unsqueeze(0)
    batch = vertices_world.shape[0]
    cam2world = cam2world.to(vertices_world).expand(batch, 4, 4)
    intrinsics = intrinsics.to(vertices_world).expand(batch, 3, 3)
    uv, depth = project_points(vertices_world, cam2world, intrinsics)
    scale = vertices_world.new_tensor([width, height])
    return torch.cat([uv * scale, depth[..., None]], dim=-1)


def orthographic_view_matrix(axes: str | Tensor = "xy", depth_axis_sign: float = -1.0) -> Tensor:
    """(3, 3) matrix (or (B, 3, 3) for batched rotations) mapping world points to
    (plane coordinate 1, plane coordinate 2, depth) before scaling to pixels.

    A negative determinant means the view is mirrored: a mesh whose outward faces wind
    counter-clockwise then appears *clockwise* on screen, so reverse the face winding
    (``faces[:, [0, 2, 1]]``) before rasterizing with ``cull_backfaces=True``.  With the default
    sign, 'xy' and 'yz' are mirrored and 'xz' is not.
    """
    matrix = _plane_axes_matrix(axes) if isinstance(axes, str) else axes
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"axes matrix must be (3, 3) or (B, 3, 3), got {tuple(matrix.shape)}")
    sign = matrix.new_tensor([1.0, 1.0, depth_axis_sign])
    return matrix * sign[:, None]


def orthographic_screen_vertices(
    vertices: Tensor,
    axes: str | Tensor = "xy",
    extent: float = 0.5,
    *,
    height: int,
    width: int,
    depth_axis_sign: float = -1.0,
) -> Tensor:
    """Orthographic projection onto an axis-aligned tri-plane (or a rotated plane).

    The mapping matches tri-plane sampling with ``grid_sample(align_corners=False)`` where the
    grid coordinate is ``world / extent`` (``extent = box_warp / 2``): pixel column ``j`` holds
    the plane's first coordinate ``a = ((j + 0.5) / W * 2 - 1) * extent`` and row ``i`` holds
    the second coordinate ``b = ((i + 0.5) / H * 2 - 1) * extent`` (rows are not flipped):

    ======  =====================  =====================  ==========================
    axes    column (grid x)        row (grid y)           depth (sign s)
    ======  =====================  =====================  ==========================
    'xy'    world x                world y                s * z  (s=-1: seen from +z)
    'xz'    world x                world z                s * y  (s=-1: seen from +y)
    'yz'    world y                world z                s * x  (s=-1: seen from +x)
    ======  =====================  =====================  ==========================

    Any other pair of axes works the same way, e.g. 'zx' (column = z, row = x) for the third
    plane of EG3D's layout (``headforge.nn.triplane.PLANE_LAYOUTS["eg3d"]``).

    The z-buffer keeps the smallest depth, so with the default ``depth_axis_sign = -1`` each
    plane shows the surface nearest to a viewer on the positive side of the dropped axis
    (the face for 'xy' since heads face +z); use +1 for the opposite side (Next3D rasterizes
    both sides and sums them).  Mirroring and back-face culling: see
    :func:`orthographic_view_matrix`.

    Args:
        vertices: (B, V, 3) or (V, 3) world points.
        axes: two world axes (column axis, row axis) such as 'xy', 'xz', 'yz', 'zx', or a
            (3, 3) / (B, 3, 3) matrix whose rows are the world directions of the pixel x axis,
            the pixel y axis and the depth axis.
        extent: half size of the square plane in world units (box_warp / 2).
        height, width: plane resolution in pixels.
        depth_axis_sign: multiplies the third (depth) coordinate.

    Returns:
        (B, V, 3) screen-space vertices for ``rasterize(..., perspective=False)``.
    """
    if vertices.dim() == 2:
        vertices = vertices.unsqueeze(0)
    matrix = orthographic_view_matrix(axes, depth_axis_sign).to(vertices)
    if matrix.dim() == 2:
        projected = vertices @ matrix.T
    else:
        projected = torch.einsum("bij,bvj->bvi", matrix, vertices)
    size = vertices.new_tensor([width, height])
    pixels = (projected[..., :2] / extent + 1.0) * 0.5 * size
    return torch.cat([pixels, projected[..., 2:]], dim=-1)
