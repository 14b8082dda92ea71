"""Tests for headforge.lighting against closed forms, independent quadrature and scipy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.special import sph_harm_y

from headforge.lighting import (
    SH_CONSTANTS,
    directional_light_sh,
    envmap_directions,
    envmap_to_sh,
    irradiance,
    mirror_sh,
    render_sh_sphere,
    rotate_sh,
    save_sh_sphere_png,
    sh_basis,
    sh_radiance,
    sh_rotation_matrix,
    sh_to_envmap,
    shade_lambertian,
    sphere_normals,
    validate_sh,
)

DOUBLE = torch.float64
# (l, m) of each coefficient in the documented order.
LM = [(0, 0), (1, -1), (1, 0), (1, 1), (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)]


def random_unit(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, 3, generator=generator, dtype=DOUBLE), dim=-1)


def random_rotation(seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(*batch, 3, 3, generator=generator, dtype=DOUBLE))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    return q * torch.sign(torch.linalg.det(q))[..., None, None]  # proper rotation, det +1


def random_sh(seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*batch, 9, 3, generator=generator, dtype=DOUBLE)


def gauss_sphere_quadrature(n_polar: int = 8, n_azimuth: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre in cos(theta) x uniform azimuth; exact for the low-degree polynomials used here."""
    nodes, weights = np.polynomial.legendre.leggauss(n_polar)
    phi = (np.arange(n_azimuth) + 0.5) * 2 * np.pi / n_azimuth
    cos_t, phi = np.meshgrid(nodes, phi, indexing="ij")
    sin_t = np.sqrt(1 - cos_t**2)
    dirs = np.stack((sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t), -1).reshape(-1, 3)
    w = (weights[:, None] * np.full(n_azimuth, 2 * np.pi / n_azimuth)[None]).reshape(-1)
    return torch.from_numpy(dirs), torch.from_numpy(w)


