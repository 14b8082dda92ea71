"""NeRFFaceShop: controls that change one thing only, incremental paths, the warp, the mask, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from headforge.cameras import Camera
from headforge.data.dataset import HeadDataset
from headforge.data.dataset_json import write_dataset_json
from headforge.lighting import directional_light_sh
from headforge.models.nerffaceshop import NeRFFaceShopGenerator, build_discriminator, preset
from headforge.models.nerffaceshop_controls import HeadControls
from headforge.models.nerffaceshop_mask import (
    elliptical_face_prior,
    mask_from_template_weights,
    segmentation_face_prior,
    template_face_weights,
)
from headforge.models.registry import get_model_spec
from headforge.nn.warp import compose, conjugate, invert, lipschitz_bound
from headforge.training.checkpoint import latest_checkpoint, load_checkpoint
from headforge.training.distributed import DistContext
from headforge.training.launch import TrainRequest, train
from headforge.training.phases import PhaseContext


def lights(count: int) -> torch.Tensor:
    """Distinct directional lights (count, 9, 3)."""
    angles = torch.linspace(-1.2, 1.2, count)
    directions = torch.stack([angles.sin(), 0.3 * torch.ones(count), angles.cos()], dim=1)
    return directional_light_sh(directions, color=0.7, ambient=0.3)


@pytest.fixture(scope="module")
def generator() -> NeRFFaceShopGenerator:
    torch.manual_seed(0)
    return NeRFFaceShopGenerator(preset("tiny")).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def inputs(generator: NeRFFaceShopGenerator) -> dict[str, torch.Tensor]:
    config = generator.config
    rng = torch.Generator().manual_seed(1)
    return {
        "z": torch.randn(2, config.z_dim, generator=rng),
        "c": Camera.frontal(2).to_label(),
        "m": torch.randn(2, config.motion_dim, generator=rng),
        "sh": lights(2),
    }


def forward(generator: NeRFFaceShopGenerator, camera: torch.Tensor | None = None, **inputs) -> dict:
    return generator(**inputs, camera=camera, noise_mode="const", perturb=False)


def enlarge(field: torch.Tensor, lipschitz: float) -> torch.Tensor:
    """A field (B, 2, H, W) scaled so that its Lipschitz bound is ``lipschitz``."""
    return field * (lipschitz / lipschitz_bound(field).amax())


def phase_context(
    name: str, batch: dict, networks: dict, batch_size: int, cur_nimg: int = 10**6, seed: int = 0
) -> PhaseContext:
    """A single-process trainer ``PhaseContext`` on CPU, as the trainer builds one for a phase."""
    generator = torch.Generator().manual_seed(seed)
    return PhaseContext(
        name, 0, cur_nimg, batch, batch_size, generator, torch.device("cpu"), 1, networks, DistContext()
    )


# ------------------------------------------------------------------ controls change one thing only


def test_lighting_change_leaves_albedo_bit_identical(generator, inputs) -> None:
    first = forward(generator, **inputs)
    relit = forward(generator, **{**inputs, "sh": lights(3)[1:]})
    for key in ("albedo", "albedo_raw", "image_depth", "opacity", "planes"):
        assert torch.equal(first[key], relit[key]), key
    assert not torch.allclose(first["shading_planes"], relit["shading_planes"])
    assert not torch.allclose(first["image_raw"], relit["image_raw"])


def test_same_motion_same_expression_field_for_every_identity(generator, inputs) -> None:
    first = forward(generator, **inputs)
    other = forward(generator, **{**inputs, "z": torch.randn(2, generator.config.z_dim)})
    assert torch.equal(first["expression_field"], other["expression_field"])
    assert not torch.allclose(first["shape_field"], other["shape_field"])
    # The identity changes where the shared expression lands (the conjugated field), not the field.
    boosted = first["expression_field"] * 1e3
    assert not torch.allclose(
        generator.fused_field(first["shape_field"], boosted),
        generator.fused_field(other["shape_field"], boosted),
    )
    # Within one batch (other kernels' rounding per batch position) the fields agree to float precision.
    same_m = forward(generator, **{**inputs, "m": inputs["m"][:1].expand(2, -1)})["expression_field"]
    torch.testing.assert_close(same_m[0], same_m[1], rtol=1e-5, atol=1e-9)


def test_camera_change_leaves_tri_planes_unchanged(generator, inputs) -> None:
    front = forward(generator, **inputs)
    side = forward(
        generator, camera=Camera.orbit(torch.tensor([0.5, -0.3]), torch.zeros(2)).to_label(), **inputs
    )
    for key in ("planes", "shading_planes", "ws", "shape_field", "expression_field"):
        assert torch.equal(front[key], side[key]), key
    assert not torch.allclose(front["image_raw"], side["image_raw"])


def test_animation_change_keeps_the_identity_stages(generator, inputs) -> None:
    first = forward(generator, **inputs)
    moved = forward(generator, **{**inputs, "m": inputs["m"] + 3.0})
    assert torch.equal(first["ws"], moved["ws"]) and torch.equal(first["shape_field"], moved["shape_field"])
    assert not torch.equal(first["expression_field"], moved["expression_field"])


# ------------------------------------------------------------------ warp fields


def test_inverse_shape_field_composes_to_identity(generator, inputs) -> None:
    """delta_shape^-1 and delta_shape cancel, on the model's own fields scaled up to Lipschitz 0.3.

    Tolerances: ``T_d o T_e = id`` at pixel centres to the fixed-point residual
    (0.3^40, float64); ``T_e o T_d = id`` up to the bilinear interpolation
    error of ``e`` between centres, which is second order: below
    ``0.5 * Lip(d) * max|d|``; and the conjugation with no expression,
    ``T_shape^-1 o id o T_shape``, is exactly the identity.
    """
    shape = forward(generator, **inputs)["shape_field"].flatten(0, 1).double()
    assert shape.abs().amax() > 0, "the shape heads produce no field"
    lipschitz = 0.3
    field = enlarge(shape, lipschitz)
    assert field.abs().amax() > 0.02  # displacements of a third of a 16 px cell, not a no-op
    inverse = invert(field, iterations=40)
    assert compose(field, inverse).abs().amax() < 1e-12
    assert compose(inverse, field).abs().amax() < 0.5 * lipschitz * field.abs().amax()
    assert torch.equal(conjugate(field, torch.zeros_like(field)), torch.zeros_like(field))
    # Negation is only the first-order inverse.
    assert compose(field, -field).abs().amax() > 0.05 * field.abs().amax()


def test_shape_field_steepness_is_capped_so_its_inverse_exists(inputs) -> None:
    """Steep shape heads: the cap keeps every plane's bound at shape_lipschitz_max; without it they fold."""
    torch.manual_seed(0)
    capped_generator = NeRFFaceShopGenerator(preset("tiny")).eval().requires_grad_(False)
    folding = NeRFFaceShopGenerator(preset("tiny", shape_lipschitz_max=None)).eval().requires_grad_(False)
    folding.load_state_dict(capped_generator.state_dict())
    for model in (capped_generator, folding):
        for head in model.shape_heads:
            for parameter in head.parameters():
                parameter.mul_(1e4)
    ws = capped_generator.encode_identity(inputs["z"], inputs["c"])
    free = lipschitz_bound(folding.synthesize_to_32(ws, "const").shape_field.flatten(0, 1))
    capped = capped_generator.synthesize_to_32(ws, "const").shape_field.flatten(0, 1)
    assert free.amin() > 2.0, "the test cannot make a folding field"
    assert (lipschitz_bound(capped) <= 0.9 + 1e-5).all()
    _, residual = invert(capped.double(), iterations=200, return_residual=True)
    assert residual.amax() < 1e-6


