"""`headforge export`: G_ema alone, loadable like a checkpoint, same images (float16: within rounding)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headforge.apps.loading import load_generator
from headforge.cli import main
from headforge.models.nerffaceshop import NeRFFaceShopGenerator, build_discriminator
from headforge.models.nerffaceshop_config import preset
from headforge.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from headforge.training.checkpoint_state import flatten_module_state
from headforge.training.export import EXPORT_KIND, export_generator


def _training_checkpoint(root: Path) -> tuple[Path, NeRFFaceShopGenerator]:
    """A checkpoint shaped like the trainer's: G, G_ema (different weights), D and provenance."""
    config = preset("tiny")
    torch.manual_seed(0)
    generator, ema, discriminator = (
        NeRFFaceShopGenerator(config),
        NeRFFaceShopGenerator(config),
        build_discriminator(config),
    )
    tensors = {
        **flatten_module_state(generator, "G."),
        **flatten_module_state(ema, "G_ema."),
        **flatten_module_state(discriminator, "D."),
    }
    meta = {
        "model": "nerffaceshop",
        "config": {"model": "nerffaceshop", "model_config": config.to_dict()},
        "step": 12,
        "kimg": 0.024,
    }
    return save_checkpoint(root / "checkpoints" / "step-00000012", tensors, meta), ema.eval()


def _render(generator: torch.nn.Module) -> torch.Tensor:
    config = generator.config
    z = torch.randn(2, config.z_dim, generator=torch.Generator().manual_seed(1))
    m = torch.randn(2, config.motion_dim, generator=torch.Generator().manual_seed(2))
    camera = torch.zeros(2, 25)
    camera[:, :16] = torch.eye(4).flatten()
    camera[:, 11] = 2.7
    camera[:, 16:] = torch.tensor([4.26, 0, 0.5, 0, 4.26, 0.5, 0, 0, 1.0])
    with torch.no_grad():
        sh = generator.sh_avg.reshape(1, 9, 3).expand(2, -1, -1)
        return generator(z, camera, m, sh, noise_mode="const", perturb=False)["image"]


def test_export_keeps_g_ema_only_and_renders_the_same(tmp_path: Path) -> None:
    stem, ema = _training_checkpoint(tmp_path / "run")
    out = export_generator(tmp_path / "run", tmp_path / "model", note={"training_command": "headforge train"})
    tensors, meta = load_checkpoint(out)
    assert tensors and all(name.startswith("G_ema.") for name in tensors)
    assert meta["kind"] == EXPORT_KIND and meta["step"] == 12 and meta["dtype"] == "float32"
    assert meta["note"]["training_command"] == "headforge train"
    training_size = stem.with_suffix(".safetensors").stat().st_size
    assert out.with_suffix(".safetensors").stat().st_size < training_size / 2
    loaded, _ = load_generator(out)
    assert torch.equal(_render(loaded), _render(ema))


def test_half_export_is_half_the_size_and_close(tmp_path: Path) -> None:
    _, ema = _training_checkpoint(tmp_path / "run")
    full = export_generator(tmp_path / "run", tmp_path / "full")
    half = export_generator(tmp_path / "run", tmp_path / "half.safetensors", half=True)
    tensors, meta = load_checkpoint(half)
    assert meta["dtype"] == "float16"
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())
    full_size = full.with_suffix(".safetensors").stat().st_size
    assert half.with_suffix(".safetensors").stat().st_size < 0.55 * full_size
    loaded, _ = load_generator(half)
    assert next(loaded.parameters()).dtype == torch.float32
    reference, image = _render(ema), _render(loaded)
    assert not torch.equal(reference, image)  # float16 rounding did happen ...
    assert (reference - image).abs().max() < 0.05  # ... and changes the image by rounding only


def test_export_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _training_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match="no 'E' tensors"):
        export_generator(tmp_path / "run", tmp_path / "x", network="E")
    stem = tmp_path / "run" / "checkpoints" / "step-00000012"
    stem.with_suffix(".safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="step-00000012"):
        export_generator(stem, tmp_path / "y")
    assert not (tmp_path / "y.safetensors").exists()
    assert main(["export", "--ckpt", str(tmp_path / "absent"), "--out", str(tmp_path / "z")]) == 2
    assert "absent" in capsys.readouterr().err
