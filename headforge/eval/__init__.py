"""Evaluation metrics: Fréchet distance (FID), KID, PSNR, SSIM, perceptual distance, feature networks,
and the consistency metrics TI, DS and multi-view reprojection error.

See docs/metrics.md for the formulas and for which numbers are comparable with
published ones.
"""

from headforge.eval.consistency import disentanglement_scores, temporal_inconsistency
from headforge.eval.features import FeatureNetwork, HeadforgeFeatureNet
from headforge.eval.frechet import (
    FeatureStatistics,
    frechet_distance,
    frechet_distance_from_features,
    frechet_distance_from_statistics,
    trace_sqrt_product,
)
from headforge.eval.image_metrics import perceptual_distance, psnr, psnr_from_mse, ssim
from headforge.eval.inception import InceptionV3Features, fid_preprocess, read_state_dict
from headforge.eval.kid import kernel_inception_distance, polynomial_kernel, polynomial_mmd2_unbiased
from headforge.eval.reprojection import ReprojectionResult, reprojection_error

__all__ = [
    "FeatureNetwork",
    "FeatureStatistics",
    "HeadforgeFeatureNet",
    "InceptionV3Features",
    "ReprojectionResult",
    "disentanglement_scores",
    "fid_preprocess",
    "frechet_distance",
    "frechet_distance_from_features",
    "frechet_distance_from_statistics",
    "kernel_inception_distance",
    "perceptual_distance",
    "polynomial_kernel",
    "polynomial_mmd2_unbiased",
    "psnr",
    "psnr_from_mse",
    "read_state_dict",
    "reprojection_error",
    "ssim",
    "temporal_inconsistency",
    "trace_sqrt_product",
]
