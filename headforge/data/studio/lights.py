"""The lighting rig: distant lights + a sky/ground ambient, and the SH label it produces.

A rig is a few directional lights (row 0 is the *key* light, the only one
that casts shadows unless ``shadowed`` says otherwise) plus an ambient part
whose radiance varies smoothly from the ground colour (below) to the sky
colour (above). Everything is expressed in second-order SH exactly as
:mod:`headforge.lighting` defines it, so the dataset's ``sh`` label is the
light that shades the image: the unshadowed diffuse shading of every pixel is
``irradiance(n, rig.sh()) / pi`` (``headforge.data.studio.shading`` removes
shadowed lights and adds specular highlights on top; docs/studio.md).

Directions point from the head towards the light, in world space (+y up,
the head faces +z). Colours are linear radiance scales as in
:func:`headforge.lighting.directional_light_sh`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.lighting import SH_CONSTANTS, directional_light_sh, irradiance

__all__ = [
    "LightRig",
    "ambient_sh",
    "fibonacci_sphere",
    "sample_light_rig",
    "lightstage_rig",
    "light_color",
]


def fibonacci_sphere(count: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(count, 3) nearly uniform unit directions (golden-angle spiral, from +y down to -y)."""
    index = torch.arange(count, dtype=torch.float64) + 0.5
    y = 1.0 - 2.0 * index / count
    radius = torch.sqrt((1.0 - y * y).clamp(min=0.0))
    azimuth = index * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([radius * torch.sin(azimuth), y, radius * torch.cos(azimuth)], dim=-1).to(dtype)


# Normals at which a rig's brightest irradiance is measured for exposure normalisation.
_EXPOSURE_NORMALS = fibonacci_sphere(1024)


def ambient_sh(sky: Tensor, ground: Tensor) -> Tensor:
    """SH (9, 3) of the radiance ``(sky + ground) / 2 + (sky - ground) / 2 * w_y``.

    That radiance equals ``sky`` straight up, ``ground`` straight down and varies
    linearly in the height of the direction in between (a soft skylight with a
    ground bounce). sky, ground: (3,) linear radiance.
    """
    sh = torch.zeros(9, 3, dtype=sky.dtype, device=sky.device)
    sh[0] = 0.5 * (sky + ground) * math.sqrt(4.0 * math.pi)  # constant c has L00 = c sqrt(4 pi)
    sh[1] = 0.5 * (sky - ground) / SH_CONSTANTS[1]  # w_y = Y1-1(w) / c1
    return sh


@dataclass
class LightRig:
    """Distant lights plus ambient.

    Attributes:
        directions: (L, 3) unit directions towards the lights; row 0 is the key light.
        colors: (L, 3) linear colour of each light (``directional_light_sh``'s ``color``).
        ambient: (9, 3) SH of the ambient radiance.
        shadowed: (L,) bool, lights whose contribution is blocked where the shadow test fails.
        specular: scale of the lights' specular highlights (1 = physically matched to the colour).
    """

    directions: Tensor
    colors: Tensor
    ambient: Tensor
    shadowed: Tensor
    specular: float = 1.0

    def light_sh(self, index: int) -> Tensor:
        """(9, 3) SH of light ``index`` alone."""
        return directional_light_sh(self.directions[index], self.colors[index])

    def sh(self) -> Tensor:
        """(9, 3) SH of the whole rig: the dataset's ``sh`` label."""
        total = self.ambient.clone()
        for index in range(self.directions.shape[0]):
            total = total + self.light_sh(index)
        return total

    def scaled(self, factor: float) -> LightRig:
        """The same rig with every light and the ambient multiplied by ``factor``."""
        return replace(self, colors=self.colors * factor, ambient=self.ambient * factor)

    def normalized(self, exposure: float) -> LightRig:
        """Scale the rig so that the brightest diffuse shading ``max_n E(n) / pi`` equals ``exposure``.

        With exposure <= 1 every shading value fits [0, 1] (8-bit maps never clip).
        """
        peak = (irradiance(_EXPOSURE_NORMALS.to(self.ambient), self.sh()) / math.pi).max().item()
        return self.scaled(exposure / max(peak, 1e-6))


