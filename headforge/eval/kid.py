"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

KID is the squared maximum mean discrepancy between two feature sets under the
cubic polynomial kernel k(x, y) = (x . y / D + 1)^3, estimated without bias:

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1))
            + sum_{i != j} k(y_i, y_j) / (n (n - 1))
            - 2 sum_{i, j} k(x_i, y_j) / (m n)

Leaving out the i = j terms makes each part an unbiased U-statistic, so the
estimate has expectation MMD^2 (0 for identical distributions) and is negative
about half of the time when the distributions agree. As in the reference code,
the estimate is averaged over random subsets of equal size drawn without
replacement from each set; the spread over subsets is reported with it.
"""

from __future__ import annotations

import torch


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x . y / D + 1)^3 for all pairs: x (M, D), y (N, D) -> (M, N)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def polynomial_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 U-statistic between samples x (M, D) and y (N, D), M, N >= 2 -> scalar.

    Computed in the dtype of the inputs (callers pass float64).
    """
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased estimator needs at least 2 samples per set, got {m} and {n}")
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2.0 * k_xy.sum() / (m * n)


def kernel_inception_distance(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID between feature sets (N, D) and (M, D), averaged over random subsets.

    Each of ``num_subsets`` rounds draws ``min(subset_size, N, M)`` rows
    without replacement from each set (independently per round) and evaluates
    ``polynomial_mmd2_unbiased`` in float64 on the features' device.

    Args:
        features_a, features_b: features (N, D) and (M, D), e.g. Inception pool3.
        num_subsets: number of subset rounds.
        subset_size: rows per set per round (1000 in the reference code; capped
            at the smaller set size).
        generator: CPU ``torch.Generator`` for the subset draws (reproducible
            results); the global RNG when None.

    Returns:
        (mean, std) of the per-subset estimates, in squared kernel units; std is
        the population standard deviation over subsets (``numpy.std``, as the
        reference code), a measure of spread, not of the mean's standard error.
    """
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        shapes = f"{tuple(features_a.shape)} and {tuple(features_b.shape)}"
        raise ValueError(f"expected features (N, D) and (M, D), got {shapes}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    features_a = features_a.detach().to(torch.float64)
    features_b = features_b.detach().to(device=features_a.device, dtype=torch.float64)
    device = features_a.device
    # Estimates stay on the features' device: no host sync per round.
    estimates = torch.empty(num_subsets, dtype=torch.float64, device=device)
    for round_index in range(num_subsets):
        rows_a = torch.randperm(features_a.shape[0], generator=generator)[:size].to(device)
        rows_b = torch.randperm(features_b.shape[0], generator=generator)[:size].to(device)
        estimates[round_index] = polynomial_mmd2_unbiased(features_a[rows_a], features_b[rows_b])
    return float(estimates.mean()), float(estimates.std(unbiased=False))
