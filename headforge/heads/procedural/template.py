"""Build (once per process) the procedural head's template, blendshapes and labels.

Everything is computed in float64 from the fixed nominal parameters, with
no randomness, so the result is the same on every machine; the model casts
to float32. ``build_template`` is cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from headforge.heads.procedural.assembly import (
    EYE_NAMES,
    MeshParts,
    assemble_vertices,
    build_parts,
    eye_centre,
)
from headforge.heads.procedural.expressions import EXPRESSION_COMPONENTS, ExpressionContext
from headforge.heads.procedural.landmarks import landmark_vertices
from headforge.heads.procedural.params import NOMINAL
from headforge.heads.procedural.regions import vertex_regions
from headforge.heads.procedural.shape_components import SHAPE_COMPONENTS, regional_offsets
from headforge.heads.procedural.skinning import PARENTS, joint_regressor, lip_side, skinning_weights
from headforge.heads.procedural.surface import (
    HeadLayout,
    HeadSurfaceBuilder,
    LidState,
    build_layout,
    lid_warp,
)
from headforge.heads.procedural.uv import uv_layout

__all__ = ["ProceduralTemplate", "build_template"]

#: Forward-difference step for shape components, in standard deviations.
_SHAPE_STEP = 0.5
_REGIONAL = (
    "eye_spacing_offset",
    "eye_height_offset",
    "eye_scale",
    "mouth_width_scale",
    "mouth_height_offset",
    "ear_scale",
    "ear_height_offset",
    "ear_depth_offset",
)


@dataclass
class ProceduralTemplate:
    """All static arrays of the procedural head (float64 / int64 numpy).

    Shapes: vertices (V, 3); faces (F, 3); shapedirs (V, 3, S); exprdirs
    (V, 3, E); lbs_weights (V, 5); joint_regressor (5, V); parents (5,);
    uv_coords (T, 2); uv_faces (F, 3); regions (V,); landmarks (70,) vertex ids.
    """

    vertices: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    lbs_weights: np.ndarray
    joint_regressor: np.ndarray
    parents: np.ndarray
    uv_coords: np.ndarray
    uv_faces: np.ndarray
    regions: np.ndarray
    landmarks: np.ndarray
    layout: HeadLayout
    mesh: MeshParts


class _Builder:
    """Full mesh for any geometry / lid state near the nominal one."""

    def __init__(self, layout: HeadLayout, mesh: MeshParts) -> None:
        self.layout, self.mesh = layout, mesh
        self.surface = HeadSurfaceBuilder(layout, NOMINAL)
        head = self.surface(NOMINAL)
        self.open_rims = {
            name: head[layout.topology.loops[name].vertices] - eye_centre(NOMINAL, name) for name in EYE_NAMES
        }
        nominal = assemble_vertices(layout, mesh, NOMINAL, head, self.open_rims)
        self.nominal = nominal
        # Regional offsets use the nominal eye and mouth positions as their fixed frame.
        self.eye_centres = {name: eye_centre(NOMINAL, name) for name in EYE_NAMES}
        slit = layout.slits["mouth"]
        mid = layout.topology.grid_index[slit.row, layout.topology.n_cols // 2]
        self.mouth_y, self.mouth_z = float(nominal[mid, 1]), float(nominal[mid, 2])

    def __call__(self, g: dict[str, float], lids: LidState = LidState()) -> np.ndarray:  # noqa: B008 - frozen
        only_regional = lids == LidState() and all(g[k] == NOMINAL[k] for k in NOMINAL if k not in _REGIONAL)
        if only_regional:
            verts = self.nominal  # regional offsets act after construction: nothing else to rebuild
        else:
            verts = assemble_vertices(self.layout, self.mesh, g, self.surface(g, lids), self.open_rims)
        return verts + regional_offsets(verts, g, self.eye_centres, self.mouth_y, self.mouth_z)


@functools.lru_cache(maxsize=2)
def build_template(n_rows: int = 108, n_cols: int = 152) -> ProceduralTemplate:
    """Construct the procedural head (about a second; cached per grid size)."""
    layout = build_layout(NOMINAL, n_rows, n_cols)
    mesh = build_parts(layout)
    build = _Builder(layout, mesh)
    template = build(NOMINAL)

    shapedirs = np.zeros(template.shape + (len(SHAPE_COMPONENTS),))
    for k, (_, deltas) in enumerate(SHAPE_COMPONENTS):
        g = dict(NOMINAL)
        for key, delta in deltas.items():
            g[key] += _SHAPE_STEP * delta
        shapedirs[..., k] = (build(g) - template) / _SHAPE_STEP

    side = lip_side(layout, mesh)
    loop = layout.topology.loops["mouth"]
    corner_x = float(np.abs(template[loop.vertices[loop.side == 0], 0]).mean())
    slit_y = float(template[loop.vertices, 1].mean())
    weights = skinning_weights(template, side, layout, mesh, corner_x, slit_y)
    regressor = joint_regressor(template, layout, mesh, NOMINAL)

    follow = np.zeros(mesh.n_vertices)
    bag_end = mesh.vertex_slices["mouth_bag"].stop
    follow[:bag_end] = np.clip(1.0 - (mesh.bag_depth[:bag_end] - 0.15) / 0.45, 0.0, 1.0)
    context = ExpressionContext(
        points=template,
        vertices=template,
        follow=follow,
        lip_side=side,
        jaw_weight=weights[:, 2],
        jaw_joint=regressor[2] @ template,
        corner_x=corner_x,
        slit_y=slit_y,
        front_z=build.mouth_z,
        g=NOMINAL,
    )
    exprdirs = np.zeros(template.shape + (len(EXPRESSION_COMPONENTS),))
    for k, comp in enumerate(EXPRESSION_COMPONENTS):
        if comp.lids is not None:
            exprdirs[..., k] += build(NOMINAL, comp.lids) - template
        if comp.field is not None:
            exprdirs[..., k] += comp.field(context)

    head_theta, _ = lid_warp(layout, NOMINAL, LidState())
    uv_coords, uv_faces = uv_layout(layout, mesh, head_theta)
    return ProceduralTemplate(
        vertices=template,
        faces=mesh.faces,
        shapedirs=shapedirs,
        exprdirs=exprdirs,
        lbs_weights=weights,
        joint_regressor=regressor,
        parents=PARENTS.copy(),
        uv_coords=uv_coords,
        uv_faces=uv_faces,
        regions=vertex_regions(template, layout, mesh, NOMINAL),
        landmarks=landmark_vertices(template, layout, mesh, NOMINAL),
        layout=layout,
        mesh=mesh,
    )
