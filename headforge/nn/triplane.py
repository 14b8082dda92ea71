"""Tri-plane features: projecting points onto three planes, sampling them, decoding.

Plane layouts
-------------
A layout names, for each of the three planes, which two world axes become its
2D coordinates ``(u, v)``. In ``grid_sample`` terms ``u`` is the grid's x
coordinate, which indexes the plane's **width** (last axis, W) from left
(-1) to right (+1), and ``v`` is the grid's y coordinate, which indexes its
**height** (axis H) from top (-1) to bottom (+1).

* ``"xy_xz_yz"`` (default, the geometrically correct one):
  plane 0 sees ``(u, v) = (x, y)``, plane 1 ``(x, z)``, plane 2 ``(y, z)``.
* ``"eg3d"``: what NVlabs/eg3d's ``generate_planes`` + ``project_onto_planes``
  actually compute. Its plane matrices are the identity, the y/z swap and a
  cyclic permutation; ``coordinates @ inverse(matrix)`` keeps the first two
  columns, which gives plane 0 ``(x, y)``, plane 1 ``(x, z)`` and plane 2
  ``(z, x)``. So two planes see x and z and no plane sees (y, z)
  (NVlabs/eg3d issue #67). Pretrained EG3D weights need this layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from headforge.nn.layers import FullyConnectedLayer

__all__ = [
    "PLANE_LAYOUTS",
    "project_to_planes",
    "sample_triplanes",
    "mean_over_planes",
    "TriplaneDecoder",
    "TriplaneField",
]

# layout name -> per plane, the world axes (0 = x, 1 = y, 2 = z) used as (u, v).
PLANE_LAYOUTS: dict[str, tuple[tuple[int, int], ...]] = {
    "xy_xz_yz": ((0, 1), (0, 2), (1, 2)),
    "eg3d": ((0, 1), (0, 2), (2, 0)),
}


def _layout_axes(layout: str, device: torch.device) -> torch.Tensor:
    """(6,) long tensor of world axes, (u, v) for each plane in turn."""
    if layout not in PLANE_LAYOUTS:
        raise ValueError(f"unknown plane layout {layout!r}; expected one of {sorted(PLANE_LAYOUTS)}")
    return torch.tensor([axis for pair in PLANE_LAYOUTS[layout] for axis in pair], device=device)


def project_to_planes(points: torch.Tensor, layout: str = "xy_xz_yz", box_warp: float = 1.0) -> torch.Tensor:
    """Project 3D points onto the three planes in ``grid_sample`` coordinates.

    Args:
        points: (B, N, 3) world-space points; the planes span the cube
            ``[-box_warp/2, box_warp/2]^3``.
        layout: a key of ``PLANE_LAYOUTS``.
        box_warp: side of the cube covered by the planes (world units).

    Returns:
        (B, 3, N, 2) plane coordinates ``(u, v)`` = ``(grid x, grid y)``,
        in [-1, 1] for points inside the cube (``2 / box_warp * coordinate``).
    """
    return _project(points, _layout_axes(layout, points.device), box_warp)


def _project(points: torch.Tensor, axes: torch.Tensor, box_warp: float) -> torch.Tensor:
    """:func:`project_to_planes` with the layout already resolved to its (6,) axis tensor."""
    batch, num_points, _ = points.shape
    uv = points.index_select(-1, axes).view(batch, num_points, 3, 2)
    return (uv * (2.0 / box_warp)).transpose(1, 2)


def _grid_sample_planes(
    planes: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str
) -> torch.Tensor:
    """One ``grid_sample`` over all planes of all batch items.

    Args:
        planes: (B*3, C, H, W); a channels-last layout makes CPU sampling
            about twice as fast (the C values of a texel are adjacent).
        grid: (B*3, N, 2) coordinates in [-1, 1].

    Returns:
        (B*3, C, N).
    """
    sampled = F.grid_sample(
        planes, grid.unsqueeze(1), mode=mode, padding_mode=padding_mode, align_corners=False
    )
    return sampled.squeeze(2)


def sample_triplanes(
    planes: torch.Tensor,
    points: torch.Tensor,
    layout: str = "xy_xz_yz",
    box_warp: float = 1.0,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Sample tri-plane features at 3D points.

    Args:
        planes: (B, 3, C, H, W) feature planes. Plane ``p`` is indexed by the
            layout's ``(u, v)``: ``u`` along W (left = -box_warp/2), ``v``
            along H (top = -box_warp/2); pixel centres follow
            ``align_corners=False``.
        points: (B, N, 3) world-space points.
        layout: a key of ``PLANE_LAYOUTS``.
        box_warp: side of the cube covered by the planes (world units).
        mode, padding_mode: as in ``torch.nn.functional.grid_sample``; with
            ``zeros`` points outside the cube read zeros.

    Returns:
        (B, 3, N, C) features per plane, a transposed view of channel-first
        (B, 3, C, N) storage; reduce over planes with :func:`mean_over_planes`.
    """
    batch, num_planes, channels, height, width = planes.shape
    if num_planes != 3:
        raise ValueError(f"expected 3 planes, got planes of shape {tuple(planes.shape)}")
    grid = project_to_planes(points, layout, box_warp).reshape(batch * 3, -1, 2)
    sampled = _grid_sample_planes(
        planes.reshape(batch * 3, channels, height, width), grid, mode, padding_mode
    )
    return sampled.view(batch, 3, channels, -1).transpose(2, 3)


