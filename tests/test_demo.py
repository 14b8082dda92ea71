"""`headforge demo` writes every output, and its controls do what they claim (on a tiny model made here)."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from headforge.apps.demo import SHIPPED_MODEL, demo_lights, demo_motions, run_demo
from headforge.lighting import mirror_sh
from headforge.models.nerffaceshop import NeRFFaceShopGenerator
from headforge.models.nerffaceshop_config import preset
from headforge.models.nerffaceshop_encoder import CoefficientEncoder, CoefficientEncoderConfig, save_encoder
from headforge.training.checkpoint import save_checkpoint
from headforge.training.checkpoint_state import flatten_module_state


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export-format tiny NeRFFaceShop model with a non-trivial (randomised) G_ema."""
    # Uncapped delta_shape: randomised shape heads are steep, and the cap (tested in
    # test_nerffaceshop.py) would shrink them to a near-flat field; the demo does not depend on it.
    config = preset("tiny", output_resolution=32, shape_lipschitz_max=None)
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(config)
    with torch.no_grad():  # deformation heads start near zero: make animation visible
        for name, parameter in generator.named_parameters():
            if "motion_synthesis" in name or "shape_heads" in name:
                parameter.normal_(0.0, 0.5)
    meta = {"config": {"model": "nerffaceshop", "model_config": config.to_dict()}, "kimg": 0.0}
    stem = tmp_path_factory.mktemp("model") / "tiny"
    return save_checkpoint(stem, flatten_module_state(generator, "G_ema."), meta)


def _frames(path: Path) -> np.ndarray:
    return np.stack(imageio.mimread(path)).astype(np.int16)


def test_demo_writes_every_output(tiny_model: Path, tmp_path: Path) -> None:
    written = run_demo(tmp_path / "demo", checkpoint=tiny_model, seeds=(0, 1), frames=8)
    assert set(written) == {"grid", "orbit_video", "relight_video", "driven_video", "mesh"}
    grid = np.asarray(Image.open(written["grid"]))
    # 2 identities x 3 expressions rows; 3 lights x 3 views columns; 32 px tiles.
    assert grid.shape == (6 * 32, 9 * 32, 3) and grid.std() > 5
    orbit, relight = _frames(written["orbit_video"]), _frames(written["relight_video"])
    assert orbit.shape[:3] == (8, 32, 64) and relight.shape[:3] == (8, 32, 64)
    # The camera moves in the orbit and the light in the relighting video: frames differ
    # (an untrained model is nearly flat, so the differences are small but not zero).
    assert np.abs(orbit[0] - orbit[4]).mean() > 0.05 and np.abs(relight[0] - relight[4]).mean() > 0.05
    assert len(imageio.mimread(written["driven_video"])) == 8
    assert len(trimesh.load(written["mesh"], process=False).faces) > 0


def test_grid_rows_vary_expression_and_columns_vary_light_and_view(tiny_model: Path, tmp_path: Path) -> None:
    written = run_demo(tmp_path / "demo", checkpoint=tiny_model, seeds=(3,), frames=4)
    grid = np.asarray(Image.open(written["grid"])).astype(np.int16)
    tiles = grid.reshape(3, 32, 9, 32, 3).transpose(0, 2, 1, 3, 4)  # (expression, light x view, H, W, 3)
    # An untrained model changes little, but each change is visible somewhere.
    assert np.abs(tiles[0, 1] - tiles[1, 1]).mean() > 0.02  # another expression, same light and view
    assert np.abs(tiles[0, 1] - tiles[0, 4]).mean() > 0.02  # another light (same view)
    assert np.abs(tiles[0, 3] - tiles[0, 4]).mean() > 0.02  # another view (same light)
    assert np.array_equal(tiles[0, 4], grid[:32, 4 * 32 : 5 * 32])  # the layout the docs describe


def test_driven_video_uses_the_encoder_and_the_clip(tiny_model: Path, tmp_path: Path) -> None:
    config = preset("tiny")
    encoder = CoefficientEncoder(CoefficientEncoderConfig(expression_dim=35, motion_dim=config.motion_dim))
    path = save_encoder(encoder, tmp_path / "encoder")
    written = run_demo(tmp_path / "demo", checkpoint=tiny_model, encoder=path, seeds=(0,), frames=4)
    frames = _frames(written["driven_video"])
    assert frames.shape[:3] == (48, 32, 64)  # studio clip of 48 frames on the left, driven head on the right
    assert (tmp_path / "demo" / "driving_clip" / "dataset.json").is_file()


def test_demo_controls() -> None:
    lights = demo_lights(3)
    assert lights.shape == (3, 9, 3)
    # Left and right lights are mirror images (x -> -x); the middle one is its own mirror.
    assert torch.allclose(mirror_sh(lights[0]), lights[2], atol=1e-6)
    assert not torch.allclose(lights[0], lights[2])
    assert torch.allclose(mirror_sh(lights[1]), lights[1], atol=1e-6)
    motions = demo_motions(3, 16)
    assert torch.equal(motions[0], torch.zeros(16)) and motions[1:].abs().sum() > 0


def test_missing_model_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        run_demo(tmp_path / "demo", checkpoint=tmp_path / "absent.safetensors")
    assert SHIPPED_MODEL.name == "nerffaceshop-small"


def test_shipped_model_loads_renders_and_records_its_training() -> None:
    from headforge.apps.loading import load_generator
    from headforge.training.checkpoint import read_checkpoint_meta
    from headforge.training.export import EXPORT_KIND

    weights = SHIPPED_MODEL.with_suffix(".safetensors")
    assert weights.stat().st_size < 25 * 2**20
    meta = read_checkpoint_meta(SHIPPED_MODEL)
    assert meta["kind"] == EXPORT_KIND and meta["kimg"] > 0
    assert "headforge train --model nerffaceshop --preset small" in meta["note"]["training_command"]
    generator, _ = load_generator(SHIPPED_MODEL)
    assert generator.config.output_resolution == 64
    with torch.no_grad():
        image = run_controls_once(generator)
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def run_controls_once(generator: NeRFFaceShopGenerator) -> torch.Tensor:
    from headforge.apps.generate import frontal_label, latent_for_seed
    from headforge.models.nerffaceshop_controls import HeadControls

    controls = HeadControls(generator)
    z = latent_for_seed(0, generator.config.z_dim, "cpu")
    cache = controls.build(
        z, frontal_label(1, "cpu"), torch.zeros(1, generator.config.motion_dim), demo_lights(1), 0.7
    )
    return controls.render(cache, frontal_label(1, "cpu"))["image"]
