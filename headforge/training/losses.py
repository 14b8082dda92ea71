"""Generic GAN losses and regularisers shared by every system.

Notation: ``l`` is a discriminator logit (real-valued, higher = "real"),
``softplus(x) = log(1 + exp(x))``. All per-sample losses keep the logits'
shape; callers reduce with ``.mean()`` and multiply by their weight and by the
phase's ``gain`` (lazy regularisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "density_monotonic_regularizer",
    "density_regularizer",
    "discriminator_fake_loss",
    "discriminator_logistic_loss",
    "discriminator_real_loss",
    "lazy_regularization_adjustment",
    "nonsaturating_generator_loss",
    "r1_penalty",
    "swap_conditioning",
]


def nonsaturating_generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``softplus(-l_fake) = -log sigmoid(l_fake)``.

    Args:
        fake_logits: (B, ...) discriminator logits of generated samples.

    Returns:
        (B, ...) per-sample loss, same shape as the input.
    """
    return F.softplus(-fake_logits)


def discriminator_real_loss(real_logits: Tensor) -> Tensor:
    """Logistic loss on real samples ``softplus(-l_real)``; (B, ...) -> (B, ...)."""
    return F.softplus(-real_logits)


def discriminator_fake_loss(fake_logits: Tensor) -> Tensor:
    """Logistic loss on generated samples ``softplus(l_fake)``; (B, ...) -> (B, ...)."""
    return F.softplus(fake_logits)


