"""Small CNN regressors for the estimators: a compact ResNet backbone plus named heads.

``EstimatorNetwork`` maps images (B, 3, H, W) in [-1, 1] to a dict of named
outputs. Inputs are resized (bilinear with antialiasing) to
``input_resolution`` (64 by default) so any image size is accepted. Each
regression head predicts *standardised* targets; the per-head target mean and
standard deviation of the training set are buffers (saved with the weights)
and are applied in ``forward``, so losses see unit-scale numbers while callers
see the targets' own units. Heads listed in ``unit_norm_heads`` are
L2-normalised instead (identity embeddings).

Optionally (``face_crop``) a second backbone reads a fixed face region of
the image: EG3D-aligned crops put the face at a known place, so a square box
given in normalised image coordinates is cut out of the *original* image and
resized to ``input_resolution`` too. At 64 px the whole head spans ~30 px;
the crop gives the expression-bearing region (eyes to chin) about twice the
pixels when the caller's image has them (e.g. 128 px studio renders). The
two pooled feature vectors are concatenated before the heads.

Weights are one safetensors file whose metadata records the architecture
(``format``, ``channels``, ``heads``, ``unit_norm_heads``,
``input_resolution``, ``hidden``, and ``face_crop`` / ``crop_channels`` when
there is a crop branch), so ``EstimatorNetwork.from_file`` rebuilds it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

__all__ = [
    "INPUT_RESOLUTION",
    "WEIGHTS_FORMAT",
    "EstimatorWeightsError",
    "resize_for_estimator",
    "crop_face_region",
    "ResidualBlock",
    "EstimatorBackbone",
    "EstimatorNetwork",
]

INPUT_RESOLUTION = 64
WEIGHTS_FORMAT = "headforge-estimator"


class EstimatorWeightsError(ValueError):
    """A weights file is missing, unreadable or does not fit the architecture; the message names the file."""


def resize_for_estimator(images: Tensor, resolution: int = INPUT_RESOLUTION) -> Tensor:
    """Resize (B, 3, H, W) images to (B, 3, resolution, resolution), bilinear with antialiasing.

    Non-square images are stretched (the studio and FFHQ-style crops are square).
    """
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(
        images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    )


def crop_face_region(images: Tensor, box: Sequence[float], resolution: int = INPUT_RESOLUTION) -> Tensor:
    """Cut the box ``(x0, y0, size)`` (fractions of the width / height) out of images and resize it.

    Args:
        images: (B, 3, H, W), any size (non-square images: the box is a fraction of each side).
        box: left, top and side length of the square region, each in [0, 1] of the image side.
        resolution: output side length in pixels.

    Returns:
        (B, 3, resolution, resolution). The box is snapped to whole pixels of the
        input (at most half a pixel off), then resized bilinearly with antialiasing.
    """
    x0, y0, size = (float(value) for value in box)
    height, width = images.shape[-2:]
    left, top = round(x0 * width), round(y0 * height)
    crop_w, crop_h = max(1, round(size * width)), max(1, round(size * height))
    if left < 0 or top < 0 or left + crop_w > width or top + crop_h > height:
        raise ValueError(f"face crop box {tuple(box)} leaves the image")
    return resize_for_estimator(images[..., top : top + crop_h, left : left + crop_w], resolution)


def _group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: identical behaviour in training and inference, and per-sample determinism.
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    """Pre-activation-free basic residual block: conv3x3-GN-SiLU-conv3x3-GN + skip, then SiLU.

    (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), _group_norm(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        y = F.silu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.silu(y + self.skip(x))


class EstimatorBackbone(nn.Module):
    """Compact ResNet: stride-2 stem, one stride-2 residual block per stage, global mean pool.

    For 64 px input the stem runs at 32 px and the four stages of
    ``channels=(32, 64, 128, 256)`` at 16, 8, 4 and 2 px (every stage strided
    to keep the cost low on CPUs). Output: (B, channels[-1]) features.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.stem = nn.Sequential(
            nn.Conv2d(3, self.channels[0], 3, stride=2, padding=1, bias=False),
            _group_norm(self.channels[0]),
            nn.SiLU(),
        )
        stages = []
        previous = self.channels[0]
        for width in self.channels:
            stages.append(ResidualBlock(previous, width, stride=2))
            previous = width
        self.stages = nn.Sequential(*stages)

    @property
    def feature_dim(self) -> int:
        """Width of the pooled feature vector."""
        return self.channels[-1]

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, feature_dim)."""
        return self.stages(self.stem(images)).mean(dim=(2, 3))


class EstimatorNetwork(nn.Module):
    """Backbone (+ optional face-crop backbone) + one two-layer MLP head per named output.

    Args:
        heads: output name -> width (e.g. ``{"expression": 35, "jaw": 3}``).
        channels: backbone stage widths.
        input_resolution: images (and the face crop) are resized to this square size.
        unit_norm_heads: heads whose output is L2-normalised (embeddings) and not de-standardised.
        hidden: width of each head's hidden layer.
        face_crop: ``(x0, y0, size)`` of the face region as fractions of the image
            side (``crop_face_region``), or ``None`` for a single full-image branch.
        crop_channels: stage widths of the crop backbone (default: ``channels``).
    """

    def __init__(
        self,
        heads: Mapping[str, int],
        channels: Sequence[int] = (32, 64, 128, 256),
        input_resolution: int = INPUT_RESOLUTION,
        unit_norm_heads: Sequence[str] = (),
        hidden: int = 256,
        face_crop: Sequence[float] | None = None,
        crop_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("EstimatorNetwork needs at least one head")
        self.head_dims = {name: int(dim) for name, dim in heads.items()}
        self.unit_norm_heads = tuple(unit_norm_heads)
        unknown = set(self.unit_norm_heads) - set(self.head_dims)
        if unknown:
            raise ValueError(f"unit_norm_heads {sorted(unknown)} are not heads ({sorted(self.head_dims)})")
        self.input_resolution = int(input_resolution)
        self.hidden = int(hidden)
        self.backbone = EstimatorBackbone(channels)
        feature_dim = self.backbone.feature_dim
        self.face_crop: tuple[float, float, float] | None = None
        self.crop_backbone: EstimatorBackbone | None = None
        if face_crop is not None:
            x0, y0, size = (float(value) for value in face_crop)
            if min(x0, y0) < 0.0 or size <= 0.0 or max(x0, y0) + size > 1.0:
                raise ValueError(f"face_crop {tuple(face_crop)} must lie inside the unit square")
            self.face_crop = (x0, y0, size)
            self.crop_backbone = EstimatorBackbone(crop_channels if crop_channels is not None else channels)
            feature_dim += self.crop_backbone.feature_dim
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.Linear(feature_dim, self.hidden), nn.SiLU(), nn.Linear(self.hidden, dim)
                )
                for name, dim in self.head_dims.items()
            }
        )
        for name, dim in self.head_dims.items():
            self.register_buffer(f"target_mean_{name}", torch.zeros(dim))
            self.register_buffer(f"target_std_{name}", torch.ones(dim))

    # ------------------------------------------------------------ normalisation
    def set_target_statistics(self, name: str, targets: Tensor, min_std: float = 1e-3) -> None:
        """Store the mean and std (floored at ``min_std``) of (N, D) training targets for head ``name``."""
        getattr(self, f"target_mean_{name}").copy_(targets.mean(dim=0))
        getattr(self, f"target_std_{name}").copy_(targets.std(dim=0).clamp(min=min_std))

    def standardise(self, name: str, targets: Tensor) -> Tensor:
        """(B, D) targets in their own units -> standardised (zero-mean, unit-std on the training set)."""
        return (targets - getattr(self, f"target_mean_{name}")) / getattr(self, f"target_std_{name}")

    def target_mean(self, name: str) -> Tensor:
        """(D,) training-set mean of head ``name``: the mean-predictor baseline."""
        return getattr(self, f"target_mean_{name}")

    # ------------------------------------------------------------------ forward
    def prepare_views(self, images: Tensor) -> list[Tensor]:
        """Images (B, 3, H, W) -> the network's input views, each (B, 3, R, R) with R = input_resolution.

        ``[full image]``, or ``[full image, face crop]`` with a crop branch. The
        crop is cut from the image as given (before the full view is resized),
        so high-resolution inputs give it real detail.
        """
        views = [resize_for_estimator(images, self.input_resolution)]
        if self.face_crop is not None:
            views.append(crop_face_region(images, self.face_crop, self.input_resolution))
        return views

    def forward_views(self, views: Sequence[Tensor]) -> dict[str, Tensor]:
        """Raw head outputs from prepared views (``prepare_views``): name -> (B, D).

        Training calls this directly with views prepared once per dataset.
        """
        features = self.backbone(views[0])
        if self.crop_backbone is not None:
            features = torch.cat([features, self.crop_backbone(views[1])], dim=1)
        return {name: head(features) for name, head in self.heads.items()}

    def forward_raw(self, images: Tensor) -> dict[str, Tensor]:
        """Head outputs before de-standardisation / normalisation: name -> (B, D)."""
        return self.forward_views(self.prepare_views(images))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Images (B, 3, H, W) in [-1, 1] -> name -> (B, D) in the targets' units (or unit-norm)."""
        return self.finish(self.forward_raw(images))

    def finish(self, raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Raw head outputs -> outputs in the targets' units (regression) or unit-norm (embeddings)."""
        outputs = {}
        for name, value in raw.items():
            if name in self.unit_norm_heads:
                outputs[name] = F.normalize(value, dim=1)
            else:
                outputs[name] = value * getattr(self, f"target_std_{name}") + getattr(
                    self, f"target_mean_{name}"
                )
        return outputs

    # -------------------------------------------------------------- persistence
    def metadata(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Architecture description stored in the safetensors header (all values strings)."""
        meta = {
            "format": WEIGHTS_FORMAT,
            "channels": json.dumps(list(self.backbone.channels)),
            "heads": json.dumps(self.head_dims),
            "unit_norm_heads": json.dumps(list(self.unit_norm_heads)),
            "input_resolution": str(self.input_resolution),
            "hidden": str(self.hidden),
        }
        if self.face_crop is not None and self.crop_backbone is not None:
            meta["face_crop"] = json.dumps(list(self.face_crop))
            meta["crop_channels"] = json.dumps(list(self.crop_backbone.channels))
        meta.update(dict(extra or {}))
        return meta

    def save_weights(
        self,
        path: str | Path,
        extra_metadata: Mapping[str, str] | None = None,
        storage_dtype: torch.dtype = torch.float32,
    ) -> Path:
        """Write weights + architecture metadata to ``path`` (through a temporary file renamed into place).

        ``storage_dtype=torch.float16`` halves the file (the shipped assets use
        it); ``from_file`` converts back to float32 on load.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        tensors = {key: value.detach().to("cpu", storage_dtype).contiguous() for key, value in state.items()}
        temporary = path.with_name(path.name + ".tmp")
        save_file(tensors, str(temporary), metadata=self.metadata(extra_metadata))
        temporary.chmod(0o644)  # safetensors creates 0600 files; shipped assets must be world-readable
        temporary.replace(path)
        return path

    @staticmethod
    def read_metadata(path: str | Path) -> dict[str, str]:
        """Header metadata of ``path``; ``EstimatorWeightsError`` naming the file when unusable."""
        path = Path(path)
        if not path.is_file():
            raise EstimatorWeightsError(f"{path}: estimator weights file not found")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as error:
            raise EstimatorWeightsError(f"{path}: not a readable safetensors file ({error})") from error
        if metadata.get("format") != WEIGHTS_FORMAT:
            raise EstimatorWeightsError(
                f"{path}: not a headforge estimator weights file (format {metadata.get('format')!r})"
            )
        return metadata

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> EstimatorNetwork:
        """Rebuild the recorded architecture and load the weights; eval mode, on ``device``."""
        path = Path(path)
        metadata = cls.read_metadata(path)
        try:
            network = cls(
                heads=json.loads(metadata["heads"]),
                channels=json.loads(metadata["channels"]),
                input_resolution=int(metadata["input_resolution"]),
                unit_norm_heads=json.loads(metadata.get("unit_norm_heads", "[]")),
                hidden=int(metadata.get("hidden", "256")),
                face_crop=json.loads(metadata["face_crop"]) if "face_crop" in metadata else None,
                crop_channels=json.loads(metadata["crop_channels"]) if "crop_channels" in metadata else None,
            )
            tensors = load_file(str(path))
        except (KeyError, ValueError, TypeError, SafetensorError, OSError) as error:
            # json.JSONDecodeError is a ValueError; so are bad head widths or crop boxes.
            raise EstimatorWeightsError(f"{path}: cannot rebuild the estimator ({error!r})") from error
        expected = network.state_dict()
        for key, value in expected.items():
            if key not in tensors:
                raise EstimatorWeightsError(f"{path}: missing tensor '{key}'")
            if tensors[key].shape != value.shape:
                found, wanted = tuple(tensors[key].shape), tuple(value.shape)
                raise EstimatorWeightsError(f"{path}: tensor '{key}' has shape {found}, expected {wanted}")
        unexpected = sorted(set(tensors) - set(expected))
        if unexpected:
            raise EstimatorWeightsError(
                f"{path}: unexpected tensor '{unexpected[0]}' ({len(unexpected)} in all)"
            )
        network.load_state_dict(tensors)
        return network.to(device).eval()
