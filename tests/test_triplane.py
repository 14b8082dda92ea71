"""Tests for headforge.nn.triplane: projection layouts, tri-plane sampling, decoder and field."""

from __future__ import annotations

import pytest
import torch

from headforge.nn.triplane import (
    PLANE_LAYOUTS,
    TriplaneDecoder,
    TriplaneField,
    mean_over_planes,
    project_to_planes,
    sample_triplanes,
)
from headforge.render import RenderingOptions, VolumeRenderer

# EG3D's generate_planes(): each plane as three row vectors (NVlabs/eg3d,
# training/volumetric_rendering/renderer.py); project_onto_planes multiplies
# the coordinates by the inverse and keeps two columns.
EG3D_PLANE_MATRICES = torch.tensor(
    [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
        [[0, 0, 1], [1, 0, 0], [0, 1, 0]],
    ],
    dtype=torch.float32,
)


def _linear_planes(height: int, width: int, coefficients: torch.Tensor) -> torch.Tensor:
    """(1, 3, C, H, W) planes whose value at texel centre (u, v) is ``a * u + b * v + c``.

    ``coefficients`` is (3, C, 3) holding (a, b, c) per plane and channel;
    ``u`` runs along W and ``v`` along H in grid_sample's [-1, 1] coordinates
    with align_corners=False (texel j's centre at (2j + 1) / size - 1).
    """
    u = (2 * torch.arange(width) + 1) / width - 1
    v = (2 * torch.arange(height) + 1) / height - 1
    a, b, c = coefficients.unbind(-1)  # (3, C) each
    planes = a[..., None, None] * u + b[..., None, None] * v[:, None] + c[..., None, None]
    return planes.unsqueeze(0)


def test_project_to_planes_layouts_and_box_warp() -> None:
    point = torch.tensor([[[0.1, -0.2, 0.3]]])
    default = project_to_planes(point, "xy_xz_yz", box_warp=2.0)[0, :, 0]
    assert torch.allclose(default, torch.tensor([[0.1, -0.2], [0.1, 0.3], [-0.2, 0.3]]))
    eg3d = project_to_planes(point, "eg3d", box_warp=2.0)[0, :, 0]
    assert torch.allclose(eg3d, torch.tensor([[0.1, -0.2], [0.1, 0.3], [0.3, 0.1]]))
    # box_warp: the cube corner maps to the grid corner.
    corner = torch.tensor([[[0.35, -0.35, 0.35]]])
    assert torch.allclose(project_to_planes(corner, box_warp=0.7).abs(), torch.ones(1, 3, 1, 2))
    assert project_to_planes(torch.zeros(2, 5, 3)).shape == (2, 3, 5, 2)


def test_eg3d_layout_reproduces_eg3d_matrices() -> None:
    points = torch.randn(2, 50, 3)
    expected = torch.einsum("bnk,pkj->bpnj", points, torch.linalg.inv(EG3D_PLANE_MATRICES))[..., :2]
    assert torch.allclose(project_to_planes(points, "eg3d", box_warp=2.0), expected, atol=1e-6)
    assert set(PLANE_LAYOUTS) == {"xy_xz_yz", "eg3d"}


@pytest.mark.parametrize("layout", sorted(PLANE_LAYOUTS))
def test_sampling_linear_planes_is_exact(layout: str) -> None:
    gen = torch.Generator().manual_seed(0)
    height, width, channels, box_warp = 12, 16, 4, 1.5
    coefficients = torch.randn(3, channels, 3, generator=gen)
    planes = _linear_planes(height, width, coefficients)
    # Stay between the outermost texel centres, where bilinear interpolation of a linear function is exact.
    margin = 1.0 / min(height, width)
    points = (torch.rand(1, 200, 3, generator=gen) * 2 - 1) * (1 - margin) * box_warp / 2
    sampled = sample_triplanes(planes, points, layout=layout, box_warp=box_warp)
    assert sampled.shape == (1, 3, 200, channels)
    normalised = points * 2 / box_warp
    for plane, (u_axis, v_axis) in enumerate(PLANE_LAYOUTS[layout]):
        u, v = normalised[0, :, u_axis, None], normalised[0, :, v_axis, None]
        a, b, c = coefficients[plane].unbind(-1)
        assert torch.allclose(sampled[0, plane], a * u + b * v + c, atol=1e-5), plane


def test_layouts_differ_only_in_third_plane() -> None:
    gen = torch.Generator().manual_seed(1)
    planes = torch.randn(2, 3, 5, 9, 7, generator=gen)
    points = torch.rand(2, 64, 3, generator=gen) - 0.5
    default = sample_triplanes(planes, points, "xy_xz_yz")
    eg3d = sample_triplanes(planes, points, "eg3d")
    assert torch.equal(default[:, :2], eg3d[:, :2])
    assert not torch.allclose(default[:, 2], eg3d[:, 2])
    # EG3D's third plane reads (u, v) = (z, x); the default reads (y, z): feed (_, z, x).
    x, y, z = points.unbind(-1)
    swapped = torch.stack([y, z, x], dim=-1)
    assert torch.allclose(sample_triplanes(planes, swapped, "xy_xz_yz")[:, 2], eg3d[:, 2], atol=1e-6)


