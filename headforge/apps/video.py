"""`headforge video`: orbit videos of generated heads."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from headforge.apps.generate import camera_labels, render_seed
from headforge.imaging import to_uint8, write_video


def orbit_angles(
    frames: int, yaw_range: float = 0.35, pitch_range: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Yaw and pitch (frames,) of one closed elliptical orbit around the head, as EG3D's videos."""
    t = torch.arange(frames, dtype=torch.float64) / frames
    yaw = yaw_range * torch.sin(2 * math.pi * t)
    pitch = pitch_range * torch.cos(2 * math.pi * t) - 0.05
    return yaw.float(), pitch.float()


def orbit_frames(
    generator: nn.Module,
    seed: int,
    frames: int = 60,
    truncation_psi: float = 0.7,
    batch: int = 4,
    device: torch.device | str = "cpu",
) -> Iterator[np.ndarray]:
    """Frames (H, W, 3) uint8 of an orbit around one seed's head."""
    yaw, pitch = orbit_angles(frames)
    for start in range(0, frames, batch):
        cameras = camera_labels(yaw[start : start + batch], pitch[start : start + batch], device)
        output = render_seed(generator, seed, cameras, truncation_psi, device)
        yield from to_uint8(output["image"])


def write_orbit_video(
    generator: nn.Module,
    seed: int,
    out_path: str | Path,
    frames: int = 60,
    fps: int = 30,
    truncation_psi: float = 0.7,
    device: torch.device | str = "cpu",
) -> Path:
    """Render an orbit and write it as an H.264 MP4."""
    from tqdm import tqdm

    stream = orbit_frames(generator, seed, frames, truncation_psi, device=device)
    return write_video(tqdm(stream, total=frames, desc="orbit", unit="frame"), out_path, fps=fps)
