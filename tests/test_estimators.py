"""Tests for headforge.eval.estimators: targets, metrics, weights I/O and the shipped estimators."""

from __future__ import annotations

import warnings

import pytest
import torch

from headforge.cameras import intrinsics_matrix, label_from_matrices, orbit_cam2world
from headforge.eval.estimators import (
    ESTIMATOR_KINDS,
    EstimatorNetwork,
    EstimatorQualityWarning,
    EstimatorWeightsError,
    default_weights_path,
    head_pose_angles,
    load_estimator,
    shipped_quality,
)
from headforge.eval.estimators.identity import batch_hard_triplet_loss, verification_metrics
from headforge.eval.estimators.metrics import offsets_report, r2_score, regression_report, sh_report
from headforge.eval.estimators.targets import (
    MOUTH_LANDMARKS,
    UNITS_PER_MM,
    expression_offsets,
    rotation_to_yaw_pitch_roll,
    yaw_pitch_roll_to_rotation,
)
from headforge.heads.base import POSE_SLICES
from headforge.heads.procedural.expressions import EXPRESSION_NAMES

# Thresholds for the shipped weights on the 32 benchmark images (seed 0, 128 px) the tests render,
# used at 128 px and reduced to 64 px; measured there (both sizes alike): SH R^2 0.86, irradiance
# error 0.19 (mean predictor 0.53), yaw / pitch error 2.8 / 2.3 deg (mean predictor 16.6 / 8.7),
# identity pair AUC 0.72, rank-1 0.38 (chance 0.10). The 400-image held-out figures are in
# headforge/assets/estimators/manifest.json.
MIN_SH_R2 = 0.5
MAX_IRRADIANCE_ERROR_RATIO = 0.6
MAX_YAW_PITCH_DEG = 6.0
MIN_IDENTITY_AUC = 0.62
MIN_RANK1_ABOVE_CHANCE = 0.05
# Expression landmark offsets (targets.expression_offsets) on the same 32 images, measured with
# the shipped file: R^2 0.74 / 0.72 (128 / 64 px; held-out bar of shipped_quality 0.3), mean error
# 1.69 / 1.72 mm vs 3.26 mm for the mean predictor (ratio 0.52 / 0.53).
MIN_OFFSETS_R2 = 0.5
MAX_OFFSETS_ERROR_RATIO = 0.7
# Bar for shape, which the manifest does not yet pass (R^2 -0.16 on the 32 test images); see
# shipped_quality. Once a retrained file passes its held-out bar, the test images must clear it.
MIN_SHAPE_R2 = 0.1


def _label(yaw: float, pitch: float) -> torch.Tensor:
    cam2world = orbit_cam2world(torch.tensor([yaw]), torch.tensor([pitch]), pivot=(0.0, 0.0, 0.0))
    return label_from_matrices(cam2world, intrinsics_matrix(4.2647).expand(1, 3, 3))


# ------------------------------------------------------------------ targets
def test_yaw_pitch_roll_round_trip() -> None:
    angles = (torch.rand(64, 3, dtype=torch.float64) - 0.5) * torch.tensor(
        [4.0, 2.8, 4.0], dtype=torch.float64
    )
    back = rotation_to_yaw_pitch_roll(yaw_pitch_roll_to_rotation(angles))
    torch.testing.assert_close(back, angles)


def test_head_pose_from_camera_orbit_and_neck() -> None:
    pose = torch.zeros(1, 15, dtype=torch.float64)
    # A camera orbiting towards +x sees the unposed head turned the other way.
    angles = head_pose_angles(_label(0.4, 0.0).double(), pose)
    torch.testing.assert_close(
        angles, torch.tensor([[-0.4, 0.0, 0.0]], dtype=torch.float64), atol=1e-5, rtol=0
    )
    # A camera moving up sees the head as if it tilted down (positive pitch).
    angles = head_pose_angles(_label(0.0, 0.3).double(), pose)
    torch.testing.assert_close(
        angles, torch.tensor([[0.0, 0.3, 0.0]], dtype=torch.float64), atol=1e-5, rtol=0
    )
    # The neck joint turning the head about +y, seen by the frontal camera, is head yaw.
    pose[0, POSE_SLICES["neck"]] = torch.tensor([0.0, 0.25, 0.0], dtype=torch.float64)
    angles = head_pose_angles(_label(0.0, 0.0).double(), pose)
    torch.testing.assert_close(
        angles, torch.tensor([[0.25, 0.0, 0.0]], dtype=torch.float64), atol=1e-5, rtol=0
    )
    # Global and neck compose: turning the whole head and the camera alike cancels.
    pose[0, POSE_SLICES["neck"]] = 0.0
    pose[0, POSE_SLICES["global"]] = torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)
    angles = head_pose_angles(_label(0.3, 0.0).double(), pose)
    torch.testing.assert_close(angles, torch.zeros(1, 3, dtype=torch.float64), atol=1e-5, rtol=0)