def test_plane_axes_are_width_then_height() -> None:
    planes = torch.zeros(1, 3, 1, 4, 8)
    planes[0, 0, 0, 1, 6] = 1.0  # plane 0 (XY): row (H) 1, column (W) 6
    # Texel centres in world units for box_warp = 1: u = ((2j + 1) / W - 1) / 2.
    x = ((2 * 6 + 1) / 8 - 1) / 2
    y = ((2 * 1 + 1) / 4 - 1) / 2
    sampled = sample_triplanes(planes, torch.tensor([[[x, y, 0.0], [y, x, 0.0]]]))
    assert sampled[0, 0, 0, 0].item() == pytest.approx(1.0)
    assert sampled[0, 0, 1, 0].item() == 0.0
    # Outside the cube: zero padding.
    assert sample_triplanes(planes + 1, torch.tensor([[[2.0, 2.0, 2.0]]])).abs().max() == 0


def test_sample_triplanes_gradcheck() -> None:
    gen = torch.Generator().manual_seed(2)
    planes = torch.randn(1, 3, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    points = (torch.rand(1, 7, 3, generator=gen, dtype=torch.float64) - 0.5) * 0.8
    points.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, x: sample_triplanes(p, x, "eg3d"), (planes, points))


def test_mean_over_planes_any_layout() -> None:
    storage = torch.randn(2, 3, 5, 7)  # (B, 3, C, N)
    transposed = storage.transpose(2, 3)
    expected = (transposed[:, 0] + transposed[:, 1] + transposed[:, 2]) / 3
    assert torch.allclose(mean_over_planes(transposed), expected, atol=1e-6)
    assert torch.allclose(mean_over_planes(transposed.contiguous()), expected, atol=1e-6)


def test_decoder_matches_explicit_mlp() -> None:
    torch.manual_seed(0)
    decoder = TriplaneDecoder(in_features=6, hidden=8, out_features=5, lr_multiplier=0.5)
    sampled = torch.randn(2, 3, 11, 6)
    out = decoder(sampled)
    assert out["sigma"].shape == (2, 11, 1) and out["features"].shape == (2, 11, 5)
    # Equalised learning rate: effective weight = stored * lr / sqrt(fan_in), bias = stored * lr.
    fc1, fc2 = decoder.net[0], decoder.net[2]
    w1, b1 = fc1.weight * 0.5 / 6**0.5, fc1.bias * 0.5
    w2, b2 = fc2.weight * 0.5 / 8**0.5, fc2.bias * 0.5
    x = sampled.mean(dim=1)
    raw = torch.nn.functional.softplus(x @ w1.T + b1) @ w2.T + b2
    assert torch.allclose(out["sigma"], raw[..., :1], atol=1e-5)
    assert torch.allclose(out["features"], torch.sigmoid(raw[..., 1:]) * 1.002 - 0.001, atol=1e-5)
    # The plane mean makes the decoder blind to plane order.
    permuted = decoder(sampled[:, [2, 0, 1]])
    assert torch.allclose(permuted["features"], out["features"], atol=1e-6)
    assert set(decoder.state_dict()) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}


def test_triplane_field_renders_and_backpropagates() -> None:
    torch.manual_seed(0)
    planes = torch.randn(2, 3, 8, 16, 16, requires_grad=True)
    decoder = TriplaneDecoder(in_features=8, hidden=16, out_features=4)
    field = TriplaneField(planes, decoder, layout="eg3d", box_warp=1.0)
    points = torch.rand(2, 30, 3) - 0.5
    direct = decoder(sample_triplanes(planes, points, "eg3d"))
    via_field = field(points, torch.zeros_like(points))
    assert torch.allclose(via_field["features"], direct["features"], atol=1e-6)
    assert torch.allclose(via_field["sigma"], direct["sigma"], atol=1e-5)

    eye = torch.tensor([0.0, 0.0, 2.7])
    directions = torch.nn.functional.normalize(torch.rand(2, 20, 3) * 0.3 - 0.15 - eye, dim=-1)
    renderer = VolumeRenderer(RenderingOptions(num_coarse=8, num_fine=8))
    out = renderer(field, eye.expand(2, 20, 3), directions)
    assert out["features"].shape == (2, 20, 4)
    out["features"].sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


def test_invalid_layout_raises() -> None:
    with pytest.raises(ValueError):
        project_to_planes(torch.zeros(1, 1, 3), layout="xz_xy_zy")
