"""Backgrounds behind the head: solid, gradient, noise and textured (stripes, checks, bokeh, tiles).

Every background is an image in *linear* radiance (H, W, 3), drawn from a
``torch.Generator`` only, so it is a pure function of the item's seed. Colours
are picked in display space (muted hues, as photo backdrops tend to be) and
converted to linear with gamma 2.2. Patterns are softened (out of focus), as
they would be behind a portrait.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.data.studio.noise import LatticeNoise

__all__ = [
    "BACKGROUND_KINDS",
    "blur_background",
    "random_display_color",
    "render_background",
    "sample_background_kind",
]

BACKGROUND_KINDS = ("solid", "gradient", "noise", "stripes", "checks", "bokeh", "tiles")
_KIND_WEIGHTS = torch.tensor([0.16, 0.22, 0.2, 0.1, 0.08, 0.14, 0.1])
DISPLAY_GAMMA = 2.2


def random_display_color(
    generator: torch.Generator, saturation: float = 0.35, value: tuple[float, float] = (0.15, 0.9)
) -> Tensor:
    """A random colour (3,) in display space [0, 1]: uniform hue, saturation up to ``saturation``."""
    u = torch.rand(3, generator=generator)
    hue = u[0] * 2.0 * math.pi
    phases = torch.tensor([0.0, 2.0 * math.pi / 3.0, 4.0 * math.pi / 3.0])
    chroma = 0.5 + 0.5 * torch.cos(hue - phases)  # a hue wheel, components in [0, 1]
    level = value[0] + (value[1] - value[0]) * u[2]
    return level * ((1.0 - saturation * u[1]) + saturation * u[1] * chroma)


def _linear(color: Tensor) -> Tensor:
    return color.clamp(0.0, 1.0) ** DISPLAY_GAMMA


def _grid(height: int, width: int, device) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in [-1, 1]: x right, y down, both (H, W)."""
    y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2.0 - 1.0
    x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2.0 - 1.0
    return torch.meshgrid(y, x, indexing="ij")[::-1]


def _soft_step(x: Tensor, softness: float) -> Tensor:
    return torch.sigmoid(x / max(softness, 1e-4))


def sample_background_kind(generator: torch.Generator) -> str:
    """One of :data:`BACKGROUND_KINDS`, with weights favouring plain and gradient backdrops."""
    return BACKGROUND_KINDS[int(torch.multinomial(_KIND_WEIGHTS, 1, generator=generator))]


def render_background(
    kind: str, generator: torch.Generator, height: int, width: int, device: torch.device | str | None = None
) -> Tensor:
    """A background of ``kind`` as linear radiance (H, W, 3).

    All randomness comes from ``generator``; the result is independent of the
    resolution's aspect (patterns are defined in [-1, 1] image coordinates).
    """
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown background kind {kind!r}; choose from {BACKGROUND_KINDS}")
    first = random_display_color(generator)
    second = random_display_color(generator)
    x, y = _grid(height, width, device)
    if kind == "solid":
        return _linear(first).to(device).expand(height, width, 3).clone()
    if kind == "gradient":
        angle = torch.rand((), generator=generator).item() * 2.0 * math.pi
        radial = torch.rand((), generator=generator).item() < 0.35
        t = (
            (x * x + y * y).sqrt() / math.sqrt(2.0)
            if radial
            else 0.5 + 0.5 * (x * math.cos(angle) + y * math.sin(angle)) / math.sqrt(2.0)
        )
        t = t.clamp(0.0, 1.0)[..., None]
        return _linear(first.to(device) * (1.0 - t) + second.to(device) * t)
    if kind == "noise":
        noise = LatticeNoise(generator)
        third = random_display_color(generator)
        frequency = 1.5 + 3.0 * torch.rand((), generator=generator).item()
        a = noise.fbm_image(height, width, frequency, octaves=4, device=device)[..., None]
        b = noise.fbm_image(height, width, frequency * 0.7, octaves=3, device=device, depth=7.3)[..., None]
        a = ((a - 0.5) * 3.0 + 0.5).clamp(0.0, 1.0)
        b = ((b - 0.5) * 3.0 + 0.5).clamp(0.0, 1.0)
        color = first.to(device) * (1.0 - a) + second.to(device) * a
        return _linear(color * (1.0 - 0.5 * b) + third.to(device) * 0.5 * b)
    if kind == "stripes":
        angle = torch.rand((), generator=generator).item() * math.pi
        count = 3.0 + 9.0 * torch.rand((), generator=generator).item()
        phase = (x * math.cos(angle) + y * math.sin(angle)) * count * math.pi
        t = _soft_step(torch.sin(phase), 0.15)[..., None]
        return _linear(first.to(device) * (1.0 - t) + second.to(device) * t)
    if kind == "checks":
        count = 2.0 + 6.0 * torch.rand((), generator=generator).item()
        t = _soft_step(torch.sin(x * count * math.pi) * torch.sin(y * count * math.pi), 0.1)[..., None]
        return _linear(first.to(device) * (1.0 - t) + second.to(device) * t)
    if kind == "bokeh":
        image = _linear(first * 0.6).to(device).expand(height, width, 3).clone()
        count = int(torch.randint(6, 24, (), generator=generator))
        for _ in range(count):
            centre = torch.rand(2, generator=generator) * 2.4 - 1.2
            radius = 0.04 + 0.18 * torch.rand((), generator=generator).item()
            light = _linear(random_display_color(generator, saturation=0.6, value=(0.5, 1.0))).to(device)
            distance = ((x - centre[0].item()) ** 2 + (y - centre[1].item()) ** 2).sqrt()
            disc = _soft_step(radius - distance, 0.01 + 0.1 * radius)[..., None]
            image = image + 0.45 * disc * light
        return image.clamp(0.0, 1.0)
    # tiles: a soft brick / panel wall with mortar lines and per-tile shade variation.
    rows = 2.0 + 8.0 * torch.rand((), generator=generator).item()
    aspect = 1.0 + 2.0 * torch.rand((), generator=generator).item()
    v = (y + 1.0) * 0.5 * rows
    row_index = torch.floor(v)
    u = (x + 1.0) * 0.5 * rows / aspect + 0.5 * (row_index % 2)
    col_index = torch.floor(u)
    jitter = LatticeNoise(generator)(torch.stack([col_index * 7.1, row_index * 3.3, torch.zeros_like(u)], -1))
    fu, fv = u - col_index, v - row_index
    mortar = _soft_step(
        torch.minimum(torch.minimum(fu, 1.0 - fu) * aspect, torch.minimum(fv, 1.0 - fv)) - 0.05, 0.02
    )
    color = first.to(device) * (0.75 + 0.5 * jitter)[..., None]
    t = mortar[..., None]
    return _linear(color * t + second.to(device) * (1.0 - t))


def blur_background(image: Tensor, sigma_pixels: float) -> Tensor:
    """Gaussian blur (depth of field) of an (H, W, 3) image; ``sigma_pixels`` < 0.3 returns it unchanged."""
    if sigma_pixels < 0.3:
        return image
    radius = int(math.ceil(3.0 * sigma_pixels))
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (taps / sigma_pixels) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.permute(2, 0, 1)[:, None]  # (3, 1, H, W)
    padded = F.pad(channels, (radius, radius, 0, 0), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    padded = F.pad(blurred, (0, 0, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, -1, 1))
    return blurred[:, 0].permute(1, 2, 0)
