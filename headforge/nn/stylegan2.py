"""StyleGAN2 generator parts: mapping network, modulated convolution, synthesis blocks and network.

Follows StyleGAN2-ADA / EG3D (NVlabs) in structure, parameterisation and
numerics, in plain PyTorch. Channel counts, resolutions and the number of
output channels are free, so the same network makes RGB images, 96-channel
tri-planes (EG3D) or the features of a super-resolution module.

w-latent bookkeeping (as StyleGAN2): a block uses one w per convolution and
one per ToRGB layer; the ToRGB of one block shares its w with the first
convolution of the next, so ``num_ws = sum(num_conv) + num_torgb(last)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from headforge.nn.filters import setup_filter, upsample2d
from headforge.nn.layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    activation_gain,
    bias_act,
    normalize_2nd_moment,
)
from headforge.nn.modconv import in_place_ok, modulated_conv2d

# Activations with act(g * z) = g * act(z) for g > 0: their output gain can be
# folded into the (per-sample) convolution weights, saving a pass over memory.
_HOMOGENEOUS_ACTIVATIONS = ("linear", "relu", "lrelu")


class MappingNetwork(torch.nn.Module):
    """z (and a condition c) -> intermediate latents w, with truncation and a tracked w average.

    ``z`` and the embedded ``c`` are each normalised to unit second moment,
    concatenated and passed through ``num_layers`` leaky-ReLU dense layers
    (learning rate scaled by ``lr_multiplier``). Either input may be absent
    (``z_dim = 0``: e.g. a lighting mapping from 27 SH floats; ``c_dim = 0``:
    unconditional).

    Shapes: z (B, z_dim), c (B, c_dim) -> (B, num_ws, w_dim), or (B, w_dim) when ``num_ws`` is None.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.998,
    ) -> None:
        super().__init__()
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork needs z_dim > 0 or c_dim > 0")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        self.embed = FullyConnectedLayer(c_dim, embed_features) if c_dim > 0 else None
        self.layers = torch.nn.ModuleList(
            FullyConnectedLayer(fin, fout, activation=activation, lr_multiplier=lr_multiplier)
            for fin, fout in zip(features[:-1], features[1:])
        )
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Map latents; ``update_emas=True`` (training only) moves ``w_avg`` towards this batch's mean w.

        Truncation: ``w_avg + psi * (w - w_avg)``, applied to the first
        ``truncation_cutoff`` ws (all when None).
        """
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_emas and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation needs a tracked w_avg (w_avg_beta is None)")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x.contiguous() if self.num_ws is not None else x


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling) + noise + bias + leaky ReLU.

    Shapes: x (B, in_channels, resolution / up, resolution / up), w (B, w_dim)
    -> (B, out_channels, resolution, resolution).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.flip_weight = up == 1  # StyleGAN2's weight orientation (and slightly faster)
        self.act_gain = activation_gain(activation)
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))

    def make_noise(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor | None:
        """Noise for this layer: 'random' (global RNG, on x's device), 'const' (fixed buffer) or 'none'."""
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "random":
            rnd = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            return rnd * self.noise_strength.to(x.dtype)
        if noise_mode == "const":
            return self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        raise ValueError(f"unknown noise_mode {noise_mode!r}")

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = True,
        gain: float = 1.0,
        linear: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``linear``: see :func:`~headforge.nn.modconv.modulated_conv2d` (a caller-computed convolution)."""
        styles = self.affine(w)
        noise = self.make_noise(x, noise_mode)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        modconv_kwargs = dict(
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=self.flip_weight,
            fused_modconv=fused_modconv,
            linear=linear,
        )
        if self.activation not in _HOMOGENEOUS_ACTIVATIONS:
            x = modulated_conv2d(x, self.weight, styles, noise, **modconv_kwargs)
            return bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=act_clamp)
        x = modulated_conv2d(
            x, self.weight, styles, noise, bias=self.bias, output_gain=act_gain, **modconv_kwargs
        )
        inplace = in_place_ok(x)
        if self.activation == "lrelu":
            x = F.leaky_relu_(x, 0.2) if inplace else F.leaky_relu(x, 0.2)
        elif self.activation == "relu":
            x = F.relu_(x) if inplace else F.relu(x)
        if act_clamp is not None:
            x = x.clamp_(-act_clamp, act_clamp) if inplace else x.clamp(-act_clamp, act_clamp)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"resolution={self.resolution}, up={self.up}, activation={self.activation}"
        )


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution without demodulation, to ``out_channels`` output channels.

    Named after RGB, but any width works (96 for EG3D's tri-planes).
    Shapes: x (B, in_channels, H, W), w (B, w_dim) -> (B, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            padding=self.padding,
            demodulate=False,
            fused_modconv=fused_modconv,
            bias=self.bias,
        )
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: [const or (up)conv0] -> conv1 -> ToRGB.

    ``in_channels = 0`` makes the constant-input block (a learned
    (out_channels, resolution, resolution) tensor, resolution 4 in StyleGAN2).
    ``up = 2`` doubles the resolution of the incoming features (and of the
    incoming image in the 'skip' architecture); ``up = 1`` keeps it (EG3D's
    "NoUp" super-resolution block). Architectures: 'skip' (ToRGB in every
    block, images summed across resolutions), 'orig' (ToRGB in the last block
    only), 'resnet' (1x1 residual shortcut around the two convolutions).

    Shapes: x (B, in_channels, resolution / up, ...) or None, img (B, img_channels,
    resolution / up, ...) or None, ws (B, num_conv + num_torgb, w_dim) ->
    x (B, out_channels, resolution, resolution), img (B, img_channels, resolution, resolution) or None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        use_noise: bool = True,
        up: int = 2,
        channels_last: bool | None = None,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown architecture {architecture!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.up = up
        self.channels_last = channels_last
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        layer_kwargs = dict(
            use_noise=use_noise, resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs
        )
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=up, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=up, resample_filter=resample_filter
            )

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "random",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the block; ``fused_modconv=None`` fuses at batch 1 (and for CUDA inference)."""
        if ws.shape[1:] != (self.num_conv + self.num_torgb, self.w_dim):
            raise ValueError(
                f"ws must be (B, {self.num_conv + self.num_torgb}, {self.w_dim}), got {tuple(ws.shape)}"
            )
        w_iter = iter(ws.unbind(dim=1))
        # float16 only pays off (and is only well supported) on CUDA.
        use_fp16 = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        if fused_modconv is None:
            # Measured: on CPU a shared-weight batched convolution beats a grouped
            # one for batches > 1; on CUDA grouped wins for inference, and the
            # shared weight gives the cheaper backward pass (as StyleGAN2-ADA).
            cuda_inference = ws.device.type == "cuda" and not torch.is_grad_enabled()
            fused_modconv = ws.shape[0] == 1 or cuda_inference
        layer_kwargs = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)
        channels_last = self.channels_last
        if channels_last is None:
            # oneDNN's convolutions (and transposed ones even more) are fastest
            # channels-last; on CUDA it pays off with float16 only.
            channels_last = ws.device.type == "cpu" or use_fp16
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if x is not None:
            # Under autocast, leave the activations in the autocast dtype.
            if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
                x = x.to(dtype)
            x = x.contiguous(memory_format=memory_format)

        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x.contiguous(memory_format=memory_format), next(w_iter), **layer_kwargs)
        elif self.architecture == "resnet":
            shortcut = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), gain=math.sqrt(0.5), **layer_kwargs)
            x = shortcut + x
        else:
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), **layer_kwargs)

        img_is_ours = False  # never modify the caller's image in place
        if img is not None and self.up > 1:
            img = upsample2d(img, self.resample_filter, up=self.up)
            img_is_ours = True
        if self.num_torgb:
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            if img is None:
                img = y
            elif img_is_ours and in_place_ok(img, y):
                img = img.add_(y)
            else:
                img = img + y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, up={self.up}"


