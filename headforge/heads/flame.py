"""``FlameHeadModel``: FLAME behind the ``HeadModel`` interface, from a user-supplied file.

headforge ships no FLAME data (it has its own licence); point
``FlameHeadModel.from_file`` at your ``generic_model.pkl`` /
``flame2023.pkl`` (or an npz with the same keys). Required keys:
``v_template`` (V, 3), ``f`` (F, 3), ``shapedirs`` (V, 3, S + E) with the
identity components first, ``posedirs`` (V, 3, 36) / (V*3, 36) / (36, V*3),
``J_regressor`` (5, V) dense or scipy sparse, ``kintree_table`` (2, 5),
``weights`` (V, 5).

World frame: FLAME is in metres with +y up and the face towards +z. Vertices
are mapped by ``p' = world_scale * p + world_offset``; the default scale 2.0
matches the procedural head (1 mm ~ 0.002 units) and the default offset puts
the midpoint of the two eye joints at (0, 0.02, 0.178), where the procedural
head has its eyes. Both are baked into the buffers (exact, because the joint
regressor's rows sum to one and LBS commutes with a uniform scale + shift).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from headforge.heads.base import HeadModel, landmarks_from_barycentric
from headforge.heads.flame_io import FlameFileError, load_arrays, safe_unpickle

__all__ = ["FlameHeadModel", "FlameFileError", "load_landmark_embedding", "DEFAULT_EYE_MIDPOINT"]

REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
#: Where the default world offset puts the midpoint of FLAME's two eye joints.
DEFAULT_EYE_MIDPOINT = (0.0, 0.02, 0.178)
_N_JOINTS = 5


def _array(data: dict[str, Any], key: str, path: Path) -> np.ndarray:
    value = data[key]
    if scipy.sparse.issparse(value):
        value = value.toarray()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise FlameFileError(f"{path}: entry '{key}' is not numeric ({type(value).__name__})") from err


def _check(cond: bool, path: Path, message: str) -> None:
    if not cond:
        raise FlameFileError(f"{path}: {message}")


def _parse_model(data: dict[str, Any], path: Path, n_shape_basis: int) -> dict[str, np.ndarray]:
    """Validate and normalise FLAME arrays (float64 numpy, posedirs as (36, V*3))."""
    missing = [key for key in REQUIRED_KEYS if key not in data]
    _check(not missing, path, f"missing key(s) {missing}")
    v = _array(data, "v_template", path)
    _check(v.ndim == 2 and v.shape[1] == 3, path, f"'v_template' must be (V, 3), got {v.shape}")
    n_v = v.shape[0]
    faces = np.asarray(data["f"])
    _check(faces.ndim == 2 and faces.shape[1] == 3, path, f"'f' must be (F, 3), got {faces.shape}")
    _check(faces.size > 0 and faces.min() >= 0 and faces.max() < n_v, path, "'f' indexes missing vertices")
    dirs = _array(data, "shapedirs", path)
    _check(
        dirs.ndim == 3 and dirs.shape[:2] == (n_v, 3),
        path,
        f"'shapedirs' must be (V={n_v}, 3, K), got {dirs.shape}",
    )
    _check(
        0 < n_shape_basis <= dirs.shape[2],
        path,
        f"'shapedirs' has {dirs.shape[2]} components, fewer than the {n_shape_basis} identity components "
        "expected "
        "(set n_shape_basis)",
    )
    posedirs = _array(data, "posedirs", path)
    if posedirs.shape == (n_v, 3, 36):
        posedirs = posedirs.reshape(n_v * 3, 36).T
    elif posedirs.shape == (n_v * 3, 36):
        posedirs = posedirs.T
    _check(
        posedirs.shape == (36, n_v * 3),
        path,
        f"'posedirs' must be (V, 3, 36), (V*3, 36) or (36, V*3) with V={n_v}, got {posedirs.shape}",
    )
    regressor = _array(data, "J_regressor", path)
    _check(
        regressor.shape == (_N_JOINTS, n_v),
        path,
        f"'J_regressor' must be ({_N_JOINTS}, V={n_v}), got {regressor.shape}",
    )
    kintree = np.asarray(data["kintree_table"]).astype(np.int64)
    _check(
        kintree.shape == (2, _N_JOINTS),
        path,
        f"'kintree_table' must be (2, {_N_JOINTS}), got {kintree.shape}",
    )
    order = np.argsort(kintree[1])
    _check(
        np.array_equal(kintree[1][order], np.arange(_N_JOINTS)),
        path,
        "'kintree_table' joint ids must be 0..4",
    )
    parents = kintree[0][order].copy()
    parents[0] = -1
    _check(
        all(0 <= p < j for j, p in enumerate(parents) if j > 0),
        path,
        f"'kintree_table' parents must precede their children, got {parents.tolist()}",
    )
    weights = _array(data, "weights", path)
    _check(
        weights.shape == (n_v, _N_JOINTS),
        path,
        f"'weights' must be (V={n_v}, {_N_JOINTS}), got {weights.shape}",
    )
    return {
        "v_template": v,
        "faces": faces.astype(np.int64),
        "shapedirs": dirs[:, :, :n_shape_basis],
        "exprdirs": dirs[:, :, n_shape_basis:],
        "posedirs": posedirs,
        "J_regressor": regressor,
        "parents": parents,
        "weights": weights,
    }


def load_landmark_embedding(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 68-point landmark embedding: face indices (68,) and barycentric coordinates (68, 3).

    Accepts npz or pickle files with ``lmk_face_idx`` / ``lmk_b_coords`` (68
    entries) or ``full_lmk_faces_idx`` / ``full_lmk_bary_coords`` (DECA).
    The 51-point static embedding alone does not define the jaw contour and
    is rejected with an explanation.
    """
    path = Path(path)
    data = load_arrays(path) if path.suffix == ".npz" else safe_unpickle(path)
    if not isinstance(data, dict):
        raise FlameFileError(f"{path}: expected a dict with landmark arrays")
    for face_key, bary_key in (
        ("lmk_face_idx", "lmk_b_coords"),
        ("full_lmk_faces_idx", "full_lmk_bary_coords"),
    ):
        if face_key in data and bary_key in data:
            faces = np.asarray(data[face_key]).reshape(-1).astype(np.int64)
            bary = np.asarray(data[bary_key], dtype=np.float64).reshape(-1, 3)
            if faces.shape[0] != bary.shape[0]:
                raise FlameFileError(
                    f"{path}: {faces.shape[0]} landmark faces but {bary.shape[0]} barycentric rows"
                )
            if faces.shape[0] != 68:
                raise FlameFileError(
                    f"{path}: the embedding has {faces.shape[0]} landmarks; 68 are needed (the 51-point "
                    "static "
                    "embedding lacks the jaw contour, use one with 68 points such as full_lmk_faces_idx)"
                )
            return faces, bary
    raise FlameFileError(f"{path}: no 'lmk_face_idx'/'lmk_b_coords' (or 'full_lmk_*') arrays")


