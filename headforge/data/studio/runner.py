"""``headforge synth``: make a whole dataset, in parallel, resumably, byte-for-byte reproducibly.

Flow of :func:`run_synth`:

1. Check the arguments and the output folder. ``synth_run.json`` records the
   preset, seed and resolution; a folder made with other settings is refused
   (a larger ``--count`` extends a finished run).
2. Skip every image already listed in ``synth_manifest.jsonl`` whose files
   exist (files are renamed into place only when complete, and the record is
   appended only after all of an image's files are in place).
3. Render the rest, in this process or in a pool of ``workers`` processes
   (spawned; each runs PyTorch on one thread). Every image depends only on
   the seed and its index, so the order and the number of workers never
   change a byte.
4. Encode the video previews (videos preset), rewrite the manifest sorted by
   index, and write ``dataset.json`` atomically, last.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headforge.data.dataset_json import write_dataset_json
from headforge.data.studio.item import DEPTH_SCALE, StudioContext, studio_settings
from headforge.data.studio.materials import SEGMENT_NAMES
from headforge.data.studio.presets import SYNTH_PRESETS, SynthPreset, get_preset
from headforge.data.studio.writer import (
    MAP_FILE_KINDS,
    append_manifest,
    item_files,
    preview_name,
    read_manifest,
    write_bytes_atomic,
    write_item,
    write_manifest,
    write_preview,
)
from headforge.heads.base import HeadModel

__all__ = ["STUDIO_VERSION", "SYNTH_PRESETS", "SynthError", "run_synth", "default_head_model", "synth_meta"]

#: Version of the studio's output; bumped whenever the same seed would give different pixels.
STUDIO_VERSION = "1.0"
RUN_FILE = "synth_run.json"

HeadModelFactory = Callable[[], HeadModel]


class SynthError(RuntimeError):
    """A problem with a synth run that the user can fix (bad arguments, foreign folder, failed image)."""


def default_head_model() -> HeadModel:
    """The built-in procedural head model."""
    from headforge.heads.procedural import ProceduralHeadModel

    return ProceduralHeadModel()


def synth_meta(preset: SynthPreset, seed: int, resolution: int, count: int) -> dict[str, Any]:
    """The ``meta`` object of a studio ``dataset.json`` (no time stamps: reruns are byte-identical)."""
    meta: dict[str, Any] = {
        "generator": "headforge synth",
        "generator_version": STUDIO_VERSION,
        "preset": preset.name,
        "stream": preset.stream,
        "seed": seed,
        "count": count,
        "resolution": resolution,
        "head_model": "procedural",
        "depth_scale": DEPTH_SCALE,
        "segmentation_classes": list(SEGMENT_NAMES),
        "encodings": {
            "image": "8-bit RGB, display = clip(linear, 0, 1) ** (1 / 2.2)",
            "albedo": "8-bit RGB, display-encoded linear reflectance (gamma 2.2)",
            "shading": "8-bit RGB, display-encoded linear diffuse shading E / pi (gamma 2.2); "
            "image ~= albedo * shading + specular",
            "normal": "8-bit RGB, (world normal + 1) / 2",
            "depth": "16-bit, camera-space z / depth_scale, 0 = background",
            "segmentation": "palette PNG of class ids (segmentation_classes)",
        },
        "settings": studio_settings(resolution),
    }
    if preset.is_video:
        meta["fps"] = preset.fps
        meta["frames_per_clip"] = preset.frames_per_clip
    if preset.views > 1:
        meta["views"] = preset.views
    if preset.is_lightstage:
        meta["lights"] = preset.lights
    return meta


# --------------------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _init_worker(factory: HeadModelFactory, preset_name: str, resolution: int, seed: int, out: str) -> None:
    """Pool initializer: one thread per process, one studio context per process.

    Workers ignore Ctrl-C: the parent handles it (stops the pool and reports how to resume).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _WORKER.update(
        context=StudioContext(factory(), resolution), preset=get_preset(preset_name), seed=seed, out=Path(out)
    )


