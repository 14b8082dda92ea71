"""Image and video I/O: tensors in [-1, 1] <-> uint8 PNG / H.264 MP4."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headforge.atomic_io import write_bytes_atomic


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (B, C, H, W) in [-1, 1] -> uint8 array (B, H, W, C); C = 1 is squeezed to grey."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).cpu().numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def depth_to_uint8(depth: torch.Tensor, opacity: torch.Tensor | None = None) -> np.ndarray:
    """Depth maps (B, 1, H, W) -> uint8 (B, H, W), near = bright, normalised per image.

    Where ``opacity`` (B, 1, H, W) is given, pixels below 0.5 opacity are
    background (black) and do not take part in the normalisation.
    """
    depth = depth.detach().float()
    mask = torch.ones_like(depth, dtype=torch.bool) if opacity is None else opacity.detach() > 0.5
    out = torch.zeros_like(depth)
    for i in range(depth.shape[0]):
        values = depth[i][mask[i]]
        if values.numel() == 0:
            continue
        near, far = values.min(), values.max()
        scaled = 1 - (depth[i] - near) / (far - near).clamp_min(1e-8)
        out[i] = torch.where(mask[i], 0.1 + 0.9 * scaled.clamp(0, 1), torch.zeros_like(scaled))
    return (out[:, 0] * 255).round().to(torch.uint8).cpu().numpy()


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write one uint8 image (H, W) or (H, W, 3) atomically (temp file + rename)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 0) -> np.ndarray:
    """Tile uint8 images (N, H, W[, C]) into one (rows*H, columns*W[, C]) image."""
    count, height, width = images.shape[:3]
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cell_h, cell_w = height + padding, width + padding
    grid = np.zeros((rows * cell_h - padding, columns * cell_w - padding, *images.shape[3:]), images.dtype)
    for index in range(count):
        row, column = divmod(index, columns)
        grid[row * cell_h : row * cell_h + height, column * cell_w : column * cell_w + width] = images[index]
    return grid


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: int = 30) -> Path:
    """Write uint8 frames (H, W, 3) as an H.264 MP4 (yuv420p, plays everywhere).

    Frame sides are padded to even sizes, which yuv420p needs.
    """
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = imageio.get_writer(
        tmp, fps=fps, codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=2
    )
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()
    os.replace(tmp, path)
    return path
