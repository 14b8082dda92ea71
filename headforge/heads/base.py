"""The ``HeadModel`` interface shared by the procedural head and the FLAME loader.

A head model maps FLAME-structured parameters to a posed mesh in the project's
world frame (docs/architecture.md, docs/head_model.md):

* ``shape``      (B, n_shape)       identity coefficients,
* ``expression`` (B, n_expression)  expression coefficients,
* ``pose``       (B, 15)            axis-angle, radians: global (3), neck (3),
  jaw (3), left eye (3), right eye (3).

Static topology and labels (faces, UV layout, regions, skinning weights) are
buffers on the module, so ``model.to(device)`` moves everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headforge.heads.lbs import lbs

__all__ = [
    "POSE_DIM",
    "POSE_SLICES",
    "N_LANDMARKS",
    "LANDMARK_LEFT_IRIS",
    "LANDMARK_RIGHT_IRIS",
    "HeadModelOutput",
    "HeadModel",
    "landmarks_from_barycentric",
]

POSE_DIM = 15
#: Where each joint's axis-angle lives inside the (B, 15) pose vector.
POSE_SLICES: dict[str, slice] = {
    "global": slice(0, 3),
    "neck": slice(3, 6),
    "jaw": slice(6, 9),
    "left_eye": slice(9, 12),
    "right_eye": slice(12, 15),
}
#: 68 iBUG/dlib points (0-based, standard order) + left iris centre + right iris centre.
N_LANDMARKS = 70
LANDMARK_LEFT_IRIS = 68
LANDMARK_RIGHT_IRIS = 69


@dataclass
class HeadModelOutput:
    """Result of ``HeadModel.forward``.

    Attributes:
        vertices: (B, V, 3) posed vertices, world units.
        joints: (B, J, 3) posed joint positions (root, neck, jaw, left eye, right eye).
        landmarks: (B, 70, 3) 68 iBUG points + left/right iris centres, or
            ``None`` for a model without a landmark embedding.
        joint_transforms: (B, J, 4, 4) skinning transforms (rest -> posed).
        vertices_shaped: (B, V, 3) unposed vertices (template + shape +
            expression blendshapes), useful for template-space lookups.
    """

    vertices: Tensor
    joints: Tensor
    landmarks: Tensor | None
    joint_transforms: Tensor
    vertices_shaped: Tensor


def landmarks_from_barycentric(vertices: Tensor, vertex_ids: Tensor, weights: Tensor) -> Tensor:
    """Points as weighted sums of vertices (a barycentric embedding).

    Args:
        vertices: (B, V, 3).
        vertex_ids: (L, K) long, K vertices per landmark (K = 3 for a triangle).
        weights: (L, K) weights, rows summing to 1.

    Returns:
        (B, L, 3).
    """
    picked = vertices[:, vertex_ids]  # (B, L, K, 3)
    return (picked * weights[None, :, :, None].to(vertices.dtype)).sum(2)


class HeadModel(nn.Module):
    """Base class: linear shape/expression blendshapes + LBS over 5 joints.

    Subclasses register these buffers (float32 unless noted):

    * ``v_template`` (V, 3), ``shapedirs`` (V, 3, n_shape),
      ``exprdirs`` (V, 3, n_expression)
    * ``J_regressor`` (J, V) dense joint regressor, ``parents`` (J,) long,
      ``lbs_weights`` (V, J), optional ``posedirs`` (36, V * 3) or ``None``
    * ``faces`` (F, 3) long, ``uv_coords`` (T, 2), ``uv_faces`` (F, 3) long
    * ``vertex_regions`` (V,) long indexing ``REGION_NAMES``
    * ``landmark_vertex_ids`` (70, K) long and ``landmark_weights`` (70, K),
      or neither (then ``landmarks`` is ``None``)

    and set ``REGION_NAMES`` (tuple of str), ``shape_names`` and
    ``expression_names``. ``REGION_GROUPS`` maps extra names (e.g. ``"eyes"``)
    to tuples of region names.
    """

    REGION_NAMES: tuple[str, ...] = ()
    REGION_GROUPS: dict[str, tuple[str, ...]] = {}
    shape_names: tuple[str, ...] = ()
    expression_names: tuple[str, ...] = ()

    v_template: Tensor
    shapedirs: Tensor
    exprdirs: Tensor
    J_regressor: Tensor
    parents: Tensor
    lbs_weights: Tensor
    posedirs: Tensor | None
    faces: Tensor
    uv_coords: Tensor
    uv_faces: Tensor
    vertex_regions: Tensor

    # ------------------------------------------------------------------ sizes
    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def n_expression(self) -> int:
        return int(self.exprdirs.shape[-1])

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def has_landmarks(self) -> bool:
        return getattr(self, "landmark_vertex_ids", None) is not None

    # --------------------------------------------------------------- regions
    def region_mask(self, name: str) -> Tensor:
        """(V,) bool mask of the vertices in a region or region group.

        Raises:
            KeyError: unknown name (the message lists the valid names).
        """
        if name in self.REGION_NAMES:
            return self.vertex_regions == self.REGION_NAMES.index(name)
        if name in self.REGION_GROUPS:
            mask = torch.zeros_like(self.vertex_regions, dtype=torch.bool)
            for member in self.REGION_GROUPS[name]:
                mask |= self.region_mask(member)
            return mask
        valid = list(self.REGION_NAMES) + list(self.REGION_GROUPS)
        raise KeyError(f"unknown region {name!r}; valid names: {valid}")

    # ------------------------------------------------------------ parameters
    def zero_params(self, batch: int = 1) -> dict[str, Tensor]:
        """Zero shape, expression and pose for a batch (the template)."""
        kw = {"dtype": self.v_template.dtype, "device": self.device}
        return {
            "shape": torch.zeros(batch, self.n_shape, **kw),
            "expression": torch.zeros(batch, self.n_expression, **kw),
            "pose": torch.zeros(batch, POSE_DIM, **kw),
        }

    def sample_shape(
        self, batch: int, generator: torch.Generator | None = None, scale: float = 1.0
    ) -> Tensor:
        """Random identities: i.i.d. N(0, scale^2) coefficients, (B, n_shape).

        Subclasses document what one unit means for their components.
        """
        noise = torch.randn(batch, self.n_shape, generator=generator, dtype=torch.float32)
        return (noise * scale).to(self.device)

    def sample_expression(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Random plausible expressions, (B, n_expression). Subclasses override."""
        noise = torch.randn(batch, self.n_expression, generator=generator, dtype=torch.float32)
        return (noise * 0.5).to(self.device)

    def sample_pose(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        neck_std: float = 0.08,
        jaw_std: float = 0.08,
        gaze_std: float = 0.15,
    ) -> Tensor:
        """Random plausible poses, (B, 15) axis-angle radians.

        Global rotation stays zero (the camera carries the view). Neck: N(0,
        neck_std) per axis. Jaw: opening |N(0, jaw_std)| about +x (positive
        opens the mouth), no sideways rotation. Eyes: one shared gaze, pitch
        and yaw N(0, gaze_std), both eyes rotated alike.
        """
        g = generator
        pose = torch.zeros(batch, POSE_DIM)
        pose[:, POSE_SLICES["neck"]] = torch.randn(batch, 3, generator=g) * neck_std
        pose[:, 6] = torch.randn(batch, generator=g).abs() * jaw_std
        gaze = torch.randn(batch, 2, generator=g) * gaze_std
        for key in ("left_eye", "right_eye"):
            sl = POSE_SLICES[key]
            pose[:, sl.start] = gaze[:, 0]
            pose[:, sl.start + 1] = gaze[:, 1]
        return pose.to(self.device)

    # ---------------------------------------------------------------- forward
    def _batch_and_fill(
        self, shape: Tensor | None, expression: Tensor | None, pose: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        given = [t for t in (shape, expression, pose) if t is not None]
        batch = given[0].shape[0] if given else 1
        kw = {"dtype": self.v_template.dtype, "device": self.device}
        shape = torch.zeros(batch, self.n_shape, **kw) if shape is None else shape
        expression = torch.zeros(batch, self.n_expression, **kw) if expression is None else expression
        pose = torch.zeros(batch, POSE_DIM, **kw) if pose is None else pose
        for name, t, width in (
            ("shape", shape, self.n_shape),
            ("expression", expression, self.n_expression),
            ("pose", pose, POSE_DIM),
        ):
            if t.ndim != 2 or t.shape[0] != batch or t.shape[1] != width:
                raise ValueError(f"{name} must have shape ({batch}, {width}), got {tuple(t.shape)}")
        return shape, expression, pose

    def shaped_vertices(self, shape: Tensor, expression: Tensor) -> Tensor:
        """Template + shape + expression blendshapes, (B, V, 3)."""
        v = self.v_template[None] + torch.einsum("vcs,bs->bvc", self.shapedirs, shape)
        return v + torch.einsum("vce,be->bvc", self.exprdirs, expression)

    def landmarks_from_vertices(self, vertices: Tensor, joints: Tensor, transforms: Tensor) -> Tensor | None:
        """(B, 70, 3) landmarks of a posed mesh, or None without an embedding."""
        if not self.has_landmarks:
            return None
        return landmarks_from_barycentric(vertices, self.landmark_vertex_ids, self.landmark_weights)

    def forward(
        self, shape: Tensor | None = None, expression: Tensor | None = None, pose: Tensor | None = None
    ) -> HeadModelOutput:
        """Pose the head.

        Args:
            shape: (B, n_shape) or None (zeros).
            expression: (B, n_expression) or None (zeros).
            pose: (B, 15) axis-angle radians or None (zeros); see ``POSE_SLICES``.

        Returns:
            ``HeadModelOutput`` in world units.
        """
        shape, expression, pose = self._batch_and_fill(shape, expression, pose)
        v_shaped = self.shaped_vertices(shape, expression)
        joints_rest = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)
        vertices, joints, transforms = lbs(
            v_shaped, joints_rest, pose, self.lbs_weights, self.parents, self.posedirs
        )
        landmarks = self.landmarks_from_vertices(vertices, joints, transforms)
        return HeadModelOutput(vertices, joints, landmarks, transforms, v_shaped)
