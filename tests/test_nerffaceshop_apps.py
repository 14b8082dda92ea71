"""NeRFFaceShop apps: coefficient -> animation encoder and driving (§IV-A), domain transfer (§IV-B)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from headforge.apps.drive import add_drive_parser, driven_outputs, light_schedule
from headforge.apps.generate import frontal_label
from headforge.apps.loading import load_generator
from headforge.data.dataset_json import write_dataset_json
from headforge.eval.features import HeadforgeFeatureNet
from headforge.lighting import directional_light_sh
from headforge.models.nerffaceshop import NeRFFaceShopGenerator, build_discriminator, preset
from headforge.models.nerffaceshop_encoder import (
    CoefficientEncoder,
    CoefficientEncoderConfig,
    coefficient_vector,
    load_encoder,
    save_encoder,
)
from headforge.training.checkpoint import latest_checkpoint, load_checkpoint
from headforge.training.domain_transfer import (
    DomainTransferDataset,
    export_source_images,
    finetune_domain,
    motion_parameters,
)
from headforge.training.nerffaceshop_driving import (
    DrivingObjective,
    random_lights,
    sample_driving_latents,
    train_driver,
)
from headforge.training.trainer import Trainer

EXPRESSION_DIM = 6
STEPS = 8


def small_feature_net() -> HeadforgeFeatureNet:
    """The project's perceptual network at test size (deterministic weights)."""
    return HeadforgeFeatureNet(channels=(8, 16, 32), input_size=32)


