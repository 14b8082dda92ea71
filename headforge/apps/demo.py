"""`headforge demo`: the shipped NeRFFaceShop model animated, relit, turned and exported, in minutes on a CPU.

The model (``headforge/assets/models/nerffaceshop-small.*``: G_ema, float16,
with the command that trained it in its JSON) is the ``small`` preset trained
on the synthetic studio's talking-head videos. The demo writes to ``--out``:

- ``grid.png``: identities x expressions (rows) under lights x views (columns);
- ``orbit.mp4``: the identities side by side while the camera circles them;
- ``relight.mp4``: a directional light circling the heads (light path only);
- ``driven.mp4``: the heads driven by a studio clip's head-model coefficients
  through the shipped driving encoder (the clip on the left), or by a smooth
  walk through animation latents when no encoder ships;
- ``mesh.ply``: the first identity's marching-cubes mesh with albedo vertex colours.

Every frame reuses the cached stages of :class:`HeadControls`: a camera change
re-renders only, a light change re-runs only the shading blocks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from headforge.apps.generate import camera_labels, frontal_label, latent_for_seed
from headforge.imaging import image_grid, save_png, to_uint8, write_video
from headforge.lighting import directional_light_sh
from headforge.models.nerffaceshop_controls import HeadCache, HeadControls

__all__ = ["SHIPPED_MODEL", "demo_lights", "demo_motions", "run_demo"]

#: stem of the shipped default model (``.safetensors`` + ``.json``).
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "models" / "nerffaceshop-small"
#: the driving encoder shipped with it (``headforge train-driver`` output), if any.
SHIPPED_ENCODER = SHIPPED_MODEL.parent / "nerffaceshop-small-driver.safetensors"


def demo_lights(count: int = 3) -> Tensor:
    """(count, 9, 3) directional lights swept from the subject's right, over the front, to the left."""
    angles = torch.linspace(-1.0, 1.0, count) if count > 1 else torch.zeros(1)
    directions = torch.stack([angles.sin(), torch.full_like(angles, 0.35), angles.cos()], dim=1)
    return torch.stack([directional_light_sh(d, color=0.75, ambient=0.3) for d in directions])


def demo_motions(count: int, motion_dim: int, seed: int = 0) -> Tensor:
    """(count, motion_dim) animation latents: neutral (m = 0) first, then draws from N(0, I)."""
    generator = torch.Generator().manual_seed(seed)
    motions = torch.randn(count, motion_dim, generator=generator)
    motions[0] = 0.0
    return motions


def _tile(frames: Tensor, columns: int) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> one uint8 (rows * H, columns * W, 3) image."""
    return image_grid(to_uint8(frames), columns=columns)


def _build(controls: HeadControls, seeds: list[int], motions: Tensor, light: Tensor, psi: float) -> HeadCache:
    generator = controls.generator
    device = generator.sh_avg.device
    z = torch.cat([latent_for_seed(seed, generator.config.z_dim, device) for seed in seeds])
    count = z.shape[0]
    return controls.build(
        z, frontal_label(count, device), motions.to(device), light.to(device).expand(count, 9, 3), psi
    )


@torch.no_grad()
def write_grid(controls: HeadControls, seeds: list[int], out_path: Path, psi: float = 0.7) -> Path:
    """Rows: identity x expression; columns: light x view (yaw -0.35, 0, +0.35 rad)."""
    generator = controls.generator
    device = generator.sh_avg.device
    motions = demo_motions(3, generator.config.motion_dim)
    lights = demo_lights(3)
    views = camera_labels(torch.tensor([-0.35, 0.0, 0.35]), torch.zeros(3), device)
    rows = []
    for seed in tqdm(seeds, desc="grid", unit="identity"):
        cache = _build(controls, [seed] * len(motions), motions, lights[0], psi)
        tiles = torch.empty(len(motions), len(lights), len(views), 3, *generator_resolution(generator))
        for light_index, light in enumerate(lights):
            lit = controls.relight(cache, light.to(device).expand(len(motions), 9, 3))
            for view_index in range(len(views)):
                camera = views[view_index : view_index + 1].expand(len(motions), -1)
                tiles[:, light_index, view_index] = controls.render(lit, camera)["image"].cpu()
        rows.append(tiles.flatten(1, 2))
    grid = torch.cat(rows)  # (identities * expressions, lights * views, 3, H, W)
    return save_png(_tile(grid.flatten(0, 1), columns=grid.shape[1]), out_path)


def generator_resolution(generator: torch.nn.Module) -> tuple[int, int]:
    size = generator.config.output_resolution
    return size, size


def _write(frames: Iterator[np.ndarray], total: int, out_path: Path, desc: str, fps: int = 24) -> Path:
    return write_video(tqdm(frames, total=total, desc=desc, unit="frame"), out_path, fps=fps)


@torch.no_grad()
def write_orbit(controls: HeadControls, cache: HeadCache, out_path: Path, frames: int = 48) -> Path:
    """The cached heads side by side, the camera on a closed orbit (yaw +-0.5, pitch +-0.2 rad)."""
    device = controls.generator.sh_avg.device
    count = cache.ws.shape[0]
    t = torch.arange(frames, dtype=torch.float64) / frames

    def stream() -> Iterator[np.ndarray]:
        for index in range(frames):
            yaw = 0.5 * math.sin(2 * math.pi * float(t[index]))
            pitch = 0.2 * math.cos(2 * math.pi * float(t[index])) - 0.05
            camera = camera_labels(torch.tensor([yaw]), torch.tensor([pitch]), device).expand(count, -1)
            yield _tile(controls.render(cache, camera)["image"], columns=count)

    return _write(stream(), frames, out_path, "orbit")


@torch.no_grad()
def write_relight(controls: HeadControls, cache: HeadCache, out_path: Path, frames: int = 48) -> Path:
    """A directional light circling the heads once about the vertical axis (light path only)."""
    from headforge.apps.drive import light_schedule

    device = controls.generator.sh_avg.device
    count = cache.ws.shape[0]
    lights = light_schedule(frames, torch.zeros(9, 3), rotate=True)
    camera = frontal_label(count, device)

    def stream() -> Iterator[np.ndarray]:
        for light in lights:
            lit = controls.relight(cache, light.to(device).expand(count, 9, 3))
            yield _tile(controls.render(lit, camera)["image"], columns=count)

    return _write(stream(), frames, out_path, "relight")


@torch.no_grad()
def write_latent_animation(
    controls: HeadControls, cache: HeadCache, out_path: Path, frames: int = 48, keys: int = 4
) -> Path:
    """The heads animated along a closed smooth path through ``keys`` animation latents (no encoder)."""
    generator = controls.generator
    device = generator.sh_avg.device
    count = cache.ws.shape[0]
    anchors = demo_motions(keys + 1, generator.config.motion_dim, seed=7)[1:]
    camera = frontal_label(count, device)

    def stream() -> Iterator[np.ndarray]:
        for index in range(frames):
            position = keys * index / frames
            left, weight = int(position) % keys, position - int(position)
            weight = 0.5 - 0.5 * math.cos(math.pi * weight)  # ease in and out between keys
            m = torch.lerp(anchors[left], anchors[(left + 1) % keys], weight).to(device)
            moved = controls.reanimate(cache, m.expand(count, -1))
            yield _tile(controls.render(moved, camera)["image"], columns=count)

    return _write(stream(), frames, out_path, "animation")


def write_driven(
    generator: torch.nn.Module, encoder_path: Path, out_path: Path, seed: int, work: Path
) -> Path:
    """Drive identity ``seed`` with a freshly rendered studio clip's coefficients (clip on the left)."""
    from headforge.apps.drive import read_clip, write_driven_video
    from headforge.data.studio import run_synth
    from headforge.models.nerffaceshop_encoder import load_encoder

    clip_dir = work / "driving_clip"
    run_synth("videos", 48, generator.config.output_resolution, 11, clip_dir, workers=1)
    encoder, _ = load_encoder(encoder_path, generator.sh_avg.device)
    return write_driven_video(generator, encoder, read_clip(clip_dir, 0), seed, out_path, fps=24)


