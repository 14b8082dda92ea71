"""Tests for headforge.render: ray/box intersection, sampling, compositing, the two-pass renderer."""

from __future__ import annotations

import math

import pytest
import torch

from headforge.render import (
    RenderingOptions,
    VolumeRenderer,
    composite,
    importance_depths,
    ray_aabb_intersect,
    sample_pdf,
    smooth_weights,
    stratified_depths,
)

# ----------------------------------------------------------------------------- helpers


def _rays_towards_minus_z(xy: torch.Tensor, z0: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, R, 3) origins at (x, y, z0) with direction (0, 0, -1)."""
    origins = torch.cat([xy, torch.full_like(xy[:, :1], z0)], dim=-1).unsqueeze(0)
    directions = torch.tensor([0.0, 0.0, -1.0]).expand_as(origins).contiguous()
    return origins, directions


class SlabField:
    """Density ``sigma`` where ``|z - center| < thickness / 2``, zero elsewhere; features = (1, z)."""

    def __init__(self, sigma: float, thickness: float, center: float = 0.0) -> None:
        self.sigma, self.thickness, self.center = sigma, thickness, center

    def __call__(self, points: torch.Tensor, directions: torch.Tensor) -> dict[str, torch.Tensor]:
        inside = (points[..., 2:] - self.center).abs() < self.thickness / 2
        sigma = torch.where(
            inside, torch.full_like(points[..., 2:], self.sigma), torch.zeros_like(points[..., 2:])
        )
        features = torch.cat([torch.ones_like(sigma), points[..., 2:]], dim=-1)
        return {"sigma": sigma, "features": features}


class SphereField:
    """Density ``sigma`` inside a sphere of ``radius`` at the origin; extra ``mask`` output of ones."""

    def __init__(self, sigma: float, radius: float) -> None:
        self.sigma, self.radius = sigma, radius

    def __call__(self, points: torch.Tensor, directions: torch.Tensor) -> dict[str, torch.Tensor]:
        inside = points.norm(dim=-1, keepdim=True) < self.radius
        sigma = inside.to(points.dtype) * self.sigma
        return {"sigma": sigma, "features": points.clone(), "mask": torch.ones_like(sigma)}


class SmoothField(torch.nn.Module):
    """Differentiable analytic field with parameters: sigma = a * exp(-|p|^2), features = sin(w . p)."""

    def __init__(self) -> None:
        super().__init__()
        self.amplitude = torch.nn.Parameter(torch.tensor(3.0))
        self.frequency = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.5]))

    def forward(self, points: torch.Tensor, directions: torch.Tensor) -> dict[str, torch.Tensor]:
        sigma = self.amplitude * torch.exp(-(points**2).sum(-1, keepdim=True) * 4)
        features = torch.cat([torch.sin(points @ self.frequency).unsqueeze(-1), directions[..., :1]], dim=-1)
        return {"sigma": sigma, "features": features}


# ----------------------------------------------------------------------------- rays


def test_ray_aabb_hand_cases() -> None:
    s3 = math.sqrt(3.0)
    origins = torch.tensor(
        [[[0.0, 0.0, 2.0], [-1.0, -1.0, -1.0], [0.0, 2.0, 2.0], [0.1, 0.2, 0.0], [0.0, 0.0, 2.0]]]
    )
    directions = torch.tensor(
        [[[0.0, 0.0, -1.0], [1 / s3, 1 / s3, 1 / s3], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    )
    near, far, hit = ray_aabb_intersect(origins, directions)
    assert hit.tolist() == [[True, True, False, True, False]]
    assert near[0, 0].item() == pytest.approx(1.5) and far[0, 0].item() == pytest.approx(2.5)
    assert near[0, 1].item() == pytest.approx(0.5 * s3, rel=1e-6) and far[0, 1].item() == pytest.approx(
        1.5 * s3
    )
    # Origin inside: sampling starts at the origin.
    assert near[0, 3].item() == 0.0 and far[0, 3].item() == pytest.approx(0.4)
    assert torch.isfinite(near).all() and not torch.isnan(far).any()


def test_ray_aabb_matches_dense_marching() -> None:
    gen = torch.Generator().manual_seed(0)
    origins = torch.randn(1, 200, 3, generator=gen) * 1.5
    directions = torch.nn.functional.normalize(torch.randn(1, 200, 3, generator=gen), dim=-1)
    directions[0, :20, 0] = 0.0  # zero components must not produce NaN
    directions = torch.nn.functional.normalize(directions, dim=-1)
    lo, hi = (-0.3, -0.5, -0.2), (0.4, 0.5, 0.6)
    near, far, hit = ray_aabb_intersect(origins, directions, lo, hi)
    t = torch.linspace(0, 6, 60001).view(1, 1, -1, 1)
    points = origins.unsqueeze(2) + t * directions.unsqueeze(2)
    inside = ((points >= torch.tensor(lo)) & (points <= torch.tensor(hi))).all(-1)  # (1, R, T)
    assert torch.equal(inside.any(-1), hit)
    t_flat = t.view(-1)
    first = torch.where(inside, t_flat, torch.inf).amin(-1)
    last = torch.where(inside, t_flat, -torch.inf).amax(-1)
    step = 6 / 60000
    assert torch.allclose(near[..., 0][hit], first[hit], atol=2 * step)
    assert torch.allclose(far[..., 0][hit], last[hit], atol=2 * step)


# ----------------------------------------------------------------------------- sampling


def test_stratified_depths_linspace_and_bins() -> None:
    near = torch.tensor([[[1.0], [2.0]]])
    far = torch.tensor([[[3.0], [2.5]]])
    fixed = stratified_depths(near, far, 5, perturb=False)
    assert fixed.shape == (1, 2, 5, 1)
    assert torch.allclose(fixed[0, 0, :, 0], torch.linspace(1, 3, 5))
    assert torch.allclose(fixed[0, 1, :, 0], torch.linspace(2, 2.5, 5))

    gen = torch.Generator().manual_seed(1)
    jittered = stratified_depths(near.expand(1, 2, 1), far, 5, perturb=True, generator=gen)
    step = (far - near) / 4
    offset = jittered - fixed
    assert (offset >= 0).all() and (offset < step.unsqueeze(-2)).all()
    assert (jittered[:, :, 1:] > jittered[:, :, :-1]).all()
    assert offset.std() > 0.1 * step.min()  # actually jittered
    again = stratified_depths(near, far, 5, perturb=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, jittered)


def test_stratified_depths_disparity_space() -> None:
    near, far = torch.full((1, 3, 1), 1.0), torch.full((1, 3, 1), 4.0)
    fixed = stratified_depths(near, far, 4, perturb=False, disparity_space=True)
    assert torch.allclose(1 / fixed[0, 0, :, 0], torch.linspace(1.0, 0.25, 4))
    jittered = stratified_depths(
        near, far, 4, perturb=True, disparity_space=True, generator=torch.Generator()
    )
    disparity_step = (1.0 - 0.25) / 3
    shift = 1 / fixed - 1 / jittered  # disparity decreases with depth
    assert (shift >= -1e-6).all() and (shift < disparity_step + 1e-6).all()


def test_sample_pdf_delta_bump() -> None:
    bins = torch.linspace(0, 1, 21).expand(8, 21)
    weights = torch.zeros(8, 20)
    weights[:, 7] = 1.0
    samples = sample_pdf(bins, weights, 64, generator=torch.Generator().manual_seed(0))
    inside = (samples >= 0.35) & (samples <= 0.40)
    assert inside.float().mean() > 0.99


def test_sample_pdf_histogram_matches_pdf() -> None:
    gen = torch.Generator().manual_seed(3)
    edges = torch.cumsum(torch.rand(11, generator=gen) + 0.2, 0)
    weights = torch.rand(10, generator=gen) + 0.05
    weights[4] = 0.0
    n = 100_000
    samples = sample_pdf(edges.unsqueeze(0), weights.unsqueeze(0), n, generator=gen)[0]
    counts = torch.stack(
        [((samples >= edges[j]) & (samples < edges[j + 1])).sum() for j in range(10)]
    ).double()
    expected = n * (weights.double() + 1e-5) / (weights.double() + 1e-5).sum()
    chi2 = (((counts - expected) ** 2) / expected.clamp_min(1e-3)).sum()
    assert chi2 < 35.0  # 9 dof: p(chi2 > 27.9) = 0.001
    # Uniform inside a bin: the mean sample of bin 2 sits at its centre.
    in_bin = samples[(samples >= edges[2]) & (samples < edges[3])]
    assert in_bin.mean().item() == pytest.approx(((edges[2] + edges[3]) / 2).item(), abs=0.01)


def test_sample_pdf_deterministic_inverts_cdf() -> None:
    edges = torch.tensor([[0.0, 1.0, 1.5, 4.0, 5.0]])
    weights = torch.tensor([[1.0, 3.0, 2.0, 4.0]])
    samples = sample_pdf(edges, weights, 50, deterministic=True, eps=0.0)[0]
    pdf = weights[0] / weights.sum()
    cdf_edges = torch.cat([torch.zeros(1), pdf.cumsum(0)])
    # Analytic CDF at the samples (piecewise linear), must equal the quantiles.
    j = torch.searchsorted(edges[0], samples, right=True).clamp(1, 4) - 1
    cdf = cdf_edges[j] + (samples - edges[0, j]) / (edges[0, j + 1] - edges[0, j]) * pdf[j]
    assert torch.allclose(cdf, torch.linspace(0, 1, 50), atol=1e-5)


def test_smooth_weights_closed_form() -> None:
    weights = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.4]])
    expected = torch.tensor([[0.5, 1.0, 0.5, 0.2, 0.4]]) + 0.01
    assert torch.allclose(smooth_weights(weights), expected)


def test_importance_depths_follow_coarse_weights() -> None:
    coarse = stratified_depths(torch.full((2, 3, 1), 1.0), torch.full((2, 3, 1), 2.0), 32, perturb=False)
    weights = torch.zeros(2, 3, 31, 1)
    weights[..., 20, 0] = 1.0
    fine = importance_depths(coarse, weights, 200, generator=torch.Generator().manual_seed(0))
    assert fine.shape == (2, 3, 200, 1) and not fine.requires_grad
    midpoints = 0.5 * (coarse[..., 1:, :] + coarse[..., :-1, :])
    # EG3D's smoothing spreads interval 20 over the bins between midpoints 18 and 21.
    near_bump = (fine >= midpoints[..., 18:19, :]) & (fine <= midpoints[..., 21:22, :])
    assert near_bump.float().mean() > 0.8
    assert (fine >= midpoints[..., :1, :]).all() and (fine <= midpoints[..., -2:-1, :]).all()


# ----------------------------------------------------------------------------- compositing


def test_composite_constant_density_closed_form() -> None:
    depths = torch.sort(torch.rand(2, 5, 17, 1) * 3 + 1, dim=-2).values
    sigma = torch.full((2, 5, 17, 1), 0.7)
    features = torch.tensor([0.2, -0.5, 0.9]).expand(2, 5, 17, 3)
    out = composite(features, sigma, depths, density_activation="identity", density_shift=0.0)
    expected = 1 - torch.exp(-0.7 * (depths[:, :, -1] - depths[:, :, 0]))
    assert torch.allclose(out["opacity"], expected, atol=1e-6)
    assert torch.allclose(out["features"], features[:, :, 0] * expected, atol=1e-6)
    assert out["weights"].shape == (2, 5, 16, 1)
    white = composite(features, sigma, depths, "identity", 0.0, white_background=True)
    assert torch.allclose(white["features"], out["features"] + 1 - expected, atol=1e-6)


def test_composite_matches_midpoint_sum_and_softplus() -> None:
    gen = torch.Generator().manual_seed(0)
    depths = torch.sort(torch.rand(1, 4, 9, 1, generator=gen) * 2 + 1, dim=-2).values
    sigma = torch.randn(1, 4, 9, 1, generator=gen) * 3
    features = torch.randn(1, 4, 9, 2, generator=gen)
    extra = torch.randn(1, 4, 9, 1, generator=gen)
    out = composite(features, sigma, depths, extras={"semantic": extra})
    # Explicit loop over intervals with EG3D's softplus(sigma - 1).
    transmittance = torch.ones(1, 4, 1)
    feat, depth_sum, opacity, sem = 0, 0, 0, 0
    for i in range(8):
        density = torch.nn.functional.softplus((sigma[:, :, i] + sigma[:, :, i + 1]) / 2 - 1)
        alpha = 1 - torch.exp(-density * (depths[:, :, i + 1] - depths[:, :, i]))
        w = alpha * transmittance
        feat = feat + w * (features[:, :, i] + features[:, :, i + 1]) / 2
        sem = sem + w * (extra[:, :, i] + extra[:, :, i + 1]) / 2
        depth_sum = depth_sum + w * (depths[:, :, i] + depths[:, :, i + 1]) / 2
        opacity = opacity + w
        transmittance = transmittance * (1 - alpha + 1e-10)
    assert torch.allclose(out["features"], feat, atol=1e-6)
    assert torch.allclose(out["semantic"], sem, atol=1e-6)
    assert torch.allclose(out["opacity"], opacity, atol=1e-6)
    assert torch.allclose(out["depth"], depth_sum / opacity, atol=1e-5)


def test_composite_depth_of_opaque_wall_and_empty_rays() -> None:
    depths = torch.linspace(1, 3, 21).view(1, 1, 21, 1).expand(1, 2, 21, 1)
    sigma = torch.zeros(1, 2, 21, 1)
    sigma[0, 0, 10:12] = 1e4  # samples at depths 2.0 and 2.1
    out = composite(torch.zeros(1, 2, 21, 1), sigma, depths, "identity", 0.0)
    # Midpoint rule: interval [1.9, 2.0] already has density 5e3, so it takes all the weight.
    assert out["depth"][0, 0].item() == pytest.approx(1.95, abs=1e-3)
    assert out["opacity"][0, 0].item() == pytest.approx(1.0, abs=1e-6)
    # An empty ray: 0/0 depth becomes the last depth, no NaN.
    assert out["opacity"][0, 1].item() == 0.0 and out["depth"][0, 1].item() == pytest.approx(3.0)


def test_composite_gradcheck() -> None:
    gen = torch.Generator().manual_seed(0)
    depths = torch.sort(torch.rand(1, 2, 6, 1, generator=gen, dtype=torch.float64) + 1, dim=-2).values
    sigma = torch.randn(1, 2, 6, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    features = torch.randn(1, 2, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def fn(s: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = composite(f, s, depths)
        return out["features"], out["depth"], out["opacity"]

    assert torch.autograd.gradcheck(fn, (sigma, features))


# ----------------------------------------------------------------------------- renderer


def test_renderer_slab_opacity_closed_form() -> None:
    origins, directions = _rays_towards_minus_z(torch.rand(6, 2) - 0.5)
    options = RenderingOptions(
        num_coarse=2001,
        num_fine=0,
        ray_start=1.0,
        ray_end=3.0,
        density_activation="identity",
        density_shift=0.0,
        perturb=False,
    )
    out = VolumeRenderer(options)(SlabField(sigma=2.0, thickness=0.5), origins, directions)
    expected = 1 - math.exp(-2.0 * 0.5)
    assert torch.allclose(out["opacity"], torch.full_like(out["opacity"], expected), atol=1e-3)
    relu = VolumeRenderer(RenderingOptions(2001, 0, 1.0, 3.0, density_activation="relu", density_shift=0.0))
    out_relu = relu(SlabField(2.0, 0.5), origins, directions, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out_relu["opacity"], out["opacity"], atol=2e-3)


def test_renderer_softplus_constant_field_two_pass() -> None:
    origins, directions = _rays_towards_minus_z(torch.rand(5, 2) - 0.5)

    def field(points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sigma": torch.full_like(points[..., :1], 0.3), "features": torch.ones_like(points[..., :2])}

    renderer = VolumeRenderer(
        RenderingOptions(num_coarse=16, num_fine=16, ray_start=1.2, ray_end=2.9, perturb=False)
    )
    out = renderer(field, origins, directions)
    expected = 1 - math.exp(-torch.nn.functional.softplus(torch.tensor(0.3 - 1.0)).item() * 1.7)
    assert torch.allclose(out["opacity"], torch.full_like(out["opacity"], expected), atol=1e-5)
    assert torch.allclose(out["features"], out["opacity"].expand(-1, -1, 2), atol=1e-5)
    assert out["sample_depths"].shape == (1, 5, 32, 1) and out["weights"].shape == (1, 5, 31, 1)
    assert (out["sample_depths"][:, :, 1:] >= out["sample_depths"][:, :, :-1]).all()


def test_renderer_thin_wall_depth() -> None:
    origins, directions = _rays_towards_minus_z(torch.rand(16, 2) - 0.5, z0=2.0)
    options = RenderingOptions(ray_start=1.0, ray_end=3.0, density_activation="relu", density_shift=0.0)
    renderer = VolumeRenderer(options)
    wall = SlabField(sigma=1e4, thickness=0.05, center=0.3)  # front face at z = 0.325 -> distance 1.675
    out = renderer(wall, origins, directions, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out["opacity"], torch.ones_like(out["opacity"]), atol=1e-4)
    assert torch.allclose(out["depth"], torch.full_like(out["depth"], 1.675), atol=0.01)
    # The composited feature z (channel 1) is the wall's front face too.
    assert torch.allclose(out["features"][..., 1], torch.full_like(out["features"][..., 1], 0.325), atol=0.01)


def test_renderer_sphere_depth_matches_analytic_intersection() -> None:
    gen = torch.Generator().manual_seed(0)
    radius, eye = 0.3, torch.tensor([0.0, 0.0, 2.7])
    targets = torch.rand(64, 3, generator=gen) * 0.8 - 0.4
    targets[:, 2] = 0.0
    directions = torch.nn.functional.normalize(targets - eye, dim=-1).unsqueeze(0)
    origins = eye.expand(1, 64, 3).contiguous()
    options = RenderingOptions(ray_start="auto", ray_end="auto", density_activation="relu", density_shift=0.0)
    out = VolumeRenderer(options)(SphereField(500.0, radius), origins, directions, generator=gen)
    # Analytic entry distance: |o + t d|^2 = r^2.
    b = (origins * directions).sum(-1)
    c = (origins**2).sum(-1) - radius**2
    disc = b**2 - c
    hits = disc > 1e-3
    t_entry = -b - disc.clamp_min(0).sqrt()
    assert 10 < hits.sum() < 60
    assert torch.allclose(out["depth"][..., 0][hits], t_entry[hits], atol=0.015)
    assert (out["opacity"][..., 0][hits] > 0.99).all()
    misses = disc < -1e-2
    assert (out["opacity"][..., 0][misses] < 1e-3).all()
    assert torch.allclose(out["mask"], out["opacity"], atol=1e-6)  # extras are composited


def test_renderer_auto_bounds_missing_box() -> None:
    origins = torch.tensor([[[0.0, 0.0, 2.0], [3.0, 3.0, 2.0]]])
    directions = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]])
    options = RenderingOptions(num_coarse=8, num_fine=8, ray_start="auto", ray_end="auto")
    out = VolumeRenderer(options)(SphereField(50.0, 0.4), origins, directions)
    assert out["opacity"][0, 1].item() == 0.0
    assert torch.isfinite(out["depth"]).all() and torch.isfinite(out["features"]).all()
    assert out["sample_depths"][0, 0].min() >= 1.5 - 1e-6


def test_renderer_chunked_equals_unchunked() -> None:
    gen_rays = torch.Generator().manual_seed(0)
    origins = torch.randn(2, 37, 3, generator=gen_rays) * 0.1 + torch.tensor([0.0, 0.0, 2.7])
    directions = torch.nn.functional.normalize(
        -origins + torch.randn(2, 37, 3, generator=gen_rays) * 0.1, dim=-1
    )
    field = SmoothField()
    results = []
    for chunk in (None, 5, 36):
        options = RenderingOptions(num_coarse=12, num_fine=10, chunk_size=chunk, density_noise=0.1)
        results.append(
            VolumeRenderer(options)(field, origins, directions, generator=torch.Generator().manual_seed(7))
        )
    for other in results[1:]:
        for name in results[0]:
            assert torch.allclose(results[0][name], other[name], atol=1e-6, rtol=1e-5), name


def test_renderer_density_noise_more_fine_than_coarse_samples() -> None:
    origins, directions = _rays_towards_minus_z(torch.rand(4, 2) * 0.4 - 0.2, z0=2.7)
    outputs = []
    for noise in (0.0, 0.5):
        options = RenderingOptions(num_coarse=6, num_fine=10, ray_start=2.0, ray_end=3.4, density_noise=noise)
        renderer = VolumeRenderer(options)
        outputs.append(
            renderer(SmoothField(), origins, directions, generator=torch.Generator().manual_seed(0))
        )
    assert outputs[1]["sample_depths"].shape == (1, 4, 16, 1)
    assert not torch.allclose(outputs[0]["opacity"], outputs[1]["opacity"])


def test_renderer_merged_composite_equals_sorted_gather() -> None:
    """The renderer's per-pass weighted sums equal EG3D's cat + sort + gather + composite."""
    field = SmoothField()
    origins, directions = _rays_towards_minus_z(torch.rand(7, 2) * 0.6 - 0.3, z0=2.7)
    renderer = VolumeRenderer(RenderingOptions(num_coarse=10, num_fine=12, ray_start=2.0, ray_end=3.3))
    out = renderer(field, origins, directions, generator=torch.Generator().manual_seed(1))
    depths = out["sample_depths"]
    points = origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)
    values = field(points.reshape(1, -1, 3), directions.unsqueeze(-2).expand_as(points).reshape(1, -1, 3))
    reference = composite(values["features"].view(1, 7, 22, 2), values["sigma"].view(1, 7, 22, 1), depths)
    for name in ("features", "depth", "opacity", "weights"):
        assert torch.allclose(out[name], reference[name], atol=1e-6), name


def test_renderer_gradients_reach_field_parameters() -> None:
    field = SmoothField()
    origins, directions = _rays_towards_minus_z(torch.rand(9, 2) * 0.6 - 0.3, z0=2.7)
    out = VolumeRenderer(RenderingOptions(num_coarse=12, num_fine=12))(field, origins, directions)
    (out["features"].sum() + out["depth"].sum()).backward()
    for parameter in field.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
        assert parameter.grad.abs().sum() > 0


def test_renderer_single_pass_gradcheck() -> None:
    origins, directions = _rays_towards_minus_z(torch.rand(3, 2).double() * 0.6 - 0.3, z0=2.7)
    options = RenderingOptions(num_coarse=8, num_fine=0, ray_start=2.2, ray_end=3.2, perturb=False)
    renderer = VolumeRenderer(options)

    def fn(amplitude: torch.Tensor, frequency: torch.Tensor) -> tuple[torch.Tensor, ...]:
        def field(points: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
            sigma = amplitude * torch.exp(-(points**2).sum(-1, keepdim=True) * 4)
            return {"sigma": sigma, "features": torch.sin(points @ frequency).unsqueeze(-1)}

        out = renderer(field, origins, directions)
        return out["features"], out["depth"], out["opacity"]

    amplitude = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    frequency = torch.tensor([1.0, 2.0, -1.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (amplitude, frequency))


def test_renderer_rejects_bad_fields_and_options() -> None:
    origins, directions = _rays_towards_minus_z(torch.zeros(2, 2))
    renderer = VolumeRenderer(RenderingOptions(num_coarse=4, num_fine=0))
    with pytest.raises(KeyError):
        renderer(lambda p, d: {"features": p}, origins, directions)
    with pytest.raises(ValueError):
        renderer(lambda p, d: {"sigma": p[..., :1], "features": p, "depth": p}, origins, directions)
    with pytest.raises(ValueError):
        RenderingOptions(ray_start="near")
    with pytest.raises(ValueError):
        RenderingOptions(density_activation="sigmoid")
