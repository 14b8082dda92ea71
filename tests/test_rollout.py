"""Rolled-out tri-plane synthesis: axis pooling against a direct reference, per-plane layers, bookkeeping."""

from __future__ import annotations

import pytest
import torch

from headforge.nn.filters import setup_filter, upsample2d
from headforge.nn.layers import conv2d_resample
from headforge.nn.rollout import (
    RolloutSynthesisBlock,
    RolloutSynthesisLayer,
    RolloutSynthesisNetwork,
    RolloutToPlanes,
    _border_lines,
    axis_aware_convolution,
    axis_pooled_context,
    roll_in,
    roll_out,
    split_block_ws,
    upsample_planes,
)
from headforge.nn.triplane import PLANE_LAYOUTS


def reference_context(planes: torch.Tensor, layout: str) -> torch.Tensor:
    """Axis pooling pixel by pixel from the layout's axes (slow, obvious)."""
    batch, _, channels, size, _ = planes.shape
    axes = PLANE_LAYOUTS[layout]
    out = torch.zeros(batch, 3, 2 * channels, size, size, dtype=planes.dtype)
    for target in range(3):
        sources = [q for q in range(3) if q != target]
        for slot, source in enumerate(sources):
            (shared,) = set(axes[target]) & set(axes[source])
            for row in range(size):
                for col in range(size):
                    # Pixel (row, col) of the target has u = col, v = row along its axes.
                    index = col if axes[target][0] == shared else row
                    plane = planes[:, source]
                    line = plane[:, :, :, index] if axes[source][0] == shared else plane[:, :, index, :]
                    out[:, target, slot * channels : (slot + 1) * channels, row, col] = line.mean(dim=-1)
    return out


def test_roll_out_round_trip_and_layout() -> None:
    planes = torch.randn(2, 3, 4, 5, 5)
    strip = roll_out(planes)
    assert strip.shape == (2, 4, 5, 15)
    assert torch.equal(strip[..., 5:10], planes[:, 1])
    assert torch.equal(roll_in(strip), planes)
    with pytest.raises(ValueError):
        roll_in(torch.zeros(1, 2, 3, 7))


