"""Cameras: EG3D-compatible labels, look-at and orbit poses, pose samplers, pixel rays.

Conventions (docs/architecture.md; checked against NVlabs/eg3d ``camera_utils.py``):

- World: +y up, the head faces +z, head inside [-0.5, 0.5]^3.
- ``cam2world`` (B, 4, 4) is OpenCV: camera x = image right, camera y = image down,
  camera z = viewing direction. For the frontal FFHQ camera at (0, 0, 2.7) looking at
  -z, camera x = world +x and camera y = world -y: a point at world +x appears on the
  image's *right* (the subject's left, as in an ordinary photograph) and world +y
  appears up. The rotation has determinant +1, so images are never mirrored. This is
  exactly what EG3D's ``create_cam2world_matrix`` builds.
- Intrinsics (B, 3, 3) are normalised by image size: ``[[fx, s, cx], [0, fy, cy],
  [0, 0, 1]]`` with row 0 in image widths and row 1 in image heights. A camera-space
  point (x, y, z) lands at ``u = (fx x + s y) / z + cx``, ``v = fy y / z + cy``, with
  (u, v) in [0, 1] across the image (u right, v down). Pixel (i, j) of an H x W image
  has its centre at ``((j + 0.5) / W, (i + 0.5) / H)``.
- Label: 25 floats = cam2world row-major (16) + intrinsics row-major (9).
- Yaw / pitch: radians, 0 = frontal and level; positive yaw moves the camera towards
  world +x, positive pitch moves it up (+y).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FFHQ_FOCAL = 4.2647
FFHQ_RADIUS = 2.7
FFHQ_PIVOT = (0.0, 0.0, 0.2)
LABEL_SIZE = 25

# Pose-sampler defaults. The standard deviations are pi-GAN's CelebA / FFHQ camera
# settings (h_stddev 0.3, v_stddev 0.155, carried over by GRAM and the EG3D family via
# ``GaussianCameraPoseSampler``); 0.3 rad (about 17 deg) matches the spread of FFHQ's
# mostly near-frontal yaws. Ranges clamp at about 4 standard deviations.
FFHQ_YAW_STD = 0.3
FFHQ_PITCH_STD = 0.155
FFHQ_YAW_RANGE = (-1.2, 1.2)
FFHQ_PITCH_RANGE = (-0.6, 0.6)

# EG3D clamps its polar angle away from the poles by this much (LookAtPoseSampler).
_EG3D_POLE_EPS = 1e-5

Vector3 = Sequence[float] | torch.Tensor


def _like(value: float | Sequence[float] | torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor on ``ref``'s device with ``ref``'s floating dtype."""
    return torch.as_tensor(value, dtype=ref.dtype, device=ref.device)


