"""FID Inception-v3: pytorch-fid parameter layout, loading .pth / .safetensors, preprocessing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from headforge.eval.inception import InceptionV3Features, _avg_pool_3x3_tf, fid_preprocess, read_state_dict

# torchvision's inception_v3 has 27,161,264 parameters with its auxiliary head (conv0 98,560 +
# conv1 2,459,136 + fc 769,000) and a 1000-class classifier (2,049,000); the FID network
# shares every other shape, so its feature extractor must have the remainder.
FEATURE_EXTRACTOR_PARAMETERS = 27_161_264 - (98_560 + 2_459_136 + 769_000) - 2_049_000


def _randomised(seed: int = 0) -> InceptionV3Features:
    """A network with O(1) activations: He-normal convolutions and random batch-norm statistics."""
    model = InceptionV3Features(resize_input=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("conv.weight"):
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * math.sqrt(2.0 / fan_in))
            elif name.endswith(("bn.weight", "bn.running_var")):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("bn.bias", "bn.running_mean")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model


def _fid_file_state(model: InceptionV3Features) -> dict[str, torch.Tensor]:
    """The layout of pt_inception-2015-12-05: features + a 1008-class fc, no num_batches_tracked."""
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.zeros(1008, 2048)
    state["fc.bias"] = torch.zeros(1008)
    return state


def test_parameter_names_and_shapes_follow_the_fid_weights():
    model = InceptionV3Features()
    assert sum(p.numel() for p in model.parameters()) == FEATURE_EXTRACTOR_PARAMETERS
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_4a_3x3.bn.running_var"] == (192,)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_5d.branch5x5_2.conv.weight"] == (64, 48, 5, 5)
    assert shapes["Mixed_6a.branch3x3.conv.weight"] == (384, 288, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7b.branch3x3dbl_1.conv.weight"] == (448, 1280, 1, 1)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert model.Mixed_7c.max_pool_branch and not model.Mixed_7b.max_pool_branch


def test_pth_and_safetensors_round_trip(tmp_path):
    model = _randomised()
    state = _fid_file_state(model)
    torch.save(state, tmp_path / "pt_inception.pth")  # a plain dict of tensors, as the released file
    save_file(state, str(tmp_path / "pt_inception.safetensors"))
    images = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected = model(images)
    assert expected.shape == (2, 2048) and float(expected.std()) > 1e-3
    for name in ("pt_inception.pth", "pt_inception.safetensors"):
        loaded = InceptionV3Features.from_file(tmp_path / name, resize_input=False)
        for key, value in model.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(loaded.state_dict()[key], value), (name, key)
        assert torch.equal(loaded(images), expected), name


def test_loader_errors_name_the_file_and_the_key(tmp_path):
    state = _fid_file_state(InceptionV3Features())

    def write(name: str, tensors: dict) -> str:
        torch.save(tensors, tmp_path / name)
        return str(tmp_path / name)

    missing = {k: v for k, v in state.items() if k != "Mixed_6c.branch7x7_3.bn.running_mean"}
    with pytest.raises(ValueError, match=r"missing\.pth.*Mixed_6c\.branch7x7_3\.bn\.running_mean"):
        InceptionV3Features.from_file(write("missing.pth", missing))
    misshaped = dict(state, **{"Mixed_5c.branch1x1.conv.weight": torch.zeros(64, 256, 3, 3)})
    expected_message = r"misshaped\.pth.*Mixed_5c\.branch1x1\.conv\.weight.*\(64, 256, 1, 1\)"
    with pytest.raises(ValueError, match=expected_message):
        InceptionV3Features.from_file(write("misshaped.pth", misshaped))
    imagenet_classes = dict(state, **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    with pytest.raises(ValueError, match=r"imagenet\.pth.*fc\.(weight|bias).*1008"):
        InceptionV3Features.from_file(write("imagenet.pth", imagenet_classes))
    auxiliary = dict(state, **{"AuxLogits.conv0.conv.weight": torch.zeros(128, 768, 1, 1)})
    with pytest.raises(ValueError, match=r"aux\.pth.*AuxLogits\.conv0\.conv\.weight.*auxiliary"):
        InceptionV3Features.from_file(write("aux.pth", auxiliary))


class _NotATensor:
    pass


def test_pth_loading_never_unpickles_code(tmp_path):
    torch.save({"Conv2d_1a_3x3.conv.weight": _NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        read_state_dict(tmp_path / "code.pth")
    torch.save({"note": "text"}, tmp_path / "text.pth")
    with pytest.raises(ValueError, match=r"text\.pth.*note"):
        read_state_dict(tmp_path / "text.pth")


def test_fid_preprocessing():
    # A constant image is quantised to its 8-bit level and stays constant through the resize.
    constant = torch.full((1, 3, 32, 48), 0.3)
    out = fid_preprocess(constant)
    assert out.shape == (1, 3, 299, 299)
    level = round((0.3 + 1) * 127.5) / 255 * 2 - 1
    torch.testing.assert_close(out, torch.full_like(out, level))
    # 8-bit images of the final size pass through unchanged.
    levels = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(2))
    on_grid = levels / 127.5 - 1
    torch.testing.assert_close(fid_preprocess(on_grid), on_grid, atol=1e-6, rtol=0)
    # Bilinear, half-pixel centres (align_corners=False), no antialiasing: a 2x2 checker upsampled
    # keeps its corner values where the output pixel centres fall outside the input's centres.
    checker = torch.tensor([[-1.0, 1.0], [1.0, -1.0]]).expand(1, 3, 2, 2)
    up = fid_preprocess(checker, quantize=False)
    assert float(up[0, 0, 0, 0]) == -1.0 and float(up[0, 0, 0, -1]) == 1.0
    assert float(up[0, 0, 149, 149]) == pytest.approx(0.0, abs=1e-6)
    downsampled = fid_preprocess(on_grid[:, :, :200, :200], quantize=False)
    expected = F.interpolate((on_grid[:, :, :200, :200] + 1) / 2, size=(299, 299), mode="bilinear") * 2 - 1
    torch.testing.assert_close(downsampled, expected)


def test_tensorflow_average_pool_ignores_padding():
    ones = torch.ones(1, 2, 5, 5)
    torch.testing.assert_close(_avg_pool_3x3_tf(ones), ones)  # zero padding would give 4/9 at corners
    ramp = torch.arange(9.0).view(1, 1, 3, 3)
    assert float(_avg_pool_3x3_tf(ramp)[0, 0, 0, 0]) == pytest.approx((0 + 1 + 3 + 4) / 4)


def test_full_pipeline_at_299():
    model = _randomised(seed=3)
    model.resize_input = True
    features = model(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1)
    assert features.shape == (1, 2048)
    assert bool(torch.isfinite(features).all()) and float(features.min()) >= 0  # a mean of ReLU outputs
