"""Adaptive discriminator augmentation (StyleGAN2-ADA, Karras et al. 2020) for the tri-plane GANs.

With few training identities the discriminators learn the real frames by
heart: their real logits all turn positive and the generator's gradients stop
carrying information. ADA augments *every* image the discriminator sees, real
and fake, in G's and D's phases and in R1. Each augmentation fires with
probability ``p`` per sample; as long as ``p`` stays below about 0.8 the
augmentations do not leak into the generated images (the generator cannot
lower its loss by producing augmented-looking images, because each operation
is invertible in distribution). ``p`` follows the overfitting heuristic
``r_t = E[sign(D(real))]``: every ``interval`` steps it moves up when r_t is
above the target (0.6) and down otherwise, by ``images / (speed_kimg * 1000)``,
so it could cross [0, 1] in ``speed_kimg`` thousand images.

The operations are the paper's "bgc" pipeline: *blit* (x-flip, 90-degree
rotations, integer translation), *general geometric* (isotropic scale,
arbitrary rotation, anisotropic scale, fractional translation) and *colour*
(brightness, contrast, luma flip, hue rotation, saturation), with the paper's
strengths. Geometric ones are one affine map per sample, resampled bilinearly
with reflection padding (the reference implementation uses a wavelet
upsampling filter instead; bilinear is exact for the blit operations, which
map pixel centres onto pixel centres). All images of one sample share the
sample's transform: the super-resolved image, its raw companion at a lower
resolution (integer translations move by whole pixels of the coarsest
image, so both move alike) and both frames of a video pair.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headforge.training.distributed import is_distributed

__all__ = ["AugmentStrengths", "AdaptiveAugment"]

# The luma axis of RGB (ADA's colour operations rotate and reflect around it).
_LUMA_AXIS = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3.0)


@dataclass(frozen=True)
class AugmentStrengths:
    """Which operations run (a multiplier of ``p``, 0 = never) and how strong they are.

    Defaults are StyleGAN2-ADA's "bgc" pipeline. Translations are fractions of
    the image size, scales are standard deviations of ``log2`` factors,
    ``rotate_max`` and ``hue_max`` fractions of a half turn.
    """

    xflip: float = 1.0
    rotate90: float = 1.0
    xint: float = 1.0
    xint_max: float = 0.125
    scale: float = 1.0
    scale_std: float = 0.2
    rotate: float = 1.0
    rotate_max: float = 1.0
    aniso: float = 1.0
    aniso_std: float = 0.2
    xfrac: float = 1.0
    xfrac_std: float = 0.125
    brightness: float = 1.0
    brightness_std: float = 0.2
    contrast: float = 1.0
    contrast_std: float = 0.5
    lumaflip: float = 1.0
    hue: float = 1.0
    hue_max: float = 1.0
    saturation: float = 1.0
    saturation_std: float = 1.0


def _rotation_2d(angle: Tensor) -> Tensor:
    """(B,) angles -> (B, 3, 3) homogeneous rotations."""
    cos, sin = angle.cos(), angle.sin()
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=-1).view(-1, 3, 3)


def _scale_2d(sx: Tensor, sy: Tensor) -> Tensor:
    """(B,) factors -> (B, 3, 3) homogeneous scalings."""
    zero, one = torch.zeros_like(sx), torch.ones_like(sx)
    return torch.stack([sx, zero, zero, zero, sy, zero, zero, zero, one], dim=-1).view(-1, 3, 3)


def _translate_2d(tx: Tensor, ty: Tensor) -> Tensor:
    """(B,) offsets (normalised coordinates) -> (B, 3, 3) homogeneous translations."""
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack([one, zero, tx, zero, one, ty, zero, zero, one], dim=-1).view(-1, 3, 3)


def _rotation_about_axis(axis: Tensor, angle: Tensor) -> Tensor:
    """Rodrigues: (3,) unit axis, (B,) angles -> (B, 3, 3) rotations of RGB space."""
    x, y, z = axis.tolist()
    cross = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], device=angle.device)
    outer = torch.outer(axis, axis).to(angle.device)
    eye = torch.eye(3, device=angle.device)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    return cos * eye + sin * cross + (1 - cos) * outer


class _Draws:
    """One batch's random draws from ``generator``: uniform, normal, and which samples an operation hits."""

    def __init__(self, batch: int, p: float, generator: torch.Generator | None, device: torch.device) -> None:
        self.batch, self.p, self.generator, self.device = batch, p, generator, device

    def uniform(self, *shape: int) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device)

    def normal(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    def fires(self, strength: float) -> Tensor:
        """(B,) bool: the samples that apply an operation of multiplier ``strength`` (probability p x it)."""
        return self.uniform(self.batch) < self.p * strength


class AdaptiveAugment(nn.Module):
    """The augmentation pipeline and its probability ``p`` (a buffer: saved in checkpoints).

    Args:
        strengths: the operations and their strengths.
        p: initial probability.
        target: the r_t the adjustment steers towards (ADA: 0.6); None keeps
            ``p`` fixed.
        speed_kimg: thousands of images over which ``p`` could go from 0 to 1.
        interval: steps between adjustments.
    """

    def __init__(
        self,
        strengths: AugmentStrengths | None = None,
        p: float = 0.0,
        target: float | None = 0.6,
        speed_kimg: float = 500.0,
        interval: int = 4,
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augmentation probability must be in [0, 1], got {p}")
        if target is not None and not 0.0 < target < 1.0:
            raise ValueError(f"ADA target must be in (0, 1), got {target}")
        if speed_kimg <= 0 or interval < 1:
            raise ValueError(f"ADA speed_kimg must be > 0 and interval >= 1, got {speed_kimg}, {interval}")
        self.strengths = strengths or AugmentStrengths()
        self.target = target
        self.speed_kimg = speed_kimg
        self.interval = interval
        self.register_buffer("p", torch.tensor(float(p)))
        # r_t accumulators since the last adjustment: sum of signs and count (not saved).
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float64), persistent=False)

    # ------------------------------------------------------------------ adaptation
    @torch.no_grad()
    def accumulate(self, real_logits: Tensor) -> None:
        """Add D's logits on (unaugmented-label) real images to the r_t estimate."""
        self.sign_sum += real_logits.detach().sign().sum().double()
        self.sign_count += real_logits.numel()

    @torch.no_grad()
    def adjust(self, images_seen: int) -> float | None:
        """Move ``p`` by ``sign(r_t - target) * images_seen / (speed_kimg * 1000)``; returns r_t.

        ``images_seen`` counts every image shown (all ranks) since the last
        adjustment. Across processes r_t is pooled so every rank keeps the
        same ``p``. Returns None (and leaves ``p``) when nothing was
        accumulated or the pipeline has no target.
        """
        totals = torch.stack([self.sign_sum, self.sign_count])
        if is_distributed():
            torch.distributed.all_reduce(totals)
        self.sign_sum.zero_()
        self.sign_count.zero_()
        if self.target is None or totals[1] == 0:
            return None
        r_t = float(totals[0] / totals[1])
        direction = (r_t > self.target) - (r_t < self.target)  # sign(r_t - target), 0 at the target
        self.p.copy_((self.p + direction * images_seen / (self.speed_kimg * 1000.0)).clamp(0.0, 1.0))
        return r_t

    # ------------------------------------------------------------------ drawing the transforms
    def geometric_transforms(
        self, batch: int, coarsest: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B, 3, 3) maps from output to input coordinates ([-1, 1] image space, as ``affine_grid``).

        Integer translations are multiples of one pixel of the ``coarsest``
        resolution (2 / coarsest in normalised units).
        """
        s, p, device = self.strengths, float(self.p), self.p.device
        draw = _Draws(batch, p, generator, device)
        rand, randn, fires = draw.uniform, draw.normal, draw.fires
        transform = torch.eye(3, device=device).repeat(batch, 1, 1)
        one = torch.ones(batch, device=device)
        if s.xflip > 0:
            flip = torch.where(fires(s.xflip) & (rand(batch) < 0.5), -one, one)
            transform = transform @ _scale_2d(flip, one)
        if s.rotate90 > 0:
            quarter = torch.where(fires(s.rotate90), torch.floor(rand(batch) * 4), 0 * one)
            # Exact quarter turns: round the trigonometry so pixel centres map onto pixel centres.
            transform = transform @ _rotation_2d(quarter * (math.pi / 2)).round()
        if s.xint > 0:
            pixel = 2.0 / coarsest
            shift = (rand(batch, 2) * 2 - 1) * s.xint_max * 2.0  # image size = 2 normalised units
            shift = torch.round(shift / pixel) * pixel
            shift = torch.where(fires(s.xint)[:, None], shift, 0 * shift)
            transform = transform @ _translate_2d(shift[:, 0], shift[:, 1])
        if s.scale > 0:
            factor = torch.exp2(randn(batch) * s.scale_std)
            factor = torch.where(fires(s.scale), factor, one)
            transform = transform @ _scale_2d(factor, factor)
        # Arbitrary rotation before and after the anisotropic scale, each with
        # 1 - sqrt(1 - p): some rotation happens with probability p in total.
        p_rotate = 1.0 - math.sqrt(max(0.0, 1.0 - min(p * s.rotate, 1.0)))
        if s.rotate > 0:
            angle = (rand(batch) * 2 - 1) * math.pi * s.rotate_max
            angle = torch.where(rand(batch) < p_rotate, angle, 0 * one)
            transform = transform @ _rotation_2d(angle)
        if s.aniso > 0:
            factor = torch.exp2(randn(batch) * s.aniso_std)
            factor = torch.where(fires(s.aniso), factor, one)
            transform = transform @ _scale_2d(factor, 1.0 / factor)
        if s.rotate > 0:
            angle = (rand(batch) * 2 - 1) * math.pi * s.rotate_max
            angle = torch.where(rand(batch) < p_rotate, angle, 0 * one)
            transform = transform @ _rotation_2d(angle)
        if s.xfrac > 0:
            shift = randn(batch, 2) * s.xfrac_std * 2.0
            shift = torch.where(fires(s.xfrac)[:, None], shift, 0 * shift)
            transform = transform @ _translate_2d(shift[:, 0], shift[:, 1])
        return transform

    def color_transforms(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """(B, 3, 4) affine maps of RGB in [-1, 1]: ``rgb' = M[:, :3] rgb + M[:, 3]``."""
        s, device = self.strengths, self.p.device
        draw = _Draws(batch, float(self.p), generator, device)
        rand, randn, fires = draw.uniform, draw.normal, draw.fires
        axis = _LUMA_AXIS.to(device)
        luma = torch.outer(axis, axis)
        eye = torch.eye(3, device=device)
        linear = eye.expand(batch, 3, 3).clone()
        offset = torch.zeros(batch, 3, device=device)
        zero = torch.zeros(batch, device=device)
        if s.brightness > 0:
            shift = torch.where(fires(s.brightness), randn(batch) * s.brightness_std, zero)
            offset = offset + shift[:, None]
        if s.contrast > 0:
            factor = torch.exp2(randn(batch) * s.contrast_std)
            factor = torch.where(fires(s.contrast), factor, zero + 1)
            linear, offset = factor[:, None, None] * linear, factor[:, None] * offset
        if s.lumaflip > 0:
            flip = fires(s.lumaflip) & (rand(batch) < 0.5)
            reflection = torch.where(flip[:, None, None], eye - 2 * luma, eye)
            linear, offset = reflection @ linear, (reflection @ offset[..., None])[..., 0]
        if s.hue > 0:
            angle = (rand(batch) * 2 - 1) * math.pi * s.hue_max
            angle = torch.where(fires(s.hue), angle, zero)
            rotation = _rotation_about_axis(axis, angle)
            linear, offset = rotation @ linear, (rotation @ offset[..., None])[..., 0]
        if s.saturation > 0:
            factor = torch.exp2(randn(batch) * s.saturation_std)
            factor = torch.where(fires(s.saturation), factor, zero + 1)
            saturate = luma + (eye - luma) * factor[:, None, None]
            linear, offset = saturate @ linear, (saturate @ offset[..., None])[..., 0]
        return torch.cat([linear, offset[..., None]], dim=-1)

    # ------------------------------------------------------------------ applying them
    def forward(
        self, images: Mapping[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Augment a sample's images alike.

        Args:
            images: tensors of shape (B, ..., 3, H, W) in [-1, 1] (for example
                ``image`` (B, 2, 3, 64, 64) and ``image_raw`` (B, 2, 3, 32, 32));
                dims between B and the channels share the sample's transform.
            generator: random source (the phase's, for reproducible runs).

        Returns:
            The same keys, augmented; the inputs themselves when ``p`` is 0.
            Differentiable with respect to the images (R1 needs it).
        """
        if float(self.p) <= 0.0:
            return dict(images)
        batch = next(iter(images.values())).shape[0]
        coarsest = min(value.shape[-1] for value in images.values())
        geometric = self.geometric_transforms(batch, coarsest, generator)
        color = self.color_transforms(batch, generator)
        eye = torch.eye(3, device=geometric.device)
        moved = (geometric != eye).flatten(1).any(dim=1)
        colored = (color != torch.eye(3, 4, device=color.device)).flatten(1).any(dim=1)
        return {
            key: self._transform(value, geometric, moved, color, colored) for key, value in images.items()
        }

    @staticmethod
    def _transform(
        images: Tensor, geometric: Tensor, moved: Tensor, color: Tensor, colored: Tensor
    ) -> Tensor:
        """Colour then resample the samples whose transforms are not the identity."""
        batch, channels, height, width = images.shape[0], *images.shape[-3:]
        if channels != 3:
            raise ValueError(f"augmentation expects RGB images (B, ..., 3, H, W), got {tuple(images.shape)}")
        per_sample = images[0].numel() // (channels * height * width)
        flat = images.reshape(batch, per_sample, channels, height, width)
        color, geometric = color.to(images.dtype), geometric.to(images.dtype)
        if colored.any():
            linear, offset = color[:, None, :, :3], color[:, None, :, 3]
            recolored = torch.einsum("bfij,bfjhw->bfihw", linear, flat) + offset[..., None, None]
            flat = torch.where(colored[:, None, None, None, None], recolored, flat)
        if moved.any():
            index = moved.nonzero()[:, 0]
            chosen = flat[index].flatten(0, 1)
            theta = geometric[index, :2].repeat_interleave(per_sample, dim=0)
            grid = F.affine_grid(theta, list(chosen.shape), align_corners=False)
            warped = F.grid_sample(
                chosen, grid, mode="bilinear", padding_mode="reflection", align_corners=False
            )
            flat = flat.index_copy(0, index, warped.unflatten(0, (len(index), per_sample)))
        return flat.reshape(images.shape)