def test_animation_conjugates_the_expression_by_the_shape(generator, inputs) -> None:
    """Fused field for delta_shape = translation t, delta_exp = bump at c: the bump moves to c - t.

    T = T_shape^-1 o T_exp o T_shape gives T(x) - x = b(x + t) (swapping the
    roles of the fields would give a near-constant t instead). With t two
    cells, the bump is sampled at cell centres, so the match is exact up to
    the border cells that read outside.
    """
    size = generator.config.warp_resolution
    centres = (torch.arange(size) * 2 + 1) / size - 1
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    bump = 0.05 * torch.exp(-((xs - 0.1) ** 2 + (ys + 0.2) ** 2) / 0.08)
    expression = torch.zeros(1, 3, 2, size, size)
    expression[:, :, 0] = bump
    shift = 4 / size  # two cells along x
    shape = torch.zeros(1, 3, 2, size, size)
    shape[:, :, 0] = shift
    fused = generator.fused_field(shape, expression)
    expected = torch.zeros_like(fused)
    expected[..., :-2] = expression[..., 2:]  # b(x + t): two cells to the right
    torch.testing.assert_close(fused[..., :-2], expected[..., :-2], rtol=0, atol=1e-6)
    # No expression: the conjugation is the identity, and animating changes nothing.
    base = generator.synthesize_to_32(forward(generator, **inputs)["ws"], noise_mode="const")
    still = generator.animate(base, torch.zeros(2, 3, 2, size, size))
    assert torch.equal(still.fused_field, torch.zeros_like(still.fused_field))
    assert torch.equal(still.features, base.features) and torch.equal(still.planes, base.planes)