def _make_and_write(index: int) -> tuple[int, dict[str, Any] | None, str | None]:
    """Render and write image ``index``; returns (index, record, None) or (index, None, error text)."""
    try:
        context: StudioContext = _WORKER["context"]
        item = context.render(_WORKER["preset"], index, _WORKER["seed"])
        write_item(_WORKER["out"], index, _encoded(item.files, index))
        return index, item.record, None
    except Exception:  # noqa: BLE001 - reported to the parent with the image index
        return index, None, traceback.format_exc()


def _encoded(files: dict[str, bytes], index: int) -> dict[str, bytes]:
    """Files of an item keyed by kind ("image" and the map kinds) for :func:`write_item`."""
    names = item_files(index)
    kinds = ["image", "albedo", "normal", "depth", "segmentation", "shading"]
    return {kind: files[name] for kind, name in zip(kinds, names)}


# --------------------------------------------------------------------------------------- helpers
def _check_arguments(preset: str, count: int, resolution: int, seed: int, workers: int) -> SynthPreset:
    spec = get_preset(preset) if preset in SYNTH_PRESETS else None
    if spec is None:
        raise SynthError(f"unknown preset {preset!r}; choose from {', '.join(SYNTH_PRESETS)}")
    if not isinstance(count, int) or count < 1:
        raise SynthError(f"--count must be a positive number of images, got {count!r}")
    if not isinstance(resolution, int) or resolution < 16 or resolution % 16:
        raise SynthError(f"--resolution must be a multiple of 16 and at least 16, got {resolution!r}")
    if not isinstance(seed, int) or seed < 0:
        raise SynthError(f"--seed must be a non-negative integer, got {seed!r}")
    if not isinstance(workers, int) or workers < 1:
        raise SynthError(f"--workers must be at least 1, got {workers!r}")
    return spec


