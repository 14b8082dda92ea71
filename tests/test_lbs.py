"""Tests for headforge.heads.lbs: Rodrigues, kinematic-tree transforms, linear blend skinning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from headforge.heads.lbs import batch_rigid_transform, lbs, pose_feature, rodrigues


def _homogeneous(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = translation
    return out


def test_rodrigues_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(64, 3)) * rng.uniform(0.0, 3.0, size=(64, 1))
    vecs[0] = 0.0
    vecs[1] = [1e-5, -2e-5, 3e-6]  # inside the Taylor branch
    got = rodrigues(torch.tensor(vecs)).numpy()
    want = Rotation.from_rotvec(vecs).as_matrix()
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_rodrigues_gradcheck_including_zero() -> None:
    vecs = torch.tensor([[0.3, -0.2, 0.9], [1e-4, 2e-4, -1e-4], [0.0, 0.0, 0.0]], dtype=torch.float64)
    vecs.requires_grad_(True)
    assert torch.autograd.gradcheck(rodrigues, (vecs,), eps=1e-7, atol=1e-6)


def test_batch_rigid_transform_matches_hand_composition() -> None:
    rng = np.random.default_rng(1)
    parents = torch.tensor([-1, 0, 1, 1])
    joints = rng.normal(size=(1, 4, 3))
    rotvecs = rng.normal(size=(4, 3)) * 0.5
    rots = Rotation.from_rotvec(rotvecs).as_matrix()
    posed, skin = batch_rigid_transform(torch.tensor(rots)[None], torch.tensor(joints), parents)
    # Hand computation: world_j = world_parent @ [R_j, J_j - J_parent].
    world = []
    for j, p in enumerate([-1, 0, 1, 1]):
        rel = joints[0, j] - (joints[0, p] if p >= 0 else 0.0)
        local = _homogeneous(rots[j], rel)
        world.append(local if p < 0 else world[p] @ local)
    for j in range(4):
        np.testing.assert_allclose(posed[0, j].numpy(), world[j][:3, 3], atol=1e-12)
        # The skinning transform carries the rest joint to its posed position.
        rest = np.append(joints[0, j], 1.0)
        np.testing.assert_allclose((skin[0, j].numpy() @ rest)[:3], world[j][:3, 3], atol=1e-12)


def _random_rig(n_vertices: int = 40, seed: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(1, n_vertices, 3, generator=gen, dtype=torch.float64)
    joints = torch.randn(1, 3, 3, generator=gen, dtype=torch.float64)
    weights = torch.rand(n_vertices, 3, generator=gen, dtype=torch.float64)
    weights = weights / weights.sum(1, keepdim=True)
    parents = torch.tensor([-1, 0, 1])
    return v, joints, weights, parents


def test_identity_pose_leaves_vertices_unchanged() -> None:
    v, joints, weights, parents = _random_rig()
    posed, posed_joints, _ = lbs(v, joints, torch.zeros(1, 9, dtype=torch.float64), weights, parents)
    torch.testing.assert_close(posed, v, atol=1e-12, rtol=0)
    torch.testing.assert_close(posed_joints, joints, atol=1e-12, rtol=0)


def test_global_rotation_is_rigid_about_root() -> None:
    v, joints, weights, parents = _random_rig()
    pose = torch.zeros(1, 9, dtype=torch.float64)
    pose[0, :3] = torch.tensor([0.4, -0.7, 0.2], dtype=torch.float64)
    posed, _, _ = lbs(v, joints, pose, weights, parents)
    rot = torch.tensor(Rotation.from_rotvec([0.4, -0.7, 0.2]).as_matrix())
    expected = (v - joints[:, :1]) @ rot.T + joints[:, :1]
    torch.testing.assert_close(posed, expected, atol=1e-12, rtol=0)


def test_lbs_blends_two_joint_transforms_by_weight() -> None:
    # One vertex half on the root, half on a child rotated 90 degrees about z.
    v = torch.tensor([[[2.0, 0.0, 0.0]]], dtype=torch.float64)
    joints = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    weights = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    pose = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, np.pi / 2]], dtype=torch.float64)
    posed, _, _ = lbs(v, joints, pose, weights, torch.tensor([-1, 0]))
    # Root keeps (2, 0, 0); the child maps it to (1, 1, 0); LBS averages the two.
    torch.testing.assert_close(
        posed[0, 0], torch.tensor([1.5, 0.5, 0.0], dtype=torch.float64), atol=1e-12, rtol=0
    )


def test_pose_correctives_use_flattened_rotation_minus_identity() -> None:
    v, joints, weights, parents = _random_rig(n_vertices=5)
    gen = torch.Generator().manual_seed(3)
    posedirs = torch.randn(18, 15, generator=gen, dtype=torch.float64)
    pose = torch.zeros(1, 9, dtype=torch.float64)
    pose[0, 3:6] = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)  # only the second joint turns
    with_corr, _, _ = lbs(v, joints, pose, weights, parents, posedirs)
    without, _, _ = lbs(v, joints, pose, weights, parents)
    feature = pose_feature(rodrigues(pose.reshape(1, 3, 3)))
    r1 = torch.tensor(Rotation.from_rotvec([0.3, 0.1, -0.2]).as_matrix())
    torch.testing.assert_close(
        feature[0, :9], (r1 - torch.eye(3, dtype=torch.float64)).reshape(-1), atol=1e-12, rtol=0
    )
    assert torch.all(feature[0, 9:] == 0)
    # Correctives are added before skinning; check by re-skinning the corrected rest shape.
    corrected = v + (feature @ posedirs).reshape(1, 5, 3)
    expected, _, _ = lbs(corrected, joints, pose, weights, parents)
    torch.testing.assert_close(with_corr, expected, atol=1e-12, rtol=0)
    assert (with_corr - without).abs().max() > 1e-3


@pytest.mark.parametrize("batch", [1, 3])
def test_lbs_batches_independently(batch: int) -> None:
    v, joints, weights, parents = _random_rig()
    gen = torch.Generator().manual_seed(4)
    pose = torch.randn(batch, 9, generator=gen, dtype=torch.float64) * 0.3
    vb, jb = v.expand(batch, -1, -1), joints.expand(batch, -1, -1)
    posed, _, _ = lbs(vb, jb, pose, weights, parents)
    for b in range(batch):
        single, _, _ = lbs(v, joints, pose[b : b + 1], weights, parents)
        torch.testing.assert_close(posed[b : b + 1], single, atol=1e-12, rtol=0)
