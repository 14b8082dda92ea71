"""Tests for headforge.cameras: conventions, labels, EG3D compatibility, rays and projection."""

import math

import pytest
import torch
import torch.nn.functional as F

from headforge.cameras import (
    FFHQ_FOCAL,
    FFHQ_PIVOT,
    FFHQ_RADIUS,
    Camera,
    eg3d_angles_to_yaw_pitch,
    focal_to_fov,
    fov_to_focal,
    intrinsics_matrix,
    label_from_matrices,
    look_at,
    matrices_from_label,
    mirror_label,
    orbit_cam2world,
    pixel_rays,
    project_points,
    sample_ffhq_poses,
    validate_label,
    yaw_pitch_to_eg3d_angles,
)

DOUBLE = torch.float64


def random_cameras(batch: int, seed: int = 0) -> Camera:
    generator = torch.Generator().manual_seed(seed)
    yaw = (torch.rand(batch, generator=generator, dtype=DOUBLE) - 0.5) * 2.0
    pitch = (torch.rand(batch, generator=generator, dtype=DOUBLE) - 0.5) * 1.0
    return Camera.orbit(yaw, pitch)


def eg3d_reference_cam2world(horizontal: float, vertical: float, lookat, radius: float) -> torch.Tensor:
    """EG3D's LookAtPoseSampler + create_cam2world_matrix, re-derived from its formulas (4, 4)."""
    v = min(max(vertical, 1e-5), math.pi - 1e-5)
    phi = math.acos(1.0 - 2.0 * v / math.pi)  # polar angle from +y
    origin = torch.tensor(
        [
            radius * math.sin(phi) * math.cos(math.pi - horizontal),
            radius * math.cos(phi),
            radius * math.sin(phi) * math.sin(math.pi - horizontal),
        ],
        dtype=DOUBLE,
    )
    forward = F.normalize(torch.tensor(lookat, dtype=DOUBLE) - origin, dim=0)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=DOUBLE)
    right = -F.normalize(torch.linalg.cross(up, forward), dim=0)
    up = F.normalize(torch.linalg.cross(forward, right), dim=0)
    cam2world = torch.eye(4, dtype=DOUBLE)
    cam2world[:3, :3] = torch.stack((right, up, forward), dim=-1)
    cam2world[:3, 3] = origin
    return cam2world


# --- field of view ------------------------------------------------------------------


def test_fov_90_degrees_is_focal_one_half_exactly():
    assert fov_to_focal(90.0) == 0.5
    assert focal_to_fov(0.5) == 90.0
    assert fov_to_focal(torch.tensor(90.0, dtype=DOUBLE)).item() == 0.5


@pytest.mark.parametrize("diagonal", [False, True])
def test_fov_focal_round_trip(diagonal):
    for fov in (5.0, 13.37, 18.837, 45.0, 120.0):
        assert focal_to_fov(fov_to_focal(fov, diagonal), diagonal) == pytest.approx(fov, rel=1e-12)
    fovs = torch.tensor([10.0, 30.0, 60.0], dtype=DOUBLE)
    torch.testing.assert_close(focal_to_fov(fov_to_focal(fovs, diagonal), diagonal), fovs)


def test_eg3d_diagonal_fov_matches_ffhq_focal():
    # EG3D's gen_samples uses "fov 18.837 deg" for the FFHQ focal 4.2647 (a diagonal FOV).
    assert focal_to_fov(FFHQ_FOCAL, diagonal=True) == pytest.approx(18.837, abs=0.01)


def test_horizontal_fov_edge_projects_to_image_edge():
    fov = 40.0
    camera = Camera(torch.eye(4, dtype=DOUBLE), intrinsics_matrix(fov_to_focal(fov)).to(DOUBLE))
    half = math.radians(fov / 2)
    point = torch.tensor([[[math.sin(half), 0.0, math.cos(half)]]], dtype=DOUBLE)
    uv, _ = camera.project(point)
    torch.testing.assert_close(uv[0, 0], torch.tensor([1.0, 0.5], dtype=DOUBLE))


