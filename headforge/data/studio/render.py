"""Render a posed scene from a camera under a light rig: the image and its exact passes.

Two rasterizations per view:

* the *image* pass at ``supersample`` x the output resolution: every sample is
  shaded (albedo x diffuse shading + specular), hair shells are alpha-blended
  over the opaque surfaces from the innermost shell outwards, everything is
  composited over the background, and the samples are box-filtered down
  (antialiasing);
* the *maps* pass at the output resolution with one sample at each pixel
  centre: albedo, world normal, camera depth, segmentation, diffuse shading
  and light visibility of the front-most surface whose opacity is at least
  1/2 (exact per-pixel values, no blending across edges).

All colours here are linear; :func:`to_display` applies the tone curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.data.studio.head_parts import StudioHead
from headforge.data.studio.lights import LightRig
from headforge.data.studio.materials import SEGMENT_IDS
from headforge.data.studio.scene import ATTRIBUTE_SLICES, Identity, MeshLayer, PosedScene, is_two_sided
from headforge.data.studio.shading import diffuse_shading, specular_shading
from headforge.data.studio.shadows import ShadowMap, render_shadow_map
from headforge.data.studio.surfaces import evaluate_surfaces
from headforge.raster import interpolate, perspective_screen_vertices, rasterize, resolve_supersampled

__all__ = ["ViewPasses", "render_view", "scene_shadow_map", "to_display", "DISPLAY_GAMMA", "SHADOW_REGION"]

DISPLAY_GAMMA = 2.2
#: Centre and half size (world units) of the square every shadow map covers: head, hair and shoulders.
SHADOW_REGION = ((0.0, -0.05, 0.0), 0.55)
#: Opacity from which a hair shell counts as the visible surface in the maps.
MAP_ALPHA_THRESHOLD = 0.5


@dataclass
class ViewPasses:
    """One rendered view (all (R, R, ...) at the output resolution, linear values).

    Attributes:
        color: (R, R, 3) antialiased image before tone mapping.
        coverage: (R, R) fraction of image samples showing the subject (not the background).
        albedo: (R, R, 3) reflectance of the front surface (0 on background).
        normal: (R, R, 3) world unit normal (0 on background).
        depth: (R, R) camera-space z, world units (0 on background).
        segment: (R, R) long segmentation class.
        shading: (R, R, 3) diffuse shading (white-albedo reflected radiance, shadows included).
        visibility: (R, R) visibility of the rig's shadowed lights (product; 1 on background).
    """

    color: Tensor
    coverage: Tensor
    albedo: Tensor
    normal: Tensor
    depth: Tensor
    segment: Tensor
    shading: Tensor
    visibility: Tensor


def to_display(linear: Tensor, gamma: float = DISPLAY_GAMMA) -> Tensor:
    """Linear [0, inf) -> display [0, 1]: clip at 1, then ``x ** (1 / gamma)``."""
    return linear.clamp(0.0, 1.0) ** (1.0 / gamma)


def scene_shadow_map(scene: PosedScene, rig: LightRig, resolution: int) -> list[ShadowMap | None]:
    """One shadow map per light of the rig that casts shadows (None for the others)."""
    vertices, faces = scene.casters
    centre, extent = SHADOW_REGION
    maps: list[ShadowMap | None] = []
    for index in range(rig.directions.shape[0]):
        if bool(rig.shadowed[index]):
            maps.append(render_shadow_map(vertices, faces, rig.directions[index].to(vertices), resolution, extent,
                                          torch.tensor(centre, dtype=vertices.dtype)))
        else:
            maps.append(None)
    return maps


@dataclass
class _Shaded:
    """Shaded samples of one layer: flat sample indices and their values."""

    index: Tensor
    depth: Tensor
    color: Tensor
    alpha: Tensor
    albedo: Tensor
    normal: Tensor
    segment: Tensor
    shading: Tensor
    visibility: Tensor


def _shade_layer(head: StudioHead, identity: Identity, scene: PosedScene, layer: MeshLayer, batch: int,
                 fragments, select: Tensor, camera_position: Tensor, rig: LightRig,
                 shadow_maps: list[ShadowMap | None]) -> _Shaded:
    """Shade the samples ``select`` (H, W) bool of layer item ``batch``."""
    rows, cols = select.nonzero(as_tuple=True)
    width = select.shape[1]
    face = fragments.face_id[batch, rows, cols]
    corners = layer.corners[batch][face]  # (N, 3, 12)
    bary = fragments.bary[batch, rows, cols]
    attributes = torch.einsum("nk,nkc->nc", bary, corners)
    world = attributes[:, ATTRIBUTE_SLICES["world"]]
    normal = F.normalize(attributes[:, ATTRIBUTE_SLICES["normal"]], dim=-1)
    material = layer.materials[face]
    view = F.normalize(camera_position[None] - world, dim=-1)
    flip = is_two_sided(material) & ((normal * view).sum(-1) < 0)
    normal = torch.where(flip[:, None], -normal, normal)
    fraction = None if layer.fractions is None else float(layer.fractions[batch])
    surface = evaluate_surfaces(identity.look, head, material, attributes[:, ATTRIBUTE_SLICES["coords"]],
                                attributes[:, 9], attributes[:, ATTRIBUTE_SLICES["uv"]], world, fraction)
    cast = world.new_ones(world.shape[0], rig.directions.shape[0])
    for light, shadow in enumerate(shadow_maps):
        if shadow is not None:
            cast[:, light] = shadow.visibility(world, normal)
    shading, visibility = diffuse_shading(normal, rig, cast)
    tangent = F.normalize(surface.tangent @ scene.head_rotation.T.to(world), dim=-1)
    tangent = F.normalize(tangent - (tangent * normal).sum(-1, keepdim=True) * normal, dim=-1)
    specular = specular_shading(normal, view, rig, visibility, surface.strength, surface.shininess, tangent,
                                surface.strand)
    color = surface.albedo * shading + specular
    shadowed = rig.shadowed.to(world.device)
    light_visibility = torch.where(shadowed[None], visibility, torch.ones_like(visibility)).prod(-1)
    return _Shaded(rows * width + cols, fragments.depth[batch, rows, cols], color, surface.alpha, surface.albedo,
                   normal, surface.segment, shading, light_visibility)


def render_view(head: StudioHead, identity: Identity, scene: PosedScene, cam2world: Tensor, intrinsics: Tensor,
                rig: LightRig, shadow_maps: list[ShadowMap | None], background: Tensor, resolution: int,
                supersample: int = 2, with_maps: bool = True) -> ViewPasses:
    """Render one view.

    Args:
        head, identity, scene: what to draw.
        cam2world: (4, 4) OpenCV camera pose; intrinsics: (3, 3) normalised.
        rig: the lights; shadow_maps: from :func:`scene_shadow_map`.
        background: (R, R, 3) linear background image.
        resolution: output size R.
        supersample: samples per pixel along each axis for the image pass.
        with_maps: also run the maps pass (else the map fields are empty tensors).
    """
    camera_position = cam2world[:3, 3]
    passes = {}
    for name, factor in (("image", supersample), ("maps", 1)):
        if name == "maps" and not with_maps:
            break
        size = resolution * factor
        count = size * size
        bg = background.repeat_interleave(factor, 0).repeat_interleave(factor, 1).reshape(count, 3)
        color = bg.clone()
        albedo = bg.new_zeros(count, 3)
        normal = bg.new_zeros(count, 3)
        depth = bg.new_full((count,), float("inf"))
        segment = torch.full((count,), SEGMENT_IDS["background"], dtype=torch.long)
        shading = bg.new_zeros(count, 3)
        visibility = bg.new_ones(count)
        subject = bg.new_zeros(count)

        def rasterize_layer(layer: MeshLayer, cull: bool):
            screen = perspective_screen_vertices(layer.vertices, cam2world[None], intrinsics[None], resolution,
                                                 resolution) * layer.vertices.new_tensor([factor, factor, 1.0])
            return rasterize(screen, layer.faces, size, size, cull_backfaces=cull)

        opaque_fragments = rasterize_layer(scene.opaque, cull=False)
        select = opaque_fragments.mask[0]
        shaded = _shade_layer(head, identity, scene, scene.opaque, 0, opaque_fragments, select, camera_position, rig,
                              shadow_maps)
        index = shaded.index
        color[index], albedo[index], normal[index] = shaded.color, shaded.albedo, shaded.normal
        depth[index], segment[index], shading[index] = shaded.depth, shaded.segment, shaded.shading
        visibility[index] = shaded.visibility
        subject[index] = 1.0
        opaque_depth = opaque_fragments.depth[0]
        if scene.shells is not None:
            shell_fragments = rasterize_layer(scene.shells, cull=True)
            for k in range(scene.shells.vertices.shape[0]):
                select = shell_fragments.mask[k] & (shell_fragments.depth[k] < opaque_depth - 1e-5)
                if not select.any():
                    continue
                shell = _shade_layer(head, identity, scene, scene.shells, k, shell_fragments, select,
                                     camera_position, rig, shadow_maps)
                index, alpha = shell.index, shell.alpha[:, None]
                color[index] = alpha * shell.color + (1.0 - alpha) * color[index]
                subject[index] = alpha[:, 0] + (1.0 - alpha[:, 0]) * subject[index]
                front = shell.alpha >= MAP_ALPHA_THRESHOLD
                index = index[front]
                albedo[index], normal[index], depth[index] = shell.albedo[front], shell.normal[front], shell.depth[front]
                segment[index], shading[index] = shell.segment[front], shell.shading[front]
                visibility[index] = shell.visibility[front]
        passes[name] = (color, subject, albedo, normal, depth, segment, shading, visibility)

    color, subject = passes["image"][0], passes["image"][1]
    size = resolution * supersample
    color = resolve_supersampled(color.reshape(1, size, size, 3), supersample)[0]
    coverage = resolve_supersampled(subject.reshape(1, size, size, 1), supersample)[0, ..., 0]
    if not with_maps:
        empty = color.new_zeros(0)
        return ViewPasses(color, coverage, empty, empty, empty, empty.long(), empty, empty)
    _, _, albedo, normal, depth, segment, shading, visibility = passes["maps"]
    shape = (resolution, resolution)
    depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
    return ViewPasses(color, coverage, albedo.reshape(*shape, 3), normal.reshape(*shape, 3), depth.reshape(shape),
                      segment.reshape(shape), shading.reshape(*shape, 3), visibility.reshape(shape))
