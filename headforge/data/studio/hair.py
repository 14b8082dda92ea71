"""Hair: where it grows, its geometry (shells, a hanging curtain, a bun) and its strand texture.

Scalp and facial hair are *shells*: copies of the head's hair-bearing faces
pushed out along the vertex normals to ``K`` heights (fur rendering). Each
shell is drawn with an alpha from a strand pattern; inner shells are dense,
outer ones sparse, so the hair reads as a volume of strands with a soft,
fuzzy silhouette. The scalp under the shells is painted in the hair colour
(``skin_texture.py``). Long styles add a *curtain*: an opaque sheet hanging
from ear height behind and beside the head, following the head's outline
and falling straight down with ragged ends; buns add an ellipsoid.

Strands are a lattice noise sampled across strands at high frequency and
along strands at low frequency. The across-strand coordinate is an angle
around an axis (the crown whorl, the vertical, the bun axis) scaled so that a
full turn is a multiple of the noise period: the pattern wraps without a seam.
All hair geometry is built in the template frame and follows the head's pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.data.studio.appearance import Appearance, HairStyle
from headforge.data.studio.face_regions import beard_mask, interp1d
from headforge.data.studio.head_parts import StudioHead
from headforge.data.studio.materials import Material
from headforge.data.studio.noise import LatticeNoise

__all__ = ["HairGeometry", "scalp_coverage", "build_hair", "StrandSampler", "NOISE_PERIOD"]

#: Period of the strand lattice noise; angular coordinates make whole multiples of it per turn.
NOISE_PERIOD = 32
_STRANDS_PER_TURN = 8 * NOISE_PERIOD  # strand cells around a full turn (a multiple of the period)


def _smoothstep(edge0: float, edge1: float, x: Tensor) -> Tensor:
    t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def scalp_coverage(points: Tensor, head: StudioHead, style: HairStyle) -> Tensor:
    """(N,) in [0, 1]: how much scalp hair grows at template points (N, 3).

    The hairline is a height that depends on the azimuth around the head
    centre (0 = front, +-pi = back): the forehead hairline at the front, a
    recession at the temples, sideburns in front of the ears, an arc over the
    ears and the nape at the back. A fringe lowers the front part.
    """
    if style.thickness <= 0.0:
        return points.new_zeros(points.shape[0])
    relative = points - head.centre.to(points)
    azimuth = torch.atan2(relative[:, 0], relative[:, 2]).abs()
    brow_y = float(head.template_landmarks[17:27, 1].mean())
    ear_y = float(head.ear_centres[:, 1].mean())
    front_y = brow_y + 0.1 + style.hairline
    long_style = style.length > 0.0 or style.name in ("medium", "curly")
    over_ear = ear_y + (0.012 if long_style else 0.05)
    knots_x = torch.tensor([0.0, 0.45, 0.75, 1.2, 1.4, 1.57, 1.85, 2.3, math.pi])
    knots_y = torch.tensor(
        [
            front_y - style.fringe,
            front_y - 0.6 * style.fringe + 0.04 * style.recession,
            front_y - 0.01 + 0.06 * style.recession,
            ear_y + 0.035,
            ear_y - 0.012,
            over_ear,
            ear_y - 0.01,
            ear_y - 0.07,
            head.chin_y + 0.06,
        ]
    )
    hairline = interp1d(azimuth, knots_x.to(points), knots_y.to(points))
    coverage = _smoothstep(-0.004, 0.012, relative[:, 1] + head.centre[1].item() - hairline)
    if style.recession > 0.6:  # thinning crown
        crown = F.normalize(relative, dim=-1)[:, 1]
        coverage = coverage * (1.0 - (style.recession - 0.6) * 2.5 * _smoothstep(0.75, 0.92, crown))
    return coverage


@dataclass
class HairGeometry:
    """Hair of one identity, in the template frame.

    Attributes:
        shell_faces: (Fs, 3) head-vertex indices of the faces that carry shells.
        shell_face_materials: (Fs,) HAIR or FACIAL_HAIR.
        shell_height: (V,) outermost shell offset per head vertex (world units, 0 where no hair).
        shell_coverage: (V,) hair density per head vertex in [0, 1].
        extra_vertices: (Ve, 3) curtain and bun vertices (template frame, follow the head joint).
        extra_faces: (Fe, 3) indices into ``extra_vertices``.
        extra_materials: (Fe,) HAIR_CURTAIN or HAIR_BUN.
        whorl: (3,) unit crown-whorl axis; part: strand sweep (-1 .. 1); curl: 0 .. 1.
        bun_centre: (3,) template-frame centre of the bun (unused without one).
    """

    shell_faces: Tensor
    shell_face_materials: Tensor
    shell_height: Tensor
    shell_coverage: Tensor
    extra_vertices: Tensor
    extra_faces: Tensor
    extra_materials: Tensor
    whorl: Tensor
    part: float
    curl: float
    bun_centre: Tensor

    @property
    def has_shells(self) -> bool:
        return self.shell_faces.shape[0] > 0


def _grid_faces(rows: int, cols: int, offset: int = 0) -> Tensor:
    """Faces (2 (rows-1) (cols-1), 3) of a rows x cols vertex grid (row-major), not wrapped."""
    r, c = torch.meshgrid(torch.arange(rows - 1), torch.arange(cols - 1), indexing="ij")
    a = (r * cols + c).reshape(-1)
    b, d = a + 1, a + cols
    e = d + 1
    return torch.cat([torch.stack([a, d, b], 1), torch.stack([b, d, e], 1)]) + offset


def _curtain(
    head: StudioHead, shaped: Tensor, style: HairStyle, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Vertices (R * C, 3) and faces of long hair: a hood over the back of the skull that falls straight down.

    Each column (an azimuth around the vertical axis through the head centre,
    from one side of the face round the back to the other) follows the
    widest head point above each height, so the sheet hugs the skull on top
    and hangs vertically below its widest point. It sits inside the hair
    shells' volume, whose outer strands stay visible on top of it.
    """
    centre = head.centre
    skin = (head.vertex_materials == Material.SKIN) | (head.vertex_materials == Material.EAR)
    points = shaped[skin]
    relative = points - centre
    azimuth = torch.atan2(relative[:, 0], relative[:, 2])
    radius = torch.hypot(relative[:, 0], relative[:, 2])
    ear_y = float(head.ear_centres[:, 1].mean())
    top_y = head.crown_y + 0.01
    bottom_y = ear_y - style.length
    span = math.radians(112.0 + 16.0 * float(torch.rand((), generator=generator)))
    cols, rows = 48, 40
    column_azimuth = math.pi + torch.linspace(-span, span, cols)
    row_y = torch.linspace(top_y, bottom_y, rows)
    # Widest head point per (row, column): every vertex updates the cells whose azimuth lies within
    # 0.1 rad and whose height within 0.012 of it (a scatter-max over a few neighbouring cells).
    col_step = 2.0 * span / (cols - 1)
    row_step = (top_y - bottom_y) / (rows - 1)
    # Azimuth from the first column, in [-0.5, 2 pi - 0.5): points just before it stay close to it.
    from_first = torch.remainder(azimuth - (math.pi - span) + 0.5, 2 * math.pi) - 0.5
    base_col = torch.round(from_first / col_step).long()
    base_row = torch.round((top_y - points[:, 1]) / row_step).long()
    outline = torch.zeros(rows * cols)
    reach_c, reach_r = int(math.ceil(0.1 / col_step)), int(math.ceil(0.012 / row_step))
    for dc in range(-reach_c, reach_c + 1):
        col = base_col + dc
        near_column = (from_first - col * col_step).abs() < 0.1
        for dr in range(-reach_r, reach_r + 1):
            row = base_row + dr
            near_row = (points[:, 1] - (top_y - row * row_step)).abs() < 0.012
            valid = near_column & near_row & (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
            outline.scatter_reduce_(0, (row * cols + col)[valid], radius[valid], reduce="amax")
    outline = outline.reshape(rows, cols)
    outline = torch.cummax(outline, dim=0).values  # the hair falls straight below the widest point
    outline = F.avg_pool1d(F.pad(outline[None], (2, 2), mode="replicate"), 5, 1)[0]  # smooth across columns
    fall = (ear_y - row_y).clamp(min=0.0)[:, None]
    r = outline + 0.6 * style.thickness + 0.003 + 0.05 * fall
    # Ragged ends: each column stops at its own length; front edges tuck in towards the face.
    ends = 1.0 - 0.2 * torch.rand(cols, generator=generator) * (style.length / 0.3)
    y = torch.where(row_y[:, None] < ear_y, ear_y - (ear_y - row_y)[:, None] * ends[None, :], row_y[:, None])
    edge = (column_azimuth - math.pi).abs() / span
    r = r - 0.012 * _smoothstep(0.8, 1.0, edge)[None, :]
    x = centre[0] + r * torch.sin(column_azimuth)[None, :]
    z = centre[2] + r * torch.cos(column_azimuth)[None, :]
    vertices = torch.stack([x, y.expand(rows, cols), z], dim=-1).reshape(-1, 3)
    return vertices, _grid_faces(rows, cols)


def _bun(
    head: StudioHead, shaped: Tensor, whorl: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Vertices, faces and centre (3,) of an ellipsoidal bun sitting on the head along ``whorl``."""
    skin = (head.vertex_materials == Material.SKIN) | (head.vertex_materials == Material.EAR)
    relative = shaped[skin] - head.centre
    along = (F.normalize(relative, dim=-1) * whorl).sum(-1)
    reach = float((relative[along > 0.97] * whorl).sum(-1).max()) if (along > 0.97).any() else 0.2
    size = 0.045 + 0.03 * float(torch.rand((), generator=generator))
    centre = head.centre + whorl * (reach + 0.6 * size)
    rings, segments = 10, 16
    theta = torch.linspace(0.0, math.pi, rings + 2)[1:-1]
    phi = torch.arange(segments) * (2.0 * math.pi / segments)
    tt, pp = torch.meshgrid(theta, phi, indexing="ij")
    unit = torch.stack([torch.sin(tt) * torch.cos(pp), torch.cos(tt), torch.sin(tt) * torch.sin(pp)], -1)
    unit = unit.reshape(-1, 3) * torch.tensor([1.0, 0.8, 1.0])
    poles = torch.tensor([[0.0, 0.8, 0.0], [0.0, -0.8, 0.0]])
    vertices = torch.cat([unit, poles]) * size + centre
    top, bottom = rings * segments, rings * segments + 1
    faces = []
    for i in range(rings - 1):
        for j in range(segments):
            a, b = i * segments + j, i * segments + (j + 1) % segments
            c, d = a + segments, b + segments
            faces += [[a, b, c], [b, d, c]]
    for j in range(segments):
        faces.append([top, (j + 1) % segments, j])
        base = (rings - 1) * segments
        faces.append([bottom, base + j, base + (j + 1) % segments])
    return vertices, torch.tensor(faces), centre


def build_hair(
    head: StudioHead, shaped: Tensor, appearance: Appearance, generator: torch.Generator
) -> HairGeometry:
    """Hair geometry of an identity.

    Args:
        head: the studio head.
        shaped: (V, 3) the identity's template-frame vertices (shape applied, neutral expression).
        appearance: the identity's appearance (hair style, beard).
        generator: draws the curtain's ragged ends and the bun size.
    """
    style = appearance.hair_style
    template = head.template_vertices
    scalp = scalp_coverage(template, head, style)
    # Hair thins out towards the hairline (over about 3 cm) and is fullest on top of the head.
    taper = scalp_coverage(template + torch.tensor([0.0, -0.02, 0.0]), head, style)
    scalp_height = (
        scalp
        * taper
        * style.thickness
        * (0.55 + 0.45 * _smoothstep(float(head.ear_centres[:, 1].mean()), head.crown_y, template[:, 1]))
    )
    beard = (
        beard_mask(template, head.template_landmarks, head.ear_centres)
        if appearance.beard > 0
        else (torch.zeros_like(scalp))
    )
    beard_height = beard * appearance.beard
    bearing = torch.zeros(template.shape[0], dtype=torch.bool)
    base_faces = head.faces[head.hair_base_faces]
    bearing[base_faces.reshape(-1)] = True
    # Keep hair off the ears and their base, where normals swing and shells would stick out as spikes.
    clear_of_ears = _smoothstep(0.008, 0.025, head.ear_distance)
    bearing_scale = bearing.to(scalp.dtype) * clear_of_ears
    height = bearing_scale * torch.maximum(scalp_height, beard_height)
    coverage = bearing_scale * torch.maximum(scalp, beard)
    face_height = height[base_faces].amax(1)
    keep = face_height > 1e-4
    shell_faces = base_faces[keep]
    is_beard = beard_height[shell_faces].amax(1) > scalp_height[shell_faces].amax(1)
    shell_materials = torch.where(is_beard, Material.FACIAL_HAIR, Material.HAIR)

    extra_vertices, extra_faces, extra_materials = [], [], []
    count = 0
    bun_centre = head.centre.clone()
    if style.length > 0.0:
        vertices, faces = _curtain(head, shaped, style, generator)
        extra_vertices.append(vertices)
        extra_faces.append(faces + count)
        extra_materials.append(torch.full((faces.shape[0],), Material.HAIR_CURTAIN))
        count += vertices.shape[0]
    if style.name == "bun":
        vertices, faces, bun_centre = _bun(head, shaped, style.whorl, generator)
        extra_vertices.append(vertices)
        extra_faces.append(faces + count)
        extra_materials.append(torch.full((faces.shape[0],), Material.HAIR_BUN))
        count += vertices.shape[0]
    return HairGeometry(
        shell_faces=shell_faces,
        shell_face_materials=shell_materials,
        shell_height=height,
        shell_coverage=coverage,
        extra_vertices=torch.cat(extra_vertices) if extra_vertices else torch.zeros(0, 3),
        extra_faces=torch.cat(extra_faces) if extra_faces else torch.zeros(0, 3, dtype=torch.long),
        extra_materials=torch.cat(extra_materials) if extra_materials else torch.zeros(0, dtype=torch.long),
        whorl=style.whorl,
        part=style.part,
        curl=style.curl,
        bun_centre=bun_centre,
    )


class StrandSampler:
    """Strand pattern of hair pixels: density (alpha source), tone (colour variation) and tangent.

    Args:
        noise: lattice noise with period :data:`NOISE_PERIOD`.
        head: the studio head (centre of the scalp coordinates).
        hair: the identity's hair (whorl axis, part, curl).
    """

    def __init__(self, noise: LatticeNoise, head: StudioHead, hair: HairGeometry) -> None:
        if noise.period != NOISE_PERIOD:
            raise ValueError(f"strand noise needs period {NOISE_PERIOD}, got {noise.period}")
        self.noise = noise
        self.centre = head.centre
        self.axis = F.normalize(hair.whorl, dim=0)
        helper = torch.tensor([1.0, 0.0, 0.0])
        self.b1 = F.normalize(helper - (helper @ self.axis) * self.axis, dim=0)
        self.b2 = torch.linalg.cross(self.axis, self.b1)
        self.part = hair.part
        self.curl = hair.curl
        self.bun_centre = hair.bun_centre

    def _angles(
        self, relative: Tensor, axis: Tensor, b1: Tensor, b2: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Azimuth around ``axis``, polar angle from it and the away-from-axis tangent, for (N, 3) offsets."""
        direction = F.normalize(relative, dim=-1)
        cosine = (direction * axis).sum(-1).clamp(-1.0, 1.0)
        polar = torch.acos(cosine)
        azimuth = torch.atan2((direction * b2).sum(-1), (direction * b1).sum(-1))
        tangent = F.normalize(direction * cosine[:, None] - axis[None], dim=-1)
        return azimuth, polar, tangent

    def sample(self, material: Tensor, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Strand density (N,) in [0, 1], tone (N,) in [0, 1] and template-frame tangent (N, 3).

        Args:
            material: (N,) hair material of each pixel.
            coords: (N, 3) template-frame positions.
        """
        dtype = coords.dtype
        relative = coords - self.centre.to(coords)
        across = torch.zeros_like(relative[:, 0])
        along = torch.zeros_like(across)
        tangent = torch.zeros_like(relative)
        scalp = material == Material.HAIR
        if scalp.any():
            azimuth, polar, tan = self._angles(
                relative[scalp], self.axis.to(coords), self.b1.to(coords), self.b2.to(coords)
            )
            azimuth = azimuth + self.part * 0.5 * torch.sin(polar)  # strands sweep sideways as they fall
            across[scalp] = azimuth / (2 * math.pi) * _STRANDS_PER_TURN
            along[scalp] = polar * 5.0
            tangent[scalp] = tan
        vertical = (material == Material.HAIR_CURTAIN) | (material == Material.FACIAL_HAIR)
        if vertical.any():
            azimuth = torch.atan2(relative[vertical, 0], relative[vertical, 2])
            facial = material[vertical] == Material.FACIAL_HAIR
            turns = torch.where(facial, torch.full_like(azimuth, 4.0), torch.ones_like(azimuth))
            across[vertical] = azimuth / (2 * math.pi) * _STRANDS_PER_TURN * turns
            along[vertical] = relative[vertical, 1] * torch.where(
                facial, torch.full_like(azimuth, 90.0), torch.full_like(azimuth, 7.0)
            )
            tangent[vertical] = torch.tensor([0.0, -1.0, 0.0], dtype=dtype)
        bun = material == Material.HAIR_BUN
        if bun.any():
            # Strands wind around the bun's own axis (the whorl direction through the bun centre).
            local = coords[bun] - self.bun_centre.to(coords)
            axis, b1, b2 = self.axis.to(coords), self.b1.to(coords), self.b2.to(coords)
            azimuth, polar, tan = self._angles(local, axis, b1, b2)
            across[bun] = azimuth / (2 * math.pi) * _STRANDS_PER_TURN / 2
            along[bun] = polar * 3.0
            tangent[bun] = torch.linalg.cross(tan, axis[None].expand_as(tan))
        across = across + self.curl * 3.0 * torch.sin(along * (2.0 + 10.0 * self.curl))
        fine = self.noise(torch.stack([across, along, torch.full_like(across, 0.5)], -1))
        clumps = self.noise(torch.stack([across / 8.0, along * 0.5, torch.full_like(across, 11.5)], -1))
        density = (0.6 * fine + 0.4 * clumps - 0.5) * 2.2 + 0.5
        tone = self.noise(torch.stack([across * 0.5, along * 0.25, torch.full_like(across, 21.5)], -1))
        return density.clamp(0.0, 1.0), tone, tangent
