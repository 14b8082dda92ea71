"""Deterministic procedural noise in PyTorch: lattice value noise and fractal sums.

Used by every texture of the studio (skin, hair strands, clothing, backgrounds).
A :class:`LatticeNoise` draws its random lattice once from a ``torch.Generator``;
evaluating it is then a pure function of the points, so the same seed gives the
same texture on every device and in every process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LatticeNoise", "random_rotation"]


def _quintic_fade(t: Tensor) -> Tensor:
    """Perlin's C2 fade 6t^5 - 15t^4 + 10t^3: zero first and second derivatives at 0 and 1."""
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0)


def random_rotation(generator: torch.Generator) -> Tensor:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix with sign fix), float32."""
    gaussian = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


class LatticeNoise:
    """Value noise: random values on a periodic integer lattice, blended with a quintic fade.

    ``noise(p)`` is C2 in ``p``, lies in [0, 1], has mean about 0.5, and repeats
    with period ``period`` along each axis (large enough to be invisible at the
    frequencies used). :meth:`fbm` sums octaves, each one rotated by its own
    random rotation so that the lattice axes never line up across octaves.

    Args:
        generator: CPU generator the lattice is drawn from.
        period: lattice size per axis.
        octaves: number of random rotations / offsets prepared for :meth:`fbm`.
    """

    def __init__(self, generator: torch.Generator, period: int = 32, octaves: int = 8) -> None:
        self.period = int(period)
        values = torch.rand(self.period, self.period, self.period, generator=generator)
        # One wrapped layer on each far face, so that interpolation between lattice index P - 1 and P
        # reads index 0 again (periodicity) and a single grid_sample does the trilinear blend.
        self.volume = F.pad(values[None, None], (0, 1, 0, 1, 0, 1), mode="circular")[0, 0]
        self.rotations = torch.stack([random_rotation(generator) for _ in range(octaves)])
        self.offsets = torch.rand(octaves, 3, generator=generator) * self.period

    def __call__(self, points: Tensor) -> Tensor:
        """Noise at ``points`` (..., 3) in lattice units -> (...) in [0, 1], same device and float dtype.

        Trilinear interpolation at the *faded* fractional position
        ``floor(p) + fade(p - floor(p))`` equals value noise with the quintic
        fade, so the whole lookup is one ``grid_sample`` call.
        """
        shape = points.shape[:-1]
        flat = points.reshape(-1, 3)
        wrapped = torch.remainder(flat, float(self.period))
        base = torch.floor(wrapped)
        faded = base + _quintic_fade(wrapped - base)
        # grid_sample(align_corners=True) maps -1 .. 1 onto lattice index 0 .. P (the padded size P + 1).
        grid = faded / self.period * 2.0 - 1.0
        volume = self.volume.to(points.device, points.dtype)[None, None]  # (1, 1, D=x, H=y, W=z)
        # grid_sample's last grid coordinate indexes the first spatial axis: pass (z, y, x).
        sampled = F.grid_sample(
            volume,
            grid.flip(-1)[None, None, None],
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return sampled.reshape(shape)

    def fbm(
        self, points: Tensor, frequency: float, octaves: int = 4, gain: float = 0.5, lacunarity: float = 2.0
    ) -> Tensor:
        """Fractal sum of ``octaves`` rotated octaves at ``points`` (..., 3) -> (...) in [0, 1].

        Octave k samples ``frequency * lacunarity**k`` cycles per unit with weight
        ``gain**k``; the sum is divided by the total weight, so the mean stays
        about 0.5 and the range [0, 1].
        """
        if octaves > self.rotations.shape[0]:
            raise ValueError(f"at most {self.rotations.shape[0]} octaves prepared, asked for {octaves}")
        total = points.new_zeros(points.shape[:-1])
        weight_sum = 0.0
        for k in range(octaves):
            rotation = self.rotations[k].to(points.device, points.dtype)
            offset = self.offsets[k].to(points.device, points.dtype)
            scaled = points @ rotation.T * (frequency * lacunarity**k) + offset
            weight = gain**k
            total = total + weight * self(scaled)
            weight_sum += weight
        return total / weight_sum

    def fbm_image(
        self,
        height: int,
        width: int,
        frequency: float,
        octaves: int = 4,
        device: torch.device | str | None = None,
        depth: float = 0.0,
    ) -> Tensor:
        """fBm over an image plane, (H, W); ``frequency`` in cycles per image height.

        ``depth`` selects a different slice of the 3D noise (a cheap second pattern).
        """
        rows = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        cols = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / height
        y, x = torch.meshgrid(rows, cols, indexing="ij")
        points = torch.stack([x, y, torch.full_like(x, depth)], dim=-1)
        return self.fbm(points, frequency, octaves)