def _float_tensor(value: float | Sequence[float] | torch.Tensor, device=None) -> torch.Tensor:
    """Tensor of ``value``; keeps a floating tensor's dtype, else the default dtype."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value if device is None else value.to(device)
    return torch.as_tensor(value, dtype=torch.get_default_dtype(), device=device)


def _common_tensors(*values: float | torch.Tensor) -> list[torch.Tensor]:
    """Tensors of ``values`` on the device / dtype of the first floating tensor among them."""
    ref = next((v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    return [torch.as_tensor(v, dtype=dtype, device=device) for v in values]


# ---------------------------------------------------------------------------------------
# Field of view <-> normalised focal length
# ---------------------------------------------------------------------------------------


def fov_to_focal(fov_degrees: float | torch.Tensor, diagonal: bool = False) -> float | torch.Tensor:
    """Normalised focal length (in image widths) from a field of view in degrees.

    ``focal = extent / (2 tan(fov / 2))`` where ``extent`` is 1 for a horizontal FOV and
    sqrt(2) for the diagonal FOV of a square image. EG3D's ``FOV_to_intrinsics`` uses the
    diagonal form with pi ~ 3.14159 and sqrt(2) ~ 1.414: its "18.837 deg" FFHQ camera is
    ``fov_to_focal(18.837, diagonal=True)`` = 4.263, within 0.05 % of FFHQ_FOCAL = 4.2647,
    whose horizontal FOV is ``focal_to_fov(FFHQ_FOCAL)`` = 13.37 deg.
    ``tan(a/2)`` is evaluated as ``sin(a) / (1 + cos(a))`` so that 90 deg gives exactly 0.5.
    """
    extent = math.sqrt(2.0) if diagonal else 1.0
    if isinstance(fov_degrees, torch.Tensor):
        angle = torch.deg2rad(fov_degrees.double())
        focal = extent / (2.0 * torch.sin(angle) / (1.0 + torch.cos(angle)))
        dtype = fov_degrees.dtype if fov_degrees.is_floating_point() else torch.get_default_dtype()
        return focal.to(dtype)
    angle = math.radians(fov_degrees)
    return extent / (2.0 * math.sin(angle) / (1.0 + math.cos(angle)))


def focal_to_fov(focal: float | torch.Tensor, diagonal: bool = False) -> float | torch.Tensor:
    """Field of view in degrees from a normalised focal length; inverse of :func:`fov_to_focal`."""
    extent = math.sqrt(2.0) if diagonal else 1.0
    if isinstance(focal, torch.Tensor):
        fov = torch.rad2deg(2.0 * torch.atan(extent / (2.0 * focal.double())))
        return fov.to(focal.dtype if focal.is_floating_point() else torch.get_default_dtype())
    return math.degrees(2.0 * math.atan(extent / (2.0 * focal)))


def intrinsics_matrix(
    focal: float | torch.Tensor,
    principal: Sequence[float] = (0.5, 0.5),
    batch: int = 1,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalised intrinsics (B, 3, 3) with fx = fy = ``focal`` and zero skew.

    ``focal`` is a float or a (B,) tensor (then B comes from it and ``batch`` is ignored);
    ``principal`` is (cx, cy) in image widths / heights.
    """
    focal_t = _float_tensor(focal, device).reshape(-1)
    if focal_t.numel() == 1:
        focal_t = focal_t.expand(batch)
    K = torch.zeros(focal_t.shape[0], 3, 3, dtype=focal_t.dtype, device=focal_t.device)
    K[:, 0, 0] = focal_t
    K[:, 1, 1] = focal_t
    K[:, 0, 2] = principal[0]
    K[:, 1, 2] = principal[1]
    K[:, 2, 2] = 1.0
    return K


# ---------------------------------------------------------------------------------------
# Poses
# ---------------------------------------------------------------------------------------


