"""Training NeRFFaceShop's driving encoder (§IV-A): coefficients -> animation latent, from generated images.

For a trained (frozen) generator G and an off-the-shelf coefficient estimator:

1. draw identity z, lighting (SH) and animation m at random and render frontal
   images I = G(omega, l, G_motion(m));
2. estimate their expression + jaw coefficients c from I (no gradients);
3. predict m_hat = E(c) and re-render I_hat = G(omega, l, G_motion(m_hat)) with
   the same identity and lighting (gradients flow through the frozen G into E);
4. minimise L = |I - I_hat|_1 + lambda * L_perc(I, I_hat), lambda = 1.

The paper's perceptual loss is LPIPS, which needs downloaded weights; headforge
uses its own offline feature distance (``headforge.eval.image_metrics.
perceptual_distance`` on ``HeadforgeFeatureNet``), which has LPIPS's structure
but is not LPIPS. Supervision is purely image-based, so E may map the
estimator's biased coefficients to expressions the estimator cannot represent.

The loop is the generic :class:`~headforge.training.trainer.Trainer` with one
phase (Adam, lr 1e-3, batch 4: §V-A), so runs checkpoint and resume. The
finished encoder is written as ``OUT/encoder.safetensors`` + ``OUT/encoder.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.eval.features import FeatureNetwork, HeadforgeFeatureNet
from headforge.eval.image_metrics import perceptual_distance
from headforge.lighting import directional_light_sh
from headforge.models.nerffaceshop import NeRFFaceShopGenerator
from headforge.models.nerffaceshop_controls import HeadCache, HeadControls
from headforge.models.nerffaceshop_encoder import (
    CoefficientEncoder,
    CoefficientEncoderConfig,
    coefficient_vector,
    save_encoder,
)
from headforge.runtime import default_device
from headforge.training.phases import Phase, PhaseContext, make_adam
from headforge.training.trainer import Trainer

__all__ = [
    "CoefficientEstimator",
    "DrivingLatents",
    "DrivingObjective",
    "add_train_driver_parser",
    "frontal_cameras",
    "load_coefficient_estimator",
    "random_lights",
    "run_train_driver",
    "sample_driving_latents",
    "train_driver",
]

#: images (B, 3, H, W) in [-1, 1] -> {"expression": (B, E), "jaw": (B, 3)} (headforge.eval.estimators).
CoefficientEstimator = Callable[[Tensor], Mapping[str, Tensor]]


def load_coefficient_estimator(
    weights: str | Path | None = None, device: torch.device | str = "cpu"
) -> CoefficientEstimator:
    """headforge's expression + jaw estimator (``headforge.eval.estimators``, shipped weights by default)."""
    from headforge.eval.estimators import load_estimator

    return load_estimator("expression", weights=weights, device=device)


def frontal_cameras(batch: int, device: torch.device | str) -> Tensor:
    """The frontal camera (B, 25): conditioning and rendering camera of the driving images."""
    from headforge.apps.generate import frontal_label

    return frontal_label(batch, device)


