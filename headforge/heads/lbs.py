"""Linear blend skinning along a kinematic tree (SMPL / FLAME convention).

Conventions
-----------
* Rotations are axis-angle vectors (radians, right-hand rule); a joint's
  rotation is expressed in its parent's frame, about the joint position.
* ``parents[j]`` is the index of joint ``j``'s parent, ``-1`` for the root;
  parents always come before their children.
* Pose corrective offsets (FLAME ``posedirs``) are driven by the flattened
  ``R_j - I`` of every non-root joint, in joint order, row-major (9 numbers
  per joint), exactly as in SMPL and FLAME.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "rodrigues",
    "batch_rigid_transform",
    "pose_feature",
    "lbs",
]


def rodrigues(axis_angle: Tensor) -> Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues' formula).

    R = I + (sin t / t) K + ((1 - cos t) / t^2) K^2, with K the cross-product
    matrix of the (unnormalised) vector and t its length. The two scalar
    coefficients switch to their Taylor series below t^2 = 1e-6 so that the
    function and its gradient stay finite at t = 0 (zero pose).

    Args:
        axis_angle: (..., 3) rotation vectors in radians.

    Returns:
        (..., 3, 3) rotation matrices, same dtype and device.
    """
    theta_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)  # (..., 1)
    small = theta_sq < 1e-6
    # A substitute argument keeps the unused branch of torch.where finite (and its gradient NaN-free).
    safe_theta_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    safe_theta = safe_theta_sq.sqrt()
    sin_coef = torch.where(
        small, 1.0 - theta_sq / 6.0 + theta_sq**2 / 120.0, torch.sin(safe_theta) / safe_theta
    )
    cos_coef = torch.where(
        small, 0.5 - theta_sq / 24.0 + theta_sq**2 / 720.0, (1.0 - torch.cos(safe_theta)) / safe_theta_sq
    )
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(K)
    return eye + sin_coef[..., None] * K + cos_coef[..., None] * (K @ K)


def batch_rigid_transform(rotations: Tensor, joints: Tensor, parents: Tensor) -> tuple[Tensor, Tensor]:
    """Compose per-joint rotations along a kinematic tree.

    Args:
        rotations: (B, J, 3, 3) local rotation of each joint (about the joint,
            in the parent's frame).
        joints: (B, J, 3) rest-pose joint positions (world units).
        parents: (J,) long, parent index per joint, -1 for the root.

    Returns:
        posed_joints: (B, J, 3) joint positions after posing.
        skin_transforms: (B, J, 4, 4) transforms that carry a rest-pose point
            rigidly attached to joint j to its posed position:
            ``G_j @ [[I, -joints_j], [0, 1]]`` with G_j the joint's world transform.
    """
    batch, n_joints = joints.shape[:2]
    rel_joints = joints.clone()
    parent_list = [int(p) for p in parents.tolist()]
    for j, p in enumerate(parent_list):
        if p >= 0:
            rel_joints[:, j] = joints[:, j] - joints[:, p]
    local = torch.zeros(batch, n_joints, 4, 4, dtype=joints.dtype, device=joints.device)
    local[:, :, :3, :3] = rotations
    local[:, :, :3, 3] = rel_joints
    local[:, :, 3, 3] = 1.0
    world: list[Tensor] = []
    for j, p in enumerate(parent_list):
        world.append(local[:, j] if p < 0 else world[p] @ local[:, j])
    world_t = torch.stack(world, dim=1)  # (B, J, 4, 4)
    posed_joints = world_t[:, :, :3, 3]
    # Subtract the rotated rest joint so the transform acts on rest-pose coordinates directly.
    offset = (world_t[:, :, :3, :3] @ joints[..., None])[..., 0]
    skin = world_t.clone()
    skin[:, :, :3, 3] = world_t[:, :, :3, 3] - offset
    return posed_joints, skin


def pose_feature(rotations: Tensor) -> Tensor:
    """Pose-corrective feature: flattened (R_j - I) of the non-root joints.

    Args:
        rotations: (B, J, 3, 3).

    Returns:
        (B, (J - 1) * 9).
    """
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).reshape(rotations.shape[0], -1)


def lbs(
    v_shaped: Tensor,
    joints: Tensor,
    pose: Tensor,
    weights: Tensor,
    parents: Tensor,
    posedirs: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Linear blend skinning with optional pose-corrective blendshapes.

    Args:
        v_shaped: (B, V, 3) rest-pose vertices after shape and expression
            blendshapes (world units).
        joints: (B, J, 3) rest-pose joint positions.
        pose: (B, J * 3) axis-angle per joint, radians, in joint order.
        weights: (V, J) skinning weights, rows summing to 1.
        parents: (J,) long, parent per joint (-1 for the root).
        posedirs: optional ((J - 1) * 9, V * 3) pose corrective basis
            (FLAME layout after transposition).

    Returns:
        vertices: (B, V, 3) posed vertices.
        posed_joints: (B, J, 3).
        skin_transforms: (B, J, 4, 4) per-joint skinning transforms.
    """
    batch, n_vertices = v_shaped.shape[:2]
    n_joints = joints.shape[1]
    rotations = rodrigues(pose.reshape(batch, n_joints, 3))
    v_posed = v_shaped
    if posedirs is not None:
        offsets = pose_feature(rotations) @ posedirs  # (B, V*3)
        v_posed = v_shaped + offsets.reshape(batch, n_vertices, 3)
    posed_joints, skin = batch_rigid_transform(rotations, joints, parents)
    # Blend the 3x4 transforms per vertex: (B, V, 12) = (V, J) x (B, J, 12).
    blended = torch.einsum("vj,bjk->bvk", weights, skin[:, :, :3, :].reshape(batch, n_joints, 12))
    blended = blended.reshape(batch, n_vertices, 3, 4)
    vertices = (blended[..., :3] @ v_posed[..., None])[..., 0] + blended[..., 3]
    return vertices, posed_joints, skin
