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

from dataclasses import dataclass

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

__all__ = ["TEXTURE_CHANNELS", "SkinLayout", "paint_skin_texture"]

TEXTURE_CHANNELS = ("red", "green", "blue", "brow", "lip", "hair", "oil", "nose")


def _mix(base: Tensor, color: Tensor, weight: Tensor) -> Tensor:
    """Blend (N, 3) base towards colour (3,) by weight (N,)."""
    return base + (color[None] - base) * weight[:, None]


@dataclass
class SkinLayout:
    """Identity-independent masks of the texels (N,) of an atlas, computed once per head model.

    They depend only on template positions and template landmarks, which every
    identity shares (the UV layout follows the surface through shape changes).
    """

    front: Tensor
    cheeks: Tensor
    nose_tip: Tensor
    ears: Tensor
    eyes: Tensor
    lips: Tensor
    brow_distance: Tensor
    brow_along: Tensor
    beard: Tensor
    t_zone: Tensor
    nose_region: Tensor

    @classmethod
    def build(cls, head: StudioHead, atlas: UVAtlas) -> SkinLayout:
        points = atlas.positions
        landmarks = head.template_landmarks
        front = front_weight(points, landmarks)
        cheek_left = (landmarks[46] + landmarks[54] + landmarks[13]) / 3.0
        cheek_right = (landmarks[41] + landmarks[48] + landmarks[3]) / 3.0
        squash = torch.tensor([1.0, 1.6, 1.0])
        eyes = sum(gaussian_blob(points * squash, centre * squash, 0.022) for centre in head.eye_centres)
        distance, along = brow_distance(points, landmarks)
        wide = torch.tensor([2.0, 1.0, 1.0])
        t_zone = gaussian_blob(points * wide, landmarks[27] * wide + torch.tensor([0.0, 0.06, 0.0]), 0.045)
        return cls(
            front=front,
            cheeks=(gaussian_blob(points, cheek_left, 0.03) + gaussian_blob(points, cheek_right, 0.03))
            * front,
            nose_tip=gaussian_blob(points, landmarks[30], 0.016),
            ears=(atlas.materials == Material.EAR).to(points.dtype),
            eyes=eyes * front,
            lips=atlas.features[:, 0] if head.has_lip_region else lip_mask(points, landmarks),
            brow_distance=distance,
            brow_along=along,
            beard=beard_mask(points, landmarks, head.ear_centres),
            t_zone=((t_zone + gaussian_blob(points, landmarks[30], 0.02)).clamp(max=1.0) * front),
            nose_region=atlas.features[:, 1],
        )


def paint_skin_texture(
    head: StudioHead, atlas: UVAtlas, layout: SkinLayout, appearance: Appearance, generator: torch.Generator
) -> Tensor:
    """The skin texture (8, R, R) of an identity (see :data:`TEXTURE_CHANNELS`).

    Args:
        head: the studio head (template landmarks, ears, centre).
        atlas: texel positions of the UV layout.
        layout: the atlas's identity-independent masks.
        appearance: colours and amounts.
        generator: draws the noise lattices.
    """
    noise = LatticeNoise(generator)
    points = atlas.positions
    count = points.shape[0]

    # Tone with large blotches and fine pores (multiplicative, so dark skin keeps its contrast).
    mottling = noise.fbm(points, 18.0, octaves=3)
    albedo = appearance.skin[None].expand(count, 3) * (1.0 + 0.16 * (mottling - 0.5))[:, None]
    pores = noise(points * 260.0)
    albedo = albedo * (1.0 + appearance.pores * 0.14 * (pores - 0.5))[:, None]

    # Flush: cheeks, nose tip, ears; redder for light skin.
    flush_color = torch.tensor([0.75, 0.28, 0.26]) * appearance.skin.max()
    flush = (layout.cheeks + 0.7 * layout.nose_tip + 0.6 * layout.ears).clamp(max=1.0)
    flush = flush * appearance.redness * (0.55 + 0.3 * noise(points * 40.0 + 2.3))
    albedo = _mix(albedo, flush_color, 0.35 * flush)

    # Darker skin around the eyes.
    albedo = albedo * (1.0 - 0.22 * appearance.eye_shadow * layout.eyes)[:, None]

    # Freckles: sparse spots over the nose and cheeks.
    if appearance.freckles > 0.0:
        spots = noise.fbm(points + 3.7, 140.0, octaves=2)
        area = (layout.front * (4.0 * layout.nose_tip + layout.cheeks)).clamp(max=1.0)
        freckle = soft_band(-spots, -(0.72 - 0.12 * appearance.freckles), 0.02) * area * appearance.freckles
        albedo = _mix(albedo, appearance.skin * torch.tensor([0.55, 0.38, 0.28]), freckle)

    # Stubble: bluish-grey dots over the beard area.
    if appearance.stubble > 0.0:
        dots = noise(points * 420.0 + 9.1)
        stubble = layout.beard * appearance.stubble * (0.55 + 0.45 * dots)
        albedo = _mix(albedo, appearance.hair * 0.6 + torch.tensor([0.01, 0.012, 0.016]), 0.55 * stubble)

    # Lips.
    lips = layout.lips
    lip_texture = (
        appearance.lips[None]
        * (1.0 + 0.12 * (noise(points * torch.tensor([270.0, 36.0, 90.0])) - 0.5))[:, None]
    )
    albedo = albedo + (lip_texture - albedo) * lips[:, None]

    # Brows: a tapered band of short strokes.
    # Thickest at the inner end, tapering to the tail; strokes slant along the brow.
    half_width = appearance.brow_thickness * (0.6 - 0.3 * layout.brow_along)
    band = soft_band(layout.brow_distance - half_width, 0.0, 0.002) * layout.front
    strokes = noise(points * torch.tensor([160.0, 420.0, 160.0]))
    brow = (band * appearance.brow_density * (0.7 + 0.6 * strokes)).clamp(0.0, 1.0)
    albedo = _mix(albedo, appearance.brows, 0.92 * brow)

    # Scalp under the hair shells takes the hair colour (roots), so sparse hair never shows bald skin.
    scalp = scalp_coverage(points, head, appearance.hair_style)
    if appearance.beard > 0.0:
        scalp = torch.maximum(scalp, 0.5 * layout.beard)
    roots = appearance.hair * (0.45 + 0.25 * noise(points * 200.0 + 5.3))[:, None]
    albedo = albedo + (roots - albedo) * (0.95 * scalp)[:, None]

    # Oily T-zone (forehead centre, nose) shines more; hair-covered scalp less.
    oil = 1.0 + 1.2 * layout.t_zone - 0.8 * scalp

    values = torch.cat(
        [
            albedo.clamp(0.0, 1.0),
            brow[:, None],
            lips[:, None],
            scalp[:, None],
            oil[:, None],
            layout.nose_region[:, None],
        ],
        1,
    )
    texture = atlas.scatter(values)
    return dilate_texture(texture, atlas.coverage(), steps=3)