# ------------------------------------------------------------------ incremental paths


def test_incremental_paths_equal_full_forward(generator, inputs) -> None:
    controls = HeadControls(generator, noise_mode="const")
    side = Camera.orbit(torch.tensor([0.4, -0.2]), torch.tensor([0.1, 0.0])).to_label()
    other_m, other_sh = torch.randn(2, generator.config.motion_dim), lights(4)[2:]
    cache = controls.build(inputs["z"], inputs["c"], inputs["m"], inputs["sh"])
    cases = [
        (controls.render(cache, inputs["c"]), forward(generator, **inputs)),
        (controls.render(cache, side), forward(generator, camera=side, **inputs)),
        (
            controls.render(controls.relight(cache, other_sh), side),
            forward(generator, side, **{**inputs, "sh": other_sh}),
        ),
        (
            controls.render(controls.reanimate(cache, other_m), side),
            forward(generator, side, **{**inputs, "m": other_m}),
        ),
    ]
    for incremental, full in cases:
        for key in ("image", "image_raw", "albedo", "shading", "image_depth"):
            assert torch.equal(incremental[key], full[key]), key
    albedo_only = controls.render_albedo(cache, side)
    assert torch.equal(albedo_only["albedo"], cases[1][1]["albedo"])


def test_eg3d_style_view_renders(generator, inputs) -> None:
    ws = generator.map(inputs["z"], inputs["c"])
    planes = generator.synthesize_planes(ws, noise_mode="const")
    out = generator.render_planes(planes, ws, inputs["c"], perturb=False, noise_mode="const")
    assert planes.shape[:3] == (2, 2, 3) and out["image"].shape == (2, 3, 32, 32)
    density = generator.sample_density(planes[:, 0], torch.zeros(2, 5, 3))
    assert density.shape == (2, 5, 1) and torch.isfinite(density).all()


# ------------------------------------------------------------------ face mask


def test_template_face_weights_follow_the_shape_field() -> None:
    size = 8
    point = torch.tensor([[[0.1, -0.2, 0.3]]])  # world, in the unit box
    weights = torch.ones(1, 1)
    still = template_face_weights(point, weights, torch.zeros(1, 3, 2, size, size))
    # Grid coordinates 2 * world: XY (0.2, -0.4) -> (column 4, row 2); XZ (0.2, 0.6) -> (4, 6);
    # YZ (-0.4, 0.6) -> (2, 6), with column = floor((u + 1) / 2 * size).
    assert still[0, 2, 4] == 1 and still[1, 6, 4] == 1 and still[2, 6, 2] == 1 and still.sum() == 3
    # A constant shape field t moves the template point by t: one cell = 2 / size.
    shift = torch.zeros(1, 3, 2, size, size)
    shift[:, :, 0] = 2 / size  # one cell to the right in every plane
    moved = template_face_weights(point, weights, shift)
    assert moved[0, 2, 5] == 1 and moved[1, 6, 5] == 1 and moved[2, 6, 3] == 1 and moved.sum() == 3


def test_mask_keeps_face_cells_and_fades_outside() -> None:
    weights = torch.zeros(3, 16, 16)
    weights[:, 6:10, 5:11] = 1.0
    mask = mask_from_template_weights(weights, threshold=0.5)
    assert mask.shape == (1, 3, 1, 16, 16)
    assert (mask[0, :, 0, 6:10, 5:11] == 1).all()
    assert (mask[0, :, 0, :3] == 0).all() and (mask[0, :, 0, :, :2] == 0).all()
    assert 0 < mask[0, 0, 0, 5, 8] <= 1  # the grown border


