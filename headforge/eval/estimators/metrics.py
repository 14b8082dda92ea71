"""Accuracy figures for the regression estimators (held-out evaluation and tests).

All functions take predictions and ground truth as tensors of the same shape
and return plain floats (or lists of floats per component).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from headforge.eval.estimators.targets import (
    LANDMARK_REGIONS,
    MOUTH_LANDMARKS,
    UNITS_PER_MM,
    yaw_pitch_roll_to_rotation,
)
from headforge.lighting import irradiance

__all__ = [
    "r2_score",
    "r2_per_component",
    "regression_report",
    "offsets_report",
    "pose_report",
    "sh_report",
    "fibonacci_sphere",
]


def r2_score(prediction: Tensor, target: Tensor, min_variance: float = 1e-10) -> float:
    """Coefficient of determination pooled over components: 1 - SSE / SST.

    SST sums squared deviations from the *held-out* mean of each component;
    components with (near) zero held-out variance are left out. 0 = the
    held-out mean, 1 = perfect; a constant training-mean predictor scores <= 0.

    Args:
        prediction, target: (N, D).
    """
    variance = target.var(dim=0, unbiased=False)
    keep = variance > min_variance
    if not bool(keep.any()):
        raise ValueError("r2_score needs at least one component with variance in the targets")
    sse = ((prediction - target)[:, keep] ** 2).sum()
    sst = ((target - target.mean(dim=0))[:, keep] ** 2).sum()
    return float(1.0 - sse / sst)


def r2_per_component(prediction: Tensor, target: Tensor, min_variance: float = 1e-10) -> list[float | None]:
    """R^2 of each component separately (``None`` where the held-out targets do not vary).

    Args:
        prediction, target: (N, D).

    Returns:
        D values: 1 - SSE_d / SST_d, SST_d about the held-out mean of component d.
    """
    variance = target.var(dim=0, unbiased=False)
    sse = ((prediction - target) ** 2).sum(dim=0)
    sst = ((target - target.mean(dim=0)) ** 2).sum(dim=0)
    return [
        float(1.0 - e / t) if bool(v > min_variance) else None
        for e, t, v in zip(sse, sst, variance, strict=True)
    ]


def regression_report(prediction: Tensor, target: Tensor, baseline: Tensor) -> dict[str, float]:
    """MAE and R^2 of a prediction and of the constant ``baseline`` (training mean) predictor.

    Args:
        prediction, target: (N, D).
        baseline: (D,) constant prediction.
    """
    constant = baseline.expand_as(target)
    return {
        "mae": float((prediction - target).abs().mean()),
        "baseline_mae": float((constant - target).abs().mean()),
        "r2": r2_score(prediction, target),
        "baseline_r2": r2_score(constant, target),
    }


def offsets_report(
    prediction: Tensor, target: Tensor, baseline: Tensor, units_per_mm: float = UNITS_PER_MM
) -> dict[str, Any]:
    """Errors of expression landmark offsets (``targets.expression_offsets``), all and mouth only.

    Args:
        prediction, target: (N, 68, 3) offsets in head-model units.
        baseline: (68, 3) constant prediction (training mean).
        units_per_mm: head-model units per millimetre (procedural head 0.002).

    Returns:
        ``error_mm``: mean over items and landmarks of the Euclidean distance
        between predicted and true offset, millimetres; ``r2``: R^2 pooled over
        the 204 values (``r2_score``); ``mouth_error_mm`` / ``mouth_r2``: the
        same on landmarks 48-67; ``target_mm``: mean length of the true offsets
        (the error of predicting no motion); and ``baseline_*`` of each for
        the constant ``baseline``.
    """

    def errors(guess: Tensor, prefix: str) -> dict[str, float]:
        distance = (guess - target).norm(dim=-1) / units_per_mm
        mouth_guess, mouth_target = guess[:, MOUTH_LANDMARKS], target[:, MOUTH_LANDMARKS]
        return {
            f"{prefix}error_mm": float(distance.mean()),
            f"{prefix}r2": r2_score(guess.flatten(1), target.flatten(1)),
            f"{prefix}mouth_error_mm": float(distance[:, MOUTH_LANDMARKS].mean()),
            f"{prefix}mouth_r2": r2_score(mouth_guess.flatten(1), mouth_target.flatten(1)),
        }

    constant = baseline.expand_as(target)
    by_region = {}
    for name, indices in LANDMARK_REGIONS.items():
        region = list(indices)
        guess, truth = prediction[:, region], target[:, region]
        try:
            r2: float | None = r2_score(guess.flatten(1), truth.flatten(1))
        except ValueError:  # no motion at all in this region (e.g. a model without brow expressions)
            r2 = None
        by_region[name] = {
            "error_mm": float((guess - truth).norm(dim=-1).mean() / units_per_mm),
            "baseline_error_mm": float((constant[:, region] - truth).norm(dim=-1).mean() / units_per_mm),
            "r2": r2,
        }
    return {
        **errors(prediction, ""),
        **errors(constant, "baseline_"),
        "target_mm": float(target.norm(dim=-1).mean() / units_per_mm),
        "by_region": by_region,
    }


def pose_report(prediction: Tensor, target: Tensor, baseline: Tensor) -> dict[str, float]:
    """Head-pose errors in degrees.

    Args:
        prediction, target: (N, 3) yaw, pitch, roll radians.
        baseline: (3,) constant prediction (training mean).

    Returns:
        Mean absolute error per axis (``yaw_deg``, ...), the mean geodesic
        angle between predicted and true rotations (``geodesic_deg``), and the
        same for the baseline (``baseline_*``).
    """

    def errors(guess: Tensor, prefix: str) -> dict[str, float]:
        absolute = torch.rad2deg((guess - target).abs()).mean(dim=0)
        relative = yaw_pitch_roll_to_rotation(guess).transpose(1, 2) @ yaw_pitch_roll_to_rotation(target)
        cosine = ((relative.diagonal(dim1=1, dim2=2).sum(dim=1) - 1.0) / 2.0).clamp(-1.0, 1.0)
        return {
            f"{prefix}yaw_deg": float(absolute[0]),
            f"{prefix}pitch_deg": float(absolute[1]),
            f"{prefix}roll_deg": float(absolute[2]),
            f"{prefix}geodesic_deg": float(torch.rad2deg(torch.acos(cosine)).mean()),
        }

    return {**errors(prediction, ""), **errors(baseline.expand_as(target), "baseline_")}


def fibonacci_sphere(count: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """(count, 3) near-uniform unit directions (golden-angle spiral)."""
    index = torch.arange(count, dtype=torch.float64, device=device) + 0.5
    z = 1.0 - 2.0 * index / count
    radius = (1.0 - z * z).clamp(min=0.0).sqrt()
    angle = index * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([radius * angle.cos(), radius * angle.sin(), z], dim=1).to(dtype)


def sh_report(
    prediction: Tensor, target: Tensor, baseline: Tensor, directions: int = 512
) -> dict[str, float]:
    """SH lighting errors.

    Args:
        prediction, target: (N, 9, 3) SH of incident radiance.
        baseline: (9, 3) constant prediction (training mean).

    Returns:
        ``relative_error``: mean over items of ||pred - true|| / ||true|| on the
        27 coefficients; ``irradiance_error``: mean over items of the RMS over
        the unit sphere (``directions`` Fibonacci normals, all colours) of
        E_pred(n) - E_true(n), divided by the RMS of E_true(n); and the same two
        for the baseline.
    """
    normals = fibonacci_sphere(directions, dtype=target.dtype, device=target.device)

    def errors(guess: Tensor, prefix: str) -> dict[str, float]:
        coefficient_error = (guess - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1).clamp(
            min=1e-8
        )
        # irradiance(normals (N, P, 3), sh (N, 9, 3)) -> (N, P, 3)
        points = normals.expand(len(target), -1, -1)
        true_irradiance = irradiance(points, target)
        error = irradiance(points, guess) - true_irradiance
        rms = error.pow(2).mean(dim=(1, 2)).sqrt() / true_irradiance.pow(2).mean(dim=(1, 2)).sqrt().clamp(
            min=1e-8
        )
        return {
            f"{prefix}relative_error": float(coefficient_error.mean()),
            f"{prefix}irradiance_error": float(rms.mean()),
        }

    return {**errors(prediction, ""), **errors(baseline.expand_as(target), "baseline_")}
