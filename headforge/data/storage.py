"""Byte access to a dataset stored as a folder or a zip archive, and decoding of its files.

A dataset lives in a folder or in a ``.zip`` whose root holds ``dataset.json``;
every file is addressed by its path relative to that root with ``/``
separators, so the two forms behave identically. See ``docs/dataset_format.md``
for how each kind of file is decoded; the decoders here return NumPy arrays at
the file's native size, leaving resizing and tensor conversion to the reader.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

# Extensions counted as dataset images when looking for unlabelled files.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# PIL modes that convert to RGB without losing meaning (alpha is dropped,
# palettes expanded, grey replicated); 16-bit and float images are refused
# because PIL's RGB conversion would clip them silently.
RGB_CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})

MAP_KINDS = ("albedo", "normal", "depth", "segmentation", "shading")
DEFAULT_DEPTH_SCALE = 1e-4  # world units per count of a 16-bit depth PNG


class FileDecodeError(ValueError):
    """A file exists but cannot be decoded as what it should be; the message says why."""


def normalize_name(name: str) -> str:
    """Dataset-relative file name with ``/`` separators and no ``./`` prefix.

    Raises ``FileDecodeError`` for absolute names or names that leave the
    dataset root, which a ``dataset.json`` must never contain.
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise FileDecodeError(f"file name {name!r} must be relative and stay inside the dataset")
    return "/".join(part for part in parts if part != ".")


class DatasetStorage:
    """Read-only view of the files of a dataset folder or zip archive.

    The zip handle is opened lazily and dropped when pickled, so a storage
    object can be sent to DataLoader worker processes; each process opens its
    own handle. ``ZipFile`` serialises reads internally, so threads may share it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None
        if self.path.is_dir():
            self.is_zip = False
            self._names = self._list_folder()
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self.is_zip = True
            self._names = frozenset(
                normalize_name(info.filename) for info in self._zipfile().infolist() if not info.is_dir()
            )
        elif not self.path.exists():
            raise FileNotFoundError(f"dataset {self.path} does not exist")
        else:
            raise FileDecodeError(f"dataset {self.path} is neither a folder nor a zip archive")

    def _list_folder(self) -> frozenset[str]:
        names = []
        for folder, _, files in os.walk(self.path):
            relative = Path(folder).relative_to(self.path).as_posix()
            prefix = "" if relative == "." else relative + "/"
            names.extend(prefix + file for file in files)
        return frozenset(names)

    def _zipfile(self) -> zipfile.ZipFile:
        # A handle inherited through fork shares its file offset with the
        # parent, so every process opens its own.
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def names(self) -> frozenset[str]:
        """All file names in the dataset (relative, ``/``-separated)."""
        return self._names

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def read(self, name: str) -> bytes:
        """Bytes of file ``name``; ``FileNotFoundError`` when the dataset has no such file."""
        if name not in self._names:
            raise FileNotFoundError(f"file {name} not found")
        if self.is_zip:
            return self._zipfile().read(name)
        return (self.path / name).read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"] = None
        state["_zip_pid"] = None
        return state


def open_image(data: bytes) -> Image.Image:
    """Open and fully decode image bytes (``verify`` misses truncated files; ``load`` does not)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise FileDecodeError(f"cannot decode image ({type(error).__name__}: {error})") from error
    return image


def _to_rgb(data: bytes) -> Image.Image:
    image = open_image(data)
    if image.mode not in RGB_CONVERTIBLE_MODES:
        raise FileDecodeError(f"unsupported image mode {image.mode} (expected 8-bit grey, RGB or RGBA)")
    return image.convert("RGB")


def _resized(image: Image.Image, size: int | None, resample: Image.Resampling) -> Image.Image:
    return image if size is None or image.size == (size, size) else image.resize((size, size), resample)


def decode_rgb(data: bytes, size: int | None = None) -> np.ndarray:
    """Image bytes -> uint8 array (H, W, 3); resized to (size, size) with Lanczos when ``size`` is given.

    Grey is replicated, palettes expanded and alpha dropped (not composited);
    modes outside ``RGB_CONVERTIBLE_MODES`` raise ``FileDecodeError``.
    """
    return np.array(_resized(_to_rgb(data), size, Image.Resampling.LANCZOS), dtype=np.uint8)


def decode_map(
    kind: str, data: bytes, file_name: str, depth_scale: float = DEFAULT_DEPTH_SCALE, size: int | None = None
) -> np.ndarray:
    """Decode one per-image map file to float32 (C, H, W), optionally resized to (size, size).

    - ``albedo``, ``shading``: 8-bit colour images -> (3, H, W) in [-1, 1]
      (value / 127.5 - 1, the mapping used for the image itself); Lanczos resize.
    - ``normal``: 8-bit RGB storing (n + 1) / 2 * 255 -> (3, H, W) in [-1, 1];
      bilinear resize, no renormalisation.
    - ``depth``: ``.npy`` (H, W) or (1, H, W), or a 16-bit grey PNG whose counts
      are multiplied by ``depth_scale`` -> (1, H, W) camera-space z in world
      units, 0 where there is no surface; nearest-neighbour resize.
    - ``segmentation``: single-channel image (mode L, P or 16-bit) of class ids
      -> (1, H, W) float32 holding the integer ids; nearest-neighbour resize.
    Raises ``FileDecodeError`` when the file does not fit its kind.
    """
    if kind in ("albedo", "shading", "normal"):
        resample = Image.Resampling.BILINEAR if kind == "normal" else Image.Resampling.LANCZOS
        rgb = np.asarray(_resized(_to_rgb(data), size, resample), dtype=np.float32)
        return rgb.transpose(2, 0, 1) / np.float32(127.5) - 1
    if kind == "depth":
        depth = _decode_depth(data, file_name, depth_scale)
        return np.array(_resized(Image.fromarray(depth), size, Image.Resampling.NEAREST))[None]
    if kind == "segmentation":
        image = open_image(data)
        if image.mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
            raise FileDecodeError(
                f"segmentation must be a single-channel image of class ids, got mode {image.mode}"
            )
        ids = Image.fromarray(np.asarray(image).astype(np.int32))
        return np.asarray(_resized(ids, size, Image.Resampling.NEAREST)).astype(np.float32)[None]
    raise FileDecodeError(f"unknown map kind {kind!r} (known: {', '.join(MAP_KINDS)})")


def _decode_depth(data: bytes, file_name: str, depth_scale: float) -> np.ndarray:
    """Depth file -> float32 (H, W) in world units."""
    if file_name.lower().endswith(".npy"):
        try:
            depth = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as error:
            raise FileDecodeError(f"cannot read depth array ({type(error).__name__}: {error})") from error
        if depth.ndim == 3 and depth.shape[0] == 1:
            depth = depth[0]
        if depth.ndim != 2 or not (
            np.issubdtype(depth.dtype, np.floating) or np.issubdtype(depth.dtype, np.integer)
        ):
            raise FileDecodeError(
                f"depth array must be numeric (H, W) or (1, H, W), got {depth.dtype} {depth.shape}"
            )
        depth = depth.astype(np.float32)
        if not np.isfinite(depth).all():
            raise FileDecodeError("depth array has non-finite values")
        return depth
    image = open_image(data)
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise FileDecodeError(f"depth PNG must be 16-bit grey, got mode {image.mode}")
    return (np.asarray(image).astype(np.float64) * depth_scale).astype(np.float32)
