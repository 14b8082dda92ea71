"""NeRFFaceShop's face mask M in template space (§III-C3), derived from where faces land there.

After training, the paper multiplies the expression field by a template-space
mask, ``delta_exp (.) M``, so that animation moves the face only (video data
otherwise teaches side effects such as the whole head growing and shrinking).
The face occupies a fixed area of the template because ``delta_shape`` maps
every identity's instance space onto it. We measure that area:

1. Render generated heads (random identities and animations, frontal camera)
   with their depth; each pixel's surface point ``p = o + depth * d``.
2. Weight each pixel by a *face prior* in the image (its probability of
   showing the face: the mean of the dataset's segmentation maps over frontal
   frames, ``segmentation_face_prior``, or a fixed ellipse,
   ``elliptical_face_prior``) and by its opacity.
3. Project ``p`` onto each plane (the rolled-out features are pixel-aligned
   with the tri-planes, so a plane coordinate is also an F^32 coordinate) and
   map it to template space: the warp evaluates ``delta_exp`` at
   ``T_shape(x) = x + delta_shape(x)`` for an instance point ``x``
   (``headforge.nn.warp.conjugate``), whatever the animation.
4. Accumulate the weights in the R_w x R_w template cells of each plane;
   cells holding at least ``threshold`` of the busiest cell's weight form the
   mask, grown by one cell and softened by a small blur so the animation fades
   out instead of tearing at the border.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.cameras import Camera, pixel_rays
from headforge.nn.filters import gaussian_blur
from headforge.nn.triplane import project_to_planes

__all__ = [
    "derive_expression_mask",
    "elliptical_face_prior",
    "mask_from_template_weights",
    "segmentation_face_prior",
    "template_face_weights",
]


def elliptical_face_prior(
    resolution: int, centre: tuple[float, float] = (0.5, 0.56), radii: tuple[float, float] = (0.25, 0.32)
) -> Tensor:
    """A fixed face region for FFHQ-aligned frontal crops: 1 inside an ellipse, 0 outside, (1, 1, R, R).

    ``centre`` and ``radii`` are (x, y) in image fractions (x right, y down).
    """
    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1
    return inside.float()[None, None]


def segmentation_face_prior(segmentations: Tensor, face_classes: list[int] | tuple[int, ...]) -> Tensor:
    """Fraction of frames in which each pixel shows a face class, (1, 1, H, W).

    Args:
        segmentations: (N, 1, H, W) class ids of frontal frames (a dataset's ``segmentation`` maps).
        face_classes: the ids that count as face (e.g. skin, eyes, brows, lips, mouth).
    """
    classes = torch.as_tensor(list(face_classes), device=segmentations.device)
    return torch.isin(segmentations.round().long(), classes).float().mean(dim=0, keepdim=True)


def template_face_weights(
    points: Tensor,
    weights: Tensor,
    shape_field: Tensor,
    layout: str = "xy_xz_yz",
    box_warp: float = 1.0,
) -> Tensor:
    """Splat weighted surface points into template-space cells, per plane.

    Args:
        points: (B, N, 3) world points on the instances' surfaces.
        weights: (B, N) non-negative weights (face prior x opacity).
        shape_field: (B, 3, 2, R_w, R_w) delta_shape of each instance.
        layout, box_warp: tri-plane projection (as ``sample_triplanes``).

    Returns:
        (3, R_w, R_w) summed weight per template cell (nearest cell; points
        mapped outside the planes are dropped).
    """
    batch, num_points, _ = points.shape
    size = shape_field.shape[-1]
    instance = project_to_planes(points, layout, box_warp)  # (B, 3, N, 2), grid_sample units
    flat_field = shape_field.flatten(0, 1)  # (B * 3, 2, R, R)
    grid = instance.reshape(batch * 3, 1, num_points, 2)
    offset = F.grid_sample(flat_field, grid, mode="bilinear", padding_mode="border", align_corners=False)
    template = instance + offset.reshape(batch, 3, 2, num_points).transpose(2, 3)
    cells = torch.floor((template + 1) / 2 * size).long()  # (B, 3, N, 2): (column, row)
    inside = ((cells >= 0) & (cells < size)).all(dim=-1)
    plane_offset = torch.arange(3, device=points.device)[None, :, None] * size**2
    index = plane_offset + cells[..., 1] * size + cells[..., 0]
    values = weights[:, None, :].expand(-1, 3, -1) * inside
    totals = torch.zeros(3 * size * size, dtype=weights.dtype, device=points.device)
    totals.index_add_(0, index.clamp(0, 3 * size * size - 1).flatten(), values.flatten())
    return totals.reshape(3, size, size)


def mask_from_template_weights(weights: Tensor, threshold: float = 0.05, blur_sigma: float = 0.75) -> Tensor:
    """Face mask (1, 3, 1, R_w, R_w) in [0, 1] from accumulated template weights (3, R_w, R_w).

    Per plane, cells with at least ``threshold`` of the plane's largest weight
    are face; the set grows by one cell (3x3 max) and is blurred with
    ``blur_sigma`` cells, then clamped so face cells keep weight 1.
    """
    peak = weights.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    face = (weights / peak >= threshold).float()[:, None]  # (3, 1, R, R)
    grown = F.max_pool2d(face, 3, stride=1, padding=1)
    soft = gaussian_blur(grown, blur_sigma) if blur_sigma > 0 else grown
    return torch.maximum(soft, face).clamp(0, 1)[None]


@torch.no_grad()
def derive_expression_mask(
    generator: torch.nn.Module,
    face_prior: Tensor,
    num_samples: int = 256,
    batch_size: int = 8,
    truncation_psi: float = 0.7,
    threshold: float = 0.05,
    seed: int = 0,
) -> Tensor:
    """The face mask M of a trained generator (see the module docstring); store it with
    ``generator.expression_mask.copy_(mask)`` and enable ``config.use_expression_mask``.

    Args:
        generator: a ``NeRFFaceShopGenerator``.
        face_prior: (1, 1, h, w) probability that a frontal-view pixel shows the
            face; resized to the neural rendering resolution.
        num_samples: generated heads to accumulate (random identities, m ~ N(0, I)).
        batch_size: heads per forward pass.
        truncation_psi: identity truncation (typical identities place the face typically).
        threshold: see ``mask_from_template_weights``.
        seed: seeds the latents (drawn on the CPU, so results match across devices).

    Returns:
        (1, 3, 1, R_w, R_w) mask.
    """
    config = generator.config
    device = generator.sh_avg.device
    resolution = config.neural_rendering_resolution
    prior = F.interpolate(face_prior.float(), size=(resolution, resolution), mode="area").to(device)
    rng = torch.Generator().manual_seed(seed)
    totals = None
    for start in range(0, num_samples, batch_size):
        batch = min(batch_size, num_samples - start)
        z = torch.randn(batch, config.z_dim, generator=rng).to(device)
        m = torch.randn(batch, config.motion_dim, generator=rng).to(device)
        camera = Camera.frontal(batch, device=device).to_label()
        sh = generator.sh_avg.expand(batch, -1)
        out = generator(z, camera, m, sh, truncation_psi=truncation_psi, noise_mode="const", perturb=False)
        origins, directions = pixel_rays(
            camera[:, :16].view(-1, 4, 4), camera[:, 16:].view(-1, 3, 3), resolution, resolution
        )
        points = origins + out["image_depth"].flatten(1).unsqueeze(-1) * directions
        weights = (prior * out["opacity"]).flatten(1)
        layout, box = config.plane_layout, config.box_warp
        part = template_face_weights(points, weights, out["shape_field"], layout, box)
        totals = part if totals is None else totals + part
    return mask_from_template_weights(totals, threshold)