class SynthesisNetwork(torch.nn.Module):
    """StyleGAN2 synthesis network: ws -> (B, img_channels, img_resolution, img_resolution).

    Blocks at resolutions 4, 8, ..., img_resolution with
    ``channels_at(res) = min(channel_base // res, channel_max)`` channels.
    ``num_fp16_res`` highest resolutions use float16 on CUDA (set ``conv_clamp``,
    e.g. 256, with it). Extra keyword arguments go to every `SynthesisBlock`.

    Speed notes: on CPU the blocks run channels-last (oneDNN's fast layout),
    so per-block features from ``return_features`` / `SynthesisBlock` may be
    channels-last tensors (use ``reshape``, not ``view``); the returned image
    is contiguous. Under ``torch.autocast('cpu', dtype=torch.bfloat16)`` the
    convolutions run in bfloat16 (about 1.6x faster on CPUs with AVX512-BF16,
    ~1% relative error) while the dense layers and demodulation stay float32.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        architecture: str = "skip",
        num_fp16_res: int = 0,
        **block_kwargs,
    ) -> None:
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.channel_base, self.channel_max = channel_base, channel_max
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.blocks = torch.nn.ModuleList()
        for res in self.block_resolutions:
            block = SynthesisBlock(
                self.channels_at(res // 2) if res > 4 else 0,
                self.channels_at(res),
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=res == img_resolution,
                architecture=architecture,
                use_fp16=num_fp16_res > 0 and res >= fp16_resolution,
                **block_kwargs,
            )
            self.blocks.append(block)
        self.num_ws = sum(block.num_conv for block in self.blocks) + self.blocks[-1].num_torgb

    def channels_at(self, res: int) -> int:
        """Feature channels of the block at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)

    def split_ws(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """Per-block views of ws (B, num_ws, w_dim): block i gets (B, num_conv_i + num_torgb_i, w_dim)."""
        if ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        block_ws, w_idx = [], 0
        for block in self.blocks:
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv
        return block_ws

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "random",
        return_features: bool = False,
        **block_kwargs,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor | None]]]:
        """Synthesise (B, img_channels, R, R) images from ws (B, num_ws, w_dim).

        With ``return_features`` also returns ``{resolution: (x, img)}``, each
        block's features (B, channels_at(res), res, res) and running image.
        """
        x = img = None
        features = {}
        for block, block_ws in zip(self.blocks, self.split_ws(ws)):
            x, img = block(x, img, block_ws, noise_mode=noise_mode, **block_kwargs)
            if return_features:
                features[block.resolution] = (x, img)
        img = img.contiguous()  # blocks may run channels-last; hand back the standard layout
        return (img, features) if return_features else img
