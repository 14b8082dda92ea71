"""Files of a studio dataset: names, byte-stable PNG encoding, atomic writes, previews.

Layout of a dataset folder (EG3D style, 1000 images per subfolder)::

    00000/img00000000.png            image (8-bit sRGB-ish RGB)
    maps/albedo/00000/img00000000.png
    maps/normal/...  maps/depth/...  maps/segmentation/...  maps/shading/...
    previews/clip000000.mp4          videos preset: H.264 preview of each clip
    synth_manifest.jsonl             one JSON record per finished image (resume)
    dataset.json                     written last, atomically

Every file is written to a temporary name in its folder and renamed into
place, so an interrupted run never leaves a truncated file under a final
name. PNGs carry no metadata and use a fixed zlib level, so equal pixels
give equal bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headforge.atomic_io import write_bytes_atomic

__all__ = [
    "MANIFEST_NAME",
    "MAP_FILE_KINDS",
    "image_name",
    "map_name",
    "preview_name",
    "encode_png",
    "write_bytes_atomic",
    "item_files",
    "write_item",
    "read_manifest",
    "write_manifest",
    "append_manifest",
    "write_preview",
]

MANIFEST_NAME = "synth_manifest.jsonl"
MAP_FILE_KINDS = ("albedo", "normal", "depth", "segmentation", "shading")
_PNG_COMPRESS_LEVEL = 6


def image_name(index: int) -> str:
    """Dataset-relative name of image ``index``: ``00000/img00000000.png``."""
    return f"{index // 1000:05d}/img{index:08d}.png"


def map_name(kind: str, index: int) -> str:
    """Dataset-relative name of a map: ``maps/<kind>/00000/img00000000.png``."""
    return f"maps/{kind}/{image_name(index)}"


def preview_name(clip: int) -> str:
    """Dataset-relative name of a clip preview: ``previews/clip000000.mp4``."""
    return f"previews/clip{clip:06d}.mp4"


def encode_png(array: np.ndarray, palette: Sequence[int] | None = None) -> bytes:
    """PNG bytes of an image array, without metadata (byte-identical for identical arrays).

    Args:
        array: (H, W, 3) uint8 RGB, (H, W) uint8 grey, (H, W) uint16 16-bit grey,
            or (H, W) uint8 palette indices with ``palette``.
        palette: flat RGB list (3 x up to 256 values) for a palette ("P") image.
    """
    array = np.ascontiguousarray(array)
    if palette is not None:
        if array.dtype != np.uint8 or array.ndim != 2:
            raise ValueError("a palette image needs (H, W) uint8 indices")
        image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        image.putpalette(list(palette))
    elif array.dtype == np.uint16 and array.ndim == 2:
        image = Image.frombytes("I;16", (array.shape[1], array.shape[0]), array.astype("<u2").tobytes())
    elif array.dtype == np.uint8 and array.ndim in (2, 3):
        image = Image.fromarray(array)
    else:
        raise ValueError(f"cannot encode array of dtype {array.dtype} and shape {array.shape} as PNG")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL, optimize=False)
    return buffer.getvalue()


def item_files(index: int) -> list[str]:
    """Every dataset-relative file of image ``index`` (image first, then its maps)."""
    return [image_name(index)] + [map_name(kind, index) for kind in MAP_FILE_KINDS]


def write_item(root: Path, index: int, encoded: dict[str, bytes]) -> None:
    """Write one image's encoded files (keys: "image" and the map kinds) under ``root``, image last.

    The image is renamed into place last, so its presence implies its maps are complete.
    """
    for kind in MAP_FILE_KINDS:
        write_bytes_atomic(root / map_name(kind, index), encoded[kind])
    write_bytes_atomic(root / image_name(index), encoded["image"])


def read_manifest(root: Path) -> dict[int, dict[str, Any]]:
    """Records of finished images by index; unreadable lines (an interrupted append) are skipped."""
    path = root / MANIFEST_NAME
    records: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            records[int(record["index"])] = record
        except (ValueError, KeyError, TypeError):
            continue
    return records


def _record_line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, allow_nan=False) + "\n"


def append_manifest(root: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records (one JSON line each) and flush them to disk."""
    with open(root / MANIFEST_NAME, "a", encoding="utf-8") as stream:
        for record in records:
            stream.write(_record_line(record))
        stream.flush()
        os.fsync(stream.fileno())


def write_manifest(root: Path, records: dict[int, dict[str, Any]]) -> None:
    """Rewrite the manifest atomically, sorted by index (the same bytes however the run went)."""
    text = "".join(_record_line(records[index]) for index in sorted(records))
    write_bytes_atomic(root / MANIFEST_NAME, text.encode("utf-8"))


def write_preview(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    """Encode (H, W, 3) uint8 frames as an H.264 mp4 at ``path``, atomically and bit-exactly.

    Uses imageio-ffmpeg with one encoder thread and ``bitexact`` flags (no
    encoder version or time stamps in the file), so equal frames give equal bytes.
    """
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        writer = imageio.get_writer(
            temporary,
            format="FFMPEG",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=16,
            ffmpeg_log_level="error",
            output_params=[
                "-threads",
                "1",
                "-fflags",
                "+bitexact",
                "-flags:v",
                "+bitexact",
                "-map_metadata",
                "-1",
            ],
        )
        try:
            for frame in frames:
                writer.append_data(np.ascontiguousarray(frame))
        finally:
            writer.close()
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
