"""Per-identity appearance parameters: skin, eyes, lips, brows, facial hair, hair, clothing.

:func:`sample_appearance` draws everything that makes an identity look like
itself (apart from its shape) from the identity's generator; textures and
geometry are then built from these numbers (``skin_texture.py``,
``hair.py``, ``body.py``). Colours are *linear* RGB reflectances in [0, 1]
(the palettes below are written in display values and converted with gamma
2.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "HAIR_STYLES",
    "Appearance",
    "HairStyle",
    "sample_appearance",
    "display_to_linear",
]

DISPLAY_GAMMA = 2.2

#: Skin tones in display RGB from light to dark (typical of portrait photographs).
_SKIN_TONES = torch.tensor(
    [
        [0.96, 0.82, 0.74],
        [0.92, 0.75, 0.65],
        [0.86, 0.67, 0.56],
        [0.78, 0.59, 0.47],
        [0.68, 0.50, 0.38],
        [0.56, 0.40, 0.30],
        [0.45, 0.31, 0.23],
        [0.34, 0.23, 0.17],
        [0.25, 0.17, 0.13],
    ]
)

#: Natural hair colours (display RGB) and their sampling weights.
_HAIR_COLORS = torch.tensor(
    [
        [0.06, 0.05, 0.045],  # black
        [0.14, 0.09, 0.06],  # dark brown
        [0.28, 0.18, 0.11],  # brown
        [0.45, 0.32, 0.20],  # light brown
        [0.72, 0.57, 0.36],  # blonde
        [0.86, 0.78, 0.62],  # platinum
        [0.48, 0.20, 0.09],  # auburn / red
        [0.50, 0.49, 0.48],  # grey
        [0.80, 0.79, 0.76],  # white
    ]
)
_HAIR_COLOR_WEIGHTS = torch.tensor([0.24, 0.22, 0.16, 0.1, 0.09, 0.03, 0.06, 0.06, 0.04])

#: Iris colours (display RGB): dark brown, brown, hazel, green, blue, grey.
_IRIS_COLORS = torch.tensor(
    [
        [0.16, 0.09, 0.05],
        [0.32, 0.18, 0.08],
        [0.42, 0.33, 0.15],
        [0.30, 0.42, 0.25],
        [0.30, 0.45, 0.62],
        [0.45, 0.50, 0.53],
    ]
)

HAIR_STYLES = ("bald", "buzz", "short", "medium", "bob", "long", "bun", "curly")
_HAIR_STYLE_WEIGHTS = torch.tensor([0.06, 0.1, 0.2, 0.16, 0.12, 0.18, 0.08, 0.1])


def display_to_linear(color: Tensor) -> Tensor:
    """Display RGB in [0, 1] -> linear RGB (gamma 2.2)."""
    return color.clamp(0.0, 1.0) ** DISPLAY_GAMMA


def _rand(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def _choice(weights: Tensor, generator: torch.Generator) -> int:
    return int(torch.multinomial(weights, 1, generator=generator))


def _palette_lerp(palette: Tensor, t: float) -> Tensor:
    """Piecewise-linear interpolation along a palette's rows, t in [0, 1]."""
    position = t * (palette.shape[0] - 1)
    low = min(int(math.floor(position)), palette.shape[0] - 2)
    frac = position - low
    return palette[low] * (1.0 - frac) + palette[low + 1] * frac


@dataclass
class HairStyle:
    """Geometry and look of the scalp hair (see ``hair.py``).

    Attributes:
        name: one of :data:`HAIR_STYLES`.
        thickness: shell thickness over the crown, world units (0 for bald).
        hairline: raise (+) or lower (-) of the front hairline, world units.
        fringe: how far a fringe falls over the forehead, world units (0 = none).
        recession: temple recession / crown balding amount in [0, 1].
        length: how far long hair falls below the ears, world units (0 = no curtain).
        curl: 0 straight .. 1 tightly curled (shorter, noisier strands).
        whorl: (3,) unit direction (head frame) from the head centre to the crown whorl.
        part: signed sideways sweep of the strands (-1 .. 1).
    """

    name: str
    thickness: float
    hairline: float
    fringe: float
    recession: float
    length: float
    curl: float
    whorl: Tensor
    part: float


