"""Load a trained generator from a checkpoint (safetensors + JSON, no pickles)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from headforge.models.registry import get_model_spec
from headforge.training.checkpoint import latest_checkpoint, load_checkpoint, load_module_state


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint stem from a run folder, a ``.safetensors`` / ``.json`` file or a stem."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no valid checkpoint in this folder")
        return found
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    if not path.with_suffix(".safetensors").is_file():
        raise FileNotFoundError(f"{path.with_suffix('.safetensors')}: checkpoint file not found")
    return path


def load_generator(
    path: str | Path, device: torch.device | str = "cpu", use_ema: bool = True
) -> tuple[nn.Module, dict]:
    """Build the generator a checkpoint describes and load its (EMA) weights.

    Returns the generator in eval mode on ``device`` and the checkpoint's
    metadata (``meta["config"]`` holds ``model`` and ``model_config``).
    """
    stem = resolve_checkpoint(path)
    tensors, meta = load_checkpoint(stem)
    run_config = meta.get("config", {})
    if "model" not in run_config or "model_config" not in run_config:
        raise ValueError(f"{stem.with_suffix('.json')}: checkpoint metadata lacks the model config")
    spec = get_model_spec(run_config["model"])
    config = spec.config_from_dict(run_config["model_config"])
    generator = spec.build_generator(config)
    prefix = "G_ema." if use_ema and any(k.startswith("G_ema.") for k in tensors) else "G."
    load_module_state(generator, tensors, prefix)
    return generator.to(device).eval().requires_grad_(False), meta
