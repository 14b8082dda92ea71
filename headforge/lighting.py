"""Second-order spherical-harmonic lighting: basis, irradiance, env maps, rotation, previews.

Conventions (docs/architecture.md):

- ``sh`` (..., 9, 3) holds the coefficients of *incident radiance* L(w) in world space
  (+y up, the head faces +z), one column per RGB channel. A dataset's 27 floats are
  this 9 x 3 matrix row-major.
- Basis order and form: Y00, Y1-1 (y), Y10 (z), Y11 (x), Y2-2 (xy), Y2-1 (yz),
  Y20 (3z^2 - 1), Y21 (xz), Y22 (x^2 - y^2); real, orthonormal over the sphere, without
  Condon-Shortley signs (all constants positive), as in Ramamoorthi & Hanrahan (2001).
- Irradiance ``E(n) = sum_l A_l sum_m L_lm Y_lm(n)`` with A = (pi, 2 pi / 3, pi / 4);
  for radiance band-limited to order 2 this equals the integral of
  ``L(w) max(n . w, 0) dw`` exactly. A Lambertian surface of albedo a reflects
  radiance ``a E(n) / pi``.
- Batch dimensions: the leading dimensions of ``sh`` line up with the *leading*
  (batch-first) dimensions of a point tensor; missing trailing ones are broadcast. So
  sh (B, 9, 3) shades normals (B, H, W, 3), and sh (9, 3) shades anything.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

NUM_SH_COEFFICIENTS = 9

# Normalisation constants, in the order of docs/architecture.md:
# 0.282095 (Y00), 0.488603 (band 1), 1.092548 (Y2-2, Y2-1, Y21), 0.315392 (Y20), 0.546274 (Y22).
SH_CONSTANTS = (
    0.5 * math.sqrt(1.0 / math.pi),
    math.sqrt(3.0 / (4.0 * math.pi)),
    0.5 * math.sqrt(15.0 / math.pi),
    0.25 * math.sqrt(5.0 / math.pi),
    0.25 * math.sqrt(15.0 / math.pi),
)

# Ramamoorthi-Hanrahan clamped-cosine band factors A_0, A_1, A_2, and per coefficient.
SH_BAND_IRRADIANCE = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
_COEFFICIENT_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)
_IRRADIANCE_WEIGHTS = tuple(SH_BAND_IRRADIANCE[band] for band in _COEFFICIENT_BAND)

# Mirroring x -> -x flips the sign of the basis functions odd in x: Y11 (x), Y2-2 (xy), Y21 (xz).
_X_MIRROR_SIGNS = (1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0)

# A delta light of radiant intensity I projected onto order 2 gives irradiance
# I * (1/4 + 1/2 + 5/16) = 17/16 I on a surface facing it. Scaling by 16 pi / 17 makes a
# white Lambertian surface facing the light reflect exactly the light's colour.
DIRECTIONAL_LIGHT_SCALE = 16.0 * math.pi / 17.0


def _weights(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _align_sh(sh: torch.Tensor, num_point_dims: int) -> torch.Tensor:
    """Insert singleton dims after sh's batch dims so they line up with the points' leading dims."""
    missing = num_point_dims - (sh.dim() - 2)
    if missing <= 0:
        return sh
    return sh.reshape(*sh.shape[:-2], *([1] * missing), *sh.shape[-2:])


def sh_basis(directions: torch.Tensor) -> torch.Tensor:
    """Real SH basis up to order 2 at unit ``directions`` (..., 3) -> (..., 9)."""
    x, y, z = directions.unbind(-1)
    c0, c1, c2, c3, c4 = SH_CONSTANTS
    return torch.stack(
        (
            torch.full_like(x, c0),
            c1 * y,
            c1 * z,
            c1 * x,
            c2 * x * y,
            c2 * y * z,
            c3 * (3.0 * z * z - 1.0),
            c2 * x * z,
            c4 * (x * x - y * y),
        ),
        dim=-1,
    )


def sh_radiance(sh: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Radiance (..., 3) of the SH environment ``sh`` (..., 9, 3) seen along unit ``directions`` (..., 3)."""
    basis = sh_basis(directions)
    return torch.einsum("...k,...kc->...c", basis, _align_sh(sh, basis.dim() - 1))


