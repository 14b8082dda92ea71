"""Ray helpers for the volume renderer: ray / axis-aligned box intersection.

Camera rays themselves (pixel -> origin, direction) are built in
``headforge.cameras``; this module only needs origins and directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["ray_aabb_intersect"]


def ray_aabb_intersect(
    origins: torch.Tensor,
    directions: torch.Tensor,
    box_min: Sequence[float] | torch.Tensor = (-0.5, -0.5, -0.5),
    box_max: Sequence[float] | torch.Tensor = (0.5, 0.5, 0.5),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersect rays with an axis-aligned box (slab method).

    Args:
        origins: (B, R, 3) ray origins, world units.
        directions: (B, R, 3) ray directions (need not be unit length; the
            returned distances are in multiples of ``directions``).
        box_min, box_max: (3,) box corners, world units.

    Returns:
        near: (B, R, 1) ray parameter where the ray enters the box, clamped to
            ``>= 0`` so that an origin inside the box starts sampling at the
            origin rather than behind the camera.
        far: (B, R, 1) ray parameter where the ray leaves the box.
        hit: (B, R) bool, True where the ray crosses the box in front of its
            origin (``far > near``). Rays that miss get ``near = far = 0``
            (finite, so nothing downstream turns into NaN); use ``hit``.

    A zero direction component is handled explicitly: the ray is then parallel
    to that slab and either lies inside it for every t (the slab imposes no
    limit) or never (the ray misses). This avoids the ``0 * inf = nan`` of a
    plain ``1 / d`` implementation.
    """
    dtype, device = origins.dtype, origins.device
    lo = torch.as_tensor(box_min, dtype=dtype, device=device)
    hi = torch.as_tensor(box_max, dtype=dtype, device=device)

    parallel = directions == 0
    # Dividing by 1 where the component is zero keeps the arithmetic finite; the
    # value is replaced below.
    inv_dir = 1.0 / torch.where(parallel, torch.ones_like(directions), directions)
    t_lo = (lo - origins) * inv_dir
    t_hi = (hi - origins) * inv_dir
    t_enter = torch.minimum(t_lo, t_hi)
    t_exit = torch.maximum(t_lo, t_hi)

    inside_slab = (origins >= lo) & (origins <= hi)
    inf = torch.full_like(t_enter, float("inf"))
    t_enter = torch.where(parallel, torch.where(inside_slab, -inf, inf), t_enter)
    t_exit = torch.where(parallel, torch.where(inside_slab, inf, -inf), t_exit)

    near = t_enter.amax(dim=-1, keepdim=True).clamp_min(0.0)
    far = t_exit.amin(dim=-1, keepdim=True)
    hit = far > near
    near = torch.where(hit, near, torch.zeros_like(near))
    far = torch.where(hit, far, torch.zeros_like(far))
    return near, far, hit.squeeze(-1)