def random_lights(count: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
    """Random SH lights (count, 9, 3): a white directional light from the front hemisphere plus ambient.

    Directions are N(0, I) + (0, 0, 1.5) (mostly from the camera side, as
    portrait lighting), light strength U(0.3, 0.8) and ambient 1 - strength, so
    every face stays visible.
    """
    direction = torch.randn(count, 3, generator=generator, device=device)
    direction = direction + torch.tensor([0.0, 0.0, 1.5], device=device)
    strength = 0.3 + 0.5 * torch.rand(count, 1, generator=generator, device=device)
    return directional_light_sh(direction, color=strength.expand(-1, 3), ambient=(1 - strength).expand(-1, 3))


@dataclass
class DrivingLatents:
    """One batch of generation inputs: identity z (B, z_dim), animation m (B, motion_dim), SH (B, 9, 3)."""

    z: Tensor
    m: Tensor
    sh: Tensor


def sample_driving_latents(
    generator: NeRFFaceShopGenerator, batch: int, rng: torch.Generator, device: torch.device | str
) -> DrivingLatents:
    """Random identities, animations m ~ N(0, I) and lights, drawn from ``rng`` on ``device``."""
    config = generator.config
    z = torch.randn(batch, config.z_dim, generator=rng, device=device)
    m = torch.randn(batch, config.motion_dim, generator=rng, device=device)
    return DrivingLatents(z, m, random_lights(batch, rng, device))


class DrivingObjective:
    """The §IV-A loss of an encoder against a frozen generator and a coefficient estimator.

    Args:
        generator: a trained NeRFFaceShop generator (G_ema), frozen here.
        estimator: images -> expression + jaw coefficients (see :data:`CoefficientEstimator`).
        feature_network: the perceptual distance's network (default ``HeadforgeFeatureNet()``).
        perceptual_weight: lambda (1 in the paper).
        truncation_psi: identity truncation of the generated faces.
    """

    def __init__(
        self,
        generator: NeRFFaceShopGenerator,
        estimator: CoefficientEstimator,
        feature_network: FeatureNetwork | None = None,
        perceptual_weight: float = 1.0,
        truncation_psi: float = 0.7,
    ) -> None:
        self.generator = generator.eval().requires_grad_(False)
        self.controls = HeadControls(self.generator, noise_mode="const")
        self.estimator = estimator
        device = generator.sh_avg.device
        self.feature_network = (feature_network or HeadforgeFeatureNet()).to(device).requires_grad_(False)
        self.perceptual_weight = perceptual_weight
        self.truncation_psi = truncation_psi

    @torch.no_grad()
    def targets(self, latents: DrivingLatents) -> tuple[HeadCache, Tensor, Tensor]:
        """Head caches, frontal images I (B, 3, H, W) and their estimated coefficients c (B, E + 3)."""
        camera = frontal_cameras(latents.z.shape[0], latents.z.device)
        cache = self.controls.build(latents.z, camera, latents.m, latents.sh, self.truncation_psi)
        images = self.controls.render(cache, camera)["image"]
        return cache, images, coefficient_vector(self.estimator(images))

    def loss(self, encoder: CoefficientEncoder, latents: DrivingLatents) -> dict[str, Tensor]:
        """``loss`` = L1 + lambda * perceptual (scalars), for fresh targets of ``latents``."""
        return self.loss_on_targets(encoder, *self.targets(latents))

    def loss_on_targets(
        self, encoder: CoefficientEncoder, cache: HeadCache, images: Tensor, coefficients: Tensor
    ) -> dict[str, Tensor]:
        """The loss for targets from :meth:`targets` (reusable: a fixed batch needs one generation)."""
        camera = frontal_cameras(images.shape[0], images.device)
        driven = self.controls.render(self.controls.reanimate(cache, encoder(coefficients)), camera)["image"]
        l1 = F.l1_loss(driven, images)
        perceptual = perceptual_distance(driven, images, self.feature_network).mean()
        return {"loss": l1 + self.perceptual_weight * perceptual, "l1": l1, "perceptual": perceptual}

    def phase_loss(self, ctx: PhaseContext) -> dict[str, Tensor]:
        """The trainer's ``Emain``: a fresh batch drawn from the step's generator."""
        latents = sample_driving_latents(self.generator, ctx.batch_size, ctx.generator, ctx.device)
        return self.loss(ctx.networks["E"], latents)


class _StepIndices(torch.utils.data.Dataset):
    """The trainer needs a dataset; the driving data is generated in the phase, so items are indices."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"index": torch.tensor(index)}


def coefficient_sample(objective: DrivingObjective, count: int, seed: int, batch: int = 8) -> Tensor:
    """Estimated coefficients (count, E + 3) of ``count`` generated faces (for the input statistics)."""
    device = objective.generator.sh_avg.device
    rng = torch.Generator(device=device).manual_seed(seed)
    rows = []
    for start in range(0, count, batch):
        latents = sample_driving_latents(objective.generator, min(batch, count - start), rng, device)
        rows.append(objective.targets(latents)[2])
    return torch.cat(rows)


def train_driver(
    generator: NeRFFaceShopGenerator,
    estimator: CoefficientEstimator,
    out_dir: str | Path,
    steps: int,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    hidden: int = 256,
    layers: int = 4,
    perceptual_weight: float = 1.0,
    truncation_psi: float = 0.7,
    feature_network: FeatureNetwork | None = None,
    statistics_samples: int = 64,
    checkpoint_every: int | None = 500,
    resume: bool = False,
    source: str | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train E for ``steps`` steps of ``batch_size`` faces and write ``OUT/encoder.{safetensors,json}``.

    The generator's device is the training device. The coefficient sizes are
    read from the estimator's output; the input statistics from
    ``statistics_samples`` generated faces (seeded, so a resumed run agrees).
    ``source`` (the generator checkpoint) is recorded in the run config and the
    encoder's metadata. Returns the trainer's summary plus ``encoder`` (path).
    """
    out_dir = Path(out_dir)
    device = generator.sh_avg.device
    objective = DrivingObjective(generator, estimator, feature_network, perceptual_weight, truncation_psi)
    sample = coefficient_sample(objective, statistics_samples, seed)
    expression_dim = sample.shape[1] - 3
    config = CoefficientEncoderConfig(expression_dim, 3, generator.config.motion_dim, hidden, layers)
    torch.manual_seed(seed)
    encoder = CoefficientEncoder(config).to(device)
    encoder.set_statistics(sample)
    optimizer = make_adam(encoder.parameters(), lr, betas=(0.9, 0.999))
    trainer = Trainer(
        networks={"E": encoder},
        phases=[Phase("Emain", "E", optimizer, objective.phase_loss)],
        dataset=_StepIndices(batch_size),
        batch_size=batch_size,
        total_kimg=steps * batch_size / 1000,
        out_dir=out_dir,
        config={
            "model": "nerffaceshop_driver",
            "encoder": asdict(config),
            "source": source,
            "lr": lr,
            "perceptual_weight": perceptual_weight,
            "truncation_psi": truncation_psi,
        },
        seed=seed,
        device=device,
        checkpoint_every=checkpoint_every,
        resume=resume,
        max_steps=steps,
        progress=progress,
        tensorboard=False,
    )
    summary = trainer.train()
    meta = {"source": source, "steps": trainer.step, "losses": summary["losses"]}
    summary["encoder"] = str(save_encoder(encoder, out_dir / "encoder", meta))
    return summary


# ---------------------------------------------------------------------- command line


def add_train_driver_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``headforge train-driver --ckpt CKPT --out DIR [--steps N]``."""
    p = subparsers.add_parser(
        "train-driver",
        help="train NeRFFaceShop's coefficient -> animation-latent encoder (§IV-A)",
        description="Train the encoder E mapping head-model expression + jaw coefficients to the "
        "animation latent m, on frontal images generated by a trained NeRFFaceShop checkpoint "
        "(L1 + perceptual loss). Writes OUT/encoder.safetensors + OUT/encoder.json.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="NeRFFaceShop checkpoint or run folder")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, the encoder files)")
    p.add_argument("--steps", type=int, default=20000, help="optimiser steps (default 20000)")
    p.add_argument("--batch", type=int, default=4, help="faces per step (default 4, the paper's)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, the paper's)")
    p.add_argument("--trunc", type=float, default=0.7, help="identity truncation psi (default 0.7)")
    p.add_argument("--estimator-weights", type=Path, default=None, help="expression estimator weights")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(run=run_train_driver)
    return p


def load_nerffaceshop(path: str | Path, device: str) -> tuple[NeRFFaceShopGenerator, str]:
    """G_ema of a NeRFFaceShop checkpoint and the resolved checkpoint stem."""
    from headforge.apps.loading import load_generator, resolve_checkpoint

    stem = resolve_checkpoint(path)
    generator, _ = load_generator(stem, device)
    if not isinstance(generator, NeRFFaceShopGenerator):
        raise ValueError(f"{stem}: a NeRFFaceShop checkpoint is needed, got {type(generator).__name__}")
    return generator, str(Path(stem).resolve())


def run_train_driver(args: argparse.Namespace) -> int:
    """Entry point of ``headforge train-driver``."""
    device = default_device(args.device)
    generator, stem = load_nerffaceshop(args.ckpt, device)
    estimator = load_coefficient_estimator(args.estimator_weights, device)
    summary = train_driver(
        generator,
        estimator,
        args.out,
        args.steps,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        truncation_psi=args.trunc,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        source=stem,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0