def _claim_folder(out: Path, preset: SynthPreset, seed: int, resolution: int) -> None:
    """Create ``out`` or check that it holds a run with the same settings."""
    settings = {
        "preset": preset.name,
        "seed": seed,
        "resolution": resolution,
        "generator_version": STUDIO_VERSION,
    }
    run_file = out / RUN_FILE
    if run_file.exists():
        try:
            existing = json.loads(run_file.read_text(encoding="utf-8"))
        except ValueError as error:
            raise SynthError(f"{run_file} is unreadable ({error}); remove it or use another --out") from error
        if existing != settings:
            raise SynthError(
                f"{out} holds a synth run with different settings ({existing}); "
                f"use another --out or the same settings ({settings})"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise SynthError(f"{out} is not empty and holds no synth run; use an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(run_file, (json.dumps(settings, sort_keys=True) + "\n").encode("utf-8"))


def _canonical(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it reads back from the manifest (sorted keys), so fresh and resumed runs write
    ``dataset.json`` identically."""
    return json.loads(json.dumps(record, sort_keys=True))


def _remove_stale_temporaries(out: Path) -> int:
    """Delete temporary files an interrupted run left behind (``.NAME.*.tmp``); returns how many."""
    removed = 0
    for path in out.rglob(".*.tmp*"):
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def _finished(out: Path, records: dict[int, dict[str, Any]], count: int) -> set[int]:
    """Indices < count whose record exists and whose files are all on disk."""
    return {
        index
        for index, record in records.items()
        if index < count and all((out / name).is_file() for name in item_files(index))
    }


def _write_previews(out: Path, preset: SynthPreset, count: int, fresh: set[int]) -> int:
    """Encode the mp4 preview of every clip with a new frame or no preview yet; returns how many."""
    from PIL import Image

    from headforge.data.studio.writer import image_name

    written = 0
    clips = math.ceil(count / preset.frames_per_clip)
    for clip in range(clips):
        frames = range(clip * preset.frames_per_clip, min(count, (clip + 1) * preset.frames_per_clip))
        path = out / preview_name(clip)
        if path.exists() and not fresh.intersection(frames):
            continue
        images = [np.asarray(Image.open(out / image_name(index)).convert("RGB")) for index in frames]
        write_preview(path, images, preset.fps)
        written += 1
    return written


def _write_dataset(
    out: Path, preset: SynthPreset, seed: int, resolution: int, count: int, records: dict[int, dict[str, Any]]
) -> None:
    ordered = [records[index] for index in range(count)]
    maps = {kind: [(record["file"], record["maps"][kind]) for record in ordered] for kind in MAP_FILE_KINDS}
    write_dataset_json(
        out,
        labels=[(record["file"], record["label"]) for record in ordered],
        sh=[(record["file"], record["sh"]) for record in ordered],
        params=[(record["file"], record["params"]) for record in ordered],
        clips=[(record["file"], record["clip"]) for record in ordered] if preset.is_video else None,
        maps=maps,
        identities=[(record["file"], record["identity"]) for record in ordered],
        meta=synth_meta(preset, seed, resolution, count),
    )


# --------------------------------------------------------------------------------------- main entry
def run_synth(
    preset: str,
    count: int,
    resolution: int,
    seed: int,
    out: Path | str,
    workers: int = 1,
    progress: bool = True,
    head_model_factory: HeadModelFactory | None = None,
) -> dict[str, Any]:
    """Make (or finish) a synthetic dataset; see the module docstring and docs/studio.md.

    Args:
        preset: one of :data:`SYNTH_PRESETS`.
        count: number of images (video frames included).
        resolution: image size in pixels (a multiple of 16).
        seed: global seed; the same seed gives byte-identical files.
        out: dataset folder (created; an interrupted run in it is resumed).
        workers: processes rendering in parallel.
        progress: show a tqdm progress bar.
        head_model_factory: builds the head model (default: the procedural head);
            must be picklable (a module-level function) when ``workers > 1``.

    Returns:
        Summary: preset, count, resolution, seed, out, workers, generated,
        skipped, previews, seconds, images_per_second.

    Raises:
        SynthError: bad arguments, a folder holding another run, or a failed image.
    """
    spec = _check_arguments(preset, count, resolution, seed, workers)
    out = Path(out)
    factory = head_model_factory or default_head_model
    _claim_folder(out, spec, seed, resolution)
    _remove_stale_temporaries(out)
    records = read_manifest(out)
    done = _finished(out, records, count)
    todo = [index for index in range(count) if index not in done]

    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(total=count, initial=len(done), disable=not progress, unit="img", desc=f"synth {spec.name}")
    fresh: set[int] = set()
    try:
        if todo and workers == 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the same arithmetic as the pool workers: identical bytes
            try:
                context = StudioContext(factory(), resolution)
                for index in todo:
                    try:
                        item = context.render(spec, index, seed)
                        write_item(out, index, _encoded(item.files, index))
                    except Exception as error:
                        raise SynthError(f"image {index} failed: {error}") from error
                    records[index] = _canonical(item.record)
                    append_manifest(out, [item.record])
                    fresh.add(index)
                    bar.update(1)
            finally:
                torch.set_num_threads(threads)
        elif todo:
            chunk = max(1, min(8, spec.views * spec.lights, spec.frames_per_clip or 8))
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(
                workers, initializer=_init_worker, initargs=(factory, spec.name, resolution, seed, str(out))
            ) as pool:
                for index, record, error in pool.imap_unordered(_make_and_write, todo, chunksize=chunk):
                    if error is not None:
                        pool.terminate()
                        raise SynthError(f"image {index} failed:\n{error}")
                    records[index] = _canonical(record)
                    append_manifest(out, [record])
                    fresh.add(index)
                    bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\nsynth interrupted after {len(done) + len(fresh)} of {count} images; "
            "rerun the same command to resume.",
            file=sys.stderr,
        )
        raise
    finally:
        bar.close()
    render_seconds = time.perf_counter() - start

    previews = _write_previews(out, spec, count, fresh) if spec.is_video else 0
    write_manifest(out, records)
    _write_dataset(out, spec, seed, resolution, count, records)
    seconds = time.perf_counter() - start
    return {
        "preset": spec.name,
        "count": count,
        "resolution": resolution,
        "seed": seed,
        "out": str(out),
        "workers": workers,
        "generated": len(fresh),
        "skipped": len(done),
        "previews": previews,
        "seconds": seconds,
        "images_per_second": len(fresh) / render_seconds if fresh and render_seconds > 0 else 0.0,
    }
