"""EG3D end to end through the CLI: train -> generate -> video -> mesh, resume, controls."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from headforge.apps.loading import load_generator
from headforge.cameras import Camera, sample_ffhq_poses
from headforge.cli import main
from headforge.data.dataset_json import write_dataset_json
from headforge.models.eg3d import TriplaneGenerator, preset
from headforge.training.checkpoint import latest_checkpoint, load_checkpoint
from headforge.training.launch import TrainRequest, train


def make_dataset(root: Path, count: int = 8, resolution: int = 32) -> Path:
    """Images of a shaded disc ("head") on a gradient, with FFHQ-like camera labels."""
    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    yaw, pitch = sample_ffhq_poses(count, generator=generator)
    labels = Camera.orbit(yaw, pitch).to_label()
    ys, xs = np.mgrid[0:resolution, 0:resolution] / resolution
    entries = []
    for index in range(count):
        centre_x = 0.5 - 0.3 * float(yaw[index])
        disc = ((xs - centre_x) ** 2 + (ys - 0.5) ** 2) < 0.09
        image = np.stack([0.2 + 0.6 * ys, 0.3 + 0.2 * xs, 0.5 * np.ones_like(xs)], -1)
        image[disc] = [0.85, 0.65, 0.55]
        name = f"img{index:04d}.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(root / name)
        entries.append((name, labels[index].tolist()))
    write_dataset_json(root / "dataset.json", entries)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("eg3d_data"))


def test_train_generate_video_mesh(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # 3 steps at batch 4: every phase runs at step 0 (all intervals divide 0).
    assert (
        main(
            [
                "train",
                "--model",
                "eg3d",
                "--data",
                str(dataset),
                "--preset",
                "tiny",
                "--out",
                str(run),
                "--kimg",
                "0.012",
                "--snapshot-every",
                "1",
            ]
        )
        == 0
    )
    checkpoint = latest_checkpoint(run)
    assert checkpoint is not None
    tensors, meta = load_checkpoint(checkpoint)
    assert meta["step"] == 3 and meta["config"]["model"] == "eg3d"
    assert any(key.startswith("G_ema.") for key in tensors)
    assert list((run / "tensorboard").iterdir()), "no TensorBoard event file"
    assert list((run / "images").glob("*.png")), "no image grid"

    out = tmp_path / "gen"
    assert main(["generate", "--ckpt", str(run), "--seeds", "0-1", "--out", str(out)]) == 0
    for seed in (0, 1):
        image = np.asarray(Image.open(out / f"seed{seed:04d}.png"))
        depth = np.asarray(Image.open(out / f"seed{seed:04d}_depth.png"))
        assert image.shape == (32, 32, 3) and depth.shape == (16, 16)
    assert not np.array_equal(
        np.asarray(Image.open(out / "seed0000.png")), np.asarray(Image.open(out / "seed0001.png"))
    )

    video = tmp_path / "orbit.mp4"
    assert (
        main(["video", "--ckpt", str(run), "--seed", "0", "--orbit", "--frames", "6", "--out", str(video)])
        == 0
    )
    frames = imageio.mimread(video)
    assert len(frames) == 6 and frames[0].shape[:2] == (32, 32)
    assert not np.array_equal(frames[0], frames[2]), "the orbit does not move"

    mesh_path = tmp_path / "head.ply"
    assert (
        main(
            [
                "mesh",
                "--ckpt",
                str(run),
                "--seed",
                "0",
                "--resolution",
                "24",
                "--level",
                "auto",
                "--out",
                str(mesh_path),
            ]
        )
        == 0
    )
    mesh = trimesh.load(mesh_path, process=False)
    assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    assert np.abs(mesh.vertices).max() <= 0.5 + 1e-6


def test_resume_equals_unbroken(dataset: Path, tmp_path: Path) -> None:
    def request(out: Path, **kw) -> TrainRequest:
        return TrainRequest(
            model="eg3d",
            data=dataset,
            out=out,
            preset="tiny",
            kimg=0.016,
            progress=False,
            checkpoint_every=2,
            **kw,
        )

    train(request(tmp_path / "unbroken"))
    train(request(tmp_path / "broken", max_steps=2))
    train(request(tmp_path / "broken", resume=True))
    unbroken, meta_a = load_checkpoint(latest_checkpoint(tmp_path / "unbroken"))
    resumed, meta_b = load_checkpoint(latest_checkpoint(tmp_path / "broken"))
    assert meta_a["step"] == meta_b["step"] == 4
    weights = [key for key in unbroken if key.split(".")[0] in ("G", "G_ema", "D")]
    assert weights
    for key in weights:
        torch.testing.assert_close(resumed[key], unbroken[key], rtol=0, atol=1e-6, msg=key)


def test_bad_resolution_is_a_clear_error(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data24", count=4, resolution=24)
    code = main(
        ["train", "--model", "eg3d", "--data", str(data), "--preset", "tiny", "--out", str(tmp_path / "r")]
    )
    assert code == 2


def test_camera_changes_only_the_view() -> None:
    torch.manual_seed(0)
    generator = TriplaneGenerator(preset("tiny")).eval()
    z = torch.randn(1, generator.config.z_dim)
    conditioning = Camera.frontal().to_label()
    side = Camera.orbit(torch.tensor([0.5]), torch.tensor([0.0])).to_label()
    with torch.no_grad():
        front_view = generator(z, conditioning, camera=conditioning, noise_mode="const", perturb=False)
        side_view = generator(z, conditioning, camera=side, noise_mode="const", perturb=False)
    assert torch.equal(front_view["planes"], side_view["planes"])
    assert torch.equal(front_view["ws"], side_view["ws"])
    assert not torch.allclose(front_view["image_raw"], side_view["image_raw"])


@pytest.mark.parametrize("sr_noise", ["none", "random"])
def test_superresolution_noise_follows_the_config(sr_noise: str) -> None:
    """EG3D's default: no per-pixel noise in the SR layers, even when the synthesis noise is random."""
    torch.manual_seed(0)
    generator = TriplaneGenerator(preset("tiny", superresolution_noise_mode=sr_noise)).eval()
    z, label = torch.randn(1, generator.config.z_dim), Camera.frontal().to_label()

    def image() -> torch.Tensor:
        torch.manual_seed(1)  # the same synthesis noise and ray jitter every time
        with torch.no_grad():
            return generator(z, label, camera=label, noise_mode="random")["image"]

    before = image()
    with torch.no_grad():
        for name, parameter in generator.superresolution.named_parameters():
            if name.endswith("noise_strength"):
                parameter.fill_(5.0)
    changed = (image() - before).abs().amax()
    assert changed == 0 if sr_noise == "none" else changed > 1e-2


def test_checkpoint_loads_same_generator(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TrainRequest(model="eg3d", data=dataset, out=run, preset="tiny", kimg=0.004, progress=False))
    generator, meta = load_generator(run)
    tensors, _ = load_checkpoint(latest_checkpoint(run))
    for name, value in generator.state_dict().items():
        assert torch.equal(value, tensors[f"G_ema.{name}"]), name