def look_at(eye: torch.Tensor, target: Vector3, up: Vector3 = (0.0, 1.0, 0.0)) -> torch.Tensor:
    """OpenCV cam2world (B, 4, 4) for cameras at ``eye`` (B, 3) looking at ``target``.

    ``target`` and ``up`` are (3,) or (B, 3). Camera z points at the target, camera x =
    forward x up (image right), camera y = forward x right (image down), so world ``up``
    appears up in the image; this equals EG3D's ``create_cam2world_matrix``. When the
    view direction is parallel to ``up`` the roll is arbitrary but the pose stays finite.
    """
    target_t = _like(target, eye).expand_as(eye)
    up_t = _like(up, eye).expand_as(eye)
    forward = F.normalize(target_t - eye, dim=-1)
    right = torch.cross(forward, up_t, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    if degenerate.any():
        # Any reference axis not parallel to `up` gives a valid (if arbitrarily rolled) frame.
        axis = F.one_hot(up_t.abs().argmin(dim=-1), 3).to(eye.dtype)
        right = torch.where(degenerate, torch.cross(forward, axis, dim=-1), right)
    right = F.normalize(right, dim=-1)
    down = torch.cross(forward, right, dim=-1)
    cam2world = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    cam2world[..., :3, 0] = right
    cam2world[..., :3, 1] = down
    cam2world[..., :3, 2] = forward
    cam2world[..., :3, 3] = eye
    cam2world[..., 3, 3] = 1.0
    return cam2world


def orbit_cam2world(
    yaw: float | torch.Tensor,
    pitch: float | torch.Tensor,
    radius: float | torch.Tensor = FFHQ_RADIUS,
    pivot: Vector3 = FFHQ_PIVOT,
    orbit_center: Vector3 = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    """cam2world (B, 4, 4) of cameras on a sphere, all looking at ``pivot``.

    yaw, pitch: (B,) or scalars, radians. The camera sits at
    ``orbit_center + radius * (cos(pitch) sin(yaw), sin(pitch), cos(pitch) cos(yaw))``.
    As in EG3D's ``LookAtPoseSampler`` the sphere is centred on the world origin, not on
    the pivot: the frontal FFHQ camera is at (0, 0, 2.7) looking at (0, 0, 0.2). Pass
    ``orbit_center=pivot`` to orbit the pivot itself.
    """
    yaw_t, pitch_t = torch.broadcast_tensors(*_common_tensors(yaw, pitch))
    yaw_t, pitch_t = yaw_t.reshape(-1), pitch_t.reshape(-1)
    direction = torch.stack(
        (torch.cos(pitch_t) * torch.sin(yaw_t), torch.sin(pitch_t), torch.cos(pitch_t) * torch.cos(yaw_t)),
        dim=-1,
    )
    eye = _like(orbit_center, direction) + _like(radius, direction).reshape(-1, 1) * direction
    return look_at(eye, _like(pivot, direction))


def eg3d_angles_to_yaw_pitch(
    horizontal: float | torch.Tensor, vertical: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map EG3D ``LookAtPoseSampler`` angles to (yaw, pitch) radians.

    EG3D places the camera at azimuth ``horizontal`` (pi/2 = frontal, larger = towards
    world +x) and polar angle ``arccos(1 - 2 vertical / pi)`` from +y (``vertical`` is
    first clamped to [1e-5, pi - 1e-5]; pi/2 = level, larger = lower). Hence
    ``yaw = horizontal - pi/2`` and ``pitch = arcsin(1 - 2 vertical / pi)``.
    """
    h = _float_tensor(horizontal)
    v = _float_tensor(vertical).clamp(_EG3D_POLE_EPS, math.pi - _EG3D_POLE_EPS)
    return h - math.pi / 2, torch.asin(1.0 - 2.0 * v / math.pi)


def yaw_pitch_to_eg3d_angles(
    yaw: float | torch.Tensor, pitch: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`eg3d_angles_to_yaw_pitch`: (horizontal, vertical) EG3D angles."""
    return _float_tensor(yaw) + math.pi / 2, math.pi / 2 * (1.0 - torch.sin(_float_tensor(pitch)))


def sample_ffhq_poses(
    batch: int,
    generator: torch.Generator | None = None,
    yaw_std: float = FFHQ_YAW_STD,
    pitch_std: float = FFHQ_PITCH_STD,
    yaw_range: tuple[float, float] = FFHQ_YAW_RANGE,
    pitch_range: tuple[float, float] = FFHQ_PITCH_RANGE,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FFHQ-like random head poses: (yaw (B,), pitch (B,)) in radians.

    Zero-mean Gaussians with pi-GAN's FFHQ / CelebA deviations, clamped to the ranges.
    The deviations apply to yaw / pitch directly (pi-GAN's convention); EG3D's Gaussian
    sampler would instead shrink the vertical one by about 2/pi through its arccos map.
    Tensors live on ``generator``'s device when one is given, else on ``device``.
    Turn them into cameras with :func:`orbit_cam2world` or :meth:`Camera.orbit`.
    """
    if generator is not None:
        device = generator.device
    yaw = torch.randn(batch, generator=generator, device=device) * yaw_std
    pitch = torch.randn(batch, generator=generator, device=device) * pitch_std
    return yaw.clamp(*yaw_range), pitch.clamp(*pitch_range)


# ---------------------------------------------------------------------------------------
# Labels and mirroring
# ---------------------------------------------------------------------------------------


def label_from_matrices(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """EG3D label (..., 25) from cam2world (..., 4, 4) and intrinsics (..., 3, 3)."""
    return torch.cat((cam2world.flatten(-2), intrinsics.flatten(-2)), dim=-1)


def matrices_from_label(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an EG3D label (..., 25) into cam2world (..., 4, 4) and intrinsics (..., 3, 3)."""
    if label.shape[-1] != LABEL_SIZE:
        raise ValueError(f"camera label must have {LABEL_SIZE} values, got shape {tuple(label.shape)}")
    lead = label.shape[:-1]
    return label[..., :16].reshape(*lead, 4, 4), label[..., 16:].reshape(*lead, 3, 3)


def mirror_cam2world(cam2world: torch.Tensor) -> torch.Tensor:
    """cam2world (..., 4, 4) of the camera that sees the x-mirrored world: ``F C F``, F = diag(-1,1,1,1)."""
    sign = torch.ones(4, dtype=cam2world.dtype, device=cam2world.device)
    sign[0] = -1.0
    return cam2world * sign[:, None] * sign[None, :]


def mirror_intrinsics(intrinsics: torch.Tensor) -> torch.Tensor:
    """Intrinsics (..., 3, 3) of a horizontally flipped image: cx -> 1 - cx, skew -> -skew."""
    mirrored = intrinsics.clone()
    mirrored[..., 0, 2] = 1.0 - intrinsics[..., 0, 2]
    mirrored[..., 0, 1] = -intrinsics[..., 0, 1]
    return mirrored


def mirror_label(label: torch.Tensor) -> torch.Tensor:
    """Label (..., 25) of a horizontally flipped image (x-flip augmentation); an involution."""
    cam2world, intrinsics = matrices_from_label(label)
    return label_from_matrices(mirror_cam2world(cam2world), mirror_intrinsics(intrinsics))


def validate_label(label, tol: float = 1e-2) -> str | None:
    """Describe what is wrong with one camera label (25 numbers), or return None if it is usable.

    Checks: 25 finite numbers; cam2world rotation orthonormal with determinant +1 and
    bottom row (0, 0, 0, 1) within ``tol``; fx, fy > 0; intrinsics bottom row (0, 0, 1).
    """
    try:
        values = torch.as_tensor(label, dtype=torch.float64).detach().cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError) as error:
        return f"camera label is not a list of numbers ({error})"
    if values.numel() != LABEL_SIZE:
        return f"camera label has {values.numel()} values, expected {LABEL_SIZE}"
    if not torch.isfinite(values).all():
        return "camera label contains NaN or infinite values"
    cam2world, intrinsics = matrices_from_label(values)
    rotation = cam2world[:3, :3]
    gram_error = (rotation.T @ rotation - torch.eye(3, dtype=torch.float64)).abs().max().item()
    if gram_error > tol:
        return f"cam2world rotation is not orthonormal (max |R^T R - I| = {gram_error:.3g})"
    if torch.linalg.det(rotation).item() < 0:
        return "cam2world rotation is a reflection (determinant -1): the image would be mirrored"
    bottom_error = (cam2world[3] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)).abs().max().item()
    if bottom_error > tol:
        return f"cam2world bottom row is {cam2world[3].tolist()}, expected [0, 0, 0, 1]"
    fx, fy = intrinsics[0, 0].item(), intrinsics[1, 1].item()
    if fx <= 0 or fy <= 0:
        return f"focal lengths must be positive, got fx={fx:.4g}, fy={fy:.4g}"
    expected_rows = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    if (intrinsics[2:] - expected_rows).abs().max().item() > tol or abs(intrinsics[1, 0].item()) > tol:
        return f"intrinsics must be upper triangular with bottom row [0, 0, 1], got {intrinsics.tolist()}"
    return None


# ---------------------------------------------------------------------------------------
# Rays and projection
# ---------------------------------------------------------------------------------------


def pixel_rays(
    cam2world: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres: origins, unit directions, both (B, H*W, 3).

    Pixels are ordered row-major (index ``i * W + j`` for row i, column j); the ray of
    pixel (i, j) passes through normalised image point ((j + 0.5) / W, (i + 0.5) / H).
    """
    dtype, device = cam2world.dtype, cam2world.device
    v = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
    u = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
    v, u = torch.meshgrid(v, u, indexing="ij")
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    fx, skew, cx = intrinsics[:, 0, 0:1], intrinsics[:, 0, 1:2], intrinsics[:, 0, 2:3]
    fy, cy = intrinsics[:, 1, 1:2], intrinsics[:, 1, 2:3]
    y_cam = (v - cy) / fy
    x_cam = (u - cx - skew * y_cam) / fx
    directions_cam = torch.stack((x_cam, y_cam, torch.ones_like(x_cam)), dim=-1)  # (B, HW, 3), z = 1
    directions = F.normalize(directions_cam @ cam2world[:, :3, :3].transpose(1, 2), dim=-1)
    origins = cam2world[:, None, :3, 3].repeat(1, height * width, 1)
    return origins, directions


def project_points(
    points: torch.Tensor, cam2world: torch.Tensor, intrinsics: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points (B, N, 3) -> uv (B, N, 2) in [0, 1] (x right, y down), depth (B, N).

    ``depth`` is camera-space z (distance along the optical axis, not along the ray).
    Points behind the camera get depth <= 0 and meaningless uv; callers must mask them.
    """
    rotation, translation = cam2world[:, :3, :3], cam2world[:, None, :3, 3]
    points_cam = (points - translation) @ rotation  # row-vector form of R^T (p - t)
    x, y, depth = points_cam.unbind(-1)
    fx, skew, cx = intrinsics[:, 0, 0:1], intrinsics[:, 0, 1:2], intrinsics[:, 0, 2:3]
    fy, cy = intrinsics[:, 1, 1:2], intrinsics[:, 1, 2:3]
    u = (fx * x + skew * y) / depth + cx
    v = fy * y / depth + cy
    return torch.stack((u, v), dim=-1), depth


# ---------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------


@dataclass
class Camera:
    """A batch of pinhole cameras: OpenCV ``cam2world`` (B, 4, 4), normalised ``intrinsics`` (B, 3, 3).

    A single (4, 4) / (3, 3) pair becomes a batch of one; intrinsics of batch 1 are
    broadcast to the pose batch.
    """

    cam2world: torch.Tensor
    intrinsics: torch.Tensor

    def __post_init__(self) -> None:
        if self.cam2world.dim() == 2:
            self.cam2world = self.cam2world.unsqueeze(0)
        if self.intrinsics.dim() == 2:
            self.intrinsics = self.intrinsics.unsqueeze(0)
        if self.cam2world.shape[1:] != (4, 4) or self.intrinsics.shape[1:] != (3, 3):
            raise ValueError(
                f"expected cam2world (B,4,4) and intrinsics (B,3,3), got "
                f"{tuple(self.cam2world.shape)} and {tuple(self.intrinsics.shape)}"
            )
        if self.intrinsics.shape[0] == 1 and self.cam2world.shape[0] > 1:
            self.intrinsics = self.intrinsics.expand(self.cam2world.shape[0], 3, 3)
        if self.intrinsics.shape[0] != self.cam2world.shape[0]:
            raise ValueError("cam2world and intrinsics batch sizes differ")

    @classmethod
    def from_label(cls, label: torch.Tensor) -> Camera:
        """Cameras from EG3D labels (B, 25) or one label (25,)."""
        cam2world, intrinsics = matrices_from_label(label.reshape(-1, LABEL_SIZE))
        return cls(cam2world, intrinsics)

    def to_label(self) -> torch.Tensor:
        """EG3D labels (B, 25)."""
        return label_from_matrices(self.cam2world, self.intrinsics)

    @classmethod
    def orbit(
        cls,
        yaw: float | torch.Tensor = 0.0,
        pitch: float | torch.Tensor = 0.0,
        radius: float | torch.Tensor = FFHQ_RADIUS,
        pivot: Vector3 = FFHQ_PIVOT,
        focal: float | torch.Tensor = FFHQ_FOCAL,
        device: torch.device | str | None = None,
    ) -> Camera:
        """Cameras orbiting as in :func:`orbit_cam2world` (EG3D), with square intrinsics of ``focal``."""
        yaw_t, pitch_t = _float_tensor(yaw, device), _float_tensor(pitch, device)
        cam2world = orbit_cam2world(yaw_t, pitch_t, radius, pivot)
        intrinsics = intrinsics_matrix(focal, batch=cam2world.shape[0], device=cam2world.device)
        return cls(cam2world, intrinsics.to(cam2world.dtype))

    @classmethod
    def frontal(cls, batch: int = 1, device: torch.device | str | None = None) -> Camera:
        """The FFHQ frontal camera (yaw = pitch = 0), repeated ``batch`` times."""
        return cls.orbit(torch.zeros(batch), torch.zeros(batch), device=device)

    def to(self, *args, **kwargs) -> Camera:
        """Move / cast both tensors (same arguments as ``torch.Tensor.to``)."""
        return Camera(self.cam2world.to(*args, **kwargs), self.intrinsics.to(*args, **kwargs))

    @property
    def batch_size(self) -> int:
        return self.cam2world.shape[0]

    @property
    def device(self) -> torch.device:
        return self.cam2world.device

    @property
    def position(self) -> torch.Tensor:
        """Camera centres in world space (B, 3)."""
        return self.cam2world[:, :3, 3]

    @property
    def world2cam(self) -> torch.Tensor:
        """Rigid inverse of cam2world (B, 4, 4): [R^T, -R^T t]."""
        rotation_t = self.cam2world[:, :3, :3].transpose(1, 2)
        world2cam = torch.zeros_like(self.cam2world)
        world2cam[:, :3, :3] = rotation_t
        world2cam[:, :3, 3] = -(rotation_t @ self.cam2world[:, :3, 3:4]).squeeze(-1)
        world2cam[:, 3, 3] = 1.0
        return world2cam

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (B, N, 3) -> uv (B, N, 2) in [0, 1], depth (B, N); see :func:`project_points`."""
        return project_points(points, self.cam2world, self.intrinsics)

    def rays(self, resolution: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-centre rays for ``resolution`` (S or (H, W)): origins, directions (B, H*W, 3)."""
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
        return pixel_rays(self.cam2world, self.intrinsics, height, width)

    def mirrored(self) -> Camera:
        """Cameras for horizontally flipped images of the x-mirrored world (see :func:`mirror_label`)."""
        return Camera(mirror_cam2world(self.cam2world), mirror_intrinsics(self.intrinsics))
