"""Mesh topology of the procedural head: a slit lat-long grid plus closed parts.

The head surface is a grid of ``n_rows`` latitude rows (row 0 near the
bottom of the neck, the last row near the crown) by ``n_cols`` longitude
columns (column ``n_cols // 2`` faces +z, column index grows towards +x at
the front), closed by a pole vertex at each end.

A *slit* is an interior run of one row between two corner columns. Its
interior vertices are duplicated: the original (``lower``) copy belongs to
the faces below the row, the new (``upper``) copy to the faces above. The
hole this opens is a loop of vertices (``SlitLoop``) from which a *bag* (a
tube of rings closed by a pole) continues inside the head, so the surface
stays closed: the mouth cavity behind the lip slit and the eye sockets
behind the lid slits.

Closed parts with their own vertices (eyeballs, teeth, tongue) are a UV
sphere or a swept tube with capped ends.

Faces are listed counter-clockwise seen from outside (outward normals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Slit",
    "SlitLoop",
    "HeadTopology",
    "build_head_topology",
    "bag_faces",
    "sphere_faces",
    "tube_faces",
    "grid_faces",
]


@dataclass(frozen=True)
class Slit:
    """A cut along row ``row`` between corner columns ``col_start`` < ``col_end``."""

    name: str
    row: int
    col_start: int
    col_end: int


@dataclass
class SlitLoop:
    """The closed boundary loop of an opened slit, in bag-ring order.

    ``vertices`` runs: corner at ``col_end``, upper copies with decreasing
    column, corner at ``col_start``, lower copies with increasing column.
    ``side`` is +1 (upper copy), -1 (lower copy) or 0 (corner); ``column``
    the grid column of each loop vertex.
    """

    vertices: np.ndarray
    side: np.ndarray
    column: np.ndarray


@dataclass
class HeadTopology:
    """Index bookkeeping of the slit grid (no geometry).

    Attributes:
        n_rows, n_cols: grid size (without poles).
        grid_index: (n_rows, n_cols) vertex index of each grid node (lower copy on slits).
        upper_index: (n_rows, n_cols) index of the upper copy, equal to ``grid_index`` off the slits.
        bottom_pole, top_pole: pole vertex indices.
        n_vertices: head-surface vertices (grid + poles + upper copies).
        row_of, col_of: (n_vertices,) grid row / column of each vertex (-1 / n_rows for the poles).
        side: (n_vertices,) +1 upper copy, -1 lower copy, 0 otherwise.
        faces: (F, 3) head surface faces before bags.
        loops: slit name -> SlitLoop.
    """

    n_rows: int
    n_cols: int
    grid_index: np.ndarray
    upper_index: np.ndarray
    bottom_pole: int
    top_pole: int
    n_vertices: int
    row_of: np.ndarray
    col_of: np.ndarray
    side: np.ndarray
    faces: np.ndarray
    loops: dict[str, SlitLoop] = field(default_factory=dict)


def grid_faces(
    index_below: np.ndarray, index_above: np.ndarray, mirror_split: np.ndarray | None = None
) -> np.ndarray:
    """Triangles of one band of quads between two rows (wrapping around).

    Args:
        index_below: (C,) vertex indices of the lower row, column order.
        index_above: (C,) vertex indices of the upper row.
        mirror_split: optional (C,) bool; where True the quad is split along
            the other diagonal (used to keep the triangulation mirror-symmetric).
    Returns:
        (2C, 3) faces, counter-clockwise seen from outside when columns run
        towards +x at the front and rows run upwards.
    """
    a = index_below
    b = np.roll(index_below, -1)
    c = np.roll(index_above, -1)
    d = index_above
    split_a = np.stack([np.stack([a, b, c], 1), np.stack([a, c, d], 1)], 1)
    split_b = np.stack([np.stack([a, b, d], 1), np.stack([b, c, d], 1)], 1)
    if mirror_split is not None:
        split_a = np.where(mirror_split[:, None, None], split_b, split_a)
    return split_a.reshape(-1, 3)


def build_head_topology(n_rows: int, n_cols: int, slits: list[Slit]) -> HeadTopology:
    """Index the slit grid and list its faces.

    Args:
        n_rows, n_cols: grid size; ``n_cols`` even so that column ``n_cols // 2``
            is the front midline and the grid is mirror-symmetric.
        slits: cuts; each needs at least one interior column and must not touch another slit.
    """
    grid_index = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    bottom_pole = n_rows * n_cols
    top_pole = bottom_pole + 1
    next_index = top_pole + 1
    upper_index = grid_index.copy()
    for slit in slits:
        if not (0 < slit.row < n_rows - 1 and slit.col_end - slit.col_start >= 2):
            raise ValueError(f"slit {slit.name} is degenerate or touches the poles")
        cols = np.arange(slit.col_start + 1, slit.col_end)
        if np.any(upper_index[slit.row, cols] != grid_index[slit.row, cols]):
            raise ValueError(f"slit {slit.name} overlaps another slit")
        upper_index[slit.row, cols] = np.arange(next_index, next_index + cols.size)
        next_index += cols.size
    n_vertices = next_index

    row_of = np.empty(n_vertices, dtype=np.int64)
    col_of = np.empty(n_vertices, dtype=np.int64)
    side = np.zeros(n_vertices, dtype=np.int64)
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    row_of[grid_index.ravel()] = rows.ravel()
    col_of[grid_index.ravel()] = cols.ravel()
    row_of[bottom_pole], col_of[bottom_pole] = -1, 0
    row_of[top_pole], col_of[top_pole] = n_rows, 0
    copies = upper_index != grid_index
    row_of[upper_index[copies]] = rows[copies]
    col_of[upper_index[copies]] = cols[copies]
    side[upper_index[copies]] = 1
    side[grid_index[copies]] = -1

    # Mirror-symmetric triangulation: flip the diagonal on the -x half (columns below the midline).
    mirror = np.arange(n_cols) < n_cols // 2
    faces = [np.stack([np.full(n_cols, bottom_pole), np.roll(grid_index[0], -1), grid_index[0]], 1)]
    for i in range(n_rows - 1):
        faces.append(grid_faces(upper_index[i], grid_index[i + 1], mirror))
    faces.append(np.stack([upper_index[-1], np.roll(upper_index[-1], -1), np.full(n_cols, top_pole)], 1))
    faces_arr = np.concatenate(faces).astype(np.int64)

    loops: dict[str, SlitLoop] = {}
    for slit in slits:
        inner = np.arange(slit.col_start + 1, slit.col_end)
        verts = np.concatenate(
            [
                [grid_index[slit.row, slit.col_end]],
                upper_index[slit.row, inner[::-1]],
                [grid_index[slit.row, slit.col_start]],
                grid_index[slit.row, inner],
            ]
        )
        loop_side = np.concatenate([[0], np.ones(inner.size, np.int64), [0], -np.ones(inner.size, np.int64)])
        column = np.concatenate([[slit.col_end], inner[::-1], [slit.col_start], inner])
        loops[slit.name] = SlitLoop(verts.astype(np.int64), loop_side, column)
    return HeadTopology(
        n_rows,
        n_cols,
        grid_index,
        upper_index,
        bottom_pole,
        top_pole,
        n_vertices,
        row_of,
        col_of,
        side,
        faces_arr,
        loops,
    )


def bag_faces(loop: np.ndarray, n_rings: int, first_vertex: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces of a bag: ``n_rings`` rings behind a boundary loop, closed by a pole.

    The loop must run so that the surface it bounds uses each loop edge
    (loop[m] -> loop[m + 1]) in the opposite direction, as ``SlitLoop`` does.

    Args:
        loop: (L,) existing vertex indices of the boundary.
        n_rings: new rings of L vertices each.
        first_vertex: index of the first new vertex.
    Returns:
        ring_index: (n_rings + 1, L) vertex indices, row 0 the loop itself;
        the pole is ``first_vertex + n_rings * L``.
        faces: (2 L n_rings + L, 3).
    """
    n = loop.size
    rings = [loop] + [first_vertex + k * n + np.arange(n) for k in range(n_rings)]
    ring_index = np.stack(rings)
    pole = first_vertex + n_rings * n
    faces = [grid_faces(ring_index[k], ring_index[k + 1]) for k in range(n_rings)]
    last = ring_index[-1]
    faces.append(np.stack([last, np.roll(last, -1), np.full(n, pole)], 1))
    return ring_index, np.concatenate(faces).astype(np.int64)