def light_color(generator: torch.Generator, tint_probability: float = 0.1) -> Tensor:
    """A random light colour (3,), max component 1: warm to cool white, sometimes a coloured gel."""
    warm = torch.tensor([1.0, 0.82, 0.64])
    cool = torch.tensor([0.80, 0.90, 1.0])
    t = torch.rand((), generator=generator)
    color = warm * (1.0 - t) + cool * t
    if torch.rand((), generator=generator) < tint_probability:
        # A coloured gel with a hue from blue through magenta and red to orange (green looks ill on skin).
        hue = -2.4 + 3.3 * torch.rand((), generator=generator)  # blue (-2.09) .. red (0) .. orange
        gel = 0.7 + 0.3 * torch.cos(hue - torch.tensor([0.0, 2.0944, 4.1888]))
        color = color * gel
    return color / color.max()


def _direction(azimuth: Tensor, elevation: Tensor) -> Tensor:
    """Unit vector: azimuth from +z towards +x, elevation towards +y (radians)."""
    return torch.stack(
        [
            torch.cos(elevation) * torch.sin(azimuth),
            torch.sin(elevation),
            torch.cos(elevation) * torch.cos(azimuth),
        ]
    )


def sample_light_rig(generator: torch.Generator, with_fill_probability: float = 0.6) -> LightRig:
    """A random portrait rig: key + optional fill + sky/ground ambient, exposure-normalised.

    Key: azimuth uniform in [-110, 110] deg around the face direction, elevation
    in [-15, 65] deg, intensity such that the key-to-ambient ratio spans hard
    sunlight to overcast. Fill: roughly opposite the key, 10-45 % of it, no shadow.
    """
    u = torch.rand(8, generator=generator)
    key_dir = _direction(
        (u[0] * 2.0 - 1.0) * math.radians(110.0), math.radians(-15.0) + u[1] * math.radians(80.0)
    )
    key_color = light_color(generator) * (1.0 + 3.0 * u[2])
    directions, colors = [key_dir], [key_color]
    if u[3] < with_fill_probability:
        fill_azimuth = torch.atan2(-key_dir[0], key_dir[2]) + (u[4] - 0.5) * math.radians(60.0)
        fill_dir = _direction(fill_azimuth, (u[5] - 0.3) * math.radians(50.0))
        directions.append(fill_dir)
        colors.append(light_color(generator) * key_color.max() * (0.1 + 0.35 * u[6]))
    sky = light_color(generator, tint_probability=0.0) * (0.15 + 0.45 * torch.rand((), generator=generator))
    ground = sky * torch.tensor([0.55, 0.5, 0.45]) * (0.4 + 0.6 * torch.rand((), generator=generator))
    rig = LightRig(
        directions=F.normalize(torch.stack(directions), dim=-1),
        colors=torch.stack(colors),
        ambient=ambient_sh(sky, ground),
        shadowed=torch.tensor([True] + [False] * (len(directions) - 1)),
        specular=float(0.6 + 0.8 * u[7]),
    )
    exposure = 0.88 + 0.12 * torch.rand((), generator=generator).item()
    return rig.normalized(exposure)


def lightstage_rig(direction: Tensor, ambient: float = 0.04, exposure: float = 0.95) -> LightRig:
    """One white directional light (one light-stage LED group) plus a faint uniform ambient.

    direction: (3,) towards the light. The ambient keeps unlit sides from being
    pure black, as the stray light in a real light stage does.
    """
    white = torch.ones(3)
    rig = LightRig(
        directions=F.normalize(direction.float(), dim=-1)[None],
        colors=white[None],
        ambient=ambient_sh(white * ambient, white * ambient),
        shadowed=torch.tensor([True]),
        specular=1.0,
    )
    return rig.normalized(exposure)
