"""Equalised-learning-rate layers and fused bias + activation (StyleGAN2 conventions).

Weights are stored with unit variance and scaled at run time by
``1 / sqrt(fan_in)`` ("equalised learning rate", Karras et al.), so that Adam
updates every layer at the same relative speed. Activations carry StyleGAN's
gains (``sqrt(2)`` after (leaky) ReLU) so that unit-variance inputs give
roughly unit-variance outputs through deep stacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from headforge.nn.filters import filter_size, setup_filter, upfirdn2d


@dataclass(frozen=True)
class ActivationSpec:
    """An activation with StyleGAN's default leaky slope and output gain."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float
    default_gain: float


ACTIVATIONS: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(lambda x, alpha: x, 0.0, 1.0),
    "relu": ActivationSpec(lambda x, alpha: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": ActivationSpec(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
    "tanh": ActivationSpec(lambda x, alpha: torch.tanh(x), 0.0, 1.0),
    "sigmoid": ActivationSpec(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0),
    "elu": ActivationSpec(lambda x, alpha: F.elu(x), 0.0, 1.0),
    "selu": ActivationSpec(lambda x, alpha: F.selu(x), 0.0, 1.0),
    "softplus": ActivationSpec(lambda x, alpha: F.softplus(x), 0.0, 1.0),
    "swish": ActivationSpec(lambda x, alpha: F.silu(x), 0.0, math.sqrt(2)),
}


def activation_gain(act: str) -> float:
    """StyleGAN's default output gain of activation ``act``."""
    return ACTIVATIONS[act].default_gain


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(act(x + b, alpha) * gain)``, StyleGAN2's fused bias + activation.

    Args:
        x: input of any shape.
        b: (x.shape[dim],) bias broadcast along ``dim``, or ``None``.
        dim: axis of ``x`` that the bias runs along.
        act: one of `ACTIVATIONS` (``'linear'``, ``'relu'``, ``'lrelu'``, ...).
        alpha: leaky slope (default 0.2 for ``'lrelu'``).
        gain: output scale (default: the activation's gain, ``sqrt(2)`` for (l)relu).
        clamp: clamp the output to ``[-clamp, clamp]`` (``None`` = off).

    Returns:
        Tensor shaped like ``x``; ``x`` itself is never modified.
    """
    spec = ACTIVATIONS[act]
    alpha = spec.default_alpha if alpha is None else float(alpha)
    gain = spec.default_gain if gain is None else float(gain)
    if b is not None:
        shape = [-1 if i == dim % x.ndim else 1 for i in range(x.ndim)]
        x = x + b.to(x.dtype).reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit mean square along ``dim`` (StyleGAN's pixel norm for latents)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: ``act(x @ (W * g).T + b * lr_multiplier)``.

    ``g = lr_multiplier / sqrt(in_features)``. The stored weight is
    N(0, 1 / lr_multiplier^2), so the effective weight is N(0, 1 / in_features)
    whatever the multiplier, while gradients to the stored parameters shrink
    by ``lr_multiplier`` (the mapping network's 0.01 learning-rate multiplier).

    Shapes: (..., in_features) -> (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        # Stored as bias_init / lr_multiplier so that the effective bias starts at
        # bias_init (StyleGAN3's convention; StyleGAN2-ADA's differs only when
        # both bias_init != 0 and lr_multiplier != 1, which it never uses).
        self.bias = (
            torch.nn.Parameter(torch.full((out_features,), float(bias_init) / lr_multiplier))
            if bias
            else None
        )
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Dense layers are cheap and set styles and latents: keep them in float32
        # even under autocast or float16 (float64 stays float64, for gradcheck).
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            # Scale whichever is smaller: styles have few rows, decoders see many points.
            weight = self.weight.to(dtype)
            x_scaled = x.to(dtype)
            if x_scaled.numel() <= weight.numel():
                x_scaled = x_scaled * self.weight_gain
            else:
                weight = weight * self.weight_gain
            bias = None
            if self.bias is not None:
                bias = self.bias.to(dtype)
                if self.bias_gain != 1:
                    bias = bias * self.bias_gain
            if self.activation == "linear":
                return F.linear(x_scaled, weight, bias)
            return bias_act(F.linear(x_scaled, weight), bias, dim=-1, act=self.activation)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
        )


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4D tensor is laid out channels-last (and not also plain contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """conv2d / conv_transpose2d; ``flip_weight=False`` makes conv2d a true convolution."""
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    # A weight in the input's memory format keeps oneDNN from copying the
    # (usually much larger) input to match the weight.
    memory_format = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    w = w.contiguous(memory_format=memory_format)
    if transpose:
        return F.conv_transpose2d(x, w, bias, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, bias, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """2D convolution with FIR-filtered up/down-sampling (StyleGAN2's ``conv2d_resample``).

    Equivalent to: ``upfirdn2d(up, f, gain=up^2)`` -> ``conv2d(w, padding)`` ->
    ``upfirdn2d(f, down)``, but computed at the cheapest resolution: a
    stride-``up`` transposed convolution followed by the FIR filter, or the FIR
    filter followed by a stride-``down`` convolution.

    Args:
        x: (B, groups * Cin, H, W) input.
        w: (Cout, Cin, kh, kw) weight.
        f: FIR filter from `setup_filter` (``None`` = box of one tap).
        up, down: integer resampling factors.
        padding: zero padding of the convolution, in input pixels (after upsampling).
        groups: grouped convolution (used for per-sample modulated weights).
        flip_weight: ``True`` = correlation (PyTorch conv2d), ``False`` = true convolution.
        flip_filter: correlate with ``f`` instead of convolving.
        bias: (Cout,) bias added by the convolution itself; only allowed when
            nothing follows the convolution (no upsampling or FIR after it).

    Returns:
        (B, Cout, H * up // down, W * up // down) for ``padding = kernel_size // 2``.
    """
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    if bias is not None and up > 1:
        raise ValueError("bias can only be fused when no FIR filter follows the convolution")

    # 1x1 kernels: resample on the cheaper side of the convolution.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight, bias=bias)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    # Downsampling: filter at full resolution, then a strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight, bias=bias)

    # Upsampling: strided transposed convolution, then the FIR filter.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        # Let the transposed convolution crop what it can, so the FIR sees less.
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(
            x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight
        )
        x = upfirdn2d(
            x, f, padding=[px0 + pxt, px1 - pxt, py0 + pyt, py1 - pyt], gain=up**2, flip_filter=flip_filter
        )
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # Plain convolution.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight, bias=bias)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return _conv(x, w, groups=groups, flip_weight=flip_weight, bias=bias)


class Conv2dLayer(torch.nn.Module):
    """Equalised-lr 2D convolution with optional FIR up/down-sampling, bias, activation and clamp.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H * up // down, W * up // down).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = activation_gain(activation)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """Apply the layer; ``gain`` scales the output (and the clamp) as in StyleGAN2."""
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        # The convolution adds the bias itself unless an FIR filter follows it.
        fuse_bias = self.up == 1
        x = conv2d_resample(
            x,
            w,
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=self.up == 1,  # StyleGAN2's weight orientation (and slightly faster)
            bias=b if fuse_bias else None,
        )
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, None if fuse_bias else b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"activation={self.activation}, up={self.up}, down={self.down}"
        )
