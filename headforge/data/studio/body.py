"""Neck base, shoulders and clothing under the head model's neck.

The torso is a stack of superelliptic rings: it starts just inside the head
model's neck (so the neck grows out of it), widens along the trapezius slope
to rounded shoulders and continues down as the chest and back. It is static
(world frame); only the head and neck move with the pose. Whether a torso
pixel is clothing or skin is decided per pixel by the neckline (crew, V,
open, turtle), so the neckline edge is as smooth as the image sampling; a
turtleneck adds a collar tube around the neck. Clothing gets a fabric
pattern (plain, stripes, checks, knit) and soft folds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.data.studio.appearance import Appearance
from headforge.data.studio.head_parts import StudioHead
from headforge.data.studio.materials import Material
from headforge.data.studio.noise import LatticeNoise

__all__ = ["BodyGeometry", "build_body", "shade_body"]


@dataclass
class BodyGeometry:
    """Torso mesh and what decides its clothing.

    Attributes:
        vertices: (Vb, 3) world positions.
        faces: (Fb, 3).
        face_materials: (Fb,) BODY_SKIN (torso: skin or clothing per pixel) or CLOTHING (collar).
        neck_base_y: height where the neck meets the torso.
        neck_centre_z: z of the neck axis at its base.
        neckline: "crew", "v", "open" or "turtle".
        neckline_depth: how far the neckline dips at the front (world units).
    """

    vertices: Tensor
    faces: Tensor
    face_materials: Tensor
    neck_base_y: float
    neck_centre_z: float
    neckline: str
    neckline_depth: float


def _smooth_min(a: Tensor, b: float, k: float) -> Tensor:
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def _smoothstep(edge0: float, edge1: float, x: Tensor) -> Tensor:
    t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ring_faces(rows: int, cols: int, offset: int = 0) -> Tensor:
    """Faces of ``rows`` rings of ``cols`` vertices (wrapped around), ring i above ring i + 1.

    Rings run counter-clockwise seen from above (+y), so normals point outwards.
    """
    r, c = torch.meshgrid(torch.arange(rows - 1), torch.arange(cols), indexing="ij")
    a = (r * cols + c).reshape(-1)
    b = (r * cols + (c + 1) % cols).reshape(-1)
    d, e = a + cols, b + cols
    return torch.cat([torch.stack([a, b, d], 1), torch.stack([b, e, d], 1)]) + offset


def _superellipse_ring(
    half_x: Tensor, half_z: Tensor, centre_z: Tensor, y: Tensor, exponent: Tensor, cols: int
) -> Tensor:
    """(R, C, 3) points of superelliptic rings; the angle runs from +z towards -x."""
    angle = torch.arange(cols) * (2.0 * math.pi / cols)
    s, c = torch.sin(angle)[None], torch.cos(angle)[None]
    power = 2.0 / exponent[:, None]
    x = -half_x[:, None] * s.abs() ** power * torch.sign(s)
    z = centre_z[:, None] + half_z[:, None] * c.abs() ** power * torch.sign(c)
    return torch.stack([x, y[:, None].expand_as(x), z], dim=-1)


def build_body(
    head: StudioHead, shaped: Tensor, appearance: Appearance, generator: torch.Generator
) -> BodyGeometry:
    """Torso (and turtleneck collar) for an identity.

    Args:
        head: the studio head.
        shaped: (V, 3) identity vertices at neutral expression and pose (the torso is static).
        appearance: neckline choice.
        generator: shoulder width, chest depth, neckline depth.
    """
    u = torch.rand(4, generator=generator)
    skin = (head.vertex_materials == Material.SKIN) | (head.vertex_materials == Material.NECK)
    neck_ref_y = head.chin_y - 0.075
    band = shaped[skin & ((shaped[:, 1] - neck_ref_y).abs() < 0.012)]
    if band.shape[0] < 8:
        raise ValueError("the head model has no neck below the chin to attach shoulders to")
    neck_half_x = float(band[:, 0].abs().max())
    neck_front, neck_back = float(band[:, 2].max()), float(band[:, 2].min())
    neck_half_z = 0.5 * (neck_front - neck_back)
    neck_centre_z = 0.5 * (neck_front + neck_back)

    shoulder_half_x = 0.2 + 0.05 * float(u[0])
    chest_half_z = 0.105 + 0.03 * float(u[1])
    top_y = neck_ref_y + 0.01
    rows, cols = 34, 60
    fall = torch.cat([torch.linspace(0.0, 0.2, 24), torch.linspace(0.24, 0.7, rows - 24)])
    y = top_y - fall
    half_x = _smooth_min(0.93 * neck_half_x + 2.0 * (fall - 0.01).clamp(min=0.0), shoulder_half_x, 0.06)
    half_z = 0.93 * neck_half_z + (chest_half_z - 0.93 * neck_half_z) * _smoothstep(0.0, 0.14, fall)
    centre_z = neck_centre_z + (neck_centre_z * 0.2 - 0.01 - neck_centre_z) * _smoothstep(0.0, 0.16, fall)
    exponent = 2.0 + 0.8 * _smoothstep(0.02, 0.12, fall)
    torso = _superellipse_ring(half_x, half_z, centre_z, y, exponent, cols).reshape(-1, 3)
    faces = [_ring_faces(rows, cols)]
    materials = [torch.full((faces[0].shape[0],), Material.BODY_SKIN)]
    vertices = [torso]
    if appearance.neckline == "turtle":
        collar_rows = 8
        collar_top = head.chin_y - 0.045
        collar_y = torch.linspace(collar_top, top_y - 0.03, collar_rows)
        ones = torch.ones(collar_rows)
        collar = _superellipse_ring(
            ones * (neck_half_x + 0.014),
            ones * (neck_half_z + 0.014),
            ones * neck_centre_z,
            collar_y,
            ones * 2.2,
            cols,
        ).reshape(-1, 3)
        collar_faces = _ring_faces(collar_rows, cols, offset=torso.shape[0])
        vertices.append(collar)
        faces.append(collar_faces)
        materials.append(torch.full((collar_faces.shape[0],), Material.CLOTHING))
    depth = {
        "crew": 0.02 + 0.02 * float(u[2]),
        "v": 0.08 + 0.08 * float(u[2]),
        "open": 0.1 + 0.1 * float(u[2]),
        "turtle": 0.0,
    }[appearance.neckline]
    return BodyGeometry(
        vertices=torch.cat(vertices),
        faces=torch.cat(faces),
        face_materials=torch.cat(materials),
        neck_base_y=top_y - 0.03,
        neck_centre_z=neck_centre_z,
        neckline=appearance.neckline,
        neckline_depth=depth,
    )


def _neckline_height(body: BodyGeometry, points: Tensor) -> Tensor:
    """(N,) height of the neckline above each torso point's azimuth."""
    azimuth = torch.atan2(points[:, 0], points[:, 2] - body.neck_centre_z).abs()  # 0 front, pi back
    frontness = (1.0 - azimuth / math.pi).clamp(0.0, 1.0)
    if body.neckline == "turtle":
        return torch.full_like(azimuth, float("inf"))
    if body.neckline == "crew":
        return body.neck_base_y - 0.012 - body.neckline_depth * frontness**2
    width = 0.55 if body.neckline == "v" else 0.8
    v_shape = (1.0 - azimuth / width).clamp(min=0.0)
    return body.neck_base_y - 0.012 - 0.02 * frontness - body.neckline_depth * v_shape


