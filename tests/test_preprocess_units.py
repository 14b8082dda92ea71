"""Preprocess pieces that need neither MediaPipe nor studio renders: crop framing, filters,
reports, atomic writes, the landmark rig on a FLAME-structured model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headforge.cameras import FFHQ_FOCAL, intrinsics_matrix, orbit_cam2world, project_points
from headforge.heads import ProceduralHeadModel
from headforge.preprocess.align import CropBox, crop_box_from_landmarks, crop_image, landmarks_to_crop
from headforge.preprocess.filters import ClipThresholds, clip_is_expressive, hand_covers_face, smooth_boxes
from headforge.preprocess.landmarks_map import LANDMARK_FIT_WEIGHTS, mediapipe_to_ibug70
from headforge.preprocess.model_fit import LandmarkRig
from headforge.preprocess.pipeline import item_name, write_json_atomic, write_png_atomic
from headforge.preprocess.report import contact_sheet, sample_report


@pytest.fixture(scope="module")
def model() -> ProceduralHeadModel:
    return ProceduralHeadModel()


def test_crop_rule_reproduces_the_project_camera_framing(model):
    """Heads seen by the project's own cameras must get back (almost) the full frame as crop."""
    generator = torch.Generator().manual_seed(4)
    count = 6
    shape = model.sample_shape(count, generator)
    expression = model.sample_expression(count, generator)
    landmarks = model(shape, expression).landmarks
    yaw = torch.linspace(-0.5, 0.5, count)
    pitch = torch.linspace(0.2, -0.2, count)
    cam2world = orbit_cam2world(yaw, pitch)
    pixels = project_points(landmarks, cam2world, intrinsics_matrix(FFHQ_FOCAL, batch=count))[0] * 256
    mean = model().landmarks[0]
    for i in range(count):
        box = crop_box_from_landmarks(pixels[i], mean, LANDMARK_FIT_WEIGHTS)
        assert abs(box.side / 256 - 1) < 0.08, box
        assert abs(box.center_x - 128) < 0.06 * 256 and abs(box.center_y - 128) < 0.06 * 256, box


def test_crop_image_and_landmark_coordinates_agree():
    image = np.zeros((100, 160, 3), dtype=np.uint8)
    image[40:44, 120:124] = 255  # a bright square centred at pixel (122, 42)
    box = CropBox(center_x=110.0, center_y=50.0, side=80.0)  # reaches past the right edge
    crop = crop_image(image, box, 40)
    position = landmarks_to_crop(torch.tensor([[122.0, 42.0]]), box)[0] * 40
    weights = crop.astype(np.float64).sum(-1)
    ys, xs = np.mgrid[0:40, 0:40]
    centroid = np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum() + 0.5
    assert np.allclose(centroid, position.numpy(), atol=0.6)
    assert crop.shape == (40, 40, 3)


def test_mediapipe_selection_picks_the_table_rows():
    points = torch.arange(478, dtype=torch.float32)[:, None].expand(478, 2)
    picked = mediapipe_to_ibug70(points)
    assert picked.shape == (70, 2) and picked[8, 0] == 152 and picked[68, 0] == 473
    with pytest.raises(ValueError):
        mediapipe_to_ibug70(torch.zeros(468, 2))


def test_hand_filter():
    box = np.array([10.0, 10.0, 50.0, 50.0])
    far = np.full((21, 2), 100.0)
    near = far.copy()
    near[:3] = 30.0
    assert not hand_covers_face(box, [far])
    assert hand_covers_face(box, [far, near])
    near[2] = 100.0
    assert not hand_covers_face(box, [near])  # two points inside are not enough


def test_clip_filter_thresholds():
    still = torch.zeros(6, 35), torch.zeros(6, 15)
    keep, stats = clip_is_expressive(*still, ClipThresholds())
    assert not keep and stats == {"expression_std": 0.0, "jaw_std": 0.0}
    pose = torch.zeros(6, 15)
    pose[:, 6] = torch.tensor([0.0, 0.1, 0.2, 0.1, 0.0, 0.1])
    assert clip_is_expressive(torch.zeros(6, 35), pose, ClipThresholds())[0]
    assert not clip_is_expressive(torch.zeros(3, 35), pose[:3], ClipThresholds())[0]  # too few frames


def test_box_smoothing_keeps_constant_and_linear_tracks():
    t = torch.arange(10, dtype=torch.float64)
    linear = torch.stack([t, 2 * t + 1, torch.full_like(t, 50.0)], dim=1)
    smoothed = smooth_boxes(linear, radius=2)
    assert torch.allclose(smoothed[2:-2], linear[2:-2])
    assert torch.allclose(smoothed[:, 2], linear[:, 2])
    jitter = linear.clone()
    jitter[5, 0] += 5.0
    assert float(smoothed[0, 0]) == pytest.approx((0 + 0 + 0 + 1 + 2) / 5)  # edge-clamped average
    assert abs(float(smooth_boxes(jitter)[5, 0] - linear[5, 0])) == pytest.approx(1.0)


