"""Tests for the FLAME loader (headforge.heads.flame) on small synthetic model files."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from headforge.heads import FlameFileError, FlameHeadModel, HeadModel
from headforge.heads.flame import DEFAULT_EYE_MIDPOINT

N_V, N_SHAPE, N_EXPR = 14, 6, 4
PARENTS = [-1, 0, 1, 1, 1]


def _synthetic_flame(seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny FLAME-structured model in metres (head ~0.2 m, eyes in front)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(scale=0.05, size=(N_V, 3))
    v[:2] = [[0.03, 0.03, 0.05], [-0.03, 0.03, 0.05]]  # vertices the eye joints regress to
    faces = np.array([[i, (i + 1) % N_V, (i + 2) % N_V] for i in range(N_V)], dtype=np.uint32)
    weights = rng.uniform(size=(N_V, 5))
    weights[0] = [0, 0, 0, 1, 0]  # eyeball vertices
    weights[1] = [0, 0, 0, 0, 1]
    weights /= weights.sum(1, keepdims=True)
    regressor = np.zeros((5, N_V))
    regressor[0, 2:6] = 0.25
    regressor[1, 6:8] = 0.5
    regressor[2, 8:11] = 1 / 3
    regressor[3, 0] = regressor[4, 1] = 1.0
    return {
        "v_template": v,
        "f": faces,
        "shapedirs": rng.normal(scale=0.003, size=(N_V, 3, N_SHAPE + N_EXPR)),
        "posedirs": rng.normal(scale=0.002, size=(N_V, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "weights": weights,
        "bs_style": "lbs",
    }


def _write_chumpy_pickle(path: Path, data: dict, monkeypatch: pytest.MonkeyPatch, chumpy_keys: tuple) -> None:
    """Pickle like FLAME's own files: some arrays wrapped in a class that lives at ``chumpy.ch.Ch``."""

    class Ch:
        pass

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module = types.ModuleType("chumpy.ch")
    module.Ch = Ch
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
        patch.setitem(sys.modules, "chumpy.ch", module)
        wrapped = dict(data)
        for key in chumpy_keys:
            obj = Ch.__new__(Ch)
            obj.__dict__.update({"x": data[key], "_dirty_vars": {"x"}, "_itr": None})
            wrapped[key] = obj
        with path.open("wb") as handle:
            pickle.dump(wrapped, handle, protocol=2)
    assert "chumpy" not in sys.modules  # the loader must work without it


@pytest.fixture()
def flame_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "generic_model.pkl"
    _write_chumpy_pickle(
        path, _synthetic_flame(), monkeypatch, ("v_template", "shapedirs", "posedirs", "weights")
    )
    return path


def _expected_posed(
    data: dict, shape: np.ndarray, expr: np.ndarray, pose: np.ndarray
) -> tuple[np.ndarray, ...]:
    """FLAME forward pass written out by hand in numpy (metres)."""
    dirs = data["shapedirs"]
    v = data["v_template"] + dirs[:, :, :N_SHAPE] @ shape + dirs[:, :, N_SHAPE:] @ expr
    joints = data["J_regressor"].toarray() @ v
    rots = Rotation.from_rotvec(pose.reshape(5, 3)).as_matrix()
    feature = np.concatenate([(rots[j] - np.eye(3)).ravel() for j in range(1, 5)])
    v_posed = v + (data["posedirs"].reshape(N_V * 3, 36) @ feature).reshape(N_V, 3)
    world = []
    for j, p in enumerate(PARENTS):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0.0)
        world.append(local if p < 0 else world[p] @ local)
    out = np.zeros_like(v)
    for i in range(N_V):
        blended = sum(
            data["weights"][i, j] * (world[j] @ np.append(v_posed[i] - joints[j], 1.0))[:3] for j in range(5)
        )
        out[i] = blended
    return out, np.stack([w[:3, 3] for w in world]), np.stack([w[:3, :3] for w in world])


def test_pickle_with_chumpy_objects_loads_and_matches_hand_lbs(flame_pickle: Path) -> None:
    data = _synthetic_flame()
    model = FlameHeadModel.from_file(
        flame_pickle, n_shape_basis=N_SHAPE, world_scale=2.0, world_offset=(0.1, -0.2, 0.3)
    )
    assert isinstance(model, HeadModel)
    assert model.n_shape == N_SHAPE and model.n_expression == N_EXPR and model.n_vertices == N_V
    rng = np.random.default_rng(5)
    shape, expr = rng.normal(size=N_SHAPE), rng.normal(size=N_EXPR)
    pose = rng.normal(scale=0.3, size=15)
    out = model(
        shape=torch.tensor(shape[None], dtype=torch.float32),
        expression=torch.tensor(expr[None], dtype=torch.float32),
        pose=torch.tensor(pose[None], dtype=torch.float32),
    )
    want_v, want_j, _ = _expected_posed(data, shape, expr, pose)
    offset = np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(out.vertices[0].numpy(), 2.0 * want_v + offset, atol=2e-6)
    np.testing.assert_allclose(out.joints[0].numpy(), 2.0 * want_j + offset, atol=2e-6)
    assert out.landmarks is None  # no embedding given


def test_npz_variant_matches_pickle(tmp_path: Path, flame_pickle: Path) -> None:
    data = _synthetic_flame()
    npz = tmp_path / "flame.npz"
    dense = {k: (v.toarray() if scipy.sparse.issparse(v) else v) for k, v in data.items() if k != "bs_style"}
    dense["posedirs"] = dense["posedirs"].reshape(N_V * 3, 36)  # the flattened layout is accepted too
    np.savez(npz, **dense)
    a = FlameHeadModel.from_file(flame_pickle, n_shape_basis=N_SHAPE)
    b = FlameHeadModel.from_file(npz, n_shape_basis=N_SHAPE)
    pose = torch.full((1, 15), 0.2)
    torch.testing.assert_close(a(pose=pose).vertices, b(pose=pose).vertices)


