"""Tests for the procedural head model (headforge.heads.procedural)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from headforge.heads import POSE_DIM, POSE_SLICES, HeadModel, ProceduralHeadModel
from headforge.heads.procedural import EXPRESSION_NAMES, REGION_NAMES, SHAPE_NAMES
from headforge.heads.procedural.template import build_template

# sha256 of the template vertices rounded to 1e-5 (int64 of round(v * 1e5)); update only on purpose.
TEMPLATE_CHECKSUM = "1b0974d96174646717a3ba28414be8be907201fc6eeb13fd4995ed6714aaf8ee"


@pytest.fixture(scope="module")
def model() -> ProceduralHeadModel:
    return ProceduralHeadModel()


def _expr(model: ProceduralHeadModel, **values: float) -> torch.Tensor:
    e = torch.zeros(1, model.n_expression)
    for name, value in values.items():
        e[0, model.expression_names.index(name)] = value
    return e


def _shape(model: ProceduralHeadModel, **values: float) -> torch.Tensor:
    s = torch.zeros(1, model.n_shape)
    for name, value in values.items():
        s[0, model.shape_names.index(name)] = value
    return s


def _faces(model: ProceduralHeadModel, *parts: str) -> np.ndarray:
    return np.concatenate([model.faces[model.part_face_slices[p]].numpy() for p in parts])


def _edge_report(faces: np.ndarray) -> tuple[set[int], int]:
    """(set of undirected edge-use counts, max uses of one directed edge)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, undirected_counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    _, directed_counts = np.unique(directed, axis=0, return_counts=True)
    return set(undirected_counts.tolist()), int(directed_counts.max())


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


SURFACE_PARTS = ("head", "left_eye_socket", "right_eye_socket", "mouth_bag")
CLOSED_PARTS = ("left_eyeball", "right_eyeball", "upper_teeth", "lower_teeth", "tongue")


def test_is_a_head_model_with_documented_sizes(model: ProceduralHeadModel) -> None:
    assert isinstance(model, HeadModel)
    assert 5000 <= model.n_vertices <= 20000
    assert model.n_shape == len(SHAPE_NAMES) >= 50
    assert model.n_expression == len(EXPRESSION_NAMES) >= 30
    assert len(set(model.shape_names)) == model.n_shape
    assert len(set(model.expression_names)) == model.n_expression
    for name in (
        "jaw_open",
        "smile",
        "smile_left",
        "smile_right",
        "frown",
        "blink_left",
        "blink_right",
        "pout",
    ):
        assert name in model.expression_names
    assert model.faces.dtype == torch.long and model.faces.shape[1] == 3
    assert int(model.faces.max()) == model.n_vertices - 1


def test_head_surface_is_closed_oriented_and_genus_zero(model: ProceduralHeadModel) -> None:
    faces = _faces(model, *SURFACE_PARTS)
    counts, max_directed = _edge_report(faces)
    assert counts == {2}  # every edge shared by exactly two faces
    assert max_directed == 1  # neighbours traverse shared edges in opposite directions
    verts = model.v_template.double().numpy()
    assert _signed_volume(verts, faces) > 0.02  # outward normals
    n_v = len(np.unique(faces))
    n_e = len(faces) * 3 // 2
    assert n_v - n_e + len(faces) == 2


@pytest.mark.parametrize("part", CLOSED_PARTS)
def test_parts_are_closed_and_outward(model: ProceduralHeadModel, part: str) -> None:
    faces = _faces(model, part)
    counts, max_directed = _edge_report(faces)
    assert counts == {2} and max_directed == 1
    assert _signed_volume(model.v_template.double().numpy(), faces) > 0


def test_construction_is_deterministic() -> None:
    first = build_template.__wrapped__()
    second = build_template.__wrapped__()
    np.testing.assert_array_equal(first.vertices, second.vertices)
    np.testing.assert_array_equal(first.shapedirs, second.shapedirs)
    np.testing.assert_array_equal(first.exprdirs, second.exprdirs)
    rounded = np.round(first.vertices * 1e5).astype(np.int64)
    assert hashlib.sha256(rounded.tobytes()).hexdigest() == TEMPLATE_CHECKSUM


