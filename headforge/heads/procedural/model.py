"""``ProceduralHeadModel``: the built-in, openly licensed parametric head."""

from __future__ import annotations

import torch

from headforge.heads.base import HeadModel
from headforge.heads.procedural.expressions import EXPRESSION_COMPONENTS, EXPRESSION_NAMES
from headforge.heads.procedural.regions import REGION_GROUPS, REGION_NAMES
from headforge.heads.procedural.shape_components import SHAPE_NAMES
from headforge.heads.procedural.template import build_template

__all__ = ["ProceduralHeadModel"]


class ProceduralHeadModel(HeadModel):
    """A procedurally built human head with FLAME-structured parameters.

    Mesh: one closed, outward-oriented surface (head, neck, lip slit with the
    mouth cavity behind it, lid slits with the eye sockets behind them) plus
    closed eyeballs, upper and lower dental arches and a tongue; about 19.6k
    vertices. See docs/head_model.md for the frame, components and labels.

    Args:
        n_shape: number of identity components to use (the first ``n_shape``
            of ``SHAPE_NAMES``; default all 53).
        n_expression: number of expression components (default all 35).

    Shape coefficients are in population standard deviations (sample N(0, 1)).
    Expression coefficient 1 is a strong, complete expression.
    """

    REGION_NAMES = REGION_NAMES
    REGION_GROUPS = REGION_GROUPS

    def __init__(self, n_shape: int | None = None, n_expression: int | None = None) -> None:
        super().__init__()
        t = build_template()
        n_shape = len(SHAPE_NAMES) if n_shape is None else n_shape
        n_expression = len(EXPRESSION_NAMES) if n_expression is None else n_expression
        if not 0 <= n_shape <= len(SHAPE_NAMES):
            raise ValueError(f"n_shape must be in [0, {len(SHAPE_NAMES)}], got {n_shape}")
        if not 0 <= n_expression <= len(EXPRESSION_NAMES):
            raise ValueError(f"n_expression must be in [0, {len(EXPRESSION_NAMES)}], got {n_expression}")
        self.shape_names = SHAPE_NAMES[:n_shape]
        self.expression_names = EXPRESSION_NAMES[:n_expression]
        f32 = torch.float32
        self.register_buffer("v_template", torch.tensor(t.vertices, dtype=f32))
        self.register_buffer("shapedirs", torch.tensor(t.shapedirs[..., :n_shape], dtype=f32))
        self.register_buffer("exprdirs", torch.tensor(t.exprdirs[..., :n_expression], dtype=f32))
        self.register_buffer("J_regressor", torch.tensor(t.joint_regressor, dtype=f32))
        self.register_buffer("parents", torch.tensor(t.parents, dtype=torch.long))
        self.register_buffer("lbs_weights", torch.tensor(t.lbs_weights, dtype=f32))
        self.posedirs = None
        self.register_buffer("faces", torch.tensor(t.faces, dtype=torch.long))
        self.register_buffer("uv_coords", torch.tensor(t.uv_coords, dtype=f32))
        self.register_buffer("uv_faces", torch.tensor(t.uv_faces, dtype=torch.long))
        self.register_buffer("vertex_regions", torch.tensor(t.regions, dtype=torch.long))
        self.register_buffer("landmark_vertex_ids", torch.tensor(t.landmarks[:, None], dtype=torch.long))
        self.register_buffer("landmark_weights", torch.ones(t.landmarks.shape[0], 1, dtype=f32))
        self.part_vertex_slices: dict[str, slice] = dict(t.mesh.vertex_slices)
        self.part_face_slices: dict[str, slice] = dict(t.mesh.face_slices)
        comps = EXPRESSION_COMPONENTS[:n_expression]
        self.register_buffer("expression_std", torch.tensor([c.std for c in comps], dtype=f32))
        self.register_buffer("expression_p_active", torch.tensor([c.p_active for c in comps], dtype=f32))

    def sample_expression(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random plausible expressions, (B, n_expression).

        Each component is active with its own probability (``expression_p_active``,
        0.08 - 0.4) and then takes ``|N(0, std)|`` (``expression_std``, 0.35 - 0.5):
        a few muscles at a time, never the mirrored (negative) direction.
        """
        cpu = torch.device("cpu")
        active = torch.rand(batch, self.n_expression, generator=generator) < self.expression_p_active.to(cpu)
        amount = torch.randn(batch, self.n_expression, generator=generator).abs() * self.expression_std.to(
            cpu
        )
        return (amount * active).to(self.device)
