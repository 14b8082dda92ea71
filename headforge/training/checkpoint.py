"""Checkpoint files: ``STEM.safetensors`` (all tensors) + ``STEM.json`` (metadata). No pickles.

Writing is atomic per file and detectable per pair: both files are written to
temporary names in the destination folder and fsync'ed, then the tensors file
is renamed into place, then the JSON. The JSON records the tensors file's name,
size and SHA-256, so a process killed between the two renames (new tensors,
old or missing JSON), a truncated file, or a hand-mixed pair is reported by
:func:`load_checkpoint` instead of loading silently wrong weights.

JSON layout::

    {"format": "headforge.checkpoint", "format_version": 1,
     "tensors_file": "step-00000120.safetensors", "tensors_bytes": 123, "tensors_sha256": "...",
     "meta": {... caller's metadata: model, config, step, RNG scalars, ...}}

:class:`CheckpointManager` names checkpoints ``DIR/step-00000120.*``, keeps
the newest K and finds the newest *valid* one, falling back past damaged ones.
Flattening helpers for modules, optimisers and RNGs live in
:mod:`headforge.training.checkpoint_state` and are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from headforge.training.checkpoint_state import (
    CheckpointError,
    capture_rng_state,
    flatten_module_state,
    flatten_optimizer_state,
    load_module_state,
    load_optimizer_state,
    restore_rng_state,
    tensors_with_prefix,
)

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "capture_rng_state",
    "checkpoint_paths",
    "flatten_module_state",
    "flatten_optimizer_state",
    "latest_checkpoint",
    "load_checkpoint",
    "load_module_state",
    "load_optimizer_state",
    "read_checkpoint_meta",
    "resolve_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "tensors_with_prefix",
]

FORMAT_NAME = "headforge.checkpoint"
FORMAT_VERSION = 1
TENSORS_SUFFIX = ".safetensors"
META_SUFFIX = ".json"
_TEMP_MARKER = ".tmp-"
_log = logging.getLogger(__name__)


def _stem(path: str | os.PathLike) -> Path:
    """``path`` without a ``.safetensors`` / ``.json`` suffix."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (TENSORS_SUFFIX, META_SUFFIX) else path


def checkpoint_paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    """``(STEM.safetensors, STEM.json)`` for a stem (a suffix on ``stem`` is ignored)."""
    stem = _stem(stem)
    return stem.with_name(stem.name + TENSORS_SUFFIX), stem.with_name(stem.name + META_SUFFIX)


def _write_temp(directory: Path, final_name: str, data: bytes) -> Path:
    """Write ``data`` to a fresh temporary file next to its destination and fsync it."""
    temp = directory / f".{final_name}{_TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return temp


def _fsync_directory(directory: Path) -> None:
    """Make completed renames durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(stem: str | os.PathLike, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Atomically write ``STEM.safetensors`` and ``STEM.json``.

    Args:
        stem: destination without suffix, e.g. ``run/checkpoints/step-00000120``.
        tensors: name -> tensor (any device; stored as contiguous CPU copies).
        meta: JSON-able metadata, returned by :func:`load_checkpoint`.

    Returns:
        The stem written.
    """
    tensors_path, meta_path = checkpoint_paths(stem)
    directory = tensors_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    # Copies own their storage, so tied or sliced tensors are accepted.
    payload = safetensors.torch.save(
        {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    )
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tensors_file": tensors_path.name,
        "tensors_bytes": len(payload),
        "tensors_sha256": hashlib.sha256(payload).hexdigest(),
        "meta": meta,
    }
    meta_text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    temps = []
    try:
        temps.append(_write_temp(directory, tensors_path.name, payload))
        temps.append(_write_temp(directory, meta_path.name, meta_text.encode()))
        # Tensors first, JSON last: a JSON on disk always describes a complete tensors file
        # from its own save, and any other combination fails the size/hash check.
        os.replace(temps[0], tensors_path)
        os.replace(temps[1], meta_path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    _fsync_directory(directory)
    return _stem(stem)


def _read_document(meta_path: Path) -> dict:
    """Parse and sanity-check a checkpoint JSON."""
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata {meta_path} is missing (incomplete save?)")
    try:
        document = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{meta_path} is not a headforge checkpoint (no format {FORMAT_NAME!r})")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path} uses checkpoint format {document['format_version']}, newer than this headforge "
            f"({FORMAT_VERSION})"
        )
    return document


