"""Per-pixel surface appearance: what each material looks like at a rendered sample.

:func:`evaluate_surfaces` takes the material, the template-frame position, a
per-vertex auxiliary value (hair coverage) and the UV of every sample, and
returns its linear albedo, opacity, segmentation class and specular
parameters. Skin reads the identity's UV texture; eyes, mouth interior,
hair and clothing are procedural (``hair.py``, ``body.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.data.studio.appearance import Appearance
from headforge.data.studio.body import BodyGeometry, shade_body
from headforge.data.studio.hair import StrandSampler
from headforge.data.studio.head_parts import StudioHead
from headforge.data.studio.materials import (
    HAIR_MATERIALS,
    MATERIAL_SEGMENT,
    SEGMENT_IDS,
    SPECULAR_SHININESS,
    SPECULAR_STRENGTH,
    Material,
)
from headforge.data.studio.noise import LatticeNoise

__all__ = ["IdentityLook", "SurfaceSamples", "evaluate_surfaces", "IRIS_ANGLE"]

#: Angular radius (radians, seen from the eyeball centre) of the painted iris, a little larger than
#: asin(iris radius / eye radius) of a real eye so that less sclera shows in wide lid openings.
IRIS_ANGLE = 0.56
#: Blinn-Phong exponent of the lips (moist, tighter highlights than the surrounding skin).
LIP_SHININESS = 40.0


@dataclass
class IdentityLook:
    """What per-pixel evaluation needs about an identity.

    Attributes:
        appearance: colours and amounts.
        skin_texture: (8, T, T) from :func:`~headforge.data.studio.skin_texture.paint_skin_texture`.
        strands: the hair strand sampler.
        body: torso geometry (neckline).
        noise: lattice noise for eyes, mouth and fabric.
        pupil_angle: angular radius of the pupil (radians).
    """

    appearance: Appearance
    skin_texture: Tensor
    strands: StrandSampler
    body: BodyGeometry
    noise: LatticeNoise
    pupil_angle: float


@dataclass
class SurfaceSamples:
    """Surface properties of N samples.

    Attributes:
        albedo: (N, 3) linear reflectance.
        alpha: (N,) opacity in [0, 1] (1 except on hair shells).
        segment: (N,) long segmentation class.
        strength: (N,) specular strength (Schlick F0 or hair highlight strength).
        shininess: (N,) specular exponent.
        tangent: (N, 3) template-frame strand direction (zeros off hair).
        strand: (N,) bool, samples shaded as hair strands.
    """

    albedo: Tensor
    alpha: Tensor
    segment: Tensor
    strength: Tensor
    shininess: Tensor
    tangent: Tensor
    strand: Tensor


def _sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of a (C, T, T) texture at uv (N, 2) (u right, v up) -> (N, C)."""
    grid = torch.stack([uv[:, 0] * 2.0 - 1.0, (1.0 - uv[:, 1]) * 2.0 - 1.0], dim=-1)
    values = F.grid_sample(
        texture[None].to(uv), grid[None, None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return values[0, :, 0].T


def _eyes(look: IdentityLook, head: StudioHead, coords: Tensor) -> Tensor:
    """Albedo (N, 3) of eyeball samples: sclera, iris fibres, limbal ring, pupil."""
    centre = torch.where(
        (coords[:, 0] > 0)[:, None], head.eye_centres[0].to(coords), head.eye_centres[1].to(coords)
    )
    direction = F.normalize(coords - centre, dim=-1)
    angle = torch.acos(direction[:, 2].clamp(-1.0, 1.0))  # from the rest gaze (+z)
    around = torch.atan2(direction[:, 1], direction[:, 0])
    radial = angle / IRIS_ANGLE
    fibres = look.noise(
        torch.stack([around / (2 * math.pi) * 64.0, radial * 3.0, torch.full_like(radial, 3.5)], -1)
    )
    appearance = look.appearance
    iris = appearance.iris[None] * (0.55 + 0.8 * fibres)[:, None]
    collarette = torch.exp(-(((radial - 0.5) / 0.12) ** 2))
    iris = iris * (1.0 + 0.35 * collarette)[:, None]
    limbus = ((radial - 0.82) / 0.18).clamp(0.0, 1.0)
    iris = iris * (1.0 - 0.7 * limbus)[:, None]
    sclera = appearance.sclera[None] * (1.0 - 0.25 * ((angle - 0.9) / 0.6).clamp(0.0, 1.0))[:, None]
    sclera = sclera * torch.tensor([1.0, 0.96, 0.94]).to(coords)
    pupil_edge = torch.sigmoid((look.pupil_angle - angle) / 0.012)[:, None]
    iris_edge = torch.sigmoid((IRIS_ANGLE - angle) / 0.015)[:, None]
    color = sclera * (1.0 - iris_edge) + iris * iris_edge
    color = color * (1.0 - pupil_edge) + 0.008 * pupil_edge
    # The upper lid and lashes keep the top of the visible eyeball in their shade (painted, like make-up).
    lid_shade = ((direction[:, 1] + 0.05) / 0.4).clamp(0.0, 1.0)
    return color * (1.0 - 0.4 * lid_shade * lid_shade * (3.0 - 2.0 * lid_shade))[:, None]


def _mouth(look: IdentityLook, head: StudioHead, material: Tensor, coords: Tensor) -> Tensor:
    """Albedo (N, 3) of teeth, tongue and cavity samples, darker deeper in the mouth."""
    landmarks = head.template_landmarks.to(coords)
    front_z = float(landmarks[60:68, 2].mean())
    depth = (front_z - coords[:, 2]).clamp(min=0.0)
    appearance = look.appearance
    cavity = (
        torch.tensor([0.22, 0.035, 0.04]).to(coords)[None].expand_as(coords)
        * torch.exp(-depth / 0.03)[:, None]
    )
    tongue_noise = look.noise(coords * 180.0 + 1.7)
    tongue = (
        appearance.gums[None]
        * torch.tensor([1.0, 0.75, 0.8]).to(coords)
        * (0.75 + 0.4 * tongue_noise)[:, None]
        * torch.exp(-depth / 0.06)[:, None]
    )
    arch_angle = torch.atan2(coords[:, 0], coords[:, 2] - (front_z - 0.06))
    # Dark gaps between neighbouring teeth, about every 0.14 rad along the arch.
    gaps = 1.0 - 0.35 * torch.exp(-(((torch.remainder(arch_angle / 0.14 + 0.5, 1.0) - 0.5) / 0.06) ** 2))
    teeth = appearance.teeth.to(coords)[None] * gaps[:, None] * torch.exp(-depth / 0.05)[:, None]
    gums = appearance.gums.to(coords)[None] * torch.exp(-depth / 0.05)[:, None]
    result = torch.where((material == Material.TONGUE)[:, None], tongue, cavity)
    result = torch.where((material == Material.GUMS)[:, None], gums, result)
    return torch.where((material == Material.TEETH)[:, None], teeth, result)


def evaluate_surfaces(
    look: IdentityLook,
    head: StudioHead,
    material: Tensor,
    coords: Tensor,
    aux: Tensor,
    uv: Tensor,
    world_points: Tensor,
    layer_fraction: float | None = None,
) -> SurfaceSamples:
    """Surface properties of N samples.

    Args:
        look: the identity's look.
        head: the studio head.
        material: (N,) long material ids.
        coords: (N, 3) template-frame positions (world positions for the torso).
        aux: (N,) hair coverage interpolated from the shell vertices (0 elsewhere).
        uv: (N, 2) texture coordinates (head faces only).
        world_points: (N, 3) world positions.
        layer_fraction: for hair shells, the shell's height as a fraction of the
            hair thickness in (0, 1]; None for opaque surfaces.
    """
    count = material.shape[0]
    dtype = coords.dtype
    albedo = coords.new_zeros(count, 3)
    alpha = coords.new_ones(count)
    segment = MATERIAL_SEGMENT.to(material.device)[material]
    strength = SPECULAR_STRENGTH.to(coords)[material]
    shininess = SPECULAR_SHININESS.to(coords)[material]
    tangent = coords.new_zeros(count, 3)
    strand = torch.zeros(count, dtype=torch.bool, device=coords.device)

    skin = (material == Material.SKIN) | (material == Material.NECK) | (material == Material.EAR)
    if skin.any():
        texels = _sample_texture(look.skin_texture, uv[skin])
        albedo[skin] = texels[:, 0:3]
        skin_segment = segment[skin]
        skin_segment = torch.where(texels[:, 7] > 0.5, SEGMENT_IDS["nose"], skin_segment)
        skin_segment = torch.where(texels[:, 4] > 0.5, SEGMENT_IDS["lips"], skin_segment)
        skin_segment = torch.where(texels[:, 3] > 0.5, SEGMENT_IDS["brows"], skin_segment)
        skin_segment = torch.where(texels[:, 5] > 0.5, SEGMENT_IDS["hair"], skin_segment)
        segment[skin] = skin_segment
        strength[skin] = strength[skin] * texels[:, 6].clamp(min=0.2)
        shininess[skin] = torch.where(
            texels[:, 4] > 0.5, shininess.new_tensor(LIP_SHININESS), shininess[skin]
        )

    eyes = material == Material.EYEBALL
    if eyes.any():
        albedo[eyes] = _eyes(look, head, coords[eyes])
    socket = material == Material.EYE_SOCKET
    if socket.any():
        albedo[socket] = look.appearance.skin.to(coords) * torch.tensor([0.35, 0.2, 0.2]).to(coords)
    mouth = (
        (material == Material.MOUTH_CAVITY)
        | (material == Material.TEETH)
        | (material == Material.TONGUE)
        | (material == Material.GUMS)
    )
    if mouth.any():
        albedo[mouth] = _mouth(look, head, material[mouth], coords[mouth])

    hair = torch.isin(material, torch.tensor(HAIR_MATERIALS, device=material.device))
    if hair.any():
        density, tone, strand_tangent = look.strands.sample(material[hair], coords[hair])
        base = look.appearance.hair.to(coords)[None] * (0.5 + 0.9 * tone)[:, None]
        if layer_fraction is None:
            albedo[hair] = base * (0.45 + 0.75 * density)[:, None]
        else:
            # Taller shells keep only the longer strands; inner shells are darker (self-shadowing).
            threshold = 0.15 + 0.7 * layer_fraction
            coverage = aux[hair].clamp(0.0, 1.0)
            alpha[hair] = coverage * ((density - threshold) / 0.12 + 0.5).clamp(0.0, 1.0)
            albedo[hair] = base * (0.5 + 0.5 * layer_fraction)
        tangent[hair] = strand_tangent
        strand[hair] = True

    body = (material == Material.BODY_SKIN) | (material == Material.CLOTHING)
    if body.any():
        body_albedo, clothing = shade_body(
            look.body, material[body], world_points[body], look.appearance, look.noise
        )
        albedo[body] = body_albedo.to(dtype)
        segment[body] = torch.where(clothing, SEGMENT_IDS["clothing"], SEGMENT_IDS["neck"])
        cloth_strength = SPECULAR_STRENGTH[Material.CLOTHING].to(coords)
        cloth_shininess = SPECULAR_SHININESS[Material.CLOTHING].to(coords)
        strength[body] = torch.where(clothing, cloth_strength, strength[body])
        shininess[body] = torch.where(clothing, cloth_shininess, shininess[body])
    return SurfaceSamples(albedo, alpha, segment, strength, shininess, tangent, strand)
