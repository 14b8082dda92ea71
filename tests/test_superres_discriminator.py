"""Tests for headforge.nn.superres and headforge.nn.discriminator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headforge.nn.discriminator import (
    ConditionalDiscriminator,
    DiscriminatorEpilogue,
    DualDiscriminator,
    MinibatchStdLayer,
)
from headforge.nn.superres import SuperResolution


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_superresolution_shapes_and_widths(factor):
    torch.manual_seed(0)
    sr = SuperResolution(
        8,
        img_channels=3,
        input_resolution=8,
        output_resolution=8 * factor,
        w_dim=16,
        channel_base=512,
        channel_max=32,
    )
    expected_res = [8, 16] if factor == 2 else [8 * 2**i for i in range(1, int(math.log2(factor)) + 1)]
    assert [b.resolution for b in sr.blocks] == expected_res
    assert [b.out_channels for b in sr.blocks] == [min(512 // r, 32) for r in expected_res]
    assert [b.up for b in sr.blocks] == ([1, 2] if factor == 2 else [2] * len(expected_res))
    features = torch.randn(2, 8, 8, 8)
    out = sr(features[:, :3], features, torch.randn(2, 5, 16))
    assert out.shape == (2, 3, 8 * factor, 8 * factor)
    # An input at another resolution is resized to input_resolution first.
    small = torch.randn(2, 8, 4, 4)
    assert sr(small[:, :3], small, torch.randn(2, 5, 16)).shape == (2, 3, 8 * factor, 8 * factor)


def test_superresolution_uses_only_the_last_w_and_the_raw_rgb():
    torch.manual_seed(0)
    sr = SuperResolution(8, 3, 8, 32, w_dim=16, channel_base=256, channel_max=16)
    features = torch.randn(1, 8, 8, 8)
    ws = torch.randn(1, 4, 16)
    base = sr(features[:, :3], features, ws)
    other = ws.clone()
    other[:, :-1] = torch.randn(1, 3, 16)
    torch.testing.assert_close(sr(features[:, :3], features, other), base)
    other[:, -1] += 1
    assert not torch.allclose(sr(features[:, :3], features, other), base)
    # The RGB skip path: shifting the raw RGB by a constant shifts the output's interior by it.
    shifted = sr(features[:, :3] + 0.5, features, ws)
    torch.testing.assert_close(shifted[..., 4:-4, 4:-4], base[..., 4:-4, 4:-4] + 0.5, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        SuperResolution(8, 3, 8, 24)


def test_minibatch_std_matches_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3, 3)
    layer = MinibatchStdLayer(group_size=2, num_channels=2)
    y = layer(x)
    assert y.shape == (4, 8, 3, 3)
    torch.testing.assert_close(y[:, :6], x)
    xn = x.double().numpy()
    for i in range(4):
        partner = (i + 2) % 4  # groups are {0, 2} and {1, 3}
        pair = np.stack([xn[i], xn[partner]])  # (2, 6, 3, 3)
        std = np.sqrt(((pair - pair.mean(0)) ** 2).mean(0) + 1e-8)  # population std over the group
        for part in range(2):
            expected = std[3 * part : 3 * part + 3].mean()
            np.testing.assert_allclose(y[i, 6 + part].numpy(), np.full((3, 3), expected), rtol=1e-5)
    # A batch not divisible by the group size falls back to a smaller group.
    assert MinibatchStdLayer(group_size=4)(torch.randn(6, 2, 2, 2)).shape == (6, 3, 2, 2)


def test_epilogue_projection_formula():
    torch.manual_seed(0)
    epilogue = DiscriminatorEpilogue(8, cmap_dim=4, resolution=4, img_channels=3)
    x = torch.randn(2, 8, 4, 4)
    for k in range(4):
        cmap = torch.zeros(2, 4)
        cmap[:, k] = math.sqrt(4)  # makes (out . cmap) / sqrt(cmap_dim) pick component k
        features = epilogue.out(epilogue.fc(epilogue.conv(epilogue.mbstd(x)).flatten(1)))
        torch.testing.assert_close(epilogue(x, None, cmap), features[:, k : k + 1])


def tiny_dual(**kwargs):
    return DualDiscriminator(
        c_dim=25,
        img_resolution=32,
        img_channels=3,
        channel_base=512,
        channel_max=32,
        mapping_kwargs=dict(num_layers=2),
        **kwargs,
    )


def test_dual_discriminator():
    torch.manual_seed(0)
    disc = tiny_dual()
    assert disc.discriminator.img_channels == 6
    images = {"image": torch.randn(4, 3, 32, 32), "image_raw": torch.randn(4, 3, 16, 16)}
    c = torch.randn(4, 25)
    logits = disc(images, c)
    assert logits.shape == (4, 1)
    assert not torch.allclose(disc(images, torch.randn(4, 25)), logits)  # conditioning matters
    assert not torch.allclose(disc(images, c, blur_sigma=1.5), logits)
    torch.testing.assert_close(disc(images, c, blur_sigma=0.0), logits)
    # The raw image matters, and may come at any resolution.
    assert not torch.allclose(disc({**images, "image_raw": torch.randn(4, 3, 16, 16)}, c), logits)
    assert disc({**images, "image_raw": torch.randn(4, 3, 8, 8)}, c).shape == (4, 1)


def test_dual_discriminator_c_noise():
    torch.manual_seed(0)
    disc = tiny_dual(disc_c_noise=1.0)
    images = {"image": torch.randn(4, 3, 32, 32), "image_raw": torch.randn(4, 3, 16, 16)}
    c = torch.randn(4, 25)
    torch.manual_seed(1)
    a = disc(images, c)
    torch.manual_seed(2)
    assert not torch.allclose(disc(images, c), a)
    torch.manual_seed(1)
    torch.testing.assert_close(disc(images, c), a)


def test_conditional_discriminator_variants_and_r1_double_backward():
    torch.manual_seed(0)
    unconditional = ConditionalDiscriminator(0, 16, 3, channel_base=256, channel_max=16)
    assert unconditional.mapping is None
    assert unconditional(torch.randn(2, 3, 16, 16)).shape == (2, 1)
    # A video discriminator on frame pairs: 2 x (image + raw) channels, c = 2 x (25 + 27).
    video = ConditionalDiscriminator(
        104, 16, 12, channel_base=256, channel_max=16, mapping_kwargs=dict(num_layers=2)
    )
    img = torch.randn(4, 12, 16, 16, requires_grad=True)
    logits = video(img, torch.randn(4, 104))
    assert logits.shape == (4, 1)
    # R1 needs the gradient of the logits w.r.t. the input, differentiated again.
    (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
    (grad.square().sum() + logits.sum()).backward()
    for name, p in video.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
