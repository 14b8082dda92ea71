"""Loading the shipped estimators: ``load_estimator(kind) -> Estimator``.

Kinds and outputs (images (B, 3, H, W) in [-1, 1], any size; resized to the
network's input resolution with antialiasing, and for the attribute network
also a fixed face crop cut from the image as given, see ``networks``):

| kind | outputs |
|---|---|
| ``expression`` | ``expression_offsets`` (B, 68, 3) landmark offsets (``targets.expression_offsets``, |
| | head-model units, 0.002 per mm); ``expression`` (B, n_expr) coefficients; ``jaw`` (B, 3) rad |
| ``pose`` | ``yaw``, ``pitch``, ``roll`` (B,) radians, head relative to camera (``targets`` module) |
| ``lighting`` | ``sh`` (B, 9, 3) world-space SH of incident radiance (docs/architecture.md basis) |
| ``shape`` | ``shape`` (B, n_shape) procedural-head coefficients |
| ``identity`` | ``embedding`` (B, D) unit-norm; cosine similarity compares identities |

The weights live in ``headforge/assets/estimators/`` and ``manifest.json``
there maps each kind to its file (expression, pose, lighting and shape share
one jointly trained attribute network).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor

from headforge.eval.estimators.networks import EstimatorNetwork, EstimatorWeightsError

__all__ = [
    "ESTIMATOR_KINDS",
    "ASSET_DIR",
    "Estimator",
    "EstimatorQualityWarning",
    "load_estimator",
    "default_weights_path",
    "shipped_quality",
]

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "estimators"
MANIFEST_NAME = "manifest.json"

#: kind -> network heads it needs.
ESTIMATOR_KINDS: dict[str, tuple[str, ...]] = {
    "expression": ("expression_offsets", "expression", "jaw"),
    "pose": ("pose",),
    "lighting": ("sh",),
    "shape": ("shape",),
    "identity": ("embedding",),
}


class EstimatorQualityWarning(UserWarning):
    """A shipped estimator whose held-out accuracy does not clear the bar of ``shipped_quality``."""


def _read_manifest(asset_dir: Path) -> dict:
    manifest_path = asset_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise EstimatorWeightsError(f"{manifest_path}: estimator manifest not found")
    try:
        return json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise EstimatorWeightsError(f"{manifest_path}: invalid JSON ({error})") from error


def shipped_quality(kind: str, asset_dir: Path = ASSET_DIR) -> tuple[bool, str]:
    """Whether the shipped ``kind`` clearly beats the mean predictor on the held-out split, and why.

    Read from the manifest's ``heldout_accuracy`` (held-out images at the
    resolution they were rendered) and, when recorded, ``heldout_accuracy_64px``
    (the same images reduced to 64 px): the kind passes only if it passes on
    both, since callers feed either. Bars: expression landmark offsets
    R^2 > 0.3 (``expression``; the raw coefficients and the jaw opening are
    reported but do not gate: they are not identifiable from an image);
    shape R^2 > 0.1; geodesic pose error below half the mean predictor's;
    SH irradiance error below 0.75 x the mean predictor's; identity pair
    AUC > 0.6.

    Returns:
        (passes, one-line summary of the figures; the 64 px one after " | 64 px: ").
    """
    _check_kind(kind)
    try:
        entry = _read_manifest(asset_dir)["estimators"][kind]
        figures = entry["heldout_accuracy"]
        checks = [_passes_bar(kind, figures)]
        if "heldout_accuracy_64px" in entry:
            checks.append(_passes_bar(kind, entry["heldout_accuracy_64px"]))
    except (KeyError, TypeError):
        return False, f"no held-out accuracy recorded for '{kind}'"
    passes = all(check[0] for check in checks)
    return passes, " | 64 px: ".join(check[1] for check in checks)


def _passes_bar(kind: str, figures: dict) -> tuple[bool, str]:
    """One set of held-out figures of ``kind`` against its bar (``shipped_quality``)."""
    if kind == "expression":
        if "expression_offsets" not in figures:
            return False, "no held-out accuracy of the expression landmark offsets recorded"
        r2 = figures["expression_offsets"]["r2"]
        coefficients_r2, jaw_r2 = figures["expression"]["r2"], figures["jaw"]["opening_x"]["r2"]
        return r2 > 0.3, (
            f"held-out R^2 landmark offsets {r2:.3f} (coefficients {coefficients_r2:.3f}, "
            f"jaw opening {jaw_r2:.3f}, not gating)"
        )
    if kind == "shape":
        return figures["r2"] > 0.1, f"held-out R^2 {figures['r2']:.3f}"
    if kind == "pose":
        error, baseline = figures["geodesic_deg"], figures["baseline_geodesic_deg"]
        return error < 0.5 * baseline, f"held-out geodesic error {error:.2f} deg (mean {baseline:.2f})"
    if kind == "lighting":
        error, baseline = figures["irradiance_error"], figures["baseline_irradiance_error"]
        return error < 0.75 * baseline, f"held-out irradiance error {error:.3f} (mean {baseline:.3f})"
    return figures["pair_auc"] > 0.6, f"held-out pair AUC {figures['pair_auc']:.3f}"


def default_weights_path(kind: str, asset_dir: Path = ASSET_DIR) -> Path:
    """The shipped weights file of ``kind``, as listed in ``asset_dir/manifest.json``."""
    _check_kind(kind)
    manifest_path = asset_dir / MANIFEST_NAME
    try:
        file_name = _read_manifest(asset_dir)["estimators"][kind]["file"]
    except (KeyError, TypeError) as error:
        raise EstimatorWeightsError(
            f"{manifest_path}: no weights file listed for kind '{kind}' ({error!r})"
        ) from error
    return asset_dir / file_name


def _check_kind(kind: str) -> None:
    if kind not in ESTIMATOR_KINDS:
        raise ValueError(f"unknown estimator kind '{kind}'; expected one of {sorted(ESTIMATOR_KINDS)}")


class Estimator:
    """A loaded estimator: callable on images, returns the outputs of its kind (module docstring).

    Attributes:
        kind: the estimator kind.
        network: the underlying ``EstimatorNetwork`` (eval mode).
        weights_path: the file it was loaded from.
    """

    def __init__(self, kind: str, network: EstimatorNetwork, weights_path: Path) -> None:
        _check_kind(kind)
        missing = [head for head in ESTIMATOR_KINDS[kind] if head not in network.head_dims]
        if missing:
            raise EstimatorWeightsError(
                f"{weights_path}: has no head {missing} needed by estimator kind '{kind}'"
            )
        self.kind = kind
        self.network = network
        self.weights_path = weights_path

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.network.parameters()).device

    @property
    def input_resolution(self) -> int:
        """Images are resized to this square size (pixels) before the network."""
        return self.network.input_resolution

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """Images (B, 3, H, W) float in [-1, 1] -> outputs of this kind (float32, on the weights' device)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        outputs = self.network(images.to(self.device, torch.float32))
        if self.kind == "expression":
            offsets = outputs["expression_offsets"].reshape(len(images), -1, 3)
            return {"expression_offsets": offsets, "expression": outputs["expression"], "jaw": outputs["jaw"]}
        if self.kind == "pose":
            yaw, pitch, roll = outputs["pose"].unbind(dim=1)
            return {"yaw": yaw, "pitch": pitch, "roll": roll}
        if self.kind == "lighting":
            return {"sh": outputs["sh"].reshape(-1, 9, 3)}
        if self.kind == "shape":
            return {"shape": outputs["shape"]}
        return {"embedding": outputs["embedding"]}


def load_estimator(
    kind: str, weights: Path | str | None = None, device: torch.device | str = "cpu"
) -> Estimator:
    """Load an estimator.

    Args:
        kind: one of ``ESTIMATOR_KINDS``.
        weights: a safetensors file written by ``EstimatorNetwork.save_weights``;
            ``None`` loads the shipped file for ``kind``.
        device: where to put the network.

    Warns:
        EstimatorQualityWarning: loading shipped weights of a kind that fails
            its held-out bar (``shipped_quality``).

    Raises:
        ValueError: unknown kind.
        EstimatorWeightsError (a ValueError): the file is missing, corrupt or
            lacks the heads of ``kind``; the message names the file.
    """
    _check_kind(kind)
    if weights is None:
        path = default_weights_path(kind)
        passes, summary = shipped_quality(kind)
        if not passes:
            # Loud rather than silent: these outputs stay close to the training mean.
            warnings.warn(
                f"the shipped '{kind}' estimator does not clearly beat the mean predictor ({summary}); "
                "see docs/estimators.md",
                EstimatorQualityWarning,
                stacklevel=2,
            )
    else:
        path = Path(weights)
    return Estimator(kind, EstimatorNetwork.from_file(path, device=device), path)