def test_derived_mask_follows_the_face_prior(generator) -> None:
    """Masks from priors on the left or right half of the frontal image cover mirrored XY template cells."""
    from headforge.models.nerffaceshop_mask import derive_expression_mask

    left = torch.zeros(1, 1, 16, 16)
    left[..., :8] = 1
    masks = [
        derive_expression_mask(generator, prior, num_samples=2, batch_size=2)
        for prior in (left, left.flip(-1))
    ]
    for mask in masks:
        assert mask.shape == (1, 3, 1, 16, 16) and mask.min() >= 0 and mask.max() == 1
    # Image left (camera x < 0) is world -x: plane XY's left half of columns.
    xy_left, xy_right = masks[0][0, 0, 0], masks[1][0, 0, 0]
    assert xy_left[:, :6].sum() > xy_left[:, 10:].sum() and xy_right[:, 10:].sum() > xy_right[:, :6].sum()


def test_face_priors() -> None:
    prior = elliptical_face_prior(32)
    assert prior[0, 0, 17, 16] == 1 and prior[0, 0, 0, 0] == 0
    maps = torch.tensor([[[[1, 2], [5, 0]]], [[[1, 1], [0, 0]]]]).float()
    torch.testing.assert_close(
        segmentation_face_prior(maps, (1, 5)), torch.tensor([[[[1.0, 0.5], [0.5, 0.0]]]])
    )


def test_expression_mask_flag(generator, inputs) -> None:
    motion_ws = generator.encode_motion(inputs["m"])
    generator.expression_mask.zero_()
    try:
        assert (generator.expression_field(motion_ws, masked=True) == 0).all()
        assert generator.expression_field(motion_ws, masked=False).abs().amax() > 0
    finally:
        generator.expression_mask.fill_(1.0)


# ------------------------------------------------------------------ sizes and training


def test_small_preset_exports_under_25_mb(tmp_path: Path) -> None:
    config = preset("small")
    generator = NeRFFaceShopGenerator(config)
    assert config.output_resolution == 64 and config.sr_input_resolution == 32
    path = tmp_path / "g_ema.safetensors"
    save_file({f"G_ema.{k}": v.contiguous() for k, v in generator.state_dict().items()}, str(path))
    assert path.stat().st_size < 25 * 2**20
    assert sum(p.numel() for p in build_discriminator(config).parameters()) < 5e6


