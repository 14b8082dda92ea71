"""Paired image metrics: PSNR, SSIM and a feature-space perceptual distance.

All take image batches a, b (B, C, H, W) (headforge's convention: [-1, 1],
hence ``data_range=2.0`` by default) and return one value per image (B,).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from headforge.eval.features import FeatureNetwork


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ValueError(f"expected two image batches (B, C, H, W) of equal shape, got {shapes}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    PSNR = 10 log10(data_range^2 / MSE), MSE averaged over C, H, W of each
    image. Identical images give +inf.

    Args:
        a, b: images (B, C, H, W).
        data_range: max - min of the value range (2 for [-1, 1], 1 for [0, 1], 255 for uint8 values).

    Returns:
        (B,) PSNR in dB, float32 or float64 following the inputs.
    """
    _check_pair(a, b)
    dtype = torch.promote_types(a.dtype, torch.float32)
    mse = (a.to(dtype) - b.to(dtype)).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window_1d(window: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised Gaussian taps (window,), centred, window odd."""
    offsets = torch.arange(window, dtype=dtype, device=device) - (window - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def _gaussian_filter_valid(images: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter without padding: (B, C, H, W) -> (B, C, H-w+1, W-w+1)."""
    channels = images.shape[1]
    window = taps.shape[0]
    horizontal = taps.view(1, 1, 1, window).expand(channels, 1, 1, window)
    vertical = taps.view(1, 1, window, 1).expand(channels, 1, window, 1)
    return F.conv2d(F.conv2d(images, horizontal, groups=channels), vertical, groups=channels)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 2.0,
    window: int = 11,
    sigma: float = 1.5,
    K1: float = 0.01,
    K2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, mean over channels and pixels.

    Local statistics use a normalised Gaussian window (``window`` taps,
    ``sigma`` pixels) and population (not sample) variances:

        SSIM = (2 mu_a mu_b + C1)(2 cov_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2)),
        C1 = (K1 data_range)^2, C2 = (K2 data_range)^2.

    The map is averaged only where the window fits inside the image (no
    padding), which equals ``skimage.metrics.structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=..., channel_axis=...)``: skimage filters with reflection
    padding, then crops (window - 1) / 2 pixels from each border before
    averaging, so the padded values never count.

    Args:
        a, b: images (B, C, H, W), H and W >= ``window``.
        data_range: max - min of the value range (2 for [-1, 1]).
        window: odd Gaussian window size in pixels.
        sigma: Gaussian standard deviation in pixels.

    Returns:
        (B,) SSIM in [-1, 1], 1 for identical images.
    """
    _check_pair(a, b)
    if window % 2 != 1 or min(a.shape[-2:]) < window:
        raise ValueError(f"window must be odd and fit the image, got {window} for {tuple(a.shape[-2:])}")
    dtype = torch.promote_types(a.dtype, torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    taps = gaussian_window_1d(window, sigma, dtype, a.device)
    # One filter call for all five local moments.
    moments = _gaussian_filter_valid(torch.cat([a, b, a * a, b * b, a * b], dim=1), taps)
    mu_a, mu_b, mean_aa, mean_bb, mean_ab = moments.chunk(5, dim=1)
    var_a = mean_aa - mu_a**2
    var_b = mean_bb - mu_b**2
    cov_ab = mean_ab - mu_a * mu_b
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (numerator / denominator).flatten(1).mean(dim=1)


def unit_normalize_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each feature vector (B, C, h, w) to unit L2 norm over C (LPIPS's normalisation)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + eps)


def perceptual_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    feature_network: FeatureNetwork,
    layer_weights: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """LPIPS-style distance in a feature network's activation space, per image.

        d(a, b) = sum_l mean_{h,w} sum_c w_{l,c} (f_l(a) - f_l(b))_{c,h,w}^2

    where f_l are the network's ``layers`` activations unit-normalised over
    channels and w_{l,c} = 1 unless ``layer_weights`` are given. This is the
    structure of LPIPS (Zhang et al. 2018) but not LPIPS: without LPIPS's
    learned linear weights and its ImageNet backbone the values are not
    comparable with published LPIPS numbers; compare only numbers computed with
    the same network and weights.

    Args:
        a, b: images (B, 3, H, W) in [-1, 1].
        feature_network: any ``FeatureNetwork`` (e.g. ``HeadforgeFeatureNet``).
        layer_weights: optional non-negative per-channel weights, one (C_l,)
            tensor per layer.

    Returns:
        (B,) distances, >= 0, 0 for identical images.
    """
    _check_pair(a, b)
    layers_a = feature_network.layers(a)
    layers_b = feature_network.layers(b)
    if layer_weights is not None and len(layer_weights) != len(layers_a):
        raise ValueError(f"got {len(layer_weights)} layer weights for {len(layers_a)} layers")
    total = torch.zeros(a.shape[0], dtype=layers_a[0].dtype, device=layers_a[0].device)
    for index, (feat_a, feat_b) in enumerate(zip(layers_a, layers_b)):
        squared = (unit_normalize_channels(feat_a) - unit_normalize_channels(feat_b)).square()
        if layer_weights is not None:
            weights = layer_weights[index].to(squared)
            channels = squared.shape[1]
            if weights.shape != (channels,) or bool((weights < 0).any()):
                raise ValueError(f"layer {index}: weights must be non-negative with shape ({channels},)")
            squared = squared * weights.view(1, -1, 1, 1)
        total = total + squared.sum(dim=1).flatten(1).mean(dim=1)
    return total


def psnr_from_mse(mse: float, data_range: float = 2.0) -> float:
    """PSNR in dB for a given mean squared error (for aggregating MSE before converting)."""
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
