"""Alpha compositing of per-sample densities and features along rays.

EG3D's ``MipRayMarcher2`` midpoint rule: for sorted sample depths
``d_0 < ... < d_{S-1}`` the ray is split into the S-1 intervals between
consecutive samples. Interval ``i`` has length ``delta_i = d_{i+1} - d_i``,
density ``act(mean(sigma_i, sigma_{i+1}) + shift)`` and feature
``mean(f_i, f_{i+1})``; its opacity is ``alpha_i = 1 - exp(-density_i *
delta_i)`` and its weight ``w_i = alpha_i * prod_{j<i} (1 - alpha_j + 1e-10)``.

Averaging features at midpoints is linear, so the composite equals
``sum_j v_j f_j`` with per-sample weights ``v_j = (w_{j-1} + w_j) / 2``
(:func:`per_sample_weights`). The renderer uses that identity to composite
coarse and fine samples without gathering their features into one sorted
tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = [
    "DENSITY_ACTIVATIONS",
    "activate_density",
    "compositing_weights",
    "per_sample_weights",
    "weighted_sum",
    "composite_depth",
    "composite",
]

DENSITY_ACTIVATIONS = ("softplus", "relu", "exp", "identity")
RESERVED_OUTPUTS = ("features", "depth", "opacity", "weights")


def activate_density(
    sigma_raw: torch.Tensor, activation: str = "softplus", shift: float = -1.0
) -> torch.Tensor:
    """Map raw network density to a non-negative density: ``act(sigma_raw + shift)``.

    Args:
        sigma_raw: any shape, raw density.
        activation: one of ``DENSITY_ACTIVATIONS``. ``identity`` trusts the
            field to return a valid density (useful for analytic fields).
        shift: added before the activation; EG3D uses softplus with -1, which
            starts training from a low density.

    Returns:
        Density in inverse ray-parameter units, same shape as ``sigma_raw``.
    """
    x = sigma_raw + shift if shift != 0 else sigma_raw
    if activation == "softplus":
        return F.softplus(x)
    if activation == "relu":
        return F.relu(x)
    if activation == "exp":
        return torch.exp(x)
    if activation == "identity":
        return x
    raise ValueError(f"unknown density activation {activation!r}; expected one of {DENSITY_ACTIVATIONS}")


def compositing_weights(
    sigma_raw: torch.Tensor,
    depths: torch.Tensor,
    density_activation: str = "softplus",
    density_shift: float = -1.0,
) -> torch.Tensor:
    """Per-interval compositing weights by the midpoint rule.

    Args:
        sigma_raw: (B, R, S, 1) raw densities at the samples.
        depths: (B, R, S, 1) sample depths, ascending along S.
        density_activation, density_shift: see :func:`activate_density`.

    Returns:
        (B, R, S-1, 1) weights ``w_i = alpha_i * T_i``; their sum over S is the
        ray's opacity.
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    sigma_mid = 0.5 * (sigma_raw[:, :, 1:] + sigma_raw[:, :, :-1])
    density = activate_density(sigma_mid, density_activation, density_shift)
    transmitted = torch.exp(-density * deltas)  # 1 - alpha per interval
    alpha = 1.0 - transmitted
    # Exclusive cumulative product: light reaching interval i has passed
    # intervals 0..i-1. The 1e-10 (EG3D) keeps the product from reaching 0.
    transmittance = torch.cumprod(transmitted + 1e-10, dim=-2)
    transmittance = torch.cat([torch.ones_like(transmittance[:, :, :1]), transmittance[:, :, :-1]], dim=-2)
    return alpha * transmittance


def per_sample_weights(weights: torch.Tensor) -> torch.Tensor:
    """Convert per-interval weights to per-sample weights for midpoint features.

    Args:
        weights: (B, R, S-1, 1) interval weights.

    Returns:
        (B, R, S, 1) ``v_j = (w_{j-1} + w_j) / 2`` with ``w_{-1} = w_{S-1} = 0``,
        so that ``sum_j v_j f_j == sum_i w_i (f_i + f_{i+1}) / 2``.
    """
    half = 0.5 * weights
    return F.pad(half, (0, 0, 0, 1)) + F.pad(half, (0, 0, 1, 0))


def weighted_sum(sample_weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sum per-sample values along each ray: ``sum_s v[b,r,s] * x[b,r,s,:]``.

    Args:
        sample_weights: (B, R, S, 1).
        values: (B, R, S, C).

    Returns:
        (B, R, C).
    """
    # A (1 x S) @ (S x C) product per ray avoids materialising the (B, R, S, C)
    # product tensor of an elementwise multiply-and-sum.
    return torch.matmul(sample_weights.transpose(-1, -2), values).squeeze(-2)


def composite_depth(weights: torch.Tensor, depths: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Expected depth of the intervals, normalised by opacity, kept inside the sampled range.

    Args:
        weights: (B, R, S-1, 1) interval weights.
        depths: (B, R, S, 1) sorted sample depths.
        opacity: (B, R, 1) sum of the weights.

    Returns:
        (B, R, 1) ``sum_i w_i mid_i / sum_i w_i``; rays with no weight (0/0)
        get the ray's last depth, and every value is clamped to the ray's
        ``[first depth, last depth]`` (EG3D clamps to the batch-wide range).
    """
    midpoints = 0.5 * (depths[:, :, 1:] + depths[:, :, :-1])
    depth = (weights * midpoints).sum(dim=-2) / opacity
    depth = torch.nan_to_num(depth, nan=float("inf"))
    return torch.clamp(depth, min=depths.amin(dim=-2), max=depths.amax(dim=-2))


def composite(
    features: torch.Tensor,
    sigma_raw: torch.Tensor,
    depths: torch.Tensor,
    density_activation: str = "softplus",
    density_shift: float = -1.0,
    white_background: bool = False,
    extras: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Volume-render sorted samples along rays (EG3D midpoint rule).

    Args:
        features: (B, R, S, C) per-sample features (not rescaled here).
        sigma_raw: (B, R, S, 1) raw densities before the activation.
        depths: (B, R, S, 1) sample depths, ascending along S (ray-parameter
            units, world units for unit-length directions).
        density_activation, density_shift: see :func:`activate_density`.
        white_background: add ``1 - opacity`` to the composited features,
            i.e. composite them over a background of ones (extras are not
            given a background: they are usually masks or semantic maps).
        extras: optional name -> (B, R, S, K) per-sample outputs composited
            with the same weights as ``features``.

    Returns:
        dict with ``features`` (B, R, C), ``depth`` (B, R, 1), ``opacity``
        (B, R, 1) in [0, 1], ``weights`` (B, R, S-1, 1) and one (B, R, K)
        entry per extra.
    """
    weights = compositing_weights(sigma_raw, depths, density_activation, density_shift)
    opacity = weights.sum(dim=-2)
    sample_weights = per_sample_weights(weights)
    composited = weighted_sum(sample_weights, features)
    if white_background:
        composited = composited + (1.0 - opacity)
    result = {
        "features": composited,
        "depth": composite_depth(weights, depths, opacity),
        "opacity": opacity,
        "weights": weights,
    }
    for name, values in (extras or {}).items():
        if name in RESERVED_OUTPUTS:
            raise ValueError(f"extra output name {name!r} clashes with a composited output")
        result[name] = weighted_sum(sample_weights, values)
    return result
