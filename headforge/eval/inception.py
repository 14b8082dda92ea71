"""The FID Inception-v3 network, in pure PyTorch, for user-supplied weights.

Published FIDs use the TensorFlow Inception-v3 graph ``inception-2015-12-05``.
Its widely used PyTorch port is the state dict ``pt_inception-2015-12-05-*.pth``
released with pytorch-fid (mseitzer/pytorch-fid). This module rebuilds that
network under the same parameter names (torchvision's ``Inception3`` layout
with 1008 output classes, no auxiliary head) so the file loads as it is, and
keeps the FID variant's differences from torchvision's Inception:

- the average-pool branches of Mixed_5b-5d (A blocks), Mixed_6b-6e (C blocks)
  and Mixed_7b exclude the zero padding from the mean (TensorFlow's
  behaviour, ``count_include_pad=False``);
- Mixed_7c's pool branch is a 3x3 max pool instead of an average pool.

headforge never downloads the file: pass its path to ``InceptionV3Features.from_file``.
Preprocessing follows pytorch-fid (see ``fid_preprocess``); features are the
2048-d global average pool after Mixed_7c ("pool3").
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FID_INPUT_SIZE = 299
FID_NUM_CLASSES = 1008


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, inference statistics) -> ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3_tf(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow, averages only over pixels inside the image."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-5d): in -> 64 + 64 + 96 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool_3x3_tf(x)),
            ],
            dim=1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): in -> 384 + 96 + in channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-6e): in -> 4 x 192 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, column = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **column)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **column)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **column)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            branch7x7dbl = conv(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)
        return torch.cat(
            [self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_avg_pool_3x3_tf(x))], dim=1
        )


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): in -> 320 + 192 + in channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7x3 = x
        for conv in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = conv(branch7x7x3)
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 convolutions (Mixed_7b, 7c): in -> 320 + 768 + 768 + 192 = 2048.

    ``max_pool_branch`` selects the FID network's Mixed_7c quirk (max pool in
    the pool branch); Mixed_7b uses TensorFlow's padding-excluding average pool.
    """

    def __init__(self, in_channels: int, max_pool_branch: bool) -> None:
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.max_pool_branch:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_3x3_tf(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(branch3x3),
                self.branch3x3_2b(branch3x3),
                self.branch3x3dbl_3a(branch3x3dbl),
                self.branch3x3dbl_3b(branch3x3dbl),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


def fid_preprocess(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """headforge images (B, 3, H, W) in [-1, 1] -> FID Inception input (B, 3, 299, 299) in [-1, 1].

    Follows pytorch-fid: values in [0, 1] are resized with
    ``F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)``
    (no antialiasing, as the reference code) and then mapped to [-1, 1] by
    2x - 1. With ``quantize`` the images are first rounded to the 256 levels
    of an 8-bit image (as ``headforge.imaging.to_uint8``), which is what the
    reference pipeline sees when it reads PNG files; generated and real images
    then go through identical steps.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
    images = images.to(torch.float32).clamp(-1, 1)
    if quantize:
        unit = ((images + 1) * 127.5).round() / 255
    else:
        unit = (images + 1) / 2
    if unit.shape[-2:] != (FID_INPUT_SIZE, FID_INPUT_SIZE):
        size = (FID_INPUT_SIZE, FID_INPUT_SIZE)
        unit = F.interpolate(unit, size=size, mode="bilinear", align_corners=False)
    return 2 * unit - 1


class InceptionV3Features(nn.Module):
    """FID Inception-v3 up to pool3: images in [-1, 1] -> (B, 2048) features.

    Parameter names match pytorch-fid's ``pt_inception-2015-12-05`` state dict
    (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``,
    ...). The classifier (``fc.*``, 1008 classes) is not needed for features
    and not built; ``from_file`` checks its shape when the file has it.
    Construct with ``from_file``; a bare ``InceptionV3Features()`` has
    PyTorch's default random initialisation and is only useful for tests.

    ``quantize`` rounds inputs to 8-bit levels first (see ``fid_preprocess``).
    ``resize_input=False`` skips the 299x299 resize and the quantisation and
    takes inputs already in the network's [-1, 1] range as they are (any
    size >= 75; as pytorch-fid's ``resize_input`` option, not for reporting FIDs).
    """

    feature_dim = 2048

    def __init__(self, quantize: bool = True, resize_input: bool = True) -> None:
        super().__init__()
        self.quantize = quantize
        self.resize_input = resize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool_branch=False)
        self.Mixed_7c = InceptionE(2048, max_pool_branch=True)
        self.requires_grad_(False)
        self.eval()

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        """pytorch-fid's four blocks for images (B, 3, H, W) in [-1, 1] (resized to 299 first).

        Returns [(B, 64, 73, 73) after the first max pool, (B, 192, 35, 35)
        after the second, (B, 768, 17, 17) after Mixed_6e, (B, 2048, 8, 8)
        after Mixed_7c].
        """
        if self.resize_input:
            images = fid_preprocess(images, quantize=self.quantize)
        x = images.to(self.Conv2d_1a_3x3.conv.weight)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        block0 = F.max_pool2d(x, kernel_size=3, stride=2)
        block1 = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(block0)), kernel_size=3, stride=2)
        x = block1
        for mixed in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b):
            x = mixed(x)
        block2 = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(x)))
        block3 = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(block2)))
        return [block0, block1, block2, block3]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> pool3 features (B, 2048)."""
        return self.layers(images)[-1].mean(dim=(2, 3))

    @classmethod
    def from_file(
        cls, path: str | Path, quantize: bool = True, resize_input: bool = True
    ) -> InceptionV3Features:
        """Build the network and load FID Inception weights from ``.pth`` or ``.safetensors``.

        ``.pth`` files are read with ``torch.load(weights_only=True)``, which
        refuses anything but tensors and plain containers (no code is
        unpickled). Raises ``ValueError`` naming the file and the key when a
        key is missing, has the wrong shape or does not belong to the FID network.
        """
        model = cls(quantize=quantize, resize_input=resize_input)
        model.load_fid_state_dict(read_state_dict(path), source=Path(path))
        return model

    def load_fid_state_dict(
        self, state: dict[str, torch.Tensor], source: str | Path = "<state dict>"
    ) -> None:
        """Check ``state`` against the FID network's keys and shapes, then load it (see ``from_file``)."""
        expected = {k: v for k, v in self.state_dict().items() if not k.endswith("num_batches_tracked")}
        for key, value in expected.items():
            if key not in state:
                raise ValueError(f"{source}: missing key '{key}' (expected shape {tuple(value.shape)})")
            if tuple(state[key].shape) != tuple(value.shape):
                found = tuple(state[key].shape)
                raise ValueError(f"{source}: key '{key}' has shape {found}, expected {tuple(value.shape)}")
        classifier_shapes = {"fc.weight": (FID_NUM_CLASSES, 2048), "fc.bias": (FID_NUM_CLASSES,)}
        for key, value in state.items():
            if key in expected or key.endswith("num_batches_tracked"):
                continue
            if key in classifier_shapes:
                if tuple(value.shape) != classifier_shapes[key]:
                    raise ValueError(
                        f"{source}: key '{key}' has shape {tuple(value.shape)}, expected "
                        f"{classifier_shapes[key]}: the FID network has {FID_NUM_CLASSES} classes "
                        "(torchvision's ImageNet Inception has 1000 and gives different FIDs)"
                    )
                continue
            auxiliary = key.startswith("AuxLogits")
            hint = " (an auxiliary classifier: torchvision's ImageNet Inception, not the FID network)"
            hint = hint if auxiliary else ""
            raise ValueError(f"{source}: unexpected key '{key}'{hint}")
        # Old files have no num_batches_tracked; it only matters in training mode.
        self.load_state_dict({k: state[k].to(torch.float32) for k in expected}, strict=False)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or of a ``.pth`` state dict (loaded with ``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        found = type(state).__name__
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got {found}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: key '{key}' holds a {type(value).__name__}, not a tensor")
    return dict(state)
