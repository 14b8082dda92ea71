"""What a training run writes besides checkpoints: TensorBoard scalars/images, ``stats.jsonl``, PNG grids.

Only rank 0 should create a :class:`RunLog` with ``enabled=True``; a disabled
log accepts the same calls and writes nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["RunLog", "image_grid", "save_image_grid"]


def image_grid(images: Tensor, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Tile images into one uint8 picture.

    Args:
        images: (N, C, H, W) float in [-1, 1], C = 1 or 3 (values outside are clipped).
        grid: ``(cols, rows)``; default the smallest near-square grid holding N.
            Extra cells are black; images beyond ``cols * rows`` are dropped.

    Returns:
        (rows * H, cols * W, 3) uint8 array.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    count, _, height, width = images.shape
    if grid is None:
        cols = max(1, math.ceil(math.sqrt(count)))
        grid = (cols, max(1, math.ceil(count / cols)))
    cols, rows = grid
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.expand(-1, 3, -1, -1)[: cols * rows]
    canvas = torch.zeros((rows * cols, 3, height, width), dtype=torch.uint8)
    canvas[: pixels.shape[0]] = pixels
    # (rows*cols, 3, H, W) -> (rows, H, cols, W, 3)
    canvas = canvas.view(rows, cols, 3, height, width).permute(0, 3, 1, 4, 2)
    return canvas.reshape(rows * height, cols * width, 3).numpy()


def save_image_grid(
    images: Tensor, path: str | os.PathLike, grid: tuple[int, int] | None = None
) -> np.ndarray:
    """Write :func:`image_grid` of ``images`` ((N, C, H, W) in [-1, 1]) to a PNG; returns the array."""
    picture = image_grid(images, grid)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return picture


class RunLog:
    """TensorBoard + JSON-lines writer for one run folder.

    Layout: ``OUT/tensorboard/events.*``, ``OUT/stats.jsonl`` (one JSON object
    per logged step), ``OUT/images/*.png``.

    Args:
        out_dir: run folder.
        enabled: False on ranks other than 0 (all calls become no-ops).
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._writer = None
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow import

                self._writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Record scalar values at global step ``step``."""
        if not self.enabled:
            return
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, global_step=step)
            self._writer.flush()
        self.append_record("stats.jsonl", {"step": step, **values})

    def append_record(self, name: str, record: Mapping[str, Any]) -> None:
        """Append one JSON object as a line to ``OUT/name`` (``stats.jsonl``, ``config_changes.jsonl``)."""
        if not self.enabled:
            return
        with open(self.out_dir / name, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def images(self, tag: str, step: int, images: Tensor, grid: tuple[int, int] | None = None) -> Path | None:
        """Save ``images`` ((N, C, H, W) in [-1, 1]) as ``images/{tag}-{step:08d}.png`` and to TensorBoard."""
        if not self.enabled:
            return None
        path = self.out_dir / "images" / f"{tag}-{step:08d}.png"
        picture = save_image_grid(images, path, grid)
        if self._writer is not None:
            self._writer.add_image(tag, picture, global_step=step, dataformats="HWC")
            self._writer.flush()
        return path

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
