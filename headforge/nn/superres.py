"""EG3D-style super-resolution: raw neural rendering (image + features) -> high-resolution image.

EG3D (NVlabs/eg3d, ``training/superresolution.py``) upsamples the volume
renderer's low-resolution feature image with StyleGAN2 synthesis blocks
conditioned on the generator's last w, adding each block's ToRGB output to an
upsampled RGB skip path that starts from the raw RGB (the first feature
channels). `SuperResolution` covers its variants with one module:

- the raw image and features are first resized to ``input_resolution``
  (antialiased bilinear) when they arrive at another size;
- factor 2 (``output = 2 * input``): a block without upsampling at
  ``input_resolution`` followed by one 2x block (EG3D's Hybrid2X / Hybrid4X);
- factor 4: two 2x blocks (EG3D's Hybrid8X / Hybrid8XDC, 128 -> 512);
- factor 8: three 2x blocks.

Channel widths: the block producing resolution ``r`` has
``min(channel_base // r, channel_max)`` channels. The defaults
(``channel_base=65536, channel_max=512``) reproduce EG3D's ffhq512 module
(Hybrid8XDC: 256 channels at 256, 128 at 512). Other EG3D variants:
Hybrid8X (128 -> 512, 128/64 channels) ``channel_base=32768``;
Hybrid4X (128 -> 256, 128/64) ``channel_base=16384``;
Hybrid2X (64 -> 128, 128/64) ``channel_base=8192``.
"""

from __future__ import annotations

import math

import torch

from headforge.nn.filters import filtered_resize
from headforge.nn.stylegan2 import SynthesisBlock


class SuperResolution(torch.nn.Module):
    """Upsample a raw neural rendering by 2x, 4x or 8x with w-conditioned synthesis blocks.

    Args:
        in_channels: channels of the raw feature image (e.g. 32); its first
            ``img_channels`` are the raw RGB.
        img_channels: output channels (3).
        input_resolution: resolution the blocks start from (e.g. 128).
        output_resolution: output resolution, ``input_resolution * {2, 4, 8}``.
        w_dim: w dimensionality.
        channel_base, channel_max: block widths (module docstring).
        noise_mode: default per-pixel noise mode ('none', as EG3D's ``superresolution_noise_mode``).
        **block_kwargs: passed to every `SynthesisBlock` (``conv_clamp``, ``use_fp16``, ...).
    """

    def __init__(
        self,
        in_channels: int,
        img_channels: int = 3,
        input_resolution: int = 128,
        output_resolution: int = 512,
        w_dim: int = 512,
        channel_base: int = 65536,
        channel_max: int = 512,
        noise_mode: str = "none",
        **block_kwargs,
    ) -> None:
        super().__init__()
        factor = output_resolution // input_resolution
        if factor not in (2, 4, 8) or factor * input_resolution != output_resolution:
            raise ValueError(
                f"output_resolution must be 2, 4 or 8 times input_resolution, got {input_resolution} -> "
                f"{output_resolution}"
            )
        self.in_channels = in_channels
        self.img_channels = img_channels
        self.input_resolution = input_resolution
        self.output_resolution = output_resolution
        self.w_dim = w_dim
        self.channel_base, self.channel_max = channel_base, channel_max
        self.noise_mode = noise_mode
        num_up = int(math.log2(factor))
        # Factor 2 refines at the input resolution first (EG3D's "NoUp" block).
        stages = [(input_resolution, 1)] if num_up == 1 else []
        stages += [(input_resolution * 2**i, 2) for i in range(1, num_up + 1)]
        self.blocks = torch.nn.ModuleList()
        channels = in_channels
        for res, up in stages:
            out_channels = self.channels_at(res)
            self.blocks.append(
                SynthesisBlock(
                    channels,
                    out_channels,
                    w_dim=w_dim,
                    resolution=res,
                    img_channels=img_channels,
                    is_last=res == output_resolution,
                    architecture="skip",
                    up=up,
                    **block_kwargs,
                )
            )
            channels = out_channels

    def channels_at(self, res: int) -> int:
        """Feature channels of the block producing resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)

    def forward(
        self,
        rgb: torch.Tensor,
        features: torch.Tensor,
        ws: torch.Tensor,
        noise_mode: str | None = None,
        **block_kwargs,
    ) -> torch.Tensor:
        """Super-resolve.

        Args:
            rgb: (B, img_channels, h, w) raw image (the first channels of ``features``).
            features: (B, in_channels, h, w) raw feature image.
            ws: (B, num_ws, w_dim) the generator's ws; only the last one is used, for every layer.
            noise_mode: overrides the module's default noise mode.

        Returns:
            (B, img_channels, output_resolution, output_resolution).
        """
        noise_mode = self.noise_mode if noise_mode is None else noise_mode
        size = self.input_resolution
        rgb = filtered_resize(rgb, size)
        x = filtered_resize(features, size)
        w_last = ws[:, -1:, :]
        img = rgb
        for block in self.blocks:
            block_ws = w_last.expand(-1, block.num_conv + block.num_torgb, -1)
            x, img = block(x, img, block_ws, noise_mode=noise_mode, **block_kwargs)
        return img.contiguous()
