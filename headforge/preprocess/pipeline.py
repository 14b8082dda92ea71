"""``headforge preprocess images|videos``: a folder of photos or clips -> an EG3D dataset.

Per image (:class:`FaceFitter`): detect the face (largest if several) -> 70 landmarks
(``landmarks_map``) -> EG3D crop (``align``) -> head-model + camera fit (``model_fit``) ->
SH lighting from the fitted mesh (``lighting_fit``) -> crop PNG + report PNG + a record.
Videos go through ``video.py`` with the same stages plus filters and a shared identity.

Output folder::

    dataset/images/<name>.png  the aligned crops (videos: images/<clip>/<frame>.png)
    dataset/dataset.json       labels, sh, params (+ clips), written at the end
    reports/<name>.png         landmarks | mesh overlay | SH sphere
    records/<name>.json        per-item done marker (written last, atomically)
    summary.json, index.png, index.html

The EG3D dataset is the ``dataset`` sub-folder alone, so that readers, which list every
image under a dataset root, do not meet the reports.

Every file is written to a temporary name and renamed, so an interrupted run never leaves
half a file, and a rerun skips every item whose record exists.
"""

from __future__ import annotations

import json
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from headforge.atomic_io import write_bytes_atomic
from headforge.data.dataset_json import write_dataset_json
from headforge.heads.base import HeadModel
from headforge.preprocess.align import CropBox, crop_box_from_landmarks, crop_image, landmarks_to_crop
from headforge.preprocess.detect import FaceDetection, FaceDetector
from headforge.preprocess.dlib_backend import DlibFaceDetection, DlibFaceDetector
from headforge.preprocess.landmarks_map import LANDMARK_FIT_WEIGHTS, mediapipe_to_ibug70
from headforge.preprocess.lighting_fit import fit_lighting
from headforge.preprocess.model_fit import ModelFit, fit_head_model
from headforge.preprocess.report import contact_sheet, sample_report

__all__ = [
    "DATASET_FOLDER",
    "IMAGE_SUFFIXES",
    "DETECTORS",
    "PreprocessSettings",
    "SkipItemError",
    "FaceFitter",
    "write_bytes_atomic",
    "write_png_atomic",
    "write_json_atomic",
    "item_name",
    "run_preprocess_images",
    "finalize_dataset",
]

#: Sub-folder of the output that holds the EG3D dataset (crops + dataset.json).
DATASET_FOLDER = "dataset"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Face detectors selectable with ``--detector`` (MediaPipe is the default).
DETECTORS = ("mediapipe", "dlib")


