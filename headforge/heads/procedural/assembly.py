"""Assemble the full procedural mesh: head surface, bags and closed parts.

Vertex order (``MeshParts.vertex_slices``): head surface (grid, poles, slit
copies), left eye socket, right eye socket, mouth cavity, left eyeball,
right eyeball, upper teeth, lower teeth, tongue. Faces follow the same part
order. The head surface together with the three bags is one closed,
consistently oriented surface; each eyeball, each dental arch and the tongue
is closed on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from headforge.heads.procedural import parts as P
from headforge.heads.procedural.surface import HeadLayout
from headforge.heads.procedural.topology import bag_faces, sphere_faces, tube_faces

__all__ = ["MeshParts", "build_parts", "assemble_vertices", "EYE_NAMES", "eye_centre", "mouth_frame"]

EYE_NAMES = ("left_eye", "right_eye")
_EYE_SIGN = {"left_eye": 1.0, "right_eye": -1.0}


@dataclass
class MeshParts:
    """Topology of the whole mesh.

    Attributes:
        faces: (F, 3) all faces.
        vertex_slices / face_slices: part name -> slice.
        bag_rings: bag name ("left_eye", "right_eye", "mouth") -> (rings + 1, L)
            vertex indices, row 0 the slit loop.
        bag_poles: bag name -> pole vertex index.
        anchor: (V,) for bag vertices the slit-loop vertex they hang from, else the vertex itself.
        bag_depth: (V,) 0 on the head surface, ring / n_rings inside a bag, 1 at a bag pole.
        eyeball_alpha: (n,) polar angle from the gaze axis of each eyeball vertex (both eyeballs).
        teeth_height: (n,) biting edge (0) to gum end (1), both arches.
    """

    faces: np.ndarray
    vertex_slices: dict[str, slice]
    face_slices: dict[str, slice]
    bag_rings: dict[str, np.ndarray]
    bag_poles: dict[str, int]
    anchor: np.ndarray
    bag_depth: np.ndarray
    eyeball_alpha: np.ndarray = field(default_factory=lambda: np.zeros(0))
    teeth_height: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_vertices(self) -> int:
        return self.anchor.size


def eye_centre(g: dict[str, float], name: str) -> np.ndarray:
    """(3,) eyeball centre of ``name`` ("left_eye" is at +x)."""
    return np.array([_EYE_SIGN[name] * g["eye_x"], g["eye_y"], g["eye_z"]])


def mouth_frame(head: np.ndarray, layout: HeadLayout) -> tuple[float, float]:
    """(centre_y, front_z) of the lip slit from the head-surface vertices (midline column)."""
    slit = layout.slits["mouth"]
    mid = layout.topology.grid_index[slit.row, layout.topology.n_cols // 2]
    return float(head[mid, 1]), float(head[mid, 2])


def build_parts(layout: HeadLayout) -> MeshParts:
    """Index every part and list all faces (no geometry needed)."""
    topo = layout.topology
    faces = [topo.faces]
    vertex_slices = {"head": slice(0, topo.n_vertices)}
    face_slices = {"head": slice(0, topo.faces.shape[0])}
    n_vertices, n_faces = topo.n_vertices, topo.faces.shape[0]
    anchor = [np.arange(topo.n_vertices)]
    depth = [np.zeros(topo.n_vertices)]
    bag_rings: dict[str, np.ndarray] = {}
    bag_poles: dict[str, int] = {}

    def add(name: str, count: int, part_faces: np.ndarray) -> None:
        nonlocal n_vertices, n_faces
        vertex_slices[name] = slice(n_vertices, n_vertices + count)
        face_slices[name] = slice(n_faces, n_faces + part_faces.shape[0])
        faces.append(part_faces)
        n_vertices += count
        n_faces += part_faces.shape[0]

    for name, n_rings in (
        ("left_eye", P.SOCKET_RING_STEPS.size),
        ("right_eye", P.SOCKET_RING_STEPS.size),
        ("mouth", len(P.MOUTH_RINGS)),
    ):
        loop = topo.loops[name].vertices
        rings, part_faces = bag_faces(loop, n_rings, n_vertices)
        bag_rings[name] = rings
        bag_poles[name] = n_vertices + n_rings * loop.size
        anchor.append(np.concatenate([np.tile(loop, n_rings), [loop[0]]]))
        depth.append(np.concatenate([np.repeat(np.arange(1, n_rings + 1) / n_rings, loop.size), [1.0]]))
        add(f"{name}_bag" if name == "mouth" else f"{name}_socket", n_rings * loop.size + 1, part_faces)
    n_eye = 2 + P.EYEBALL_RING_ANGLES.size * P.EYEBALL_SEGMENTS
    for name in EYE_NAMES:
        start = n_vertices
        add(f"{name}ball", n_eye, sphere_faces(P.EYEBALL_RING_ANGLES.size, P.EYEBALL_SEGMENTS, start))
    n_teeth = P.TEETH_SECTIONS * P.TEETH_AROUND + 2
    for name in ("upper_teeth", "lower_teeth"):
        add(name, n_teeth, tube_faces(P.TEETH_SECTIONS, P.TEETH_AROUND, n_vertices))
    add(
        "tongue",
        2 + P.TONGUE_RINGS * P.TONGUE_SEGMENTS,
        sphere_faces(P.TONGUE_RINGS, P.TONGUE_SEGMENTS, n_vertices),
    )
    rest = n_vertices - sum(a.size for a in anchor)
    anchor.append(np.arange(n_vertices - rest, n_vertices))
    depth.append(np.zeros(rest))
    return MeshParts(
        np.concatenate(faces).astype(np.int64),
        vertex_slices,
        face_slices,
        bag_rings,
        bag_poles,
        np.concatenate(anchor),
        np.concatenate(depth),
    )


def assemble_vertices(
    layout: HeadLayout,
    mesh: MeshParts,
    g: dict[str, float],
    head: np.ndarray,
    open_rims: dict[str, np.ndarray],
) -> np.ndarray:
    """(V, 3) float64 positions of every vertex.

    Args:
        head: (n_head, 3) head-surface vertices.
        open_rims: eye name -> (L, 3) lid-rim positions with the lids open,
            relative to the eyeball centre (fixes the deep socket rings).
    """
    verts = np.zeros((mesh.n_vertices, 3))
    verts[mesh.vertex_slices["head"]] = head
    for name in EYE_NAMES:
        loop = layout.topology.loops[name]
        centre = eye_centre(g, name)
        verts[mesh.vertex_slices[f"{name}_socket"]] = P.socket_rings(
            head[loop.vertices], open_rims[name], centre, g
        )
        eyeball, alpha = P.eyeball_vertices(eye_centre(g, name), g)
        verts[mesh.vertex_slices[f"{name}ball"]] = eyeball
    mesh.eyeball_alpha = np.concatenate([alpha, alpha])
    centre_y, front_z = mouth_frame(head, layout)
    loop = layout.topology.loops["mouth"]
    verts[mesh.vertex_slices["mouth_bag"]] = P.mouth_rings(head[loop.vertices], loop.side, centre_y, front_z)
    heights = []
    for name, upper in (("upper_teeth", True), ("lower_teeth", False)):
        teeth, frac = P.teeth_vertices(g, centre_y, front_z, upper)
        verts[mesh.vertex_slices[name]] = teeth
        heights.append(frac)
    mesh.teeth_height = np.concatenate(heights)
    verts[mesh.vertex_slices["tongue"]] = P.tongue_vertices(g, centre_y, front_z)
    return verts
