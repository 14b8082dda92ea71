"""Tests for headforge.raster: coverage, z-buffer, interpolation, projections, antialiasing."""

import math

import pytest
import torch
import torch.nn.functional as F

from headforge.cameras import Camera, pixel_rays
from headforge.nn.triplane import PLANE_LAYOUTS, sample_triplanes
from headforge.raster import (
    face_normals,
    fragments_from_face_ids,
    interpolate,
    orthographic_screen_vertices,
    orthographic_view_matrix,
    perspective_screen_vertices,
    rasterize,
    rasterize_supersampled,
    render_attributes,
    resolve_supersampled,
    vertex_normals,
)
from headforge.raster.rasterize import EDGE_TOLERANCE_PX

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def icosphere(subdivisions: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit icosphere with outward counter-clockwise faces: vertices (V, 3), faces (F, 3)."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    vertices = torch.tensor(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        dtype=dtype,
    )  # fmt: skip
    faces = torch.tensor(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    )  # fmt: skip
    vertices = F.normalize(vertices, dim=-1)
    for _ in range(subdivisions):
        edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
        unique_edges, edge_index = torch.unique(edges, dim=0, return_inverse=True)
        midpoints = F.normalize(vertices[unique_edges].mean(1), dim=-1)
        mid = (edge_index + vertices.shape[0]).view(3, -1)  # midpoints of edges 01, 12, 20
        vertices = torch.cat([vertices, midpoints])
        a, b, c = faces.unbind(1)
        ab, bc, ca = mid
        faces = torch.cat([torch.stack(f, 1) for f in ([a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca])])
    return vertices, faces


def pixel_centres(height: int, width: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij"
    )
    return cols + 0.5, rows + 0.5


