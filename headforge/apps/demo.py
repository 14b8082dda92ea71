"""`headforge demo`: the whole pipeline on the built-in default, in a few minutes on a CPU.

1. The synthetic head studio renders a small labelled dataset of procedural
   heads (and a contact sheet of it).
2. A tiny EG3D tri-plane GAN trains on it from scratch for a short while.
3. The trained generator writes a grid of generated heads with their depth
   maps, an orbit video and a marching-cubes mesh.

A few CPU minutes of training give blurry, head-coloured shapes, not faces:
the point is to show every stage working end to end on this machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headforge.imaging import depth_to_uint8, image_grid, save_png, to_uint8


def _contact_sheet(dataset_dir: Path, out_path: Path, count: int = 16) -> Path:
    from headforge.data.dataset import HeadDataset

    dataset = HeadDataset(dataset_dir, check=False)
    images = np.stack([to_uint8(dataset[i]["image"][None])[0] for i in range(min(count, len(dataset)))])
    return save_png(image_grid(images, columns=int(np.ceil(np.sqrt(len(images))))), out_path)


def run_demo(
    out_dir: str | Path = "outputs/demo",
    images: int = 64,
    resolution: int = 64,
    kimg: float = 2.0,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Path]:
    """Run the demo and return the paths of what it wrote."""
    from headforge.apps.generate import camera_labels, render_seed
    from headforge.apps.loading import load_generator
    from headforge.apps.mesh import export_seed_mesh
    from headforge.apps.video import write_orbit_video
    from headforge.data.studio import run_synth
    from headforge.training.launch import TrainRequest, train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    start = time.perf_counter()

    print(f"[1/3] synthetic head studio: {images} images at {resolution}px")
    data_dir = out_dir / "studio"
    run_synth("images", images, resolution, seed, data_dir, workers=2)
    written["studio_contact_sheet"] = _contact_sheet(data_dir, out_dir / "studio_contact_sheet.png")

    print(f"[2/3] training a tiny EG3D for {kimg} kimg")
    run_dir = out_dir / "run"
    train(
        TrainRequest(
            model="eg3d",
            data=data_dir,
            out=run_dir,
            preset="tiny",
            kimg=kimg,
            seed=seed,
            device=device,
            resume=True,
            progress=True,
        )
    )

    print("[3/3] generating images, depth, an orbit video and a mesh")
    generator, _ = load_generator(run_dir, device)
    frontal = camera_labels(torch.zeros(1), torch.zeros(1), device)
    tiles, depths = [], []
    for tile_seed in range(8):
        output = render_seed(generator, tile_seed, frontal, truncation_psi=0.7, device=device)
        tiles.append(to_uint8(output["image"])[0])
        depth = depth_to_uint8(output["image_depth"], output["opacity"])[0]
        depths.append(np.asarray(Image.fromarray(depth).resize(tiles[-1].shape[1::-1], Image.NEAREST)))
    depth_rgb = np.repeat(np.stack(depths)[..., None], 3, axis=-1)
    written["generated_grid"] = save_png(
        image_grid(np.concatenate([np.stack(tiles), depth_rgb]), columns=8), out_dir / "generated_grid.png"
    )
    written["orbit_video"] = write_orbit_video(generator, 0, out_dir / "orbit.mp4", frames=48, device=device)
    written["mesh"] = export_seed_mesh(
        generator, 0, out_dir / "head.ply", resolution=64, level="auto", device=device
    )
    print(f"demo finished in {time.perf_counter() - start:.0f} s; outputs:")
    for name, path in written.items():
        print(f"  {name:<22} {path}")
    return written
