"""A tiny conditional GAN on 8x8 images for the trainer tests.

Importable (``build_trainer``) and runnable as a script, including under
torchrun: ``python tests/toy_gan.py --out RUN --steps 8``. The script prints
the trainer's summary as one JSON line on rank 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headforge.training import Phase, PhaseContext, Trainer, make_adam  # noqa: E402
from headforge.training.losses import (  # noqa: E402
    discriminator_fake_loss,
    discriminator_real_loss,
    nonsaturating_generator_loss,
    r1_penalty,
    swap_conditioning,
)

IMAGE_SHAPE = (3, 8, 8)
Z_DIM = 8
C_DIM = 25


class ToyImages(Dataset):
    """``count`` items ``{"image": (3, 8, 8) in [-1, 1], "camera": (25,), "z": (8,)}``, fixed per index."""

    def __init__(self, count: int = 24) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.images = torch.rand((count, *IMAGE_SHAPE), generator=generator) * 2 - 1
        self.cameras = torch.randn((count, C_DIM), generator=generator)
        self.latents = torch.randn((count, Z_DIM), generator=generator)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "camera": self.cameras[index], "z": self.latents[index]}


class ToyGenerator(nn.Module):
    """(z (B, 8), c (B, 25)) -> images (B, 3, 8, 8) in [-1, 1]."""

    def __init__(self, noise_std: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(Z_DIM + C_DIM, 32), nn.LeakyReLU(0.2), nn.Linear(32, 3 * 8 * 8))
        self.noise_std = noise_std
        self.register_buffer("forward_calls", torch.zeros((), dtype=torch.int64))

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.forward_calls += 1
        images = torch.tanh(self.net(torch.cat([z, c], dim=1))).view(-1, *IMAGE_SHAPE)
        if self.noise_std > 0:  # draws from the global RNG on purpose (like StyleGAN's noise inputs)
            images = images + self.noise_std * torch.randn_like(images)
        return images


class ToyDiscriminator(nn.Module):
    """(images (B, 3, 8, 8), c (B, 25)) -> logits (B, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * 8 * 8 + C_DIM, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))

    def forward(self, images: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([images.flatten(1), c], dim=1))


def build_trainer(
    out_dir: str | Path,
    steps: int = 6,
    batch_size: int = 4,
    checkpoint_every: int | None = 2,
    snapshot_every: int | None = 2,
    latents_from_data: bool = False,
    resume: bool = False,
    accept_config_changes: tuple[str, ...] = (),
    sleep_s: float = 0.0,
    seed: int = 7,
    r1_interval: int = 2,
    tensorboard: bool = True,
    g_lr: float = 0.01,
) -> Trainer:
    """A Trainer for the toy GAN. ``latents_from_data`` removes all per-rank randomness."""
    torch.manual_seed(seed)  # identical initial weights on every rank
    G = ToyGenerator(noise_std=0.0 if latents_from_data else 0.05)
    G_ema = ToyGenerator(noise_std=0.0)
    G_ema.load_state_dict(G.state_dict())
    D = ToyDiscriminator()
    opt_G = make_adam(G.parameters(), lr=g_lr)
    opt_D = make_adam(D.parameters(), lr=0.01, interval=r1_interval)

    def latents(ctx: PhaseContext) -> torch.Tensor:
        return ctx.batch["z"] if latents_from_data else ctx.randn(ctx.batch_size, Z_DIM)

    def conditioning(ctx: PhaseContext) -> torch.Tensor:
        c = ctx.batch["camera"]
        return c if latents_from_data else swap_conditioning(c, 0.5, ctx.generator)

    def generator_main(ctx: PhaseContext) -> dict[str, torch.Tensor]:
        fake = ctx.networks["G"](latents(ctx), conditioning(ctx))
        logits = ctx.networks["D"](fake, ctx.batch["camera"])
        return {"loss": nonsaturating_generator_loss(logits).mean(), "score_fake": logits}

    def discriminator_main(ctx: PhaseContext) -> torch.Tensor:
        with torch.no_grad():
            fake = ctx.networks["G"](latents(ctx), conditioning(ctx))
        D_net = ctx.networks["D"]
        fake_loss = discriminator_fake_loss(D_net(fake, ctx.batch["camera"]))
        real_loss = discriminator_real_loss(D_net(ctx.batch["image"], ctx.batch["camera"]))
        return (fake_loss + real_loss).mean()

    def discriminator_r1(ctx: PhaseContext) -> dict[str, torch.Tensor]:
        real = ctx.batch["image"].detach().requires_grad_(True)
        penalty = r1_penalty(ctx.networks["D"](real, ctx.batch["camera"]), [real])
        return {"loss": (penalty * (1.0 / 2)).mean() * ctx.gain, "r1": penalty}

    phases = [
        Phase("Gmain", "G", opt_G, generator_main),
        Phase("Dmain", "D", opt_D, discriminator_main),
        Phase("Dreg", "D", opt_D, discriminator_r1, interval=r1_interval),
    ]
    fixed_z = torch.randn((4, Z_DIM), generator=torch.Generator().manual_seed(99))
    fixed_c = torch.zeros((4, C_DIM))

    def snapshot(networks: dict[str, nn.Module]) -> torch.Tensor:
        return networks["G_ema"](fixed_z.to(fixed_c.device), fixed_c)

    def slow_down(_info: object) -> None:
        time.sleep(sleep_s)

    return Trainer(
        networks={"G": G, "G_ema": G_ema, "D": D},
        phases=phases,
        dataset=ToyImages(),
        batch_size=batch_size,
        total_kimg=steps * batch_size / 1000,
        out_dir=out_dir,
        config={"model": "toy", "z_dim": Z_DIM, "latents_from_data": latents_from_data, "g_lr": g_lr},
        ema_of={"G_ema": "G"},
        ema_kimg=0.01,
        ema_rampup=None,
        seed=seed,
        device="cpu",
        log_every=2,
        snapshot_every=snapshot_every,
        checkpoint_every=checkpoint_every,
        image_snapshot_fn=snapshot,
        image_grid=(2, 2),
        resume=resume,
        accept_config_changes=accept_config_changes,
        on_step_end=slow_down if sleep_s > 0 else None,
        progress=False,
        tensorboard=tensorboard,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--latents-from-data", action="store_true")
    parser.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard (faster start)")
    parser.add_argument("--dump-rank-weights", action="store_true", help="every rank saves its final weights")
    args = parser.parse_args()
    torch.set_num_threads(1)
    trainer = build_trainer(
        args.out,
        steps=args.steps,
        batch_size=args.batch,
        checkpoint_every=args.checkpoint_every,
        latents_from_data=args.latents_from_data,
        resume=args.resume,
        sleep_s=args.sleep,
        tensorboard=not args.no_tensorboard,
    )
    summary = trainer.train()
    if args.dump_rank_weights:
        from safetensors.torch import save_file

        weights = {
            f"{name}.{key}": value.detach().clone()
            for name in ("G", "D")
            for key, value in trainer.networks[name].state_dict().items()
        }
        save_file(weights, str(Path(args.out) / f"rank{trainer.dist.rank}.safetensors"))
    if trainer.dist.is_main:
        print("SUMMARY " + json.dumps(summary), flush=True)
    from headforge.training.distributed import cleanup_distributed

    cleanup_distributed()


if __name__ == "__main__":
    main()