@dataclass
class PreprocessSettings:
    """Options of a preprocess run (all recorded in ``dataset.json`` meta).

    Attributes:
        resolution: output crop side in pixels.
        fit_resolution: side at which the fitted mesh is rasterised for lighting and reports.
        min_face_px: leave out faces whose crop side in the source is smaller (FFHQ rule).
        max_faces: faces the detector reports per image (the first is kept: the largest with
            MediaPipe, the most confident with dlib).
        flame_path: a FLAME model file to fit instead of the procedural head.
        flame_landmarks: FLAME's 68-point landmark embedding file (needed with ``flame_path``).
        workers: processes.
        detector: face detector and landmarker, one of ``DETECTORS``.
    """

    resolution: int = 512
    fit_resolution: int = 128
    min_face_px: float = 128.0
    max_faces: int = 4
    flame_path: str | None = None
    flame_landmarks: str | None = None
    workers: int = 1
    detector: str = "mediapipe"

    def __post_init__(self) -> None:
        # Checked here, before any worker starts, so a bad option fails once and clearly.
        if self.resolution < 16 or self.fit_resolution < 16:
            raise ValueError(f"resolution and fit_resolution must be >= 16, got {self.resolution}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.flame_path and not self.flame_landmarks:
            raise ValueError("fitting FLAME needs its landmark embedding: pass --flame-landmarks FILE")


class SkipItemError(Exception):
    """An item left out; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- files


def write_png_atomic(path: Path, image: np.ndarray) -> None:
    """(H, W, 3) uint8 -> PNG at ``path``, atomically."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, json.dumps(value, allow_nan=False, indent=1).encode())


def item_name(path: Path, root: Path) -> str:
    """Unique, flat name of an input file: its path under ``root`` without suffix, '/' -> '__'."""
    return "__".join(path.relative_to(root).with_suffix("").parts)


def load_head_model(flame_path: str | None, flame_landmarks: str | None = None) -> HeadModel:
    """The procedural head, or FLAME from user-supplied model and landmark-embedding files."""
    if flame_path:
        from headforge.heads.flame import FlameHeadModel

        if not flame_landmarks:
            raise ValueError("fitting FLAME needs its landmark embedding: pass --flame-landmarks FILE")
        return FlameHeadModel.from_file(flame_path, landmark_embedding=flame_landmarks)
    from headforge.heads.procedural import ProceduralHeadModel

    return ProceduralHeadModel()


# --------------------------------------------------------------------------- fitting


class FaceFitter:
    """Detection -> crop -> fits for single images; holds the models between items."""

    def __init__(
        self, settings: PreprocessSettings, detector: FaceDetector | DlibFaceDetector | None = None
    ) -> None:
        self.settings = settings
        self.model = load_head_model(settings.flame_path, settings.flame_landmarks)
        self.mean_landmarks = self.model().landmarks[0].detach()
        if detector is None:
            chosen = DlibFaceDetector if settings.detector == "dlib" else FaceDetector
            detector = chosen(max_faces=settings.max_faces)
        self.detector = detector

    def largest_face(self, image: np.ndarray) -> tuple[FaceDetection | DlibFaceDetection, int]:
        faces = self.detector.detect(image)
        if not faces:
            raise SkipItemError("no_face")
        return faces[0], len(faces)

    def crop_for(self, face: FaceDetection | DlibFaceDetection) -> tuple[CropBox, torch.Tensor]:
        """Crop box and the (70, 2) pixel landmarks of a detection; SkipItemError if too small."""
        if isinstance(face, DlibFaceDetection):  # dlib gives the 68 (+ estimated irises) directly
            points = torch.from_numpy(face.landmarks)
        else:
            points = mediapipe_to_ibug70(torch.from_numpy(face.points[:, :2]))
        box = crop_box_from_landmarks(points, self.mean_landmarks, LANDMARK_FIT_WEIGHTS)
        if box.side < self.settings.min_face_px:
            raise SkipItemError(
                "face_too_small", f"crop side {box.side:.0f} px < {self.settings.min_face_px:.0f}"
            )
        return box, points

    def lighting_and_report(
        self, crop: np.ndarray, observed: torch.Tensor, fit: ModelFit, index: int
    ) -> dict:
        """SH from the fitted mesh, and the report image, for row ``index`` of a fit."""
        size = self.settings.fit_resolution
        small = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BOX))
        with torch.no_grad():
            posed = self.model(
                fit.shape[index : index + 1], fit.expression[index : index + 1], fit.pose[index : index + 1]
            )
        cam2world, intrinsics = fit.camera.cam2world[index], fit.camera.intrinsics[index]
        lighting = fit_lighting(
            torch.from_numpy(small.copy()).float() / 255.0,
            self.model,
            posed.vertices[0],
            cam2world,
            intrinsics,
        )
        report = sample_report(
            crop, observed.numpy(), fit.landmarks_2d[index].numpy(), lighting.normals, cam2world, lighting.sh
        )
        return {"sh": lighting.sh, "report": report, "skin_pixels": int(lighting.inlier_mask.sum())}

    def params_entry(self, fit: ModelFit, index: int) -> dict[str, Any]:
        model_name = "flame" if self.settings.flame_path else "procedural"
        return {
            "shape": fit.shape[index].tolist(),
            "expression": fit.expression[index].tolist(),
            "pose": fit.pose[index].tolist(),
            "model": model_name,
        }

    def process_image(self, image: np.ndarray, name: str, out: Path) -> dict[str, Any]:
        """Fit one image and write its crop and report; returns its record (raises SkipItemError)."""
        face, n_faces = self.largest_face(image)
        box, points = self.crop_for(face)
        crop = crop_image(image, box, self.settings.resolution)
        observed = landmarks_to_crop(points, box)
        fit = fit_head_model(self.model, observed[None])
        extra = self.lighting_and_report(crop, observed, fit, 0)
        file = f"images/{name}.png"
        write_png_atomic(out / DATASET_FOLDER / file, crop)
        write_png_atomic(out / "reports" / f"{name}.png", extra["report"])
        return {
            "status": "ok",
            "file": file,
            "faces_detected": n_faces,
            "crop_box": box.to_list(),
            "label": fit.camera.label[0].tolist(),
            "sh": extra["sh"].reshape(-1).tolist(),
            "params": self.params_entry(fit, 0),
            "landmark_error_iod": float(fit.error_iod[0]),
            "skin_pixels": extra["skin_pixels"],
        }


# --------------------------------------------------------------------------- images run

_WORKER: dict[str, Any] = {}


def _init_worker(settings: PreprocessSettings) -> None:
    torch.set_num_threads(1)
    _WORKER["fitter"] = FaceFitter(settings)


