"""Tests for headforge.nn.filters and headforge.nn.layers against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.signal import convolve2d, correlate2d

from headforge.nn.filters import (
    downsample2d,
    filter2d,
    filtered_resize,
    gaussian_blur,
    setup_filter,
    upfirdn2d,
    upsample2d,
)
from headforge.nn.layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    bias_act,
    conv2d_resample,
    normalize_2nd_moment,
)


def upfirdn2d_reference(x, f2d, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), gain=1.0, flip=False):
    """StyleGAN2's definition in numpy: zero-insert, pad/crop, full 2D FIR, keep every down-th sample."""
    ux, uy = up
    dx, dy = down
    px0, px1, py0, py1 = pad
    b, c, h, w = x.shape
    u = np.zeros((b, c, h * uy, w * ux))
    u[:, :, ::uy, ::ux] = x
    u = np.pad(u, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    u = u[:, :, max(-py0, 0) : u.shape[2] - max(-py1, 0), max(-px0, 0) : u.shape[3] - max(-px1, 0)]
    if u.shape[2] < f2d.shape[0] or u.shape[3] < f2d.shape[1]:
        return None  # no valid output
    op = correlate2d if flip else convolve2d
    y = np.stack([np.stack([op(u[i, j], f2d * gain, mode="valid") for j in range(c)]) for i in range(b)])
    return y[:, :, ::dy, ::dx]


@pytest.mark.parametrize(
    "taps",
    [
        [1.0, 3.0, 3.0, 1.0],  # StyleGAN's filter (run as one 2D pass)
        [0.5, 2.0, 1.0],  # odd, asymmetric
        [1.0, -2.0, 3.0, 0.5, 2.0, 1.0, 0.25, 1.5, -1.0, 2.0],  # long: two 1D passes
        [[0.3, -1.0, 2.0, 0.7], [1.1, 0.4, -0.6, 2.0], [0.9, 1.3, 0.2, -0.4]],  # non-separable 3x4
    ],
)
def test_upfirdn2d_matches_naive_reference(taps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 11, 13))
    taps_np = np.asarray(taps, dtype=np.float64)
    f2d = taps_np if taps_np.ndim == 2 else np.outer(taps_np, taps_np)
    f = torch.as_tensor(taps_np)  # float64 taps, unnormalised: tests the raw definition
    cases = 0
    for up in [(1, 1), (2, 2), (3, 2)]:
        for down in [(1, 1), (2, 2), (1, 3)]:
            for pad in [(0, 0, 0, 0), (2, 1, 2, 1), (-1, 3, 2, -2), (1, 2, 3, 0)]:
                for flip in (False, True):
                    expected = upfirdn2d_reference(x, f2d, up, down, pad, gain=1.7, flip=flip)
                    if expected is None or min(expected.shape) == 0:
                        continue
                    got = upfirdn2d(
                        torch.from_numpy(x),
                        f,
                        up=list(up),
                        down=list(down),
                        padding=list(pad),
                        gain=1.7,
                        flip_filter=flip,
                    )
                    assert got.shape == expected.shape, (up, down, pad)
                    np.testing.assert_allclose(
                        got.numpy(), expected, atol=1e-10, err_msg=str((up, down, pad, flip))
                    )
                    cases += 1
    assert cases > 50


def test_setup_filter_normalises_and_separable_equals_outer_product():
    f1 = setup_filter([1, 3, 3, 1])
    f2 = setup_filter([1, 3, 3, 1], separable=False)
    assert f1.shape == (4,) and f2.shape == (4, 4)
    assert torch.allclose(f2.sum(), torch.tensor(1.0))
    assert torch.allclose(torch.outer(f1, f1), f2)
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    for up, down in [(2, 1), (1, 2), (1, 1)]:
        a = upfirdn2d(x, f1.double(), up=up, down=down, padding=1)
        b = upfirdn2d(x, f2.double(), up=up, down=down, padding=1)
        torch.testing.assert_close(a, b)


