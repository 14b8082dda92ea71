"""Rolled-out tri-plane synthesis: StyleGAN2 blocks whose feature maps are the three planes.

EG3D paints its tri-planes as the 96 channels of one 2D image, so a pixel of
its convolutional features mixes the three planes and has no 3D meaning.
RODIN (Wang et al., CVPR 2023) and NeRFFaceShop's released code *roll out*
the features instead: every block works on three pixel-aligned feature maps,
one per plane, laid side by side, so a 2D warp of the features is a warp of
the planes (NeRFFaceShop §III-B). Plain per-plane convolutions would treat the
planes as three unrelated images; a *3D-aware* convolution also sees, for
every pixel, the other two planes' features along the world axis it shares
with them, averaged over their other axis (RODIN's axis pooling):

* plane XY at pixel (x, y) additionally sees mean_z XZ(x, z) and mean_z YZ(y, z);
* plane XZ at (x, z) sees mean_y XY(x, y) and mean_y YZ(y, z);
* plane YZ at (y, z) sees mean_x XY(x, y) and mean_x XZ(x, z).

Storage: features are kept as (B, 3, C, H, W), plane-major, which is the
rolled-out strip (B, C, H, 3 W) with the planes split off (``roll_out`` /
``roll_in`` convert; no copy of meaning, only of layout). Plane ``p`` uses the
tri-plane layout of :mod:`headforge.nn.triplane`: its ``(u, v)`` world axes
index width and height, so the planes these blocks paint can be sampled by
``sample_triplanes`` directly.

The convolutions themselves are the StyleGAN2 layers of
:mod:`headforge.nn.stylegan2` (weights shared by the three planes, one style
per sample), run on the planes stacked along the batch axis. They never build
the 3x wider [plane, context] input: each context channel is constant across
one axis, so its share of the convolution is computed on a strip a few lines
long and stitched (:func:`axis_aware_convolution`, exact; 1.15-1.7x faster
per layer on the ``small`` NeRFFaceShop preset, whose CPU training went from
4.6 to 4.0 s per step: ``benchmarks/rollout_speed.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from headforge.nn.filters import filter_size, setup_filter, upsample2d
from headforge.nn.layers import conv2d_resample
from headforge.nn.stylegan2 import SynthesisLayer, ToRGBLayer
from headforge.nn.triplane import PLANE_LAYOUTS

__all__ = [
    "RolloutSynthesisBlock",
    "RolloutSynthesisLayer",
    "RolloutSynthesisNetwork",
    "RolloutToPlanes",
    "axis_aware_convolution",
    "axis_pooled_context",
    "roll_in",
    "roll_out",
    "split_block_ws",
    "upsample_planes",
]

NUM_PLANES = 3


def roll_out(planes: Tensor) -> Tensor:
    """(B, 3, C, H, W) plane-major features -> the rolled-out strip (B, C, H, 3 W), planes side by side."""
    return torch.cat(planes.unbind(dim=1), dim=-1)


def roll_in(features: Tensor) -> Tensor:
    """The rolled-out strip (B, C, H, 3 W) -> (B, 3, C, H, W); inverse of :func:`roll_out`."""
    if features.ndim != 4 or features.shape[-1] % NUM_PLANES:
        raise ValueError(f"expected a rolled-out strip (B, C, H, 3W), got {tuple(features.shape)}")
    return torch.stack(features.chunk(NUM_PLANES, dim=-1), dim=1)


def _context_plan(layout: str) -> list[list[tuple[int, bool, bool]]]:
    """Per target plane, per other plane: (source plane, shared axis runs along the source's width,
    shared axis runs along the target's width).

    Raises ``ValueError`` for layouts where two planes do not share exactly one
    axis (EG3D's own layout has two planes over x and z; axis pooling is
    undefined there).
    """
    if layout not in PLANE_LAYOUTS:
        raise ValueError(f"unknown plane layout {layout!r}; expected one of {sorted(PLANE_LAYOUTS)}")
    axes = PLANE_LAYOUTS[layout]
    plan = []
    for target, target_axes in enumerate(axes):
        sources = []
        for source, source_axes in enumerate(axes):
            if source == target:
                continue
            shared = set(target_axes) & set(source_axes)
            if len(shared) != 1:
                raise ValueError(
                    f"layout {layout!r}: planes {target} and {source} must share exactly one axis"
                )
            (axis,) = shared
            sources.append((source, source_axes[0] == axis, target_axes[0] == axis))
        plan.append(sources)
    return plan


def _pooled_profiles(planes: Tensor, layout: str) -> list[list[tuple[Tensor, bool]]]:
    """RODIN's axis pooling before the broadcast: per target plane, per other plane (increasing order),
    the other plane's mean over its unshared axis, a profile (B, C, R) along the shared axis, and
    whether that axis runs along the target's width (else its height)."""
    return [
        [
            (planes[:, source].mean(dim=-2 if source_along_width else -1), target_along_width)
            for source, source_along_width, target_along_width in sources
        ]
        for sources in _context_plan(layout)
    ]


def _check_square_planes(planes: Tensor) -> None:
    if planes.ndim != 5 or planes.shape[1] != NUM_PLANES or planes.shape[-1] != planes.shape[-2]:
        raise ValueError(f"expected square planes (B, 3, C, R, R), got {tuple(planes.shape)}")


def axis_pooled_context(planes: Tensor, layout: str = "xy_xz_yz") -> Tensor:
    """RODIN's axis pooling: what each plane sees of the other two.

    For target plane ``p`` and another plane ``q`` sharing world axis ``s``,
    ``q`` is averaged over its other axis, giving a profile along ``s``, which
    is broadcast over ``p`` along ``s``'s direction in ``p``. Exact (a mean and
    a broadcast), so a plane that varies only along ``s`` passes unchanged.

    Args:
        planes: (B, 3, C, R, R) square plane-major features.
        layout: a key of ``PLANE_LAYOUTS`` whose planes pairwise share one axis.

    Returns:
        (B, 3, 2 C, R, R): for each plane, the contexts from the other two
        planes in increasing plane order.
    """
    _check_square_planes(planes)
    contexts = []
    for target, pieces in enumerate(_pooled_profiles(planes, layout)):
        plane = planes[:, target]
        contexts.append(
            torch.cat(
                [
                    (profile.unsqueeze(-2) if along_width else profile.unsqueeze(-1)).expand_as(plane)
                    for profile, along_width in pieces
                ],
                dim=1,
            )
        )
    return torch.stack(contexts, dim=1)


def _border_lines(kernel: int, padding: int, filter_taps: int, up: int) -> int:
    """Output lines at each end of an axis that differ from the repeating middle, for an input constant
    along the axis and a layer's ``conv2d_resample`` (rounded up to a multiple of ``up``).

    ``conv2d_resample`` with ``up`` puts input line ``i`` at line ``up i`` of a
    zero-stuffed signal, FIR-filters it with ``fir_pad = (taps + up - 1) // 2``
    lines of padding before, then correlates with the ``kernel`` over
    ``padding`` lines. Output line ``r`` reads stuffed lines ``r - padding -
    fir_pad`` to ``r + (kernel - 1 - padding) + (taps - 1 - fir_pad)``; it sees
    the image's end only if that range reaches a line where an input line
    would be: ``-up`` before the start, ``up R`` after the end. (Without
    upsampling: ``padding`` lines before, ``kernel - 1 - padding`` after.)
    """
    fir_pad, fir_after = (
        ((filter_taps + up - 1) // 2, filter_taps - 1 - (filter_taps + up - 1) // 2) if up > 1 else (0, 0)
    )
    before = max(0, padding + fir_pad - up + 1)
    after = kernel - 1 - padding + fir_after
    return -(-max(before, after) // up) * up


def _broadcast_convolution(
    profile: Tensor,
    weight: Tensor,
    convolve: Callable[[Tensor, Tensor], Tensor],
    along_width: bool,
    border: int,
    up: int,
) -> Tensor:
    """``convolve`` of ``profile`` broadcast across one axis, computed on a short strip.

    The image is ``profile`` repeated across the height (``along_width``) or
    the width. ``convolve`` is linear and shift-equivariant (a shift by one
    input line shifts its output by ``up``) with zero padding, so along the
    constant axis its output repeats with period ``up`` except for ``border``
    lines at each end (:func:`_border_lines`). A strip ``2 border / up + 1``
    lines long shows the first and last ``border`` lines and one period of the
    repeating middle; the full output is stitched from it, exactly.

    Shapes: profile (B, C, R), weight (O, C, k, k) -> (B, O, up R, up R).
    """
    size = profile.shape[-1]
    lines = min(size, 2 * border // up + 1)
    strip = (
        profile.unsqueeze(-2).expand(-1, -1, lines, -1)
        if along_width
        else profile.unsqueeze(-1).expand(-1, -1, -1, lines)
    )
    out = convolve(strip, weight)
    if lines == size:  # the strip is the whole image
        return out
    full, stitched = up * size, up * lines
    index = (
        list(range(border))
        + [border + (line - border) % up for line in range(border, full - border)]
        + list(range(stitched - border, stitched))
    )
    return out.index_select(-2 if along_width else -1, torch.tensor(index, device=out.device))


def axis_aware_convolution(
    planes: Tensor,
    styles: Tensor,
    weight: Tensor,
    convolve: Callable[[Tensor, Tensor], Tensor],
    border: int,
    up: int = 1,
    layout: str = "xy_xz_yz",
) -> Tensor:
    """``convolve`` of the style-scaled ``[plane, axis_pooled_context(planes)]`` with ``weight``.

    Equal to ``convolve(cat([planes, context], 2).flatten(0, 1) * styles, weight)``
    but without building the 3x wider input: the convolution is linear, and
    each context channel is constant across one axis, so its share comes from
    a short strip (:func:`_broadcast_convolution`). The full-size convolution
    runs over C input channels instead of 3 C.

    Args:
        planes: (B, 3, C, R, R) plane-major features.
        styles: (3 B, 3 C) input scales of each (sample, plane) row, in the order of
            ``planes.flatten(0, 1)``.
        weight: (O, 3 C, k, k).
        convolve: ``convolve(x, weight)``, the layer's linear, shift-equivariant,
            zero-padded convolution (with ``up``-fold upsampling).
        border: output lines at each end that see the padding (:func:`_border_lines`).
        up: the convolution's upsampling factor.
        layout: a key of ``PLANE_LAYOUTS`` whose planes pairwise share one axis.

    Returns:
        (3 B, O, up R, up R).
    """
    _check_square_planes(planes)
    batch, _, channels, _, _ = planes.shape
    if weight.shape[1] != NUM_PLANES * channels:
        raise ValueError(
            f"axis_aware_convolution needs weights over {NUM_PLANES * channels} input channels "
            f"(each plane and its two contexts), got weight {tuple(weight.shape)}"
        )
    scales = styles.reshape(batch, NUM_PLANES, NUM_PLANES, channels)  # [sample, target, own|ctx1|ctx2, C]
    own = (planes * scales[:, :, 0, :, None, None]).flatten(0, 1)
    if own.device.type == "cpu":
        own = own.contiguous(memory_format=torch.channels_last)  # oneDNN's fast path
    out = convolve(own, weight[:, :channels])
    contexts = []
    for target, pieces in enumerate(_pooled_profiles(planes, layout)):
        context = None
        for slot, (profile, along_width) in enumerate(pieces, start=1):
            part = _broadcast_convolution(
                profile * scales[:, target, slot, :, None],
                weight[:, slot * channels : (slot + 1) * channels],
                convolve,
                along_width,
                border,
                up,
            )
            context = part if context is None else context + part
        contexts.append(context)
    return out + torch.stack(contexts, dim=1).flatten(0, 1)


def upsample_planes(planes: Tensor, resample_filter: Tensor, up: int = 2) -> Tensor:
    """FIR-upsample every plane: (B, 3, C, R, R) -> (B, 3, C, up R, up R) (StyleGAN2's skip path)."""
    batch, num_planes, channels, height, width = planes.shape
    flat = upsample2d(planes.reshape(batch, num_planes * channels, height, width), resample_filter, up=up)
    return flat.reshape(batch, num_planes, channels, height * up, width * up)


def _per_plane_styles(w: Tensor) -> Tensor:
    """(B, w_dim) -> (B * 3, w_dim), aligned with (B, 3, ...) reshaped to (B * 3, ...)."""
    return w.repeat_interleave(NUM_PLANES, dim=0)


class RolloutSynthesisLayer(nn.Module):
    """A 3D-aware StyleGAN2 layer: per plane, [plane, axis-pooled context] -> modulated conv.

    Wraps :class:`~headforge.nn.stylegan2.SynthesisLayer` with ``3 * in_channels``
    inputs; the three planes share its weights and the sample's style.
    Shapes: x (B, 3, in_channels, R / up, R / up), w (B, w_dim) -> (B, 3, out_channels, R, R).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        layout: str = "xy_xz_yz",
        **layer_kwargs,
    ) -> None:
        super().__init__()
        _context_plan(layout)  # validate early
        self.layout = layout
        self.layer = SynthesisLayer(
            NUM_PLANES * in_channels, out_channels, w_dim, resolution, up=up, **layer_kwargs
        )
        self.border = _border_lines(
            self.layer.weight.shape[-1], self.layer.padding, max(filter_size(self.layer.resample_filter)), up
        )

    def forward(
        self, x: Tensor, w: Tensor, noise_mode: str = "random", fused_modconv: bool = True, gain: float = 1.0
    ) -> Tensor:
        """``fused_modconv`` is accepted for the blocks' sake and ignored: the factored convolution
        (:func:`axis_aware_convolution`) always shares one weight across the batch."""
        batch, num_planes, channels, height, width = x.shape
        layer = self.layer

        def convolve(images: Tensor, weight: Tensor) -> Tensor:  # the layer's own (up-sampling) convolution
            return conv2d_resample(
                images,
                weight,
                f=layer.resample_filter,
                up=layer.up,
                padding=layer.padding,
                flip_weight=layer.flip_weight,
            )

        y = layer(
            x.reshape(batch * num_planes, channels, height, width),  # gives the batch size, dtype and noise
            _per_plane_styles(w),
            noise_mode=noise_mode,
            gain=gain,
            linear=lambda styles, weight: axis_aware_convolution(
                x, styles, weight, convolve, self.border, layer.up, self.layout
            ),
        )
        return y.reshape(batch, num_planes, *y.shape[1:])


class RolloutToPlanes(nn.Module):
    """Per-plane modulated 1x1 convolution to ``out_channels`` (StyleGAN2's ToRGB on each plane).

    Shapes: x (B, 3, in_channels, R, R), w (B, w_dim) -> (B, 3, out_channels, R, R).
    ``init_scale`` multiplies the initial weights (e.g. 1e-4 so that a
    deformation head starts near the identity map, as NeRFFaceShop's code does).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.layer = ToRGBLayer(in_channels, out_channels, w_dim)
        if init_scale != 1.0:
            with torch.no_grad():
                self.layer.weight.mul_(init_scale)

    def forward(self, x: Tensor, w: Tensor, fused_modconv: bool = True) -> Tensor:
        batch, num_planes = x.shape[:2]
        y = self.layer(x.reshape(batch * num_planes, *x.shape[2:]), _per_plane_styles(w), fused_modconv)
        return y.reshape(batch, num_planes, *y.shape[1:]).contiguous()


class RolloutSynthesisBlock(nn.Module):
    """One rolled-out synthesis block: [const or (up)conv0] -> conv1 -> per-plane ToRGB (skip).

    As StyleGAN2's 'skip' block on three pixel-aligned planes: ``in_channels = 0``
    makes the constant-input block (a learned (3, C, R, R) tensor); ``up = 1``
    keeps the resolution (NeRFFaceShop's shading blocks). The running tri-planes
    ``img`` are FIR-upsampled and the block's ToRGB output added to them.

    Shapes: x (B, 3, in_channels, R / up, R / up) or None, img (B, 3,
    plane_channels, R / up, R / up) or None, ws (B, num_conv + 1, w_dim) ->
    x (B, 3, out_channels, R, R), img (B, 3, plane_channels, R, R).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        plane_channels: int,
        up: int = 2,
        layout: str = "xy_xz_yz",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        torgb_init_scale: float = 1.0,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.plane_channels = plane_channels
        self.up = up
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        layer_kwargs = dict(layout=layout, resample_filter=resample_filter, **layer_kwargs)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(NUM_PLANES, out_channels, resolution, resolution))
        else:
            self.conv0 = RolloutSynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=up, **layer_kwargs
            )
        self.conv1 = RolloutSynthesisLayer(out_channels, out_channels, w_dim, resolution, **layer_kwargs)
        self.torgb = RolloutToPlanes(out_channels, plane_channels, w_dim, init_scale=torgb_init_scale)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        noise_mode: str = "random",
        fused_modconv: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run the block; ``fused_modconv=None`` fuses at batch 1 or without autograd (as StyleGAN2)."""
        if ws.shape[1:] != (self.num_conv + self.num_torgb, self.w_dim):
            raise ValueError(f"ws must be (B, {self.num_conv + 1}, {self.w_dim}), got {tuple(ws.shape)}")
        if fused_modconv is None:
            fused_modconv = ws.shape[0] == 1 or not torch.is_grad_enabled()
        kwargs = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1, -1)
        else:
            x = self.conv0(x, next(w_iter), **kwargs)
        x = self.conv1(x, next(w_iter), **kwargs)
        if img is not None and self.up > 1:
            img = upsample_planes(img, self.resample_filter, self.up)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
        return x, y if img is None else img + y


def split_block_ws(ws: Tensor, blocks: Sequence[nn.Module]) -> list[Tensor]:
    """StyleGAN2's w bookkeeping: per-block views (B, num_conv_i + num_torgb_i, w_dim) of ws.

    A block's ToRGB shares its w with the next block's first convolution, so
    ``num_ws = sum(num_conv) + num_torgb(last)``.
    """
    expected = sum(block.num_conv for block in blocks) + blocks[-1].num_torgb
    if ws.ndim != 3 or ws.shape[1] != expected:
        raise ValueError(f"ws must be (B, {expected}, w_dim), got {tuple(ws.shape)}")
    views, start = [], 0
    for block in blocks:
        views.append(ws.narrow(1, start, block.num_conv + block.num_torgb))
        start += block.num_conv
    return views


class RolloutSynthesisNetwork(nn.Module):
    """A rolled-out StyleGAN2 synthesis network: ws -> tri-planes (B, 3, plane_channels, R, R).

    Blocks at 4, 8, ..., ``resolution`` with ``min(channel_base // res,
    channel_max)`` channels per plane. Callers that need the stages (e.g.
    NeRFFaceShop, which warps the features at 32x32) run ``blocks`` themselves
    with :func:`split_block_ws`; ``forward`` runs them all.
    """

    def __init__(
        self,
        w_dim: int,
        resolution: int,
        plane_channels: int,
        channel_base: int = 16384,
        channel_max: int = 256,
        layout: str = "xy_xz_yz",
        torgb_init_scale: float = 1.0,
        **block_kwargs,
    ) -> None:
        super().__init__()
        log2 = int(math.log2(resolution))
        if resolution < 4 or 2**log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        self.w_dim = w_dim
        self.resolution = resolution
        self.plane_channels = plane_channels
        self.channel_base, self.channel_max = channel_base, channel_max
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        self.blocks = nn.ModuleList(
            RolloutSynthesisBlock(
                self.channels_at(res // 2) if res > 4 else 0,
                self.channels_at(res),
                w_dim,
                res,
                plane_channels,
                layout=layout,
                torgb_init_scale=torgb_init_scale,
                **block_kwargs,
            )
            for res in self.block_resolutions
        )
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def channels_at(self, res: int) -> int:
        """Feature channels per plane of the block at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)

    def split_ws(self, ws: Tensor) -> list[Tensor]:
        """Per-block views of ws (B, num_ws, w_dim); see :func:`split_block_ws`."""
        return split_block_ws(ws, self.blocks)

    def forward(self, ws: Tensor, noise_mode: str = "random") -> Tensor:
        """Tri-planes (B, 3, plane_channels, R, R) from ws (B, num_ws, w_dim)."""
        x = img = None
        for block, block_ws in zip(self.blocks, self.split_ws(ws)):
            x, img = block(x, img, block_ws, noise_mode=noise_mode)
        return img
