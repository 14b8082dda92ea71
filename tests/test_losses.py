"""GAN losses, regularisers, schedules and EMA against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from headforge.training.ema import ExponentialMovingAverage, ema_beta, update_ema
from headforge.training.losses import (
    density_monotonic_regularizer,
    density_regularizer,
    discriminator_logistic_loss,
    lazy_regularization_adjustment,
    nonsaturating_generator_loss,
    r1_penalty,
    swap_conditioning,
)
from headforge.training.schedules import (
    blur_sigma,
    conditioning_swap_probability,
    kimg_to_steps,
    neural_rendering_resolution,
)


def test_logistic_losses_closed_form():
    logits = torch.tensor([[-3.0], [0.0], [2.0], [40.0]], dtype=torch.float64)
    expected_g = torch.log1p(torch.exp(-logits))
    assert torch.allclose(nonsaturating_generator_loss(logits), expected_g)
    assert nonsaturating_generator_loss(torch.zeros(1)).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([1.5, -0.5]), torch.tensor([0.25, -2.0])
    expected_d = -torch.log(torch.sigmoid(real)) - torch.log(1 - torch.sigmoid(fake))
    assert torch.allclose(discriminator_logistic_loss(real, fake), expected_d, atol=1e-6)


def test_r1_penalty_matches_closed_form_and_is_differentiable():
    torch.manual_seed(0)
    batch = 5
    a = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64)
    image = torch.randn(batch, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    raw = torch.randn(batch, 6, dtype=torch.float64, requires_grad=True)
    # D(x, y) = <a, x> + sum(b * y^2): dD/dx = a, dD/dy = 2 b y.
    logits = (image * a).flatten(1).sum(1, keepdim=True) + (b * raw.square()).sum(1, keepdim=True)
    penalty = r1_penalty(logits, [image, raw])
    expected = a.detach().square().sum() + (2 * b * raw.detach()).square().sum(1)
    assert penalty.shape == (batch,)
    assert torch.allclose(penalty, expected)
    # create_graph=True: the penalty back-propagates into D's parameters, d/da sum_b ||a||^2 = 2 B a.
    (grad_a,) = torch.autograd.grad(penalty.sum(), a)
    assert torch.allclose(grad_a, 2 * batch * a.detach())


def test_density_regularizer_closed_forms():
    generator = torch.Generator().manual_seed(0)
    seen = []

    def constant(points):
        seen.append(points)
        return torch.full(points.shape[:2] + (1,), 3.0)

    assert density_regularizer(constant, batch=2, num_points=50, generator=generator).item() == 0.0
    points = seen[0]
    assert points.shape == (2, 100, 3) and points[:, :50].abs().max() <= 0.5

    # For a linear field sigma = <k, x>, E|sigma(x) - sigma(x + j n)| = j |k| sqrt(2 / pi).
    k = torch.tensor([3.0, -4.0, 0.0])
    linear = density_regularizer(lambda p: p @ k, batch=4, num_points=20000, jitter=0.01, generator=generator)
    assert linear.item() == pytest.approx(0.01 * 5.0 * math.sqrt(2 / math.pi), rel=0.03)

    def noisy(points):
        return torch.randn(points.shape[:2], generator=torch.Generator().manual_seed(1))

    assert density_regularizer(noisy, batch=2, num_points=100, generator=generator).item() > 0.5


def test_density_monotonic_regularizer_closed_forms():
    # Density rising into the head (-z) is fine; density falling by z costs exactly the step.
    rising = density_monotonic_regularizer(lambda p: -p[..., 2:], batch=2, num_points=100)
    falling = density_monotonic_regularizer(lambda p: p[..., 2:], batch=2, num_points=100, step=0.01)
    assert rising.item() == 0.0
    assert falling.item() == pytest.approx(0.01, rel=1e-4)


def test_swap_conditioning_probabilities():
    c = torch.arange(12.0).view(6, 2)
    assert torch.equal(swap_conditioning(c, 0.0), c)
    assert torch.equal(swap_conditioning(c, 1.0), torch.roll(c, 1, 0))
    many = torch.arange(4000.0).view(-1, 1)
    swapped = swap_conditioning(many, 0.3, torch.Generator().manual_seed(2))
    fraction = (swapped != many).float().mean().item()
    assert fraction == pytest.approx(0.3, abs=0.05)
    again = swap_conditioning(many, 0.3, torch.Generator().manual_seed(2))
    assert torch.equal(swapped, again)
    with pytest.raises(ValueError):
        swap_conditioning(c, 1.5)


def test_lazy_regularization_adjustment():
    lr, betas = lazy_regularization_adjustment(0.002, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.002 * 16 / 17)
    assert betas == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert lazy_regularization_adjustment(0.002, (0.5, 0.9), None) == (0.002, (0.5, 0.9))


def test_schedules_at_key_points():
    assert blur_sigma(0) == 10.0
    assert blur_sigma(100_000) == pytest.approx(5.0)
    assert blur_sigma(200_000) == 0.0 and blur_sigma(10**7) == 0.0
    assert blur_sigma(0, fade_kimg=0) == 0.0
    assert neural_rendering_resolution(0, 64, 128, 1000) == 64
    assert neural_rendering_resolution(500_000, 64, 128, 1000) == 96
    assert neural_rendering_resolution(250_000, 64, 128, 1000) == 80
    assert neural_rendering_resolution(5_000_000, 64, 128, 1000) == 128
    assert neural_rendering_resolution(5_000_000, 64, None) == 64
    assert conditioning_swap_probability(0, 0.5) == 1.0
    assert conditioning_swap_probability(500_000, 0.5) == pytest.approx(0.75)
    assert conditioning_swap_probability(10**7, 0.5) == 0.5
    assert conditioning_swap_probability(0, None) is None
    assert kimg_to_steps(1, 32) == 32
    assert kimg_to_steps(0.3, 3) == 100
    assert kimg_to_steps(25000, 32) == 781250


def test_ema_beta_half_life():
    assert ema_beta(32, 0, ema_kimg=10, ema_rampup=0.05) == 0.0  # starts as a copy
    beta = ema_beta(32, 10**9, ema_kimg=10, ema_rampup=0.05)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)  # half-life of 10 kimg
    assert ema_beta(32, 1000, ema_kimg=10, ema_rampup=0.05) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(32, 0, ema_kimg=10, ema_rampup=None) == pytest.approx(0.5 ** (32 / 10_000))


def test_update_ema_blends_parameters_and_copies_buffers():
    torch.manual_seed(0)
    source, average = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        source.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        average.weight.copy_(torch.tensor([3.0, 2.0, 1.0]))
        source.running_mean.fill_(7.0)
    source.num_batches_tracked += 5
    update_ema(average, source, beta=0.25)
    assert torch.allclose(
        average.weight, 0.25 * torch.tensor([3.0, 2.0, 1.0]) + 0.75 * torch.tensor([1.0, 2.0, 3.0])
    )
    assert torch.equal(average.running_mean, torch.full((3,), 7.0))
    assert average.num_batches_tracked.item() == 5
    beta = ExponentialMovingAverage(ema_kimg=0.01, ema_rampup=None).update(average, source, 4, cur_nimg=0)
    assert beta == pytest.approx(0.5 ** (4 / 10))
    with pytest.raises(ValueError, match="does not match"):
        update_ema(nn.Linear(2, 2), nn.Linear(2, 2, bias=False), 0.5)
