"""Adaptive discriminator augmentation: each operation does what it says, alike on every image of a sample."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from headforge.training.augment import AdaptiveAugment, AugmentStrengths

NONE = AugmentStrengths(**{f.name: 0.0 for f in dataclasses.fields(AugmentStrengths) if "_" not in f.name})


def only(**strengths: float) -> AugmentStrengths:
    """No operation but the named ones (their strength multipliers)."""
    return dataclasses.replace(NONE, **strengths)


def images(batch: int = 4, frames: int = 2, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A sample's images: (B, F, 3, size, size) and its 2x-downsampled raw companion."""
    rng = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, frames, 3, size, size, generator=rng, dtype=torch.float64) * 2 - 1
    raw = F.avg_pool2d(image.flatten(0, 1), 2).unflatten(0, (batch, frames))
    return {"image": image, "image_raw": raw}


def test_probability_zero_returns_the_inputs() -> None:
    batch = images()
    out = AdaptiveAugment(p=0.0)(batch, torch.Generator().manual_seed(1))
    for key in batch:
        assert out[key] is batch[key]


def test_xflip_mirrors_and_the_raw_image_follows() -> None:
    batch = images()
    out = AdaptiveAugment(only(xflip=1.0), p=1.0)(batch, torch.Generator().manual_seed(0))
    flipped = (out["image"] - batch["image"].flip(-1)).flatten(1).abs().amax(1) < 1e-6
    unchanged = (out["image"] - batch["image"]).flatten(1).abs().amax(1) < 1e-6
    assert bool((flipped | unchanged).all()) and flipped.any() and unchanged.any()  # half flip
    raw_flipped = (out["image_raw"] - batch["image_raw"].flip(-1)).flatten(1).abs().amax(1) < 1e-6
    assert torch.equal(raw_flipped, flipped)


def test_blit_operations_commute_with_downsampling_so_image_and_raw_move_alike() -> None:
    """Flips, quarter turns and whole-coarse-pixel shifts: avg_pool(aug(image)) == aug(raw) exactly."""
    batch = images(batch=16)
    augment = AdaptiveAugment(only(xflip=1.0, rotate90=1.0, xint=1.0), p=1.0)
    out = augment(batch, torch.Generator().manual_seed(3))
    pooled = F.avg_pool2d(out["image"].flatten(0, 1), 2).unflatten(0, out["image_raw"].shape[:2])
    torch.testing.assert_close(pooled, out["image_raw"], atol=1e-6, rtol=0)
    # Some samples really moved, and pixel values were only permuted (no interpolation).
    moved = (out["image"] - batch["image"]).flatten(1).abs().amax(1) > 1e-3
    assert moved.sum() >= 8


def test_integer_translation_moves_by_whole_coarse_pixels() -> None:
    """Away from the reflected border an integer shift is a pure index shift of the pixels."""
    batch = images(batch=8, frames=1, size=32)
    augment = AdaptiveAugment(only(xint=1.0), p=1.0)
    out = augment(batch, torch.Generator().manual_seed(5))
    image, moved = batch["image"][:, 0], out["image"][:, 0]
    for sample in range(8):
        found = None
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                shifted = torch.roll(image[sample], shifts=(dy, dx), dims=(-2, -1))
                if torch.allclose(shifted[:, 8:24, 8:24], moved[sample, :, 8:24, 8:24], atol=1e-6):
                    found = (dy, dx)
        assert found is not None, f"sample {sample} is not an integer shift"
        assert found[0] % 2 == 0 and found[1] % 2 == 0  # whole pixels of the 16 px raw image


def test_frames_of_a_sample_share_the_transform_and_samples_differ() -> None:
    one = images(batch=6, frames=1)["image"]
    batch = {"image": one.expand(6, 2, 3, 16, 16).contiguous()}
    out = AdaptiveAugment(p=0.9)(batch, torch.Generator().manual_seed(2))["image"]
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=0, rtol=0)
    assert not torch.allclose(out[0, 0], batch["image"][0, 0])