def test_report_and_contact_sheet_shapes():
    crop = np.full((32, 32, 3), 100, dtype=np.uint8)
    normals = torch.zeros(16, 16, 3)
    normals[4:12, 4:12, 2] = -1.0
    cam2world = torch.eye(4)
    sh = torch.zeros(9, 3)
    sh[0] = 1.0
    report = sample_report(crop, np.full((70, 2), 0.5), np.full((70, 2), 0.4), normals, cam2world, sh)
    assert report.shape == (32, 96, 3) and report.dtype == np.uint8
    assert (report[16, 48 + 16] != 100).any()  # the mesh is blended in the middle panel
    sheet = contact_sheet([report] * 5, columns=2, thumb_width=48)
    assert sheet.shape == (3 * 16, 96, 3)


def test_atomic_writes_leave_no_temporaries(tmp_path):
    write_png_atomic(tmp_path / "a" / "x.png", np.zeros((4, 4, 3), dtype=np.uint8))
    write_json_atomic(tmp_path / "a" / "x.json", {"k": 1})
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "a" / "x.json", {"k": float("nan")})  # refused before writing
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json", "x.png"]
    assert (tmp_path / "a" / "x.json").read_text().replace(" ", "").replace("\n", "") == '{"k":1}'
    assert item_name(tmp_path / "d" / "e.jpg", tmp_path) == "d__e"


def test_landmark_rig_matches_a_flame_structured_model(tmp_path):
    """FLAME adds pose correctives and computes irises from the eye joints: the rig must agree."""
    from headforge.heads.flame import FlameHeadModel

    rng = np.random.default_rng(0)
    n_vertices, n_shape, n_expression = 40, 4, 3
    vertices = rng.normal(scale=0.05, size=(n_vertices, 3))
    weights = rng.uniform(size=(n_vertices, 5))
    weights[0], weights[1] = [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]  # eyeball vertices
    weights /= weights.sum(1, keepdims=True)
    regressor = np.zeros((5, n_vertices))
    regressor[0, 2:6], regressor[1, 6:8], regressor[2, 8:11] = 0.25, 0.5, 1 / 3
    regressor[3, 0] = regressor[4, 1] = 1.0
    np.savez(
        tmp_path / "flame.npz",
        v_template=vertices,
        f=np.array([[i, (i + 1) % n_vertices, (i + 2) % n_vertices] for i in range(n_vertices)]),
        shapedirs=rng.normal(scale=0.003, size=(n_vertices, 3, n_shape + n_expression)),
        posedirs=rng.normal(scale=0.002, size=(n_vertices * 3, 36)),
        J_regressor=regressor,
        kintree_table=np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
        weights=weights,
    )
    np.savez(
        tmp_path / "embedding.npz",
        lmk_face_idx=rng.integers(0, n_vertices, size=68),
        lmk_b_coords=rng.dirichlet(np.ones(3), size=68),
    )
    flame = FlameHeadModel.from_file(
        tmp_path / "flame.npz", n_shape_basis=n_shape, landmark_embedding=tmp_path / "embedding.npz"
    )
    generator = torch.Generator().manual_seed(1)
    shape = torch.randn(2, n_shape, generator=generator)
    expression = torch.randn(2, n_expression, generator=generator)
    pose = torch.randn(2, 15, generator=generator) * 0.2
    rig = LandmarkRig(flame)
    fast = rig.landmarks(shape.double(), expression.double(), pose.double())
    assert torch.allclose(fast.float(), flame(shape, expression, pose).landmarks, atol=1e-5)


def test_command_line_parses_and_reports_an_empty_folder(tmp_path, capsys):
    import argparse

    from headforge.preprocess import add_preprocess_parser

    parser = argparse.ArgumentParser()
    add_preprocess_parser(parser.add_subparsers())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    args = parser.parse_args(
        ["preprocess", "images", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "o")]
    )
    assert args.workers == 1 and args.resolution == 512
    assert args.run(args) == 1  # nothing kept
    assert '"inputs": 0' in capsys.readouterr().out
    assert (tmp_path / "o" / "summary.json").is_file()
    missing = parser.parse_args(
        ["preprocess", "videos", "--in", str(tmp_path / "nope"), "--out", str(tmp_path / "p")]
    )
    with pytest.raises(FileNotFoundError):
        missing.run(missing)
    flame = parser.parse_args(
        ["preprocess", "images", "--in", "i", "--out", "o", "--flame", "generic_model.pkl"]
    )
    with pytest.raises(ValueError, match="landmark embedding"):
        flame.run(flame)
