"""Fréchet distance between Gaussians fitted to feature sets (the "FID" formula).

``FeatureStatistics`` accumulates the mean and covariance of features (N, D)
batch by batch in float64, with the pairwise update of Chan, Golub and LeVeque
(1979): each batch is centred on its own mean before it is merged, so no
``E[x x^T] - mu mu^T`` cancellation happens when features have a large mean.
Two accumulators merge exactly, which is how per-process statistics are
combined in a multi-process evaluation.

``frechet_distance`` evaluates

    FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

computing the trace of the matrix square root from the eigenvalues of the
symmetric positive semi-definite matrix ``sqrt(S1) S2 sqrt(S1)``, which is
similar to ``S1 S2`` (see ``trace_sqrt_product``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

ArrayLike = np.ndarray | torch.Tensor


class FeatureStatistics:
    """Streaming mean and covariance of D-dimensional features, in float64.

    State: ``count`` (number of rows seen), ``mean`` (D,) and ``scatter`` (D, D),
    the sum of outer products of the rows centred on ``mean``. Tensors live on
    ``device`` (default: the device of the first batch).

    Example::

        stats = FeatureStatistics(2048)
        for images in loader:
            stats.update(net(images))
        stats = stats.gather_across_processes()   # no-op without a process group
        mu, sigma = stats.mean, stats.covariance()
    """

    def __init__(self, dim: int, device: torch.device | str | None = None) -> None:
        self.dim = int(dim)
        self.device = None if device is None else torch.device(device)
        self.count = 0
        self.mean = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        self.scatter = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)

    def update(self, features: torch.Tensor) -> FeatureStatistics:
        """Add a batch of features (N, D) (any float dtype); returns ``self``."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (N, {self.dim}), got {tuple(features.shape)}")
        if features.shape[0] == 0:
            return self
        if self.count == 0 and self.device is None:
            self.device = features.device
            self.mean = self.mean.to(self.device)
            self.scatter = self.scatter.to(self.device)
        batch = features.detach().to(device=self.device, dtype=torch.float64)
        batch_mean = batch.mean(dim=0)
        centred = batch - batch_mean
        self._merge_moments(batch.shape[0], batch_mean, centred.T @ centred)
        return self

    def _merge_moments(self, count: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        """Chan et al.'s pairwise merge of (count, mean, centred scatter) into this accumulator."""
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        # The cross term accounts for the two parts being centred on different means.
        self.scatter = self.scatter + scatter + torch.outer(delta, delta) * (self.count * count / total)
        self.mean = self.mean + delta * (count / total)
        self.count = total

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Fold another accumulator of the same dimension into this one; returns ``self``."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        device = self.mean.device if self.count > 0 or other.count == 0 else other.mean.device
        self.mean, self.scatter = self.mean.to(device), self.scatter.to(device)
        self.device = device
        self._merge_moments(other.count, other.mean.to(device), other.scatter.to(device))
        return self

    def covariance(self, unbiased: bool = True) -> torch.Tensor:
        """Covariance (D, D) float64; ``unbiased`` divides by N - 1 (as ``numpy.cov``), else by N."""
        denominator = self.count - 1 if unbiased else self.count
        if denominator <= 0:
            raise ValueError(f"need at least {2 if unbiased else 1} features, have {self.count}")
        return self.scatter / denominator

    def pack(self) -> torch.Tensor:
        """Flat float64 tensor (1 + D + D*D,): count, mean, scatter; inverse of ``unpack``."""
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.mean.device)
        return torch.cat([count, self.mean, self.scatter.reshape(-1)])

    @classmethod
    def unpack(cls, packed: torch.Tensor, dim: int) -> FeatureStatistics:
        """Rebuild an accumulator from ``pack()``'s output (1 + D + D*D,)."""
        expected = 1 + dim + dim * dim
        if packed.shape != (expected,):
            found = tuple(packed.shape)
            raise ValueError(f"packed statistics for D={dim} need shape ({expected},), got {found}")
        stats = cls(dim, device=packed.device)
        stats.count = round(float(packed[0]))
        stats.mean = packed[1 : 1 + dim].to(torch.float64).clone()
        stats.scatter = packed[1 + dim :].to(torch.float64).reshape(dim, dim).clone()
        return stats

    def gather_across_processes(self, group: dist.ProcessGroup | None = None) -> FeatureStatistics:
        """Statistics of the union of every rank's features, identical on all ranks.

        Every rank all-gathers the packed states and merges them in rank order
        (so all ranks get bit-identical results). Without an initialised
        process group this returns ``self``. With NCCL the accumulator must
        live on the rank's CUDA device.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        packed = self.pack()
        gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, packed, group=group)
        merged = FeatureStatistics(self.dim, device=packed.device)
        for part in gathered:
            merged.merge(FeatureStatistics.unpack(part, self.dim))
        return merged


def _as_float64_numpy(value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _clip_rounding_noise(eigenvalues: np.ndarray) -> np.ndarray:
    """Set eigenvalues of a PSD matrix that are indistinguishable from 0 in float64 to exactly 0.

    ``eigh`` leaves |noise| ~ D * eps * max|lambda| on eigenvalues that are 0 in
    exact arithmetic; their square roots (~1e-8 relative) would otherwise
    dominate the error for singular covariances (fewer samples than dimensions).
    """
    threshold = eigenvalues.shape[0] * np.finfo(np.float64).eps * float(np.abs(eigenvalues).max())
    return np.where(eigenvalues > threshold, eigenvalues, 0.0)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric PSD matrix (D, D); rounding-level eigenvalues -> 0."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(_clip_rounding_noise(eigenvalues))) @ eigenvectors.T


def trace_sqrt_product(sigma1: ArrayLike, sigma2: ArrayLike) -> float:
    """Tr((S1 S2)^{1/2}) for symmetric PSD S1, S2 (D, D).

    S1 S2 = sqrt(S1) [sqrt(S1) S2 sqrt(S1)] sqrt(S1)^{-1} is similar to the
    symmetric PSD matrix M = sqrt(S1) S2 sqrt(S1) (for singular S1 by
    continuity), so the eigenvalues of S1 S2 are M's: real and >= 0, and the
    trace of the principal square root is sum_i sqrt(lambda_i(M)). ``eigh`` on
    a symmetric matrix never returns the complex parts that ``scipy.linalg.sqrtm``
    produces on nearly singular products, so no epsilon offset of the diagonal
    (pytorch-fid's fallback) is needed; eigenvalues at rounding level (of
    either sign) are set to 0.
    """
    sqrt_sigma1 = _symmetric_sqrt(_as_float64_numpy(sigma1))
    middle = sqrt_sigma1 @ _as_float64_numpy(sigma2) @ sqrt_sigma1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(_clip_rounding_noise(eigenvalues)).sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, S1) and N(mu2, S2).

    Args:
        mu1, mu2: means (D,).
        sigma1, sigma2: covariances (D, D), symmetric PSD.

    Returns:
        ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2}), in squared
        feature units, computed in float64 and clamped at 0 (the exact value
        is >= 0; identical inputs give rounding-level negatives otherwise).
    """
    mu1, mu2 = _as_float64_numpy(mu1), _as_float64_numpy(mu2)
    sigma1, sigma2 = _as_float64_numpy(sigma1), _as_float64_numpy(sigma2)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be matching vectors (D,), got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must be ({dim}, {dim}), got {sigma1.shape} and {sigma2.shape}")
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    trace_term = float(np.trace(sigma1) + np.trace(sigma2)) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(mean_term + trace_term, 0.0)


def frechet_distance_from_statistics(stats1: FeatureStatistics, stats2: FeatureStatistics) -> float:
    """``frechet_distance`` of two accumulators (unbiased covariances, as pytorch-fid's ``np.cov``)."""
    return frechet_distance(stats1.mean, stats1.covariance(), stats2.mean, stats2.covariance())


def frechet_distance_from_features(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """``frechet_distance`` between the Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    stats1 = FeatureStatistics(features1.shape[1]).update(features1)
    stats2 = FeatureStatistics(features2.shape[1]).update(features2)
    return frechet_distance_from_statistics(stats1, stats2)