def brute_force_irradiance(sh: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Integral of L(w) max(n . w, 0) over the hemisphere around n, with a quadrature aligned to n.

    The integrand is then a low-degree polynomial, so Gauss-Legendre (in cos) x uniform azimuth
    integrates it exactly, independently of the Ramamoorthi-Hanrahan constants.
    """
    nodes, weights = np.polynomial.legendre.leggauss(8)
    mu = torch.from_numpy((nodes + 1) / 2)  # cos of the angle to n, in [0, 1]
    w_mu = torch.from_numpy(weights / 2)
    phi = (torch.arange(16, dtype=DOUBLE) + 0.5) * 2 * math.pi / 16
    helper = (
        torch.tensor([1.0, 0.0, 0.0], dtype=DOUBLE) if abs(normal[0]) < 0.9 else torch.tensor([0.0, 1.0, 0])
    )
    tangent = F.normalize(torch.linalg.cross(normal, helper.to(DOUBLE)), dim=0)
    bitangent = torch.linalg.cross(normal, tangent)
    mu, phi = torch.meshgrid(mu, phi, indexing="ij")
    sin = torch.sqrt(1 - mu**2)
    dirs = (
        mu[..., None] * normal
        + (sin * torch.cos(phi))[..., None] * tangent
        + (sin * torch.sin(phi))[..., None] * bitangent
    )
    weight = w_mu[:, None] * (2 * math.pi / 16) * mu
    return (sh_radiance(sh, dirs) * weight[..., None]).sum(dim=(0, 1))


# --- basis ----------------------------------------------------------------------------


def test_constants_are_the_documented_values():
    documented = (0.282095, 0.488603, 1.092548, 0.315392, 0.546274)
    for value, expected in zip(SH_CONSTANTS, documented):
        assert value == pytest.approx(expected, abs=1e-6)


def test_basis_matches_scipy_real_harmonics():
    dirs = random_unit(20, seed=0)
    x, y, z = dirs.unbind(-1)
    polar, azimuth = torch.acos(z).numpy(), torch.atan2(y, x).numpy()
    expected = []
    for l, m in LM:
        # Real SH from complex ones, with the Condon-Shortley phase removed by (-1)^m.
        complex_y = sph_harm_y(l, abs(m), polar, azimuth)
        if m > 0:
            expected.append(math.sqrt(2) * (-1) ** m * complex_y.real)
        elif m < 0:
            expected.append(math.sqrt(2) * (-1) ** m * complex_y.imag)
        else:
            expected.append(complex_y.real)
    torch.testing.assert_close(sh_basis(dirs), torch.from_numpy(np.stack(expected, -1)))


def test_basis_orthonormal_by_quadrature():
    dirs, weights = gauss_sphere_quadrature()
    basis = sh_basis(dirs)
    gram = basis.T @ (basis * weights[:, None])
    torch.testing.assert_close(gram, torch.eye(9, dtype=DOUBLE), atol=1e-3, rtol=0)
    assert (gram - torch.eye(9, dtype=DOUBLE)).abs().max() < 1e-12  # the quadrature is exact here


def test_envmap_quadrature_is_orthonormal_and_covers_sphere():
    dirs, solid = envmap_directions(64, 128, dtype=DOUBLE)
    assert solid.sum().item() == pytest.approx(4 * math.pi, rel=1e-12)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(64, 128, dtype=DOUBLE))
    basis = sh_basis(dirs).reshape(-1, 9)
    gram = basis.T @ (basis * solid.reshape(-1, 1))
    torch.testing.assert_close(gram, torch.eye(9, dtype=DOUBLE), atol=1e-3, rtol=0)


def test_envmap_layout():
    dirs, _ = envmap_directions(4, 8, dtype=DOUBLE)
    # Centre column faces +z, three quarters across faces +x, row 0 is near +y.
    torch.testing.assert_close(
        F.normalize(dirs[1:3, 3:5].sum((0, 1)), dim=0), torch.tensor([0, 0, 1.0], dtype=DOUBLE)
    )
    torch.testing.assert_close(
        F.normalize(dirs[1:3, 5:7].sum((0, 1)), dim=0), torch.tensor([1.0, 0, 0], dtype=DOUBLE)
    )
    assert (dirs[0, :, 1] > 0.9).all()


# --- irradiance -------------------------------------------------------------------------


def test_constant_environment_gives_pi_l():
    radiance = torch.tensor([0.7, 1.3, 2.0], dtype=DOUBLE)
    sh = torch.zeros(9, 3, dtype=DOUBLE)
    sh[0] = radiance * math.sqrt(4 * math.pi)  # L00 = integral of L * Y00 = L * 0.282095 * 4 pi
    normals = random_unit(50, seed=1)
    torch.testing.assert_close(irradiance(normals, sh), math.pi * radiance.expand(50, 3))
    envmap = radiance.expand(16, 32, 3)
    torch.testing.assert_close(envmap_to_sh(envmap), sh, atol=1e-7, rtol=0)


def test_irradiance_matches_brute_force_integration():
    sh = random_sh(seed=2)
    for normal in random_unit(6, seed=3):
        torch.testing.assert_close(irradiance(normal, sh), brute_force_irradiance(sh, normal))


def test_irradiance_batch_alignment_and_lambertian():
    sh = random_sh(seed=4, batch=(2,))
    normals = random_unit(2 * 3 * 4, seed=5).reshape(2, 3, 4, 3)
    batched = irradiance(normals, sh)
    assert batched.shape == (2, 3, 4, 3)
    torch.testing.assert_close(batched[1], irradiance(normals[1], sh[1]))
    albedo = torch.tensor([0.2, 0.5, 0.9], dtype=DOUBLE)
    torch.testing.assert_close(shade_lambertian(albedo, normals, sh), albedo * batched / math.pi)


def test_irradiance_gradient():
    normals = random_unit(3, seed=6).requires_grad_(True)
    sh = random_sh(seed=7).requires_grad_(True)
    assert torch.autograd.gradcheck(irradiance, (normals, sh))


# --- env maps, rotation, mirroring --------------------------------------------------------


def test_envmap_sh_round_trip():
    sh = random_sh(seed=8, batch=(2,))
    envmap = sh_to_envmap(sh, 64, 128)
    assert envmap.shape == (2, 64, 128, 3)
    torch.testing.assert_close(envmap_to_sh(envmap), sh, atol=2e-3, rtol=0)
    torch.testing.assert_close(envmap_to_sh(sh_to_envmap(sh, 128, 256)), sh, atol=5e-4, rtol=0)


def test_rotate_sh_equals_rotated_evaluation():
    sh = random_sh(seed=9)
    rotation = random_rotation(seed=10)
    dirs = random_unit(40, seed=11)
    rotated = rotate_sh(sh, rotation)
    torch.testing.assert_close(sh_radiance(rotated, dirs @ rotation.T), sh_radiance(sh, dirs))
    # Band energy is preserved; band 0 untouched.
    matrix = sh_rotation_matrix(rotation)
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(9, dtype=DOUBLE))
    assert torch.equal(rotated[0], sh[0])


def test_rotate_sh_composition_identity_and_batch():
    sh = random_sh(seed=12, batch=(3,))
    r1, r2 = random_rotation(seed=13, batch=(3,)), random_rotation(seed=14, batch=(3,))
    torch.testing.assert_close(rotate_sh(rotate_sh(sh, r1), r2), rotate_sh(sh, r2 @ r1))
    torch.testing.assert_close(rotate_sh(sh, torch.eye(3, dtype=DOUBLE)), sh)
    torch.testing.assert_close(rotate_sh(sh, r1)[2], rotate_sh(sh[2], r1[2]))


def test_rotate_sh_moves_a_directional_light():
    rotation = random_rotation(seed=15)
    direction = torch.tensor([0.0, 0.6, 0.8], dtype=DOUBLE)
    torch.testing.assert_close(
        rotate_sh(directional_light_sh(direction), rotation), directional_light_sh(rotation @ direction)
    )


def test_rotate_sh_gradient():
    sh = random_sh(seed=16).requires_grad_(True)
    rotation = random_rotation(seed=17).requires_grad_(True)
    assert torch.autograd.gradcheck(rotate_sh, (sh, rotation))


def test_mirror_sh_matches_mirrored_envmap():
    sh = random_sh(seed=18)
    envmap = sh_to_envmap(sh, 32, 64) + torch.rand(32, 64, 3, dtype=DOUBLE)  # not band-limited
    torch.testing.assert_close(mirror_sh(envmap_to_sh(envmap)), envmap_to_sh(envmap.flip(-2)))
    dirs = random_unit(10, seed=19)
    flip = torch.tensor([-1.0, 1.0, 1.0], dtype=DOUBLE)
    torch.testing.assert_close(sh_radiance(mirror_sh(sh), dirs), sh_radiance(sh, dirs * flip))
    torch.testing.assert_close(mirror_sh(mirror_sh(sh)), sh)


# --- directional lights -------------------------------------------------------------------


def test_directional_light_brightness():
    direction = torch.tensor([[0.3, 0.5, 0.8], [-1.0, 0.2, 0.1]], dtype=DOUBLE)
    color = torch.tensor([[1.0, 0.5, 0.25], [0.3, 0.3, 0.3]], dtype=DOUBLE)
    sh = directional_light_sh(direction, color, ambient=0.1)
    assert sh.shape == (2, 9, 3)
    facing = F.normalize(direction, dim=-1)
    torch.testing.assert_close(shade_lambertian(1.0, facing, sh), color + 0.1)
    torch.testing.assert_close(shade_lambertian(1.0, -facing, sh), 0.1 + color / 17)
    # The brightest normal is the light direction.
    normals = random_unit(4000, seed=20)
    brightest = normals[irradiance(normals, sh[0])[:, 0].argmax()]
    assert (brightest @ facing[0]).item() > 0.99


def test_ambient_only_is_uniform():
    sh = directional_light_sh(torch.tensor([0.0, 1.0, 0.0]), color=0.0, ambient=torch.tensor([0.2, 0.4, 0.6]))
    shaded = shade_lambertian(1.0, random_unit(20, seed=21).float(), sh)
    torch.testing.assert_close(shaded, torch.tensor([0.2, 0.4, 0.6]).expand(20, 3))


# --- previews and validation -------------------------------------------------------------


def test_sphere_normals_orientation():
    normals, mask = sphere_normals(32)
    assert normals.shape == (32, 32, 3) and mask.shape == (32, 32)
    torch.testing.assert_close(normals[mask].norm(dim=-1), torch.ones(int(mask.sum())))
    assert (normals[mask][:, 2] >= 0).all() and not normals[~mask].any()
    assert mask.float().mean().item() == pytest.approx(math.pi / 4, abs=0.02)
    assert normals[16, 31, 0] > 0.9 and normals[0, 16, 1] > 0.9  # right = +x, top = +y


def test_render_sh_sphere():
    sh = torch.zeros(2, 9, 3)
    sh[:, 0] = math.sqrt(4 * math.pi)  # unit constant radiance
    flat = render_sh_sphere(sh, resolution=16, albedo=0.8, background=0.25, gamma=None, as_uint8=False)
    _, mask = sphere_normals(16)
    assert flat.shape == (2, 16, 16, 3)
    torch.testing.assert_close(flat[:, mask], torch.full_like(flat[:, mask], 0.8))
    torch.testing.assert_close(flat[:, ~mask], torch.full_like(flat[:, ~mask], 0.25))
    encoded = render_sh_sphere(sh[0], resolution=16, albedo=0.8)
    assert encoded.dtype == torch.uint8 and encoded.shape == (16, 16, 3)
    assert encoded[8, 8, 0].item() == round(0.8 ** (1 / 2.2) * 255)
    lit_from_right = render_sh_sphere(directional_light_sh(torch.tensor([1.0, 0.0, 0.0])), resolution=16)
    assert lit_from_right[8, 12].float().mean() > lit_from_right[8, 3].float().mean()


def test_save_sh_sphere_png(tmp_path):
    sh = directional_light_sh(torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), ambient=0.2)
    path = save_sh_sphere_png(sh, tmp_path / "spheres.png", resolution=24)
    image = np.asarray(Image.open(path))
    assert image.shape == (24, 48, 3)
    np.testing.assert_array_equal(image[:, 24:], render_sh_sphere(sh[1], resolution=24).numpy())


def test_validate_sh():
    assert validate_sh([0.1] * 27) is None
    assert validate_sh(torch.zeros(9, 3)) is None
    assert "27" in validate_sh([0.1] * 26)
    assert "27" in validate_sh(torch.zeros(3, 9))
    assert "NaN" in validate_sh([float("nan")] + [0.0] * 26)
    assert validate_sh("bright") is not None
