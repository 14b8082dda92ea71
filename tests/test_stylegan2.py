"""Tests for headforge.nn.stylegan2: modulated convolution, mapping, synthesis."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from headforge.nn.filters import setup_filter
from headforge.nn.layers import conv2d_resample
from headforge.nn.stylegan2 import (
    MappingNetwork,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
    modulated_conv2d,
)


def naive_modulated_conv(x, weight, styles, up, demodulate, noise=None, bias=None, gain=1.0):
    """The StyleGAN2 formula, sample by sample, with plain (non-grouped) convolutions."""
    f = setup_filter([1, 3, 3, 1]).to(x.dtype)
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        if up == 1:
            y = F.conv2d(x[b : b + 1], w, padding=weight.shape[-1] // 2)
        else:
            y = conv2d_resample(x[b : b + 1], w, f, up=up, padding=weight.shape[-1] // 2, flip_weight=False)
        outs.append(y)
    y = torch.cat(outs)
    if noise is not None:
        y = y + noise
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y * gain


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_matches_naive_formula(up, fused, demodulate):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    weight = torch.randn(5, 6, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 6, dtype=torch.float64)
    noise = torch.randn(3, 1, 8 * up, 8 * up, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    got = modulated_conv2d(
        x,
        weight,
        styles,
        noise=noise,
        up=up,
        padding=1,
        resample_filter=f,
        demodulate=demodulate,
        flip_weight=up == 1,
        fused_modconv=fused,
        bias=bias,
        output_gain=1.3,
    )
    expected = naive_modulated_conv(x, weight, styles, up, demodulate, noise=noise, bias=bias, gain=1.3)
    assert got.shape == (3, 5, 8 * up, 8 * up)
    torch.testing.assert_close(got, expected)
    # Channels-last input (the CPU fast path) gives the same numbers.
    got_cl = modulated_conv2d(
        x.contiguous(memory_format=torch.channels_last),
        weight,
        styles,
        noise=noise,
        up=up,
        padding=1,
        resample_filter=f,
        demodulate=demodulate,
        flip_weight=up == 1,
        fused_modconv=fused,
        bias=bias,
        output_gain=1.3,
    )
    torch.testing.assert_close(got_cl, expected)


def test_modulated_conv2d_pointwise_path():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    weight = torch.randn(4, 6, 1, 1, dtype=torch.float64)
    styles = torch.randn(2, 6, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    expected = naive_modulated_conv(x, weight, styles, 1, False, bias=bias)
    for x_in in (x, x.contiguous(memory_format=torch.channels_last)):
        for fused in (True, False):
            got = modulated_conv2d(x_in, weight, styles, demodulate=False, fused_modconv=fused, bias=bias)
            torch.testing.assert_close(got, expected)


def test_modulated_conv2d_gradcheck():
    torch.manual_seed(0)
    f = setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    for fused in (True, False):
        for up in (1, 2):

            def fn(x, weight, styles, up=up, fused=fused):
                return modulated_conv2d(
                    x,
                    weight,
                    styles,
                    up=up,
                    padding=1,
                    resample_filter=f,
                    flip_weight=up == 1,
                    fused_modconv=fused,
                )

            assert torch.autograd.gradcheck(fn, (x, weight, styles))


def test_mapping_network_truncation_and_w_avg():
    torch.manual_seed(0)
    mapping = MappingNetwork(z_dim=16, c_dim=25, w_dim=32, num_ws=6, num_layers=3)
    z, c = torch.randn(4, 16), torch.randn(4, 25)
    ws = mapping(z, c)
    assert ws.shape == (4, 6, 32)
    torch.testing.assert_close(ws[:, 0], ws[:, 5])  # one w broadcast to all layers
    # update_emas: w_avg <- lerp(mean w, w_avg, beta).
    before = mapping.w_avg.clone()
    mapping(z, c, update_emas=True)
    torch.testing.assert_close(mapping.w_avg, ws[:, 0].mean(0).detach().lerp(before, mapping.w_avg_beta))
    mapping.w_avg.copy_(torch.randn(32))
    torch.testing.assert_close(mapping(z, c, truncation_psi=1.0), ws)
    torch.testing.assert_close(mapping(z, c, truncation_psi=0.0), mapping.w_avg.expand(4, 6, 32))
    half = mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], mapping.w_avg.lerp(ws[:, :2], 0.5))
    torch.testing.assert_close(half[:, 2:], ws[:, 2:])


def test_mapping_network_without_z_or_c():
    sh_mapping = MappingNetwork(z_dim=0, c_dim=27, w_dim=16, num_ws=None, num_layers=2, w_avg_beta=None)
    out = sh_mapping(None, torch.randn(3, 27))
    assert out.shape == (3, 16)
    unconditional = MappingNetwork(z_dim=8, c_dim=0, w_dim=16, num_ws=4, num_layers=2)
    assert unconditional(torch.randn(3, 8), None).shape == (3, 4, 16)
    with pytest.raises(ValueError):
        MappingNetwork(z_dim=0, c_dim=0, w_dim=16, num_ws=1)


def tiny_synthesis(img_resolution=32, img_channels=96, **kwargs):
    return SynthesisNetwork(
        w_dim=16,
        img_resolution=img_resolution,
        img_channels=img_channels,
        channel_base=256,
        channel_max=16,
        **kwargs,
    )


@pytest.mark.parametrize("resolution", [32, 64])
def test_synthesis_network_shapes_and_features(resolution):
    torch.manual_seed(0)
    net = tiny_synthesis(resolution)
    log2 = resolution.bit_length() - 1
    assert net.num_ws == 2 * log2 - 2
    assert net.block_resolutions == [2**i for i in range(2, log2 + 1)]
    assert [b.resolution for b in net.blocks] == net.block_resolutions
    assert net.channels_at(resolution) == min(256 // resolution, 16)
    ws = torch.randn(2, net.num_ws, 16)
    img, features = net(ws, noise_mode="const", return_features=True)
    assert img.shape == (2, 96, resolution, resolution)
    assert sorted(features) == net.block_resolutions
    for res, (x, block_img) in features.items():
        assert x.shape == (2, net.channels_at(res), res, res)
        assert block_img.shape == (2, 96, res, res)
    torch.testing.assert_close(features[resolution][1], img)


def test_synthesis_noise_modes():
    torch.manual_seed(0)
    net = tiny_synthesis(16, img_channels=3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    ws = torch.randn(1, net.num_ws, 16)
    torch.testing.assert_close(net(ws, noise_mode="const"), net(ws, noise_mode="const"))
    assert not torch.allclose(net(ws, noise_mode="random"), net(ws, noise_mode="random"))
    torch.manual_seed(3)
    a = net(ws, noise_mode="random")
    torch.manual_seed(3)
    torch.testing.assert_close(net(ws, noise_mode="random"), a)
    assert not torch.allclose(net(ws, noise_mode="none"), net(ws, noise_mode="const"))


def test_split_ws_block_by_block_equals_forward():
    torch.manual_seed(0)
    net = tiny_synthesis(32)
    ws = torch.randn(2, net.num_ws, 16)
    expected = net(ws, noise_mode="const")
    block_ws = net.split_ws(ws)
    assert [w.shape[1] for w in block_ws] == [b.num_conv + b.num_torgb for b in net.blocks]
    x = img = None
    for block, w in zip(net.blocks, block_ws):
        x, img = block(x, img, w, noise_mode="const")
    torch.testing.assert_close(img, expected)


def test_every_w_is_used():
    torch.manual_seed(0)
    net = tiny_synthesis(16, img_channels=3)
    ws = torch.randn(1, net.num_ws, 16)
    base = net(ws, noise_mode="const")
    for i in range(net.num_ws):
        changed = ws.clone()
        changed[:, i] += 1.0
        assert not torch.allclose(net(changed, noise_mode="const"), base), f"w {i} has no effect"


def test_fused_and_non_fused_and_layouts_agree():
    torch.manual_seed(0)
    net = tiny_synthesis(16)
    ws = torch.randn(3, net.num_ws, 16)
    reference = net(ws, noise_mode="const", fused_modconv=False)
    torch.testing.assert_close(
        net(ws, noise_mode="const", fused_modconv=True), reference, rtol=1e-4, atol=1e-4
    )
    for block in net.blocks:
        block.channels_last = False
    torch.testing.assert_close(net(ws, noise_mode="const"), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("architecture", ["orig", "resnet"])
def test_other_architectures(architecture):
    net = tiny_synthesis(16, img_channels=3, architecture=architecture)
    assert net.num_ws == 6
    assert net(torch.randn(2, 6, 16)).shape == (2, 3, 16, 16)
    if architecture == "orig":
        assert [b.num_torgb for b in net.blocks] == [0, 0, 1]


def test_block_without_upsampling_and_input_is_not_modified():
    block = SynthesisBlock(8, 4, w_dim=16, resolution=8, img_channels=3, is_last=True, up=1)
    x, img = torch.randn(2, 8, 8, 8), torch.randn(2, 3, 8, 8)
    img_copy = img.clone()
    with torch.inference_mode():
        out_x, out_img = block(x, img, torch.randn(2, 3, 16))
    assert out_x.shape == (2, 4, 8, 8) and out_img.shape == (2, 3, 8, 8)
    torch.testing.assert_close(img, img_copy)


def test_layers_preserve_unit_variance():
    torch.manual_seed(0)
    layer = SynthesisLayer(64, 64, w_dim=16, resolution=16)
    y = layer(torch.randn(4, 64, 16, 16), torch.randn(4, 16), noise_mode="none")
    # Demodulated conv keeps unit variance; lrelu with gain sqrt(2) keeps the second moment near 1.
    assert 0.8 < y.square().mean().item() < 1.25
    torgb = ToRGBLayer(64, 96, w_dim=16)
    assert torgb(torch.randn(2, 64, 8, 8), torch.randn(2, 16)).shape == (2, 96, 8, 8)


def test_gradients_reach_all_parameters():
    torch.manual_seed(0)
    mapping = MappingNetwork(z_dim=8, c_dim=25, w_dim=16, num_ws=None, num_layers=2)
    net = tiny_synthesis(16, img_channels=3)
    ws = mapping(torch.randn(2, 8), torch.randn(2, 25)).unsqueeze(1).repeat(1, net.num_ws, 1)
    net(ws, noise_mode="random").square().mean().backward()
    for name, p in list(net.named_parameters()) + list(mapping.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bfloat16_autocast_inference_stays_close_to_float32():
    # The fast CPU inference path: oneDNN bfloat16 convolutions under autocast.
    torch.manual_seed(0)
    net = tiny_synthesis(32).eval()
    ws = torch.randn(1, net.num_ws, 16)
    with torch.inference_mode():
        reference = net(ws, noise_mode="const")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = net(ws, noise_mode="const")
    relative = (fast.float() - reference).abs().mean() / reference.abs().mean()
    assert relative < 0.03