# --- poses --------------------------------------------------------------------------


def test_frontal_ffhq_label_is_eg3d_label():
    expected = [
        1,
        0,
        0,
        0,
        0,
        -1,
        0,
        0,
        0,
        0,
        -1,
        2.7,
        0,
        0,
        0,
        1,
        FFHQ_FOCAL,
        0,
        0.5,
        0,
        FFHQ_FOCAL,
        0.5,
        0,
        0,
        1,
    ]
    label = Camera.frontal(batch=2).to_label()
    assert label.shape == (2, 25)
    torch.testing.assert_close(label, torch.tensor([expected, expected], dtype=label.dtype))


def test_world_plus_x_on_image_right_and_plus_y_up():
    uv, depth = Camera.frontal().project(torch.tensor([[[0.1, 0.0, 0.2], [0.0, 0.1, 0.2]]]))
    assert uv[0, 0, 0] > 0.5 and uv[0, 0, 1] == pytest.approx(0.5)
    assert uv[0, 1, 1] < 0.5 and uv[0, 1, 0] == pytest.approx(0.5)
    torch.testing.assert_close(depth, torch.full((1, 2), 2.5))


def test_look_at_puts_target_on_optical_axis():
    generator = torch.Generator().manual_seed(1)
    eye = torch.randn(6, 3, generator=generator, dtype=DOUBLE) * 3
    target = torch.randn(6, 3, generator=generator, dtype=DOUBLE)
    cam2world = look_at(eye, target)
    rotation = cam2world[:, :3, :3]
    torch.testing.assert_close(
        rotation.transpose(1, 2) @ rotation, torch.eye(3, dtype=DOUBLE).expand(6, 3, 3)
    )
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(6, dtype=DOUBLE))
    intrinsics = intrinsics_matrix(3.0, batch=6).to(DOUBLE)
    uv, depth = project_points(target[:, None], cam2world, intrinsics)
    torch.testing.assert_close(uv[:, 0], torch.full((6, 2), 0.5, dtype=DOUBLE))
    torch.testing.assert_close(depth[:, 0], (target - eye).norm(dim=-1))
    # World up stays up in the image: a point above the target projects above the centre.
    uv_above, _ = project_points(
        (target + torch.tensor([0.0, 0.1, 0.0], dtype=DOUBLE))[:, None], cam2world, intrinsics
    )
    assert (uv_above[:, 0, 1] < 0.5).all()


def test_look_at_straight_down_is_finite_and_on_axis():
    cam2world = look_at(torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([0.0, 0.0, 0.0]))
    assert torch.isfinite(cam2world).all()
    rotation = cam2world[0, :3, :3]
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(3))
    torch.testing.assert_close(rotation[:, 2], torch.tensor([0.0, -1.0, 0.0]))


@pytest.mark.parametrize(
    "horizontal,vertical", [(math.pi / 2, math.pi / 2), (2.0, 1.2), (0.9, 1.9), (1.57, 0.3)]
)
def test_orbit_matches_eg3d_look_at_pose_sampler(horizontal, vertical):
    yaw, pitch = eg3d_angles_to_yaw_pitch(
        torch.tensor(horizontal, dtype=DOUBLE), torch.tensor(vertical, dtype=DOUBLE)
    )
    ours = orbit_cam2world(yaw, pitch, FFHQ_RADIUS, FFHQ_PIVOT)
    reference = eg3d_reference_cam2world(horizontal, vertical, FFHQ_PIVOT, FFHQ_RADIUS)
    torch.testing.assert_close(ours[0], reference)
    back = yaw_pitch_to_eg3d_angles(yaw, pitch)
    torch.testing.assert_close(torch.stack(back), torch.tensor([horizontal, vertical], dtype=DOUBLE))


