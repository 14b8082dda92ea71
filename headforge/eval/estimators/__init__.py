"""Estimators trained on the synthetic head studio's ground truth (docs/estimators.md).

``load_estimator(kind)`` returns a callable mapping images (B, 3, H, W) in
[-1, 1] to expression landmark offsets (``targets.expression_offsets``) plus
coefficients and jaw, head pose relative to the camera, SH lighting, shape
coefficients or a unit-norm identity embedding.
"""

from headforge.eval.estimators.api import (
    ESTIMATOR_KINDS,
    Estimator,
    EstimatorQualityWarning,
    default_weights_path,
    load_estimator,
    shipped_quality,
)
from headforge.eval.estimators.command import add_train_estimators_arguments, run_train_estimators
from headforge.eval.estimators.networks import INPUT_RESOLUTION, EstimatorNetwork, EstimatorWeightsError
from headforge.eval.estimators.targets import expression_offsets, head_pose_angles

__all__ = [
    "ESTIMATOR_KINDS",
    "INPUT_RESOLUTION",
    "Estimator",
    "EstimatorQualityWarning",
    "EstimatorNetwork",
    "EstimatorWeightsError",
    "add_train_estimators_arguments",
    "default_weights_path",
    "expression_offsets",
    "head_pose_angles",
    "load_estimator",
    "run_train_estimators",
    "shipped_quality",
]