def write_video_dataset(root: Path, clips: int = 3, frames: int = 4, resolution: int = 32) -> Path:
    """Clips of a shaded disc whose 'mouth' opens with expression[0], with SH, params and clip ids."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:resolution, 0:resolution] / resolution
    labels, sh, params, clip_ids = {}, {}, {}, {}
    for clip in range(clips):
        light = lights(clips)[clip]
        for frame in range(frames):
            yaw = 0.2 * (clip - 1) + 0.05 * frame
            expression = rng.normal(size=6).astype(np.float32)
            disc = ((xs - 0.5 + 0.2 * yaw) ** 2 + (ys - 0.5) ** 2) < 0.09
            mouth = disc & (np.abs(ys - 0.62) < 0.02 + 0.03 * abs(float(expression[0])))
            image = np.stack([0.2 + 0.6 * ys, 0.3 + 0.2 * xs, 0.5 * np.ones_like(xs)], -1)
            image[disc] = (
                0.5 + 0.3 * float(light[1, 0]) * (xs[disc] - 0.5)[:, None] + np.array([0.3, 0.1, 0.0])
            )
            image[mouth] = [0.3, 0.05, 0.05]
            name = f"clip{clip}/f{frame}.png"
            (root / f"clip{clip}").mkdir(exist_ok=True)
            Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / name)
            labels[name] = Camera.orbit(torch.tensor([yaw]), torch.tensor([0.0])).to_label()[0]
            sh[name] = light
            pose = np.zeros(15, np.float32)
            pose[6] = 0.1 * abs(float(expression[0]))
            params[name] = {"shape": np.zeros(4, np.float32), "expression": expression, "pose": pose}
            clip_ids[name] = (clip, frame)
    write_dataset_json(root, labels, sh=sh, params=params, clips=clip_ids)
    return root


@pytest.fixture(scope="module")
def video_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video_dataset(tmp_path_factory.mktemp("nerffaceshop_videos"))


def test_pair_batches_and_sampling_switch(video_dataset: Path) -> None:
    spec = get_model_spec("nerffaceshop")
    dataset = HeadDataset(video_dataset, xflip=True)
    adaptive = spec.build_dataset(preset("tiny"), dataset, 0)
    uniform = spec.build_dataset(preset("tiny", pair_sampling="uniform"), dataset, 0)
    assert type(adaptive.sampler).__name__ == "AdaptivePairSampler"
    assert type(uniform.sampler).__name__ == "UniformPairSampler"
    item = adaptive[3]
    assert item["image"].shape == (2, 3, 32, 32) and item["sh"].shape == (2, 9, 3)
    assert item["clip"][0] == item["clip"][1] and item["frame"][0] != item["frame"][1]


def test_fake_pair_minimal_loss_uses_the_config_weights(
    video_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headforge.training.steps import nerffaceshop as steps

    config = preset("tiny", minimal_alpha=0.5, minimal_beta=2.0, minimal_smoothness=3.0)
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(config)
    item = get_model_spec("nerffaceshop").build_dataset(config, HeadDataset(video_dataset), 0)[0]
    batch = {key: item[key][None] for key in ("image", "camera", "sh")}
    seen = []

    def recording(d_shape, d_exp, alpha, beta, smoothness):
        seen.append((d_shape.shape, d_exp.shape, alpha, beta, smoothness))
        return steps.minimal_deformation_loss.__wrapped__(d_shape, d_exp, alpha, beta, smoothness)

    recording.__wrapped__ = steps.minimal_deformation_loss
    monkeypatch.setattr(steps, "minimal_deformation_loss", recording)
    context = phase_context("Gmain", batch, {"G": generator}, batch_size=1)
    with torch.no_grad():
        _, deformation = steps.NeRFFaceShopObjective(config, batch["camera"][0]).generate_pair(context)
    # Every plane's shape field and both frames' expression fields, with the config's three weights.
    assert seen == [((3, 2, 16, 16), (6, 2, 16, 16), 0.5, 2.0, 3.0)]
    assert float(deformation["minimal"]) > 0
    # The logged magnitudes are the fields' mean displacements: with no roughness term and alpha = 1,
    # beta = 0 the loss is the shape magnitude itself.
    seen.clear()
    config = preset("tiny", minimal_alpha=1.0, minimal_beta=0.0, minimal_smoothness=0.0)
    context.generator.manual_seed(0)
    with torch.no_grad():
        _, plain = steps.NeRFFaceShopObjective(config, batch["camera"][0]).generate_pair(context)
    assert float(plain["minimal"]) == pytest.approx(float(plain["shape_magnitude"]))
    assert 0 < float(plain["expression_magnitude"]) < 0.1  # a fresh field is near zero


def test_fake_pair_frames_share_noise(video_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no expression change and equal conditions, the two frames of a fake pair agree, although
    synthesis noise and ray jitter are random: the second frame replays the first one's draws.

    (Not bit for bit: the two frames' lighting codes come from different rows of one batched matmul.)
    """
    from headforge.training.steps.nerffaceshop import GlobalRngSnapshot, NeRFFaceShopObjective

    config = preset("tiny")
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(config).train()
    with torch.no_grad():
        for block in generator.motion_synthesis.blocks:
            block.torgb.layer.weight.zero_()  # delta_exp = 0 for every m
        for module in generator.modules():
            if hasattr(module, "noise_strength"):
                module.noise_strength.fill_(0.5)  # make the per-pixel noise visible
    item = get_model_spec("nerffaceshop").build_dataset(config, HeadDataset(video_dataset), 0)[0]
    batch = {
        "image": item["image"][None],
        "camera": item["camera"][:1].expand(2, -1)[None],
        "sh": item["sh"][:1].expand(2, -1, -1)[None],
    }
    objective = NeRFFaceShopObjective(config, batch["camera"][0])

    def context(seed: int) -> PhaseContext:
        return phase_context("Gmain", batch, {"G": generator}, batch_size=1, seed=seed)

    def frame_difference(pair: dict[str, torch.Tensor]) -> float:
        return max(float((pair[key][:, 0] - pair[key][:, 1]).abs().amax()) for key in ("image", "image_raw"))

    with torch.no_grad():
        fake, deformation = objective.generate_pair(context(0))
        again, _ = objective.generate_pair(context(0))
        monkeypatch.setattr(GlobalRngSnapshot, "restore", lambda self: None)
        unshared, _ = objective.generate_pair(context(0))
    assert fake["image"].shape == (1, 2, 3, 32, 32) and deformation["minimal"].ndim == 0
    assert 0 < float(deformation["shape_lipschitz"]) < 1  # a fresh shape field is gentle
    assert frame_difference(fake) < 1e-4
    assert frame_difference(unshared) > 1e-2, "the test cannot see the noise"
    assert (fake["image"] - again["image"]).abs().amax() > 1e-2, "noise is not random between pairs"