def test_orbit_directions():
    center = Camera.orbit(0.0, 0.0).position[0]
    torch.testing.assert_close(center, torch.tensor([0.0, 0.0, FFHQ_RADIUS]))
    right = Camera.orbit(0.3, 0.0).position[0]
    above = Camera.orbit(0.0, 0.3).position[0]
    assert right[0] > 0.5 and abs(right[1]) < 1e-6
    assert above[1] > 0.5 and abs(above[0]) < 1e-6
    for position in (right, above):
        assert position.norm().item() == pytest.approx(FFHQ_RADIUS)
    pivot_orbit = orbit_cam2world(torch.zeros(1), torch.zeros(1), orbit_center=FFHQ_PIVOT)
    torch.testing.assert_close(pivot_orbit[0, :3, 3], torch.tensor([0.0, 0.0, 2.9]))


def test_sample_ffhq_poses_statistics_and_determinism():
    yaw, pitch = sample_ffhq_poses(20000, generator=torch.Generator().manual_seed(0))
    assert yaw.shape == pitch.shape == (20000,)
    assert yaw.std().item() == pytest.approx(0.3, rel=0.05)
    assert pitch.std().item() == pytest.approx(0.155, rel=0.05)
    assert yaw.abs().max() <= 1.2 and pitch.abs().max() <= 0.6
    again, _ = sample_ffhq_poses(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(yaw, again)
    narrow, _ = sample_ffhq_poses(1000, yaw_range=(-0.1, 0.1), generator=torch.Generator().manual_seed(1))
    assert narrow.abs().max() <= 0.1


# --- labels ---------------------------------------------------------------------------


def test_label_round_trip():
    camera = random_cameras(5)
    label = camera.to_label()
    assert label.shape == (5, 25)
    again = Camera.from_label(label)
    assert torch.equal(again.cam2world, camera.cam2world) and torch.equal(again.intrinsics, camera.intrinsics)
    single = Camera.from_label(label[2])
    assert single.batch_size == 1 and torch.equal(single.to_label()[0], label[2])
    cam2world, intrinsics = matrices_from_label(label)
    assert torch.equal(label_from_matrices(cam2world, intrinsics), label)


def test_mirror_label_is_an_involution_and_mirrors_yaw():
    label = random_cameras(4).to_label()
    label[:, 18] = 0.43  # off-centre principal point so the cx -> 1 - cx map is exercised
    torch.testing.assert_close(mirror_label(mirror_label(label)), label, rtol=0.0, atol=1e-15)
    yaw = torch.tensor([0.4, -0.2], dtype=DOUBLE)
    pitch = torch.tensor([0.1, -0.3], dtype=DOUBLE)
    torch.testing.assert_close(
        mirror_label(Camera.orbit(yaw, pitch).to_label()), Camera.orbit(-yaw, pitch).to_label()
    )


def test_mirrored_camera_sees_mirrored_point_at_flipped_uv():
    camera = random_cameras(3)
    camera.intrinsics[:, 0, 2] = 0.45
    camera.intrinsics[:, 0, 1] = 0.2  # skew flips sign under mirroring
    points = torch.randn(3, 7, 3, dtype=DOUBLE) * 0.3
    uv, depth = camera.project(points)
    uv_m, depth_m = camera.mirrored().project(points * torch.tensor([-1.0, 1.0, 1.0], dtype=DOUBLE))
    torch.testing.assert_close(uv_m[..., 0], 1.0 - uv[..., 0])
    torch.testing.assert_close(uv_m[..., 1], uv[..., 1])
    torch.testing.assert_close(depth_m, depth)


def test_validate_label():
    good = Camera.frontal().to_label()[0]
    assert validate_label(good) is None
    assert validate_label(good.tolist()) is None
    assert "25" in validate_label(good[:24])
    with_nan = good.clone()
    with_nan[3] = float("nan")
    assert "NaN" in validate_label(with_nan)
    scaled = good.clone()
    scaled[:3] *= 2.0
    assert "orthonormal" in validate_label(scaled)
    reflected = good.clone()
    reflected[[0, 4, 8]] *= -1.0  # negate the camera x axis: orthonormal but det -1
    assert "reflection" in validate_label(reflected)
    zero_focal = good.clone()
    zero_focal[16] = 0.0
    assert "focal" in validate_label(zero_focal)
    assert validate_label("not a label") is not None


# --- rays and projection ---------------------------------------------------------------


def test_rays_pass_through_pixel_centres():
    camera = random_cameras(2, seed=3)
    camera.intrinsics[:, 0, 2] = 0.47
    camera.intrinsics[:, 1, 2] = 0.55
    camera.intrinsics[:, 1, 1] = 3.5
    camera.intrinsics[:, 0, 1] = 0.1
    height, width = 5, 7
    origins, directions = camera.rays((height, width))
    assert origins.shape == directions.shape == (2, height * width, 3)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(2, height * width, dtype=DOUBLE))
    torch.testing.assert_close(origins, camera.position[:, None].expand(2, height * width, 3))
    distance = torch.linspace(1.0, 3.0, height * width, dtype=DOUBLE)
    points = origins + distance[None, :, None] * directions
    uv, depth = camera.project(points)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    expected_uv = torch.stack(((cols + 0.5) / width, (rows + 0.5) / height), dim=-1).reshape(-1, 2)
    torch.testing.assert_close(uv, expected_uv.to(DOUBLE).expand(2, -1, -1))
    forward = camera.cam2world[:, None, :3, 2]
    torch.testing.assert_close(depth, distance * (directions * forward).sum(-1))