def mean_over_planes(sampled_features: torch.Tensor) -> torch.Tensor:
    """Average (B, 3, N, C) plane features over the planes -> (B, N, C).

    :func:`sample_triplanes` returns a transposed view of channel-first
    storage; a reduction over dim 1 of that view is ~50x slower on CPU than
    the same reduction on the storage's own layout, so reduce there.
    """
    channel_first = sampled_features.transpose(2, 3)
    if channel_first.is_contiguous():
        return channel_first.mean(dim=1).transpose(1, 2)
    return sampled_features.mean(dim=1)


class TriplaneDecoder(nn.Module):
    """EG3D's ``OSGDecoder``: average the three plane features, then a 2-layer MLP.

    Args:
        in_features: C, channels per plane.
        hidden: width of the hidden layer.
        out_features: channels of the decoded feature vector.
        lr_multiplier: equalised learning-rate multiplier of both layers.

    Call with sampled features (B, 3, N, C) (and optionally ray directions,
    which EG3D's decoder ignores); returns ``sigma`` (B, N, 1), the raw
    density, and ``features`` (B, N, out_features) in (-0.001, 1.001): a
    sigmoid stretched slightly so that 0 and 1 are reachable (EG3D).
    """

    def __init__(
        self, in_features: int = 32, hidden: int = 64, out_features: int = 32, lr_multiplier: float = 1.0
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        # Same module names as EG3D's decoder (net.0, net.2) so that converted
        # checkpoints map one to one.
        self.net = nn.Sequential(
            FullyConnectedLayer(in_features, hidden, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + out_features, lr_multiplier=lr_multiplier),
        )

    def forward(
        self, sampled_features: torch.Tensor, directions: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Decode (B, 3, N, C) plane features to density and features (see class docstring)."""
        batch, _, num_points, channels = sampled_features.shape
        # Flattening to 2D keeps a transposed (channel-first) input a view for
        # B == 1, which the matmul consumes without a copy.
        x = mean_over_planes(sampled_features).reshape(batch * num_points, channels)
        x = self.net(x)
        sigma = x[:, :1].reshape(batch, num_points, 1)
        # In-place subtract on the product (not on the sigmoid's output, which its backward needs).
        features = torch.sigmoid(x[:, 1:]).mul(1 + 2 * 0.001).sub_(0.001)
        return {"sigma": sigma, "features": features.reshape(batch, num_points, self.out_features)}


class TriplaneField:
    """A renderer field backed by tri-planes and a decoder.

    Args:
        planes: (B, 3, C, H, W) feature planes of the current batch.
        decoder: maps (B, 3, N, C) sampled features and (B, N, 3) directions
            to the field dict, e.g. :class:`TriplaneDecoder`.
        layout: a key of ``PLANE_LAYOUTS``.
        box_warp: side of the cube covered by the planes (world units).
        mode, padding_mode: ``grid_sample`` options.

    ``field(points (B, N, 3), directions (B, N, 3))`` returns the decoder's
    dict. The planes are put in channels-last memory once here rather than
    per call; gradients still flow to the caller's tensor.
    """

    def __init__(
        self,
        planes: torch.Tensor,
        decoder: nn.Module,
        layout: str = "xy_xz_yz",
        box_warp: float = 1.0,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        batch, num_planes, channels, height, width = planes.shape
        if num_planes != 3:
            raise ValueError(f"expected 3 planes, got planes of shape {tuple(planes.shape)}")
        self.axes = _layout_axes(layout, planes.device)
        self.batch, self.channels = batch, channels
        self.flat_planes = planes.reshape(batch * 3, channels, height, width).contiguous(
            memory_format=torch.channels_last
        )
        self.decoder = decoder
        self.layout = layout
        self.box_warp = box_warp
        self.mode = mode
        self.padding_mode = padding_mode

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) points -> (B, 3, N, C) plane features (see :func:`sample_triplanes`)."""
        grid = _project(points, self.axes, self.box_warp).reshape(self.batch * 3, -1, 2)
        sampled = _grid_sample_planes(self.flat_planes, grid, self.mode, self.padding_mode)
        return sampled.view(self.batch, 3, self.channels, -1).transpose(2, 3)

    def __call__(self, points: torch.Tensor, directions: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decoder(self.sample(points), directions)
