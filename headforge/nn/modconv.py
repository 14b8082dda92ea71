"""Modulated convolution (StyleGAN2): per-sample styles scale the weights, demodulation renormalises them.

The hot path of every synthesis network in headforge. Batch 1 and CPU
inference fold the styles into one convolution; larger batches either use a
grouped convolution (fused) or scale activations around a shared-weight
convolution, whichever is faster for the device (see ``fused_modconv``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from headforge.nn.layers import conv2d_resample, is_channels_last


def in_place_ok(*tensors: torch.Tensor | None) -> bool:
    """Whether in-place updates are safe: autograd is off or records none of ``tensors``."""
    if not torch.is_grad_enabled():
        return True
    return not any(t is not None and t.requires_grad for t in tensors)


def _modulate_weight(weight: torch.Tensor, factors: torch.Tensor, layout: str) -> torch.Tensor:
    """Per-sample weights ``weight[None] * factors``, in the memory layout the convolution wants.

    Shapes: weight (Cout, Cin, kh, kw), factors (B, Cout, Cin, 1, 1) -> (B, Cout, Cin, kh, kw).

    ``layout``: 'contiguous'; 'channels_last' (for a channels-last input, so
    that oneDNN does not copy the usually much larger input to match the
    weight); 'transposed' (channels-last after swapping Cout and Cin, what a
    transposed convolution of a channels-last input wants).
    """
    if layout == "contiguous":
        return weight.unsqueeze(0) * factors
    if not in_place_ok(weight, factors):
        return weight.contiguous(memory_format=torch.channels_last).unsqueeze(0) * factors
    # Write the product straight into storage of the wanted layout (one pass, no copy).
    batch, out_channels, in_channels, kh, kw = factors.shape[:3] + weight.shape[2:]
    kwargs = dict(dtype=torch.result_type(weight, factors), device=weight.device)
    if layout == "channels_last":
        out = torch.empty(batch, out_channels, kh, kw, in_channels, **kwargs).permute(0, 1, 4, 2, 3)
    else:
        out = torch.empty(batch, in_channels, kh, kw, out_channels, **kwargs).permute(0, 4, 1, 2, 3)
    return torch.mul(weight.unsqueeze(0), factors, out=out)


def _pointwise_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """1x1 convolution with per-sample weights as one batched matrix product.

    x (B, Cin, H, W), w (B, Cout, Cin), bias (Cout,) or None -> (B, Cout, H, W), in x's memory layout.
    """
    batch, in_channels, height, width = x.shape
    out_channels = w.shape[1]
    if is_channels_last(x):
        # (B, H*W, Cin) @ (B, Cin, Cout) is already the channels-last output.
        pixels = x.permute(0, 2, 3, 1).reshape(batch, height * width, in_channels)
        w_t = w.transpose(1, 2)
        y = torch.bmm(pixels, w_t) if bias is None else torch.baddbmm(bias, pixels, w_t)
        return y.reshape(batch, height, width, out_channels).permute(0, 3, 1, 2)
    pixels = x.reshape(batch, in_channels, height * width)
    y = torch.bmm(w, pixels) if bias is None else torch.baddbmm(bias[:, None], w, pixels)
    return y.reshape(batch, out_channels, height, width)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    *,
    bias: torch.Tensor | None = None,
    output_gain: float = 1.0,
    linear: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution.

    Per sample b: ``w'[o,i,:,:] = weight[o,i,:,:] * styles[b,i]``; with
    ``demodulate``, ``w''[o] = w'[o] / sqrt(sum_{i,kh,kw} w'[o]^2 + 1e-8)``;
    the output is ``output_gain * (conv2d_resample(x[b], w'') + noise + bias)``.

    ``fused_modconv=True`` folds the styles into per-sample weights and runs
    one grouped convolution (groups = batch; a plain convolution at batch 1);
    ``False`` scales activations instead and shares one weight across the
    batch (cheaper backward pass, used for training). Both give the same result.

    Args:
        x: (B, Cin, H, W) input.
        weight: (Cout, Cin, kh, kw) unmodulated weight.
        styles: (B, Cin) per-sample input-channel scales.
        noise: additive noise broadcastable to the output, e.g. (B, 1, H', W'), or None.
        up, down, padding, resample_filter, flip_weight: as `conv2d_resample`.
        demodulate: normalise each output channel's weight to unit norm.
        fused_modconv: see above.
        bias: (Cout,) bias added before ``output_gain`` (keyword only).
        output_gain: scale of the whole output (lets a following (leaky) ReLU's gain be folded in).
        linear: ``linear(styles, weight)`` -> (B, Cout, H', W'), the convolution of the
            style-scaled input with the shared weight, computed by the caller (for inputs
            with structure a generic convolution cannot exploit; ``x`` then only gives the
            batch size and dtype). Implies the non-fused form; demodulation, noise, bias
            and gain are applied here as usual (keyword only).

    Returns:
        (B, Cout, H * up // down, W * up // down) for ``padding = kh // 2``.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise (scale-invariant under demodulation) to keep float16 in range.
        weight = weight * (
            1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    # Demodulation coefficients without materialising the modulated weights:
    # sum_{i,k} (w[o,i,k] s[b,i])^2 = sum_i (sum_k w[o,i,k]^2) s[b,i]^2.
    dcoefs = None
    if demodulate:
        weight_sq = torch.linalg.vector_norm(weight, dim=(2, 3)).square()  # (Cout, Cin)
        # An explicit sum rather than a matmul keeps this in float32 under autocast.
        dcoefs = ((styles.square().unsqueeze(1) * weight_sq).sum(dim=2) + 1e-8).rsqrt()  # (B, Cout)
    out_scale = dcoefs * output_gain if dcoefs is not None else None  # (B, Cout) or None

    if fused_modconv and linear is None:
        # Per-sample weights w[b,o,i] = weight[o,i] * s[b,i] * d[b,o] * gain, one multiply.
        if out_scale is None:
            out_scale = styles.new_full((batch, out_channels), output_gain)
        factors = out_scale.unsqueeze(2) * styles.unsqueeze(1)  # (B, Cout, Cin)
        factors = factors.reshape(batch, out_channels, in_channels, 1, 1)
        layout = "contiguous"
        if is_channels_last(x):
            # At batch 1 the transposed layout survives the reshapes below.
            layout = "transposed" if up > 1 and batch == 1 else "channels_last"
        w = _modulate_weight(weight, factors, layout).to(x.dtype)
        # With no FIR after the convolution, the convolution itself adds the bias.
        bias_done = bias is not None and up == 1
        conv_bias = (bias * output_gain).to(x.dtype) if bias_done else None
        if kh == 1 and kw == 1 and up == 1 and down == 1 and padding == 0:
            y = _pointwise_conv(x, w.reshape(batch, out_channels, in_channels), conv_bias)
        else:
            y = conv2d_resample(
                x.reshape(1, batch * in_channels, *x.shape[2:]),
                w.reshape(batch * out_channels, in_channels, kh, kw),
                f=resample_filter,
                up=up,
                down=down,
                padding=padding,
                groups=batch,
                flip_weight=flip_weight,
                bias=conv_bias.repeat(batch) if conv_bias is not None else None,
            )
            y = y.reshape(batch, out_channels, *y.shape[2:])
    else:
        bias_done = False
        if linear is not None:
            y = linear(styles.to(x.dtype), weight.to(x.dtype))
        else:
            y = conv2d_resample(
                x * styles.to(x.dtype).reshape(batch, -1, 1, 1),
                weight.to(x.dtype),
                f=resample_filter,
                up=up,
                down=down,
                padding=padding,
                flip_weight=flip_weight,
            )
        if out_scale is not None:
            y = y * out_scale.to(y.dtype).reshape(batch, -1, 1, 1)
        elif output_gain != 1:
            y = y * output_gain

    inplace = in_place_ok(y, noise, bias)
    extra = []
    if noise is not None:
        extra.append(noise.to(y.dtype) * output_gain if output_gain != 1 else noise.to(y.dtype))
    if bias is not None and not bias_done:
        extra.append((bias * output_gain).to(y.dtype).reshape(1, -1, 1, 1))
    for term in extra:
        y = y.add_(term) if inplace else y + term
    return y
