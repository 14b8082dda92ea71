"""Tests for headforge.nn.warp: closed forms, round trips and finite-difference gradients."""

from __future__ import annotations

import math

import pytest
import torch

from headforge.nn.warp import (
    compose,
    conjugate,
    displacement_magnitude,
    displacement_roughness,
    field_gradients,
    identity_grid,
    invert,
    limit_lipschitz,
    lipschitz_bound,
    mask_displacement,
    minimal_deformation_loss,
    resize_displacement,
    smoothness_loss,
    warp,
    warp_planes,
    warp_rolled_out,
)

F64 = torch.float64


def coords(height: int, width: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre x and y, each (H, W), built independently of identity_grid."""
    xs = torch.tensor([-1 + (2 * i + 1) / width for i in range(width)], dtype=dtype)
    ys = torch.tensor([-1 + (2 * i + 1) / height for i in range(height)], dtype=dtype)
    return xs[None, :].expand(height, width), ys[:, None].expand(height, width)


def affine_field(matrix, offset, height: int, width: int) -> torch.Tensor:
    """d(x) = A x + b as a (1, 2, H, W) float64 field."""
    x, y = coords(height, width)
    a = torch.as_tensor(matrix, dtype=F64)
    b = torch.as_tensor(offset, dtype=F64)
    dx = a[0, 0] * x + a[0, 1] * y + b[0]
    dy = a[1, 0] * x + a[1, 1] * y + b[1]
    return torch.stack((dx, dy))[None]


def smooth_field(batch: int, height: int, width: int, lipschitz: float, seed: int) -> torch.Tensor:
    """Random low-frequency field (B, 2, H, W) scaled so that lipschitz_bound == lipschitz."""
    g = torch.Generator().manual_seed(seed)
    x, y = coords(height, width)
    field = torch.zeros(batch, 2, height, width, dtype=F64)
    for _ in range(3):
        freq = torch.rand(batch, 2, 2, 1, 1, generator=g, dtype=F64) * 2 + 0.3
        phase = torch.rand(batch, 2, 1, 1, generator=g, dtype=F64) * 2 * math.pi
        amp = torch.rand(batch, 2, 1, 1, generator=g, dtype=F64) + 0.5
        field += amp * torch.sin(math.pi * (freq[:, :, 0] * x + freq[:, :, 1] * y) + phase)
    return field * (lipschitz / lipschitz_bound(field))[:, None, None, None]


def smooth_features(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    x, y = coords(height, width)
    maps = [torch.sin(1.3 * x + 0.7 * k) * torch.cos(1.1 * y - 0.4 * k) for k in range(batch * channels)]
    return torch.stack(maps).reshape(batch, channels, height, width)


def gaussian_bump(x, y, centre, sigma: float, amplitude=(0.08, -0.05)) -> torch.Tensor:
    """(1, 2, H, W) bump field b(p) = amplitude * exp(-|p - c|^2 / (2 sigma^2))."""
    weight = torch.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))
    return torch.stack((amplitude[0] * weight, amplitude[1] * weight))[None]


def interior(tensor: torch.Tensor, margin: int) -> torch.Tensor:
    return tensor[..., margin:-margin, margin:-margin]


# ---------------------------------------------------------------------------------- warp


@pytest.mark.parametrize("size", [(32, 32), (16, 64)])
def test_identity_grid_and_zero_field_are_exact(size):
    height, width = size
    grid = identity_grid(height, width, dtype=F64)
    x, y = coords(height, width)
    assert grid.shape == (1, height, width, 2)
    assert torch.equal(grid[0, ..., 0], x) and torch.equal(grid[0, ..., 1], y)
    features = torch.randn(2, 3, height, width)
    assert torch.equal(warp(features, torch.zeros(2, 2, height, width)), features)


def test_zero_field_non_power_of_two_within_rounding():
    features = torch.randn(1, 2, 20, 24)
    assert torch.allclose(warp(features, torch.zeros(1, 2, 20, 24)), features, atol=1e-5)


@pytest.mark.parametrize("shift", [(3, 0), (-2, 5), (4, -1)])
def test_constant_pixel_shift_is_a_roll(shift):
    kx, ky = shift
    height, width = 32, 32
    features = torch.randn(2, 4, height, width, dtype=F64)
    field = torch.zeros(1, 2, height, width, dtype=F64)
    field[:, 0], field[:, 1] = 2 * kx / width, 2 * ky / height
    out = warp(features, field)
    # out(x) = f(x + k): the content moves by -k, as torch.roll with negative shifts.
    expected = torch.roll(features, shifts=(-ky, -kx), dims=(-2, -1))
    margin = max(abs(kx), abs(ky))
    assert torch.allclose(interior(out, margin), interior(expected, margin), atol=1e-12)


def test_half_pixel_shift_averages_neighbours_and_zeros_padding():
    features = torch.randn(1, 1, 8, 8, dtype=F64)
    field = torch.zeros(1, 2, 8, 8, dtype=F64)
    field[:, 0] = 1 / 8  # half a pixel to the right
    out = warp(features, field)
    assert torch.allclose(out[..., :-1], 0.5 * (features[..., :-1] + features[..., 1:]), atol=1e-12)
    field[:, 0] = 3.0  # far outside the image
    assert torch.equal(warp(features, field, padding_mode="zeros"), torch.zeros_like(features))


def test_warp_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="resize_displacement"):
        warp(torch.zeros(1, 3, 16, 16), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="broadcast"):
        warp(torch.zeros(2, 3, 8, 8), torch.zeros(3, 2, 8, 8))


def test_warp_planes_and_rolled_out_keep_planes_apart():
    batch, height, width = 2, 8, 8
    planes = torch.arange(3, dtype=F64).reshape(1, 3, 1, 1, 1).expand(batch, 3, 2, height, width).clone()
    shift = torch.zeros(batch, 2, height, width, dtype=F64)
    shift[:, 0] = 0.9  # ~3.6 pixels: on the rolled-out strip this would read the next plane
    warped = warp_planes(planes, shift)
    assert torch.equal(warped, planes)
    strip = torch.cat(planes.unbind(1), dim=-1)  # (B, C, H, 3W)
    assert torch.equal(warp_rolled_out(strip, shift), strip)
    # Per-plane fields: plane p warped by its own field, as separate warp calls.
    content = torch.randn(batch, 3, 2, height, width, dtype=F64)
    fields = torch.stack([smooth_field(batch, height, width, 0.4, seed) for seed in range(3)], dim=1) * 0.3
    expected = torch.stack([warp(content[:, p], fields[:, p]) for p in range(3)], dim=1)
    assert torch.allclose(warp_planes(content, fields), expected, atol=1e-12)
    rolled = warp_rolled_out(torch.cat(content.unbind(1), dim=-1), fields)
    assert torch.allclose(rolled, torch.cat(expected.unbind(1), dim=-1), atol=1e-12)


def test_resize_keeps_normalised_values():
    field = affine_field([[0.3, -0.1], [0.2, 0.05]], [0.1, -0.2], 32, 32)
    resized = resize_displacement(field, 64, 48)
    expected = affine_field([[0.3, -0.1], [0.2, 0.05]], [0.1, -0.2], 64, 48)
    assert resized.shape == (1, 2, 64, 48)
    assert torch.allclose(interior(resized, 2), interior(expected, 2), atol=1e-12)


# ------------------------------------------------------------------------------- compose


def test_compose_of_affine_maps_in_documented_order():
    height = width = 32
    a_mat, a_off = torch.tensor([[0.2, 0.05], [-0.1, 0.1]], dtype=F64), torch.tensor([0.1, -0.05], dtype=F64)
    b_mat, b_off = torch.tensor([[-0.15, 0.0], [0.1, 0.2]], dtype=F64), torch.tensor([-0.05, 0.1], dtype=F64)
    a = affine_field(a_mat, a_off, height, width)
    b = affine_field(b_mat, b_off, height, width)
    # T_a(T_b(x)) = (I + A)((I + B) x + b) + a  ->  displacement = that - x.
    eye = torch.eye(2, dtype=F64)
    matrix = (eye + a_mat) @ (eye + b_mat) - eye
    offset = (eye + a_mat) @ b_off + a_off
    expected = affine_field(matrix, offset, height, width)
    assert torch.allclose(interior(compose(a, b), 6), interior(expected, 6), atol=1e-12)
    # The other order is a different map: the test would catch a swapped implementation.
    assert not torch.allclose(interior(compose(b, a), 6), interior(expected, 6), atol=1e-3)


def test_compose_matches_sequential_warping():
    height = width = 64
    features = smooth_features(2, 3, height, width)
    a = smooth_field(2, height, width, 0.4, seed=1)
    b = smooth_field(2, height, width, 0.4, seed=2)
    sequential = warp(warp(features, a), b)
    fused = warp(features, compose(a, b))
    error = (interior(sequential, 8) - interior(fused, 8)).abs().max()
    wrong_order = (interior(sequential, 8) - interior(warp(features, compose(b, a)), 8)).abs().max()
    assert error < 2e-3
    assert wrong_order > 10 * error


# -------------------------------------------------------------------------------- invert


@pytest.mark.parametrize(("size", "left_tolerance"), [(32, 8e-3), (64, 2e-3)])
def test_invert_round_trip_on_smooth_fields(size, left_tolerance):
    field = smooth_field(3, size, size, 0.5, seed=size)
    assert field.abs().max() > 0.05  # a real deformation, several pixels
    inverse, residual = invert(field, return_residual=True)
    error = torch.linalg.vector_norm(compose(field, inverse), dim=1).amax()  # T_d o T_e - id
    naive = torch.linalg.vector_norm(compose(field, -field), dim=1).amax()
    assert error < 1e-3
    assert naive > 100 * error
    assert torch.allclose(residual, torch.linalg.vector_norm(compose(field, inverse), dim=1).amax((1, 2)))
    # Left inverse too (T_e o T_d = id), up to the interpolation of e (O(pixel^2)); interior only.
    other_side = torch.linalg.vector_norm(interior(compose(inverse, field), 8), dim=1).amax()
    assert other_side < left_tolerance


def test_invert_affine_field_matches_closed_form():
    height = width = 32
    matrix, offset = (
        torch.tensor([[0.2, -0.1], [0.15, 0.1]], dtype=F64),
        torch.tensor([0.05, -0.03], dtype=F64),
    )
    field = affine_field(matrix, offset, height, width)
    inverse = invert(field, iterations=60)
    # T^-1(y) = (I + A)^-1 (y - b); e(y) = T^-1(y) - y.
    inv_matrix = torch.linalg.inv(torch.eye(2, dtype=F64) + matrix)
    expected = affine_field(inv_matrix - torch.eye(2, dtype=F64), -inv_matrix @ offset, height, width)
    assert torch.allclose(interior(inverse, 7), interior(expected, 7), atol=1e-9)


def test_invert_early_stop_and_zero_field():
    field = smooth_field(1, 16, 16, 0.5, seed=3) * 0.5
    inverse, residual = invert(field, iterations=200, tolerance=1e-4, return_residual=True)
    assert residual.item() < 1e-4
    full = invert(field, iterations=200)
    assert (inverse - full).abs().max() < 1e-4
    zero = torch.zeros(1, 2, 8, 8)
    assert torch.equal(invert(zero), zero)


def test_invert_gradients_match_finite_differences():
    field = (smooth_field(1, 5, 5, 0.4, seed=7) * 0.3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: invert(d, iterations=3), (field,), eps=1e-6, atol=1e-6)


def test_lipschitz_bound_and_smoothness_of_affine_field():
    matrix = torch.tensor([[0.3, -0.4], [0.1, 0.2]], dtype=F64)
    field = affine_field(matrix, [0.1, 0.0], 16, 16)
    assert torch.allclose(lipschitz_bound(field), torch.linalg.matrix_norm(matrix)[None])
    assert torch.allclose(smoothness_loss(field), torch.linalg.matrix_norm(matrix) ** 2 / 2)
    ddx, ddy = field_gradients(field)
    assert ddx.shape == (1, 2, 16, 15) and ddy.shape == (1, 2, 15, 16)


# ----------------------------------------------------------------------------- conjugate


def test_conjugate_with_zero_shape_is_the_expression_field():
    d_exp = smooth_field(2, 32, 32, 0.5, seed=11).float()
    assert torch.equal(conjugate(torch.zeros_like(d_exp), d_exp), d_exp)


def test_conjugate_with_zero_expression_is_identity():
    d_shape = smooth_field(2, 32, 32, 0.5, seed=12)
    assert d_shape.abs().max() > 0.05
    assert torch.equal(conjugate(d_shape, torch.zeros_like(d_shape)), torch.zeros_like(d_shape))


def test_conjugate_matches_composition_with_the_inverse_and_has_gradients():
    d_shape = smooth_field(2, 64, 64, 0.5, seed=13)
    d_exp = smooth_field(1, 64, 64, 0.5, seed=14)  # one expression broadcast over identities
    fused = conjugate(d_shape, d_exp)
    via_inverse = compose(compose(invert(d_shape), d_exp), d_shape)
    assert fused.shape == (2, 2, 64, 64)
    assert (interior(fused, 8) - interior(via_inverse, 8)).abs().max() < 3e-3
    small_shape = (smooth_field(1, 5, 5, 0.4, seed=15) * 0.3).requires_grad_(True)
    small_exp = (smooth_field(1, 5, 5, 0.4, seed=16) * 0.3).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda s, e: conjugate(s, e, iterations=3), (small_shape, small_exp), eps=1e-6, atol=1e-6
    )


def test_conjugate_translation_moves_the_bump():
    height = width = 64
    x, y = coords(height, width)
    translation = (0.2, -0.1)
    d_shape = torch.zeros(1, 2, height, width, dtype=F64)
    d_shape[:, 0], d_shape[:, 1] = translation
    centre = (0.1, 0.05)
    d_exp = gaussian_bump(x, y, centre, 0.2)
    fused = conjugate(d_shape, d_exp)
    # T_shape^-1(T_exp(T_shape(x))) = x + b(x + t - c): the bump sits at c - t.
    moved = (centre[0] - translation[0], centre[1] - translation[1])
    expected = gaussian_bump(x, y, moved, 0.2)
    assert (interior(fused, 10) - interior(expected, 10)).abs().max() < 1e-3
    # Centred where predicted, not at c (or c + t).
    peak = torch.linalg.vector_norm(fused, dim=1)[0].argmax()
    assert abs(x.flatten()[peak] - moved[0]) < 0.04 and abs(y.flatten()[peak] - moved[1]) < 0.04


def test_conjugate_scale_matches_closed_form_and_sequential_warps():
    height = width = 64
    x, y = coords(height, width)
    scale, centre = 1.2, (0.15, -0.1)
    d_shape = torch.stack(((scale - 1) * x, (scale - 1) * y))[None]  # T_shape(x) = s x
    d_exp = gaussian_bump(x, y, centre, 0.2)
    fused = conjugate(d_shape, d_exp)
    # T(x) = (s x + b(s x - c)) / s  ->  displacement b(s x - c) / s.
    expected = gaussian_bump(scale * x, scale * y, centre, 0.2) / scale
    assert (interior(fused, 7) - interior(expected, 7)).abs().max() < 1e-3
    features = smooth_features(1, 2, height, width)
    three_warps = warp(warp(warp(features, invert(d_shape)), d_exp), d_shape)
    assert (interior(warp(features, fused), 7) - interior(three_warps, 7)).abs().max() < 3e-3


# ----------------------------------------------------------------------- mask and losses


def test_mask_displacement():
    field = smooth_field(2, 16, 16, 0.5, seed=5)
    mask = torch.zeros(1, 1, 16, 16, dtype=F64)
    mask[..., 4:12, 4:12] = 1.0
    masked = mask_displacement(field, mask)
    assert torch.equal(masked[..., 4:12, 4:12], field[..., 4:12, 4:12])
    assert torch.equal(masked[..., :4, :], torch.zeros_like(masked[..., :4, :]))
    # A mask drawn at another resolution is resampled; all-ones stays all-ones.
    assert torch.allclose(mask_displacement(field, torch.ones(2, 1, 64, 64)), field)


def test_minimal_loss_hand_computed():
    zero = torch.zeros(2, 2, 32, 32, requires_grad=True)
    loss = minimal_deformation_loss(zero, zero)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(zero.grad).all()
    d_shape = torch.zeros(1, 2, 4, 4)
    d_shape[:, 0], d_shape[:, 1] = 0.03, 0.04  # |d| = 0.05 everywhere
    d_exp = torch.zeros(1, 2, 4, 4)
    d_exp[:, 0, :2], d_exp[:, 1, :2] = 0.6, 0.8  # |d| = 1 on half the pixels -> mean 0.5
    assert displacement_magnitude(d_exp).item() == pytest.approx(0.5)
    # alpha weights the shape field, beta the expression field (paper: 1 and 0.1).
    assert minimal_deformation_loss(d_shape, d_exp).item() == pytest.approx(1.0 * 0.05 + 0.1 * 0.5)
    assert minimal_deformation_loss(d_shape, d_exp, alpha=0.0, beta=1.0).item() == pytest.approx(0.5)
    assert minimal_deformation_loss(None, d_exp).item() == pytest.approx(0.05)


def test_roughness_is_zero_for_translations_and_exact_for_linear_fields():
    translation = torch.zeros(1, 2, 8, 8, dtype=F64)
    translation[:, 0], translation[:, 1] = 0.3, -0.2
    assert displacement_roughness(translation).item() == 0.0
    # d(x, y) = A (x, y) on the pixel-centre grid: forward differences are A's columns times 2 / size.
    grid = identity_grid(8, 8, dtype=F64)[0]  # (8, 8, 2): x, y
    a = torch.tensor([[0.1, -0.3], [0.4, 0.2]], dtype=F64)
    linear = torch.einsum("ij,hwj->ihw", a, grid)[None]
    step = 2.0 / 8
    expected = torch.linalg.vector_norm(a[:, 1]) * step + torch.linalg.vector_norm(a[:, 0]) * step
    assert displacement_roughness(linear).item() == pytest.approx(expected.item())
    # In the loss it adds to each field's magnitude with the smoothness weight.
    loss = minimal_deformation_loss(linear, translation, alpha=2.0, beta=0.5, smoothness=3.0)
    by_hand = 2.0 * (displacement_magnitude(linear) + 3.0 * expected) + 0.5 * displacement_magnitude(
        translation
    )
    assert loss.item() == pytest.approx(by_hand.item())
    assert minimal_deformation_loss(linear, translation, smoothness=0.0) == minimal_deformation_loss(
        linear, translation
    )


def test_truncated_backprop_keeps_the_forward_field_and_differentiates_the_last_step():
    d_shape = (smooth_field(2, 16, 16, 0.4, seed=21) * 0.5).requires_grad_(True)
    d_exp = (smooth_field(2, 16, 16, 0.4, seed=22) * 0.5).requires_grad_(True)
    exact = conjugate(d_shape, d_exp, iterations=12)
    truncated = conjugate(d_shape, d_exp, iterations=12, backprop_steps=1)
    assert torch.equal(exact, truncated)  # the same arithmetic, only autograd differs
    # By hand: 11 steps as constants, then u = target - d_shape(x + u_11) with gradients.
    weights = smooth_field(2, 16, 16, 0.4, seed=23)
    (truncated * weights).sum().backward()
    grads = d_shape.grad.clone(), d_exp.grad.clone()
    d_shape.grad = d_exp.grad = None
    iterate = conjugate(d_shape, d_exp, iterations=11).detach()
    last = compose(d_exp, d_shape) - warp(d_shape, iterate)
    (last * weights).sum().backward()
    assert torch.allclose(grads[0], d_shape.grad) and torch.allclose(grads[1], d_exp.grad)
    with pytest.raises(ValueError, match="backprop_steps"):
        conjugate(d_shape, d_exp, backprop_steps=0)


def test_truncated_backprop_stays_bounded_on_a_folding_shape_field():
    # A shape field with Lip > 1 (it folds): the fixed-point map is no contraction.
    x, y = coords(32, 32)
    d_shape = torch.stack((0.25 * torch.sin(9 * y), 0.25 * torch.sin(9 * x)))[None]
    assert lipschitz_bound(d_shape) > 1.5
    d_exp = gaussian_bump(x, y, (0.0, 0.0), 0.3)

    def gradient_norm(backprop_steps: int | None) -> float:
        shape = d_shape.clone().requires_grad_(True)
        conjugate(shape, d_exp, iterations=20, backprop_steps=backprop_steps).square().sum().backward()
        return float(shape.grad.norm())

    one_step = gradient_norm(1)
    # The unrolled gradient multiplies ~20 Jacobians of norm > 1; one step's does not.
    assert gradient_norm(None) > 30 * one_step
    assert one_step < 100


def test_limit_lipschitz_caps_steep_fields_and_leaves_gentle_ones():
    gentle = smooth_field(1, 32, 32, 0.5, seed=31)
    assert torch.equal(limit_lipschitz(gentle, 0.9), gentle)
    steep = smooth_field(2, 32, 32, 3.0, seed=32)
    capped = limit_lipschitz(steep, 0.9)
    assert torch.allclose(lipschitz_bound(capped), torch.full((2,), 0.9, dtype=F64))
    assert torch.allclose(capped * 3.0 / 0.9, steep)  # the same field, only less steep
    # The capped field is invertible: the fixed point converges (not so the steep one).
    _, residual = invert(capped, iterations=200, return_residual=True)
    _, steep_residual = invert(steep, iterations=200, return_residual=True)
    assert residual.amax() < 1e-6 < steep_residual.amin()
    with pytest.raises(ValueError, match="limit"):
        limit_lipschitz(steep, 0.0)
