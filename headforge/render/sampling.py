"""Where to sample along rays: stratified depths and inverse-CDF importance sampling.

Semantics follow EG3D's ``ImportanceRenderer`` (NVlabs/eg3d) so that
pretrained EG3D-family models render the same way:

* stratified samples are ``linspace(near, far, S)`` jittered forward by up to
  one step ``(far - near) / (S - 1)``; the last sample can therefore land up to
  one step beyond ``far`` (EG3D behaviour, kept on purpose);
* importance samples come from the coarse compositing weights after a
  max-then-average smoothing and a constant floor, drawn by inverse CDF over
  bins whose edges are the midpoints between coarse samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["stratified_depths", "sample_pdf", "importance_depths", "smooth_weights"]


def stratified_depths(
    near: torch.Tensor,
    far: torch.Tensor,
    num_samples: int,
    perturb: bool = True,
    generator: torch.Generator | None = None,
    disparity_space: bool = False,
) -> torch.Tensor:
    """Stratified sample depths along each ray.

    Args:
        near: (B, R, 1) start distance per ray (ray-parameter units).
        far: (B, R, 1) end distance per ray; must be ``> 0`` for disparity
            sampling.
        num_samples: S, samples per ray.
        perturb: jitter each sample uniformly inside its bin (training); when
            False the samples are exactly ``linspace(near, far, S)``.
        generator: optional RNG for the jitter (same device as ``near``).
        disparity_space: space the samples uniformly in inverse depth
            (``1/d``) between ``1/near`` and ``1/far`` instead of in depth.

    Returns:
        (B, R, S, 1) depths, sorted ascending along S. With ``perturb``,
        sample ``i`` lies in ``[t_i, t_i + step)`` where ``t_i`` is the i-th
        linspace point and ``step`` the linspace spacing (in depth or in
        normalised disparity), so the last sample may pass ``far`` by up to
        one step, as in EG3D.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    near = near.unsqueeze(-2)  # (B, R, 1, 1)
    far = far.unsqueeze(-2)
    steps = torch.arange(num_samples, dtype=near.dtype, device=near.device)
    # With one sample the "bin" is the whole interval.
    step_size = 1.0 / max(num_samples - 1, 1)
    fraction = (steps * step_size).view(1, 1, num_samples, 1)
    shape = (*near.shape[:2], num_samples, 1)
    if perturb:
        jitter = torch.rand(shape, generator=generator, dtype=near.dtype, device=near.device)
        fraction = fraction + jitter * step_size
    else:
        fraction = fraction.expand(shape)
    if disparity_space:
        return 1.0 / ((1.0 - fraction) / near + fraction / far)
    return near + fraction * (far - near)


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    num_samples: int,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    eps: float = 1e-5,
    quantiles: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw samples from a piecewise-constant density by inverse-CDF sampling.

    Interval ``j`` spans ``[bins[..., j], bins[..., j+1]]`` and has probability
    proportional to ``weights[..., j] + eps``; inside an interval the density
    is uniform (the CDF is piecewise linear).

    Args:
        bins: (..., M+1) interval edges, ascending along the last axis.
        weights: (..., M) non-negative interval weights.
        num_samples: K, samples to draw per row.
        deterministic: use evenly spaced quantiles ``linspace(0, 1, K)``
            instead of uniform random ones.
        generator: optional RNG for the random quantiles.
        eps: added to every weight so that all-zero rows stay valid, and the
            threshold below which an interval's CDF step counts as empty.
        quantiles: optional (..., K) values in [0, 1] to invert instead of
            drawing them (``deterministic`` and ``generator`` are then unused);
            lets a caller draw all random numbers up front.

    Returns:
        (..., K) samples, in the order of their quantiles (random order when
        not deterministic; callers sort if they need to). Not differentiable
        with respect to ``weights`` in any useful way; callers detach.
    """
    num_bins = weights.shape[-1]
    if bins.shape[-1] != num_bins + 1:
        raise ValueError(f"bins must have one more entry than weights, got {bins.shape} and {weights.shape}")
    lead_shape = weights.shape[:-1]
    weights = weights.reshape(-1, num_bins) + eps
    bins = bins.reshape(-1, num_bins + 1)
    num_rows = weights.shape[0]

    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # (rows, M+1)

    if quantiles is not None:
        u = quantiles.reshape(num_rows, num_samples).to(cdf.dtype).contiguous()
    elif deterministic:
        u = torch.linspace(0.0, 1.0, num_samples, dtype=cdf.dtype, device=cdf.device)
        u = u.expand(num_rows, num_samples).contiguous()
    else:
        u = torch.rand((num_rows, num_samples), generator=generator, dtype=cdf.dtype, device=cdf.device)

    # Index of the first CDF entry strictly greater than u: u lies in interval inds-1.
    inds = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (inds - 1).clamp_min(0)
    above = inds.clamp_max(num_bins)
    cdf_below = torch.gather(cdf, 1, below)
    cdf_above = torch.gather(cdf, 1, above)
    bins_below = torch.gather(bins, 1, below)
    bins_above = torch.gather(bins, 1, above)

    denom = cdf_above - cdf_below
    # An (almost) empty interval is never the one u falls in, except at the
    # clamped ends; any finite denominator gives a sample inside the interval.
    denom = torch.where(denom <= eps, torch.ones_like(denom), denom)
    samples = bins_below + (u - cdf_below) / denom * (bins_above - bins_below)
    return samples.reshape(*lead_shape, num_samples)


def smooth_weights(weights: torch.Tensor) -> torch.Tensor:
    """EG3D's importance-weight smoothing: max-pool(2, stride 1, pad 1), then avg-pool(2, stride 1), + 0.01.

    Args:
        weights: (N, M) per-interval compositing weights.

    Returns:
        (N, M) smoothed weights: entry ``j`` is
        ``(max(w[j-1], w[j]) + max(w[j], w[j+1])) / 2 + 0.01`` with missing
        neighbours ignored. The max spreads mass to both neighbours so that
        thin surfaces found by one coarse sample still attract fine samples on
        either side; the floor keeps some samples everywhere.
    """
    pooled = F.max_pool1d(weights.unsqueeze(1), kernel_size=2, stride=1, padding=1)  # (N, 1, M+1)
    pooled = F.avg_pool1d(pooled, kernel_size=2, stride=1)  # (N, 1, M)
    return pooled.squeeze(1) + 0.01


def importance_depths(
    coarse_depths: torch.Tensor,
    coarse_weights: torch.Tensor,
    num_fine: int,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    quantiles: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fine sample depths drawn where the coarse pass found density (EG3D's scheme).

    The coarse weights (one per interval between consecutive coarse samples)
    are smoothed with :func:`smooth_weights`; the PDF bins are the midpoints
    between coarse samples. Exactly as EG3D, the bin between midpoints
    ``j`` and ``j+1`` receives the smoothed weight of interval ``j+1`` and
    the last bin is never sampled, so fine samples lie between the first and
    the second-to-last midpoint.

    Args:
        coarse_depths: (B, R, S, 1) sorted coarse depths, S >= 4.
        coarse_weights: (B, R, S-1, 1) compositing weights of the coarse pass.
        num_fine: K, fine samples per ray.
        deterministic: evenly spaced quantiles instead of random ones.
        generator: optional RNG for the random quantiles.
        quantiles: optional (B, R, K) pre-drawn quantiles in [0, 1) (see
            :func:`sample_pdf`).

    Returns:
        (B, R, K, 1) fine depths, detached from the graph, not sorted.
    """
    batch, rays, num_coarse, _ = coarse_depths.shape
    if num_coarse < 4:
        raise ValueError(f"importance sampling needs at least 4 coarse samples, got {num_coarse}")
    with torch.no_grad():
        depths = coarse_depths.detach().reshape(batch * rays, num_coarse)
        weights = smooth_weights(coarse_weights.detach().reshape(batch * rays, num_coarse - 1))
        midpoints = 0.5 * (depths[:, :-1] + depths[:, 1:])  # (N, S-1)
        fine = sample_pdf(
            midpoints[:, :-1],
            weights[:, 1:-1],
            num_fine,
            deterministic=deterministic,
            generator=generator,
            quantiles=quantiles,
        )
    return fine.reshape(batch, rays, num_fine, 1)
