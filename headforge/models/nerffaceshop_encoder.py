"""NeRFFaceShop's driving encoder (§IV-A): head-model coefficients -> animation latent m.

"We learn an additional encoder E to map coefficients of the morphable model
into our animation latent space": the expression and jaw coefficients c of a
face (estimated from an image, or the ground truth of a studio render) go
through an MLP to m_hat = E(c) in R^motion_dim (128 in the paper), which
drives any generated identity through G_motion. Training lives in
``headforge.training.nerffaceshop_driving``.

The coefficients are standardised by stored statistics first (expression
coefficients are roughly unit-scaled, jaw angles are a tenth of a radian), so
one learning rate suits both. Files: ``NAME.safetensors`` (weights and the
statistics) + ``NAME.json`` (the config and free-form metadata), no pickles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from headforge.nn.layers import FullyConnectedLayer

__all__ = [
    "ENCODER_FORMAT",
    "CoefficientEncoder",
    "CoefficientEncoderConfig",
    "coefficient_vector",
    "load_encoder",
    "save_encoder",
]

ENCODER_FORMAT = "headforge.nerffaceshop_encoder"
#: The jaw rotation inside a FLAME-layout pose vector (global 3, neck 3, jaw 3, eyes 6).
JAW_SLICE = slice(6, 9)


@dataclass
class CoefficientEncoderConfig:
    """Sizes of the encoder: coefficients (expression_dim + jaw_dim) -> m (motion_dim).

    ``hidden`` / ``layers``: width and number of hidden LeakyReLU(0.2) layers.
    """

    expression_dim: int
    jaw_dim: int = 3
    motion_dim: int = 128
    hidden: int = 256
    layers: int = 4

    @property
    def input_dim(self) -> int:
        return self.expression_dim + self.jaw_dim


def coefficient_vector(coefficients: Mapping[str, Tensor]) -> Tensor:
    """Expression (B, E) and jaw (B, 3) coefficients -> one vector (B, E + 3).

    Accepts ``{"expression", "jaw"}`` (the estimators' output) or the dataset
    ``params`` layout ``{"expression", "pose"}`` (FLAME pose, jaw = pose[6:9], radians).
    """
    expression = coefficients["expression"]
    if "jaw" in coefficients:
        jaw = coefficients["jaw"]
    elif "pose" in coefficients:
        jaw = coefficients["pose"][..., JAW_SLICE]
    else:
        raise KeyError("coefficients need 'jaw' or a FLAME-layout 'pose' next to 'expression'")
    return torch.cat([expression.float(), jaw.to(expression.device).float()], dim=-1)


class CoefficientEncoder(nn.Module):
    """E: standardised coefficients (B, E + 3) -> animation latent m_hat (B, motion_dim).

    An MLP of equalised-learning-rate dense layers (LeakyReLU 0.2) with a
    linear output: m lives in N(0, I), which needs no squashing. Deterministic
    (no dropout, no normalisation over the batch).
    """

    def __init__(self, config: CoefficientEncoderConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.input_dim] + [config.hidden] * config.layers
        self.hidden = nn.Sequential(
            *(FullyConnectedLayer(a, b, activation="lrelu") for a, b in zip(widths[:-1], widths[1:]))
        )
        self.output = FullyConnectedLayer(widths[-1], config.motion_dim)
        # Standardisation of the input coefficients (set from data by `set_statistics`).
        self.register_buffer("coefficient_mean", torch.zeros(config.input_dim))
        self.register_buffer("coefficient_std", torch.ones(config.input_dim))

    @torch.no_grad()
    def set_statistics(self, coefficients: Tensor, min_std: float = 1e-3) -> None:
        """Standardise inputs by the mean and std of a sample of coefficients (N, E + 3)."""
        self.coefficient_mean.copy_(coefficients.mean(dim=0))
        self.coefficient_std.copy_(coefficients.std(dim=0).clamp_min(min_std))

    def forward(self, coefficients: Tensor) -> Tensor:
        """Coefficients (B, E + 3) = [expression, jaw axis-angle (radians)] -> m_hat (B, motion_dim)."""
        if coefficients.shape[-1] != self.config.input_dim:
            raise ValueError(
                f"expected {self.config.input_dim} coefficients ({self.config.expression_dim} expression "
                f"+ {self.config.jaw_dim} jaw), got {coefficients.shape[-1]}"
            )
        x = (coefficients.float() - self.coefficient_mean) / self.coefficient_std
        return self.output(self.hidden(x))


def _paths(path: str | Path) -> tuple[Path, Path]:
    stem = Path(path)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_encoder(
    encoder: CoefficientEncoder, path: str | Path, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``STEM.safetensors`` + ``STEM.json`` (config + ``meta``); returns the safetensors path."""
    weights, document = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in encoder.state_dict().items()}
    temp = weights.with_name(f".{weights.name}.tmp")
    save_file(tensors, str(temp), metadata={"format": ENCODER_FORMAT})
    temp.replace(weights)
    text = json.dumps({"format": ENCODER_FORMAT, "config": asdict(encoder.config), "meta": dict(meta or {})})
    temp = document.with_name(f".{document.name}.tmp")
    temp.write_text(text + "\n")
    temp.replace(document)  # JSON last: a JSON on disk always has its weights
    return weights


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> tuple[CoefficientEncoder, dict]:
    """An encoder saved by :func:`save_encoder` (eval mode, no grads) and its metadata."""
    weights, document = _paths(path)
    for file in (weights, document):
        if not file.is_file():
            raise FileNotFoundError(f"{file}: encoder file not found")
    stored = json.loads(document.read_text())
    if stored.get("format") != ENCODER_FORMAT:
        raise ValueError(f"{document}: not a NeRFFaceShop coefficient encoder ({stored.get('format')!r})")
    encoder = CoefficientEncoder(CoefficientEncoderConfig(**stored["config"]))
    encoder.load_state_dict(load_file(str(weights)))
    return encoder.to(device).eval().requires_grad_(False), stored.get("meta", {})