def discriminator_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator logistic loss ``softplus(l_fake) + softplus(-l_real)``.

    The two terms are usually computed in separate passes (real with R1, fake
    without); this sums them for logits of equal shape.

    Args:
        real_logits: (B, ...) logits of real samples.
        fake_logits: (B, ...) logits of generated samples.

    Returns:
        (B, ...) per-sample loss.
    """
    return discriminator_fake_loss(fake_logits) + discriminator_real_loss(real_logits)


def r1_penalty(real_logits: Tensor, inputs: Sequence[Tensor]) -> Tensor:
    """R1 gradient penalty ``sum_i ||d l / d x_i||^2`` per sample (Mescheder et al. 2018).

    The caller multiplies by ``gamma / 2``. Several inputs (EG3D's dual
    discriminator sees ``image`` and ``image_raw``) contribute the sum of
    their squared gradient norms. The gradient graph is kept
    (``create_graph=True``) so the penalty can be back-propagated.

    Args:
        real_logits: (B,) or (B, 1) logits computed from ``inputs``.
        inputs: tensors with ``requires_grad=True``, each (B, ...).

    Returns:
        (B,) penalty per sample.
    """
    inputs = list(inputs)
    if not inputs:
        raise ValueError("r1_penalty needs at least one input tensor")
    # Samples are independent, so d(sum_b l_b)/d x_b = d l_b / d x_b.
    gradients = torch.autograd.grad(outputs=real_logits.sum(), inputs=inputs, create_graph=True)
    return sum(gradient.square().flatten(1).sum(dim=1) for gradient in gradients)


def _uniform_box_points(
    batch: int, num_points: int, box: float, device: torch.device | str, generator: torch.Generator | None
) -> Tensor:
    """(batch, num_points, 3) points uniform in ``[-box, box]^3``."""
    unit = torch.rand((batch, num_points, 3), device=device, generator=generator)
    return (unit * 2 - 1) * box


def density_regularizer(
    sigma_fn: Callable[[Tensor], Tensor],
    batch: int,
    num_points: int = 1000,
    jitter: float = 0.004,
    box: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """EG3D's density smoothness regulariser (L1 "TV" between nearby points).

    ``x ~ U([-box, box]^3)``, ``x' = x + jitter * n`` with ``n ~ N(0, I)``,
    loss ``= mean |sigma(x) - sigma(x')|``. Both point sets are evaluated in one
    call so the field sees ``2 * num_points`` points per sample. The caller
    multiplies by the weight (EG3D: 0.25) and the lazy-regularisation gain.
    ``box = 0.5`` covers the contract's head box ``[-0.5, 0.5]^3``
    (EG3D samples ``[-1, 1]^3`` in its own coordinates).

    Args:
        sigma_fn: maps points (B, M, 3) (world units) to raw densities (B, M, 1) or (B, M).
        batch: number of samples B (one field per sample).
        num_points: points per sample.
        jitter: standard deviation of the perturbation (world units).
        box: half-width of the sampling cube (world units).
        generator: torch.Generator for reproducible points (on ``device``).
        device: where the points are created.

    Returns:
        Scalar mean absolute density difference.
    """
    points = _uniform_box_points(batch, num_points, box, device, generator)
    noise = torch.randn(points.shape, device=device, generator=generator)
    sigma = sigma_fn(torch.cat([points, points + jitter * noise], dim=1))
    sigma_at_points, sigma_at_jittered = sigma.split(num_points, dim=1)
    return F.l1_loss(sigma_at_points, sigma_at_jittered)


def density_monotonic_regularizer(
    sigma_fn: Callable[[Tensor], Tensor],
    batch: int,
    num_points: int = 2000,
    step: float = 1.0 / 256,
    direction: tuple[float, float, float] = (0.0, 0.0, -1.0),
    box: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """EG3D's optional "monotonic" density regulariser.

    Density should not decrease when moving from a point ``x`` a small ``step``
    along ``direction`` (default -z, into the head, which faces +z):
    ``loss = mean relu(sigma(x).detach() - sigma(x + step * direction))``.
    The front point is detached so only the point behind is pushed up.
    EG3D weights it by 10 and adds :func:`density_regularizer`.

    Args:
        sigma_fn: maps points (B, M, 3) to raw densities (B, M, 1) or (B, M).
        batch: number of samples B.
        num_points: points per sample.
        step: offset length (world units).
        direction: offset direction (normalised here).
        box: half-width of the sampling cube (world units).
        generator: torch.Generator for reproducible points (on ``device``).
        device: where the points are created.

    Returns:
        Scalar mean density decrease.
    """
    points = _uniform_box_points(batch, num_points, box, device, generator)
    offset = torch.tensor(direction, dtype=points.dtype, device=points.device)
    offset = offset / offset.norm() * step
    sigma = sigma_fn(torch.cat([points, points + offset], dim=1))
    sigma_front, sigma_behind = sigma.split(num_points, dim=1)
    return torch.relu(sigma_front.detach() - sigma_behind).mean()


def swap_conditioning(c: Tensor, probability: float, generator: torch.Generator | None = None) -> Tensor:
    """EG3D's generator pose-conditioning swap.

    With probability ``probability`` per sample, replace sample ``b``'s
    conditioning label by that of sample ``b - 1`` (the batch rolled by one),
    so the generator cannot rely on the label matching the rendering camera.
    The rendering camera itself is left to the caller (unchanged).

    Args:
        c: (B, D) conditioning labels.
        probability: per-sample swap probability in [0, 1].
        generator: torch.Generator on ``c.device`` for the coin flips.

    Returns:
        (B, D) labels (a new tensor).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    coins = torch.rand((c.shape[0], 1), device=c.device, generator=generator)
    return torch.where(coins < probability, torch.roll(c, shifts=1, dims=0), c)


def lazy_regularization_adjustment(
    lr: float, betas: tuple[float, float], interval: int | None
) -> tuple[float, tuple[float, float]]:
    """StyleGAN2's optimiser correction for a regulariser applied every ``interval`` steps.

    With lazy regularisation the optimiser makes ``interval + 1`` updates per
    ``interval`` minibatches, so ``mb_ratio = interval / (interval + 1)``,
    ``lr' = lr * mb_ratio`` and ``beta' = beta ** mb_ratio``.

    Args:
        lr: learning rate.
        betas: Adam ``(beta1, beta2)``.
        interval: regularisation interval in steps, or ``None`` (no lazy regularisation: unchanged).

    Returns:
        ``(lr', (beta1', beta2'))``.
    """
    if interval is None:
        return lr, tuple(betas)
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    mb_ratio = interval / (interval + 1)
    return lr * mb_ratio, (math.pow(betas[0], mb_ratio), math.pow(betas[1], mb_ratio))