def test_default_world_transform_places_the_eyes(flame_pickle: Path) -> None:
    model = FlameHeadModel.from_file(flame_pickle, n_shape_basis=N_SHAPE)
    eyes = model().joints[0, 3:5].mean(0).numpy()
    np.testing.assert_allclose(eyes, DEFAULT_EYE_MIDPOINT, atol=1e-6)
    data = _synthetic_flame()
    span = np.ptp(model.v_template.numpy(), axis=0)
    np.testing.assert_allclose(span, 2.0 * np.ptp(data["v_template"], axis=0), rtol=1e-5)


def test_landmark_embedding_and_iris_centres(tmp_path: Path, flame_pickle: Path) -> None:
    rng = np.random.default_rng(2)
    face_idx = rng.integers(0, N_V, size=68)
    bary = rng.dirichlet(np.ones(3), size=68)
    emb = tmp_path / "landmark_embedding.npz"
    np.savez(emb, lmk_face_idx=face_idx, lmk_b_coords=bary)
    model = FlameHeadModel.from_file(
        flame_pickle,
        n_shape_basis=N_SHAPE,
        landmark_embedding=emb,
        world_offset=(0.0, 0.0, 0.0),
        world_scale=1.0,
    )
    pose = np.zeros(15)
    pose[9:12] = [0.0, 0.4, 0.0]  # left eye looks towards +x
    out = model(pose=torch.tensor(pose[None], dtype=torch.float32))
    data = _synthetic_flame()
    posed, joints, rots = _expected_posed(data, np.zeros(N_SHAPE), np.zeros(N_EXPR), pose)
    faces = data["f"].astype(np.int64)
    want = (posed[faces[face_idx]] * bary[..., None]).sum(1)
    np.testing.assert_allclose(out.landmarks[0, :68].numpy(), want, atol=1e-6)
    # Iris centre: eye joint + posed gaze * eyeball radius (vertex 0 is the only left-eyeball vertex).
    radius = np.linalg.norm(data["v_template"][0] - joints[3])
    np.testing.assert_allclose(out.landmarks[0, 68].numpy(), joints[3] + rots[3][:, 2] * radius, atol=1e-6)


def test_51_point_embedding_is_rejected_with_an_explanation(tmp_path: Path, flame_pickle: Path) -> None:
    emb = tmp_path / "static.npz"
    np.savez(emb, lmk_face_idx=np.zeros(51, dtype=np.int64), lmk_b_coords=np.full((51, 3), 1 / 3))
    with pytest.raises(FlameFileError, match=r"static.npz.*51 landmarks.*68"):
        FlameHeadModel.from_file(flame_pickle, n_shape_basis=N_SHAPE, landmark_embedding=emb)


def test_missing_keys_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _synthetic_flame()
    del data["weights"]
    path = tmp_path / "broken.pkl"
    _write_chumpy_pickle(path, data, monkeypatch, ("v_template",))
    with pytest.raises(FlameFileError, match=r"broken.pkl.*missing key.*weights"):
        FlameHeadModel.from_file(path, n_shape_basis=N_SHAPE)


def test_wrong_shapes_are_reported(tmp_path: Path) -> None:
    data = _synthetic_flame()
    dense = {k: (v.toarray() if scipy.sparse.issparse(v) else v) for k, v in data.items() if k != "bs_style"}
    dense["shapedirs"] = dense["shapedirs"][:5]
    path = tmp_path / "bad_shape.npz"
    np.savez(path, **dense)
    with pytest.raises(FlameFileError, match=r"bad_shape.npz.*'shapedirs' must be"):
        FlameHeadModel.from_file(path, n_shape_basis=N_SHAPE)
    dense = {k: (v.toarray() if scipy.sparse.issparse(v) else v) for k, v in data.items() if k != "bs_style"}
    with pytest.raises(FlameFileError, match="identity components"):
        np.savez(path, **dense)
        FlameHeadModel.from_file(path)  # default 300 identity components, the file has 10 in all


def test_not_a_pickle_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"this is not a pickle at all")
    with pytest.raises(FlameFileError, match="junk.pkl"):
        FlameHeadModel.from_file(junk)
    with pytest.raises(FlameFileError, match="nothing.pkl.*not found"):
        FlameHeadModel.from_file(tmp_path / "nothing.pkl")


def test_unsafe_globals_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(FlameFileError, match=r"evil.pkl.*os.system.*not allowed"):
        FlameHeadModel.from_file(evil)
    assert not marker.exists()


def test_chumpy_expression_without_value_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _synthetic_flame()
    path = tmp_path / "expr.pkl"
    _write_chumpy_pickle(path, data, monkeypatch, ("weights",))
    raw = path.read_bytes().replace(b"X\x01\x00\x00\x00x", b"X\x01\x00\x00\x00y")  # rename the stored 'x'
    path.write_bytes(raw)
    with pytest.raises(FlameFileError, match=r"expr.pkl.*'weights'.*chumpy"):
        FlameHeadModel.from_file(path, n_shape_basis=N_SHAPE)


def test_npz_with_object_arrays_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, v_template=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FlameFileError, match="objects.npz.*object arrays"):
        FlameHeadModel.from_file(path)
