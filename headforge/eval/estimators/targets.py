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

Expression-induced landmark offsets
-----------------------------------
The 35 expression coefficients are not identifiable from an image (``smile``
overlaps ``smile_left`` + ``smile_right``, the ``jaw_open`` component overlaps
the jaw joint, ...), so the expression estimator also regresses what the image
shows: the displacement of the 68 iBUG landmarks caused by the expression and
the jaw, on the *mean* identity,

    offsets(e, jaw) = L(shape=0, expression=e, pose=[0, 0, jaw, 0, 0])[:68]
                    - L(shape=0, expression=0, pose=0)[:68]

(``L`` the head model's landmarks, ``POSE_SLICES`` layout: global, neck and
eye rotations zero, only the jaw joint set). The result is (B, 68, 3) in the
head model's world units (+x the subject's left, +y up, +z out of the face;
about 0.002 units per millimetre for the procedural head, so 1 mm = 0.002).
It is identity- and head-pose-free by construction, linear in ``e`` when the
jaw is zero (linear blendshapes, no pose correctives at zero pose) and
identical for coefficient combinations that produce the same surface. The two
iris centres (landmarks 68, 69) are left out: they follow the gaze, not the
expression.
"""

from __future__ import annotations

import torch
from torch import Tensor

from headforge.heads.base import POSE_SLICES, HeadModel
from headforge.heads.lbs import rodrigues

__all__ = [
    "head_rotation_relative_to_camera",
    "rotation_to_yaw_pitch_roll",
    "yaw_pitch_roll_to_rotation",
    "head_pose_angles",
    "expression_offsets",
    "N_OFFSET_LANDMARKS",
    "MOUTH_LANDMARKS",
    "LANDMARK_REGIONS",
    "UNITS_PER_MM",
]

#: Landmarks of ``expression_offsets``: the 68 iBUG points (iris centres excluded).
N_OFFSET_LANDMARKS = 68
#: The 20 mouth landmarks (48-59 outer lips, 60-67 inner lips), iBUG 0-based order.
MOUTH_LANDMARKS = slice(48, 68)
#: Landmark groups of the per-region offsets figures (iBUG 0-based; corners = outer + inner lip corners).
LANDMARK_REGIONS: dict[str, tuple[int, ...]] = {
    "jaw_contour": tuple(range(0, 17)),
    "brows": tuple(range(17, 27)),
    "nose": tuple(range(27, 36)),
    "eyes": tuple(range(36, 48)),
    "outer_lips": tuple(range(48, 60)),
    "inner_lips": tuple(range(60, 68)),
    "mouth_corners": (48, 54, 60, 64),
}
#: Head-model world units per millimetre (docs/head_model.md: about 0.002 units per mm).
UNITS_PER_MM = 0.002

# Default model per device: building the procedural head costs ~2 s, its buffers ~10 MB.
_DEFAULT_MODELS: dict[str, HeadModel] = {}
# Offsets are computed in chunks so the (chunk, V, 3) vertex arrays stay ~60 MB.
_CHUNK = 256


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


def _default_model(device: torch.device) -> HeadModel:
    key = str(device)
    if key not in _DEFAULT_MODELS:
        from headforge.data.studio.runner import default_head_model

        _DEFAULT_MODELS[key] = default_head_model().to(device)
    return _DEFAULT_MODELS[key]


def expression_offsets(expression: Tensor, jaw: Tensor, model: HeadModel | None = None) -> Tensor:
    """Expression-induced displacement of the 68 landmarks on the mean identity (module docstring).

    Args:
        expression: (B, E) expression coefficients of ``model`` (E = 35 for the procedural head).
        jaw: (B, 3) jaw joint axis-angle, radians (``pose[:, POSE_SLICES["jaw"]]``).
        model: the head model; ``None`` uses the studio's procedural head
            (``default_head_model``), built once per device and cached.

    Returns:
        (B, 68, 3) float32 on ``expression``'s device, head-model world units
        (procedural head: ``UNITS_PER_MM`` = 0.002 units per mm): landmarks of
        (shape 0, expression ``expression``, pose zero except the jaw) minus
        those of (shape 0, expression 0, pose 0).
    """
    if expression.dim() != 2 or jaw.dim() != 2 or jaw.shape[1] != 3 or len(jaw) != len(expression):
        raise ValueError(
            f"expected expression (B, E) and jaw (B, 3), got {tuple(expression.shape)} and {tuple(jaw.shape)}"
        )
    device = expression.device
    if model is None:
        model = _default_model(device)
    if not model.has_landmarks:
        raise ValueError("expression_offsets needs a head model with a landmark embedding")
    model_device = model.device
    expression = expression.to(model_device, torch.float32)
    jaw = jaw.to(model_device, torch.float32)
    with torch.no_grad():
        neutral_landmarks = model(**model.zero_params(1)).landmarks[:, :N_OFFSET_LANDMARKS]
        chunks = []
        for start in range(0, len(expression), _CHUNK):
            coefficients = expression[start : start + _CHUNK]
            pose = model.zero_params(len(coefficients))["pose"]
            pose[:, POSE_SLICES["jaw"]] = jaw[start : start + _CHUNK]
            landmarks = model(expression=coefficients, pose=pose).landmarks[:, :N_OFFSET_LANDMARKS]
            chunks.append(landmarks - neutral_landmarks)
    if not chunks:
        return torch.zeros(0, N_OFFSET_LANDMARKS, 3, device=device)
    return torch.cat(chunks).to(device, torch.float32)