def test_expression_offsets_neutral_linear_and_closed_form() -> None:
    n_expression = len(EXPRESSION_NAMES)
    neutral = expression_offsets(torch.zeros(3, n_expression), torch.zeros(3, 3))
    assert neutral.shape == (3, 68, 3) and neutral.dtype == torch.float32
    assert float(neutral.abs().max()) < 1e-7
    # With the jaw at zero the model is template + linear blendshapes (no skinning, no
    # correctives), so the offsets are linear in the coefficients, every component included.
    generator = torch.Generator().manual_seed(5)
    e1 = torch.rand(4, n_expression, generator=generator)
    e2 = torch.rand(4, n_expression, generator=generator)
    zero_jaw = torch.zeros(4, 3)
    mixed = expression_offsets(1.5 * e1 - 0.7 * e2, zero_jaw)
    separate = 1.5 * expression_offsets(e1, zero_jaw) - 0.7 * expression_offsets(e2, zero_jaw)
    torch.testing.assert_close(mixed, separate, atol=1e-6, rtol=0)
    # Closed form: component k's offsets are its blendshape at the landmark vertices (the
    # procedural landmarks are single vertices, weight 1).
    from headforge.data.studio.runner import default_head_model

    model = default_head_model()
    vertex_ids = model.landmark_vertex_ids[:68, 0]
    unit = expression_offsets(torch.eye(n_expression), torch.zeros(n_expression, 3), model=model)
    torch.testing.assert_close(unit, model.exprdirs[vertex_ids].permute(2, 0, 1), atol=1e-6, rtol=0)


def test_expression_offsets_identify_equivalent_coefficients() -> None:
    n_expression = len(EXPRESSION_NAMES)
    index = {name: i for i, name in enumerate(EXPRESSION_NAMES)}
    # The jaw_open component is a 0.3 rad rotation about the jaw joint (docs/head_model.md): on the
    # landmarks it equals the jaw joint opened by 0.3 rad, although the coefficients differ.
    component = torch.zeros(1, n_expression)
    component[0, index["jaw_open"]] = 1.0
    by_component = expression_offsets(component, torch.zeros(1, 3))
    by_joint = expression_offsets(torch.zeros(1, n_expression), torch.tensor([[0.3, 0.0, 0.0]]))
    assert float((by_component - by_joint).norm(dim=-1).max()) < 0.01 * UNITS_PER_MM
    # Opening the jaw (positive x) moves the chin (landmark 8) down and the lower lip away from the
    # upper lip; the brows (17-26) stay where they are.
    assert float(by_joint[0, 8, 1]) < -20 * UNITS_PER_MM
    assert float(by_joint[0, 57, 1] - by_joint[0, 51, 1]) < -10 * UNITS_PER_MM
    assert float(by_joint[0, 17:27].abs().max()) < 1e-6
    # ``smile`` is NOT exactly ``smile_left`` + ``smile_right`` in this model (the one-sided fields
    # are scaled 1.15 and blended differently): the offsets keep the ~1.4 mm difference, far below
    # the ~9.5 mm the smile moves the mouth corners.
    smile = torch.zeros(2, n_expression)
    smile[0, index["smile"]] = 1.0
    smile[1, index["smile_left"]] = smile[1, index["smile_right"]] = 1.0
    both, sides = expression_offsets(smile, torch.zeros(2, 3))
    difference = float((both - sides).norm(dim=-1).max()) / UNITS_PER_MM
    assert 0.5 < difference < 0.25 * float(both.norm(dim=-1).max()) / UNITS_PER_MM


