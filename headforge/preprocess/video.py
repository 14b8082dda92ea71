"""``headforge preprocess videos``: talking-head clips -> frames with labels, one identity per clip.

Per clip: read the frames (imageio + FFmpeg), keep at most ``max_frames`` evenly spaced
ones, drop frames without a face, with a hand over the face or with a face too small
(``filters``), smooth the crop boxes over time, fit the head model to all kept frames at
once with one shared shape and temporal smoothing (``model_fit``), drop the clip if its
expression and jaw barely move, then estimate per-frame lighting and write the frames.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headforge.data.dataset import spread_indices
from headforge.preprocess.align import CropBox, crop_image, landmarks_to_crop
from headforge.preprocess.detect import HandDetector
from headforge.preprocess.filters import ClipThresholds, clip_is_expressive, hand_covers_face, smooth_boxes
from headforge.preprocess.model_fit import fit_head_model
from headforge.preprocess.pipeline import (
    DATASET_FOLDER,
    FaceFitter,
    PreprocessSettings,
    SkipItemError,
    finalize_dataset,
    item_name,
    write_json_atomic,
    write_png_atomic,
)
from headforge.preprocess.report import contact_sheet

__all__ = ["VIDEO_SUFFIXES", "read_frames", "process_clip", "run_preprocess_videos"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def read_frames(path: Path, max_frames: int, max_decoded: int = 3000) -> list[tuple[int, np.ndarray]]:
    """Up to ``max_frames`` evenly spaced (frame number, (H, W, 3) uint8) pairs, first and last included.

    Raises:
        SkipItemError: the file does not decode.
    """
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(path, format="FFMPEG")
        try:
            frames = []
            for number, frame in enumerate(reader):
                if number >= max_decoded:
                    break
                frames.append(np.asarray(frame)[..., :3])
        finally:
            reader.close()
    except Exception as error:  # FFmpeg reports a broken file in many ways
        raise SkipItemError("unreadable", repr(error)) from error
    if not frames:
        raise SkipItemError("unreadable", "no frames decoded")
    return [(k, frames[k]) for k in spread_indices(len(frames), max_frames, include_ends=True)]


def process_clip(
    fitter: FaceFitter,
    hands: HandDetector,
    frames: list[tuple[int, np.ndarray]],
    name: str,
    clip_id: int,
    out: Path,
    thresholds: ClipThresholds,
) -> dict[str, Any]:
    """Filter, fit and write one clip; returns its record (raises SkipItemError for a dropped clip)."""
    dropped: dict[str, int] = {}
    kept = []
    for number, image in frames:
        try:
            face, _ = fitter.largest_face(image)
            if hand_covers_face(face.box, hands.detect(image)):
                raise SkipItemError("hand_over_face")
            box, points = fitter.crop_for(face)
        except SkipItemError as skip:
            dropped[skip.reason] = dropped.get(skip.reason, 0) + 1
            continue
        kept.append((number, image, box, points))
    if len(kept) < thresholds.min_frames:
        raise SkipItemError("too_few_frames", f"{len(kept)} usable frames, dropped {dropped}")
    boxes = smooth_boxes(torch.tensor([b.to_list() for _, _, b, _ in kept], dtype=torch.float64))
    crops, observed = [], []
    for (_, image, _, points), row in zip(kept, boxes, strict=True):
        box = CropBox(*(float(v) for v in row))
        crops.append(crop_image(image, box, fitter.settings.resolution))
        observed.append(landmarks_to_crop(points.double(), box).float())
    fit = fit_head_model(fitter.model, torch.stack(observed), shared_shape=True)
    keep, stats = clip_is_expressive(fit.expression, fit.pose, thresholds)
    if not keep:
        raise SkipItemError("static_clip", json.dumps(stats))
    records, reports = [], []
    for k, (number, _, _, _) in enumerate(kept):
        extra = fitter.lighting_and_report(crops[k], observed[k], fit, k)
        file = f"images/{name}/{k:05d}.png"
        write_png_atomic(out / DATASET_FOLDER / file, crops[k])
        reports.append(extra["report"])
        records.append(
            {
                "file": file,
                "source_frame": number,
                "label": fit.camera.label[k].tolist(),
                "sh": extra["sh"].reshape(-1).tolist(),
                "params": fitter.params_entry(fit, k),
                "landmark_error_iod": float(fit.error_iod[k]),
            }
        )
    write_png_atomic(
        out / "reports" / f"{name}.png", contact_sheet(reports[:: max(1, len(reports) // 4)][:4], 1)
    )
    return {"status": "ok", "clip_id": clip_id, "frames": records, "dropped_frames": dropped, "motion": stats}


def run_preprocess_videos(
    in_dir: str | Path,
    out_dir: str | Path,
    settings: PreprocessSettings | None = None,
    max_frames: int = 48,
    thresholds: ClipThresholds | None = None,
) -> dict[str, Any]:
    """Preprocess every clip under ``in_dir`` (suffixes ``VIDEO_SUFFIXES``); returns the summary.

    Clips are processed one after another in this process (``settings.workers`` is not used:
    a clip's frames are fitted jointly). Clip ids follow the sorted input paths.
    """
    settings = settings or PreprocessSettings()
    thresholds = thresholds or ClipThresholds()
    root, out = Path(in_dir), Path(out_dir)
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    inputs = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    records: dict[str, dict[str, Any]] = {}
    fresh = 0
    fitter: FaceFitter | None = None
    hands: HandDetector | None = None
    for clip_id, path in enumerate(inputs):
        name = item_name(path, root)
        done = out / "records" / f"{name}.json"
        if done.exists():
            records[name] = json.loads(done.read_text())
            continue
        if fitter is None:
            fitter, hands = FaceFitter(settings), HandDetector()
        assert hands is not None
        clip_started = time.perf_counter()
        try:
            record = process_clip(
                fitter, hands, read_frames(path, max_frames), name, clip_id, out, thresholds
            )
        except SkipItemError as skip:
            record = {"status": "skipped", "reason": skip.reason, "detail": skip.detail}
        except Exception as error:  # one broken clip must not end the run
            record = {
                "status": "skipped",
                "reason": "error",
                "detail": f"{error!r}\n{traceback.format_exc()}",
            }
        record.update({"source": str(path), "name": name, "seconds": time.perf_counter() - clip_started})
        write_json_atomic(done, record)
        records[name] = record
        fresh += 1
    return finalize_dataset(out, records, settings, fresh=fresh, seconds=time.perf_counter() - started)
