"""EG3D-format head dataset reader with validation (``HeadDataset``).

A dataset is a folder or a ``.zip`` of images plus ``dataset.json``::

    {"labels": [["00000/img00000000.png", [25 numbers]], ...],   # required (EG3D)
     "sh": [[file, [27 numbers]], ...],                          # 9x3 SH, row-major
     "params": [[file, {"shape": [...], "expression": [...], "pose": [...],
                        "model": "procedural" | "flame"}], ...], # head-model parameters
     "clips": [[file, [clip_id, frame_index]], ...],             # video frames
     "maps": {"albedo" | "normal" | "depth" | "segmentation" | "shading":
              [[file, map_file], ...]},                          # extra per-image maps
     "identities": [[file, identity_id], ...],
     "meta": {...}}                                              # free-form, carried through

A camera label is EG3D's: 16 numbers of the OpenCV cam2world matrix then 9 of
the intrinsics normalised by image size. Per-file keys are matched to
``labels`` by file name; once one item has a key, every item must have it.
Items are ordered as in ``labels``. Images may be PNG or JPEG in any 8-bit
grey / RGB / RGBA / palette mode; they become RGB (alpha is dropped, not
composited) and float32 (3, H, W) in [-1, 1]. Map decoding and value ranges
are listed in ``headforge.data.storage.decode_map`` and docs/dataset_format.md.

X-flip: with ``xflip=True`` the dataset has 2N items; item ``i >= N`` is item
``i - N`` mirrored (image flipped horizontally, camera through
``headforge.cameras.mirror_label``, SH through ``headforge.lighting.mirror_sh``,
maps flipped with normal x negated). Head-model parameters are returned as
stored: a generic mirror of shape / expression coefficients does not exist,
so consumers read ``flipped`` and decide.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headforge.cameras import mirror_label
from headforge.data.manifest import DatasetManifest, parse_manifest
from headforge.data.storage import (
    IMAGE_EXTENSIONS,
    MAP_KINDS,
    DatasetStorage,
    FileDecodeError,
    decode_map,
    decode_rgb,
)
from headforge.data.validation import DatasetError, DatasetWarning, Problem, check_files, split_problems
from headforge.lighting import mirror_sh

MANIFEST_NAME = "dataset.json"


def spread_indices(total: int, count: int, *, include_ends: bool = False) -> list[int]:
    """``min(count, total)`` distinct increasing indices in ``0..total-1`` spread evenly over the whole range.

    Two conventions:

    - ``include_ends=False`` (strata middles): index k is the middle of the
      k-th of ``count`` equal strata, so a capped evaluation sees every part
      of a dataset (every clip of a video dataset, every identity of a sorted
      one) instead of its first items, each part equally often.
    - ``include_ends=True`` (end to end): ``count`` evenly spaced points from
      the first index to the last, rounded half to even, so that picking
      frames from a video keeps its first and last frame.
    """
    if total <= 0 or count <= 0:
        raise ValueError(f"need a positive total and count, got {total} and {count}")
    count = min(count, total)
    if include_ends:
        # Spacing (total - 1) / (count - 1) >= 1, so the rounded points stay distinct.
        return [int(k) for k in np.linspace(0, total - 1, count).round()]
    return [(2 * k + 1) * total // (2 * count) for k in range(count)]


class HeadDataset(torch.utils.data.Dataset):
    """Images with camera labels and optional lighting, head parameters, clips, identities and maps.

    Args:
        path: dataset folder or ``.zip`` holding ``dataset.json`` at its root.
        resolution: output side in pixels; images (and maps) of another square
            size are resized to it. None: all images must share one square size.
        xflip: double the dataset with mirrored copies (items N..2N-1).
        maps: map kinds to return with each item (subset of ``MAP_KINDS``).
        skip_bad: leave out items with problems (one ``DatasetWarning`` each)
            instead of raising ``DatasetError``.
        max_items: use only the first ``max_items`` labels (before skipping).
        items: use only these label indices, in this order (before skipping);
            not together with ``max_items``. :func:`spread_indices` picks
            indices that cover a whole dataset.
        check: decode every image and requested map at construction and check
            cameras and SH; False trusts the files (structure is still checked).
    Raises:
        DatasetError: listing every problem found (path, file, what).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        resolution: int | None = None,
        xflip: bool = False,
        maps: Sequence[str] = (),
        skip_bad: bool = False,
        max_items: int | None = None,
        check: bool = True,
        items: Sequence[int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.xflip = bool(xflip)
        self.maps = (maps,) if isinstance(maps, str) else tuple(maps)
        if resolution is not None and (not isinstance(resolution, int) or resolution <= 0):
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        if max_items is not None and max_items <= 0:
            raise ValueError(f"max_items must be positive, got {max_items}")
        if max_items is not None and items is not None:
            raise ValueError("give max_items or items, not both")
        try:
            self._storage = DatasetStorage(self.path)
        except (FileNotFoundError, FileDecodeError) as error:
            raise DatasetError(self.path, str(error)) from error
        if MANIFEST_NAME not in self._storage:
            nested = sorted(name for name in self._storage.names() if name.endswith("/" + MANIFEST_NAME))
            hint = f" (found {nested[0]}: the dataset root must hold it directly)" if nested else ""
            raise DatasetError(self.path, f"no {MANIFEST_NAME} at the dataset root{hint}")
        manifest, problems = parse_manifest(self._storage.read(MANIFEST_NAME), check_values=check)
        if manifest is None:
            raise DatasetError(self.path, problems)
        labelled = set(manifest.files)
        map_files = {name for names in manifest.maps.values() for name in names}
        if max_items is not None and max_items < len(manifest.files):
            items = range(max_items)
        if items is not None:
            items = list(items)
            outside = [index for index in items if not 0 <= index < len(manifest.files)]
            if outside or len(set(items)) != len(items) or not items:
                raise ValueError(
                    f"{self.path}: items must be distinct indices in 0..{len(manifest.files) - 1}; "
                    f"got {len(items)}, {len(outside)} outside that range, "
                    f"{len(items) - len(set(items))} repeated"
                )
            kept = {manifest.files[index] for index in items}
            problems = [p for p in problems if p.file is None or p.file not in labelled or p.file in kept]
            manifest = manifest.select(items)
        problems += self._check_requested_maps(manifest)
        size = resolution
        if check:
            requested = {kind: manifest.maps[kind] for kind in self.maps if kind in manifest.maps}
            size, file_problems = check_files(
                self._storage, manifest.files, requested, resolution, manifest.depth_scale
            )
            problems += file_problems + self._missing_map_files(manifest)
        self._manifest = self._resolve_problems(manifest, problems, skip_bad)
        if size is None:
            size = self._read_size(self._manifest.files[0])
        self._resolution = size
        self._warn_unlabelled(labelled | map_files | {MANIFEST_NAME})
        self._build_tensors()

    # -- construction helpers -------------------------------------------------------------

    def _check_requested_maps(self, manifest: DatasetManifest) -> list[Problem]:
        problems = []
        for kind in self.maps:
            if kind not in MAP_KINDS:
                problems.append(
                    Problem(None, f"unknown map kind {kind!r} requested (known: {', '.join(MAP_KINDS)})")
                )
            elif kind not in manifest.maps:
                available = ", ".join(manifest.maps) or "none"
                problems.append(
                    Problem(None, f"{kind} maps requested but the dataset has none (has: {available})")
                )
        return problems

    def _missing_map_files(self, manifest: DatasetManifest) -> list[Problem]:
        """Existence of the maps that are not decoded (requested ones were decoded already)."""
        return [
            Problem(file, f"{kind} map {map_file} not found")
            for kind, names in manifest.maps.items()
            if kind not in self.maps
            for file, map_file in zip(manifest.files, names)
            if map_file and map_file not in self._storage
        ]

    def _resolve_problems(
        self, manifest: DatasetManifest, problems: list[Problem], skip_bad: bool
    ) -> DatasetManifest:
        dataset_wide, of_items, of_others = split_problems(problems, manifest.files)
        if dataset_wide or (problems and not skip_bad):
            raise DatasetError(self.path, problems)
        for problem in of_others:
            warnings.warn(
                f"dataset {self.path}: ignoring {problem.file}: {problem.message}",
                DatasetWarning,
                stacklevel=4,
            )
        reasons: dict[str, list[str]] = {}
        for problem in of_items:
            reasons.setdefault(problem.file, []).append(problem.message)
        for file, messages in reasons.items():
            warnings.warn(
                f"dataset {self.path}: skipping {file}: {'; '.join(messages)}", DatasetWarning, stacklevel=4
            )
        keep = [i for i, file in enumerate(manifest.files) if file not in reasons]
        if not keep:
            raise DatasetError(
                self.path, [Problem(None, "no usable items left after skipping bad ones"), *problems]
            )
        return manifest if len(keep) == len(manifest.files) else manifest.select(keep)

    def _read_size(self, file: str) -> int:
        """Side of the first image from its header (used when files were not checked)."""
        try:
            return Image.open(io.BytesIO(self._storage.read(file))).size[0]
        except (OSError, FileNotFoundError) as error:
            raise DatasetError(self.path, [Problem(file, f"cannot read image size ({error})")]) from error

    def _warn_unlabelled(self, known: set[str]) -> None:
        unlabelled = sorted(
            name
            for name in self._storage.names()
            if name.lower().endswith(IMAGE_EXTENSIONS) and name not in known
        )
        if unlabelled:
            shown = ", ".join(unlabelled[:5]) + (", ..." if len(unlabelled) > 5 else "")
            warnings.warn(
                f"dataset {self.path}: ignoring {len(unlabelled)} image file(s) "
                f"without an entry in 'labels': {shown}",
                DatasetWarning,
                stacklevel=3,
            )

    def _build_tensors(self) -> None:
        manifest = self._manifest
        self._labels = torch.from_numpy(manifest.labels).float()
        self._labels_mirrored = mirror_label(self._labels)
        self._sh = self._sh_mirrored = None
        if manifest.sh is not None:
            self._sh = torch.from_numpy(manifest.sh).float()
            self._sh_mirrored = mirror_sh(self._sh)
        self._params = None
        if manifest.params is not None:
            self._params = {
                name: torch.from_numpy(values).float() for name, values in manifest.params.items()
            }
        self._clips = None if manifest.clips is None else torch.from_numpy(manifest.clips)
        self._identities = None if manifest.identities is None else torch.from_numpy(manifest.identities)

    # -- dataset protocol -----------------------------------------------------------------

    def __len__(self) -> int:
        """Number of items: ``num_images``, doubled with ``xflip``."""
        return self.num_images * (2 if self.xflip else 1)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item ``index`` as a dict (see docs/dataset_format.md for every key).

        ``image`` float32 (3, R, R) in [-1, 1]; ``camera`` (25,); ``index`` int;
        ``flipped`` bool tensor; and when the dataset has them ``sh`` (9, 3),
        ``params`` {name: (D,)}, ``clip`` / ``frame`` / ``identity`` int64
        scalars, and each requested map (C, R, R).
        """
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        item, flipped = index % self.num_images, index >= self.num_images
        file = self._manifest.files[item]
        try:
            rgb = decode_rgb(self._storage.read(file), self._resolution)
        except (FileNotFoundError, FileDecodeError) as error:
            raise DatasetError(self.path, [Problem(file, str(error))]) from error
        # NumPy, not torch ops: loader processes should not spin up intra-op thread pools.
        chw = rgb.transpose(2, 0, 1)[..., ::-1] if flipped else rgb.transpose(2, 0, 1)
        image = np.ascontiguousarray(chw, dtype=np.float32) / np.float32(127.5) - np.float32(1)
        labels = self._labels_mirrored if flipped else self._labels
        sample: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "camera": labels[item].clone(),
            "index": index,
            "flipped": torch.tensor(flipped),
        }
        if self._sh is not None:
            sample["sh"] = (self._sh_mirrored if flipped else self._sh)[item].clone()
        if self._params is not None:
            sample["params"] = {name: values[item].clone() for name, values in self._params.items()}
        if self._clips is not None:
            sample["clip"], sample["frame"] = self._clips[item, 0].clone(), self._clips[item, 1].clone()
        if self._identities is not None:
            sample["identity"] = self._identities[item].clone()
        for kind in self.maps:
            sample[kind] = self._load_map(kind, item, flipped)
        return sample

    def _load_map(self, kind: str, item: int, flipped: bool) -> torch.Tensor:
        map_file = self._manifest.maps[kind][item]
        try:
            data = self._storage.read(map_file)
            values = decode_map(kind, data, map_file, self._manifest.depth_scale, self._resolution)
        except (FileNotFoundError, FileDecodeError) as error:
            raise DatasetError(
                self.path, [Problem(self._manifest.files[item], f"{kind} map: {error}")]
            ) from error
        if flipped:
            values = np.ascontiguousarray(values[..., ::-1])
            if kind == "normal":
                values[0] = -values[0]  # mirroring negates world (and camera) x
        return torch.from_numpy(values)

    # -- dataset-level views --------------------------------------------------------------

    @property
    def num_images(self) -> int:
        """Number of distinct images N (without mirrored copies)."""
        return len(self._manifest.files)

    @property
    def resolution(self) -> int:
        """Side of the returned square images in pixels."""
        return self._resolution

    @property
    def files(self) -> list[str]:
        """Image file of each item 0..N-1 (relative to the dataset root)."""
        return list(self._manifest.files)

    @property
    def has_sh(self) -> bool:
        return self._sh is not None

    @property
    def has_params(self) -> bool:
        return self._params is not None

    @property
    def has_clips(self) -> bool:
        return self._clips is not None

    @property
    def has_identities(self) -> bool:
        return self._identities is not None

    @property
    def map_kinds(self) -> tuple[str, ...]:
        """Map kinds the dataset provides (requested or not)."""
        return tuple(self._manifest.maps)

    @property
    def params_model(self) -> str | None:
        """Head model the parameters belong to ("procedural", "flame") or None if unspecified."""
        return self._manifest.params_model

    @property
    def meta(self) -> dict[str, Any]:
        """The free-form ``meta`` object of dataset.json (a copy)."""
        return dict(self._manifest.meta)

    def labels_tensor(self, include_mirrored: bool = False) -> torch.Tensor:
        """Camera labels (N, 25) float32, for pose sampling.

        With ``include_mirrored`` (and ``xflip``) the mirrored labels follow,
        giving (2N, 25) rows aligned with item indices.
        """
        if include_mirrored and self.xflip:
            return torch.cat([self._labels, self._labels_mirrored])
        return self._labels.clone()

    def params_tensor(self, name: str) -> torch.Tensor:
        """Head-model parameter ``name`` of every image as (N, D) float32 (unmirrored)."""
        if self._params is None:
            raise DatasetError(self.path, "the dataset has no 'params'")
        if name not in self._params:
            raise DatasetError(self.path, f"'params' has no {name!r} (has: {', '.join(self._params)})")
        return self._params[name].clone()

    def clips(self) -> dict[int, list[int]]:
        """Clip id -> item indices (in 0..N-1, unmirrored) ordered by frame index."""
        if self._clips is None:
            raise DatasetError(self.path, "the dataset has no 'clips'")
        grouped: dict[int, list[tuple[int, int]]] = {}
        for item, (clip, frame) in enumerate(self._clips.tolist()):
            grouped.setdefault(clip, []).append((frame, item))
        return {clip: [item for _, item in sorted(frames)] for clip, frames in sorted(grouped.items())}

    def __repr__(self) -> str:
        extras = [
            name
            for name, present in (
                ("sh", self.has_sh),
                ("params", self.has_params),
                ("clips", self.has_clips),
                ("identities", self.has_identities),
            )
            if present
        ]
        return (
            f"HeadDataset({str(self.path)!r}, images={self.num_images}, resolution={self.resolution}, "
            f"xflip={self.xflip}, keys={extras}, maps={list(self.maps)})"
        )


def check_batch_size(dataset: Sized, batch_size: int, world_size: int = 1) -> int:
    """Check that each of ``world_size`` processes can fill its share of a ``batch_size`` batch.

    ``batch_size`` is the total over all processes (EG3D's ``--batch``). Each
    process reads ``len(dataset) // world_size`` items and needs
    ``batch_size // world_size`` of them per batch. Returns that per-process
    batch size; raises ``DatasetError`` when the dataset is too small and
    ``ValueError`` for a batch that does not split evenly.
    """
    if batch_size <= 0 or world_size <= 0:
        raise ValueError(f"batch_size and world_size must be positive, got {batch_size} and {world_size}")
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} does not split evenly over {world_size} processes")
    per_process_batch = batch_size // world_size
    per_process_items = len(dataset) // world_size
    if per_process_items < per_process_batch:
        path = getattr(dataset, "path", type(dataset).__name__)
        raise DatasetError(
            path,
            f"{len(dataset)} items over {world_size} process(es) gives {per_process_items} per process, "
            f"fewer than the per-process batch of {per_process_batch} (batch {batch_size}); use a smaller "
            f"batch, fewer processes, xflip or more data",
        )
    return per_process_batch
