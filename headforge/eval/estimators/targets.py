"""Ground-truth targets for the estimators, derived from studio dataset labels.

Head pose relative to the camera
--------------------------------
The head's world rotation is ``R_head = R(global) @ R(neck)`` (axis-angle
joints of the head model's kinematic chain, ``POSE_SLICES``; the neck is the
child of the root). The camera's OpenCV cam2world rotation ``R_cam`` comes from
the 25-number label. The head as seen from the camera, expressed in the frame
of the *frontal* camera (at +z looking at -z, ``R_front = diag(1, -1, -1)``), is

    R_rel = R_front @ R_cam^T @ R_head

so a frontal camera looking at an unposed head gives the identity. ``R_rel``
is split as ``R_rel = R_y(yaw) @ R_x(pitch) @ R_z(roll)`` (world axes: +x the
subject's left / image right, +y up, +z out of the face), all radians:

- yaw > 0: the face turns towards image right (the subject's left). A camera
  orbiting towards world +x (positive camera yaw, docs/architecture.md) around
  an unposed head gives head yaw = -camera yaw.
- pitch > 0: the face tilts down (right-handed about +x takes +z towards -y).
- roll > 0: the top of the head tilts towards image left (right-handed about +z).

Translation is ignored: the angles describe orientation only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from headforge.heads.base import POSE_SLICES
from headforge.heads.lbs import rodrigues

__all__ = [
    "head_rotation_relative_to_camera",
    "rotation_to_yaw_pitch_roll",
    "yaw_pitch_roll_to_rotation",
    "head_pose_angles",
]


def head_rotation_relative_to_camera(camera_labels: Tensor, pose: Tensor) -> Tensor:
    """``R_rel`` of the module docstring.

    Args:
        camera_labels: (B, 25) EG3D labels (cam2world 4x4 row-major + intrinsics).
        pose: (B, 15) head-model pose, axis-angle radians (``POSE_SLICES``).

    Returns:
        (B, 3, 3) rotation of the head in the frontal-camera frame.
    """
    cam_rotation = camera_labels[:, :16].reshape(-1, 4, 4)[:, :3, :3]
    head_rotation = rodrigues(pose[:, POSE_SLICES["global"]]) @ rodrigues(pose[:, POSE_SLICES["neck"]])
    front = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=pose.dtype, device=pose.device))
    return front @ cam_rotation.transpose(1, 2).to(pose.dtype) @ head_rotation


def rotation_to_yaw_pitch_roll(rotation: Tensor) -> Tensor:
    """Split ``R = R_y(yaw) R_x(pitch) R_z(roll)``.

    Args:
        rotation: (B, 3, 3) rotation matrices.

    Returns:
        (B, 3) yaw, pitch, roll in radians (pitch in [-pi/2, pi/2]).
    """
    # Row 1 of R_y R_x R_z is (cos p sin r, cos p cos r, -sin p);
    # column 2 is (sin y cos p, -sin p, cos y cos p).
    pitch = torch.asin((-rotation[:, 1, 2]).clamp(-1.0, 1.0))
    yaw = torch.atan2(rotation[:, 0, 2], rotation[:, 2, 2])
    roll = torch.atan2(rotation[:, 1, 0], rotation[:, 1, 1])
    return torch.stack([yaw, pitch, roll], dim=1)


def yaw_pitch_roll_to_rotation(angles: Tensor) -> Tensor:
    """Inverse of :func:`rotation_to_yaw_pitch_roll`: (B, 3) radians -> (B, 3, 3)."""
    yaw, pitch, roll = angles.unbind(dim=1)
    zeros, ones = torch.zeros_like(yaw), torch.ones_like(yaw)

    def matrix(rows: list[list[Tensor]]) -> Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    r_y = matrix([[yaw.cos(), zeros, yaw.sin()], [zeros, ones, zeros], [-yaw.sin(), zeros, yaw.cos()]])
    r_x = matrix(
        [[ones, zeros, zeros], [zeros, pitch.cos(), -pitch.sin()], [zeros, pitch.sin(), pitch.cos()]]
    )
    r_z = matrix([[roll.cos(), -roll.sin(), zeros], [roll.sin(), roll.cos(), zeros], [zeros, zeros, ones]])
    return r_y @ r_x @ r_z


def head_pose_angles(camera_labels: Tensor, pose: Tensor) -> Tensor:
    """Head yaw, pitch, roll relative to the camera, (B, 3) radians (module docstring)."""
    return rotation_to_yaw_pitch_roll(head_rotation_relative_to_camera(camera_labels, pose))
