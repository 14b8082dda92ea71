"""Figures of the studio's output: a contact sheet of many identities and a passes strip of one image.

``python -m headforge.data.studio.sheets OUT_DIR`` regenerates
``docs/images/studio_contact_sheet.png`` and ``docs/images/studio_passes.png``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headforge.data.studio.item import StudioContext
from headforge.data.studio.presets import SYNTH_PRESETS
from headforge.data.studio.runner import default_head_model
from headforge.heads.base import HeadModel

__all__ = ["contact_sheet", "passes_strip"]


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def contact_sheet(
    model: HeadModel,
    path: Path,
    rows: int = 8,
    cols: int = 8,
    resolution: int = 128,
    seed: int = 0,
    preset: str = "images",
) -> Path:
    """Render ``rows * cols`` images of ``preset`` and tile them into one PNG at ``path``."""
    context = StudioContext(model, resolution)
    spec = SYNTH_PRESETS[preset]
    tiles = [
        _decode(context.render(spec, index, seed).files[f"{index // 1000:05d}/img{index:08d}.png"])
        for index in range(rows * cols)
    ]
    grid = np.concatenate(
        [np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def passes_strip(
    model: HeadModel, path: Path, index: int = 0, resolution: int = 256, seed: int = 0, preset: str = "images"
) -> Path:
    """Image, albedo, normal, depth, segmentation and shading of one image side by side."""
    context = StudioContext(model, resolution)
    item = context.render(SYNTH_PRESETS[preset], index, seed)
    names = list(item.files)
    image, maps = _decode(item.files[names[0]]), {name.split("/")[1]: item.files[name] for name in names[1:]}
    depth = np.asarray(Image.open(io.BytesIO(maps["depth"]))).astype(np.float64)
    valid = depth > 0
    shown = np.zeros_like(depth)
    if valid.any():
        near, far = depth[valid].min(), depth[valid].max()
        shown[valid] = 1.0 - 0.85 * (depth[valid] - near) / max(far - near, 1e-9)
    depth_rgb = np.repeat((shown * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    strip = [
        image,
        _decode(maps["albedo"]),
        _decode(maps["normal"]),
        depth_rgb,
        _decode(maps["segmentation"]),
        _decode(maps["shading"]),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(strip, axis=1)).save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder for studio_contact_sheet.png and studio_passes.png")
    parser.add_argument("--seed", type=int, default=0)
    # Image 25 of seed 0: a side key light with a cast nose shadow and an open mouth (teeth).
    parser.add_argument("--passes-index", type=int, default=25, help="image shown in studio_passes.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = default_head_model()
    print(contact_sheet(model, args.out / "studio_contact_sheet.png", seed=args.seed))
    print(passes_strip(model, args.out / "studio_passes.png", index=args.passes_index, seed=args.seed))


if __name__ == "__main__":
    main()
