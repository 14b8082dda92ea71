"""Relightable tri-plane fields: albedo tri-planes give density and albedo, shading tri-planes give shading.

NeRFFaceLighting (Jiang et al., ACM TOG 2023; NeRFFaceShop's backbone [27])
splits EG3D's single radiance field in two. The *albedo* tri-planes are decoded
by EG3D's decoder into density and albedo features (the first three are the
albedo colour); the *shading* tri-planes, synthesised from the same identity
under a lighting code, are decoded by a second light-weight MLP into one
scalar shading per point. The emitted features are ``albedo * shading``, so
geometry (density) and albedo never depend on the light: rendering with the
same compositing weights gives the lit image, the albedo image and the shading
image of one volume.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from headforge.nn.layers import FullyConnectedLayer
from headforge.nn.triplane import TriplaneField, mean_over_planes

__all__ = ["LitTriplaneField", "ShadingDecoder"]

# softplus(x + SHADING_OFFSET) = 1 at x = 0: an untrained shading decoder leaves the albedo unchanged.
SHADING_OFFSET = math.log(math.e - 1.0)


class ShadingDecoder(nn.Module):
    """Shading MLP: average the three plane features, FC -> softplus -> FC -> positive scalar.

    The output is ``softplus(x + log(e - 1))``: positive (a light never emits
    negative radiance onto a surface), unbounded above (highlights may brighten
    the albedo), and 1 when the last layer outputs 0. NeRFFaceLighting's code
    ends in a "soft exponential"; softplus keeps it positive and well scaled.

    Call with sampled features (B, 3, N, C) (and optional directions, ignored);
    returns ``{"shading": (B, N, 1)}``.
    """

    def __init__(self, in_features: int, hidden: int = 64, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.net = nn.Sequential(
            FullyConnectedLayer(in_features, hidden, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1, lr_multiplier=lr_multiplier),
        )

    def forward(self, sampled_features: Tensor, directions: Tensor | None = None) -> dict[str, Tensor]:
        batch, _, num_points, channels = sampled_features.shape
        x = self.net(mean_over_planes(sampled_features).reshape(batch * num_points, channels))
        return {"shading": F.softplus(x + SHADING_OFFSET).reshape(batch, num_points, 1)}


class LitTriplaneField:
    """A renderer field over albedo and (optionally) shading tri-planes.

    Args:
        albedo_planes: (B, 3, C, H, W) decoded by ``albedo_decoder`` (EG3D's
            :class:`~headforge.nn.triplane.TriplaneDecoder`) into ``sigma`` and
            albedo ``features`` (B, N, F) in about [0, 1].
        shading_planes: (B, 3, C, H, W) decoded by ``shading_decoder`` into
            ``shading`` (B, N, 1), or None for the albedo alone.
        layout, box_warp: as :func:`~headforge.nn.triplane.sample_triplanes`.

    ``field(points (B, N, 3), directions (B, N, 3))`` returns ``sigma``
    (B, N, 1), ``features`` (B, N, F) = albedo * shading (the albedo when
    there are no shading planes) and, with shading planes, ``albedo``
    (B, N, F) and ``shading`` (B, N, 1), which the renderer composites with
    the same weights as the features.
    """

    def __init__(
        self,
        albedo_planes: Tensor,
        shading_planes: Tensor | None,
        albedo_decoder: nn.Module,
        shading_decoder: nn.Module,
        layout: str = "xy_xz_yz",
        box_warp: float = 1.0,
    ) -> None:
        self.albedo = TriplaneField(albedo_planes, albedo_decoder, layout=layout, box_warp=box_warp)
        self.shading = (
            None
            if shading_planes is None
            else TriplaneField(shading_planes, shading_decoder, layout=layout, box_warp=box_warp)
        )

    def __call__(self, points: Tensor, directions: Tensor) -> dict[str, Tensor]:
        decoded = self.albedo(points, directions)
        if self.shading is None:
            return decoded
        shading = self.shading(points, directions)["shading"]
        albedo = decoded["features"]
        return {"sigma": decoded["sigma"], "features": albedo * shading, "albedo": albedo, "shading": shading}