class LinearCoefficientEstimator(nn.Module):
    """Average-pooled pixels (3 x 8 x 8) -> [expression (E), jaw (3)], a ridge regression fit in closed form.

    Fit on the test generator's own frontal faces to the first E + 3 entries of
    their animation codes m, so its coefficients carry the faces' animation
    (as a real estimator's carry their expression).
    """

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    @staticmethod
    def features(images: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(images, 8).flatten(1)

    @classmethod
    @torch.no_grad()
    def fit(cls, generator: NeRFFaceShopGenerator, count: int = 32, ridge: float = 1e-2):
        rng = torch.Generator().manual_seed(123)
        latents = sample_driving_latents(generator, count, rng, "cpu")
        objective = DrivingObjective(generator, lambda images: {}, small_feature_net())
        camera = frontal_label(count, "cpu")
        cache = objective.controls.build(latents.z, camera, latents.m, latents.sh, 0.7)
        x = cls.features(objective.controls.render(cache, camera)["image"]).double()
        y = latents.m[:, : EXPRESSION_DIM + 3].double()
        mean_x, mean_y = x.mean(0), y.mean(0)
        x, y = x - mean_x, y - mean_y
        weight = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
        return cls(weight.float(), (mean_y - mean_x @ weight).float())

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        coefficients = self.features(images) @ self.weight + self.bias
        return {"expression": coefficients[:, :EXPRESSION_DIM], "jaw": coefficients[:, EXPRESSION_DIM:]}


def animated_generator() -> NeRFFaceShopGenerator:
    """A freshly initialised tiny G whose animation is visible (G_motion's output layers scaled up)."""
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(preset("tiny", num_coarse=6, num_fine=6))  # a test-size render
    with torch.no_grad():
        for block in generator.motion_synthesis.blocks:
            block.torgb.layer.weight.mul_(2000.0)  # deformation_init_scale 1e-4 -> displacements ~0.2
    return generator


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny generator saved as a NeRFFaceShop run by the generic trainer (G, G_ema, D)."""
    generator = animated_generator()
    config = generator.config
    ema = NeRFFaceShopGenerator(config)
    ema.load_state_dict(generator.state_dict())
    out = tmp_path_factory.mktemp("nerffaceshop_run")
    trainer = Trainer(
        networks={"G": generator, "G_ema": ema, "D": build_discriminator(config)},
        phases=[],
        dataset=torch.utils.data.TensorDataset(torch.zeros(2)),
        batch_size=2,
        total_kimg=0,
        out_dir=out,
        config={"model": "nerffaceshop", "model_config": config.to_dict()},
        ema_of={"G_ema": "G"},
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    trainer.save_checkpoint()
    return out


@pytest.fixture(scope="module")
def generator(checkpoint: Path) -> NeRFFaceShopGenerator:
    return load_generator(checkpoint)[0]


@pytest.fixture(scope="module")
def estimator(generator: NeRFFaceShopGenerator) -> LinearCoefficientEstimator:
    return LinearCoefficientEstimator.fit(generator)


def encoder_for(generator: NeRFFaceShopGenerator, seed: int = 0) -> CoefficientEncoder:
    torch.manual_seed(seed)
    config = CoefficientEncoderConfig(EXPRESSION_DIM, 3, generator.config.motion_dim, hidden=32, layers=2)
    return CoefficientEncoder(config)


# ------------------------------------------------------------------ the encoder (§IV-A)


def test_encoder_shape_determinism_and_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = CoefficientEncoder(CoefficientEncoderConfig(expression_dim=50))  # the paper's m: 128
    expression, pose = torch.randn(5, 50), torch.randn(5, 15)
    coefficients = coefficient_vector({"expression": expression, "pose": pose})
    assert torch.equal(coefficients, coefficient_vector({"expression": expression, "jaw": pose[:, 6:9]}))
    encoder.set_statistics(torch.randn(64, 53) * 3 + 1)
    m_hat = encoder(coefficients)
    assert m_hat.shape == (5, 128)
    assert torch.equal(m_hat, encoder(coefficients))
    torch.testing.assert_close(encoder(coefficients[2:3]), m_hat[2:3])  # no mixing across the batch
    assert (m_hat[0] - m_hat[1]).abs().amax() > 1e-3
    with pytest.raises(ValueError, match="53 coefficients"):
        encoder(coefficients[:, :52])
    save_encoder(encoder, tmp_path / "encoder", {"source": "test"})
    loaded, meta = load_encoder(tmp_path / "encoder.safetensors")
    assert meta == {"source": "test"} and torch.equal(loaded(coefficients), m_hat)


def test_encoder_training_reduces_the_loss_on_a_fixed_batch(generator, estimator) -> None:
    """The loss reaches the encoder only through the frozen generator's renders of m_hat."""
    objective = DrivingObjective(generator, estimator, small_feature_net())
    latents = sample_driving_latents(generator, 2, torch.Generator().manual_seed(7), "cpu")
    targets = objective.targets(latents)
    encoder = encoder_for(generator)
    encoder.set_statistics(torch.cat([targets[2], targets[2] + 0.1]))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = objective.loss_on_targets(encoder, *targets)
        loss["loss"].backward()
        optimizer.step()
        losses.append(float(loss["loss"].detach()))
    assert all(p.grad is None for p in generator.parameters())  # G stays frozen
    final = float(objective.loss_on_targets(encoder, *targets)["loss"].detach())
    assert final < 0.6 * losses[0], (losses[0], final)
    # The true codes reproduce the images exactly: the loss of m_hat = m is zero.
    true = objective.loss_on_targets(lambda _: latents.m, *targets)
    assert float(true["loss"]) < 1e-6


def test_train_driver_writes_encoder_and_resumes(generator, estimator, tmp_path: Path) -> None:
    def run(out: Path, steps: int, resume: bool = False) -> dict:
        return train_driver(
            generator, estimator, out, steps, batch_size=2, hidden=32, layers=2,
            feature_network=small_feature_net(), statistics_samples=4, checkpoint_every=1,
            resume=resume, source="test", progress=False,
        )  # fmt: skip

    unbroken = run(tmp_path / "unbroken", 2)
    run(tmp_path / "broken", 1)
    resumed = run(tmp_path / "broken", 2, resume=True)
    assert resumed["resumed_from"] == 1 and unbroken["steps"] == resumed["steps"] == 2
    first, meta = load_encoder(unbroken["encoder"])
    second, _ = load_encoder(resumed["encoder"])
    assert meta["steps"] == 2 and meta["source"] == "test"
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    initial = encoder_for(generator)  # training moved the weights away from any fresh encoder
    assert not torch.allclose(first.output.weight, initial.output.weight)


# ------------------------------------------------------------------ driving


def parse(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_drive_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(arguments)


def frames_of(path: Path) -> np.ndarray:
    reader = imageio.get_reader(path)
    try:
        return np.stack([reader.get_data(i) for i in range(reader.count_frames())])
    finally:
        reader.close()


def test_drive_from_params_json_writes_every_frame(checkpoint, generator, tmp_path: Path) -> None:
    save_encoder(encoder_for(generator), checkpoint / "encoder")  # found beside the checkpoint
    rng = np.random.default_rng(0)
    frames = [
        {"expression": rng.normal(size=EXPRESSION_DIM).tolist(), "jaw": [0.1 * i, 0.0, 0.0]} for i in range(5)
    ]
    params = tmp_path / "params.json"
    params.write_text(json.dumps(frames))
    out = tmp_path / "driven.mp4"
    args = parse(
        ["drive", "--ckpt", str(checkpoint), "--params", str(params), "--seed", "3", "--out", str(out)]
    )
    args.device = "cpu"
    assert args.run(args) == 0
    video = frames_of(out)
    assert video.shape == (5, 32, 32, 3)
    encoder, _ = load_encoder(checkpoint / "encoder")
    coefficients = torch.tensor([f["expression"] + f["jaw"] for f in frames], dtype=torch.float32)
    lights = light_schedule(5, generator.sh_avg.reshape(9, 3), rotate=False)
    rendered = next(driven_outputs(generator, encoder, coefficients, 3, lights, frontal_label(5, "cpu")))
    expected = ((rendered["image"][3].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    assert np.abs(video[3] - expected).mean() < 4  # the fourth frame, through H.264
    other_seed = next(driven_outputs(generator, encoder, coefficients, 4, lights, frontal_label(5, "cpu")))
    other = ((other_seed["image"][3].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    assert np.abs(video[3] - other).mean() > 3 * np.abs(video[3] - expected).mean()


def test_rotating_light_changes_only_the_lighting(generator) -> None:
    encoder = encoder_for(generator)
    coefficients = torch.randn(1, EXPRESSION_DIM + 3).expand(3, -1).clone()
    coefficients[2] += 2.0  # a third frame with another expression
    lights = light_schedule(3, generator.sh_avg.reshape(9, 3), rotate=True)
    lights[2] = lights[0]
    cameras = frontal_label(3, "cpu")
    frames = list(
        driven_outputs(
            generator, encoder, coefficients, 0, lights, cameras, batch=1, passes=("image", "albedo")
        )
    )
    first, relit, moved = frames
    for key in ("albedo", "albedo_raw", "image_depth", "opacity"):
        assert torch.equal(first[key], relit[key]), key
    assert (first["image"] - relit["image"]).abs().amax() > 1e-3  # a fresh G's shading is weak but there
    assert (first["albedo"] - moved["albedo"]).abs().amax() > 1e-2  # the albedo does follow the animation


def test_light_schedule_turns_a_directional_light() -> None:
    base = directional_light_sh(torch.tensor([0.0, 0.3, 1.0]), color=0.7, ambient=0.3)
    lights = light_schedule(4, base, rotate=True)
    torch.testing.assert_close(lights[0], base)
    # A quarter turn about +y takes the light from +z to +x: the order-2 projection of a light from R d.
    quarter = directional_light_sh(torch.tensor([1.0, 0.3, 0.0]), color=0.7, ambient=0.3)
    torch.testing.assert_close(lights[1], quarter, rtol=0, atol=1e-5)
    assert torch.equal(light_schedule(4, base, rotate=False), base.expand(4, -1, -1))


def write_clip_dataset(root: Path) -> Path:
    """Two clips of three 32 px frames with expression + FLAME-layout pose params."""
    rng = np.random.default_rng(1)
    labels, sh, params, clips = {}, {}, {}, {}
    camera = frontal_label(1, "cpu")[0]
    light = directional_light_sh(torch.tensor([0.0, 0.0, 1.0]), color=0.6, ambient=0.4)
    for clip in range(2):
        for frame in range(3):
            name = f"clip{clip}/frame{frame}.png"
            (root / f"clip{clip}").mkdir(parents=True, exist_ok=True)
            smooth = Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).resize((32, 32))
            smooth.save(root / name)  # low frequencies survive H.264
            labels[name], sh[name], clips[name] = camera, light, (clip, frame)
            params[name] = {
                "shape": np.zeros(4),
                "expression": rng.normal(size=EXPRESSION_DIM),
                "pose": np.concatenate([np.zeros(6), [0.1 * frame, 0, 0], np.zeros(6)]),
            }
    write_dataset_json(root, labels, sh=sh, params=params, clips=clips)
    return root


def test_drive_from_a_studio_clip_shows_the_driving_frame(checkpoint, generator, tmp_path: Path) -> None:
    save_encoder(encoder_for(generator), tmp_path / "enc")
    data = write_clip_dataset(tmp_path / "clips")
    out = tmp_path / "clip.mp4"
    args = parse(
        ["drive", "--ckpt", str(checkpoint), "--clip", str(data), "--clip-id", "1", "--out", str(out)]
    )
    args.device, args.encoder, args.rotate_light = "cpu", tmp_path / "enc.safetensors", True
    assert args.run(args) == 0
    video = frames_of(out)
    assert video.shape == (3, 32, 64, 3)
    driving = np.asarray(Image.open(data / "clip1/frame2.png"))
    assert np.abs(video[2, :, :32].astype(int) - driving.astype(int)).mean() < 6  # H.264 loses a little
    assert np.abs(video[2, :, :32].astype(int) - video[1, :, :32].astype(int)).mean() > 20


# ------------------------------------------------------------------ domain transfer (§IV-B)


@pytest.fixture(scope="module")
def stylised(checkpoint: Path, generator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four exported source images, "stylised" in place (colours inverted, as a stand-in target domain)."""
    folder = tmp_path_factory.mktemp("domain")
    export_source_images(generator, folder / "dataset", 4, seed=5, batch=3)
    (folder / "exported").mkdir()
    for path in sorted((folder / "dataset" / "images").glob("*.png")):
        image = np.asarray(Image.open(path))
        Image.fromarray(image).save(folder / "exported" / path.name)  # kept to compare with
        Image.fromarray(255 - image).save(path)
    return folder / "dataset"


def test_exported_latents_regenerate_the_source_images(generator, stylised: Path) -> None:
    dataset = DomainTransferDataset(stylised)
    assert len(dataset) == 4 and dataset[0]["ws"].shape == (generator.num_ws, generator.config.w_dim)
    item = {key: torch.stack([dataset[i][key] for i in range(4)]) for key in ("ws", "m", "sh", "camera")}
    with torch.no_grad():
        expression = generator.expression_field(generator.encode_motion(item["m"]))
        animated = generator.animate(generator.synthesize_to_32(item["ws"], "const"), expression)
        albedo = generator.synthesize_albedo_planes(item["ws"], animated, "const")
        shading = generator.synthesize_shading_planes(
            item["ws"], albedo, generator.encode_lighting(item["sh"]), "const"
        )
        image = generator.render(albedo.planes, shading, item["ws"], item["camera"], perturb=False)["image"]
    exported = sorted((stylised.parent / "exported").glob("*.png"))
    source = torch.stack([torch.from_numpy(np.array(Image.open(p))) for p in exported])
    source = source.permute(0, 3, 1, 2).float() / 127.5 - 1
    assert (image.clamp(-1, 1) - source).abs().amax() <= 1.01 / 127.5  # uint8 rounding only
    assert (dataset[0]["image"] - source[0]).abs().amax() > 0.5  # the dataset serves the stylised image


def test_finetune_keeps_g_motion_fixed_changes_g_and_resumes(
    checkpoint: Path, stylised: Path, tmp_path
) -> None:
    dataset = DomainTransferDataset(stylised)

    def run(out: Path, max_steps: int | None = None, resume: bool = False) -> dict:
        return finetune_domain(
            checkpoint, dataset, out, kimg=0.004, batch_size=2, device="cpu",
            feature_network=small_feature_net(), checkpoint_every=1, resume=resume,
            max_steps=max_steps, lighting="dataset", progress=False,
        )  # fmt: skip

    unbroken = run(tmp_path / "unbroken")
    run(tmp_path / "broken", max_steps=1)
    resumed = run(tmp_path / "broken", resume=True)
    assert unbroken["steps"] == resumed["steps"] == 2 and resumed["resumed_from"] == 1
    source, _ = load_checkpoint(latest_checkpoint(checkpoint))
    tuned, meta = load_checkpoint(latest_checkpoint(tmp_path / "unbroken"))
    again, _ = load_checkpoint(latest_checkpoint(tmp_path / "broken"))
    names = dict(NeRFFaceShopGenerator(preset("tiny")).named_parameters())
    motion_names = [n for n in names if n.startswith(("motion_mapping.", "motion_synthesis."))]
    assert len(motion_names) == len(motion_parameters(NeRFFaceShopGenerator(preset("tiny"))))
    for name in motion_names:
        for network in ("G", "G_ema"):
            assert torch.equal(tuned[f"{network}.{name}"], source[f"G_ema.{name}"]), name
    changed = [n for n in names if not torch.equal(tuned[f"G.{n}"], source[f"G_ema.{n}"])]
    assert any(n.startswith("backbone.") for n in changed) and any(n.startswith("shading_") for n in changed)
    assert not any(n.startswith("mapping.") for n in changed)  # omega is stored: the mapping gets no gradient
    for key in (k for k in tuned if k.split(".")[0] in ("G", "G_ema", "D")):
        torch.testing.assert_close(again[key], tuned[key], rtol=0, atol=1e-6, msg=key)
    assert meta["config"]["domain_transfer"]["lighting"] == "dataset"
    fine_tuned, _ = load_generator(tmp_path / "unbroken")  # an ordinary NeRFFaceShop run
    assert isinstance(fine_tuned, NeRFFaceShopGenerator)


def test_relabelled_lighting_replaces_the_exported_sh(stylised: Path) -> None:
    """The estimator's SH (here: the image's mean colour as an ambient light) replace dataset.json's."""

    def ambient_from_mean_colour(images: Tensor) -> dict[str, Tensor]:
        colour = (images.mean(dim=(2, 3)) + 1) / 2
        return {"sh": directional_light_sh(torch.tensor([0.0, 0.0, 1.0]), 0.0, colour)}

    relabelled = DomainTransferDataset(stylised, ambient_from_mean_colour, batch=3)
    kept = DomainTransferDataset(stylised)
    item = relabelled[3]
    expected = ambient_from_mean_colour(item["image"][None])["sh"][0]
    torch.testing.assert_close(item["sh"], expected)
    assert not torch.allclose(item["sh"], kept[3]["sh"])
    assert torch.equal(item["ws"], kept[3]["ws"])


def test_random_lights_are_valid_front_lights() -> None:
    lights = random_lights(64, torch.Generator().manual_seed(0), "cpu")
    assert lights.shape == (64, 9, 3)
    # L_1,0 (z) > 0 on average: light mostly arrives from the camera's side; L00 fixes the total.
    assert float(lights[:, 2, 0].mean()) > 0 and bool((lights[:, 0] > 0).all())


def test_finetune_domain_command_line(checkpoint: Path, tmp_path: Path) -> None:
    from headforge.training.domain_transfer import add_finetune_domain_parser

    parser = argparse.ArgumentParser()
    add_finetune_domain_parser(parser.add_subparsers(dest="command"))
    export = [
        "finetune-domain",
        "export",
        "--ckpt",
        str(checkpoint),
        "--count",
        "2",
        "--out",
        str(tmp_path / "d"),
    ]
    args = parser.parse_args([*export, "--device", "cpu"])
    assert args.run(args) == 0
    assert len(list((tmp_path / "d" / "images").glob("*.png"))) == 2
    train = ["finetune-domain", "--ckpt", str(checkpoint), "--images", str(tmp_path / "d"), "--out"]
    train += [
        str(tmp_path / "run"),
        "--kimg",
        "0.002",
        "--batch",
        "2",
        "--lighting",
        "dataset",
        "--device",
        "cpu",
    ]
    args = parser.parse_args(train)
    assert args.action == "train" and args.run(args) == 0
    assert latest_checkpoint(tmp_path / "run") is not None
    assert isinstance(load_generator(tmp_path / "run")[0], NeRFFaceShopGenerator)
