"""The studio's view of a :class:`~headforge.heads.base.HeadModel`: materials and anatomy.

A head model names its vertex regions freely (``REGION_NAMES``). This module
is the one place that maps them to studio materials (by keywords, see
:data:`REGION_KEYWORDS`) and that measures the anatomy the texture painters
and hair builders need from the template: landmark positions, eye centres,
ear positions, the head's centre and extent. Everything else in the studio
works from a :class:`StudioHead`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.data.studio.materials import Material
from headforge.heads.base import HeadModel

__all__ = ["REGION_KEYWORDS", "StudioHead", "region_material", "build_studio_head"]

#: First matching keyword (substring of the lower-cased region name) decides the material.
REGION_KEYWORDS: tuple[tuple[str, int], ...] = (
    ("teeth", Material.TEETH),
    ("tooth", Material.TEETH),
    ("tongue", Material.TONGUE),
    ("gum", Material.GUMS),
    ("mouth", Material.MOUTH_CAVITY),
    ("cavity", Material.MOUTH_CAVITY),
    ("eyeball", Material.EYEBALL),
    ("pupil", Material.EYEBALL),
    ("iris", Material.EYEBALL),
    ("sclera", Material.EYEBALL),
    ("socket", Material.EYE_SOCKET),
    ("neck", Material.NECK),
    ("ear", Material.EAR),
)


def region_material(name: str) -> int:
    """Studio material of a head-model region name (skin when no keyword matches)."""
    lowered = name.lower()
    for keyword, material in REGION_KEYWORDS:
        if keyword in lowered:
            return material
    return Material.SKIN


@dataclass
class StudioHead:
    """Head model + the measurements the studio derives from its template.

    Attributes:
        model: the head model.
        vertex_materials: (V,) long material per vertex.
        face_materials: (F,) long material per face (the most specific of its corners).
        template_landmarks: (70, 3) landmarks of the template (zero shape / expression / pose).
        eye_centres: (2, 3) template eyeball centres, row 0 at +x ("left" eye), row 1 at -x.
        eye_radius: eyeball radius (world units).
        ear_centres: (2, 3) template ear positions (+x, -x).
        centre: (3,) template head centre (between the ears, at eye height).
        crown_y, chin_y: template heights of the top of the head and of the chin.
        neck_bottom_y: lowest template height of the mesh.
        hair_base_faces: (Fh,) long faces that may carry scalp or facial hair (skin only).
        region_features: (V, 2) indicators of the model's "lips" and "nose" regions (zeros when absent).
        has_lip_region: whether the model labels its lips (else lips come from the landmark contour).
        ear_distance: (V,) template distance of every vertex to the nearest ear vertex (inf without ears).
    """

    model: HeadModel
    vertex_materials: Tensor
    face_materials: Tensor
    template_landmarks: Tensor
    eye_centres: Tensor
    eye_radius: float
    ear_centres: Tensor
    centre: Tensor
    crown_y: float
    chin_y: float
    neck_bottom_y: float
    hair_base_faces: Tensor
    region_features: Tensor
    has_lip_region: bool
    ear_distance: Tensor

    @property
    def faces(self) -> Tensor:
        return self.model.faces

    @property
    def template_vertices(self) -> Tensor:
        return self.model.v_template


# When corners of a face disagree, the face takes the material that ranks highest here, so that
# thin parts (eyeballs, teeth, socket linings) keep their own faces.
_MATERIAL_PRIORITY = torch.tensor([0, 1, 2, 9, 8, 6, 10, 7, 0, 0, 0, 0, 0, 0, 8])


def build_studio_head(model: HeadModel) -> StudioHead:
    """Measure ``model``'s template (CPU, float32); see :class:`StudioHead`."""
    model = model.to("cpu").float()
    names = model.REGION_NAMES
    per_region = torch.tensor([region_material(name) for name in names] or [Material.SKIN], dtype=torch.long)
    vertex_materials = (
        per_region[model.vertex_regions.long()]
        if len(names)
        else torch.zeros(model.n_vertices, dtype=torch.long)
    )
    corner_materials = vertex_materials[model.faces.long()]  # (F, 3)
    ranks = _MATERIAL_PRIORITY[corner_materials]
    face_materials = corner_materials.gather(1, ranks.argmax(1, keepdim=True))[:, 0]

    with torch.no_grad():
        output = model()
    template = model.v_template
    if output.landmarks is None:
        raise ValueError("the studio needs a head model with a landmark embedding (70 landmarks)")
    landmarks = output.landmarks[0]

    eyes = vertex_materials == Material.EYEBALL
    if eyes.any():
        left = eyes & (template[:, 0] > 0)
        right = eyes & (template[:, 0] <= 0)
        eye_centres = torch.stack([template[left].mean(0), template[right].mean(0)])
        eye_radius = float((template[left] - eye_centres[0]).norm(dim=-1).mean())
    else:  # no eyeballs: use the iris landmarks, pushed back by a typical eyeball radius
        eye_radius = 0.024
        eye_centres = torch.stack([landmarks[68], landmarks[69]]) - torch.tensor([0.0, 0.0, eye_radius])
        if eye_centres[0, 0] < eye_centres[1, 0]:
            eye_centres = eye_centres.flip(0)

    head_vertices = template[(vertex_materials == Material.SKIN) | (vertex_materials == Material.EAR)]
    ears = vertex_materials == Material.EAR
    if ears.any():
        ear_left = template[ears & (template[:, 0] > 0)].mean(0)
        ear_right = template[ears & (template[:, 0] <= 0)].mean(0)
    else:  # the widest skin points at eye height, a little behind the jaw's top landmarks
        band = head_vertices[(head_vertices[:, 1] - eye_centres[:, 1].mean()).abs() < 0.04]
        ear_left = band[band[:, 0].argmax()]
        ear_right = band[band[:, 0].argmin()]
    ear_centres = torch.stack([ear_left, ear_right])
    eye_y = float(eye_centres[:, 1].mean())
    centre = torch.tensor([0.0, eye_y, float(ear_centres[:, 2].mean())])
    # Ears are thin flaps whose normals swing wildly: hair never grows on them.
    skin_faces = (face_materials == Material.SKIN) & (
        vertex_materials[model.faces.long()] == Material.SKIN
    ).all(1)
    return StudioHead(
        model=model,
        vertex_materials=vertex_materials,
        face_materials=face_materials,
        template_landmarks=landmarks,
        eye_centres=eye_centres,
        eye_radius=eye_radius,
        ear_centres=ear_centres,
        centre=centre,
        crown_y=float(head_vertices[:, 1].max()),
        chin_y=float(landmarks[8, 1]),
        neck_bottom_y=float(template[:, 1].min()),
        hair_base_faces=skin_faces.nonzero()[:, 0],
        region_features=torch.stack([_region_indicator(model, "lips"), _region_indicator(model, "nose")], -1),
        has_lip_region="lips" in names,
        ear_distance=torch.cdist(template, template[ears]).amin(1)
        if ears.any()
        else torch.full((template.shape[0],), float("inf")),
    )


def _region_indicator(model: HeadModel, name: str) -> Tensor:
    """(V,) float 1 on the vertices of region ``name``, zeros if the model has no such region."""
    if name not in model.REGION_NAMES:
        return torch.zeros(model.n_vertices)
    return model.region_mask(name).float()
