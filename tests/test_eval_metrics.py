"""Fréchet distance, KID, PSNR, SSIM and the perceptual distance against closed forms and references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from headforge.eval.frechet import (
    FeatureStatistics,
    frechet_distance,
    frechet_distance_from_features,
    frechet_distance_from_statistics,
)
from headforge.eval.image_metrics import perceptual_distance, psnr, psnr_from_mse, ssim
from headforge.eval.kid import kernel_inception_distance, polynomial_kernel, polynomial_mmd2_unbiased

# ---------------------------------------------------------------- Fréchet distance


def _random_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q


def _fd_with_sqrtm(mu1, s1, mu2, s2) -> float:
    """Reference: the textbook formula with scipy's general matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_identical_sets_give_zero():
    features = torch.randn(300, 12, generator=torch.Generator().manual_seed(0)) * 3 + 5
    stats = FeatureStatistics(12).update(features)
    assert frechet_distance_from_statistics(stats, stats) < 1e-9


@pytest.mark.parametrize("commuting_basis", [False, True])
def test_frechet_closed_form_for_commuting_covariances(commuting_basis):
    # Commuting covariances share eigenvectors Q: FD = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(1)
    dim = 6
    a, b = rng.uniform(0.1, 4.0, dim), rng.uniform(0.1, 4.0, dim)
    a[0], b[1] = 0.0, 0.0  # singular covariances are allowed
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    q = _random_orthogonal(dim, rng) if commuting_basis else np.eye(dim)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    # Exactly singular covariances: rounding noise e ~ 1e-16 on a zero eigenvalue costs sqrt(e) ~ 1e-8.
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def test_frechet_non_commuting_2x2_by_hand():
    s1 = np.array([[2.0, 1.0], [1.0, 2.0]])
    s2 = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    # For a 2x2 matrix with eigenvalues l1, l2 >= 0: Tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    # S1 S2 = [[2, 3], [1, 6]]: trace 8, determinant 9 -> Tr sqrt = sqrt(14).
    expected = 4.0 + 4.0 - 2.0 * math.sqrt(14.0)
    mu = np.zeros(2)
    assert _fd_with_sqrtm(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-12)
    shift = np.array([1.0, -2.0])
    assert frechet_distance(shift, s1, mu, s2) == pytest.approx(expected + 5.0, rel=1e-12)


