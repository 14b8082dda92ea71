"""Pose, head-model and SH fits on the studio's own renders, without MediaPipe.

The landmarks fed to the fits are the ground-truth head-model landmarks projected with the
ground-truth camera (plus noise), so these tests check the fitting stages alone. The rigid
head motion of the studio (the neck joint) is indistinguishable from a camera motion in one
image; the fits fold it into the camera, so rotations are compared with the head-relative
ground-truth camera ``neck^-1 @ cam2world`` (both are also printed against the bare camera).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from headforge.cameras import matrices_from_label, project_points
from headforge.data.studio import run_synth
from headforge.heads import ProceduralHeadModel
from headforge.lighting import SH_BAND_IRRADIANCE, sh_basis, sphere_normals
from headforge.preprocess.landmarks_map import (
    IBUG_MIRROR,
    LANDMARK_FIT_WEIGHTS,
    MEDIAPIPE_TO_IBUG70,
    inter_ocular_distance,
)
from headforge.preprocess.lighting_fit import fit_lighting, fit_sh, irradiance_error, sh_relative_error
from headforge.preprocess.model_fit import LandmarkRig, fit_head_model
from headforge.preprocess.pose_fit import fit_camera, rotation_angle_degrees

N_RENDERS = 3


@pytest.fixture(scope="module")
def model() -> ProceduralHeadModel:
    return ProceduralHeadModel()


@pytest.fixture(scope="module")
def studio(tmp_path_factory, model):
    """Three studio renders with their ground truth and GT-projected landmarks."""
    out = tmp_path_factory.mktemp("studio")
    run_synth("images", N_RENDERS, 128, 11, out, progress=False)
    document = json.loads((out / "dataset.json").read_text())
    labels = torch.tensor([label for _, label in document["labels"]])
    params = [p for _, p in document["params"]]
    shape = torch.tensor([p["shape"] for p in params])
    expression = torch.tensor([p["expression"] for p in params])
    pose = torch.tensor([p["pose"] for p in params])
    posed = model(shape, expression, pose)
    cam2world, intrinsics = matrices_from_label(labels)
    landmarks_2d, _ = project_points(posed.landmarks, cam2world, intrinsics)
    neck = posed.joint_transforms[:, 1, :3, :3]
    head_relative = neck.transpose(1, 2) @ cam2world[:, :3, :3]
    names = [name for name, _ in document["labels"]]
    return {
        "out": out,
        "names": names,
        "shape": shape,
        "expression": expression,
        "pose": pose,
        "posed": posed,
        "cam2world": cam2world,
        "intrinsics": intrinsics,
        "head_relative": head_relative,
        "landmarks_2d": landmarks_2d,
        "sh": torch.tensor([v for _, v in document["sh"]]).reshape(-1, 9, 3),
    }


def _noisy(landmarks: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(landmarks.shape, generator=generator)
    return landmarks + noise * fraction * inter_ocular_distance(landmarks)[:, None, None]


def test_mapping_table_is_a_consistent_permutation():
    assert len(MEDIAPIPE_TO_IBUG70) == 70 and len(set(MEDIAPIPE_TO_IBUG70)) == 70
    assert all(0 <= i < 478 for i in MEDIAPIPE_TO_IBUG70)
    assert all(IBUG_MIRROR[IBUG_MIRROR[i]] == i for i in range(70))
    # Mirror partners of the head model's landmarks are mirror images (x -> -x) on the template.
    template = ProceduralHeadModel(n_shape=0, n_expression=0)().landmarks[0]
    mirrored = template[list(IBUG_MIRROR)] * torch.tensor([-1.0, 1.0, 1.0])
    assert (mirrored - template).norm(dim=-1).max() < 0.02


def test_pose_fit_recovers_a_random_camera_exactly():
    generator = torch.Generator().manual_seed(3)
    points = torch.randn(2, 40, 3, generator=generator) * 0.15
    rotation = torch.tensor([[0.3, -0.5, 0.1], [-0.2, 0.9, -0.05]])
    translation = torch.tensor([[0.05, -0.02, 2.6], [-0.1, 0.03, 2.4]])
    focal = torch.tensor([4.0, 4.6])
    from headforge.preprocess.pose_fit import project_with_world2cam

    observed = project_with_world2cam(points, rotation, translation, focal)
    fit = fit_camera(points, observed, focal_prior_std=10.0, iterations=200)
    from headforge.heads.lbs import rodrigues

    truth = rodrigues(rotation).transpose(1, 2)
    assert rotation_angle_degrees(fit.cam2world[:, :3, :3], truth).max() < 0.05
    assert torch.allclose(fit.focal, focal, rtol=1e-2)
    assert fit.rms.max() < 1e-5
    assert fit.label.shape == (2, 25)


def test_landmark_rig_matches_the_full_model(model):
    generator = torch.Generator().manual_seed(5)
    shape = model.sample_shape(2, generator)
    expression = model.sample_expression(2, generator)
    pose = model.sample_pose(2, generator, jaw_std=0.2)
    rig = LandmarkRig(model)
    fast = rig.landmarks(shape.double(), expression.double(), pose.double())
    assert torch.allclose(fast.float(), model(shape, expression, pose).landmarks, atol=1e-5)


def test_pose_fit_on_studio_landmarks(studio, model):
    truth = studio["landmarks_2d"]
    observed = _noisy(truth, 0.01)
    p = studio["pose"]
    unposed = torch.cat([p[:, :3], torch.zeros_like(p[:, 3:6]), p[:, 6:]], dim=1)
    points = model(studio["shape"], studio["expression"], unposed).landmarks
    fit = fit_camera(points, observed, LANDMARK_FIT_WEIGHTS)
    relative = rotation_angle_degrees(fit.cam2world[:, :3, :3], studio["head_relative"])
    bare = rotation_angle_degrees(fit.cam2world[:, :3, :3], studio["cam2world"][:, :3, :3])
    print(
        f"\npose fit (known shape, 1% IOD noise): head-relative rotation error {relative.tolist()} deg, "
        f"vs bare camera {bare.tolist()} deg, focal {fit.focal.tolist()}"
    )
    assert relative.max() < 1.0
    assert ((fit.focal - 4.2647).abs() < 0.3).all()


def test_model_fit_on_studio_landmarks(studio, model):
    truth = studio["landmarks_2d"]
    fit = fit_head_model(model, _noisy(truth, 0.01))
    error = (fit.landmarks_2d - truth).norm(dim=-1).mean(-1) / inter_ocular_distance(truth)
    relative = rotation_angle_degrees(fit.camera.cam2world[:, :3, :3], studio["head_relative"])
    print(
        f"\nmodel fit (1% IOD noise): landmark error {error.tolist()} IOD, rotation {relative.tolist()} deg, "
        f"jaw {fit.pose[:, 6].tolist()} vs {studio['pose'][:, 6].tolist()}"
    )
    assert error.max() < 0.02
    assert relative.max() < 3.0
    assert fit.shape.shape == studio["shape"].shape and fit.pose[:, :6].abs().max() == 0


def test_model_fit_recovers_jaw_and_gaze(model):
    """A wide-open jaw and a sideways gaze must come back from the landmarks (irises included)."""
    pose = torch.zeros(1, 15)
    pose[0, 6] = 0.25
    pose[0, [10, 13]] = 0.3  # both eyes turned by 0.3 rad about y
    posed = model(pose=pose)
    cam2world, intrinsics = matrices_from_label(
        torch.tensor(
            [[1.0, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]]
        )
    )
    observed, _ = project_points(posed.landmarks, cam2world, intrinsics)
    fit = fit_head_model(model, observed)
    # The expression basis has its own jaw-opening component (0.3 rad per unit): the fit may
    # split the opening between the two, so compare their sum.
    jaw_open = model.expression_names.index("jaw_open")
    opening = float(fit.pose[0, 6]) + 0.3 * float(fit.expression[0, jaw_open])
    assert abs(opening - 0.25) < 0.05, opening
    assert float(fit.pose[0, 10]) > 0.2 and float(fit.pose[0, 13]) > 0.2


def test_video_fit_shares_one_shape(model):
    generator = torch.Generator().manual_seed(9)
    frames = 3
    shape = model.sample_shape(1, generator).expand(frames, -1)
    expression = model.sample_expression(frames, generator)
    posed = model(shape, expression, torch.zeros(frames, 15))
    yaw = torch.tensor([0.0, 0.05, 0.1])
    from headforge.cameras import intrinsics_matrix, orbit_cam2world

    cam2world = orbit_cam2world(yaw, torch.zeros(frames))
    observed, _ = project_points(posed.landmarks, cam2world, intrinsics_matrix(4.2647, batch=frames))
    fit = fit_head_model(model, observed, shared_shape=True)
    assert torch.equal(fit.shape[0], fit.shape[1]) and torch.equal(fit.shape[0], fit.shape[2])
    assert fit.error_iod.max() < 0.02


def test_sh_fit_is_exact_on_lambertian_normals():
    normals, mask = sphere_normals(48, dtype=torch.float64)
    front = normals[mask]
    normals = torch.cat([front, front * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)])
    truth = torch.randn(9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3
    truth[0] += 2.0
    weights = torch.tensor([SH_BAND_IRRADIANCE[b] for b in (0, 1, 1, 1, 2, 2, 2, 2, 2)], dtype=torch.float64)
    weights = weights / math.pi
    albedo = torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64)
    colors = albedo * ((sh_basis(normals) * weights) @ truth)
    estimate, inliers = fit_sh(colors, normals, albedo, ridge=0.0, outlier_sigmas=0.0)
    assert inliers.all()
    assert torch.allclose(estimate, truth, atol=1e-8)
    assert sh_relative_error(estimate, truth) < 1e-8
    assert (
        sh_relative_error(estimate * torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64), truth, True) < 1e-8
    )
    assert irradiance_error(estimate, truth, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)) < 1e-8
    # A corrupted tenth (shadow-like darkening) is rejected by the robust refit.
    corrupted = colors.clone()
    corrupted[::10] *= 0.3
    robust, inliers = fit_sh(corrupted, normals, albedo, ridge=0.0)
    assert not inliers[::10].any()
    assert torch.allclose(robust, truth, atol=1e-6)


def test_sh_fit_on_studio_renders(studio, model):
    """Fitted on the GT mesh and albedo, restricted to the pixels that show skin (not beard/hair)."""
    errors = []
    for i, name in enumerate(studio["names"]):
        out = studio["out"]
        image = torch.tensor(np.array(Image.open(out / name)) / 255.0).float()
        albedo = torch.tensor(np.array(Image.open(out / "maps" / "albedo" / name)) / 255.0).float() ** 2.2
        segmentation = torch.tensor(np.array(Image.open(out / "maps" / "segmentation" / name)))
        skin = (segmentation == 1) | (segmentation == 11)
        c2w, k = studio["cam2world"][i], studio["intrinsics"][i]
        fit = fit_lighting(image, model, studio["posed"].vertices[i], c2w, k, albedo=albedo, pixel_mask=skin)
        errors.append(float(irradiance_error(fit.sh, studio["sh"][i], -c2w[:3, 2])))
        assert fit.inlier_mask.sum() > 500
    print(f"\nSH fit (GT mesh, GT albedo, skin pixels): visible-irradiance relative error {errors}")
    # Cast shadows and the studio's attached-shadow fade are not in the SH model: some error
    # remains even with perfect geometry and albedo.
    assert sorted(errors)[len(errors) // 2] < 0.15 and max(errors) < 0.45
