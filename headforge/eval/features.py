"""Feature networks for distribution metrics (FID, KID) and the perceptual distance.

``FeatureNetwork`` is the interface the metrics use. ``HeadforgeFeatureNet`` is
headforge's own offline network: a small plain CNN that needs no download.
Until trained weights ship, it is initialised deterministically from a fixed
seed; random convolutional features still give a meaningful distance between
image distributions (a known baseline), but FIDs computed with it are NOT
comparable with published FIDs (which use the FID Inception network, see
``headforge.eval.inception``), nor with FIDs from other headforge weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn


@runtime_checkable
class FeatureNetwork(Protocol):
    """What the metrics need from a feature extractor.

    ``feature_dim`` is D. ``__call__(images)`` maps images (B, 3, H, W) in
    [-1, 1] (any H, W; the network resizes) to global features (B, D).
    ``layers(images)`` returns intermediate activations, a list of (B, C_l, h_l, w_l)
    tensors, for ``perceptual_distance``.
    """

    feature_dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]: ...


class HeadforgeFeatureNet(nn.Module):
    """Plain CNN feature extractor: resize -> conv stages -> global average pool.

    Input: images (B, 3, H, W) in [-1, 1], used as they are (no ImageNet mean
    and std: the network never saw ImageNet), resized with antialiased
    bilinear interpolation to ``input_size`` x ``input_size``.

    Architecture: a 3x3 stem conv to ``channels[0]``, then one stage per later
    entry of ``channels``: a stride-2 3x3 conv and a 3x3 conv, each followed by
    LeakyReLU(0.2). ``layers`` returns the stem output and every stage output
    (input_size / 2^k resolution); the features (B, channels[-1]) are the
    spatial mean of the last stage. No batch normalisation, so results do not
    depend on the batch.

    Weights: He-normal convolutions (gain for LeakyReLU 0.2) and zero biases
    drawn from a private ``torch.Generator`` seeded with ``seed``: the same
    seed gives bit-identical weights on every machine, whatever the global
    RNG state. ``load_weights`` replaces them with a safetensors file.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        input_size: int = 128,
        seed: int = 0,
        weights_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError("channels needs a stem width and at least one stage")
        self.channels = tuple(int(c) for c in channels)
        self.input_size = int(input_size)
        self.seed = int(seed)
        self.feature_dim = self.channels[-1]
        self.stem = nn.Conv2d(3, self.channels[0], kernel_size=3, padding=1)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
                    nn.Conv2d(c_out, c_out, kernel_size=3, padding=1),
                ]
            )
            for c_in, c_out in zip(self.channels[:-1], self.channels[1:])
        )
        self.reset_parameters()
        if weights_path is not None:
            self.load_weights(weights_path)
        self.requires_grad_(False)
        self.eval()

    def reset_parameters(self) -> None:
        """Deterministic He-normal initialisation from ``self.seed`` (see class docstring)."""
        generator = torch.Generator().manual_seed(self.seed)
        gain = math.sqrt(2.0 / (1.0 + 0.2**2))
        with torch.no_grad():
            for conv in self.modules():
                if isinstance(conv, nn.Conv2d):
                    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                    weight = torch.randn(conv.weight.shape, generator=generator) * (gain / math.sqrt(fan_in))
                    conv.weight.copy_(weight)
                    conv.bias.zero_()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> (B, 3, S, S), S = ``input_size``, antialiased bilinear."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        images = images.to(self.stem.weight.dtype)
        if images.shape[-2:] == (self.input_size, self.input_size):
            return images
        size = (self.input_size, self.input_size)
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Activations [stem (B, C0, S, S), stage k (B, Ck, S/2^k, S/2^k) ...] for images in [-1, 1]."""
        x = F.leaky_relu(self.stem(self.preprocess(images)), 0.2)
        outputs = [x]
        for down, conv in self.stages:
            x = F.leaky_relu(down(x), 0.2)
            x = F.leaky_relu(conv(x), 0.2)
            outputs.append(x)
        return outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> features (B, ``feature_dim``)."""
        return self.layers(images)[-1].mean(dim=(2, 3))

    def _metadata(self) -> dict[str, str]:
        return {
            "format": "headforge-feature-net",
            "channels": json.dumps(list(self.channels)),
            "input_size": str(self.input_size),
        }

    def save_weights(self, path: str | Path) -> Path:
        """Write the weights (and the architecture, as metadata) to a safetensors file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: value.detach().cpu().contiguous() for name, value in self.state_dict().items()}
        save_file(tensors, str(path), metadata=self._metadata())
        return path

    def load_weights(self, path: str | Path) -> None:
        """Load weights from a safetensors file written by ``save_weights``.

        Raises ``ValueError`` naming the file and the key when a key is
        missing, unexpected or has the wrong shape.
        """
        path = Path(path)
        tensors = load_file(str(path))
        expected = self.state_dict()
        for key, value in expected.items():
            if key not in tensors:
                raise ValueError(f"{path}: missing key '{key}' (expected shape {tuple(value.shape)})")
            if tensors[key].shape != value.shape:
                found = tuple(tensors[key].shape)
                raise ValueError(f"{path}: key '{key}' has shape {found}, expected {tuple(value.shape)}")
        unexpected = sorted(set(tensors) - set(expected))
        if unexpected:
            count = len(unexpected)
            raise ValueError(f"{path}: unexpected key '{unexpected[0]}' ({count} unexpected in all)")
        self.load_state_dict(tensors)

    @classmethod
    def from_file(cls, path: str | Path) -> HeadforgeFeatureNet:
        """Build the architecture recorded in a ``save_weights`` file and load its weights."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != "headforge-feature-net":
            raise ValueError(f"{path}: not a headforge feature-net weights file (metadata {metadata})")
        return cls(
            channels=json.loads(metadata["channels"]),
            input_size=int(metadata["input_size"]),
            weights_path=path,
        )