# ------------------------------------------------------------------ metrics
def test_offsets_report_closed_form() -> None:
    target = torch.randn(50, 68, 3, generator=torch.Generator().manual_seed(6)) * UNITS_PER_MM
    # A constant 1 mm shift of every landmark: error exactly 1 mm everywhere.
    shifted = target + torch.tensor([0.0, UNITS_PER_MM, 0.0])
    report = offsets_report(shifted, target, target.mean(0))
    assert report["error_mm"] == pytest.approx(1.0, abs=1e-4)
    assert report["mouth_error_mm"] == pytest.approx(1.0, abs=1e-4)
    assert report["baseline_r2"] == pytest.approx(0.0, abs=1e-5)
    assert offsets_report(target, target, target.mean(0))["r2"] == pytest.approx(1.0)
    # The mouth figures see only landmarks 48-67.
    mouth_only = target.clone()
    mouth_only[:, MOUTH_LANDMARKS] += torch.tensor([0.0, 0.0, UNITS_PER_MM])
    report = offsets_report(mouth_only, target, target.mean(0))
    assert report["mouth_error_mm"] == pytest.approx(1.0, abs=1e-4)
    assert report["error_mm"] == pytest.approx(20 / 68, abs=1e-4)
    assert report["by_region"]["mouth_corners"]["error_mm"] == pytest.approx(1.0, abs=1e-4)
    assert report["by_region"]["brows"]["error_mm"] == 0.0
    assert report["by_region"]["eyes"]["r2"] == pytest.approx(1.0)


def test_regression_metrics_closed_form() -> None:
    target = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    assert r2_score(target, target) == pytest.approx(1.0)
    assert r2_score(target.mean(0).expand_as(target), target) == pytest.approx(0.0, abs=1e-6)
    # Predicting half the deviation leaves a quarter of the variance: R^2 = 0.75.
    half = target.mean(0) + 0.5 * (target - target.mean(0))
    assert r2_score(half, target) == pytest.approx(0.75, abs=1e-5)
    report = regression_report(target + 0.1, target, target.mean(0))
    assert report["mae"] == pytest.approx(0.1, abs=1e-6)
    assert report["baseline_r2"] == pytest.approx(0.0, abs=1e-6)


def test_sh_report_scaling() -> None:
    sh = torch.randn(8, 9, 3, generator=torch.Generator().manual_seed(1))
    sh[:, 0] += 3.0
    exact = sh_report(sh, sh, sh.mean(0))
    assert exact["relative_error"] == pytest.approx(0.0, abs=1e-7)
    assert exact["irradiance_error"] == pytest.approx(0.0, abs=1e-7)
    # Irradiance is linear in the SH: doubling the light doubles it, relative error exactly 1.
    doubled = sh_report(2.0 * sh, sh, sh.mean(0))
    assert doubled["relative_error"] == pytest.approx(1.0, abs=1e-6)
    assert doubled["irradiance_error"] == pytest.approx(1.0, abs=1e-6)


def test_verification_metrics_separable_and_random() -> None:
    labels = torch.arange(10).repeat_interleave(4)
    centres = torch.nn.functional.normalize(
        torch.randn(10, 16, generator=torch.Generator().manual_seed(2)), dim=1
    )
    perfect = verification_metrics(centres[labels] + 1e-3 * torch.randn(40, 16), labels)
    assert perfect["pair_auc"] == pytest.approx(1.0)
    assert perfect["rank1"] == 1.0
    assert perfect["rank1_chance"] == pytest.approx(3 / 39)
    random_embeddings = torch.randn(40, 16, generator=torch.Generator().manual_seed(3))
    random = verification_metrics(random_embeddings, labels)
    assert 0.3 < random["pair_auc"] < 0.7
    # Best balanced accuracy against a brute-force sweep over every threshold.
    unit = torch.nn.functional.normalize(random_embeddings.double(), dim=1)
    similarity = unit @ unit.T
    upper = torch.triu(torch.ones(40, 40, dtype=torch.bool), diagonal=1)
    same = labels[:, None] == labels[None, :]
    genuine, impostor = similarity[same & upper], similarity[~same & upper]
    best = max(
        0.5 * (float((genuine >= t).double().mean()) + float((impostor < t).double().mean()))
        for t in torch.cat([genuine, impostor])
    )
    assert random["best_accuracy"] == pytest.approx(best, abs=1e-9)