@dataclass
class Appearance:
    """Everything but shape that identifies a person's look; colours linear RGB (3,).

    Attributes:
        skin: base skin reflectance. redness: cheek / nose / ear flush in [0, 1].
        undertone: -1 olive .. +1 pink shift. freckles: density in [0, 1].
        pores: pore / fine-texture contrast in [0, 1].
        lips: lip colour. brows: brow hair colour. brow_thickness: world units.
        brow_density: [0, 1]. stubble: darkening of the beard area in [0, 1].
        beard: facial-hair shell thickness (0 = none), world units.
        iris: iris colour. sclera: sclera colour. eye_shadow: darkening around the eyes [0, 1].
        hair: hair colour. hair_style: :class:`HairStyle`.
        clothing: main clothing colour. clothing_accent: second colour.
        clothing_pattern: "plain", "stripes", "checks" or "knit". neckline: "crew", "v", "turtle" or "open".
        teeth: teeth colour. gums: gum / tongue base colour.
    """

    skin: Tensor
    redness: float
    undertone: float
    freckles: float
    pores: float
    lips: Tensor
    brows: Tensor
    brow_thickness: float
    brow_density: float
    stubble: float
    beard: float
    iris: Tensor
    sclera: Tensor
    eye_shadow: float
    hair: Tensor
    hair_style: HairStyle
    clothing: Tensor
    clothing_accent: Tensor
    clothing_pattern: str
    neckline: str
    teeth: Tensor
    gums: Tensor


def _sample_hair_style(generator: torch.Generator, masculine: float) -> HairStyle:
    weights = _HAIR_STYLE_WEIGHTS.clone()
    # Masculine-leaning identities are more often bald / buzzed / short, feminine ones more often long.
    weights *= torch.tensor(
        [
            1 + 2 * masculine,
            1 + masculine,
            1 + masculine,
            1.0,
            2 - masculine * 1.5,
            2 - masculine * 1.7,
            2 - masculine * 1.7,
            1.0,
        ]
    )
    name = HAIR_STYLES[_choice(weights, generator)]
    u = torch.rand(8, generator=generator)
    thickness = {
        "bald": 0.0,
        "buzz": 0.004 + 0.004 * u[0],
        "short": 0.012 + 0.012 * u[0],
        "medium": 0.022 + 0.018 * u[0],
        "bob": 0.018 + 0.012 * u[0],
        "long": 0.016 + 0.014 * u[0],
        "bun": 0.008 + 0.006 * u[0],
        "curly": 0.045 + 0.04 * u[0],
    }[name]
    length = {"bob": 0.12 + 0.06 * u[1], "long": 0.3 + 0.25 * u[1]}.get(name, 0.0)
    fringe = 0.0
    if name in ("medium", "bob", "long", "short") and u[2] < 0.35:
        fringe = 0.02 + 0.06 * float(u[3])
    recession = float(u[4]) ** 2 * (0.9 * masculine if name in ("short", "buzz", "bald", "medium") else 0.1)
    whorl_azimuth = (float(u[5]) - 0.5) * 0.6
    whorl_elevation = 0.95 + 0.35 * float(u[6])  # radians up from the horizontal, leaning back
    whorl = torch.tensor(
        [
            math.cos(whorl_elevation) * math.sin(math.pi + whorl_azimuth),
            math.sin(whorl_elevation),
            math.cos(whorl_elevation) * math.cos(math.pi + whorl_azimuth),
        ]
    )
    return HairStyle(
        name=name,
        thickness=float(thickness),
        hairline=(float(u[7]) - 0.5) * 0.03,
        fringe=fringe,
        recession=recession,
        length=float(length),
        curl=1.0 if name == "curly" else 0.15 * float(u[2]),
        whorl=whorl,
        part=float(torch.rand((), generator=generator)) * 2.0 - 1.0,
    )


