"""FIR resampling and blurring of NCHW images in pure PyTorch.

The central routine is `upfirdn2d`, which follows StyleGAN2's definition
(NVlabs/stylegan2-ada-pytorch, `torch_utils/ops/upfirdn2d.py`) so that
layers built on it behave like theirs:

1. upsample: insert ``up - 1`` zeros after every input sample
   (length L -> L * up);
2. pad: add ``padding`` zeros on each side (negative values crop);
3. filter: true 2D convolution with the FIR filter ``f`` (``flip_filter=True``
   makes it a correlation; the two coincide for symmetric filters), the
   filter scaled by ``gain``;
4. downsample: keep every ``down``-th sample, starting with the first.

Output length per axis: ``(L * up + pad0 + pad1 - taps) // down + 1``.

Filters come from `setup_filter`: a 1D tensor is a separable filter
(applied along rows, then columns), a 2D tensor a general one. Long separable
filters run as two depthwise 1D convolutions, short ones (<= 8 taps, such as
StyleGAN's [1, 3, 3, 1]) as one 2D depthwise pass, which measures faster on
CPU for this memory-bound work. Upsampling runs as a strided depthwise
transposed convolution (no zero-filled intermediate tensor), downsampling as
a strided convolution (no discarded outputs), and padding happens inside the
convolutions where possible (no padded copies). Channels-last inputs stay
channels-last, which is the fast layout for oneDNN on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

FilterLike = torch.Tensor | Sequence[float] | Sequence[Sequence[float]] | np.ndarray | None


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    """Return ``(x, y)`` from an int or a 2-sequence."""
    if isinstance(value, int):
        return value, value
    vx, vy = value
    return int(vx), int(vy)


def _parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Return ``(x0, x1, y0, y1)`` from an int, ``[x, y]`` or ``[x0, x1, y0, y1]``."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Number of taps ``(width, height)`` of a filter from `setup_filter` (``None`` = 1x1)."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def setup_filter(
    f: FilterLike,
    device: torch.device | str | None = None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1.0,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn filter taps into a float32 tensor for `upfirdn2d`.

    Args:
        f: taps, 1D (separable, e.g. ``[1, 3, 3, 1]``) or 2D; ``None`` = ``[1]``.
        device: device of the result.
        normalize: divide by the sum of the (2D-equivalent) filter, so that a
            constant image keeps its value.
        flip_filter: flip the taps (turns convolution into correlation).
        gain: overall gain of the 2D-equivalent filter.
        separable: ``None`` keeps 1D taps separable (fastest here); ``False``
            turns 1D taps into their 2D outer product; ``True`` requires 1D taps.

    Returns:
        (taps,) separable or (taps_y, taps_x) filter, float32.
    """
    if f is None:
        f = 1.0
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be 1D or 2D and non-empty, got shape {tuple(f.shape)}")
    if separable is True and f.ndim != 1:
        raise ValueError("a separable filter needs 1D taps")
    if separable is False and f.ndim == 1:
        f = torch.outer(f, f)
    if normalize:
        # The sum of a separable filter's 2D equivalent is sum(f)^2; normalising
        # each 1D pass by sum(f) gives the same result.
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# Separable filters up to this many taps run as one 2D depthwise pass: on CPU
# (oneDNN) a single 4x4 pass is about twice as fast as two 1D passes, because
# the work is memory-bound. Longer filters (Gaussian blur) run separably.
_MAX_TAPS_AS_2D = 8


def _conv_pass(
    x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], pad: tuple[int, ...]
) -> torch.Tensor:
    """Depthwise conv2d of x (B, C, H, W) with zero padding ``(x0, x1, y0, y1)`` (negative crops).

    Pads inside the convolution (no padded copy): negative padding crops the
    input (a view); the convolution pads both sides by the larger amount and
    the outputs that only exist because of the extra padding are sliced off.
    """
    px0, px1, py0, py1 = pad
    if min(px0, px1, py0, py1) < 0:
        h, w = x.shape[2], x.shape[3]
        x = x[:, :, max(-py0, 0) : h - max(-py1, 0), max(-px0, 0) : w - max(-px1, 0)]
        px0, px1, py0, py1 = max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)
    pady, padx = max(py0, py1), max(px0, px1)
    if (pady - py0) % stride[0] or (padx - px0) % stride[1]:
        # Symmetric padding would shift the sampling grid; pad explicitly instead.
        x = F.pad(x, [px0, px1, py0, py1])
        return F.conv2d(x, weight, stride=stride, groups=x.shape[1])
    y = F.conv2d(x, weight, stride=stride, padding=(pady, padx), groups=x.shape[1])
    top, left = (pady - py0) // stride[0], (padx - px0) // stride[1]
    out_h = (x.shape[2] + py0 + py1 - weight.shape[2]) // stride[0] + 1
    out_w = (x.shape[3] + px0 + px1 - weight.shape[3]) // stride[1] + 1
    if (top, left, out_h, out_w) != (0, 0, y.shape[2], y.shape[3]):
        y = y[:, :, top : top + out_h, left : left + out_w]
    return y