def test_upsample2d_keeps_constant_image_constant_away_from_borders():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full((1, 2, 8, 8), 0.7)
    y = upsample2d(x, f)
    assert y.shape == (1, 2, 16, 16)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.full_like(y[:, :, 2:-2, 2:-2], 0.7))
    assert not torch.allclose(y[:, :, 0, 0], torch.tensor(0.7))  # zero padding shows at the border
    z = downsample2d(x, f)
    assert z.shape == (1, 2, 4, 4)
    torch.testing.assert_close(z[:, :, 1:-1, 1:-1], torch.full_like(z[:, :, 1:-1, 1:-1], 0.7))


def test_upsample2d_is_polyphase_bilinear_for_stylegan_filter():
    # With [1,3,3,1] and gain 4, even/odd outputs are 1/4-3/4 mixes of neighbours.
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 1, 1, 6, dtype=torch.float64).expand(1, 1, 6, 6).contiguous()
    y = upsample2d(x, f.double())
    row = y[0, 0, 6]  # interior row: the vertical filter sees a constant column
    xr = x[0, 0, 0]
    torch.testing.assert_close(row[2::2], 0.25 * xr[:-1] + 0.75 * xr[1:])
    torch.testing.assert_close(row[1:-1:2], 0.75 * xr[:-1] + 0.25 * xr[1:])


def test_filter2d_keeps_shape():
    x = torch.randn(2, 3, 7, 9)
    for taps in ([1, 2, 1], [1, 3, 3, 1]):
        assert filter2d(x, setup_filter(taps)).shape == x.shape


def test_gaussian_blur_matches_scipy_and_preserves_mass():
    rng = np.random.default_rng(1)
    img = np.zeros((1, 2, 40, 40))
    img[:, :, 12:28, 10:30] = rng.standard_normal((1, 2, 16, 20))
    sigma = 2.5
    out = gaussian_blur(torch.from_numpy(img).float(), sigma).double().numpy()
    for c in range(2):
        expected = gaussian_filter(img[0, c], sigma, truncate=3.0, mode="constant")
        np.testing.assert_allclose(out[0, c], expected, atol=2e-6)
    # The signal is zero within 3 sigma of the border, so no mass leaks out.
    np.testing.assert_allclose(out.sum(axis=(2, 3)), img.sum(axis=(2, 3)), rtol=1e-5, atol=1e-4)
    x = torch.randn(1, 1, 8, 8)
    assert gaussian_blur(x, 0.0) is x


def test_filtered_resize():
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(
        filtered_resize(x, 8),
        F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False, antialias=True),
    )
    assert filtered_resize(x, 16) is x
    const = torch.full((1, 3, 16, 16), -0.3)
    for size, filt in [
        (32, None),
        (64, None),
        (32, setup_filter([1, 3, 3, 1])),
        (8, setup_filter([1, 3, 3, 1])),
    ]:
        y = filtered_resize(const, size, filter=filt)
        assert y.shape == (1, 3, size, size)
        inner = y[:, :, 3:-3, 3:-3]
        torch.testing.assert_close(inner, torch.full_like(inner, -0.3))


def test_bias_act_formula():
    x = torch.randn(3, 5, 4)
    b = torch.randn(5)
    z = x + b[None, :, None]
    torch.testing.assert_close(bias_act(x, b, act="lrelu"), torch.where(z > 0, z, 0.2 * z) * math.sqrt(2))
    torch.testing.assert_close(bias_act(x, b, act="linear"), z)
    torch.testing.assert_close(bias_act(x, b, act="relu", gain=1.0, clamp=0.5), z.clamp(0, 0.5))
    torch.testing.assert_close(
        bias_act(x, b, act="lrelu", alpha=0.1, gain=2.0), torch.where(z > 0, z, 0.1 * z) * 2
    )
    b_last = torch.randn(4)
    torch.testing.assert_close(bias_act(x, b_last, dim=2, act="linear"), x + b_last)


def test_normalize_2nd_moment():
    x = torch.randn(4, 32) * 7
    y = normalize_2nd_moment(x)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(4), rtol=1e-5, atol=1e-5)


