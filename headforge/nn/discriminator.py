"""StyleGAN2 residual discriminator with projection conditioning, and EG3D's dual discriminator.

`ConditionalDiscriminator` is StyleGAN2-ADA's discriminator ('resnet'
architecture): FIR-downsampling residual blocks from ``img_resolution`` to 8,
then an epilogue at 4x4 with a minibatch standard-deviation feature, a
convolution, two dense layers and projection conditioning (the output is
the dot product of a feature vector with an embedding of ``c``, divided by
``sqrt(cmap_dim)``). It takes any number of input channels and any ``c_dim``,
so it serves as EG3D's dual discriminator (6 channels, c = 25-float camera)
and as a video discriminator on frame pairs (e.g. 12 channels, c = 2 x 52).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from headforge.nn.filters import downsample2d, filtered_resize, gaussian_blur, setup_filter
from headforge.nn.layers import Conv2dLayer, FullyConnectedLayer
from headforge.nn.stylegan2 import MappingNetwork


def _memory_format(channels_last: bool | None, device: torch.device, use_fp16: bool) -> torch.memory_format:
    """Channels-last on CPU (fastest for oneDNN) or with float16, unless set explicitly."""
    if channels_last is None:
        channels_last = device.type == "cpu" or use_fp16
    return torch.channels_last if channels_last else torch.contiguous_format


class DiscriminatorBlock(torch.nn.Module):
    """Residual block: [fromRGB] -> conv 3x3 -> conv 3x3 with 2x FIR downsampling (+ 1x1 shortcut).

    ``in_channels = 0`` marks the first block, which reads the image through a
    1x1 fromRGB layer. Shapes: x (B, in_channels, R, R) or None, img
    (B, img_channels, R, R) -> x (B, out_channels, R/2, R/2), img (downsampled in 'skip', else None).
    """

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown architecture {architecture!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        conv_kwargs = dict(activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, **conv_kwargs)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, **conv_kwargs)
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, kernel_size=3, down=2, resample_filter=resample_filter, **conv_kwargs
        )
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter
            )

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = (x if x is not None else img).device
        use_fp16 = self.use_fp16 and not force_fp32 and device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        memory_format = _memory_format(self.channels_last, device, use_fp16)
        if x is not None:
            x = x.to(dtype).contiguous(memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img.to(dtype).contiguous(memory_format=memory_format))
            x = y if x is None else x + y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            shortcut = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = shortcut + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStdLayer(torch.nn.Module):
    """Append the within-group standard deviation of features as extra channels (StyleGAN2).

    The batch is split into ``N / G`` groups of ``G = min(group_size, N)``
    samples; sample ``i`` belongs to group ``i mod (N / G)``. The channels are
    split into ``num_channels`` parts; for every group and part the standard
    deviation over the group (population, + 1e-8 inside the root) is averaged
    over channels and pixels and broadcast as one new channel. When ``N`` is not
    divisible by ``G``, ``G`` shrinks to the largest divisor of ``N`` below it.

    Shapes: (N, C, H, W) -> (N, C + num_channels, H, W).
    """

    def __init__(self, group_size: int | None = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = n if self.group_size is None else min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # (G, N/G, F, C/F, H, W)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # (N/G, F, C/F, H, W)
        y = y.mean(dim=[2, 3, 4])  # (N/G, F)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # (N, F, H, W)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head: minibatch std -> conv 3x3 -> dense -> dense (-> projection on cmap).

    Shapes: x (B, in_channels, R, R), cmap (B, cmap_dim) or None -> (B, 1) logits.
    """

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (
            MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        )
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels,
            in_channels,
            kernel_size=3,
            activation=activation,
            conv_clamp=conv_clamp,
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(
        self, x: torch.Tensor, img: torch.Tensor | None = None, cmap: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class ConditionalDiscriminator(torch.nn.Module):
    """StyleGAN2 discriminator with projection conditioning: img (B, C, R, R), c (B, c_dim) -> (B, 1).

    Args:
        c_dim: condition size; 0 = unconditional.
        img_resolution: input resolution (power of two >= 8).
        img_channels: input channels.
        channel_base, channel_max: ``min(channel_base // res, channel_max)`` channels at ``res``.
        num_fp16_res: the highest resolutions run in float16 on CUDA (set ``conv_clamp`` with it).
        cmap_dim: condition embedding size (default: channels at 4x4).
        mapping_kwargs: for the condition `MappingNetwork` (StyleGAN2-ADA default 8 layers; EG3D uses 2).
        **block_kwargs: for every `DiscriminatorBlock` (``activation``, ``resample_filter``, ...).
    """

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        mapping_kwargs: dict | None = None,
        **block_kwargs,
    ) -> None:
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 8 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.channel_base, self.channel_max = channel_base, channel_max
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        cmap_dim = self.channels_at(4) if cmap_dim is None else cmap_dim
        self.cmap_dim = cmap_dim if c_dim > 0 else 0
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.blocks = torch.nn.ModuleList()
        for res in self.block_resolutions:
            self.blocks.append(
                DiscriminatorBlock(
                    self.channels_at(res) if res < img_resolution else 0,
                    self.channels_at(res),
                    self.channels_at(res // 2),
                    resolution=res,
                    img_channels=img_channels,
                    architecture=architecture,
                    conv_clamp=conv_clamp,
                    use_fp16=num_fp16_res > 0 and res >= fp16_resolution,
                    **block_kwargs,
                )
            )
        self.mapping = None
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0,
                c_dim=c_dim,
                w_dim=self.cmap_dim,
                num_ws=None,
                w_avg_beta=None,
                **(mapping_kwargs or {}),
            )
        self.epilogue = DiscriminatorEpilogue(
            self.channels_at(4),
            cmap_dim=self.cmap_dim,
            resolution=4,
            img_channels=img_channels,
            architecture=architecture,
            mbstd_group_size=mbstd_group_size,
            mbstd_num_channels=mbstd_num_channels,
            conv_clamp=conv_clamp,
        )

    def channels_at(self, res: int) -> int:
        """Feature channels at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)

    def forward(
        self, img: torch.Tensor, c: torch.Tensor | None = None, force_fp32: bool = False
    ) -> torch.Tensor:
        """Logits (B, 1) for images (B, img_channels, R, R) under conditions (B, c_dim)."""
        if img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(
                f"expected images (B, {self.img_channels}, {self.img_resolution}, {self.img_resolution}), "
                f"got {tuple(img.shape)}"
            )
        x = None
        for block in self.blocks:
            x, img = block(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.mapping is not None else None
        return self.epilogue(x, img, cmap)


class DualDiscriminator(torch.nn.Module):
    """EG3D's dual discriminator on the super-resolved and the (upsampled) raw image.

    The raw image is resized to the final resolution with `filtered_resize`
    and concatenated with the final image (2 x img_channels channels). With
    ``blur_sigma > 0`` both images are first blurred with `gaussian_blur`, each
    at its own resolution (EG3D fades this blur out early in training).
    ``disc_c_noise > 0`` adds ``disc_c_noise * std_batch(c) * N(0, 1)`` to the
    camera label before the mapping (needs a batch of 2 or more).

    Shapes: images {'image': (B, C, R, R), 'image_raw': (B, C, r, r)}, c (B, c_dim) -> (B, 1).
    """

    def __init__(
        self,
        c_dim: int = 25,
        img_resolution: int = 512,
        img_channels: int = 3,
        disc_c_noise: float = 0.0,
        resize_filter: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.disc_c_noise = disc_c_noise
        self.resize_filter: torch.Tensor | None
        if resize_filter is None:
            self.resize_filter = None
        else:
            self.register_buffer("resize_filter", setup_filter(resize_filter))
        self.discriminator = ConditionalDiscriminator(c_dim, img_resolution, 2 * img_channels, **kwargs)

    def forward(
        self, images: dict[str, torch.Tensor], c: torch.Tensor | None = None, blur_sigma: float = 0.0
    ) -> torch.Tensor:
        image, image_raw = images["image"], images["image_raw"]
        if blur_sigma > 0:
            image = gaussian_blur(image, blur_sigma)
            image_raw = gaussian_blur(image_raw, blur_sigma)
        image_raw = filtered_resize(image_raw, image.shape[-1], filter=self.resize_filter)
        x = torch.cat([image, image_raw.to(image.dtype)], dim=1)
        if self.c_dim > 0 and self.disc_c_noise > 0 and c.shape[0] > 1:
            c = c + torch.randn_like(c) * c.std(dim=0) * self.disc_c_noise
        return self.discriminator(x, c)
