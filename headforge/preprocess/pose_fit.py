"""Camera from landmarks: rigid pose + focal in EG3D's normalised intrinsics.

Given model landmarks in world space (B, L, 3) and detected landmarks in normalised image
coordinates (B, L, 2) (x right, y down, [0, 1] across the crop), find the OpenCV camera
(docs/architecture.md) that projects the first onto the second:

1. a closed-form start: an affine camera fitted by linear least squares, its 2x3 part
   orthonormalised into a rotation, its scale turned into a depth (``focal / scale``);
2. refinement with L-BFGS in float64 on the weighted squared
   reprojection error, over axis-angle rotation (3), translation (3) and log focal (1);
   a Gaussian prior on log focal (around ``FFHQ_FOCAL``) keeps the focal/distance
   ambiguity of near-orthographic faces in check.

The result is a 25-number EG3D label (cam2world 16 + intrinsics 9).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.cameras import FFHQ_FOCAL, intrinsics_matrix, label_from_matrices
from headforge.heads.lbs import rodrigues

__all__ = [
    "one_thread",
    "minimize_lbfgs",
    "CameraFit",
    "project_with_world2cam",
    "initial_camera",
    "fit_camera",
    "rotation_angle_degrees",
]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run PyTorch on one CPU thread inside the block.

    The fits evaluate tiny tensors hundreds of times; thread hand-offs cost more than
    they save (about 2x slower with two threads), and a pool of workers is the better
    way to use more cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def minimize_lbfgs(variables: list[Tensor], objective: Callable[[], Tensor], iterations: int) -> None:
    """Minimise ``objective()`` (a scalar) over ``variables`` in place with strong-Wolfe L-BFGS.

    One ``LBFGS.step`` of up to ``iterations`` iterations on one thread (see
    :func:`one_thread`); the landmark fits are small, smooth least-squares problems.
    """
    optimiser = torch.optim.LBFGS(variables, lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with one_thread():
        optimiser.step(closure)


@dataclass
class CameraFit:
    """A fitted camera.

    Attributes:
        rotation: (B, 3) world->camera axis-angle, radians.
        translation: (B, 3) world->camera translation, world units.
        focal: (B,) focal length normalised by the image size.
        cam2world: (B, 4, 4) OpenCV camera-to-world.
        intrinsics: (B, 3, 3) normalised intrinsics, principal point 0.5.
        label: (B, 25) EG3D label.
        rms: (B,) root-mean-square reprojection error in normalised image units.
    """

    rotation: Tensor
    translation: Tensor
    focal: Tensor
    cam2world: Tensor
    intrinsics: Tensor
    label: Tensor
    rms: Tensor


def project_with_world2cam(points: Tensor, rotation: Tensor, translation: Tensor, focal: Tensor) -> Tensor:
    """Pinhole projection with principal point 0.5.

    Args:
        points: (B, L, 3) world points.
        rotation: (B, 3) world->camera axis-angle, or (B, 3, 3) matrices.
        translation: (B, 3) world->camera translation.
        focal: (B,) normalised focal.

    Returns:
        (B, L, 2) normalised image coordinates (x right, y down).
    """
    matrix = rodrigues(rotation) if rotation.shape[-1] == 3 and rotation.dim() == 2 else rotation
    cam = points @ matrix.transpose(1, 2) + translation[:, None]
    depth = cam[..., 2:3].clamp(min=1e-6)
    return cam[..., :2] / depth * focal[:, None, None] + 0.5


def _matrix_to_axis_angle(matrix: Tensor) -> Tensor:
    """(B, 3, 3) rotations -> (B, 3) axis-angle (angles below pi - 1e-3)."""
    cos = ((matrix.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    axis = torch.stack(
        (
            matrix[:, 2, 1] - matrix[:, 1, 2],
            matrix[:, 0, 2] - matrix[:, 2, 0],
            matrix[:, 1, 0] - matrix[:, 0, 1],
        ),
        dim=-1,
    )
    sin = torch.sin(angle)
    scale = torch.where(sin.abs() > 1e-8, angle / (2.0 * sin.clamp(min=1e-12)), torch.full_like(angle, 0.5))
    return axis * scale[:, None]


def initial_camera(
    points: Tensor, observed: Tensor, weights: Tensor, focal: float = FFHQ_FOCAL
) -> tuple[Tensor, Tensor]:
    """Closed-form start from an affine camera.

    Solves ``observed ~= A @ [X; 1]`` (A: 2x4) by weighted least squares, orthonormalises
    A's rows into the first two rows of a rotation (third = cross product) and reads the
    depth of the landmark centroid from the mean row norm ``s`` as ``focal / s``.

    Args:
        points: (B, L, 3) world points. observed: (B, L, 2) normalised image coordinates.
        weights: (L,) non-negative.

    Returns:
        rotation (B, 3) axis-angle and translation (B, 3), world->camera.
    """
    batch = points.shape[0]
    centroid = (points * weights[None, :, None]).sum(1) / weights.sum()
    centred = points - centroid[:, None]
    design = torch.cat([centred, torch.ones_like(centred[..., :1])], dim=-1) * weights.sqrt()[None, :, None]
    target = (observed - 0.5) * weights.sqrt()[None, :, None]
    affine = torch.linalg.lstsq(design, target).solution.transpose(1, 2)  # (B, 2, 4)
    rows = affine[:, :, :3]
    scale = rows.norm(dim=-1).mean(-1)  # (B,)
    u, _, vh = torch.linalg.svd(rows)
    top = u @ torch.eye(2, 3, dtype=rows.dtype, device=rows.device) @ vh  # nearest orthonormal 2x3
    third = torch.cross(top[:, 0], top[:, 1], dim=-1)
    matrix = torch.stack([top[:, 0], top[:, 1], third], dim=1)
    depth = focal / scale
    offset = affine[:, :, 3] / scale[:, None]  # image offset of the centroid, in world units at its depth
    translation_cam = torch.cat([offset, torch.zeros(batch, 1, dtype=rows.dtype, device=rows.device)], -1)
    translation_cam[:, 2] = depth
    translation = translation_cam - (matrix @ centroid[:, :, None])[..., 0]
    return _matrix_to_axis_angle(matrix), translation


def _camera_outputs(rotation: Tensor, translation: Tensor, focal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    matrix = rodrigues(rotation)
    batch = rotation.shape[0]
    cam2world = torch.eye(4, dtype=rotation.dtype, device=rotation.device).repeat(batch, 1, 1)
    cam2world[:, :3, :3] = matrix.transpose(1, 2)
    cam2world[:, :3, 3] = -(matrix.transpose(1, 2) @ translation[:, :, None])[..., 0]
    intrinsics = intrinsics_matrix(focal).to(rotation)
    return cam2world, intrinsics, label_from_matrices(cam2world, intrinsics)


def fit_camera(
    points: Tensor,
    observed: Tensor,
    weights: Tensor | None = None,
    fit_focal: bool = True,
    focal_prior: float = FFHQ_FOCAL,
    focal_prior_std: float = 0.1,
    iterations: int = 60,
) -> CameraFit:
    """Fit camera rotation, translation and focal to landmark correspondences.

    Args:
        points: (B, L, 3) model landmarks in world space.
        observed: (B, L, 2) detected landmarks, normalised image coordinates.
        weights: (L,) per-landmark weights (default ones).
        fit_focal: optimise the focal (else it stays ``focal_prior``).
        focal_prior: prior mean of the normalised focal.
        focal_prior_std: prior std of log focal (0.1 ~ +-10 %).
        iterations: L-BFGS iterations.

    Returns:
        ``CameraFit`` (float32, on the inputs' device).
    """
    device = points.device
    points64, observed64 = points.double(), observed.double()
    weights64 = (torch.ones(points.shape[1]) if weights is None else weights).to(device, torch.float64)
    rotation, translation = initial_camera(points64, observed64, weights64, focal_prior)
    log_focal = torch.full((points.shape[0],), math.log(focal_prior), dtype=torch.float64, device=device)
    rotation = rotation.clone().requires_grad_(True)
    translation = translation.clone().requires_grad_(True)
    log_focal = log_focal.clone().requires_grad_(fit_focal)
    variables = [rotation, translation] + ([log_focal] if fit_focal else [])
    prior_log = math.log(focal_prior)

    def residual_loss() -> Tensor:
        projected = project_with_world2cam(points64, rotation, translation, log_focal.exp())
        loss = (weights64[None, :, None] * (projected - observed64) ** 2).sum()
        return loss + 1e-4 * ((log_focal - prior_log) / focal_prior_std).pow(2).sum()

    minimize_lbfgs(variables, residual_loss, iterations)
    with torch.no_grad():
        focal = log_focal.exp()
        projected = project_with_world2cam(points64, rotation, translation, focal)
        rms = ((projected - observed64) ** 2).sum(-1).mean(-1).sqrt()
        cam2world, intrinsics, label = _camera_outputs(rotation, translation, focal)
    f32 = torch.float32
    return CameraFit(
        rotation.detach().to(f32),
        translation.detach().to(f32),
        focal.to(f32),
        cam2world.to(f32),
        intrinsics.to(f32),
        label.to(f32),
        rms.to(f32),
    )


def rotation_angle_degrees(first: Tensor, second: Tensor) -> Tensor:
    """Geodesic angle between rotations (B, 3, 3) -> (B,) degrees."""
    relative = first.transpose(1, 2) @ second
    cos = ((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))