def _check_size(tensors_path: Path, document: dict, meta_path: Path) -> None:
    if not tensors_path.is_file():
        raise CheckpointError(f"checkpoint tensors {tensors_path} are missing (described by {meta_path})")
    size, expected = tensors_path.stat().st_size, document["tensors_bytes"]
    if size < expected:
        raise CheckpointError(f"checkpoint tensors {tensors_path} are truncated: {size} of {expected} bytes")
    if size != expected:
        raise CheckpointError(
            f"checkpoint tensors {tensors_path} ({size} bytes) do not match {meta_path} ({expected} bytes): "
            "the pair comes from different saves"
        )


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The caller metadata of a checkpoint without reading its tensors.

    Args:
        path: a stem, ``.json`` or ``.safetensors`` path, or a directory (see :func:`resolve_checkpoint`).

    Raises:
        CheckpointError: the JSON is missing or invalid, or the tensors file is missing or of the wrong size.
    """
    stem = resolve_checkpoint(path) if Path(path).is_dir() else _stem(path)
    tensors_path, meta_path = checkpoint_paths(stem)
    document = _read_document(meta_path)
    _check_size(tensors_path, document, meta_path)
    return document["meta"]


def load_checkpoint(
    stem: str | os.PathLike, device: torch.device | str = "cpu", verify: bool = True
) -> tuple[dict[str, Tensor], dict]:
    """Read and validate a checkpoint pair.

    Args:
        stem: a stem, or either file of the pair.
        device: where to put the tensors.
        verify: check the tensors file's SHA-256 against the JSON (reads the whole file once).

    Returns:
        ``(tensors, meta)``.

    Raises:
        CheckpointError: naming the file, when either file is missing, truncated,
        not safetensors, or the two files come from different saves.
    """
    tensors_path, meta_path = checkpoint_paths(stem)
    document = _read_document(meta_path)
    if document.get("tensors_file") != tensors_path.name:
        raise CheckpointError(
            f"{meta_path} describes {document.get('tensors_file')!r}, not {tensors_path.name!r}"
        )
    _check_size(tensors_path, document, meta_path)
    payload = tensors_path.read_bytes()
    if verify and hashlib.sha256(payload).hexdigest() != document["tensors_sha256"]:
        raise CheckpointError(
            f"checkpoint tensors {tensors_path} do not match the SHA-256 recorded in {meta_path}: "
            "the pair comes from different saves or the file is damaged"
        )
    try:
        tensors = safetensors.torch.load(payload)
    except Exception as error:  # safetensors raises its own Rust-side error type
        raise CheckpointError(f"{tensors_path} is not a valid safetensors file: {error}") from error
    if torch.device(device).type != "cpu":
        tensors = {name: tensor.to(device) for name, tensor in tensors.items()}
    return tensors, document["meta"]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Stem of the newest valid checkpoint in a run folder (its ``checkpoints/``) or a checkpoint folder.

    Returns:
        The stem, or ``None`` when the folder holds no valid checkpoint (or does not exist).
    """
    directory = Path(directory)
    folder = directory / "checkpoints" if (directory / "checkpoints").is_dir() else directory
    return CheckpointManager(folder).latest_valid()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Turn what a user typed into a checkpoint stem.

    Accepts a stem, either file of a pair, a checkpoint folder (the newest
    valid checkpoint in it) or a run folder containing ``checkpoints/``.

    Raises:
        CheckpointError: nothing valid is found.
    """
    path = Path(path)
    if path.is_dir():
        stem = latest_checkpoint(path)
        if stem is None:
            raise CheckpointError(f"no valid checkpoint found in {path}")
        return stem
    return _stem(path)


class CheckpointManager:
    """Numbered checkpoints ``DIR/step-XXXXXXXX.{safetensors,json}``; keeps the newest ``keep``.

    Args:
        directory: checkpoint folder (created on first save).
        keep: number of checkpoints kept after each save (>= 1).
    """

    _pattern = re.compile(r"^step-(\d{8,})\.(safetensors|json)$")

    def __init__(self, directory: str | os.PathLike, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def stem_for_step(self, step: int) -> Path:
        """``DIR/step-{step:08d}``."""
        return self.directory / f"step-{step:08d}"

    def steps(self) -> list[int]:
        """Steps with at least one file of a pair on disk, ascending (valid or not)."""
        if not self.directory.is_dir():
            return []
        found = {
            int(match.group(1)) for name in os.listdir(self.directory) if (match := self._pattern.match(name))
        }
        return sorted(found)

    def save(self, step: int, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
        """Write the checkpoint of ``step``, then prune.

        Pruning removes checkpoints older than the newest ``keep`` and any with
        a step above ``step`` (left by an abandoned run that was resumed from
        an earlier checkpoint), plus temporary files of crashed saves.
        """
        stem = save_checkpoint(self.stem_for_step(step), tensors, meta)
        self._prune(step)
        return stem

    def _prune(self, newest_step: int) -> None:
        older = [s for s in self.steps() if s < newest_step]
        stale = [s for s in self.steps() if s > newest_step]
        for step in older[: max(0, len(older) - (self.keep - 1))] + stale:
            for path in checkpoint_paths(self.stem_for_step(step)):
                path.unlink(missing_ok=True)
        for name in os.listdir(self.directory):
            if name.startswith(".step-") and _TEMP_MARKER in name:
                (self.directory / name).unlink(missing_ok=True)

    def latest_valid(self, verify: bool = True) -> Path | None:
        """Stem of the newest checkpoint that passes validation, or ``None``.

        With ``verify`` the whole tensors file is hashed; otherwise only the
        JSON and the file size are checked.
        """
        for step in reversed(self.steps()):
            stem = self.stem_for_step(step)
            try:
                if verify:
                    tensors_path, meta_path = checkpoint_paths(stem)
                    document = _read_document(meta_path)
                    _check_size(tensors_path, document, meta_path)
                    if _sha256_of_file(tensors_path) != document["tensors_sha256"]:
                        raise CheckpointError(f"{tensors_path} does not match the SHA-256 in {meta_path}")
                else:
                    read_checkpoint_meta(stem)
            except CheckpointError as error:
                _log.warning("skipping invalid checkpoint: %s", error)
                continue
            return stem
        return None

    def load_latest(self, device: torch.device | str = "cpu") -> tuple[Path, dict[str, Tensor], dict] | None:
        """Load the newest checkpoint that loads cleanly, falling back to older ones.

        Returns:
            ``(stem, tensors, meta)``, or ``None`` when there is no valid checkpoint.
        """
        for step in reversed(self.steps()):
            stem = self.stem_for_step(step)
            try:
                tensors, meta = load_checkpoint(stem, device=device)
            except CheckpointError as error:
                _log.warning("checkpoint %s is unusable, trying an older one: %s", stem, error)
                continue
            return stem, tensors, meta
        return None


def _sha256_of_file(path: Path, chunk_bytes: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