@pytest.mark.parametrize("sr_noise", ["none", "random"])
def test_superresolution_noise_follows_the_config(sr_noise: str) -> None:
    """As EG3D: the SR layers draw no per-pixel noise by default (it showed as speckle in training)."""
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(preset("tiny", superresolution_noise_mode=sr_noise)).eval()
    z, m, label = (
        torch.randn(1, generator.config.z_dim),
        torch.randn(1, generator.config.motion_dim),
        Camera.frontal().to_label(),
    )

    def images() -> dict[str, torch.Tensor]:
        torch.manual_seed(1)
        with torch.no_grad():
            return generator(z, label, m, lights(1), camera=label, noise_mode="random")

    before = images()
    with torch.no_grad():
        for name, parameter in generator.superresolution.named_parameters():
            if name.endswith("noise_strength"):
                parameter.fill_(5.0)
    after = images()
    for key in ("image", "albedo"):
        changed = (after[key] - before[key]).abs().amax()
        assert changed == 0 if sr_noise == "none" else changed > 1e-2, key
    with pytest.raises(ValueError, match="superresolution_noise_mode"):
        NeRFFaceShopGenerator(preset("tiny", superresolution_noise_mode="loud")).eval()(
            z, label, m, lights(1), camera=label
        )


def tiny_request(data: Path, out: Path, **kw) -> TrainRequest:
    """A tiny NeRFFaceShop run on ``data``: 3 steps at batch 2 unless ``kimg`` says otherwise."""
    settings = {"kimg": 0.006, "checkpoint_every": 2, "progress": False, **kw}
    return TrainRequest(model="nerffaceshop", data=data, out=out, preset="tiny", **settings)


def test_train_resume_and_render(video_dataset: Path, tmp_path: Path) -> None:
    def request(out: Path, **kw) -> TrainRequest:
        return tiny_request(video_dataset, out, **kw)  # 3 steps: every phase runs at step 0

    summary = train(request(tmp_path / "unbroken", snapshot_every=3, keep_checkpoints=1))
    assert summary is not None
    train(request(tmp_path / "broken", max_steps=2))
    train(request(tmp_path / "broken", resume=True))
    # Checkpoints at steps 2 and 3: --keep-checkpoints 1 leaves the newest, the default 2 both.
    assert len(list((tmp_path / "unbroken" / "checkpoints").glob("*.safetensors"))) == 1
    assert len(list((tmp_path / "broken" / "checkpoints").glob("*.safetensors"))) == 2
    unbroken, meta = load_checkpoint(latest_checkpoint(tmp_path / "unbroken"))
    resumed, meta_resumed = load_checkpoint(latest_checkpoint(tmp_path / "broken"))
    assert meta["step"] == meta_resumed["step"] == 3 and meta["config"]["model"] == "nerffaceshop"
    for key in (k for k in unbroken if k.split(".")[0] in ("G", "G_ema", "D")):
        torch.testing.assert_close(resumed[key], unbroken[key], rtol=0, atol=1e-6, msg=key)
    assert list((tmp_path / "unbroken" / "images").glob("*.png")), "no image grid"
    # The overfitting heuristic E[sign(D(real))] is logged for both discriminators.
    logged = [json.loads(line) for line in (tmp_path / "unbroken" / "stats.jsonl").read_text().splitlines()]
    for key in ("Dmain/sign_real_image", "Dmain/sign_real_video"):
        values = [row[key] for row in logged if key in row]
        assert values and all(-1 <= value <= 1 for value in values), key

    from headforge.apps.loading import load_generator

    trained, _ = load_generator(tmp_path / "unbroken")
    torch.manual_seed(0)  # the launcher seeds with the request's seed (0) and builds G first
    initial = NeRFFaceShopGenerator(trained.config).state_dict()
    assert trained.state_dict().keys() == initial.keys()
    assert torch.equal(initial["sh_avg"], NeRFFaceShopGenerator(trained.config).sh_avg)
    changed = [name for name, value in trained.state_dict().items() if not torch.equal(value, initial[name])]
    assert any(name.startswith("backbone.") for name in changed), "training did not move G_ema"
    assert "sh_avg" in changed, "the average training light was not tracked"
    with torch.no_grad():
        out = trained(
            torch.randn(1, trained.config.z_dim),
            Camera.frontal().to_label(),
            torch.randn(1, trained.config.motion_dim),
            lights(1),
            noise_mode="const",
        )
    assert out["image"].shape == (1, 3, 32, 32) and torch.isfinite(out["image"]).all()