def test_frechet_is_symmetric_and_matches_sqrtm_reference():
    rng = np.random.default_rng(2)
    dim = 5
    x1, x2 = rng.standard_normal((dim, dim)), rng.standard_normal((dim, 3))
    s1, s2 = x1 @ x1.T, x2 @ x2.T  # s2 is rank 3
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    forward, backward = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert forward == pytest.approx(backward, rel=1e-10)
    assert forward == pytest.approx(_fd_with_sqrtm(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_of_samples_converges_to_closed_form():
    rng = np.random.default_rng(3)
    dim = 3
    x1, x2 = rng.standard_normal((dim, dim)), rng.standard_normal((dim, dim))
    s1, s2 = x1 @ x1.T + 0.1 * np.eye(dim), x2 @ x2.T + 0.1 * np.eye(dim)
    mu1, mu2 = np.array([0.5, 0.0, -0.5]), np.zeros(dim)
    exact = _fd_with_sqrtm(mu1, s1, mu2, s2)
    count = 50_000
    samples1 = torch.from_numpy(rng.multivariate_normal(mu1, s1, size=count))
    samples2 = torch.from_numpy(rng.multivariate_normal(mu2, s2, size=count))
    resampled1 = torch.from_numpy(rng.multivariate_normal(mu1, s1, size=count))
    assert frechet_distance_from_features(samples1, samples2) == pytest.approx(exact, rel=0.02)
    assert frechet_distance_from_features(samples1, resampled1) < 0.01 * exact


def test_streaming_statistics_equal_batch_statistics():
    rng = np.random.default_rng(4)
    # A large common offset: naive E[xx^T] - mu mu^T would lose most digits here.
    features = rng.standard_normal((257, 7)) * rng.uniform(0.5, 2.0, 7) + 1e4
    stats = FeatureStatistics(7)
    start = 0
    for size in (1, 6, 50, 0, 100, 100):
        stats.update(torch.from_numpy(features[start : start + size]))
        start += size
    assert stats.count == 257
    np.testing.assert_allclose(stats.mean.numpy(), features.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.covariance().numpy(), np.cov(features, rowvar=False), rtol=1e-9)
    biased = np.cov(features, rowvar=False, bias=True)
    np.testing.assert_allclose(stats.covariance(unbiased=False).numpy(), biased, rtol=1e-9)


def test_statistics_merge_and_pack_round_trip():
    features = torch.randn(90, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    whole = FeatureStatistics(5).update(features)
    parts = [FeatureStatistics(5).update(chunk) for chunk in features.split([10, 45, 35])]
    merged = FeatureStatistics(5)
    for part in parts:
        merged.merge(FeatureStatistics.unpack(part.pack(), 5))
    assert merged.count == whole.count
    torch.testing.assert_close(merged.mean, whole.mean, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(merged.covariance(), whole.covariance(), rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError):
        FeatureStatistics(5).update(torch.zeros(3, 4))


def test_gather_across_processes_single_rank_group(tmp_path):
    import torch.distributed as dist

    features = torch.randn(20, 3, generator=torch.Generator().manual_seed(6))
    stats = FeatureStatistics(3).update(features)
    assert stats.gather_across_processes() is stats  # no process group: unchanged
    if dist.is_initialized():
        pytest.skip("a process group already exists in this interpreter")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        gathered = stats.gather_across_processes()
    finally:
        dist.destroy_process_group()
    assert gathered.count == 20
    torch.testing.assert_close(gathered.covariance(), stats.covariance())


# ---------------------------------------------------------------- KID


def _brute_force_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    def k(u, v):
        return (float(np.dot(u, v)) / len(u) + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_kernel_and_estimator_match_brute_force():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((5, 4)) + 0.3
    kernel = polynomial_kernel(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    assert kernel[2, 3] == pytest.approx((x[2] @ y[3] / 4 + 1) ** 3, rel=1e-14)
    estimate = float(polynomial_mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)))
    assert estimate == pytest.approx(_brute_force_mmd2_unbiased(x, y), rel=1e-12)
    # A subset as large as both sets is the whole set in every round.
    y6 = rng.standard_normal((6, 4))
    x_t, y6_t = torch.from_numpy(x), torch.from_numpy(y6)
    mean, std = kernel_inception_distance(x_t, y6_t, num_subsets=3, subset_size=6)
    assert mean == pytest.approx(_brute_force_mmd2_unbiased(x, y6), rel=1e-12)
    assert std < 1e-12


def test_kid_subset_average_is_exactly_the_full_u_statistic():
    # Unbiasedness, exactly: averaging the subset estimator over every pair of size-3 subsets
    # reproduces the full-set U-statistic. The biased V-statistic (diagonal kept) does not.
    rng = np.random.default_rng(8)
    x, y = torch.from_numpy(rng.standard_normal((6, 3))), torch.from_numpy(rng.standard_normal((6, 3)) + 0.5)
    subsets = [list(s) for s in itertools.combinations(range(6), 3)]

    def v_statistic(a, b):
        within = polynomial_kernel(a, a).mean() + polynomial_kernel(b, b).mean()
        return within - 2 * polynomial_kernel(a, b).mean()

    u_average = np.mean([float(polynomial_mmd2_unbiased(x[i], y[j])) for i in subsets for j in subsets])
    v_average = np.mean([float(v_statistic(x[i], y[j])) for i in subsets for j in subsets])
    full = float(polynomial_mmd2_unbiased(x, y))
    assert u_average == pytest.approx(full, rel=1e-12)
    assert abs(v_average - float(v_statistic(x, y))) > 1e-2


def test_kid_expectation_is_zero_for_identical_distributions():
    generator = torch.Generator().manual_seed(9)
    trials = 400
    unbiased, biased = [], []
    for _ in range(trials):
        x = torch.randn(16, 8, generator=generator, dtype=torch.float64)
        y = torch.randn(16, 8, generator=generator, dtype=torch.float64)
        unbiased.append(float(polynomial_mmd2_unbiased(x, y)))
        within = polynomial_kernel(x, x).mean() + polynomial_kernel(y, y).mean()
        biased.append(float(within - 2 * polynomial_kernel(x, y).mean()))
    standard_error = np.std(unbiased) / math.sqrt(trials)
    assert abs(np.mean(unbiased)) < 4 * standard_error
    assert np.mean(biased) > 10 * standard_error  # the estimator this test guards against
    assert min(unbiased) < 0  # unbiased estimates go negative


def test_kid_is_positive_for_shifted_distributions_and_reproducible():
    generator = torch.Generator().manual_seed(10)
    a, b = torch.randn(400, 16, generator=generator), torch.randn(400, 16, generator=generator)
    shifted = torch.randn(400, 16, generator=generator) + 0.5
    same_mean, same_std = kernel_inception_distance(a, b, 50, 100, torch.Generator().manual_seed(0))
    shift_mean, _ = kernel_inception_distance(a, shifted, 50, 100, torch.Generator().manual_seed(0))
    assert abs(same_mean) < 3 * same_std
    assert shift_mean > 10 * max(abs(same_mean), same_std)
    again = kernel_inception_distance(a, b, 50, 100, torch.Generator().manual_seed(0))
    assert again == (same_mean, same_std)


# ---------------------------------------------------------------- PSNR and SSIM


def test_psnr_closed_form():
    a = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(11)) * 2 - 1
    offsets = torch.tensor([0.1, 0.5, 0.0]).view(3, 1, 1, 1)
    values = psnr(a, a + offsets)
    assert values.shape == (3,)
    torch.testing.assert_close(values[:2], 10 * torch.log10(4.0 / torch.tensor([0.01, 0.25])))
    assert math.isinf(float(values[2]))
    assert psnr(a, a + 0.1, data_range=1.0)[0] == pytest.approx(20.0, rel=1e-5)
    assert psnr_from_mse(0.01) == pytest.approx(float(values[0]), rel=1e-5)


def _smooth_images(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, height // 4, width // 4, generator=generator, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return smooth.clamp(0, 1) * 2 - 1


@pytest.mark.parametrize("data_range", [2.0, 1.0])
def test_ssim_matches_skimage(data_range):
    a = _smooth_images(2, 32, 40, seed=12)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    b = (a + 0.15 * noise).clamp(-1, 1)
    if data_range == 1.0:
        a, b = (a + 1) / 2, (b + 1) / 2
    ours = ssim(a, b, data_range=data_range)
    assert ours.shape == (2,)
    for index in range(2):
        reference = structural_similarity(
            a[index].numpy(),
            b[index].numpy(),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=data_range,
        )
        assert float(ours[index]) == pytest.approx(reference, abs=1e-10)
    assert float(ssim(a, b, data_range).min()) < 0.9  # the noise is visible
    torch.testing.assert_close(ssim(a, a, data_range), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(ssim(a.float(), b.float(), data_range).double(), ours, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- perceptual distance


class _ToyFeatureNetwork:
    """Layers: the image itself and its 2x2 average pool (a fixed, known feature map)."""

    feature_dim = 3

    def __call__(self, images):
        return images.mean(dim=(2, 3))

    def layers(self, images):
        return [images, F.avg_pool2d(images, 2)]


def test_perceptual_distance_matches_brute_force():
    generator = torch.Generator().manual_seed(14)
    a = torch.rand(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    b = torch.rand(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    weights = [torch.tensor([1.0, 0.5, 2.0]).double(), torch.tensor([0.0, 1.0, 3.0]).double()]
    network = _ToyFeatureNetwork()
    ours = perceptual_distance(a, b, network, layer_weights=weights)
    for index in range(2):
        expected = 0.0
        for level, w in enumerate(weights):
            fa = network.layers(a[index : index + 1])[level][0].numpy()
            fb = network.layers(b[index : index + 1])[level][0].numpy()
            _, h, wd = fa.shape
            total = 0.0
            for i in range(h):
                for j in range(wd):
                    ua = fa[:, i, j] / np.linalg.norm(fa[:, i, j])
                    ub = fb[:, i, j] / np.linalg.norm(fb[:, i, j])
                    total += float(np.sum(w.numpy() * (ua - ub) ** 2))
            expected += total / (h * wd)
        assert float(ours[index]) == pytest.approx(expected, rel=1e-8)
    unweighted = perceptual_distance(a, b, network)
    ones = [torch.ones(3, dtype=torch.float64)] * 2
    torch.testing.assert_close(unweighted, perceptual_distance(a, b, network, layer_weights=ones))
    torch.testing.assert_close(perceptual_distance(a, a, network), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(perceptual_distance(b, a, network), unweighted)


def test_perceptual_distance_is_differentiable():
    a = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    torch.autograd.gradcheck(lambda x: perceptual_distance(x, b, _ToyFeatureNetwork()), (a,))