def sample_appearance(generator: torch.Generator) -> Appearance:
    """Draw an identity's appearance (see :class:`Appearance`) from ``generator``."""
    tone = _rand(generator)
    skin_display = _palette_lerp(_SKIN_TONES, tone)
    undertone = _rand(generator) * 2.0 - 1.0
    skin_display = skin_display * torch.tensor(
        [1.0 + 0.03 * undertone, 1.0 - 0.01 * undertone, 1.0 - 0.03 * undertone]
    )
    masculine = _rand(generator)
    redness = 0.2 + 0.6 * _rand(generator)
    freckles = max(0.0, _rand(generator) * 1.6 - 1.0) * (1.0 - tone)  # ~ a third of light-skinned people
    lip_shift = torch.tensor([0.9, 0.62, 0.62]) if tone < 0.55 else torch.tensor([0.78, 0.6, 0.6])
    lips = skin_display * lip_shift * (0.8 + 0.2 * _rand(generator))
    if _rand(generator) < 0.15 * (1.0 - masculine):  # lipstick
        lips = torch.tensor([0.55, 0.1, 0.15]) * (0.7 + 0.5 * _rand(generator))
    hair_index = _choice(_HAIR_COLOR_WEIGHTS, generator)
    if tone > 0.5 and hair_index in (4, 5, 6):  # rare natural blond / red on dark skin
        hair_index = 1
    hair_display = _HAIR_COLORS[hair_index] * (0.85 + 0.3 * _rand(generator))
    if _rand(generator) < 0.04:  # dyed
        hue = _rand(generator) * 2.0 * math.pi
        hair_display = 0.3 + 0.25 * torch.cos(hue - torch.tensor([0.0, 2.0944, 4.1888]))
    brows_display = (hair_display * 0.8).clamp(max=0.35) if hair_index not in (7, 8) else hair_display * 0.7
    iris_weights = (
        torch.tensor([0.35, 0.25, 0.12, 0.08, 0.12, 0.08])
        if tone < 0.45
        else torch.tensor([0.7, 0.25, 0.05, 0.0, 0.0, 0.0])
    )
    iris_display = _IRIS_COLORS[_choice(iris_weights, generator)] * (0.8 + 0.4 * _rand(generator))
    sclera_display = torch.tensor([0.8, 0.77, 0.74]) * (0.85 + 0.15 * _rand(generator))
    stubble = masculine * _rand(generator) if masculine > 0.55 else 0.0
    beard = 0.003 + 0.007 * _rand(generator) if masculine > 0.7 and _rand(generator) < 0.45 else 0.0
    hair_style = _sample_hair_style(generator, masculine)
    clothing_display = torch.rand(3, generator=generator) * 0.7 + 0.05
    gray = clothing_display.mean()
    clothing_display = gray + (clothing_display - gray) * _rand(generator)  # many clothes are desaturated
    accent_display = torch.rand(3, generator=generator) * 0.8 + 0.1
    pattern = ("plain", "plain", "stripes", "checks", "knit")[
        int(torch.randint(0, 5, (), generator=generator))
    ]
    neckline = ("crew", "crew", "v", "turtle", "open")[int(torch.randint(0, 5, (), generator=generator))]
    teeth_display = torch.tensor([0.9, 0.86, 0.76]) * (0.85 + 0.15 * _rand(generator))
    gums_display = torch.tensor([0.75, 0.36, 0.38]) * (0.85 + 0.15 * _rand(generator))
    return Appearance(
        skin=display_to_linear(skin_display),
        redness=redness,
        undertone=undertone,
        freckles=freckles,
        pores=0.3 + 0.7 * _rand(generator),
        lips=display_to_linear(lips),
        brows=display_to_linear(brows_display),
        brow_thickness=0.014 + 0.008 * _rand(generator) + 0.004 * masculine,
        brow_density=0.75 + 0.25 * _rand(generator),
        stubble=stubble,
        beard=beard,
        iris=display_to_linear(iris_display),
        sclera=display_to_linear(sclera_display),
        eye_shadow=0.2 + 0.5 * _rand(generator),
        hair=display_to_linear(hair_display),
        hair_style=hair_style,
        clothing=display_to_linear(clothing_display),
        clothing_accent=display_to_linear(accent_display),
        clothing_pattern=pattern,
        neckline=neckline,
        teeth=display_to_linear(teeth_display),
        gums=display_to_linear(gums_display),
    )