def run_demo(
    out_dir: str | Path = "outputs/demo",
    checkpoint: str | Path | None = None,
    encoder: str | Path | None = None,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    device: str = "cpu",
    frames: int = 48,
) -> dict[str, Path]:
    """Write the demo's pictures, videos and mesh; returns name -> path.

    Args:
        out_dir: output folder.
        checkpoint: a NeRFFaceShop checkpoint, export or run folder (default: the shipped model).
        encoder: the driving encoder (default: the shipped one when ``checkpoint`` is None).
        seeds: identity seeds shown.
        device: where to run.
        frames: frames of the orbit, relighting and (latent) animation videos.
    """
    from headforge.apps.loading import load_generator
    from headforge.apps.mesh import export_seed_mesh

    checkpoint = SHIPPED_MODEL if checkpoint is None else Path(checkpoint)
    if encoder is None and checkpoint == SHIPPED_MODEL and SHIPPED_ENCODER.is_file():
        encoder = SHIPPED_ENCODER
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    generator, meta = load_generator(checkpoint, device)
    if meta.get("config", {}).get("model") != "nerffaceshop":
        raise ValueError(f"{checkpoint}: the demo needs a NeRFFaceShop model, got {meta.get('model')!r}")
    kimg = meta.get("kimg")
    print(f"model: {checkpoint} (NeRFFaceShop, {kimg if kimg is not None else '?'} kimg)")
    controls = HeadControls(generator, noise_mode="const")
    seeds = list(seeds)
    written: dict[str, Path] = {"grid": write_grid(controls, seeds, out_dir / "grid.png")}
    motions = torch.zeros(len(seeds), generator.config.motion_dim)
    cache = _build(controls, seeds, motions, demo_lights(3)[1], 0.7)
    written["orbit_video"] = write_orbit(controls, cache, out_dir / "orbit.mp4", frames)
    written["relight_video"] = write_relight(controls, cache, out_dir / "relight.mp4", frames)
    if encoder is not None:
        driven_path = out_dir / "driven.mp4"
        written["driven_video"] = write_driven(generator, Path(encoder), driven_path, seeds[0], out_dir)
    else:
        print("no driving encoder: animating through animation latents instead of head-model coefficients")
        written["driven_video"] = write_latent_animation(controls, cache, out_dir / "driven.mp4", frames)
    mesh_path = out_dir / "mesh.ply"
    try:  # sigma = 10 is EG3D's surface level for trained models ...
        written["mesh"] = export_seed_mesh(generator, seeds[0], mesh_path, device=device)
    except ValueError as error:  # ... an untrained one may never reach it
        print(f"mesh: {error}; using the field's own mid level")
        written["mesh"] = export_seed_mesh(generator, seeds[0], mesh_path, level="auto", device=device)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; wrote to {out_dir}:")
    for name, path in written.items():
        print(f"  {name:14s} {path}")
    return written
