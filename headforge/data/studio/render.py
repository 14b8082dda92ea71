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
from headforge.raster import Fragments, perspective_screen_vertices, rasterize, resolve_supersampled

__all__ = ["DISPLAY_GAMMA", "SHADOW_REGION", "ViewPasses", "render_view", "scene_shadow_map", "to_display"]

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
    centre_t = torch.tensor(centre, dtype=vertices.dtype, device=vertices.device)
    maps: list[ShadowMap | None] = []
    for index in range(rig.directions.shape[0]):
        if bool(rig.shadowed[index]):
            direction = rig.directions[index].to(vertices)
            maps.append(render_shadow_map(vertices, faces, direction, resolution, extent, centre_t))
        else:
            maps.append(None)
    return maps


@dataclass
class _View:
    """Everything fixed while one view is rendered."""

    head: StudioHead
    identity: Identity
    scene: PosedScene
    cam2world: Tensor
    intrinsics: Tensor
    rig: LightRig
    shadow_maps: list[ShadowMap | None]
    resolution: int

    def rasterize(self, layer: MeshLayer, factor: int, cull: bool) -> Fragments:
        """Rasterize a layer at ``factor`` x the output resolution."""
        size = self.resolution * factor
        screen = perspective_screen_vertices(
            layer.vertices, self.cam2world[None], self.intrinsics[None], self.resolution, self.resolution
        )
        screen = screen * layer.vertices.new_tensor([factor, factor, 1.0])
        return rasterize(screen, layer.faces, size, size, cull_backfaces=cull)


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


def _shade_layer(view: _View, layer: MeshLayer, batch: int, fragments: Fragments, select: Tensor) -> _Shaded:
    """Shade the samples ``select`` (H, W) bool of layer item ``batch``."""
    rows, cols = select.nonzero(as_tuple=True)
    width = select.shape[1]
    face = fragments.face_id[batch, rows, cols]
    bary = fragments.bary[batch, rows, cols]
    attributes = torch.einsum("nk,nkc->nc", bary, layer.corners[batch][face])
    world = attributes[:, ATTRIBUTE_SLICES["world"]]
    normal = F.normalize(attributes[:, ATTRIBUTE_SLICES["normal"]], dim=-1)
    material = layer.materials[face]
    to_camera = F.normalize(view.cam2world[:3, 3][None] - world, dim=-1)
    flip = is_two_sided(material) & ((normal * to_camera).sum(-1) < 0)
    normal = torch.where(flip[:, None], -normal, normal)
    fraction = None if layer.fractions is None else float(layer.fractions[batch])
    surface = evaluate_surfaces(
        view.identity.look,
        view.head,
        material,
        attributes[:, ATTRIBUTE_SLICES["coords"]],
        attributes[:, ATTRIBUTE_SLICES["aux"]][:, 0],
        attributes[:, ATTRIBUTE_SLICES["uv"]],
        world,
        fraction,
    )
    rig = view.rig
    cast = world.new_ones(world.shape[0], rig.directions.shape[0])
    for light, shadow in enumerate(view.shadow_maps):
        if shadow is not None:
            # Surfaces turned away from the light are dark anyway (attached shadow): skip their lookups.
            facing = (normal * rig.directions[light].to(normal)).sum(-1) > -0.2
            cast[facing, light] = shadow.visibility(world[facing], normal[facing])
    shading, visibility = diffuse_shading(normal, rig, cast)
    # Strand directions are painted in the template frame; the head joint carries them into the world.
    tangent = F.normalize(surface.tangent @ view.scene.head_rotation.T.to(world), dim=-1)
    tangent = F.normalize(tangent - (tangent * normal).sum(-1, keepdim=True) * normal, dim=-1)
    specular = specular_shading(
        normal, to_camera, rig, visibility, surface.strength, surface.shininess, tangent, surface.strand
    )
    shadowed = rig.shadowed.to(world.device)[None]
    light_visibility = torch.where(shadowed, visibility, torch.ones_like(visibility)).prod(-1)
    return _Shaded(
        index=rows * width + cols,
        depth=fragments.depth[batch, rows, cols],
        color=surface.albedo * shading + specular,
        alpha=surface.alpha,
        albedo=surface.albedo,
        normal=normal,
        segment=surface.segment,
        shading=shading,
        visibility=light_visibility,
    )