class FlameHeadModel(HeadModel):
    """FLAME with shape / expression blendshapes, pose correctives and LBS over 5 joints.

    Build with ``FlameHeadModel.from_file``. Landmarks: the 68 points from the
    embedding (if given) + iris centres = each eye joint pushed along its posed
    gaze (+z) by the eyeball radius (mean distance of the vertices skinned to
    that eye from its joint). Without an embedding, ``landmarks`` is None.
    Regions: "skin" and "eyes" (vertices driven by an eye joint). UVs come
    from an optional npz with ``vt`` (T, 2) and ``ft`` (F, 3); otherwise
    ``uv_coords`` / ``uv_faces`` are None.
    """

    REGION_NAMES = ("skin", "eyes")

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        n_shape: int,
        n_expression: int,
        world_scale: float,
        world_offset: np.ndarray,
        landmarks: tuple[np.ndarray, np.ndarray] | None,
        uv: tuple[np.ndarray, np.ndarray] | None,
        source: str,
    ) -> None:
        super().__init__()
        f32 = torch.float32
        s = float(world_scale)
        self.source = source
        self.register_buffer("v_template", torch.tensor(s * arrays["v_template"] + world_offset, dtype=f32))
        self.register_buffer("shapedirs", torch.tensor(s * arrays["shapedirs"][:, :, :n_shape], dtype=f32))
        self.register_buffer("exprdirs", torch.tensor(s * arrays["exprdirs"][:, :, :n_expression], dtype=f32))
        self.register_buffer("posedirs", torch.tensor(s * arrays["posedirs"], dtype=f32))
        self.register_buffer("J_regressor", torch.tensor(arrays["J_regressor"], dtype=f32))
        self.register_buffer("parents", torch.tensor(arrays["parents"], dtype=torch.long))
        self.register_buffer("lbs_weights", torch.tensor(arrays["weights"], dtype=f32))
        self.register_buffer("faces", torch.tensor(arrays["faces"], dtype=torch.long))
        eye_vertex = np.isin(arrays["weights"].argmax(axis=1), (3, 4))
        self.register_buffer("vertex_regions", torch.tensor(eye_vertex.astype(np.int64)))
        self.shape_names = tuple(f"shape_{k:03d}" for k in range(n_shape))
        self.expression_names = tuple(f"expression_{k:03d}" for k in range(n_expression))
        # Eyeball radius per eye joint, for the iris-centre landmarks.
        v = self.v_template.double().numpy()
        joints = arrays["J_regressor"] @ v
        radii = []
        for joint in (3, 4):
            mine = arrays["weights"][:, joint] > 0.5
            radii.append(float(np.linalg.norm(v[mine] - joints[joint], axis=1).mean()) if mine.any() else 0.0)
        self.register_buffer("eye_radius", torch.tensor(radii, dtype=f32))
        if landmarks is not None:
            face_idx, bary = landmarks
            if face_idx.max() >= arrays["faces"].shape[0]:
                raise FlameFileError(
                    f"{source}: landmark embedding indexes faces beyond the model's "
                    f"{arrays['faces'].shape[0]}"
                )
            self.register_buffer(
                "landmark_vertex_ids", torch.tensor(arrays["faces"][face_idx], dtype=torch.long)
            )
            self.register_buffer("landmark_weights", torch.tensor(bary, dtype=f32))
        else:
            self.landmark_vertex_ids = None
        if uv is not None:
            self.register_buffer("uv_coords", torch.tensor(uv[0], dtype=f32))
            self.register_buffer("uv_faces", torch.tensor(uv[1], dtype=torch.long))
        else:
            self.uv_coords = None
            self.uv_faces = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        n_shape: int | None = None,
        n_expression: int | None = None,
        n_shape_basis: int = 300,
        landmark_embedding: str | Path | None = None,
        uv_file: str | Path | None = None,
        world_scale: float = 2.0,
        world_offset: tuple[float, float, float] | None = None,
    ) -> FlameHeadModel:
        """Load a FLAME model file (pickle or npz).

        Args:
            path: the model file.
            n_shape / n_expression: components to keep (default: all in the file).
            n_shape_basis: how many of ``shapedirs``' components are identity
                components (FLAME: 300); the rest are expression components.
            landmark_embedding: optional 68-point embedding file (``load_landmark_embedding``).
            uv_file: optional npz with ``vt`` (T, 2) and ``ft`` (F, 3).
            world_scale / world_offset: metres -> world units (see module docstring);
                ``world_offset=None`` puts the eye-joint midpoint at ``DEFAULT_EYE_MIDPOINT``.

        Raises:
            FlameFileError: unreadable, unsafe or malformed files (the message names the file and
                the problem).
        """
        path = Path(path)
        arrays = _parse_model(load_arrays(path), path, n_shape_basis)
        n_shape = arrays["shapedirs"].shape[2] if n_shape is None else n_shape
        n_expression = arrays["exprdirs"].shape[2] if n_expression is None else n_expression
        if not 0 <= n_shape <= arrays["shapedirs"].shape[2]:
            raise FlameFileError(f"{path}: n_shape={n_shape} but the file has {arrays['shapedirs'].shape[2]}")
        if not 0 <= n_expression <= arrays["exprdirs"].shape[2]:
            raise FlameFileError(
                f"{path}: n_expression={n_expression} but the file has {arrays['exprdirs'].shape[2]}"
            )
        if world_offset is None:
            joints = arrays["J_regressor"] @ arrays["v_template"]
            offset = np.asarray(DEFAULT_EYE_MIDPOINT) - world_scale * 0.5 * (joints[3] + joints[4])
        else:
            offset = np.asarray(world_offset, dtype=np.float64)
        landmarks = load_landmark_embedding(landmark_embedding) if landmark_embedding is not None else None
        uv = None
        if uv_file is not None:
            uv_data = load_arrays(uv_file)
            if "vt" not in uv_data or "ft" not in uv_data:
                raise FlameFileError(f"{uv_file}: needs 'vt' and 'ft' arrays")
            uv = (np.asarray(uv_data["vt"], dtype=np.float64), np.asarray(uv_data["ft"]).astype(np.int64))
            if uv[1].shape != arrays["faces"].shape:
                raise FlameFileError(
                    f"{uv_file}: 'ft' has shape {uv[1].shape}, the model's faces {arrays['faces'].shape}"
                )
        return cls(arrays, n_shape, n_expression, world_scale, offset, landmarks, uv, str(path))

    def landmarks_from_vertices(self, vertices: Tensor, joints: Tensor, transforms: Tensor) -> Tensor | None:
        """68 embedded points + iris centres (eye joint + posed gaze * eyeball radius), (B, 70, 3)."""
        if self.landmark_vertex_ids is None:
            return None
        points = landmarks_from_barycentric(vertices, self.landmark_vertex_ids, self.landmark_weights)
        iris = []
        for k, joint in enumerate((3, 4)):
            gaze = transforms[:, joint, :3, 2]  # the joint's posed +z axis
            iris.append(joints[:, joint] + gaze * self.eye_radius[k])
        # Rows 68 / 69: left (joint 3) then right (joint 4) iris centre.
        return torch.cat([points, torch.stack(iris, dim=1)], dim=1)
