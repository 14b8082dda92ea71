"""Parametric head models behind one interface (``HeadModel``).

* ``ProceduralHeadModel``: the built-in head (our own geometry, Apache-2.0), the default.
* ``FlameHeadModel.from_file``: a user-supplied FLAME model file.

See docs/head_model.md.
"""

from headforge.heads.base import (
    LANDMARK_LEFT_IRIS,
    LANDMARK_RIGHT_IRIS,
    N_LANDMARKS,
    POSE_DIM,
    POSE_SLICES,
    HeadModel,
    HeadModelOutput,
    landmarks_from_barycentric,
)
from headforge.heads.flame import FlameFileError, FlameHeadModel, load_landmark_embedding
from headforge.heads.lbs import batch_rigid_transform, lbs, pose_feature, rodrigues
from headforge.heads.procedural import ProceduralHeadModel

__all__ = [
    "HeadModel",
    "HeadModelOutput",
    "ProceduralHeadModel",
    "FlameHeadModel",
    "FlameFileError",
    "load_landmark_embedding",
    "POSE_DIM",
    "POSE_SLICES",
    "N_LANDMARKS",
    "LANDMARK_LEFT_IRIS",
    "LANDMARK_RIGHT_IRIS",
    "landmarks_from_barycentric",
    "rodrigues",
    "batch_rigid_transform",
    "pose_feature",
    "lbs",
]
