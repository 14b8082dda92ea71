"""Multi-view consistency by reprojection through depth (the ``mv`` metric of ``headforge eval``).

Two views A and B of the same scene (same identity, animation and light,
different cameras) are consistent when every surface point visible in both
has the same colour in both. For each pixel of A with a surface
(``surface >= threshold``: rendered opacity, or a dataset's depth mask) the
camera-space depth z_A gives the world point

    p = o_A + d * z_A / (d . f_A)

(o_A the camera centre, d the unit ray of the pixel centre, f_A the optical
axis: depth is measured along the axis, not along the ray). p is projected
into B (``headforge.cameras.project_points``) and kept where

- it lands in front of B and inside B's image, far enough from the border
  that the bilinear taps are pixels (not padding);
- B sees a surface there (B's surface map sampled bilinearly >= threshold, so
  all four taps are on the surface for a binary mask);
- B sees *this* point there and not an occluder: B's own depth sampled
  bilinearly agrees with p's depth in B within ``depth_tolerance`` (world
  units).

On the kept pixels the colour of A is compared with B's image sampled
bilinearly at the projection (``grid_sample``, ``align_corners=False``: pixel
j's centre is at (j + 0.5) / W as in ``pixel_rays``).

Resolution: everything runs at the images' resolution. Depth and surface
maps of another size (a generator's neural rendering resolution, e.g. 64 px
under 512 px images) are resized to it bilinearly first, so the metric scores
the final, super-resolved images (whose view consistency is the question)
through the volume renderer's geometry.

Colour errors are on the [0, 1] scale (images in [-1, 1] are halved), PSNR
with peak 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.cameras import matrices_from_label, pixel_rays, project_points

__all__ = [
    "DEFAULT_DEPTH_TOLERANCE",
    "DEFAULT_SURFACE_THRESHOLD",
    "ReprojectionResult",
    "erode_mask",
    "reprojection_error",
    "unproject_depth",
]

#: world units (the head spans ~0.5): larger than bilinear depth error on a sloped surface
#: at the studio's resolutions, smaller than the nose-to-cheek depth step of an occlusion.
DEFAULT_DEPTH_TOLERANCE = 0.03
#: minimum opacity of a surface pixel (EG3D-family renders: opacity of the expected depth).
DEFAULT_SURFACE_THRESHOLD = 0.9


@dataclass
class ReprojectionResult:
    """Per pair of views (B pairs), A reprojected into B.

    Attributes:
        abs_error: (B,) mean absolute colour difference over valid pixels and RGB, [0, 1]
            scale; NaN where no pixel is valid.
        squared_error: (B,) mean squared colour difference, same pixels and scale.
        valid: (B,) number of valid pixels (seen on a surface in both views, not occluded).
        surface: (B,) number of surface pixels of A.
        unaligned_abs_error: (B,) the same mean over the same pixels, but against B's *same*
            pixel (no reprojection): what ignoring the geometry costs, a baseline for abs_error.
    """

    abs_error: Tensor
    squared_error: Tensor
    valid: Tensor
    surface: Tensor
    unaligned_abs_error: Tensor

    @property
    def psnr(self) -> Tensor:
        """(B,) 10 log10(1 / squared_error), dB (peak 1 on the [0, 1] scale); +inf for identical colours."""
        return 10.0 * torch.log10(1.0 / self.squared_error)

    @property
    def valid_fraction(self) -> Tensor:
        """(B,) valid pixels / surface pixels of A (NaN when A has no surface)."""
        return self.valid.double() / self.surface.double()


def erode_mask(mask: Tensor, pixels: int = 1) -> Tensor:
    """Shrink a (B, 1, H, W) {0, 1} mask by ``pixels``: a pixel stays where its (2p+1)^2 box is all 1.

    Silhouette pixels of an anti-aliased render mix foreground and background
    colours while their depth is the surface's; eroding drops them.
    """
    if pixels <= 0:
        return mask
    size = 2 * pixels + 1
    return -F.max_pool2d(-mask.float(), size, stride=1, padding=pixels)


def _resize(maps: Tensor, height: int, width: int) -> Tensor:
    if maps.shape[-2:] == (height, width):
        return maps
    return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)


def unproject_depth(depth: Tensor, camera: Tensor) -> Tensor:
    """World points (B, H*W, 3) of the pixel centres of depth maps (B, 1, H, W).

    Args:
        depth: camera-space z (along the optical axis), world units.
        camera: (B, 25) camera labels.

    Returns:
        (B, H*W, 3) points, pixels row-major (as ``pixel_rays``).
    """
    height, width = depth.shape[-2:]
    cam2world, intrinsics = matrices_from_label(camera)
    origins, directions = pixel_rays(cam2world, intrinsics, height, width)
    axis = cam2world[:, None, :3, 2]
    along_axis = (directions * axis).sum(dim=-1, keepdim=True)  # cos of the ray-axis angle
    return origins + directions * depth.reshape(depth.shape[0], -1, 1) / along_axis


def _sample(maps: Tensor, uv: Tensor, height: int, width: int) -> Tensor:
    """Bilinear samples (B, C, H*W) of maps (B, C, H, W) at uv (B, H*W, 2) in [0, 1]."""
    grid = (uv * 2.0 - 1.0).reshape(uv.shape[0], height, width, 2)
    sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.reshape(maps.shape[0], maps.shape[1], -1)


def reprojection_error(
    image_a: Tensor,
    depth_a: Tensor,
    surface_a: Tensor,
    camera_a: Tensor,
    image_b: Tensor,
    depth_b: Tensor,
    surface_b: Tensor,
    camera_b: Tensor,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
    surface_threshold: float = DEFAULT_SURFACE_THRESHOLD,
) -> ReprojectionResult:
    """Colour error of view A's surface pixels against view B at their reprojection (see the module).

    Args:
        image_a, image_b: (B, 3, H, W) images in [-1, 1].
        depth_a, depth_b: (B, 1, h, w) camera-space z, world units (resized to H x W if h, w differ).
        surface_a, surface_b: (B, 1, h, w) opacity in [0, 1] or a {0, 1} surface mask.
        camera_a, camera_b: (B, 25) camera labels.
        depth_tolerance: largest |z_B(sampled) - z_B(projected)|, world units, of a visible point.
        surface_threshold: smallest surface value (A's pixel, B's bilinear sample) that counts.

    Returns:
        :class:`ReprojectionResult`, one entry per pair.
    """
    batch, _, height, width = image_a.shape
    work = torch.promote_types(image_a.dtype, torch.float32)
    depth_a, depth_b = (_resize(d.to(work), height, width) for d in (depth_a, depth_b))
    surface_a, surface_b = (_resize(s.to(work), height, width) for s in (surface_a, surface_b))
    points = unproject_depth(depth_a, camera_a.to(work))
    cam2world_b, intrinsics_b = matrices_from_label(camera_b.to(work))
    uv, depth_in_b = project_points(points, cam2world_b, intrinsics_b)

    flat_depth_a = depth_a.reshape(batch, -1)
    on_surface = (surface_a.reshape(batch, -1) >= surface_threshold) & (flat_depth_a > 0)
    on_surface &= torch.isfinite(flat_depth_a)
    # Keep the bilinear footprint inside B: pixel centres span [0.5 / W, 1 - 0.5 / W].
    low = torch.tensor([0.5 / width, 0.5 / height], dtype=work, device=uv.device)
    inside = ((uv >= low) & (uv <= 1.0 - low)).all(dim=-1) & (depth_in_b > 0)
    uv = torch.where(inside[..., None], uv, torch.full_like(uv, 0.5))  # keep invalid uv finite for sampling
    seen_by_b = _sample(surface_b, uv, height, width)[:, 0] >= surface_threshold
    depth_seen_by_b = _sample(depth_b, uv, height, width)[:, 0]
    not_occluded = (depth_seen_by_b - depth_in_b).abs() <= depth_tolerance
    valid = on_surface & inside & seen_by_b & not_occluded

    colour_b = _sample(image_b.to(work), uv, height, width)
    difference = (image_a.to(work).reshape(batch, 3, -1) - colour_b) * 0.5  # [-1, 1] -> [0, 1] scale
    weight = valid[:, None].to(work)
    count = valid.sum(dim=1)
    denominator = (3 * count).to(work)  # 0 -> NaN means: no valid pixel
    abs_error = (difference.abs() * weight).sum(dim=(1, 2)) / denominator
    squared_error = (difference.square() * weight).sum(dim=(1, 2)) / denominator
    unaligned = (image_a.to(work) - image_b.to(work)).reshape(batch, 3, -1).abs() * 0.5
    unaligned_abs_error = (unaligned * weight).sum(dim=(1, 2)) / denominator
    return ReprojectionResult(abs_error, squared_error, count, on_surface.sum(dim=1), unaligned_abs_error)