def test_point_projects_to_pixel_whose_ray_hits_it():
    camera = random_cameras(1, seed=5)
    resolution = 16
    point = torch.tensor([[0.12, -0.07, 0.1]], dtype=DOUBLE)
    uv, depth = camera.project(point[None])
    col, row = (uv[0, 0] * resolution).floor().long().tolist()
    origins, directions = camera.rays(resolution)
    origin, direction = origins[0, row * resolution + col], directions[0, row * resolution + col]
    offset = point[0] - origin
    miss = (offset - (offset @ direction) * direction).norm().item()
    # The pixel's ray passes within half a pixel diagonal (measured at the point's depth) ...
    half_pixel = depth.item() * math.sqrt(2.0) * 0.5 / (resolution * FFHQ_FOCAL)
    assert miss < half_pixel
    # ... and exactly through the point once it is moved onto the pixel centre's ray.
    on_ray = origin + depth.item() / (direction @ camera.cam2world[0, :3, 2]) * direction
    uv_on_ray, _ = camera.project(on_ray[None, None])
    expected = torch.tensor([(col + 0.5) / resolution, (row + 0.5) / resolution], dtype=DOUBLE)
    torch.testing.assert_close(uv_on_ray[0, 0], expected)


def test_square_resolution_matches_pixel_rays_and_world2cam_inverts():
    camera = random_cameras(3, seed=7)
    origins, directions = camera.rays(4)
    o2, d2 = pixel_rays(camera.cam2world, camera.intrinsics, 4, 4)
    assert torch.equal(origins, o2) and torch.equal(directions, d2)
    torch.testing.assert_close(
        camera.world2cam @ camera.cam2world, torch.eye(4, dtype=DOUBLE).expand(3, 4, 4)
    )


def test_project_points_gradient():
    camera = random_cameras(1, seed=2)
    points = torch.randn(1, 4, 3, dtype=DOUBLE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: camera.project(p)[0], (points,))


def test_camera_batch_broadcast_and_to():
    intrinsics = intrinsics_matrix(FFHQ_FOCAL)
    camera = Camera(orbit_cam2world(torch.zeros(3), torch.zeros(3)), intrinsics)
    assert camera.intrinsics.shape == (3, 3, 3)
    moved = camera.to(DOUBLE)
    assert moved.cam2world.dtype == DOUBLE and moved.batch_size == 3
    with pytest.raises(ValueError):
        Camera(torch.eye(4).expand(2, 4, 4), torch.eye(3).expand(3, 3, 3))
