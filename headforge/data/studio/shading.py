"""Per-pixel shading of the studio's images: SH diffuse with shadowed lights, plus specular.

Diffuse shading (the ``shading`` map, linear, white-albedo reflected radiance)::

    S(p) = E_rig(n) / pi - sum_{i shadowed} (1 - V_i(p)) E_i(n) / pi

``E_rig`` is the irradiance of the rig's SH (the dataset's ``sh`` label),
``E_i`` that of light i's own SH lobe, and ``V_i`` its visibility: the cast
shadow (shadow map, :mod:`headforge.data.studio.shadows`) times an attached
shadow term that fades the lobe out where the surface turns away from the
light (removing the order-2 lobe's ringing on the dark side). Where every
``V_i = 1``, ``S`` is exactly the SH irradiance of the label.

Specular highlights (added to ``albedo * S`` in linear space, not part of
the label): energy-normalised Blinn-Phong with Schlick Fresnel per light,
times the same visibility; hair uses the Kajiya-Kay strand model along the
hair's tangent instead. Units: linear radiance, 1 = white.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.data.studio.lights import LightRig
from headforge.lighting import irradiance

__all__ = ["attached_shadow", "diffuse_shading", "specular_shading"]


def attached_shadow(normals: Tensor, direction: Tensor) -> Tensor:
    """(N,) smooth 0 -> 1 as n . l goes from -0.2 to 0.25 (the light's terminator)."""
    cosine = (normals * direction).sum(-1)
    t = ((cosine + 0.2) / 0.45).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def diffuse_shading(normals: Tensor, rig: LightRig, cast_visibility: Tensor | None) -> tuple[Tensor, Tensor]:
    """Linear diffuse shading and the combined visibility of the shadowed lights.

    Args:
        normals: (N, 3) unit world normals.
        rig: the lights.
        cast_visibility: (N, L) cast-shadow visibility per light in [0, 1] (only
            the shadowed lights' columns are used), or None for no cast shadows.

    Returns:
        shading (N, 3) = ``E_rig(n) / pi`` minus the blocked part of every shadowed
        light, clamped at 0; visibility (N, L) in [0, 1] (cast x attached; 1 for
        unshadowed lights).
    """
    shading = irradiance(normals, rig.sh().to(normals)) / math.pi
    count = rig.directions.shape[0]
    visibility = normals.new_ones(normals.shape[0], count)
    for index in range(count):
        if not bool(rig.shadowed[index]):
            continue
        direction = rig.directions[index].to(normals)
        light_visibility = attached_shadow(normals, direction)
        if cast_visibility is not None:
            light_visibility = light_visibility * cast_visibility[:, index]
        visibility[:, index] = light_visibility
        blocked = (1.0 - light_visibility)[:, None]
        shading = shading - blocked * irradiance(normals, rig.light_sh(index).to(normals)) / math.pi
    return shading.clamp(min=0.0), visibility


def specular_shading(
    normals: Tensor,
    view_directions: Tensor,
    rig: LightRig,
    visibility: Tensor,
    strength: Tensor,
    shininess: Tensor,
    tangents: Tensor | None = None,
    strand_mask: Tensor | None = None,
) -> Tensor:
    """Specular radiance (N, 3), linear.

    Args:
        normals: (N, 3) unit world normals.
        view_directions: (N, 3) unit directions from the surface towards the camera.
        rig: the lights (``rig.specular`` scales every highlight).
        visibility: (N, L) from :func:`diffuse_shading`.
        strength: (N,) specular reflectance at normal incidence (Schlick F0; ~0.03 skin, 0.5 eye).
        shininess: (N,) Blinn-Phong exponent.
        tangents: (N, 3) hair strand directions (needed with ``strand_mask``).
        strand_mask: (N,) bool, pixels shaded with the Kajiya-Kay hair model.
    """
    result = normals.new_zeros(normals.shape)
    for index in range(rig.directions.shape[0]):
        light = rig.directions[index].to(normals)
        color = rig.colors[index].to(normals)
        n_dot_l = (normals * light).sum(-1).clamp(min=0.0)
        half = F.normalize(light[None] + view_directions, dim=-1)
        n_dot_h = (normals * half).sum(-1).clamp(min=0.0)
        v_dot_h = (view_directions * half).sum(-1).clamp(min=0.0)
        fresnel = strength + (1.0 - strength) * (1.0 - v_dot_h) ** 5
        lobe = (shininess + 8.0) / (8.0 * math.pi) * n_dot_h**shininess
        amount = fresnel * lobe
        if strand_mask is not None and tangents is not None:
            t_dot_h = (tangents * half).sum(-1)
            strand_lobe = (1.0 - t_dot_h * t_dot_h).clamp(min=0.0) ** (0.5 * shininess)
            amount = torch.where(strand_mask, strength * strand_lobe, amount)
        result = result + (amount * n_dot_l * visibility[:, index])[:, None] * color[None]
    return result * rig.specular