def test_each_operation_fires_with_probability_p() -> None:
    augment = AdaptiveAugment(only(xflip=1.0), p=0.3)
    transforms = augment.geometric_transforms(20000, 16, torch.Generator().manual_seed(0))
    flipped = (transforms[:, 0, 0] < 0).double().mean().item()
    # A flip fires with p and then mirrors with probability 1/2: 0.15 (4 standard errors: 0.01).
    assert abs(flipped - 0.15) < 0.01
    colour = AdaptiveAugment(only(brightness=1.0), p=0.3).color_transforms(
        20000, torch.Generator().manual_seed(0)
    )
    assert abs((colour[:, :, 3] != 0).any(1).double().mean().item() - 0.3) < 0.015


def test_geometric_transforms_are_similarities_or_have_unit_determinant() -> None:
    """Flips, rotations and aniso preserve area; only the isotropic scale changes the determinant."""
    augment = AdaptiveAugment(only(xflip=1.0, rotate90=1.0, rotate=1.0, aniso=1.0, xfrac=1.0), p=0.8)
    transforms = augment.geometric_transforms(500, 16, torch.Generator().manual_seed(0))
    det = torch.linalg.det(transforms[:, :2, :2])
    torch.testing.assert_close(det.abs(), torch.ones(500), atol=1e-5, rtol=0)
    torch.testing.assert_close(transforms[:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(500, 3))


def test_colour_operations_do_what_they_claim() -> None:
    axis = torch.ones(3) / math.sqrt(3)
    gen = torch.Generator().manual_seed(0)
    # Hue rotation and saturation keep luma (the component along the grey axis) and grey colours.
    for strengths in (only(hue=1.0), only(saturation=1.0)):
        matrices = AdaptiveAugment(strengths, p=1.0).color_transforms(64, gen)
        torch.testing.assert_close(axis @ matrices[:, :, :3], axis.expand(64, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(matrices[:, :, :3] @ axis, axis.expand(64, 3), atol=1e-5, rtol=0)
        assert (matrices[:, :, 3] == 0).all()
    rotations = AdaptiveAugment(only(hue=1.0), p=1.0).color_transforms(64, gen)[:, :, :3]
    torch.testing.assert_close(
        rotations @ rotations.transpose(1, 2), torch.eye(3).expand(64, 3, 3), atol=1e-5, rtol=0
    )
    # Luma flip is an involution that negates luma and keeps chroma.
    flips = AdaptiveAugment(only(lumaflip=1.0), p=1.0).color_transforms(64, gen)[:, :, :3]
    flipped = torch.linalg.det(flips) < 0
    assert flipped.any() and (~flipped).any()
    torch.testing.assert_close(flips @ flips, torch.eye(3).expand(64, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(axis @ flips[flipped], -axis.expand(int(flipped.sum()), 3), atol=1e-6, rtol=0)
    # Brightness only offsets, equally on all channels; contrast only scales.
    brightness = AdaptiveAugment(only(brightness=1.0), p=1.0).color_transforms(64, gen)
    torch.testing.assert_close(brightness[:, :, :3], torch.eye(3).expand(64, 3, 3))
    assert torch.allclose(brightness[:, 0, 3], brightness[:, 2, 3]) and brightness[:, 0, 3].std() > 0.1
    contrast = AdaptiveAugment(only(contrast=1.0), p=1.0).color_transforms(64, gen)
    factors = contrast[:, 0, 0]
    torch.testing.assert_close(contrast[:, :, :3], factors[:, None, None] * torch.eye(3))
    assert (contrast[:, :, 3] == 0).all() and (factors.log2().std() - 0.5).abs() < 0.15


def test_colour_is_applied_per_pixel_as_its_matrix_says() -> None:
    batch = images(batch=3, frames=1)
    augment = AdaptiveAugment(only(brightness=1.0, contrast=1.0, hue=1.0, saturation=1.0), p=1.0)
    out = augment(batch, torch.Generator().manual_seed(4))
    matrices = augment.color_transforms(3, torch.Generator().manual_seed(4)).double()
    # Draws happen geometry first: with no geometric operation enabled none were drawn, so replaying works.
    expected = (
        torch.einsum("bij,bfjhw->bfihw", matrices[:, :, :3], batch["image"])
        + matrices[:, None, :, 3, None, None]
    )
    torch.testing.assert_close(out["image"], expected)


def test_augmentation_is_differentiable_for_r1() -> None:
    augment = AdaptiveAugment(p=0.7)
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        return augment({"image": x}, torch.Generator().manual_seed(7))["image"]

    assert torch.autograd.gradcheck(run, (image,))


def test_adjust_moves_p_towards_the_target_and_clamps() -> None:
    augment = AdaptiveAugment(p=0.0, target=0.6, speed_kimg=1.0, interval=4)
    augment.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # r_t = 0.5 < 0.6: would go down, clamps at 0
    assert augment.adjust(32) == pytest.approx(0.5) and float(augment.p) == 0.0
    augment.accumulate(torch.tensor([2.0, 3.0, 0.5, 1.0, -1.0]))  # r_t = 0.6: stays
    augment.accumulate(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0]))  # now 0.8 over both calls
    assert augment.adjust(32) == pytest.approx(0.8) and float(augment.p) == pytest.approx(0.032)
    assert augment.adjust(32) is None and float(augment.p) == pytest.approx(0.032)  # nothing accumulated
    fixed = AdaptiveAugment(p=0.2, target=None)
    fixed.accumulate(torch.ones(8))
    assert fixed.adjust(32) is None and float(fixed.p) == pytest.approx(0.2)
    assert "p" in augment.state_dict() and "sign_sum" not in augment.state_dict()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="probability"):
        AdaptiveAugment(p=1.5)
    with pytest.raises(ValueError, match="target"):
        AdaptiveAugment(target=1.0)
    with pytest.raises(ValueError, match="RGB"):
        AdaptiveAugment(p=1.0)({"image": torch.zeros(2, 4, 8, 8)}, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model", ["eg3d", "nerffaceshop"])
def test_every_discriminator_input_goes_through_the_pipeline(model: str) -> None:
    """p = 0 changes nothing; p = 1 changes what D sees in Gmain, Dmain and R1, which stay finite."""
    from headforge.models.registry import get_model_spec
    from headforge.training.launch import build_benchmark_step

    spec = get_model_spec(model)

    def phase_scalars(**overrides) -> dict[str, dict[str, float]]:
        config = dataclasses.replace(spec.presets["tiny"], **overrides)
        torch.manual_seed(0)
        calls, _ = build_benchmark_step(spec, config, 2, torch.device("cpu"))
        return {name: calls[name]() for name in ("Gmain", "Dmain", "Dreg")}

    plain = phase_scalars()
    idle = phase_scalars(augment="fixed", augment_p=0.0)
    full = phase_scalars(augment="fixed", augment_p=1.0)
    assert idle["Dmain"].pop("Dmain/augment_p") == 0.0 and full["Dmain"].pop("Dmain/augment_p") == 1.0
    for phase in plain:
        assert idle[phase] == plain[phase], phase
        loss = f"Loss/{phase}"
        assert math.isfinite(full[phase][loss]) and full[phase][loss] != plain[phase][loss], phase


def test_adaptation_hook_runs_every_interval_with_the_global_batch() -> None:
    from types import SimpleNamespace

    from headforge.training.phases import StepInfo
    from headforge.training.steps.common import adapt_augmentation

    augment = AdaptiveAugment(p=0.0, target=0.6, speed_kimg=1.0, interval=4)
    trainer = SimpleNamespace(batch_size=8)
    for steps_done in range(1, 9):
        augment.accumulate(torch.ones(8))  # r_t = 1 > 0.6: p rises by 4 steps x 8 images / 1000
        adapt_augmentation(StepInfo(steps_done, 8 * steps_done, {"augment": augment}, trainer))
        expected = 0.032 * (steps_done // 4)
        assert float(augment.p) == pytest.approx(expected), steps_done
