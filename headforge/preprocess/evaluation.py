"""Accuracy of the preprocess pipeline on studio renders, whose truth is known.

For every image of a studio dataset (``headforge synth``): detect, crop, fit, estimate the
lighting exactly as ``preprocess images`` does, then compare with the ground truth in its
``dataset.json``:

* camera rotation error (degrees) against the *head-relative* true camera
  ``neck^-1 @ cam2world``: one image cannot tell a turned neck from a turned camera, and
  the fit (like EG3D labels of photos) puts all rigid head motion into the camera;
* landmark error: the fitted head's 70 landmarks, mapped back to source pixels, against
  the true ones, over the true inter-ocular distance (and the same for the raw detection);
* lighting error: relative RMS irradiance error over the normals facing the camera, in
  the head's frame, absolute and after the best per-channel scale (albedo is unknown).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headforge.cameras import matrices_from_label, project_points
from headforge.preprocess.align import crop_image, landmarks_to_crop
from headforge.preprocess.detect import FaceDetector
from headforge.preprocess.landmarks_map import inter_ocular_distance
from headforge.preprocess.lighting_fit import fit_lighting, irradiance_error
from headforge.preprocess.model_fit import fit_head_model
from headforge.preprocess.pipeline import FaceFitter, PreprocessSettings, SkipItemError
from headforge.preprocess.pose_fit import rotation_angle_degrees

__all__ = ["evaluate_on_studio"]


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def evaluate_on_studio(
    folder: str | Path, detector: FaceDetector, min_face_px: float = 48.0
) -> dict[str, Any]:
    """Run the image pipeline's stages on a studio dataset and measure them (see module doc)."""
    folder = Path(folder)
    document = json.loads((folder / "dataset.json").read_text())
    names = [name for name, _ in document["labels"]]
    labels = torch.tensor([label for _, label in document["labels"]])
    params = [p for _, p in document["params"]]
    truth_sh = torch.tensor([v for _, v in document["sh"]]).reshape(-1, 9, 3)
    resolution = int(document["meta"]["resolution"])
    settings = PreprocessSettings(resolution=resolution, fit_resolution=resolution, min_face_px=min_face_px)
    fitter = FaceFitter(settings, detector)
    model = fitter.model
    with torch.no_grad():
        posed = model(
            torch.tensor([p["shape"] for p in params]),
            torch.tensor([p["expression"] for p in params]),
            torch.tensor([p["pose"] for p in params]),
        )
    cam2world, intrinsics = matrices_from_label(labels)
    truth_px = project_points(posed.landmarks, cam2world, intrinsics)[0] * resolution
    neck = posed.joint_transforms[:, 1, :3, :3]
    head_relative = neck.transpose(1, 2) @ cam2world[:, :3, :3]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for i, name in enumerate(names):
        image = np.asarray(Image.open(folder / name).convert("RGB"))
        try:
            face, _ = fitter.largest_face(image)
            box, points = fitter.crop_for(face)
        except SkipItemError as skip:
            rows.append({"name": name, "detected": False, "reason": skip.reason})
            continue
        iod = float(inter_ocular_distance(truth_px[i]))
        crop = crop_image(image, box, resolution)
        observed = landmarks_to_crop(points.double(), box).float()
        fit = fit_head_model(model, observed[None])
        fitted_px = fit.landmarks_2d[0].double() * box.side + torch.tensor(box.corner, dtype=torch.float64)
        with torch.no_grad():
            mesh = model(fit.shape, fit.expression, fit.pose).vertices[0]
        lighting = fit_lighting(
            torch.from_numpy(crop.copy()).float() / 255.0,
            model,
            mesh,
            fit.camera.cam2world[0],
            fit.camera.intrinsics[0],
        )
        # Compare lighting in the head's frame: the truth's world is turned by the neck.
        toward_camera = -fit.camera.cam2world[0, :3, 2].double()
        errors = {
            key: float(
                irradiance_error(
                    lighting.sh.double(), truth_sh[i].double(), toward_camera, neck[i], invariant
                )
            )
            for key, invariant in (("absolute", False), ("scale_invariant", True))
        }
        rows.append(
            {
                "name": name,
                "detected": True,
                "rotation_error_deg": float(
                    rotation_angle_degrees(fit.camera.cam2world[:1, :3, :3], head_relative[i : i + 1])[0]
                ),
                "landmark_error_iod": float((fitted_px - truth_px[i]).norm(dim=-1).mean()) / iod,
                "detection_error_iod": float((points.double() - truth_px[i]).norm(dim=-1).mean()) / iod,
                "sh_irradiance_error": errors["absolute"],
                "sh_irradiance_error_scale_invariant": errors["scale_invariant"],
                "focal": float(fit.camera.focal[0]),
            }
        )
    seconds = time.perf_counter() - started
    found = [r for r in rows if r["detected"]]

    def median_of(key: str) -> float | None:
        return _median([r[key] for r in found])

    return {
        "images": len(rows),
        "detected": len(found),
        "detection_rate": len(found) / max(1, len(rows)),
        "rotation_error_deg_median": median_of("rotation_error_deg"),
        "landmark_error_iod_median": median_of("landmark_error_iod"),
        "detection_error_iod_median": median_of("detection_error_iod"),
        "sh_irradiance_error_median": median_of("sh_irradiance_error"),
        "sh_irradiance_error_scale_invariant_median": median_of("sh_irradiance_error_scale_invariant"),
        "images_per_second": len(rows) / seconds,
        "per_image": rows,
    }