def shade_body(
    body: BodyGeometry, material: Tensor, points: Tensor, appearance: Appearance, noise: LatticeNoise
) -> tuple[Tensor, Tensor]:
    """Albedo (N, 3) and clothing flag (N,) of torso / collar pixels at world ``points`` (N, 3)."""
    clothing = (material == Material.CLOTHING) | (points[:, 1] < _neckline_height(body, points))
    fabric = noise.fbm(points, 90.0, octaves=2)
    folds = noise.fbm(points * torch.tensor([1.0, 0.35, 1.0]), 9.0, octaves=2)
    pattern = appearance.clothing_pattern
    if pattern == "stripes":
        weight = (torch.sin(points[:, 1] * 2.0 * math.pi * 22.0) > 0.3).to(points.dtype)
    elif pattern == "checks":
        weight = ((torch.sin(points[:, 0] * 70.0) * torch.sin(points[:, 1] * 70.0)) > 0.0).to(
            points.dtype
        ) * 0.6
    else:
        weight = torch.zeros_like(fabric)
    cloth = (
        appearance.clothing[None] + (appearance.clothing_accent - appearance.clothing)[None] * weight[:, None]
    )
    if pattern == "knit" or material.eq(Material.CLOTHING).any():
        ribs = 0.85 + 0.15 * torch.sin(torch.atan2(points[:, 0], points[:, 2]) * 90.0) ** 2
        knit = (pattern == "knit") | (material == Material.CLOTHING)
        cloth = cloth * torch.where(knit, ribs, torch.ones_like(ribs))[:, None]
    cloth = cloth * (1.0 + 0.1 * (fabric - 0.5))[:, None] * (0.8 + 0.4 * folds)[:, None]
    hem = clothing & (points[:, 1] > _neckline_height(body, points) - 0.008) & (material != Material.CLOTHING)
    cloth = torch.where(hem[:, None], cloth * 0.75, cloth)
    skin = appearance.skin[None] * (1.0 + 0.08 * (fabric - 0.5))[:, None] * torch.tensor([1.02, 0.98, 0.98])
    return torch.where(clothing[:, None], cloth, skin).clamp(0.0, 1.0), clothing
