"""TI, DS and MV of `headforge eval`: formulas by hand, an analytic two-view scene, end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from headforge.apps.generate import camera_labels
from headforge.cameras import matrices_from_label, pixel_rays
from headforge.data.studio.runner import run_synth
from headforge.eval.command import evaluate
from headforge.eval.consistency import (
    attribute_groups,
    camera_angle_degrees,
    disentanglement_scores,
    reference_variance,
    temporal_inconsistency,
    view_pairs,
)
from headforge.eval.consistency_protocols import consistency_samples_from_nerffaceshop, paired_views
from headforge.eval.consistency_scores import score_ti
from headforge.eval.protocols import EvalSamples, samples_from_dataset
from headforge.eval.reprojection import erode_mask, reprojection_error, unproject_depth
from headforge.models.nerffaceshop import NeRFFaceShopGenerator, preset

# -- TI and DS against hand-computed values ------------------------------------------------


def test_temporal_inconsistency_closed_form() -> None:
    shape = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 5.0], [5.0, 5.0], [9.0, 9.0]])
    groups = torch.tensor([0, 0, 1, 1, -1])
    # Identity 0: coefficient stds 1 and 0 -> 0.5; identity 1 constant -> 0; row 4 is in no group.
    assert temporal_inconsistency(shape, groups) == (pytest.approx(0.25), 2)
    assert temporal_inconsistency(shape, torch.tensor([0, 1, 2, 3, 4]))[1] == 0
    assert math.isnan(temporal_inconsistency(shape, torch.full((5,), -1))[0])


def test_ti_is_zero_for_a_shape_estimator_constant_per_identity() -> None:
    identity = torch.arange(3).repeat_interleave(4)
    samples = EvalSamples(torch.rand(12, 3, 8, 8) * 2 - 1, identity=identity, shape_group=identity.clone())
    per_identity = torch.randn(3, 53)

    def constant(kind: str, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], None]:
        assert kind == "shape"
        return {"shape": per_identity[identity[: images.shape[0]]]}, None

    entry = score_ti(samples, constant)
    assert entry["value"] == 0.0 and entry["groups"] == 3 and entry["reliable"]
    # Identities mixed: the per-coefficient population std over all 12 rows.
    expected = per_identity[identity].double().std(dim=0, unbiased=False).mean()
    assert entry["all_images_std"] == pytest.approx(float(expected))

    noise = 0.3 * torch.where(torch.arange(12) % 2 == 0, 1.0, -1.0)  # +-0.3 in every group: std 0.3

    def noisy(kind: str, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], None]:
        return {"shape": per_identity[identity] + noise[:, None]}, None

    assert score_ti(samples, noisy)["value"] == pytest.approx(0.3, abs=1e-6)


def test_disentanglement_score_hand_computed() -> None:
    estimates = {
        "expression": torch.tensor([[0.0, 0.0], [0.2, 0.0], [0.0, 0.0], [0.0, 0.0]]),
        "pose": torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
        "light": torch.tensor([[1.0], [1.1], [0.0], [0.0]]),
    }
    groups = {"pose": torch.tensor([0, 0, -1, -1]), "light": torch.tensor([-1, -1, 0, 0])}
    normalisers = {"expression": 0.5, "pose": 1.0, "light": 0.25}
    scores = disentanglement_scores(estimates, groups, normalisers)
    # Pose group {0, 1}: pose variances (1, 0, 0) -> 1/3; expression (0.01, 0) -> 0.005 / 0.5;
    # light 0.0025 / 0.25. DS_pose = (1/3 / 0.01) * (1/3 / 0.01).
    sigma = scores["pose"]["sigma"]
    assert sigma["pose"] == pytest.approx(1 / 3)
    assert sigma["expression"] == pytest.approx(0.01)
    assert sigma["light"] == pytest.approx(0.01)
    assert scores["pose"]["value"] == pytest.approx((100 / 3) ** 2)
    # Light group {2, 3}: nothing moves at all -> 0 / 0.
    assert math.isnan(scores["light"]["value"]) and scores["light"]["groups"] == 1
    assert reference_variance(torch.tensor([[0.0, 1.0], [2.0, 1.0]])) == pytest.approx(0.5)


def test_attribute_groups_and_view_pairs() -> None:
    identity = torch.tensor([0, 0, 0, 0, 1, 1])
    light = torch.tensor([[0.0], [0.0], [1.0], [0.0], [0.0], [0.0]])
    camera = torch.tensor([[0.0], [1.0], [0.0], [0.0], [0.0], [0.0]])
    groups = attribute_groups(identity, {"light": light, "camera": camera})
    # Rows 0 and 2 differ only in light, 0 and 1 only in camera; row 3 duplicates row 0.
    assert groups["light"].tolist() == [0, -1, 0, 0, -1, -1]
    assert groups["camera"].tolist() == [0, 0, -1, 0, -1, -1]
    yaw = torch.tensor([0.0, 0.1, 0.45, 0.0])
    cameras = camera_labels(yaw, torch.zeros(4), "cpu")
    angles = camera_angle_degrees(cameras[:1].expand(4, -1), cameras)
    # Orbit cameras at radius 2.7 aim at the pivot (0, 0, 0.2): axis = normalise(pivot - eye).
    eye = 2.7 * torch.stack([torch.sin(yaw), torch.zeros(4), torch.cos(yaw)], dim=1).double()
    axis = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 0.2]).double() - eye, dim=1)
    expected = torch.rad2deg(torch.arccos((axis * axis[:1]).sum(1).clamp(max=1.0)))
    assert torch.allclose(angles, expected, atol=1e-4)
    pairs = view_pairs(cameras, torch.tensor([0, 0, 0, 1]), 3.0, 25.0)
    assert float(angles[2]) > 25 and pairs.tolist() == [[0, 1], [1, 2]]  # row 3: another scene
    yaw, pitch = paired_views(5, torch.Generator().manual_seed(0))
    steps = torch.rad2deg(torch.hypot(yaw[1::2] - yaw[0:-1:2], pitch[1::2] - pitch[0:-1:2]))
    assert yaw.shape == (5,) and ((steps >= 5.0) & (steps <= 20.0)).all()


# -- reprojection on an analytic scene -----------------------------------------------------

SPHERE_CENTRE = torch.tensor([0.0, 0.05, 0.35])
SPHERE_RADIUS = 0.2


def _texture(points: torch.Tensor, shift: float) -> torch.Tensor:
    """A smooth colour field (N, 3) in [-1, 1] of world points, moved by ``shift`` along x."""
    x, y, z = (points[..., 0] + shift), points[..., 1], points[..., 2]
    return (
        torch.stack(
            [torch.sin(5 * x + 2 * y), torch.cos(4 * y - 3 * z + x), torch.sin(3 * x * y + 4 * z)], dim=-1
        )
        * 0.9
    )


def render_scene(label: torch.Tensor, size: int, shift: float = 0.0) -> dict[str, torch.Tensor]:
    """Ray-cast the plane z = 0 behind a sphere: image (1, 3, S, S), exact depth (1, 1, S, S)."""
    cam2world, intrinsics = matrices_from_label(label[None].double())
    origins, directions = pixel_rays(cam2world, intrinsics, size, size)
    plane = -origins[..., 2] / directions[..., 2]
    offset = origins - SPHERE_CENTRE.double()
    b = (offset * directions).sum(-1)
    discriminant = b.square() - (offset.square().sum(-1) - SPHERE_RADIUS**2)
    sphere = torch.where(discriminant > 0, -b - discriminant.clamp(min=0).sqrt(), math.inf)
    distance = torch.minimum(plane, sphere)
    points = origins + directions * distance[..., None]
    depth = distance * (directions * cam2world[:, None, :3, 2]).sum(-1)
    image = _texture(points, shift).reshape(1, size, size, 3).permute(0, 3, 1, 2)
    return {"image": image.float(), "depth": depth.reshape(1, 1, size, size).float()}


def _pair_error(shift: float = 0.0, tolerance: float = 0.03, yaw_b: float = 0.2):
    labels = camera_labels(torch.tensor([0.0, yaw_b]), torch.tensor([0.0, 0.05]), "cpu")
    a, b = render_scene(labels[0], 64), render_scene(labels[1], 64, shift)
    ones = torch.ones(1, 1, 64, 64)
    return reprojection_error(
        a["image"], a["depth"], ones, labels[:1], b["image"], b["depth"], ones, labels[1:], tolerance
    )


def test_unproject_inverts_the_analytic_depth() -> None:
    label = camera_labels(torch.tensor([0.3]), torch.tensor([0.1]), "cpu")[0]
    scene = render_scene(label, 16)
    points = unproject_depth(scene["depth"].double(), label[None].double())
    on_plane = points[0, :, 2].abs() < 1e-6
    on_sphere = ((points[0] - SPHERE_CENTRE.double()).norm(dim=-1) - SPHERE_RADIUS).abs() < 1e-6
    assert bool((on_plane | on_sphere).all()) and bool(on_sphere.any())


def test_reprojection_is_near_zero_for_a_consistent_scene_and_grows_with_a_texture_shift() -> None:
    consistent = _pair_error()
    assert consistent.valid_fraction.item() > 0.6
    assert consistent.abs_error.item() < 0.002  # bilinear resampling of a smooth texture only
    assert consistent.psnr.item() > 45
    # Without reprojection the same pixels disagree a lot: the geometry is doing the work.
    assert consistent.unaligned_abs_error.item() > 10 * consistent.abs_error.item()
    errors = [_pair_error(shift).abs_error.item() for shift in (0.02, 0.05, 0.1)]
    assert errors == sorted(errors) and errors[0] > 2 * consistent.abs_error.item() and errors[-1] > 0.05


def test_occluded_points_are_rejected() -> None:
    # A wide baseline: the sphere hides plane points of view A from view B.
    handled = _pair_error(yaw_b=0.35)
    ignored = _pair_error(yaw_b=0.35, tolerance=math.inf)
    assert ignored.valid.item() > handled.valid.item() + 20
    assert handled.abs_error.item() < 0.002
    assert ignored.abs_error.item() > 2 * handled.abs_error.item()


def test_surface_masks_limit_the_comparison() -> None:
    labels = camera_labels(torch.tensor([0.0, 0.15]), torch.zeros(2), "cpu")
    a, b = render_scene(labels[0], 32), render_scene(labels[1], 32)
    left_half = torch.zeros(1, 1, 32, 32)
    left_half[..., :16] = 1.0
    full = torch.ones(1, 1, 32, 32)
    result = reprojection_error(
        a["image"], a["depth"], left_half, labels[:1], b["image"], b["depth"], full, labels[1:]
    )
    assert result.surface.item() == 32 * 16 and 0 < result.valid.item() <= 32 * 16
    nothing = reprojection_error(
        a["image"], a["depth"], full, labels[:1], b["image"], b["depth"], 0 * full, labels[1:]
    )
    assert nothing.valid.item() == 0 and math.isnan(nothing.abs_error.item())
    assert erode_mask(left_half)[0, 0, 5].tolist() == [1.0] * 15 + [0.0] * 17


# -- end to end -------------------------------------------------------------------------------


def test_tiny_nerffaceshop_consistency_end_to_end() -> None:
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(preset("tiny", num_coarse=6, num_fine=6)).eval()
    lights = torch.zeros(3, 9, 3)
    lights[:, 0] = torch.tensor([[1.0], [0.6], [1.4]])
    lights[1, 1] = 0.5
    samples = consistency_samples_from_nerffaceshop(
        generator, lights, identities=2, expressions=3, views=2, light_count=2, seed=3, progress=False
    )
    per_identity = 3 + 1 + 2
    assert samples.images.shape[0] == 2 * per_identity and samples.view_pairs.tolist() == [[4, 5], [10, 11]]
    assert samples.attribute_groups["light"][:per_identity].tolist() == [0, -1, -1, 0, -1, -1]
    again = consistency_samples_from_nerffaceshop(
        generator, lights, identities=2, expressions=3, views=2, light_count=2, seed=3, progress=False
    )
    assert torch.equal(samples.images, again.images)
    assert not torch.equal(samples.images[0], samples.images[1]), "animations do not change the image"
    # An untrained generator is a translucent fog (opacity ~0.1): compare wherever there is any.
    results = evaluate(samples, ["ti", "ds", "mv"], progress=False, surface_threshold=0.05)
    assert list(results) == ["ti", "ds_expression", "ds_pose", "ds_light", "mv"]
    for name, entry in results.items():
        assert math.isfinite(entry["value"]), (name, entry)
    assert results["ti"]["groups"] == 2 and results["mv"]["pairs"] == 2
    assert results["ds_pose"]["groups"] == 2 and set(results["ds_pose"]["sigma"]) == {
        "expression",
        "pose",
        "light",
    }


@pytest.fixture(scope="module")
def multiview(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("studio") / "multiview"
    run_synth("multiview", 8, 32, 0, out, workers=1, progress=False)
    return out


def test_studio_multiview_is_consistent(multiview: Path) -> None:
    samples = samples_from_dataset(str(multiview), progress=False, with_depth=True)
    assert samples.depth.shape == (8, 1, 32, 32) and samples.view_pairs.shape[0] >= 2
    results = evaluate(samples, ["mv", "ti", "ds"], progress=False)
    mv = results["mv"]
    # Ground-truth renders: only shading, specular highlights and 8-bit / silhouette effects differ.
    assert mv["value"] < 0.03 and mv["psnr"] > 25 and mv["valid_fraction"] > 0.5
    assert mv["value"] < mv["unaligned_baseline"]
    # One identity under one expression and light: pose groups only.
    assert math.isfinite(results["ti"]["value"]) and results["ti"]["groups"] == 1
    assert math.isfinite(results["ds_pose"]["value"]) and results["ds_pose"]["groups"] == 1
    assert math.isnan(results["ds_light"]["value"]) and "light changes" in results["ds_light"]["note"]


def test_aed_on_landmark_offsets_is_in_millimetres() -> None:
    from headforge.eval.estimators.targets import MOUTH_LANDMARKS, UNITS_PER_MM
    from headforge.eval.protocols import landmark_offset_distance

    requested = torch.randn(5, 68, 3, generator=torch.Generator().manual_seed(0)) * UNITS_PER_MM
    shift = torch.zeros(68, 3)
    shift[:, 0] = 3 * UNITS_PER_MM  # every landmark 3 mm off along x
    assert landmark_offset_distance(requested, requested) == 0.0
    assert abs(landmark_offset_distance(requested, requested + shift) - 3.0) < 1e-5  # float32 inputs
    mouth_only = torch.zeros(68, 3)
    mouth_only[MOUTH_LANDMARKS, 1] = 2 * UNITS_PER_MM  # 20 of 68 landmarks 2 mm off
    assert abs(landmark_offset_distance(requested, requested + mouth_only, MOUTH_LANDMARKS) - 2.0) < 1e-5
    assert abs(landmark_offset_distance(requested, requested + mouth_only) - 2.0 * 20 / 68) < 1e-5