def test_zero_parameters_give_the_template(model: ProceduralHeadModel) -> None:
    out = model()
    assert out.vertices.shape == (1, model.n_vertices, 3)
    assert out.joints.shape == (1, 5, 3)
    assert out.landmarks.shape == (1, 70, 3)
    torch.testing.assert_close(out.vertices[0], model.v_template, atol=1e-6, rtol=0)
    params = model.zero_params(2)
    out2 = model(**params)
    torch.testing.assert_close(out2.vertices[1], model.v_template, atol=1e-6, rtol=0)


def test_template_is_mirror_symmetric(model: ProceduralHeadModel) -> None:
    verts = model.v_template.double().numpy()
    mirrored = verts * np.array([-1.0, 1.0, 1.0])
    dist, index = cKDTree(verts).query(mirrored)
    assert dist.max() < 1e-6
    regions = model.vertex_regions.numpy()
    assert np.array_equal(regions, regions[index])


def test_world_frame_matches_ffhq_framing(model: ProceduralHeadModel) -> None:
    verts = model.v_template.numpy()
    head = verts[model.part_vertex_slices["head"]]
    lmk = model().landmarks[0].numpy()
    chin_y = lmk[8, 1]
    crown_y = head[:, 1].max()
    assert 0.45 <= crown_y - chin_y <= 0.5
    assert 0.25 <= lmk[30, 2] <= 0.3  # nose tip
    # The nose tip is the front-most point of the head, on the midline.
    assert abs(head[head[:, 2].argmax(), 0]) < 1e-6 and head[:, 2].max() == pytest.approx(
        lmk[30, 2], abs=0.01
    )
    assert np.all(np.abs(verts) < 0.5)
    assert abs(0.5 * (crown_y + chin_y)) < 0.05  # head centred near the origin
    assert lmk[36:48, 1].mean() == pytest.approx(0.02, abs=0.01)


def test_landmarks_are_on_the_surface_in_ibug_order(model: ProceduralHeadModel) -> None:
    lmk = model().landmarks[0].numpy()
    skin = model.v_template.numpy()[: model.part_vertex_slices["mouth_bag"].stop]
    dist, _ = cKDTree(skin).query(lmk[:68])
    assert dist.max() < 1e-6
    eyeballs = np.concatenate(
        [model.v_template[model.part_vertex_slices[p]].numpy() for p in ("left_eyeball", "right_eyeball")]
    )
    assert cKDTree(eyeballs).query(lmk[68:])[0].max() < 1e-6
    assert lmk[0, 0] < -0.1 and lmk[16, 0] > 0.1 and abs(lmk[8, 0]) < 1e-6
    assert lmk[8, 1] < lmk[:17, 1].min() + 0.008  # the chin closes the contour at the bottom
    assert np.all(np.diff(lmk[0:7, 1]) < 0) and np.all(np.diff(lmk[10:17, 1]) > 0)
    assert np.all(np.diff(lmk[17:22, 0]) > 0) and np.all(np.diff(lmk[22:27, 0]) > 0)
    assert np.all(np.diff(lmk[27:31, 1]) < 0)  # bridge runs down to the tip
    assert lmk[36, 0] < lmk[39, 0] < 0 < lmk[42, 0] < lmk[45, 0]
    assert lmk[48, 0] < 0 < lmk[54, 0]
    assert lmk[68, 0] > 0 > lmk[69, 0]  # left iris at +x (the subject's left)
    assert lmk[68, 2] > lmk[45, 2] - 0.02


def test_jaw_open_moves_the_lower_face_and_parts_the_lips(model: ProceduralHeadModel) -> None:
    rest = model()
    opened = model(expression=_expr(model, jaw_open=1.0))
    delta = (opened.vertices - rest.vertices)[0].numpy()
    lmk0, lmk1 = rest.landmarks[0].numpy(), opened.landmarks[0].numpy()
    assert lmk1[8, 1] - lmk0[8, 1] < -0.01  # chin (menton) down
    verts = model.v_template.numpy()
    chin_front = (verts[:, 1] < -0.17) & (verts[:, 2] > 0.19) & (np.abs(verts[:, 0]) < 0.02)
    assert delta[chin_front, 1].mean() < -0.035
    assert lmk1[57, 1] - lmk0[57, 1] < -0.02  # lower lip down
    gap0 = np.linalg.norm(lmk0[62] - lmk0[66])
    gap1 = np.linalg.norm(lmk1[62] - lmk1[66])
    assert gap0 < 1e-3 and gap1 > 0.03
    forehead = (verts[:, 1] > 0.1) & (verts[:, 2] > 0.1)
    assert np.abs(delta[forehead]).max() < 1e-6
    lower = model.part_vertex_slices["lower_teeth"]
    upper = model.part_vertex_slices["upper_teeth"]
    assert delta[lower, 1].mean() < -0.02
    assert np.abs(delta[upper]).max() < 1e-6