class _Buffers:
    """Flat per-sample buffers of one pass: blended colour, maps of the front-most opaque surface."""

    def __init__(self, background: Tensor) -> None:
        count = background.shape[0]
        self.color = background.clone()
        self.subject = background.new_zeros(count)
        self.albedo = background.new_zeros(count, 3)
        self.normal = background.new_zeros(count, 3)
        self.depth = background.new_full((count,), float("inf"))
        self.segment = torch.full((count,), SEGMENT_IDS["background"], dtype=torch.long)
        self.shading = background.new_zeros(count, 3)
        self.visibility = background.new_ones(count)

    def blend(self, shaded: _Shaded) -> None:
        """Composite ``shaded`` over the buffers ("over" for colour; maps where alpha >= 1/2)."""
        index, alpha = shaded.index, shaded.alpha[:, None]
        self.color[index] = alpha * shaded.color + (1.0 - alpha) * self.color[index]
        self.subject[index] = alpha[:, 0] + (1.0 - alpha[:, 0]) * self.subject[index]
        front = shaded.alpha >= MAP_ALPHA_THRESHOLD
        index = index[front]
        self.albedo[index], self.normal[index] = shaded.albedo[front], shaded.normal[front]
        self.depth[index], self.segment[index] = shaded.depth[front], shaded.segment[front]
        self.shading[index], self.visibility[index] = shaded.shading[front], shaded.visibility[front]


def _render_pass(view: _View, background: Tensor, factor: int) -> _Buffers:
    """All samples of one pass at ``factor`` x the output resolution (flat buffers, row-major)."""
    size = view.resolution * factor
    upsampled = background.repeat_interleave(factor, 0).repeat_interleave(factor, 1).reshape(size * size, 3)
    buffers = _Buffers(upsampled)
    # Every opaque surface is closed or listed with both windings: back faces can be culled.
    opaque = view.rasterize(view.scene.opaque, factor, cull=True)
    buffers.blend(_shade_layer(view, view.scene.opaque, 0, opaque, opaque.mask[0]))
    shells = view.scene.shells
    if shells is not None:
        fragments = view.rasterize(shells, factor, cull=True)
        for k in range(shells.vertices.shape[0]):  # innermost first: each shell lies over the previous ones
            select = fragments.mask[k] & (fragments.depth[k] < opaque.depth[0] - 1e-5)
            if select.any():
                buffers.blend(_shade_layer(view, shells, k, fragments, select))
    return buffers


def render_view(
    head: StudioHead,
    identity: Identity,
    scene: PosedScene,
    cam2world: Tensor,
    intrinsics: Tensor,
    rig: LightRig,
    shadow_maps: list[ShadowMap | None],
    background: Tensor,
    resolution: int,
    supersample: int = 2,
) -> ViewPasses:
    """Render one view.

    Args:
        head, identity, scene: what to draw.
        cam2world: (4, 4) OpenCV camera pose; intrinsics: (3, 3) normalised.
        rig: the lights; shadow_maps: from :func:`scene_shadow_map`.
        background: (R, R, 3) linear background image.
        resolution: output size R.
        supersample: samples per pixel along each axis for the image pass.
    """
    view = _View(head, identity, scene, cam2world, intrinsics, rig, shadow_maps, resolution)
    image = _render_pass(view, background, supersample)
    size = resolution * supersample
    color = resolve_supersampled(image.color.reshape(1, size, size, 3), supersample)[0]
    coverage = resolve_supersampled(image.subject.reshape(1, size, size, 1), supersample)[0, ..., 0]
    maps = image if supersample == 1 else _render_pass(view, background, 1)
    shape = (resolution, resolution)
    depth = torch.where(torch.isfinite(maps.depth), maps.depth, torch.zeros_like(maps.depth))
    return ViewPasses(
        color=color,
        coverage=coverage,
        albedo=maps.albedo.reshape(*shape, 3),
        normal=maps.normal.reshape(*shape, 3),
        depth=depth.reshape(shape),
        segment=maps.segment.reshape(shape),
        shading=maps.shading.reshape(*shape, 3),
        visibility=maps.visibility.reshape(shape),
    )
