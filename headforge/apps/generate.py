"""`headforge generate`: images and depth maps for a list of seeds."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from headforge.cameras import Camera
from headforge.imaging import depth_to_uint8, save_png, to_uint8


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            first, last = (int(v) for v in part.split("-", 1))
            if last < first:
                raise ValueError(f"seed range {part!r} runs backwards")
            seeds.extend(range(first, last + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def latent_for_seed(seed: int, z_dim: int, device: torch.device | str) -> torch.Tensor:
    """The latent (1, z_dim) of a seed: the same on every machine (drawn on the CPU)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, z_dim, generator=generator).to(device)


def camera_labels(yaw: torch.Tensor, pitch: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """FFHQ-framed orbit cameras (B, 25) at yaw / pitch (B,) radians."""
    return Camera.orbit(yaw.float(), pitch.float(), device=device).to_label()


def frontal_label(batch: int, device: torch.device | str) -> torch.Tensor:
    """The frontal camera (B, 25) EG3D conditions on at inference time."""
    zeros = torch.zeros(batch)
    return camera_labels(zeros, zeros, device)


@torch.inference_mode()
def render_seed(
    generator: nn.Module,
    seed: int,
    camera: torch.Tensor,
    truncation_psi: float = 0.7,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Render one seed from the cameras (N, 25); the planes are synthesised once for all views."""
    z = latent_for_seed(seed, generator.config.z_dim, device)
    ws = generator.map(z, frontal_label(1, device), truncation_psi=truncation_psi)
    planes = generator.synthesize_planes(ws, noise_mode="const")
    views = camera.shape[0]
    return generator.render_planes(
        planes.expand(views, *planes.shape[1:]),
        ws.expand(views, *ws.shape[1:]),
        camera,
        perturb=False,
        noise_mode="const",
    )


def generate_images(
    generator: nn.Module,
    seeds: list[int],
    out_dir: str | Path,
    truncation_psi: float = 0.7,
    yaw: float = 0.0,
    pitch: float = 0.0,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Write ``seedNNNN.png``, ``seedNNNN_depth.png`` and ``seedNNNN_raw.png`` per seed."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    camera = camera_labels(torch.tensor([yaw]), torch.tensor([pitch]), device)
    for seed in tqdm(seeds, desc="generate", unit="img"):
        output = render_seed(generator, seed, camera, truncation_psi, device)
        stem = out_dir / f"seed{seed:04d}"
        written.append(save_png(to_uint8(output["image"])[0], f"{stem}.png"))
        written.append(
            save_png(depth_to_uint8(output["image_depth"], output["opacity"])[0], f"{stem}_depth.png")
        )
        written.append(save_png(to_uint8(output["image_raw"])[0], f"{stem}_raw.png"))
    return written