def _front_visible(vertices: np.ndarray, faces: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Orthographic view from +z: which query vertices are in front of every triangle covering them."""
    tri = vertices[faces]
    centre = tri[:, :, :2].mean(axis=1)
    reach = np.linalg.norm(tri[:, :, :2] - centre[:, None], axis=2).max()
    tree = cKDTree(centre)
    visible = np.ones(len(query), dtype=bool)
    for n, q in enumerate(vertices[query]):
        cand = np.asarray(tree.query_ball_point(q[:2], reach), dtype=np.int64)
        if cand.size == 0:
            continue
        a, b, c = tri[cand, 0], tri[cand, 1], tri[cand, 2]
        e1, e2, rel = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2], q[:2] - a[:, :2]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        det = np.where(np.abs(det) < 1e-14, np.nan, det)
        w1 = (rel[:, 0] * e2[:, 1] - rel[:, 1] * e2[:, 0]) / det
        w2 = (e1[:, 0] * rel[:, 1] - e1[:, 1] * rel[:, 0]) / det
        inside = (w1 >= 0) & (w2 >= 0) & (w1 + w2 <= 1)
        if inside.any():
            z = (a[:, 2] + w1 * (b[:, 2] - a[:, 2]) + w2 * (c[:, 2] - a[:, 2]))[inside]
            visible[n] = q[2] > z.max() + 1e-5
    return visible


def test_open_mouth_exposes_the_mouth_interior(model: ProceduralHeadModel) -> None:
    interior = np.flatnonzero(model.region_mask("mouth_interior").numpy())
    skin_faces = _faces(model, "head")
    for expression, visible in ((None, False), (_expr(model, jaw_open=1.0), True)):
        verts = model(expression=expression).vertices[0].numpy()
        shown = _front_visible(verts, skin_faces, interior)
        assert shown.any() == visible


def test_blink_left_closes_only_the_left_eye(model: ProceduralHeadModel) -> None:
    rest = model().landmarks[0].numpy()
    closed = model(expression=_expr(model, blink_left=1.0)).landmarks[0].numpy()
    for upper, lower in ((43, 47), (44, 46)):
        assert np.linalg.norm(rest[upper] - rest[lower]) > 0.01
        assert np.linalg.norm(closed[upper] - closed[lower]) < 1e-3
    np.testing.assert_allclose(closed[36:42], rest[36:42], atol=1e-6)


def test_eye_pose_rotates_eyeball_and_iris_about_the_eye_centre(model: ProceduralHeadModel) -> None:
    pose = torch.zeros(1, POSE_DIM)
    pose[0, POSE_SLICES["left_eye"]] = torch.tensor([0.0, 0.3, 0.0])
    rest, turned = model(), model(pose=pose)
    centre = rest.joints[0, 3].numpy()
    ball = model.part_vertex_slices["left_eyeball"]
    v0 = rest.vertices[0, ball].numpy() - centre
    v1 = turned.vertices[0, ball].numpy() - centre
    np.testing.assert_allclose(np.linalg.norm(v1, axis=1), np.linalg.norm(v0, axis=1), atol=1e-6)
    iris0 = rest.landmarks[0, 68].numpy() - centre
    iris1 = turned.landmarks[0, 68].numpy() - centre
    angle = np.arccos(iris0 @ iris1 / np.linalg.norm(iris0) / np.linalg.norm(iris1))
    assert angle == pytest.approx(0.3, abs=1e-4)
    assert iris1[0] > iris0[0]  # positive yaw looks towards +x
    right = model.part_vertex_slices["right_eyeball"]
    torch.testing.assert_close(turned.vertices[0, right], rest.vertices[0, right], atol=1e-6, rtol=0)


def _local_ratio(model: ProceduralHeadModel, dirs: torch.Tensor, region: np.ndarray) -> float:
    norm = dirs.norm(dim=-1).numpy()
    return float(norm[region].mean() / max(norm[~region].mean(), 1e-12))


@pytest.mark.parametrize("name", [n for n in SHAPE_NAMES if n.startswith("nose") or n == "nostril_flare"])
def test_nose_components_move_the_nose(model: ProceduralHeadModel, name: str) -> None:
    nose = model.region_mask("nose").numpy()
    k = model.shape_names.index(name)
    assert _local_ratio(model, model.shapedirs[..., k], nose) > 5.0


@pytest.mark.parametrize(
    "name, region",
    [("smile_left", "lips"), ("pout", "lips"), ("lip_press", "lips"), ("brow_lower_left", "brows")],
)
def test_expression_components_act_where_named(model: ProceduralHeadModel, name: str, region: str) -> None:
    k = model.expression_names.index(name)
    assert _local_ratio(model, model.exprdirs[..., k], model.region_mask(region).numpy()) > 5.0


def test_one_sided_components_stay_on_their_side(model: ProceduralHeadModel) -> None:
    verts = model.v_template.numpy()
    for name, sign in (
        ("smile_left", 1),
        ("smile_right", -1),
        ("brow_inner_raise_left", 1),
        ("blink_right", -1),
    ):
        dirs = model.exprdirs[..., model.expression_names.index(name)].norm(dim=-1).numpy()
        same = verts[:, 0] * sign > 0.01
        other = verts[:, 0] * sign < -0.01
        assert dirs[other].max() < 0.1 * dirs[same].max()
    lmk0 = model().landmarks[0].numpy()
    smile = model(expression=_expr(model, smile_left=1.0)).landmarks[0].numpy()
    assert smile[54, 1] - lmk0[54, 1] > 0.005 and abs(smile[48, 1] - lmk0[48, 1]) < 1e-4


def test_uv_layout_is_in_range_and_free_of_overlaps(model: ProceduralHeadModel) -> None:
    uv = model.uv_coords.double().numpy()
    tri = uv[model.uv_faces.numpy()]
    assert model.uv_faces.shape == model.faces.shape
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    assert area.min() > -1e-12 and (area > 0).mean() > 0.999
    # Rasterised overlap count: sample points covered by more than one triangle.
    res = 256
    lo = np.floor(tri.min(axis=1) * res).astype(int)
    size = 12
    assert (np.ceil(tri.max(axis=1) * res).astype(int) - lo).max() <= size
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1).reshape(-1, 2)
    px = (lo[:, None, :] + grid[None] + 0.5) / res  # (F, S, 2) candidate sample points
    d = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(d) > 1e-14
    rel = px - tri[:, None, 0]
    w1 = (rel[..., 0] * e2[:, None, 1] - rel[..., 1] * e2[:, None, 0]) / np.where(ok, d, 1.0)[:, None]
    w2 = (e1[:, None, 0] * rel[..., 1] - e1[:, None, 1] * rel[..., 0]) / np.where(ok, d, 1.0)[:, None]
    eps = 1e-9
    inside = (w1 > eps) & (w2 > eps) & (1.0 - w1 - w2 > eps) & ok[:, None]
    keys = (lo[:, None, 0] + grid[None, :, 0]) * 10000 + (lo[:, None, 1] + grid[None, :, 1])
    _, cover = np.unique(keys[inside], return_counts=True)
    assert cover.size > 0.5 * res * res  # the atlas is reasonably filled
    assert cover.max() == 1


def test_regions(model: ProceduralHeadModel) -> None:
    regions = model.vertex_regions.numpy()
    assert set(range(len(REGION_NAMES))) == set(np.unique(regions).tolist())
    eyes = model.region_mask("eyes").numpy()
    expected = sum(model.region_mask(n).numpy() for n in ("sclera", "iris", "pupil")).astype(bool)
    assert np.array_equal(eyes, expected)
    ball = np.zeros_like(eyes)
    for p in ("left_eyeball", "right_eyeball"):
        ball[model.part_vertex_slices[p]] = True
    assert np.array_equal(eyes, ball)
    verts = model.v_template.numpy()
    assert verts[model.region_mask("hair").numpy(), 1].min() > -0.15
    assert verts[model.region_mask("hair").numpy(), 1].max() == pytest.approx(verts[:, 1].max())
    assert np.abs(verts[model.region_mask("lips").numpy(), 1] + 0.125).max() < 0.03
    assert verts[model.region_mask("neck").numpy(), 1].max() < -0.1
    with pytest.raises(KeyError, match="unknown region"):
        model.region_mask("tentacles")


def test_skinning_weights_and_global_rotation(model: ProceduralHeadModel) -> None:
    torch.testing.assert_close(model.lbs_weights.sum(1), torch.ones(model.n_vertices), atol=1e-6, rtol=0)
    pose = torch.zeros(1, POSE_DIM)
    pose[0, :3] = torch.tensor([0.2, -0.5, 0.1])
    out = model(pose=pose)
    root = model().joints[0, 0]
    rel0 = model.v_template - root
    rel1 = out.vertices[0] - root
    torch.testing.assert_close(rel1.norm(dim=1), rel0.norm(dim=1), atol=2e-6, rtol=0)
    # Rigid: pairwise distances preserved on a sample of vertices.
    idx = torch.arange(0, model.n_vertices, 97)
    exact = "donot_use_mm_for_euclid_dist"
    torch.testing.assert_close(
        torch.cdist(rel1[idx], rel1[idx], compute_mode=exact),
        torch.cdist(rel0[idx], rel0[idx], compute_mode=exact),
        atol=5e-6,
        rtol=0,
    )


def test_jaw_pose_opens_the_mouth_like_the_expression(model: ProceduralHeadModel) -> None:
    pose = torch.zeros(1, POSE_DIM)
    pose[0, POSE_SLICES["jaw"]] = torch.tensor([0.3, 0.0, 0.0])
    by_pose = model(pose=pose).landmarks[0].numpy()
    by_expr = model(expression=_expr(model, jaw_open=1.0)).landmarks[0].numpy()
    np.testing.assert_allclose(by_pose[[8, 57, 66]], by_expr[[8, 57, 66]], atol=2e-3)


def test_sampled_identities_are_plausible(model: ProceduralHeadModel) -> None:
    gen = torch.Generator().manual_seed(7)
    shape = model.sample_shape(6, gen)
    assert torch.equal(shape, model.sample_shape(6, torch.Generator().manual_seed(7)))
    out = model(shape=shape, expression=model.sample_expression(6, gen))
    verts = out.vertices.double().numpy()
    assert np.isfinite(verts).all() and np.abs(verts).max() < 0.5
    faces = _faces(model, *SURFACE_PARTS)
    base = _signed_volume(model.v_template.double().numpy(), faces)
    for v in verts:
        assert 0.8 * base < _signed_volume(v, faces) < 1.2 * base


def test_expression_sampling_is_sparse_non_negative_and_seeded(model: ProceduralHeadModel) -> None:
    e1 = model.sample_expression(64, torch.Generator().manual_seed(3))
    e2 = model.sample_expression(64, torch.Generator().manual_seed(3))
    assert torch.equal(e1, e2)
    assert (e1 >= 0).all() and 0.05 < (e1 > 0).float().mean() < 0.5
    assert model.sample_pose(4, torch.Generator().manual_seed(0)).shape == (4, POSE_DIM)


def test_configurable_dimensions_and_batching() -> None:
    small = ProceduralHeadModel(n_shape=10, n_expression=5)
    assert small.n_shape == 10 and small.n_expression == 5 and len(small.shape_names) == 10
    out = small(shape=torch.ones(3, 10) * 0.5)
    assert out.vertices.shape == (3, small.n_vertices, 3)
    with pytest.raises(ValueError, match="n_shape"):
        ProceduralHeadModel(n_shape=1000)
    with pytest.raises(ValueError, match="shape"):
        small(shape=torch.zeros(2, 11))


def test_forward_is_differentiable(model: ProceduralHeadModel) -> None:
    shape = torch.zeros(1, model.n_shape, requires_grad=True)
    pose = torch.zeros(1, POSE_DIM, requires_grad=True)
    out = model(shape=shape, pose=pose)
    out.landmarks.sum().backward()
    assert shape.grad is not None and shape.grad.abs().sum() > 0
    assert pose.grad is not None and torch.isfinite(pose.grad).all()
