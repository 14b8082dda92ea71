"""Assemble what one image shows: an identity (built once) posed into meshes ready to rasterize.

* :func:`build_identity` - shape, appearance, skin texture, hair and torso
  of one person (deterministic from its generator; cached by the runner).
* :func:`pose_scene` - the head model posed with an expression and a pose,
  the hair and torso placed around it, as an opaque mesh plus a stack of hair
  shells, each face with a material and per-corner attributes.

Per-corner attribute channels (:data:`ATTRIBUTE_SLICES`): world position,
world normal, template-frame position ("coords": what textures are painted
on), an auxiliary value (hair coverage on shells) and the UV.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.data.studio.appearance import Appearance, sample_appearance
from headforge.data.studio.body import build_body
from headforge.data.studio.hair import NOISE_PERIOD, HairGeometry, StrandSampler, build_hair
from headforge.data.studio.head_parts import StudioHead
from headforge.data.studio.materials import Material
from headforge.data.studio.noise import LatticeNoise
from headforge.data.studio.skin_texture import SkinLayout, paint_skin_texture
from headforge.data.studio.surfaces import IdentityLook
from headforge.data.studio.uv_atlas import UVAtlas
from headforge.raster import vertex_normals

__all__ = ["ATTRIBUTE_SLICES", "Identity", "MeshLayer", "PosedScene", "build_identity", "pose_scene"]

ATTRIBUTE_SLICES = {
    "world": slice(0, 3),
    "normal": slice(3, 6),
    "coords": slice(6, 9),
    "aux": slice(9, 10),
    "uv": slice(10, 12),
}
_ATTRIBUTE_COUNT = 12
#: Height of the innermost shell above the skin (avoids depth fighting with the scalp).
_SHELL_LIFT = 0.0015


@dataclass
class Identity:
    """One synthetic person.

    Attributes:
        shape: (n_shape,) head-model shape coefficients.
        appearance: sampled colours and styles.
        look: per-pixel evaluation data (texture, strands, torso).
        hair: hair geometry in the template frame.
    """

    shape: Tensor
    appearance: Appearance
    look: IdentityLook
    hair: HairGeometry


@dataclass
class MeshLayer:
    """Triangles with per-corner attributes, rasterized together.

    Attributes:
        vertices: (B, V, 3) world positions (B = 1 for the opaque layer, K shells otherwise).
        faces: (F, 3).
        corners: (B, F, 3, 12) per-corner attributes (:data:`ATTRIBUTE_SLICES`).
        materials: (F,) material per face.
        fractions: (B,) shell height fractions (shells) or None (opaque).
    """

    vertices: Tensor
    faces: Tensor
    corners: Tensor
    materials: Tensor
    fractions: Tensor | None = None


@dataclass
class PosedScene:
    """A posed identity ready to render.

    Attributes:
        opaque: head, curtain / bun and torso.
        shells: hair shells, or None for bald identities.
        casters: (vertices (V, 3), faces (F, 3)) of the shadow-casting surfaces.
        head_rotation: (3, 3) rotation of the head joint (template frame -> world).
        landmarks: (70, 3) world landmarks.
    """

    opaque: MeshLayer
    shells: MeshLayer | None
    casters: tuple[Tensor, Tensor]
    head_rotation: Tensor
    landmarks: Tensor


def build_identity(
    head: StudioHead, atlas: UVAtlas, layout: SkinLayout, generator: torch.Generator, shape_scale: float = 1.0
) -> Identity:
    """Draw an identity: shape, appearance, skin texture, hair and torso, all from ``generator``."""
    model = head.model
    shape = model.sample_shape(1, generator=generator, scale=shape_scale)[0].cpu()
    appearance = sample_appearance(generator)
    with torch.no_grad():
        shaped = model.shaped_vertices(shape[None], torch.zeros(1, model.n_expression))[0]
    hair = build_hair(head, shaped, appearance, generator)
    body = build_body(head, shaped, appearance, generator)
    texture = paint_skin_texture(head, atlas, layout, appearance, generator)
    noise = LatticeNoise(generator, period=NOISE_PERIOD)
    pupil_angle = 0.15 + 0.06 * float(torch.rand((), generator=generator))
    look = IdentityLook(appearance, texture, StrandSampler(noise, head, hair), body, noise, pupil_angle)
    return Identity(shape, appearance, look, hair)


def _corners(
    world: Tensor,
    normals: Tensor,
    coords: Tensor,
    aux: Tensor,
    faces: Tensor,
    uv_corners: Tensor | None = None,
) -> Tensor:
    """(F, 3, 12) per-corner attributes from per-vertex ones (V, .) and faces (F, 3)."""
    per_vertex = torch.cat([world, normals, coords, aux[:, None]], dim=-1)[faces]  # (F, 3, 10)
    uv = uv_corners if uv_corners is not None else per_vertex.new_zeros(faces.shape[0], 3, 2)
    return torch.cat([per_vertex, uv], dim=-1)


def pose_scene(
    head: StudioHead, identity: Identity, expression: Tensor, pose: Tensor, shell_count: int
) -> PosedScene:
    """Pose the head and place hair and torso around it.

    Args:
        head: the studio head.
        identity: the person.
        expression: (n_expression,) coefficients.
        pose: (15,) axis-angle pose (docs/head_model.md).
        shell_count: number of hair shells K.
    """
    model = head.model
    with torch.no_grad():
        output = model(identity.shape[None], expression[None], pose[None])
    vertices = output.vertices[0]
    faces = model.faces.long()
    normals = vertex_normals(vertices, faces)
    template = model.v_template
    head_transform = output.joint_transforms[0, 1]  # the neck joint carries the skull
    rotation, translation = head_transform[:3, :3], head_transform[:3, 3]
    zeros = vertices.new_zeros(vertices.shape[0])
    uv_corners = model.uv_coords[model.uv_faces.long()]

    layers_vertices = [vertices]
    layers_corners = [_corners(vertices, normals, template, zeros, faces, uv_corners)]
    layers_faces = [faces]
    layers_materials = [head.face_materials]
    offset = vertices.shape[0]
    hair = identity.hair
    if hair.extra_vertices.shape[0]:
        extra_world = hair.extra_vertices @ rotation.T + translation
        extra_normals = vertex_normals(extra_world, hair.extra_faces)
        # Two-sided sheets are listed twice, once per winding, so the layer can cull back faces.
        two_sided = is_two_sided(hair.extra_materials)
        extra_faces = torch.cat([hair.extra_faces, hair.extra_faces[two_sided][:, [0, 2, 1]]])
        extra_materials = torch.cat([hair.extra_materials, hair.extra_materials[two_sided]])
        layers_vertices.append(extra_world)
        layers_corners.append(
            _corners(
                extra_world, extra_normals, hair.extra_vertices, torch.ones(extra_world.shape[0]), extra_faces
            )
        )
        layers_faces.append(extra_faces + offset)
        layers_materials.append(extra_materials)
        offset += extra_world.shape[0]
    body = identity.look.body
    body_normals = vertex_normals(body.vertices, body.faces)
    layers_vertices.append(body.vertices)
    layers_corners.append(
        _corners(body.vertices, body_normals, body.vertices, torch.zeros(body.vertices.shape[0]), body.faces)
    )
    layers_faces.append(body.faces + offset)
    layers_materials.append(body.face_materials)

    all_vertices = torch.cat(layers_vertices)
    all_faces = torch.cat(layers_faces)
    opaque = MeshLayer(
        all_vertices[None], all_faces, torch.cat(layers_corners)[None], torch.cat(layers_materials)
    )

    shells = None
    if hair.has_shells and shell_count > 0:
        fractions = torch.arange(1, shell_count + 1, dtype=vertices.dtype) / shell_count
        heights = _SHELL_LIFT + hair.shell_height[None, :] * fractions[:, None]  # (K, V)
        shell_vertices = vertices[None] + normals[None] * heights[..., None]
        corners = torch.stack(
            [
                _corners(shell_vertices[k], normals, template, hair.shell_coverage, hair.shell_faces)
                for k in range(shell_count)
            ]
        )
        shells = MeshLayer(shell_vertices, hair.shell_faces, corners, hair.shell_face_materials, fractions)
    # The sheet-like curtain is hollow but opaque; hair shells are see-through and cast no shadow.
    return PosedScene(opaque, shells, (all_vertices, all_faces), rotation, output.landmarks[0])


def is_two_sided(materials: Tensor) -> Tensor:
    """(N,) bool, materials drawn from both sides (the hair curtain)."""
    return materials == Material.HAIR_CURTAIN