def _process_file(path: Path, name: str, out: Path) -> dict[str, Any]:
    """Read, fit and record one input file; every failure becomes a 'skipped' record."""
    fitter: FaceFitter = _WORKER["fitter"]
    started = time.perf_counter()
    try:
        try:
            with Image.open(path) as handle:
                image = np.asarray(handle.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise SkipItemError("unreadable", str(error)) from error
        record = fitter.process_image(image, name, out)
    except SkipItemError as skip:
        record = {"status": "skipped", "reason": skip.reason, "detail": skip.detail}
    except Exception as error:  # a bug or a numerical failure must not end the whole run
        record = {"status": "skipped", "reason": "error", "detail": f"{error!r}\n{traceback.format_exc()}"}
    record.update({"source": str(path), "name": name, "seconds": time.perf_counter() - started})
    write_json_atomic(out / "records" / f"{name}.json", record)
    return record


def _list_inputs(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def run_preprocess_images(
    in_dir: str | Path, out_dir: str | Path, settings: PreprocessSettings | None = None
) -> dict:
    """Preprocess every image under ``in_dir`` into ``out_dir``; returns the summary.

    Inputs: files with a suffix in ``IMAGE_SUFFIXES`` (anything else is ignored; a file with
    such a suffix that does not decode is reported as ``unreadable``).
    """
    settings = settings or PreprocessSettings()
    root, out = Path(in_dir), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    inputs = _list_inputs(root, IMAGE_SUFFIXES)
    todo, records = [], {}
    for path in inputs:
        name = item_name(path, root)
        done = out / "records" / f"{name}.json"
        if done.exists():
            records[name] = json.loads(done.read_text())
        else:
            todo.append((path, name))
    if settings.workers > 1 and len(todo) > 1:
        context = get_context("spawn")
        with ProcessPoolExecutor(settings.workers, context, _init_worker, (settings,)) as pool:
            for record in pool.map(_process_file, *zip(*todo, strict=True), [out] * len(todo)):
                records[record["name"]] = record
    elif todo:
        _init_worker(settings)
        for path, name in todo:
            records[name] = _process_file(path, name, out)
    return finalize_dataset(out, records, settings, fresh=len(todo), seconds=time.perf_counter() - started)


def finalize_dataset(
    out: Path, records: dict[str, dict[str, Any]], settings: PreprocessSettings, fresh: int, seconds: float
) -> dict[str, Any]:
    """Write dataset.json, summary.json and the index from all records; returns the summary."""
    kept = {name: r for name, r in sorted(records.items()) if r["status"] == "ok"}
    frames = [(r, f) for r in kept.values() for f in (r.get("frames") or [r])]
    labels = [(f["file"], f["label"]) for _, f in frames]
    if labels:
        clips = None
        if any("frames" in r for r in kept.values()):
            clips = [(f["file"], (r["clip_id"], k)) for r in kept.values() for k, f in enumerate(r["frames"])]
        write_dataset_json(
            out / DATASET_FOLDER,
            labels,
            sh=[(f["file"], f["sh"]) for _, f in frames],
            params=[(f["file"], f["params"]) for _, f in frames],
            clips=clips,
            meta={"generator": "headforge preprocess", "settings": asdict(settings)},
        )
    skipped = {
        name: {"reason": r["reason"], "source": r["source"]}
        for name, r in records.items()
        if r["status"] != "ok"
    }
    reasons: dict[str, int] = {}
    for entry in skipped.values():
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    summary = {
        "inputs": len(records),
        "kept": len(kept),
        "images_written": len(labels),
        "skipped": len(skipped),
        "skip_reasons": reasons,
        "skipped_items": skipped,
        "several_faces": sorted(n for n, r in kept.items() if r.get("faces_detected", 1) > 1),
        "processed_now": fresh,
        "seconds": seconds,
        "items_per_second": fresh / seconds if seconds > 0 and fresh else None,
    }
    write_json_atomic(out / "summary.json", summary)
    reports = [np.asarray(Image.open(out / "reports" / f"{name}.png")) for name in list(kept)[:64]]
    write_png_atomic(out / "index.png", contact_sheet(reports))
    rows = "\n".join(
        f'<tr><td>{name}</td><td><img src="reports/{name}.png" width="480"></td></tr>' for name in kept
    )
    skipped_rows = "\n".join(f"<li>{name}: {e['reason']}</li>" for name, e in skipped.items())
    html = (
        f"<html><body><h1>headforge preprocess</h1><table>{rows}</table>"
        f"<h2>Skipped</h2><ul>{skipped_rows}</ul></body></html>"
    )
    write_bytes_atomic(out / "index.html", html.encode())
    return summary
