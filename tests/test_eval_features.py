"""HeadforgeFeatureNet: deterministic initialisation, weight files, meaningful random-feature distances."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from headforge.eval.features import FeatureNetwork, HeadforgeFeatureNet
from headforge.eval.frechet import frechet_distance_from_features
from headforge.eval.image_metrics import perceptual_distance

SMALL = {"channels": (8, 16, 32), "input_size": 32}


def _images(count: int, seed: int, size: int = 24) -> torch.Tensor:
    """Smooth random images (count, 3, size, size) in [-1, 1]: bicubic upsampling of 6x6 noise."""
    coarse = torch.rand(count, 3, 6, 6, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def test_default_architecture_shapes_and_protocol():
    net = HeadforgeFeatureNet()
    assert isinstance(net, FeatureNetwork)
    images = torch.rand(2, 3, 40, 56) * 2 - 1  # any size: the network resizes to 128
    features = net(images)
    assert features.shape == (2, net.feature_dim) == (2, 512)
    shapes = [tuple(layer.shape) for layer in net.layers(images)]
    assert shapes == [(2, 32, 128, 128), (2, 64, 64, 64), (2, 128, 32, 32), (2, 256, 16, 16), (2, 512, 8, 8)]
    assert bool(torch.isfinite(features).all()) and float(features.std(dim=0).mean()) > 0


def test_initialisation_is_deterministic_and_ignores_the_global_rng():
    torch.manual_seed(123)
    first = HeadforgeFeatureNet(**SMALL, seed=7)
    torch.manual_seed(456)
    second = HeadforgeFeatureNet(**SMALL, seed=7)
    other = HeadforgeFeatureNet(**SMALL, seed=8)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.stem.weight, other.stem.weight)
    # He initialisation: weight variance 2 / ((1 + 0.2^2) fan_in).
    weight = first.stages[1][1].weight
    expected_std = (2 / (1.04 * weight[0].numel())) ** 0.5
    assert float(weight.std()) == pytest.approx(expected_std, rel=0.05)


def test_weights_round_trip_and_errors_name_file_and_key(tmp_path):
    net = HeadforgeFeatureNet(**SMALL, seed=3)
    path = net.save_weights(tmp_path / "net.safetensors")
    images = _images(2, seed=0)
    reloaded = HeadforgeFeatureNet.from_file(path)
    assert reloaded.channels == SMALL["channels"] and reloaded.input_size == SMALL["input_size"]
    assert torch.equal(reloaded(images), net(images))
    into_other_seed = HeadforgeFeatureNet(**SMALL, seed=99, weights_path=path)
    assert torch.equal(into_other_seed(images), net(images))

    tensors = load_file(str(path))
    missing = dict(tensors)
    del missing["stages.1.0.weight"]
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match=r"missing\.safetensors.*stages\.1\.0\.weight"):
        HeadforgeFeatureNet(**SMALL).load_weights(tmp_path / "missing.safetensors")
    misshaped = dict(tensors)
    misshaped["stem.bias"] = torch.zeros(5)
    save_file(misshaped, str(tmp_path / "misshaped.safetensors"))
    with pytest.raises(ValueError, match=r"misshaped\.safetensors.*stem\.bias.*\(5,\)"):
        HeadforgeFeatureNet(**SMALL).load_weights(tmp_path / "misshaped.safetensors")
    with pytest.raises(ValueError, match=r"missing key"):
        HeadforgeFeatureNet(channels=(8, 16, 32, 64), input_size=32).load_weights(path)


def test_random_feature_frechet_distance_grows_with_corruption():
    # Random convolutional features: a meaningful (if uncalibrated) distance between image sets.
    net = HeadforgeFeatureNet(**SMALL, seed=0)
    images = _images(96, seed=2)
    clean = net(images)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    corrupted = {sigma: net((images + sigma * noise).clamp(-1, 1)) for sigma in (0.05, 0.1, 0.3)}
    blurred = net(F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False))
    # The same images, increasingly corrupted: the distance grows from exactly 0.
    paired = [frechet_distance_from_features(clean, clean)]
    paired += [frechet_distance_from_features(clean, features) for features in corrupted.values()]
    assert paired[0] < 1e-9 and paired[1] < paired[2] < paired[3]
    # Against an independent draw of the clean distribution, strong corruptions stand out
    # above the finite-sample floor.
    reference = net(_images(96, seed=1))
    floor = frechet_distance_from_features(reference, clean)
    assert frechet_distance_from_features(reference, corrupted[0.3]) > 1.5 * floor
    assert frechet_distance_from_features(reference, blurred) > 3 * floor


def test_perceptual_distance_with_feature_net():
    net = HeadforgeFeatureNet(**SMALL, seed=0)
    images = _images(3, seed=4)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    zero = perceptual_distance(images, images, net)
    assert zero.shape == (3,) and float(zero.abs().max()) == 0.0
    small = perceptual_distance(images, images + 0.05 * noise, net)
    large = perceptual_distance(images, images + 0.3 * noise, net)
    assert bool((small > 0).all()) and bool((large > small).all())
