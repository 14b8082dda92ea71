"""Paint an identity's skin texture in UV space: tone, mottling, pores, flush, freckles, lips,
brows, stubble, eye shadow, and the hair colour on the scalp under the hair shells.

Each texel is painted from its template-space position (``uv_atlas.py``) and
the template landmarks (``face_regions.py``), with noise that is continuous
in 3D, so the texture has no seams whatever the UV layout. Output channels
(:data:`TEXTURE_CHANNELS`): linear albedo RGB, then masks in [0, 1] for
brows, lips and scalp hair (they decide the segmentation class of skin
pixels), an oiliness factor that scales the specular strength, and the
model's nose region (segmentation only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from headforge.data.studio.appearance import Appearance
from headforge.data.studio.face_regions import (
    beard_mask,
    brow_distance,
    front_weight,
    gaussian_blob,
    lip_mask,
    soft_band,
)
from headforge.data.studio.hair import scalp_coverage
from headforge.data.studio.head_parts import StudioHead
from headforge.data.studio.materials import Material
from headforge.data.studio.noise import LatticeNoise
from headforge.data.studio.uv_atlas import UVAtlas, dilate_texture

__all__ = ["TEXTURE_CHANNELS", "paint_skin_texture"]

TEXTURE_CHANNELS = ("red", "green", "blue", "brow", "lip", "hair", "oil", "nose")


def _mix(base: Tensor, color: Tensor, weight: Tensor) -> Tensor:
    """Blend (N, 3) base towards colour (3,) by weight (N,)."""
    return base + (color[None] - base) * weight[:, None]


def paint_skin_texture(head: StudioHead, atlas: UVAtlas, appearance: Appearance,
                       generator: torch.Generator) -> Tensor:
    """The skin texture (8, R, R) of an identity (see :data:`TEXTURE_CHANNELS`).

    Args:
        head: the studio head (template landmarks, ears, centre).
        atlas: texel positions of the UV layout.
        appearance: colours and amounts.
        generator: draws the noise lattices.
    """
    noise = LatticeNoise(generator)
    points = atlas.positions
    landmarks = head.template_landmarks
    count = points.shape[0]
    front = front_weight(points, landmarks)

    # Tone with large blotches and fine pores (multiplicative, so dark skin keeps its contrast).
    mottling = noise.fbm(points, 18.0, octaves=3)
    albedo = appearance.skin[None].expand(count, 3) * (1.0 + 0.16 * (mottling - 0.5))[:, None]
    pores = noise.fbm(points, 260.0, octaves=2)
    albedo = albedo * (1.0 + appearance.pores * 0.14 * (pores - 0.5))[:, None]

    # Flush: cheeks, nose tip, ears, lips' surroundings; redder for light skin.
    flush_color = torch.tensor([0.75, 0.28, 0.26]) * appearance.skin.max()
    cheek_left = (landmarks[46] + landmarks[54] + landmarks[13]) / 3.0
    cheek_right = (landmarks[41] + landmarks[48] + landmarks[3]) / 3.0
    flush = (gaussian_blob(points, cheek_left, 0.03) + gaussian_blob(points, cheek_right, 0.03)) * front
    flush = flush + 0.7 * gaussian_blob(points, landmarks[30], 0.016)
    ears = (atlas.materials == Material.EAR).to(points.dtype)
    flush = (flush + 0.6 * ears).clamp(max=1.0) * appearance.redness * (0.55 + 0.3 * noise.fbm(points, 40.0, 2))
    albedo = _mix(albedo, flush_color, 0.35 * flush)

    # Darker, slightly violet skin around the eyes.
    eye_blob = sum(gaussian_blob(points * torch.tensor([1.0, 1.6, 1.0]),
                                 centre * torch.tensor([1.0, 1.6, 1.0]), 0.022) for centre in head.eye_centres)
    albedo = albedo * (1.0 - 0.22 * appearance.eye_shadow * eye_blob * front)[:, None]

    # Freckles: sparse spots over the nose and cheeks.
    if appearance.freckles > 0.0:
        spots = noise.fbm(points + 3.7, 140.0, octaves=2)
        area = (front * (gaussian_blob(points, landmarks[30], 0.05) + 0.7 * flush.clamp(max=1.0))).clamp(max=1.0)
        freckle = soft_band(-spots, -(0.72 - 0.12 * appearance.freckles), 0.02) * area * appearance.freckles
        albedo = _mix(albedo, appearance.skin * torch.tensor([0.55, 0.38, 0.28]), freckle)

    # Stubble: bluish-grey dots over the beard area.
    beard = beard_mask(points, landmarks, head.ear_centres)
    if appearance.stubble > 0.0:
        dots = noise.fbm(points + 9.1, 420.0, octaves=1)
        stubble = beard * appearance.stubble * (0.55 + 0.45 * dots)
        albedo = _mix(albedo, appearance.hair * 0.6 + torch.tensor([0.01, 0.012, 0.016]), 0.55 * stubble)

    # Lips.
    lips = atlas.features[:, 0] if head.has_lip_region else lip_mask(points, landmarks)
    lip_texture = appearance.lips[None] * (1.0 + 0.12 * (noise.fbm(points * torch.tensor([3.0, 0.4, 1.0]),
                                                                    90.0, 2) - 0.5))[:, None]
    albedo = albedo + (lip_texture - albedo) * lips[:, None]

    # Brows: a tapered band of short strokes.
    distance, along = brow_distance(points, landmarks)
    half_width = appearance.brow_thickness * (0.75 - 0.4 * along) * 0.5
    band = soft_band(distance - half_width, 0.0, 0.0015) * front
    strokes = noise(points * torch.tensor([130.0, 340.0, 130.0]))
    brow = (band * (appearance.brow_density * (0.55 + 0.9 * strokes))).clamp(0.0, 1.0)
    albedo = _mix(albedo, appearance.brows, 0.9 * brow)

    # Scalp under the hair shells takes the hair colour (roots), so sparse hair never shows bald skin.
    scalp = scalp_coverage(points, head, appearance.hair_style)
    if appearance.beard > 0.0:
        scalp = torch.maximum(scalp, 0.8 * beard)
    roots = appearance.hair * (0.45 + 0.25 * noise.fbm(points + 5.3, 200.0, 1))[:, None]
    albedo = albedo + (roots - albedo) * (0.95 * scalp)[:, None]

    # Oily T-zone (forehead centre, nose) shines more.
    t_zone = gaussian_blob(points * torch.tensor([2.0, 1.0, 1.0]), landmarks[27] * torch.tensor(
        [2.0, 1.0, 1.0]) + torch.tensor([0.0, 0.06, 0.0]), 0.045) + gaussian_blob(points, landmarks[30], 0.02)
    oil = 1.0 + 1.2 * t_zone.clamp(max=1.0) * front - 0.8 * scalp

    values = torch.cat([albedo.clamp(0.0, 1.0), brow[:, None], lips[:, None], scalp[:, None], oil[:, None],
                        atlas.features[:, 1:2]], 1)
    texture = atlas.scatter(values)
    return dilate_texture(texture, atlas.coverage(), steps=3)