def test_adaptive_augmentation_trains_checkpoints_and_joins_a_running_run(
    video_dataset: Path, tmp_path: Path
) -> None:
    """ADA in a real run: p is logged, saved, restored, and can be switched on when resuming."""
    from headforge.training.checkpoint_state import CheckpointError

    ada = {"augment": "ada", "augment_p": 0.5, "ada_kimg": 0.01, "ada_interval": 1}  # p moves 0.2 a step

    def request(out: Path, overrides: dict, **kw) -> TrainRequest:
        return tiny_request(
            video_dataset, out, checkpoint_every=1, keep_checkpoints=4, overrides=overrides, **kw
        )

    train(request(tmp_path / "unbroken", ada))
    train(request(tmp_path / "broken", ada, max_steps=2))
    train(request(tmp_path / "broken", ada, resume=True))
    unbroken, _ = load_checkpoint(latest_checkpoint(tmp_path / "unbroken"))
    resumed, _ = load_checkpoint(latest_checkpoint(tmp_path / "broken"))
    p_values = [
        float(load_checkpoint(stem)[0]["augment.p"])
        for stem in sorted((tmp_path / "unbroken" / "checkpoints").glob("*.json"))
    ]
    # Each step moves p by exactly +-0.2 (r_t is never exactly the target here) within [0, 1].
    steps = np.diff([0.5, *p_values])
    assert len(p_values) == 3 and np.allclose(np.abs(steps), 0.2) or np.allclose(p_values[-1], [0.0, 1.0])
    assert float(resumed["augment.p"]) == pytest.approx(float(unbroken["augment.p"]))
    for key in (k for k in unbroken if k.split(".")[0] in ("G", "D")):
        torch.testing.assert_close(resumed[key], unbroken[key], rtol=0, atol=1e-6, msg=key)
    logged = [json.loads(line) for line in (tmp_path / "unbroken" / "stats.jsonl").read_text().splitlines()]
    # The log averages p over the steps of a row: steps 0, 1, 2 ran at 0.5 and the next two values.
    logged_p = [row["Dmain/augment_p"] for row in logged if "Dmain/augment_p" in row]
    assert logged_p[-1] == pytest.approx(np.mean([0.5, *p_values[:2]]))

    # A run that started without augmentation refuses to resume with it unless the change is accepted.
    train(request(tmp_path / "plain", {}, max_steps=2))
    # As if its checkpoint predated the ada_target field: a field at its default needs no acceptance.
    stored = latest_checkpoint(tmp_path / "plain").with_suffix(".json")
    meta = json.loads(stored.read_text())
    del meta["meta"]["config"]["model_config"]["ada_target"]
    stored.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="accept-config-change"):
        train(request(tmp_path / "plain", ada, resume=True))
    train(
        request(
            tmp_path / "plain",
            ada,
            resume=True,
            accept_config_changes=("augment", "augment_p", "ada_kimg", "ada_interval"),
        )
    )
    record = json.loads((tmp_path / "plain" / "config_changes.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and record["new_networks"] == ["augment"]
    assert record["changes"]["model_config.augment"] == {"stored": "none", "now": "ada"}
    latest, meta = load_checkpoint(latest_checkpoint(tmp_path / "plain"))
    assert meta["step"] == 3 and float(latest["augment.p"]) in (pytest.approx(0.3), pytest.approx(0.7))


def test_animation_warmup_schedule_and_static_generator() -> None:
    """delta_exp's gain is 0 during the warm-up, ramps linearly, then stays 1; at gain 0 m changes nothing."""
    config = preset("tiny", animation_warmup_kimg=10.0, animation_ramp_kimg=5.0)
    assert [config.expression_gain(k) for k in (0.0, 9.99, 10.0, 12.5, 15.0, 100.0)] == [0, 0, 0, 0.5, 1, 1]
    assert preset("tiny").expression_gain(0.0) == 1.0  # the default animates from the start
    assert preset("tiny", animation_warmup_kimg=3.0).expression_gain(3.0) == 1.0  # no ramp: a switch
    with pytest.raises(ValueError, match="animation_warmup_kimg"):
        preset("tiny", animation_ramp_kimg=-1.0)

    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(preset("tiny")).eval()
    with torch.no_grad():
        for block in generator.motion_synthesis.blocks:
            block.torgb.layer.weight.mul_(1e3)  # a visible expression field
    z, label = torch.randn(1, generator.config.z_dim), Camera.frontal().to_label()

    def image(m: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return generator(z, label, m, lights(1), noise_mode="const", perturb=False)["image"]

    m1, m2 = torch.randn(1, generator.config.motion_dim), torch.randn(1, generator.config.motion_dim)
    assert (image(m1) - image(m2)).abs().amax() > 1e-2
    generator.expression_gain.fill_(0.0)
    assert generator.expression_field(generator.encode_motion(m1)).abs().amax() == 0
    torch.testing.assert_close(image(m1), image(m2), atol=1e-5, rtol=0)
    # The gain is saved; a state dict written before it existed loads as fully animated.
    state = generator.state_dict()
    assert float(state["expression_gain"]) == 0.0
    del state["expression_gain"]
    generator.load_state_dict(state)
    assert float(generator.expression_gain) == 1.0


def test_animation_warmup_in_training(video_dataset: Path, tmp_path: Path) -> None:
    """The training hook sets G's gain from the images shown; G_ema and the checkpoint follow."""

    def run(out: Path, **overrides) -> dict:
        train(tiny_request(video_dataset, out, kimg=0.004, overrides=overrides))  # 2 steps at batch 2
        return load_checkpoint(latest_checkpoint(out))[0]

    warming = run(tmp_path / "warm", animation_warmup_kimg=1.0)
    assert float(warming["G.expression_gain"]) == 0.0 and float(warming["G_ema.expression_gain"]) == 0.0
    ramping = run(tmp_path / "ramp", animation_ramp_kimg=0.004)  # step 1 starts after 2 pairs: 0.5
    assert float(ramping["G.expression_gain"]) == pytest.approx(0.5)


@pytest.mark.parametrize("warming", [True, False])
def test_video_discriminator_sits_out_the_static_warmup(video_dataset: Path, warming: bool) -> None:
    """While animation is held at 0, no phase runs D_video or gives it gradients; afterwards all do."""
    from headforge.training.steps.nerffaceshop import build_dataset, build_training

    config = preset("tiny", animation_warmup_kimg=1.0 if warming else 0.0)
    torch.manual_seed(0)
    pairs = build_dataset(config, HeadDataset(video_dataset), 0)
    plan = build_training(config, pairs, torch.device("cpu"))
    items = [pairs[0], pairs[1]]
    batch = {key: torch.stack([item[key] for item in items]) for key in ("image", "camera", "sh")}
    video, image = plan.networks["D"].video, plan.networks["D"].image
    for phase in plan.phases:
        for network in plan.networks.values():
            network.zero_grad(set_to_none=True)
        context = phase_context(phase.name, batch, plan.networks, batch_size=2, cur_nimg=500)
        output = phase.loss_fn(context)
        output["loss"].backward()
        video_grads = [p.grad for p in video.parameters() if p.grad is not None]
        if phase.name == "Greg":  # no discriminator in G's regularisers
            assert not video_grads
            continue
        video_keys = [key for key in output if key.endswith("_video")]
        if warming:
            assert not video_grads and not video_keys, phase.name
        else:
            assert video_grads and any(g.abs().sum() > 0 for g in video_grads), phase.name
            assert video_keys or phase.name == "Dreg", phase.name
        if phase.module == "D":
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in image.parameters()), phase.name