def test_batch_hard_triplet_loss_matches_loop_reference() -> None:
    embeddings = torch.randn(12, 5, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 4])
    unit = [e / e.norm() for e in embeddings]
    terms = []
    for a in range(12):
        positives = [1 - float(unit[a] @ unit[p]) for p in range(12) if p != a and labels[p] == labels[a]]
        negatives = [1 - float(unit[a] @ unit[n]) for n in range(12) if labels[n] != labels[a]]
        if positives and negatives:
            terms.append(max(0.0, max(positives) - min(negatives) + 0.3))
    loss = batch_hard_triplet_loss(embeddings, labels, margin=0.3)
    assert float(loss) == pytest.approx(sum(terms) / len(terms), abs=1e-6)
    # Identical embeddings per identity, orthogonal across identities: hardest d(a,p)=0, d(a,n)=1.
    separated = torch.eye(5)[labels]
    assert float(batch_hard_triplet_loss(separated, labels, margin=0.3)) == 0.0
    assert float(batch_hard_triplet_loss(separated, labels, margin=1.5)) == pytest.approx(0.5)


# --------------------------------------------------------------- weights I/O
def test_network_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    network = EstimatorNetwork({"shape": 5, "embedding": 4}, channels=(8, 16), unit_norm_heads=("embedding",))
    network.set_target_statistics("shape", torch.randn(20, 5) * 3.0 + 1.0)
    path = network.save_weights(tmp_path / "net.safetensors")
    loaded = EstimatorNetwork.from_file(path)
    images = torch.rand(3, 3, 40, 40) * 2 - 1
    network.eval()
    for name, value in network(images).items():
        torch.testing.assert_close(loaded(images)[name], value)
    assert torch.allclose(loaded(images)["embedding"].norm(dim=1), torch.ones(3))


def test_face_crop_branch_round_trip_and_crop_geometry(tmp_path) -> None:
    torch.manual_seed(0)
    box = (0.25, 0.25, 0.5)
    network = EstimatorNetwork({"jaw": 3}, channels=(8, 16), face_crop=box, crop_channels=(8, 24))
    network.set_target_statistics("jaw", torch.randn(20, 3) * 0.1)
    path = network.save_weights(tmp_path / "crop.safetensors", storage_dtype=torch.float16)
    loaded = EstimatorNetwork.from_file(path)
    assert loaded.face_crop == box and loaded.crop_backbone is not None
    assert loaded.crop_backbone.channels == (8, 24)
    images = torch.rand(2, 3, 96, 96) * 2 - 1
    network.half().float().eval()  # the file stores float16
    torch.testing.assert_close(loaded(images)["jaw"], network(images)["jaw"])
    # The crop is cut from the image as given: a 128 px image's central 64 px, untouched.
    large = torch.rand(1, 3, 128, 128)
    views = loaded.prepare_views(large)
    assert [tuple(view.shape) for view in views] == [(1, 3, 64, 64), (1, 3, 64, 64)]
    torch.testing.assert_close(views[1], large[..., 32:96, 32:96])
    # Only the face region reaches the crop branch: changing a corner pixel block leaves it alone.
    corner = large.clone()
    corner[..., :16, :16] = 0.0
    torch.testing.assert_close(loaded.prepare_views(corner)[1], views[1])
    with pytest.raises(ValueError, match="unit square"):
        EstimatorNetwork({"jaw": 3}, channels=(8,), face_crop=(0.6, 0.2, 0.5))