def test_axis_pooling_matches_reference() -> None:
    planes = torch.randn(2, 3, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(axis_pooled_context(planes), reference_context(planes, "xy_xz_yz"))


def test_axis_pooling_passes_a_profile_along_the_shared_axis() -> None:
    """XZ varying only with x: XY's context from XZ is that profile along XY's x axis (its width)."""
    size = 8
    profile = torch.linspace(-1, 1, size)
    planes = torch.zeros(1, 3, 1, size, size)
    planes[0, 1, 0] = profile[None, :]  # XZ: x along width, constant along z (height)
    context = axis_pooled_context(planes)
    assert torch.equal(context[0, 0, 0], profile[None, :].expand(size, size))  # XY's slot 0 = from XZ
    # YZ shares z with XZ, which is constant: YZ sees XZ's mean everywhere.
    torch.testing.assert_close(context[0, 2, 0], torch.full((size, size), float(profile.mean())))


def test_axis_pooling_gradient_and_bad_layout() -> None:
    planes = torch.randn(1, 3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_pooled_context, (planes,))
    with pytest.raises(ValueError, match="share exactly one axis"):
        axis_pooled_context(planes.detach(), layout="eg3d")


def explicit_mixing_reference(layer: RolloutSynthesisLayer, x: torch.Tensor, w: torch.Tensor, **kwargs):
    """The layer's definition: its shared SynthesisLayer on [plane, axis_pooled_context] per plane."""
    mixed = torch.cat([x, axis_pooled_context(x)], dim=2)
    return torch.stack([layer.layer(mixed[:, p], w, noise_mode="const", **kwargs) for p in range(3)], dim=1)


@pytest.mark.parametrize("up", [1, 2])
def test_axis_aware_convolution_equals_the_convolution_of_the_mixed_input(up: int) -> None:
    """The strip-and-stitch form against conv2d_resample over [plane, context], values and gradients.

    Sizes run from one line to well past the stitching threshold (a strip of 3 lines at up = 1
    and up = 2), so any line the border count misses shows up as a mismatch.
    """
    taps, padding, kernel = 4, 1, 3
    f = setup_filter([1, 3, 3, 1])
    border = _border_lines(kernel, padding, taps, up)
    assert border == (1 if up == 1 else 2)

    def convolve(images: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return conv2d_resample(images, weight, f=f.double(), up=up, padding=padding, flip_weight=up == 1)

    for size in range(1, 10):
        torch.manual_seed(size)
        batch, channels, out_channels = 2, 3, 4
        planes = torch.randn(batch, 3, channels, size, size, dtype=torch.float64, requires_grad=True)
        styles = torch.randn(3 * batch, 3 * channels, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(
            out_channels, 3 * channels, kernel, kernel, dtype=torch.float64, requires_grad=True
        )
        mixed = torch.cat([planes, axis_pooled_context(planes)], dim=2).flatten(0, 1)
        expected = convolve(mixed * styles[:, :, None, None], weight)
        got = axis_aware_convolution(planes, styles, weight, convolve, border, up)
        assert got.shape == (3 * batch, out_channels, up * size, up * size)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=f"R = {size}")
        probe = torch.randn_like(expected)
        grads_expected = torch.autograd.grad((expected * probe).sum(), (planes, styles, weight))
        grads_got = torch.autograd.grad((got * probe).sum(), (planes, styles, weight))
        for g_got, g_expected in zip(grads_got, grads_expected):
            torch.testing.assert_close(g_got, g_expected, rtol=1e-12, atol=1e-12, msg=f"R = {size}")


def test_axis_aware_convolution_rejects_weights_over_other_channels() -> None:
    planes, styles = torch.randn(1, 3, 2, 4, 4), torch.randn(3, 6)
    with pytest.raises(ValueError, match="weights over 6 input channels"):
        axis_aware_convolution(planes, styles, torch.randn(5, 4, 3, 3), lambda x, w: x, 1)


@pytest.mark.parametrize(("up", "size"), [(1, 3), (1, 7), (2, 3), (2, 8)])
@pytest.mark.parametrize("grad", [True, False])
def test_rollout_layer_matches_the_explicit_mixing(up: int, size: int, grad: bool) -> None:
    """Per plane: its shared SynthesisLayer on [plane, context], noise, bias and gain included."""
    torch.manual_seed(1)
    layer = RolloutSynthesisLayer(3, 5, w_dim=8, resolution=size * up, up=up)
    with torch.no_grad():
        layer.layer.noise_strength.fill_(0.3)
        layer.layer.bias.normal_()
    x, w = torch.randn(2, 3, 3, size, size), torch.randn(2, 8)
    with torch.set_grad_enabled(grad):
        out = layer(x, w, noise_mode="const", gain=0.7)
        assert out.shape == (2, 3, 5, size * up, size * up)
        for fused in (True, False):
            expected = explicit_mixing_reference(layer, x, w, fused_modconv=fused, gain=0.7)
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_to_planes_is_torgb_per_plane_and_scales_init() -> None:
    torch.manual_seed(0)
    head = RolloutToPlanes(4, 2, w_dim=6)
    x, w = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 6)
    out = head(x, w)
    for b in range(2):
        for p in range(3):
            torch.testing.assert_close(out[b, p], head.layer(x[b : b + 1, p], w[b : b + 1])[0])
    torch.manual_seed(0)
    small = RolloutToPlanes(4, 2, w_dim=6, init_scale=1e-4)
    torch.testing.assert_close(small.layer.weight, head.layer.weight * 1e-4)


def test_upsample_planes_is_per_plane_fir_upsampling() -> None:
    planes = torch.randn(2, 3, 4, 5, 5)
    f = setup_filter([1, 3, 3, 1])
    up = upsample_planes(planes, f)
    for p in range(3):
        torch.testing.assert_close(up[:, p], upsample2d(planes[:, p], f))


def test_block_skip_path_and_network_bookkeeping() -> None:
    torch.manual_seed(0)
    network = RolloutSynthesisNetwork(
        w_dim=8, resolution=16, plane_channels=4, channel_base=64, channel_max=8
    )
    assert network.num_ws == 1 + 2 + 2 + 1 and [b.resolution for b in network.blocks] == [4, 8, 16]
    ws = torch.randn(2, network.num_ws, 8)
    planes = network(ws, noise_mode="const")
    assert planes.shape == (2, 3, 4, 16, 16) and torch.isfinite(planes).all()
    views = split_block_ws(ws, network.blocks)
    assert [v.shape[1] for v in views] == [2, 3, 3] and torch.equal(views[1][:, 0], ws[:, 1])
    with pytest.raises(ValueError):
        split_block_ws(ws[:, :-1], network.blocks)
    # A block adds its ToRGB output to the upsampled running planes.
    block: RolloutSynthesisBlock = network.blocks[1]
    x4, img4 = network.blocks[0](None, None, views[0], noise_mode="const")
    x8, img8 = block(x4, img4, views[1], noise_mode="const")
    own = block.torgb(x8, views[1][:, -1], fused_modconv=False)
    torch.testing.assert_close(img8, upsample_planes(img4, block.resample_filter) + own, rtol=1e-5, atol=1e-5)
    # Samples are independent: each sample's planes depend on its own ws only.
    single = network(ws[1:], noise_mode="const")
    torch.testing.assert_close(single[0], planes[1], rtol=1e-4, atol=1e-5)