def sphere_faces(n_rings: int, n_segments: int, first_vertex: int) -> np.ndarray:
    """Faces of a UV sphere: pole A, ``n_rings`` rings of ``n_segments``, pole B.

    Vertex layout: ``first_vertex`` is pole A, then the rings (ring-major),
    then pole B. Rings run from pole A to pole B; segment angle increases
    counter-clockwise seen from pole A, so normals point outwards.
    """
    ring = [first_vertex + 1 + k * n_segments + np.arange(n_segments) for k in range(n_rings)]
    pole_a = first_vertex
    pole_b = first_vertex + 1 + n_rings * n_segments
    faces = [np.stack([np.full(n_segments, pole_a), ring[0], np.roll(ring[0], -1)], 1)]
    for k in range(n_rings - 1):
        faces.append(grid_faces(ring[k + 1], ring[k]))
    faces.append(np.stack([ring[-1], np.full(n_segments, pole_b), np.roll(ring[-1], -1)], 1))
    return np.concatenate(faces).astype(np.int64)


def tube_faces(n_sections: int, n_around: int, first_vertex: int) -> np.ndarray:
    """Faces of a swept tube with both ends capped by a centre vertex.

    Vertex layout: ``n_sections`` cross-sections of ``n_around`` vertices
    (section-major), then the start cap centre, then the end cap centre.
    Cross-sections must run counter-clockwise seen from the start end looking
    along the sweep, so that normals point outwards.
    """
    section = [first_vertex + k * n_around + np.arange(n_around) for k in range(n_sections)]
    start_cap = first_vertex + n_sections * n_around
    end_cap = start_cap + 1
    faces = [np.stack([np.full(n_around, start_cap), section[0], np.roll(section[0], -1)], 1)]
    for k in range(n_sections - 1):
        faces.append(grid_faces(section[k + 1], section[k]))
    faces.append(np.stack([np.roll(section[-1], -1), section[-1], np.full(n_around, end_cap)], 1))
    return np.concatenate(faces).astype(np.int64)