def test_missing_and_corrupt_weights_name_the_file(tmp_path) -> None:
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(EstimatorWeightsError, match="absent.safetensors"):
        load_estimator("shape", weights=missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(EstimatorWeightsError, match="corrupt.safetensors"):
        load_estimator("pose", weights=corrupt)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(default_weights_path("pose").read_bytes()[:5000])
    with pytest.raises(EstimatorWeightsError, match="truncated.safetensors"):
        load_estimator("pose", weights=truncated)
    # A valid file without the heads a kind needs is refused too.
    EstimatorNetwork({"shape": 3}, channels=(8,)).save_weights(tmp_path / "shape_only.safetensors")
    with pytest.raises(EstimatorWeightsError, match="shape_only.safetensors"):
        load_estimator("lighting", weights=tmp_path / "shape_only.safetensors")
    with pytest.raises(ValueError, match="unknown estimator kind"):
        load_estimator("age")


# ------------------------------------------------------- shipped estimators
@pytest.fixture(scope="module")
def heldout_128(tmp_path_factory):
    """32 benchmark images (8 held-out identities x 4) at 128 px, made by the studio.

    128 px like the estimators' training data (the face-crop branch reads detail
    at that size); rendering at 128 px costs about as much as at 64 px.
    """
    from headforge.data.studio import run_synth
    from headforge.eval.estimators.training import load_estimator_data

    out = tmp_path_factory.mktemp("benchmark")
    torch.set_num_threads(2)
    run_synth(preset="benchmark", count=32, resolution=128, seed=0, out=out, workers=1, progress=False)
    return load_estimator_data([out], resolution=128)


@pytest.fixture(scope="module")
def heldout(heldout_128):
    """The same 32 images reduced to 64 px, the size most generators output."""
    from headforge.eval.estimators.networks import resize_for_estimator
    from headforge.eval.estimators.training import EstimatorData

    return EstimatorData(
        resize_for_estimator(heldout_128.images, 64),
        heldout_128.targets,
        heldout_128.identities,
        heldout_128.sources,
    )


def test_shipped_estimators_shapes_dtypes_determinism(heldout) -> None:
    images = heldout.images[:4]
    expected = {
        "expression": {
            "expression_offsets": (4, 68, 3),
            "expression": (4, heldout.targets["expression"].shape[1]),
            "jaw": (4, 3),
        },
        "pose": {"yaw": (4,), "pitch": (4,), "roll": (4,)},
        "lighting": {"sh": (4, 9, 3)},
        "shape": {"shape": (4, heldout.targets["shape"].shape[1])},
        "identity": {"embedding": (4, 128)},
    }
    assert set(expected) == set(ESTIMATOR_KINDS)
    for kind, shapes in expected.items():
        estimator = _load_quietly(kind)
        first = estimator(images)
        assert {name: tuple(value.shape) for name, value in first.items()} == shapes
        assert all(value.dtype == torch.float32 for value in first.values())
        # Same images (batch order and size changed) -> same numbers: per-sample, no batch statistics.
        second = estimator(torch.cat([images[2:], images[:2]]))
        for name, value in first.items():
            torch.testing.assert_close(
                torch.cat([second[name][2:], second[name][:2]]), value, atol=1e-5, rtol=1e-4
            )
        # Any input size: a 128 px copy is resized back with antialiasing to nearly the same input.
        upsampled = torch.nn.functional.interpolate(
            images, size=(128, 128), mode="bilinear", align_corners=False
        )
        assert all(torch.isfinite(v).all() for v in estimator(upsampled).values())
    embedding = load_estimator("identity")(images)["embedding"]
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(4))


def _load_quietly(kind: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimatorQualityWarning)
        return load_estimator(kind)


@pytest.mark.parametrize("size", [128, 64])
def test_shipped_pose_and_lighting_beat_mean_baseline(heldout_128, heldout, size) -> None:
    data = heldout_128 if size == 128 else heldout
    targets = data.targets
    network = load_estimator("lighting").network
    sh = load_estimator("lighting")(data.images)["sh"]
    assert r2_score(sh.reshape(-1, 27), targets["sh"]) > MIN_SH_R2
    report = sh_report(sh, targets["sh"].reshape(-1, 9, 3), network.target_mean("sh").reshape(9, 3))
    assert report["irradiance_error"] < MAX_IRRADIANCE_ERROR_RATIO * report["baseline_irradiance_error"]

    pose = load_estimator("pose")(data.images)
    for axis, name in enumerate(("yaw", "pitch")):
        error = torch.rad2deg((pose[name] - targets["pose"][:, axis]).abs()).mean()
        baseline = torch.rad2deg((network.target_mean("pose")[axis] - targets["pose"][:, axis]).abs()).mean()
        assert error < MAX_YAW_PITCH_DEG
        assert error < 0.6 * baseline