def test_fully_connected_equalised_lr():
    torch.manual_seed(0)
    for lr_multiplier in (1.0, 0.01):
        layer = FullyConnectedLayer(512, 512, lr_multiplier=lr_multiplier, bias_init=0.5)
        assert math.isclose(layer.weight_gain, lr_multiplier / math.sqrt(512))
        x = torch.randn(2048, 512)
        y = layer(x)
        # Effective weight ~ N(0, 1/fan_in): unit-variance input -> unit-variance output, bias 0.5.
        assert abs(y.mean().item() - 0.5) < 0.05
        assert abs(y.std().item() - 1.0) < 0.05
    # The stored weight's gradient is the effective weight's gradient times its gain.
    layer = FullyConnectedLayer(8, 3, lr_multiplier=0.01)
    x = torch.randn(5, 8)
    layer(x).square().sum().backward()
    w_eff = (layer.weight * layer.weight_gain).detach().requires_grad_(True)
    (x @ w_eff.t() + layer.bias.detach() * layer.bias_gain).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, w_eff.grad * layer.weight_gain)


def test_conv2d_layer_output_scale():
    torch.manual_seed(0)
    layer = Conv2dLayer(64, 64, kernel_size=3)
    assert math.isclose(layer.weight_gain, 1 / math.sqrt(64 * 9))
    y = layer(torch.randn(8, 64, 16, 16))
    assert abs(y[:, :, 1:-1, 1:-1].std().item() - 1.0) < 0.05


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("flip_weight", [True, False])
def test_conv2d_resample_matches_sequential_definition(kernel, flip_weight):
    """Up: conv(upsample2d(x)); down: downsample2d(conv(x)); equal away from the borders."""
    torch.manual_seed(0)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 4, 10, 10, dtype=torch.float64)
    w = torch.randn(5, 4, kernel, kernel, dtype=torch.float64)
    w_corr = w if flip_weight else w.flip([2, 3])  # conv2d correlates
    pad = kernel // 2
    up = conv2d_resample(x, w, f, up=2, padding=pad, flip_weight=flip_weight)
    up_ref = F.conv2d(upsample2d(x, f), w_corr, padding=pad)
    assert up.shape == (2, 5, 20, 20)
    torch.testing.assert_close(up[:, :, 3:-3, 3:-3], up_ref[:, :, 3:-3, 3:-3])
    down = conv2d_resample(x, w, f, down=2, padding=pad, flip_weight=flip_weight)
    down_ref = downsample2d(F.conv2d(x, w_corr, padding=pad), f)
    assert down.shape == (2, 5, 5, 5)
    torch.testing.assert_close(down[:, :, 2:-2, 2:-2], down_ref[:, :, 2:-2, 2:-2])


def test_conv2d_resample_channels_last_matches_contiguous():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 6, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    for up, down in [(2, 1), (1, 2), (1, 1)]:
        a = conv2d_resample(x, w, f, up=up, down=down, padding=1, groups=2, flip_weight=up == 1)
        b = conv2d_resample(
            x.contiguous(memory_format=torch.channels_last),
            w,
            f,
            up=up,
            down=down,
            padding=1,
            groups=2,
            flip_weight=up == 1,
        )
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gradcheck_filters_and_layers():
    torch.manual_seed(0)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: upfirdn2d(t, f, up=2, down=1, padding=[2, 1, 2, 1], gain=4), (x,)
    )
    assert torch.autograd.gradcheck(lambda t: downsample2d(t, f), (x,))
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 0.8), (x,))
    conv = Conv2dLayer(2, 3, 3, activation="lrelu", down=2).double()
    assert torch.autograd.gradcheck(
        lambda t, w, b: _conv_with(conv, t, w, b), (x, _leaf(conv.weight), _leaf(conv.bias))
    )
    fc = FullyConnectedLayer(4, 3, activation="lrelu", lr_multiplier=0.1).double()
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fc, (z,))


def _leaf(p: torch.Tensor) -> torch.Tensor:
    return p.detach().clone().requires_grad_(True)


def _conv_with(layer: Conv2dLayer, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Run ``layer`` with substitute parameters (so gradcheck can perturb them)."""
    return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,))