def brute_force_inside(triangle: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent float64 point-in-triangle test at pixel centres.

    Returns (inside (H, W) bool, distance of each centre to the nearest edge line in pixels).
    """
    x, y = pixel_centres(height, width)
    inside_sign = []
    distances = []
    for k in range(3):
        a, b = triangle[k, :2].double(), triangle[(k + 1) % 3, :2].double()
        cross = (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])
        inside_sign.append(cross)
        distances.append(cross.abs() / torch.linalg.norm(b - a))
    signs = torch.stack(inside_sign)
    inside = (signs >= 0).all(0) | (signs <= 0).all(0)
    return inside, torch.stack(distances).amin(0)


def random_triangle(generator: torch.Generator, size: int, min_area: float) -> torch.Tensor:
    while True:
        triangle = torch.rand(3, 2, generator=generator, dtype=torch.float64) * size
        e1, e2 = triangle[1] - triangle[0], triangle[2] - triangle[0]
        if abs(e1[0] * e2[1] - e1[1] * e2[0]) / 2 > min_area:
            return triangle


def triangle_area_perimeter(triangle: torch.Tensor) -> tuple[float, float]:
    e1, e2 = triangle[1, :2] - triangle[0, :2], triangle[2, :2] - triangle[0, :2]
    area = abs(float(e1[0] * e2[1] - e1[1] * e2[0])) / 2
    perimeter = sum(float(torch.linalg.norm(triangle[(k + 1) % 3, :2] - triangle[k, :2])) for k in range(3))
    return area, perimeter


# ---------------------------------------------------------------------------------------
# Coverage
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_single_triangle_coverage_matches_geometry(seed):
    generator = torch.Generator().manual_seed(seed)
    size = 40
    triangle2d = random_triangle(generator, size, min_area=150.0)
    for winding in ([0, 1, 2], [0, 2, 1]):  # both orientations
        triangle = torch.cat([triangle2d, torch.full((3, 1), 2.0, dtype=torch.float64)], 1)[winding].float()
        faces = torch.tensor([[0, 1, 2]])
        fragments = rasterize(triangle, faces, size, size, perspective=False)
        mask = fragments.mask[0]
        inside, distance = brute_force_inside(triangle, size, size)
        away_from_edges = distance > 10 * EDGE_TOLERANCE_PX
        assert torch.equal(mask[away_from_edges], inside[away_from_edges])
        assert (fragments.face_id[0][mask] == 0).all() and (fragments.face_id[0][~mask] == -1).all()

        area, perimeter = triangle_area_perimeter(triangle)
        assert abs(int(mask.sum()) - area) <= perimeter / 2 + 2
        _, coverage = render_attributes(
            triangle, faces, torch.ones(3, 1), size, size, supersample=4, perspective=False
        )
        assert abs(float(coverage.sum()) - area) <= perimeter / 8 + 0.5
        assert float(coverage.min()) >= 0 and float(coverage.max()) <= 1


def test_coverage_stays_exact_with_vertices_far_off_screen():
    """float32 input whose vertices lie 1e7 px away: the edges crossing the image stay exact
    (evaluating barycentrics relative to a far vertex in float32 misses pixels here)."""
    triangle = torch.tensor([[-1.0e7, 3.3, 1.0], [1.0e7, 9.1, 1.0], [-3.0e5, 1.0e7, 1.0]])
    for winding in ([0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]):
        fragments = rasterize(triangle[winding], torch.tensor([[0, 1, 2]]), 12, 16, perspective=False)
        inside, distance = brute_force_inside(triangle, 12, 16)
        clear = distance > 1e-3
        assert inside.any() and (~inside).any()
        assert torch.equal(fragments.mask[0][clear], inside[clear])


def test_closed_mesh_orthographic_covers_a_disc():
    vertices, faces = icosphere(3)
    radius_world, extent, size = 0.4, 0.5, 64
    screen = orthographic_screen_vertices(
        vertices.float() * radius_world, "xy", extent, height=size, width=size
    )
    fragments = rasterize(screen, faces, size, size, perspective=False)
    radius_px = radius_world / extent * size / 2
    x, y = pixel_centres(size, size)
    r = torch.hypot(x - size / 2, y - size / 2)
    # The inscribed polyhedron's outline lies within [r cos(max edge angle / 2), r] of the circle.
    inner = radius_px * 0.985 - 2 * EDGE_TOLERANCE_PX
    assert fragments.mask[0][r < inner].all(), "hole inside the silhouette"
    assert not fragments.mask[0][r > radius_px + 1e-6].any()
    area = math.pi * radius_px**2
    assert abs(int(fragments.mask.sum()) - area) / area < 0.02
    _, coverage = render_attributes(
        screen,
        faces,
        None,
        size,
        size,
        supersample=3,
        perspective=False,
        face_attributes=torch.ones(faces.shape[0], 3, 1),
    )
    assert abs(float(coverage.sum()) - area) / area < 0.02
    # Front faces of an outward mesh face the viewer on +z (depth = -z).
    visible = fragments.face_id[fragments.mask].unique()
    assert (face_normals(vertices, faces)[visible, 2] > 0).all()


def test_chunking_does_not_change_the_result():
    vertices, faces = icosphere(2)
    screen = orthographic_screen_vertices(vertices.float() * 0.45, "xy", height=48, width=40)
    big_triangle = torch.tensor([[[-30.0, -30.0, 5.0], [150.0, -30.0, 5.0], [-30.0, 150.0, 5.0]]])
    screen = torch.cat([screen, big_triangle], 1)
    faces = torch.cat([faces, torch.tensor([[0, 1, 2]]) + vertices.shape[0]])
    reference = rasterize(screen, faces, 48, 40, perspective=False)
    chunked = rasterize(screen, faces, 48, 40, perspective=False, candidate_budget=37)
    assert torch.equal(reference.face_id, chunked.face_id)
    assert (reference.face_id == faces.shape[0] - 1).any() and reference.mask.all()


# ---------------------------------------------------------------------------------------
# Z-buffer
# ---------------------------------------------------------------------------------------


def two_overlapping_triangles(near_depth: float, far_depth: float) -> torch.Tensor:
    near = torch.tensor([[2.0, 2.0, near_depth], [14.0, 3.0, near_depth], [4.0, 14.0, near_depth]])
    far = torch.tensor([[1.0, 1.0, far_depth], [15.0, 1.0, far_depth], [15.0, 15.0, far_depth]])
    return torch.cat([near, far])


@pytest.mark.parametrize(
    "perspective, near_depth, far_depth",
    [(True, 2.0, 3.0), (False, 2.0, 3.0), (False, -3.0, -2.0), (False, -0.5, 0.25), (False, 1e-3, 2e-3)],
)
def test_nearer_triangle_wins_regardless_of_order(perspective, near_depth, far_depth):
    vertices = two_overlapping_triangles(near_depth, far_depth)
    near_face, far_face = [0, 1, 2], [3, 4, 5]
    for order in ([near_face, far_face], [far_face, near_face]):
        faces = torch.tensor(order)
        fragments = rasterize(vertices, faces, 16, 16, perspective=perspective)
        near_id = order.index(near_face)
        inside_near, distance = brute_force_inside(vertices[:3], 16, 16)
        clear = inside_near & (distance > 1e-3)
        assert (fragments.face_id[0][clear] == near_id).all()
        assert torch.allclose(fragments.depth[0][clear], torch.tensor(near_depth))
        only_far = fragments.mask[0] & ~inside_near
        assert only_far.any() and (fragments.face_id[0][only_far] == 1 - near_id).all()
        assert torch.isinf(fragments.depth[0][~fragments.mask[0]]).all()


def test_equal_depth_ties_go_to_the_lower_face_id():
    vertices = two_overlapping_triangles(near_depth=2.5, far_depth=2.5)
    for faces in (torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[3, 4, 5], [0, 1, 2]])):
        fragments = rasterize(vertices, faces, 16, 16, perspective=False)
        inside_both = (
            brute_force_inside(vertices[:3], 16, 16)[0] & brute_force_inside(vertices[3:], 16, 16)[0]
        )
        assert inside_both.sum() > 20
        assert (fragments.face_id[0][inside_both] == 0).all()
        again = rasterize(vertices, faces, 16, 16, perspective=False)
        assert torch.equal(fragments.face_id, again.face_id)


def test_backface_culling_uses_screen_winding():
    counter_clockwise_on_screen = torch.tensor([[[2.0, 2.0, 1.0], [3.0, 14.0, 1.0], [14.0, 8.0, 1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    assert rasterize(counter_clockwise_on_screen, faces, 16, 16, cull_backfaces=True).mask.any()
    assert not rasterize(
        counter_clockwise_on_screen, faces[:, [0, 2, 1]], 16, 16, cull_backfaces=True
    ).mask.any()
    assert rasterize(counter_clockwise_on_screen, faces[:, [0, 2, 1]], 16, 16).mask.any()


def test_backface_culling_on_a_closed_mesh_through_a_camera():
    vertices, faces = icosphere(2)
    camera = camera64(0.4, -0.2)
    screen = perspective_screen_vertices(0.3 * vertices[None], camera.cam2world, camera.intrinsics, 32, 32)
    plain = rasterize(screen, faces, 32, 32)
    culled = rasterize(screen, faces, 32, 32, cull_backfaces=True)
    assert plain.mask.sum() > 50 and torch.equal(plain.face_id, culled.face_id)
    # Reversed winding turns the front faces into back faces: the far side becomes visible.
    inside_out = rasterize(screen, faces[:, [0, 2, 1]], 32, 32, cull_backfaces=True)
    assert torch.equal(inside_out.mask, plain.mask)
    assert (inside_out.depth[plain.mask] > plain.depth[plain.mask]).all()


def test_batched_rasterization_equals_per_item():
    vertices, faces = icosphere(2)
    generator = torch.Generator().manual_seed(0)
    cameras = Camera.orbit(yaw=torch.tensor([0.0, 0.5, -0.7]), pitch=torch.tensor([0.0, 0.2, -0.3]))
    world = 0.35 * vertices.float()[None] + 0.05 * torch.randn(3, 1, 3, generator=generator)
    screen = perspective_screen_vertices(world, cameras.cam2world, cameras.intrinsics, 24, 20)
    batched = rasterize(screen, faces, 24, 20)
    for b in range(3):
        single = rasterize(screen[b], faces, 24, 20)
        assert torch.equal(batched.face_id[b], single.face_id[0])
        assert torch.equal(batched.bary[b], single.bary[0])
        assert torch.equal(batched.depth[b], single.depth[0])
    assert not torch.equal(batched.face_id[0], batched.face_id[1])


# ---------------------------------------------------------------------------------------
# Interpolation and projection
# ---------------------------------------------------------------------------------------


def camera64(yaw: float, pitch: float = 0.0) -> Camera:
    return Camera.orbit(
        yaw=torch.tensor([yaw], dtype=torch.float64), pitch=torch.tensor([pitch], dtype=torch.float64)
    )


def random_world_triangle(generator: torch.Generator) -> torch.Tensor:
    """A large tilted triangle in front of the frontal FFHQ camera, (3, 3) float64."""
    return torch.tensor([[-0.35, -0.3, 0.1], [0.4, -0.25, -0.3], [0.0, 0.4, 0.35]], dtype=torch.float64) + (
        0.05 * torch.randn(3, 3, generator=generator, dtype=torch.float64)
    )


def test_perspective_interpolation_of_a_planar_attribute_is_exact():
    generator = torch.Generator().manual_seed(1)
    triangle = random_world_triangle(generator)
    camera = camera64(0.3, 0.1)
    size = 32
    coefficients = torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)
    attribute = (triangle @ coefficients + 0.25)[:, None]  # a*x + b*y + c*z + d at the corners
    screen = perspective_screen_vertices(triangle[None], camera.cam2world, camera.intrinsics, size, size)
    fragments = rasterize(screen, torch.tensor([[0, 1, 2]]), size, size)
    mask = fragments.mask[0].flatten()
    assert mask.sum() > 100

    # Where each pixel's ray meets the triangle's plane.
    origins, directions = pixel_rays(camera.cam2world, camera.intrinsics, size, size)
    normal = torch.linalg.cross(triangle[1] - triangle[0], triangle[2] - triangle[0])
    t = ((triangle[0] - origins[0]) @ normal) / (directions[0] @ normal)
    hits = origins[0] + t[:, None] * directions[0]

    values = interpolate(attribute, torch.tensor([[0, 1, 2]]), fragments)[0].reshape(-1)
    torch.testing.assert_close(values[mask], hits[mask] @ coefficients + 0.25, rtol=0, atol=1e-9)
    camera_depth = ((hits - origins[0]) @ camera.cam2world[0, :3, 2])[mask]
    torch.testing.assert_close(fragments.depth[0].reshape(-1)[mask], camera_depth, rtol=0, atol=1e-9)
    # Affine (screen-space) interpolation would be visibly wrong for this tilted triangle.
    screen_bary_values = interpolate(
        attribute,
        torch.tensor([[0, 1, 2]]),
        rasterize(screen, torch.tensor([[0, 1, 2]]), size, size, perspective=False),
    )[0].reshape(-1)
    assert (screen_bary_values[mask] - values[mask]).abs().max() > 1e-3


def test_orthographic_interpolation_of_a_planar_attribute_is_exact():
    generator = torch.Generator().manual_seed(2)
    triangle = random_world_triangle(generator)
    size, extent = 32, 0.5
    coefficients = torch.tensor([-0.4, 0.9, 1.7], dtype=torch.float64)
    attribute = (triangle @ coefficients)[:, None]
    screen = orthographic_screen_vertices(triangle, "xy", extent, height=size, width=size)
    fragments = rasterize(screen, torch.tensor([[0, 1, 2]]), size, size, perspective=False)
    mask = fragments.mask[0]
    x, y = pixel_centres(size, size)
    world_x, world_y = (x / size * 2 - 1) * extent, (y / size * 2 - 1) * extent
    normal = torch.linalg.cross(triangle[1] - triangle[0], triangle[2] - triangle[0])
    world_z = (
        triangle[0, 2]
        - ((world_x - triangle[0, 0]) * normal[0] + (world_y - triangle[0, 1]) * normal[1]) / normal[2]
    )
    expected = coefficients[0] * world_x + coefficients[1] * world_y + coefficients[2] * world_z
    values = interpolate(attribute, torch.tensor([[0, 1, 2]]), fragments)[0, ..., 0]
    torch.testing.assert_close(values[mask], expected[mask], rtol=0, atol=1e-9)
    torch.testing.assert_close(fragments.depth[0][mask], -world_z[mask], rtol=0, atol=1e-9)


def test_projected_point_lands_on_its_pixel_ray():
    camera = camera64(-0.5, 0.25)
    height, width = 24, 32
    origins, directions = pixel_rays(camera.cam2world, camera.intrinsics, height, width)
    row, col = 7, 21
    landmark = origins[0, row * width + col] + 2.6 * directions[0, row * width + col]
    screen = perspective_screen_vertices(
        landmark[None, None], camera.cam2world, camera.intrinsics, height, width
    )
    torch.testing.assert_close(screen[0, 0, :2], torch.tensor([col + 0.5, row + 0.5], dtype=torch.float64))
    # A small triangle around the landmark covers exactly that pixel, at the landmark's depth.
    offsets = torch.tensor([[-0.3, -0.3, 0.0], [0.35, -0.2, 0.0], [0.0, 0.4, 0.0]], dtype=torch.float64)
    fragments = rasterize(screen[0] + offsets, torch.tensor([[0, 1, 2]]), height, width)
    assert fragments.mask.sum() == 1 and bool(fragments.mask[0, row, col])
    camera_z = float((landmark - camera.position[0]) @ camera.cam2world[0, :3, 2])
    assert abs(float(fragments.depth[0, row, col]) - camera_z) < 1e-9


def rasterize_onto_triplanes(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    attributes: torch.Tensor,
    layout: str,
    extent: float,
    size: int,
) -> torch.Tensor:
    """Rasterize (V, C) vertex attributes onto the three planes of a tri-plane layout -> (1, 3, C, H, W)."""
    planes = []
    for plane_axes in PLANE_LAYOUTS[layout]:
        axes = "".join("xyz"[axis] for axis in plane_axes)
        screen = orthographic_screen_vertices(vertices, axes, extent, height=size, width=size)
        fragments = rasterize(screen, faces, size, size, perspective=False)
        planes.append(interpolate(attributes, faces, fragments)[0].permute(2, 0, 1))
    return torch.stack(planes)[None]


@pytest.mark.parametrize("layout", sorted(PLANE_LAYOUTS))
def test_orthographic_planes_match_triplane_sampling(layout):
    """Features rasterized onto the planes are read back by sample_triplanes at their 3D position."""
    extent, size = 0.5, 20
    # A tilted triangle pair per plane, covering it, carrying world xyz as its attribute.
    quad = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64) * 0.6
    generator = torch.Generator().manual_seed(3)
    query = (torch.rand(1, 50, 3, generator=generator, dtype=torch.float64) * 2 - 1) * 0.4
    for plane, plane_axes in enumerate(PLANE_LAYOUTS[layout]):
        depth_axis = 3 - sum(plane_axes)
        world = torch.zeros(4, 3, dtype=torch.float64)
        world[:, plane_axes[0]], world[:, plane_axes[1]] = quad[:, 0], quad[:, 1]
        world[:, depth_axis] = 0.1 * quad[:, 0] - 0.2 * quad[:, 1]
        faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
        planes = rasterize_onto_triplanes(world, faces, world, layout, extent, size)
        sampled = sample_triplanes(planes, query, layout, box_warp=2 * extent)  # (1, 3, N, 3)
        for axis in plane_axes:  # bilinear interpolation reproduces a linear function exactly
            torch.testing.assert_close(sampled[0, plane, :, axis], query[0, :, axis], rtol=0, atol=1e-9)

    # A point-sized feature near a pixel centre lands in that one texel of every plane, and
    # sample_triplanes (nearest) reads it at the point's position.
    texel = torch.tensor([13, 5, 9])
    pixel = 2 * extent / size
    point = ((texel + 0.5) / size * 2 - 1) * extent + torch.tensor([0.15, -0.1, 0.2]) * pixel
    feature_vertices, feature_faces = [], []
    for plane_axes in PLANE_LAYOUTS[layout]:
        triangle = point.repeat(3, 1)
        triangle[:, plane_axes[0]] += torch.tensor([-0.45, 0.3, 0.0]) * pixel
        triangle[:, plane_axes[1]] += torch.tensor([-0.3, -0.3, 0.4]) * pixel
        feature_faces.append(torch.arange(3) + 3 * len(feature_vertices))
        feature_vertices.append(triangle)
    # Triangles built for the other planes are edge-on there (EG3D's x-z and z-x planes share theirs).
    planes = rasterize_onto_triplanes(
        torch.cat(feature_vertices), torch.stack(feature_faces), torch.ones(9, 1), layout, extent, size
    )
    for plane, plane_axes in enumerate(PLANE_LAYOUTS[layout]):
        assert planes[0, plane, 0].sum() == 1
        assert planes[0, plane, 0, texel[plane_axes[1]], texel[plane_axes[0]]] == 1
    read = sample_triplanes(planes, point[None, None], layout, box_warp=2 * extent, mode="nearest")
    assert (read == 1).all()


def test_orthographic_view_matrix_handedness():
    assert torch.linalg.det(orthographic_view_matrix("xy")) < 0
    assert torch.linalg.det(orthographic_view_matrix("xz")) > 0
    assert torch.linalg.det(orthographic_view_matrix("yz")) < 0
    assert torch.linalg.det(orthographic_view_matrix("xy", depth_axis_sign=1.0)) > 0
    rotation = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.3, 0.2], [0.3, 0.0, -0.1], [-0.2, 0.1, 0.0]]))
    points = torch.randn(1, 5, 3)
    screen = orthographic_screen_vertices(points, rotation, 0.5, height=8, width=8, depth_axis_sign=1.0)
    torch.testing.assert_close(screen[0, :, 2], points[0] @ rotation[2])


# ---------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------


def test_interpolate_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(4)
    vertices, faces = icosphere(1)
    # Batch of two (second item shifted) so that the per-item attribute gather is exercised.
    screen = orthographic_screen_vertices(0.45 * vertices[None], "xy", height=6, width=5).repeat(2, 1, 1)
    screen[1, :, 0] += 0.7
    camera = camera64(0.3)
    perspective = perspective_screen_vertices(
        0.45 * vertices[None], camera.cam2world, camera.intrinsics, 6, 5
    )
    for fragments in (rasterize(screen, faces, 6, 5, perspective=False), rasterize(perspective, faces, 6, 5)):
        attributes = torch.randn(
            fragments.face_id.shape[0],
            vertices.shape[0],
            2,
            generator=generator,
            dtype=torch.float64,
            requires_grad=True,
        )
        assert torch.autograd.gradcheck(lambda a, fr=fragments: interpolate(a, faces, fr), (attributes,))
        per_corner = torch.randn(
            faces.shape[0], 3, 2, generator=generator, dtype=torch.float64, requires_grad=True
        )
        assert torch.autograd.gradcheck(
            lambda c, fr=fragments: interpolate(None, None, fr, face_attributes=c), (per_corner,)
        )


def test_barycentric_gradient_wrt_vertices_matches_finite_differences():
    """With visibility held fixed, interpolated values are smooth in the vertex positions."""
    vertices, faces = icosphere(1)
    camera = camera64(0.2, 0.1)
    world = (0.45 * vertices[None]).requires_grad_(True)
    attributes = torch.randn(
        1, vertices.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        screen = perspective_screen_vertices(world, camera.cam2world, camera.intrinsics, 6, 6)
        face_id = rasterize(screen, faces, 6, 6).face_id

    def render(points):
        screen = perspective_screen_vertices(points, camera.cam2world, camera.intrinsics, 6, 6)
        fragments = fragments_from_face_ids(screen, faces, face_id, perspective=True)
        return interpolate(attributes, faces, fragments), fragments.depth[fragments.mask]

    assert torch.autograd.gradcheck(render, (world,))


# ---------------------------------------------------------------------------------------
# Robustness, antialiasing and geometry
# ---------------------------------------------------------------------------------------


def test_empty_and_degenerate_inputs():
    screen = torch.tensor([[[1.0, 1.0, 1.0], [5.0, 5.0, 1.0], [9.0, 9.0, 1.0], [3.0, 7.0, 1.0],
                            [float("nan"), 2.0, 1.0], [2.0, 2.0, -1.0], [40.0, 40.0, 1.0], [50.0, 40.0, 1.0],
                            [40.0, 50.0, 1.0]]])  # fmt: skip
    empty = rasterize(screen, torch.zeros(0, 3, dtype=torch.long), 8, 8)
    assert not empty.mask.any() and (empty.face_id == -1).all() and torch.isinf(empty.depth).all()
    assert interpolate(screen, torch.zeros(0, 3, dtype=torch.long), empty).abs().sum() == 0
    degenerate = torch.tensor([[0, 1, 2], [0, 0, 3], [3, 3, 3]])  # collinear and repeated corners
    nan_and_behind = torch.tensor([[0, 3, 4], [0, 3, 5]])
    off_screen = torch.tensor([[6, 7, 8]])
    for faces in (degenerate, nan_and_behind, off_screen):
        fragments = rasterize(screen, faces, 8, 8)
        assert not fragments.mask.any()
        assert torch.isfinite(fragments.bary).all()
    # A sliver 1e-12 px thin along the pixel-centre diagonal is as empty as its zero-area limit.
    sliver = torch.tensor([[0.5, 0.5, 1.0], [15.5, 15.5, 1.0], [8.0, 8.0 + 1e-12, 1.0]], dtype=torch.float64)
    assert not rasterize(sliver, torch.tensor([[0, 1, 2]]), 16, 16).mask.any()
    # A triangle with one corner behind the camera is dropped, not clipped.
    assert not rasterize(screen, torch.tensor([[0, 3, 5]]), 8, 8).mask.any()
    assert rasterize(screen, torch.tensor([[0, 3, 5]]), 8, 8, perspective=False).mask.any()


def test_resolve_supersampled_is_a_box_filter():
    image = torch.arange(2 * 6 * 4 * 3, dtype=torch.float64).reshape(2, 6, 4, 3)
    resolved = resolve_supersampled(image, 2)
    assert resolved.shape == (2, 3, 2, 3)
    torch.testing.assert_close(resolved[1, 2, 1], image[1, 4:6, 2:4].mean(dim=(0, 1)))


def test_render_attributes_blends_background_by_coverage():
    # Left half of the image covered: the edge at x = 3.25 splits column 3 a quarter / three quarters.
    screen = torch.tensor([[-5.0, -5.0, 1.0], [3.25, -5.0, 1.0], [3.25, 20.0, 1.0], [-5.0, 20.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    colour = torch.tensor([1.0, 0.5]).expand(4, 2)
    image, coverage = render_attributes(
        screen, faces, colour, 4, 6, supersample=4, background=torch.tensor([0.0, 2.0])
    )
    torch.testing.assert_close(
        coverage[0, :, :, 0], torch.tensor([[1.0, 1.0, 1.0, 0.25, 0.0, 0.0]]).expand(4, 6)
    )
    expected_second = 0.5 * coverage[0, ..., 0] + 2.0 * (1 - coverage[0, ..., 0])
    torch.testing.assert_close(image[0, ..., 1], expected_second)
    fragments = rasterize_supersampled(screen, faces, 4, 6, factor=4)
    assert fragments.face_id.shape == (1, 16, 24)


def test_vertex_normals_of_a_sphere_are_radial_and_area_weighted():
    vertices, faces = icosphere(2)
    cosine = (vertex_normals(vertices, faces) * vertices).sum(-1)
    assert cosine.min() > 0.999 and torch.allclose(
        vertex_normals(vertices, faces).norm(dim=-1), torch.ones(1).double()
    )
    # Two faces sharing vertex 0: a big one in the z = 0 plane and a small one in the x = 0 plane.
    points = torch.tensor([[0.0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    two_faces = torch.tensor([[0, 1, 2], [0, 3, 4]])
    normals = face_normals(points[None], two_faces)[0]
    torch.testing.assert_close(normals, torch.tensor([[0.0, 0, 1], [1, 0, 0]], dtype=torch.float64))
    expected = F.normalize(torch.tensor([0.0, 0, 1]) * 8.0 + torch.tensor([1.0, 0, 0]) * 0.5, dim=0)
    torch.testing.assert_close(vertex_normals(points, two_faces)[0], expected.double())


# ---------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("perspective", [True, False])
def test_nvdiffrast_clip_space_conversion_round_trips(perspective):
    """The adapter's clip space maps back onto our pixel grid and keeps the depth order."""
    from headforge.raster.nvdiffrast_backend import clip_space_corners

    generator = torch.Generator().manual_seed(6)
    height, width = 24, 40
    corners = torch.rand(2, 5, 3, 3, generator=generator, dtype=torch.float64)
    corners = corners * torch.tensor([width, height, 2.0], dtype=torch.float64) + torch.tensor(
        [0.0, 0.0, 1.0]
    )
    if not perspective:
        corners[..., 2] -= 2.0  # orthographic depths may be negative
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[1, 3] = False
    corners[1, 3, 0, 0] = float("nan")
    clip = clip_space_corners(corners, keep, height, width, perspective).double()
    ndc = clip[..., :3] / clip[..., 3:]
    kept = keep[..., None].expand(2, 5, 3)
    torch.testing.assert_close(
        ((ndc[..., 0] + 1) / 2 * width)[kept], corners[..., 0][kept], atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        ((ndc[..., 1] + 1) / 2 * height)[kept], corners[..., 1][kept], atol=1e-4, rtol=0
    )
    depth, ndc_depth = corners[..., 2][kept], ndc[..., 2][kept]
    assert (ndc_depth.abs() < 1).all()
    order = depth.argsort()
    assert (ndc_depth[order].diff() > 0).all()
    if perspective:
        torch.testing.assert_close(clip[..., 3][kept], depth, atol=1e-5, rtol=1e-6)
    assert torch.isfinite(clip).all() and (clip[1, 3] == clip[1, 3, :1]).all()


def test_backend_selection():
    screen = torch.tensor([[2.0, 2.0, 1.0], [3.0, 14.0, 1.0], [14.0, 8.0, 1.0]])
    faces = torch.tensor([[0, 1, 2]])
    reference = rasterize(screen, faces, 16, 16, backend="torch")
    assert torch.equal(rasterize(screen, faces, 16, 16, backend="auto").face_id, reference.face_id)
    with pytest.raises(ValueError):
        rasterize(screen, faces, 16, 16, backend="opengl")
    with pytest.raises((ImportError, ValueError)):  # no nvdiffrast here, and CPU tensors
        rasterize(screen, faces, 16, 16, backend="nvdiffrast")