@pytest.mark.parametrize("size", [128, 64])
def test_shipped_expression_offsets_beat_mean_baseline(heldout_128, heldout, size) -> None:
    data = heldout_128 if size == 128 else heldout
    estimator = _load_quietly("expression")
    predicted = estimator(data.images)["expression_offsets"]
    target = data.targets["expression_offsets"].reshape(predicted.shape)
    mean = estimator.network.target_mean("expression_offsets").reshape(68, 3)
    report = offsets_report(predicted, target, mean)
    assert report["r2"] > MIN_OFFSETS_R2, report
    assert report["error_mm"] < MAX_OFFSETS_ERROR_RATIO * report["baseline_error_mm"], report


def test_shipped_expression_and_shape_quality_flag_is_honest(heldout_128, heldout) -> None:
    """Kinds passing their held-out bar must beat it here too (128 and 64 px); failing kinds must warn."""
    targets = heldout.targets
    for kind in ("pose", "lighting", "identity"):
        assert shipped_quality(kind)[0], shipped_quality(kind)[1]
    for kind, bar in (("expression", MIN_OFFSETS_R2), ("shape", MIN_SHAPE_R2)):
        passes, summary = shipped_quality(kind)
        if passes:
            with warnings.catch_warnings():
                warnings.simplefilter("error", EstimatorQualityWarning)
                estimator = load_estimator(kind)
            name = "expression_offsets" if kind == "expression" else kind
            for data in (heldout_128, heldout):
                outputs = estimator(data.images)
                assert r2_score(outputs[name].flatten(1), targets[name]) > bar, summary
        else:
            with pytest.warns(EstimatorQualityWarning, match=kind):
                load_estimator(kind)


def test_shipped_quality_needs_both_resolutions(tmp_path) -> None:
    """A kind passing at 128 px but failing at 64 px (or the reverse) does not pass."""
    import json

    # The landmark offsets gate; the unidentifiable coefficients and the jaw opening do not.
    good = {
        "expression_offsets": {"r2": 0.6},
        "expression": {"r2": -0.05},
        "jaw": {"opening_x": {"r2": 0.05}},
    }
    bad = {**good, "expression_offsets": {"r2": 0.2}}
    for low_res, expected in ((good, True), (bad, False)):
        entry = {"file": "x.safetensors", "heldout_accuracy": good, "heldout_accuracy_64px": low_res}
        (tmp_path / "manifest.json").write_text(json.dumps({"estimators": {"expression": entry}}))
        passes, summary = shipped_quality("expression", asset_dir=tmp_path)
        assert passes is expected, summary
        assert "64 px" in summary
    entry = {"file": "x.safetensors", "heldout_accuracy": bad}
    (tmp_path / "manifest.json").write_text(json.dumps({"estimators": {"expression": entry}}))
    assert shipped_quality("expression", asset_dir=tmp_path)[0] is False
    # A manifest of the old format (no offsets figures) does not pass.
    entry = {"file": "x.safetensors", "heldout_accuracy": {"expression": {"r2": 0.6}, "jaw": good["jaw"]}}
    (tmp_path / "manifest.json").write_text(json.dumps({"estimators": {"expression": entry}}))
    assert shipped_quality("expression", asset_dir=tmp_path)[0] is False


def test_shipped_identity_embedding_separates_heldout_identities(heldout) -> None:
    embedding = load_estimator("identity")(heldout.images)["embedding"]
    figures = verification_metrics(embedding, heldout.identities)
    assert figures["pair_auc"] > MIN_IDENTITY_AUC
    assert figures["rank1"] > figures["rank1_chance"] + MIN_RANK1_ABOVE_CHANCE
