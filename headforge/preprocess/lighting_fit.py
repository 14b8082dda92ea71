"""Lighting: second-order SH (9 x 3) from skin colour and the fitted mesh's normals.

Lambertian model (docs/architecture.md): a skin pixel of linear colour ``c`` with world
normal ``n`` and albedo ``a`` satisfies ``c = a / pi * sum_k A_k Y_k(n) L_k``. Rasterising
the fitted head (``headforge.raster``) gives per-pixel normals and a mask of plain-skin
faces (the ``skin`` and ``nose`` regions; lips, brows, eyes, hair and ears have other
albedos). Per channel this is linear in the nine coefficients ``L``; we solve it by
ridge-regularised least squares (normals seen from one side leave some combinations
poorly determined), then refit without the pixels whose residual is beyond
``outlier_sigmas`` robust standard deviations (cast shadows, specular highlights, hair).

Albedo and light intensity are only known up to a product: with a constant albedo
the SH is right up to one scale per channel. ``DEFAULT_SKIN_ALBEDO`` is the mean linear
skin albedo of the studio's population; pass a per-pixel albedo when it is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.heads.base import HeadModel
from headforge.lighting import SH_BAND_IRRADIANCE, sh_basis
from headforge.raster import interpolate, perspective_screen_vertices, rasterize, vertex_normals

__all__ = [
    "DEFAULT_SKIN_ALBEDO",
    "SKIN_REGIONS",
    "LightingFit",
    "skin_face_mask",
    "render_normals",
    "fit_sh",
    "fit_lighting",
    "sh_relative_error",
    "irradiance_error",
    "visible_normals",
]

#: Mean linear skin albedo (R, G, B) of the studio renders' skin pixels.
DEFAULT_SKIN_ALBEDO: tuple[float, float, float] = (0.26, 0.12, 0.065)
SKIN_REGIONS: tuple[str, ...] = ("skin", "nose")
_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)


@dataclass
class LightingFit:
    """Result of :func:`fit_lighting`.

    Attributes:
        sh: (9, 3) SH coefficients (world space, ``headforge.lighting`` basis).
        normals: (H, W, 3) world normals of the fitted mesh (zeros off the mesh).
        skin_mask: (H, W) bool, pixels used before outlier rejection.
        inlier_mask: (H, W) bool, pixels used in the final fit.
    """

    sh: Tensor
    normals: Tensor
    skin_mask: Tensor
    inlier_mask: Tensor


def skin_face_mask(model: HeadModel, regions: tuple[str, ...] = SKIN_REGIONS) -> Tensor:
    """(F,) bool: faces whose three vertices all lie in ``regions``."""
    vertex_mask = torch.zeros(model.n_vertices, dtype=torch.bool, device=model.device)
    for name in regions:
        vertex_mask |= model.region_mask(name)
    return vertex_mask[model.faces].all(-1)


def render_normals(
    vertices: Tensor, faces: Tensor, cam2world: Tensor, intrinsics: Tensor, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """Rasterise a mesh; per-pixel world normals and visible face ids.

    Args:
        vertices: (V, 3) world. faces: (F, 3). cam2world: (4, 4). intrinsics: (3, 3) normalised.
        height, width: image size in pixels.

    Returns:
        normals (H, W, 3) unit world normals (zeros on background), face_id (H, W) long (-1 off mesh).
    """
    screen = perspective_screen_vertices(vertices[None], cam2world[None], intrinsics[None], height, width)
    fragments = rasterize(screen, faces, height, width)
    normals = interpolate(vertex_normals(vertices[None], faces), faces, fragments)[0]
    normals = torch.nn.functional.normalize(normals, dim=-1) * fragments.mask[0, ..., None]
    return normals, fragments.face_id[0]


def _design(normals: Tensor) -> Tensor:
    """(N, 9) irradiance basis over pi: colour / albedo = design @ L."""
    weights = normals.new_tensor([SH_BAND_IRRADIANCE[b] for b in _BAND]) / math.pi
    return sh_basis(normals) * weights


def fit_sh(
    colors: Tensor,
    normals: Tensor,
    albedo: Tensor | tuple[float, float, float] = DEFAULT_SKIN_ALBEDO,
    ridge: float = 1e-2,
    outlier_sigmas: float = 2.5,
) -> tuple[Tensor, Tensor]:
    """Least-squares SH from linear colours and unit normals.

    Args:
        colors: (N, 3) linear RGB. normals: (N, 3) unit world normals.
        albedo: (N, 3) per-sample or (3,) constant linear albedo.
        ridge: Tikhonov weight relative to the mean diagonal of the normal equations.
        outlier_sigmas: refit without samples beyond this many robust (MAD) sigmas; 0 = off.

    Returns:
        sh (9, 3) and the (N,) bool inlier mask of the final fit.
    """
    albedo_t = torch.as_tensor(albedo, dtype=colors.dtype, device=colors.device).expand_as(colors)
    design = _design(normals.to(colors.dtype))
    target = colors / albedo_t.clamp(min=1e-4)
    inliers = torch.ones(colors.shape[0], dtype=torch.bool, device=colors.device)
    for attempt in range(2 if outlier_sigmas > 0 else 1):
        d, t = design[inliers], target[inliers]
        gram = d.T @ d
        gram = gram + ridge * gram.diagonal().mean() * torch.eye(9, dtype=d.dtype, device=d.device)
        sh = torch.linalg.solve(gram, d.T @ t)
        if attempt == 0 and outlier_sigmas > 0:
            residual = (design @ sh - target).norm(dim=-1)
            median = residual.median()
            sigma = 1.4826 * (residual - median).abs().median()
            inliers = residual <= median + outlier_sigmas * sigma.clamp(min=1e-6)
    return sh, inliers


def fit_lighting(
    image: Tensor,
    model: HeadModel,
    vertices: Tensor,
    cam2world: Tensor,
    intrinsics: Tensor,
    albedo: Tensor | tuple[float, float, float] = DEFAULT_SKIN_ALBEDO,
    gamma: float = 2.2,
    min_facing: float = 0.2,
    pixel_mask: Tensor | None = None,
) -> LightingFit:
    """Estimate SH lighting of one image from its fitted head.

    Args:
        image: (H, W, 3) display-encoded RGB in [0, 1] (gamma ``gamma``).
        model: the head model (faces and regions). vertices: (V, 3) fitted world vertices.
        cam2world: (4, 4). intrinsics: (3, 3) normalised.
        albedo: (H, W, 3) per-pixel or (3,) constant linear albedo.
        min_facing: drop grazing pixels (cosine between normal and view direction below it),
            whose colour mixes with the background.
        pixel_mask: optional (H, W) bool of pixels known to show bare skin (e.g. from a
            segmenter); combined with the mesh's skin faces.

    Returns:
        ``LightingFit``.
    """
    height, width = image.shape[:2]
    normals, face_id = render_normals(vertices, model.faces, cam2world, intrinsics, height, width)
    skin_faces = skin_face_mask(model)
    mask = (face_id >= 0) & skin_faces[face_id.clamp(min=0)]
    # Erode by one pixel: border pixels are antialiased against whatever lies behind.
    inner = mask.clone()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    if pixel_mask is not None:
        inner &= pixel_mask
    camera_forward = cam2world[:3, 2]
    inner &= (normals @ -camera_forward) > min_facing
    linear = image.clamp(0.0, 1.0) ** gamma
    pixel_albedo = albedo[inner] if isinstance(albedo, Tensor) and albedo.dim() == 3 else albedo
    if int(inner.sum()) < 20:
        raise ValueError("too few visible skin pixels to estimate lighting")
    sh, inliers = fit_sh(linear[inner], normals[inner], pixel_albedo)
    inlier_mask = torch.zeros_like(inner)
    inlier_mask[inner] = inliers
    return LightingFit(sh, normals, inner, inlier_mask)


def sh_relative_error(estimate: Tensor, truth: Tensor, scale_invariant: bool = False) -> Tensor:
    """|estimate - truth| / |truth| over (..., 9, 3); optionally after the best per-channel scale."""
    if scale_invariant:
        scale = (estimate * truth).sum(-2, keepdim=True) / (estimate * estimate).sum(-2, keepdim=True).clamp(
            min=1e-12
        )
        estimate = estimate * scale
    return (estimate - truth).flatten(-2).norm(dim=-1) / truth.flatten(-2).norm(dim=-1).clamp(min=1e-12)


def visible_normals(toward_camera: Tensor, count: int = 2000) -> Tensor:
    """(N, 3) unit normals a camera can see: Fibonacci-sphere directions within ~78 degrees
    of ``toward_camera`` (3,), the unit vector from the head to the camera."""
    index = torch.arange(count, dtype=toward_camera.dtype, device=toward_camera.device) + 0.5
    z = 1.0 - 2.0 * index / count
    radius = (1.0 - z * z).clamp(min=0.0).sqrt()
    angle = index * math.pi * (3.0 - math.sqrt(5.0))
    directions = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle), z), dim=-1)
    return directions[directions @ toward_camera > 0.2]


def irradiance_error(
    estimate: Tensor,
    truth: Tensor,
    toward_camera: Tensor,
    truth_rotation: Tensor | None = None,
    scale_invariant: bool = False,
) -> Tensor:
    """Relative RMS error of the irradiance ``E(n)`` over the normals a camera can see.

    The coefficients of directions facing away from the camera are barely observable in
    one image; this compares what is, all colour channels pooled.

    Args:
        estimate, truth: (9, 3). toward_camera: (3,) unit vector from the head to the camera,
            in the estimate's frame.
        truth_rotation: optional (3, 3) taking the estimate's frame to the truth's (e.g. the
            head's neck rotation when the truth lives in world space).
        scale_invariant: compare after the best per-channel scale of the estimate
            (albedo and light are only known up to a product).

    Returns:
        () tensor: ``|E_est - E_true| / |E_true|`` over those normals.
    """
    normals = visible_normals(toward_camera.to(truth))
    truth_normals = normals if truth_rotation is None else normals @ truth_rotation.to(truth).T
    e = _design(normals) @ estimate.to(truth)
    t = _design(truth_normals) @ truth
    if scale_invariant:
        e = e * ((e * t).sum(0) / (e * e).sum(0).clamp(min=1e-12))
    return (e - t).norm() / t.norm().clamp(min=1e-12)