def _fir_pass(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    pad: tuple[int, int, int, int],
) -> torch.Tensor:
    """Depthwise upsample-pad-convolve-downsample with one (kh, kw) kernel.

    Args:
        x: (B, C, H, W) input.
        kernel: (kh, kw) taps of a *true* convolution.
        up, down: ``(uy, ux)`` and ``(dy, dx)`` integer factors.
        pad: ``(x0, x1, y0, y1)`` padding in the upsampled domain.
    """
    channels = x.shape[1]
    kh, kw = kernel.shape
    uy, ux = up
    dy, dx = down
    px0, px1, py0, py1 = pad
    if uy == 1 and ux == 1:
        # conv2d correlates, so flip the taps to convolve.
        weight = kernel.flip([0, 1])[None, None].expand(channels, 1, kh, kw).contiguous()
        return _conv_pass(x, weight, (dy, dx), (px0, px1, py0, py1))
    # A strided transposed convolution scatters each input sample through the
    # taps: zero insertion followed by true convolution, without the zeros.
    # Its output is the full convolution minus the (up - 1) trailing samples
    # that only see the inserted zeros; the padding below lines it up with the
    # padded reference definition (positive = add zeros, negative = crop).
    weight = kernel[None, None].expand(channels, 1, kh, kw).contiguous()
    pads = [px0 - kw + 1, px1 - kw + ux, py0 - kh + 1, py1 - kh + uy]
    # conv_transpose2d's own padding crops symmetrically; use it for the common part.
    crop_x = max(0, -max(pads[0], pads[1]))
    crop_y = max(0, -max(pads[2], pads[3]))
    x = F.conv_transpose2d(x, weight, stride=(uy, ux), padding=(crop_y, crop_x), groups=channels)
    pads = [pads[0] + crop_x, pads[1] + crop_x, pads[2] + crop_y, pads[3] + crop_y]
    if any(pads):
        x = F.pad(x, pads)
    if dy > 1 or dx > 1:
        x = x[:, :, ::dy, ::dx]
    return x


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images (StyleGAN2 semantics).

    Args:
        x: (B, C, H, W) images.
        f: filter from `setup_filter`: (taps,) separable, (taps_y, taps_x), or ``None`` (identity).
        up: integer upsampling factor, int or ``[ux, uy]``.
        down: integer downsampling factor, int or ``[dx, dy]``.
        padding: int, ``[px, py]`` or ``[x0, x1, y0, y1]``, in upsampled pixels; negative crops.
        flip_filter: correlate instead of convolve.
        gain: overall gain applied through the filter (``up**2`` keeps a constant image constant).

    Returns:
        (B, C, (H * uy + y0 + y1 - taps_y) // dy + 1, (W * ux + x0 + x1 - taps_x) // dx + 1).
    """
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=x.device)
    ux, uy = _pair(up)
    dx, dy = _pair(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    f = f.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1 and f.shape[0] <= _MAX_TAPS_AS_2D:
        f = torch.outer(f, f)
    if f.ndim == 2:
        return _fir_pass(x, f * gain, (uy, ux), (dy, dx), (px0, px1, py0, py1))
    taps = f * math.sqrt(gain)
    x = _fir_pass(x, taps[:, None], (uy, 1), (dy, 1), (0, 0, py0, py1))
    return _fir_pass(x, taps[None, :], (1, ux), (1, dx), (px0, px1, 0, 0))


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Filter (B, C, H, W) images with ``f``, padded so that the size stays (B, C, H, W) for ``padding=0``."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 2,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (B, C, H, W) -> (B, C, H * up, W * up) with an FIR low-pass (StyleGAN2's ``upsample2d``).

    The filter gain is multiplied by ``ux * uy`` to make up for the inserted
    zeros, so a normalised filter keeps constant regions constant.
    """
    ux, uy = _pair(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [
        px0 + (fw + ux - 1) // 2,
        px1 + (fw - ux) // 2,
        py0 + (fh + uy - 1) // 2,
        py1 + (fh - uy) // 2,
    ]
    return upfirdn2d(x, f, up=(ux, uy), padding=pad, flip_filter=flip_filter, gain=gain * ux * uy)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: int | Sequence[int] = 2,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> torch.Tensor:
    """FIR low-pass, then downsample (B, C, H, W) -> (B, C, H // down, W // down) (StyleGAN2's downsample2d).

    The filter is padded so that output pixel i is centred on input pixels
    ``down * i ... down * i + down - 1``; a normalised filter keeps constants constant.
    """
    dx, dy = _pair(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [
        px0 + (fw - dx + 1) // 2,
        px1 + (fw - dx) // 2,
        py0 + (fh - dy + 1) // 2,
        py1 + (fh - dy) // 2,
    ]
    return upfirdn2d(x, f, down=(dx, dy), padding=pad, flip_filter=flip_filter, gain=gain)


def filtered_resize(
    x: torch.Tensor,
    size: int | Sequence[int],
    filter: torch.Tensor | None = None,
) -> torch.Tensor:
    """Anti-aliased resize of (B, C, H, W) images to (B, C, size, size) (EG3D's ``filtered_resizing``).

    Args:
        x: (B, C, H, W) images.
        size: output size, int (square) or ``(height, width)``.
        filter: ``None`` uses antialiased bilinear interpolation (EG3D's
            default mode); an FIR filter from `setup_filter` uses EG3D's
            "classic" mode: FIR 2x upsample, bilinear resize to ``2 * size + 2``,
            FIR 2x downsample with one pixel cropped on each side (square only).

    Returns:
        (B, C, size_h, size_w) images; ``x`` itself when it already has that size.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if x.shape[-2:] == (out_h, out_w):
        return x
    if filter is None:
        # The antialiased kernel has no bfloat16 / float16 CPU implementation: resize in float32.
        low_precision = x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu"
        resized = F.interpolate(
            x.float() if low_precision else x,
            size=(out_h, out_w),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        return resized.to(x.dtype)
    if out_h != out_w:
        raise ValueError("the FIR ('classic') filtered resize supports square outputs only")
    x = upsample2d(x, filter, up=2)
    x = F.interpolate(x, size=(2 * out_h + 2, 2 * out_w + 2), mode="bilinear", align_corners=False)
    return downsample2d(x, filter, down=2, flip_filter=True, padding=-1)


def gaussian_kernel1d(
    sigma: float, truncate: float = 3.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Normalised 1D Gaussian taps exp(-t^2 / (2 sigma^2)), t in [-r, r], r = int(truncate * sigma + 0.5).

    Args:
        sigma: standard deviation in pixels (> 0).
        truncate: kernel radius in standard deviations (scipy's ``truncate``).

    Returns:
        (2 r + 1,) float32 taps summing to 1.
    """
    if sigma <= 0:
        raise ValueError("sigma must be positive")
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (t / sigma) ** 2)
    return (taps / taps.sum()).to(device=device, dtype=torch.float32)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) images with zero padding; shape is kept.

    Used to blur discriminator inputs early in training (EG3D fades a blur
    from sigma 10 to 0). This is a true Gaussian of standard deviation
    ``sigma`` pixels, radius ``int(truncate * sigma + 0.5)``, equal to
    ``scipy.ndimage.gaussian_filter(x, sigma, truncate=truncate, mode='constant')``.
    EG3D's own kernel is ``2^(-(t / sigma)^2)``, a Gaussian of standard
    deviation ``sigma / sqrt(2 ln 2) ~= 0.85 sigma``: pass ``0.85 * sigma`` to
    reproduce it. ``sigma <= 0`` returns ``x`` itself.
    """
    if sigma <= 0:
        return x
    taps = gaussian_kernel1d(sigma, truncate, device=x.device)
    return filter2d(x, taps)