def irradiance(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Ramamoorthi-Hanrahan irradiance (..., 3) at unit ``normals`` (..., 3) under ``sh`` (..., 9, 3)."""
    basis = sh_basis(normals) * _weights(_IRRADIANCE_WEIGHTS, normals)
    return torch.einsum("...k,...kc->...c", basis, _align_sh(sh, basis.dim() - 1))


def shade_lambertian(albedo: torch.Tensor | float, normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Reflected radiance (..., 3) of a Lambertian surface: ``albedo * E(n) / pi``.

    albedo: (..., 3) or broadcastable to the irradiance, in [0, 1].
    """
    return albedo * irradiance(normals, sh) / math.pi


# ---------------------------------------------------------------------------------------
# Environment maps
# ---------------------------------------------------------------------------------------


def envmap_directions(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Directions (H, W, 3) and solid angles (H, W, steradians) of equirectangular pixel centres.

    Row i has polar angle ``theta = pi (i + 0.5) / H`` from +y (row 0 = straight up);
    column j has azimuth ``phi = 2 pi (j + 0.5) / W - pi`` and direction
    ``(sin theta sin phi, cos theta, sin theta cos phi)``. So the centre column faces +z
    (the frontal camera, in front of the face), column 3W/4 faces +x (which the frontal
    camera sees on the image's right), column W/4 faces -x, and the left and right edges
    meet at -z behind the head. Solid angles are exact per row band,
    ``(cos theta_top - cos theta_bottom) 2 pi / W``, so they sum to 4 pi.
    """
    dtype = dtype or torch.get_default_dtype()
    theta_edges = torch.linspace(0.0, math.pi, height + 1, dtype=torch.float64, device=device)
    theta = (theta_edges[:-1] + theta_edges[1:]) / 2
    phi = (torch.arange(width, dtype=torch.float64, device=device) + 0.5) * (2 * math.pi / width) - math.pi
    theta, phi = torch.meshgrid(theta, phi, indexing="ij")
    directions = torch.stack(
        (torch.sin(theta) * torch.sin(phi), torch.cos(theta), torch.sin(theta) * torch.cos(phi)), dim=-1
    )
    band = torch.cos(theta_edges[:-1]) - torch.cos(theta_edges[1:])
    solid_angles = (band * (2 * math.pi / width))[:, None].expand(height, width)
    return directions.to(dtype), solid_angles.to(dtype)


def _pixel_integrated_basis(height: int, width: int, device, dtype) -> torch.Tensor:
    """Integral of each basis function over each equirectangular pixel (H, W, 9), steradians.

    3 x 3 Gauss-Legendre points per pixel (in theta and phi, with the sin(theta) Jacobian):
    the error shrinks like the pixel size to the 6th power, so even coarse maps project
    accurately (a constant 16 x 32 map leaks < 1e-7 of its Y00 into the other coefficients).
    """
    nodes = torch.tensor([-math.sqrt(0.6), 0.0, math.sqrt(0.6)], dtype=torch.float64, device=device)
    weights = torch.tensor([5.0, 8.0, 5.0], dtype=torch.float64, device=device) / 18.0  # sum to 1
    d_theta, d_phi = math.pi / height, 2.0 * math.pi / width
    rows = torch.arange(height, dtype=torch.float64, device=device)[:, None]
    cols = torch.arange(width, dtype=torch.float64, device=device)[:, None]
    theta = (rows + 0.5 + nodes / 2) * d_theta  # (H, 3)
    phi = (cols + 0.5 + nodes / 2) * d_phi - math.pi  # (W, 3)
    sin_t, cos_t = torch.sin(theta)[:, :, None, None], torch.cos(theta)[:, :, None, None]
    directions = torch.stack(
        torch.broadcast_tensors(sin_t * torch.sin(phi), cos_t, sin_t * torch.cos(phi)), dim=-1
    )  # (H, 3, W, 3, 3)
    weight = (weights * d_theta * torch.sin(theta))[:, :, None, None] * (weights * d_phi)  # (H, 3, W, 3)
    integrated = (sh_basis(directions) * weight[..., None]).sum(dim=(1, 3))
    return integrated.to(dtype)


def envmap_to_sh(envmap: torch.Tensor) -> torch.Tensor:
    """Project an equirectangular radiance map (..., H, W, 3) onto order-2 SH -> (..., 9, 3).

    Each pixel is treated as constant radiance over its area (layout of
    :func:`envmap_directions`), and the basis is integrated over that area.
    """
    height, width = envmap.shape[-3], envmap.shape[-2]
    integrated_basis = _pixel_integrated_basis(height, width, envmap.device, envmap.dtype)
    return torch.einsum("...hwc,hwk->...kc", envmap, integrated_basis)


def sh_to_envmap(sh: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Radiance of ``sh`` (..., 9, 3) on an equirectangular map (..., H, W, 3).

    Pixel layout as in :func:`envmap_directions`.
    """
    directions, _ = envmap_directions(height, width, sh.device, sh.dtype)
    return torch.einsum("hwk,...kc->...hwc", sh_basis(directions), sh)


# ---------------------------------------------------------------------------------------
# Rotation, mirroring, directional lights
# ---------------------------------------------------------------------------------------


def _fibonacci_directions(count: int) -> torch.Tensor:
    """``count`` nearly uniform unit directions (count, 3), float64."""
    index = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * index / count
    ring = torch.sqrt(1.0 - z * z)
    angle = math.pi * (3.0 - math.sqrt(5.0)) * index
    return torch.stack((ring * torch.cos(angle), ring * torch.sin(angle), z), dim=-1)


# Rotation fitting: the rotated band-limited function is sampled at these directions and
# projected back by least squares. It is exact because rotations keep each band closed.
_FIT_DIRECTIONS = _fibonacci_directions(32)
_FIT_PSEUDOINVERSE = torch.linalg.pinv(sh_basis(_FIT_DIRECTIONS))  # (9, 32)


def sh_rotation_matrix(rotation: torch.Tensor) -> torch.Tensor:
    """Matrix (..., 9, 9) acting on SH coefficients for a ``rotation`` (..., 3, 3); see :func:`rotate_sh`."""
    directions = _FIT_DIRECTIONS.to(rotation)
    # Rows d^T R are (R^T d)^T: the rotated environment at d looks up the original at R^T d.
    basis_rotated = sh_basis(directions @ rotation)  # (..., 32, 9)
    matrix = _FIT_PSEUDOINVERSE.to(rotation) @ basis_rotated
    # Rotations never mix bands and leave band 0 alone: make that exact, not just up to rounding.
    band = torch.tensor(_COEFFICIENT_BAND, device=rotation.device)
    same_band = band[:, None] == band[None, :]
    matrix = matrix * same_band
    band0 = torch.zeros(9, 9, dtype=torch.bool, device=rotation.device)
    band0[0, 0] = True
    return torch.where(band0, torch.ones_like(matrix), matrix)


def rotate_sh(sh: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Coefficients (..., 9, 3) of the environment rotated by ``rotation`` (..., 3, 3).

    The result L' satisfies ``L'(R w) = L(w)``: a light arriving from direction d now
    arrives from R d. Exact for order-2 SH; composes as rotate(rotate(sh, R1), R2) =
    rotate(sh, R2 @ R1).
    """
    return sh_rotation_matrix(rotation) @ sh


def mirror_sh(sh: torch.Tensor) -> torch.Tensor:
    """Coefficients (..., 9, 3) of the environment mirrored by x -> -x (pairs with x-flip augmentation)."""
    return sh * _weights(_X_MIRROR_SIGNS, sh)[:, None]


def directional_light_sh(
    direction: torch.Tensor,
    color: torch.Tensor | float = 1.0,
    ambient: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """SH (..., 9, 3) of a distant light arriving from ``direction`` (..., 3) plus constant ambient radiance.

    ``direction`` points from the surface towards the light (need not be unit);
    ``color`` and ``ambient`` are floats or (..., 3). The light is the order-2 projection
    of a delta light scaled by :data:`DIRECTIONAL_LIGHT_SCALE`, so a white (albedo 1)
    Lambertian surface facing the light reflects exactly ``color + ambient`` (see
    :func:`shade_lambertian`); one facing directly away reflects ``ambient + color / 17``
    (order-2 ringing), and ambient alone reflects ``ambient`` from every normal.
    """
    unit = F.normalize(direction, dim=-1)
    color_t = torch.as_tensor(color, dtype=unit.dtype, device=unit.device)
    ambient_t = torch.as_tensor(ambient, dtype=unit.dtype, device=unit.device)
    if color_t.dim() == 0:
        color_t = color_t.expand(3)
    if ambient_t.dim() == 0:
        ambient_t = ambient_t.expand(3)
    sh = sh_basis(unit)[..., :, None] * (DIRECTIONAL_LIGHT_SCALE * color_t)[..., None, :]
    # Constant radiance a has L00 = a * sqrt(4 pi), giving irradiance pi * a.
    constant = torch.zeros(9, 1, dtype=unit.dtype, device=unit.device)
    constant[0, 0] = math.sqrt(4.0 * math.pi)
    return sh + constant * ambient_t[..., None, :]


# ---------------------------------------------------------------------------------------
# Previews and validation
# ---------------------------------------------------------------------------------------


def sphere_normals(
    resolution: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normals (H, W, 3) and mask (H, W) of a unit sphere seen orthographically from +z.

    The sphere fills the square image; image right = world +x, image up = +y (matching
    the frontal camera). Pixel centres outside the disc get zero normals and mask False.
    """
    dtype = dtype or torch.get_default_dtype()
    coords = (torch.arange(resolution, dtype=dtype, device=device) + 0.5) * (2.0 / resolution) - 1.0
    y, x = torch.meshgrid(-coords, coords, indexing="ij")  # row 0 is the top (+y)
    radius_sq = x * x + y * y
    mask = radius_sq <= 1.0
    z = torch.sqrt((1.0 - radius_sq).clamp(min=0.0))
    normals = torch.stack((x, y, z), dim=-1) * mask[..., None]
    return normals, mask


def render_sh_sphere(
    sh: torch.Tensor,
    resolution: int = 128,
    albedo: float | tuple[float, float, float] = 0.8,
    background: float | tuple[float, float, float] = 0.5,
    gamma: float | None = 2.2,
    as_uint8: bool = True,
) -> torch.Tensor:
    """Preview of ``sh`` (..., 9, 3) on a Lambertian sphere -> (..., R, R, 3).

    Linear radiance ``albedo E(n) / pi`` is clipped to [0, 1], then gamma-encoded as
    ``x ** (1 / gamma)`` (skipped when gamma is None). ``background`` is a display-space
    value (default mid grey). Returns uint8 in [0, 255], or float in [0, 1] when
    ``as_uint8`` is False.
    """
    normals, mask = sphere_normals(resolution, sh.device, sh.dtype)
    basis = sh_basis(normals) * _weights(_IRRADIANCE_WEIGHTS, sh)
    radiance = torch.einsum("hwk,...kc->...hwc", basis, sh)
    image = (torch.as_tensor(albedo, dtype=sh.dtype, device=sh.device) * radiance / math.pi).clamp(0.0, 1.0)
    if gamma is not None:
        image = image ** (1.0 / gamma)
    backdrop = torch.as_tensor(background, dtype=sh.dtype, device=sh.device).expand(3)
    image = torch.where(mask[..., None], image, backdrop)
    if as_uint8:
        return (image * 255.0).round().clamp(0, 255).to(torch.uint8)
    return image


def save_sh_sphere_png(sh: torch.Tensor, path: str | Path, resolution: int = 128, **render_kwargs) -> Path:
    """Write sphere previews of ``sh`` (9, 3), (B, 9, 3) or 27 floats side by side to a PNG."""
    from PIL import Image

    sh = torch.as_tensor(sh).detach().to("cpu", torch.float32).reshape(-1, NUM_SH_COEFFICIENTS, 3)
    images = render_sh_sphere(sh, resolution, as_uint8=True, **render_kwargs)  # (B, R, R, 3)
    strip = torch.cat(list(images), dim=1).numpy()
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(strip), "RGB").save(path)
    return path


def validate_sh(sh) -> str | None:
    """Describe what is wrong with one SH lighting entry (27 numbers or 9 x 3), or return None."""
    try:
        values = torch.as_tensor(sh, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        return f"sh is not a list of numbers ({error})"
    if tuple(values.shape) not in ((27,), (9, 3)):
        return f"sh must have 27 values (9 coefficients x RGB), got shape {tuple(values.shape)}"
    if not torch.isfinite(values).all():
        return "sh contains NaN or infinite values"
    return None
