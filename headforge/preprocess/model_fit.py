"""Head-model fit: shape, expression, jaw, eyes and camera from 2D landmarks.

Minimises, by L-BFGS in float64,

    sum_t sum_i w_i |proj_t(landmark_i(shape, expr_t, jaw_t, eyes_t)) - observed_ti|^2 / (sigma iod_t)^2
    + |shape|^2 + |expr_t / expr_std|^2 + |jaw_t / jaw_std|^2 + |eyes_t / eye_std|^2
    + temporal terms (videos): |x_t - x_{t-1}|^2 / smooth_std^2 for expression, jaw, eyes, camera

where ``proj_t`` is the frame's pinhole camera (world->camera axis-angle, translation,
focal; started from :func:`headforge.preprocess.pose_fit.fit_camera` on the mean head),
``iod_t`` the observed inter-ocular distance, and the priors are Gaussian in the head
model's own units (shape coefficients are population standard deviations). The head's
global and neck joints stay at zero: the camera carries the whole rigid head motion, as
in EG3D labels of real photos. For a clip, ``shape`` is shared by all frames.

Only the landmarks' vertices are skinned during the optimisation (:class:`LandmarkRig`),
which makes an iteration ~100x cheaper than posing the full mesh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.cameras import FFHQ_FOCAL
from headforge.heads.base import POSE_DIM, POSE_SLICES, HeadModel, landmarks_from_barycentric
from headforge.heads.lbs import lbs
from headforge.preprocess.landmarks_map import LANDMARK_FIT_WEIGHTS, inter_ocular_distance
from headforge.preprocess.pose_fit import (
    CameraFit,
    _camera_outputs,
    fit_camera,
    minimize_lbfgs,
    project_with_world2cam,
)

__all__ = ["LandmarkRig", "FitPriors", "ModelFit", "fit_head_model", "assemble_pose"]


class LandmarkRig:
    """The landmarks of a ``HeadModel`` without posing its whole mesh.

    Keeps only the vertices that the landmark embedding reads (and the joint regressor
    folded into per-coefficient joint offsets), skins them with the model's own LBS,
    scatters them into an otherwise-zero (B, V, 3) array and calls the model's
    ``landmarks_from_vertices`` so that model-specific rules (FLAME's iris centres) apply.

    Args:
        model: a head model with a landmark embedding.
        dtype: working precision.
    """

    def __init__(self, model: HeadModel, dtype: torch.dtype = torch.float64) -> None:
        if not model.has_landmarks:
            raise ValueError("the head model has no landmark embedding")
        self.model = model
        ids = torch.unique(model.landmark_vertex_ids.reshape(-1))
        self.vertex_ids = ids
        cast = {"dtype": dtype}
        self.v_template = model.v_template[ids].to(**cast)
        # (V' * 3, S) and (V' * 3, E): plain matrix products are much faster than einsum here.
        self.shapedirs = model.shapedirs[ids].to(**cast).reshape(-1, model.n_shape)
        self.exprdirs = model.exprdirs[ids].to(**cast).reshape(-1, model.n_expression)
        self.weights = model.lbs_weights[ids].to(**cast)
        regressor = model.J_regressor.to(**cast)
        self.joint_template = regressor @ model.v_template.to(**cast)
        joints = regressor.shape[0]
        self.joint_shapedirs = torch.einsum("jv,vcs->jcs", regressor, model.shapedirs.to(**cast)).reshape(
            joints * 3, -1
        )
        self.joint_exprdirs = torch.einsum("jv,vce->jce", regressor, model.exprdirs.to(**cast)).reshape(
            joints * 3, -1
        )
        # The base class's embedding is purely barycentric: read it on the kept vertices directly.
        self.barycentric_only = type(model).landmarks_from_vertices is HeadModel.landmarks_from_vertices
        remap = torch.full((model.n_vertices,), -1, dtype=torch.long, device=ids.device)
        remap[ids] = torch.arange(ids.numel(), device=ids.device)
        self.local_ids = remap[model.landmark_vertex_ids]
        self.local_weights = model.landmark_weights.to(**cast)
        posedirs = getattr(model, "posedirs", None)
        if posedirs is not None:
            v = model.n_vertices
            posedirs = (
                posedirs.reshape(posedirs.shape[0], v, 3)[:, ids].reshape(posedirs.shape[0], -1).to(**cast)
            )
        self.posedirs = posedirs
        self.dtype = dtype

    def landmarks(self, shape: Tensor, expression: Tensor, pose: Tensor) -> Tensor:
        """(B, 70, 3) world landmarks for (B, S) shape, (B, E) expression, (B, 15) pose."""
        batch = shape.shape[0]
        offsets = shape @ self.shapedirs.T + expression @ self.exprdirs.T
        v_shaped = self.v_template[None] + offsets.reshape(batch, -1, 3)
        joint_offsets = shape @ self.joint_shapedirs.T + expression @ self.joint_exprdirs.T
        joints = self.joint_template[None] + joint_offsets.reshape(batch, -1, 3)
        vertices, posed_joints, transforms = lbs(
            v_shaped, joints, pose, self.weights, self.model.parents, self.posedirs
        )
        if self.barycentric_only:
            return landmarks_from_barycentric(vertices, self.local_ids, self.local_weights)
        full = vertices.new_zeros(vertices.shape[0], self.model.n_vertices, 3)
        full = full.index_copy(1, self.vertex_ids.to(vertices.device), vertices)
        lm = self.model.landmarks_from_vertices(full, posed_joints, transforms)
        assert lm is not None
        return lm.to(self.dtype)


@dataclass
class FitPriors:
    """Standard deviations of the Gaussian priors and the landmark noise.

    ``landmark_sigma`` is the assumed landmark noise as a fraction of the inter-ocular
    distance; the others are in the head model's units (radians for joints).
    """

    landmark_sigma: float = 0.03
    shape_std: float = 1.0
    expression_std: float = 0.5
    jaw_std: float = 0.15
    eye_std: float = 0.5
    smooth_expression_std: float = 0.1
    smooth_pose_std: float = 0.05
    smooth_camera_std: float = 0.05
    focal_log_std: float = 0.03


@dataclass
class ModelFit:
    """Result of :func:`fit_head_model` (float32).

    Attributes:
        shape: (B, S) (rows identical for a clip). expression: (B, E). pose: (B, 15)
        with zero global and neck joints. camera: the refined ``CameraFit``.
        landmarks_2d: (B, 70, 2) fitted landmarks, normalised image coordinates.
        error_iod: (B,) mean landmark distance to the observations / inter-ocular distance.
    """

    shape: Tensor
    expression: Tensor
    pose: Tensor
    camera: CameraFit
    landmarks_2d: Tensor
    error_iod: Tensor


def assemble_pose(jaw: Tensor, eyes: Tensor) -> Tensor:
    """(B, 15) pose from (B, 3) jaw and (B, 6) left + right eye axis-angles."""
    pose = jaw.new_zeros(jaw.shape[0], POSE_DIM)
    pose = pose.index_copy(1, torch.arange(6, 9, device=jaw.device), jaw)
    return pose.index_copy(1, torch.arange(9, 15, device=jaw.device), eyes)


def fit_head_model(
    model: HeadModel,
    observed: Tensor,
    shared_shape: bool = False,
    priors: FitPriors | None = None,
    weights: Tensor | None = None,
    iterations: int = 100,
) -> ModelFit:
    """Fit the head model and camera to 2D landmarks.

    Args:
        model: head model with a landmark embedding.
        observed: (B, 70, 2) landmarks in normalised crop coordinates.
        shared_shape: one identity for all B (a video clip, frames in order) and temporal
            smoothing between consecutive rows.
        priors: prior and noise scales (defaults: ``FitPriors()``).
        weights: (70,) landmark weights (default ``LANDMARK_FIT_WEIGHTS``).
        iterations: L-BFGS iterations.

    Returns:
        ``ModelFit``.
    """
    priors = priors or FitPriors()
    device = observed.device
    f64 = torch.float64
    rig = LandmarkRig(model)
    obs = observed.to(f64)
    batch = obs.shape[0]
    w = (LANDMARK_FIT_WEIGHTS if weights is None else weights).to(device, f64)
    iod = inter_ocular_distance(obs).clamp(min=1e-6)
    zero = model.zero_params(1)
    mean_landmarks = rig.landmarks(zero["shape"].to(f64), zero["expression"].to(f64), zero["pose"].to(f64))
    start = fit_camera(mean_landmarks.expand(batch, -1, -1).float(), observed.float(), w.float())

    n_shape_rows = 1 if shared_shape else batch
    shape = torch.zeros(n_shape_rows, model.n_shape, dtype=f64, device=device, requires_grad=True)
    expression = torch.zeros(batch, model.n_expression, dtype=f64, device=device, requires_grad=True)
    jaw = torch.zeros(batch, 3, dtype=f64, device=device, requires_grad=True)
    eyes = torch.zeros(batch, 6, dtype=f64, device=device, requires_grad=True)
    rotation = start.rotation.to(f64).clone().requires_grad_(True)
    translation = start.translation.to(f64).clone().requires_grad_(True)
    log_focal = start.focal.to(f64).log().clone().requires_grad_(True)
    variables = [shape, expression, jaw, eyes, rotation, translation, log_focal]
    p = priors

    def objective() -> Tensor:
        shapes = shape.expand(batch, -1)
        points = rig.landmarks(shapes, expression, assemble_pose(jaw, eyes))
        projected = project_with_world2cam(points, rotation, translation, log_focal.exp())
        residual = ((projected - obs) ** 2).sum(-1) / (p.landmark_sigma * iod[:, None]) ** 2
        loss = (residual * w).sum()
        loss = loss + (shape / p.shape_std).pow(2).sum() + (expression / p.expression_std).pow(2).sum()
        loss = loss + (jaw / p.jaw_std).pow(2).sum() + (eyes / p.eye_std).pow(2).sum()
        loss = loss + ((log_focal - math.log(FFHQ_FOCAL)) / p.focal_log_std).pow(2).sum()
        if shared_shape and batch > 1:
            for values, std in (
                (expression, p.smooth_expression_std),
                (torch.cat([jaw, eyes], 1), p.smooth_pose_std),
                (torch.cat([rotation, translation], 1), p.smooth_camera_std),
            ):
                loss = loss + ((values[1:] - values[:-1]) / std).pow(2).sum()
        return loss

    minimize_lbfgs(variables, objective, iterations)
    with torch.no_grad():
        pose = assemble_pose(jaw, eyes)
        shapes = shape.expand(batch, -1)
        focal = log_focal.exp()
        projected = project_with_world2cam(
            rig.landmarks(shapes, expression, pose), rotation, translation, focal
        )
        error = (projected - obs).norm(dim=-1).mean(-1) / iod
        rms = ((projected - obs) ** 2).sum(-1).mean(-1).sqrt()
        cam2world, intrinsics, label = _camera_outputs(rotation, translation, focal)
    f32 = torch.float32
    camera = CameraFit(
        rotation.detach().to(f32),
        translation.detach().to(f32),
        focal.to(f32),
        cam2world.to(f32),
        intrinsics.to(f32),
        label.to(f32),
        rms.to(f32),
    )
    assert POSE_SLICES["jaw"] == slice(6, 9)
    return ModelFit(
        shapes.detach().to(f32).clone(),
        expression.detach().to(f32),
        pose.to(f32),
        camera,
        projected.to(f32),
        error.to(f32),
    )
