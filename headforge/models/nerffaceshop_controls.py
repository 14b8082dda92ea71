"""NeRFFaceShop controls that reuse work: change the camera, the light or the animation of cached heads.

The three latent spaces enter the generator at different depths, so a change
of one input needs only the stages downstream of it (§III, Fig. 3):

============  =====================================================  ==============================
change        re-runs                                                reuses
============  =====================================================  ==============================
camera        volume rendering + super-resolution                    every tri-plane
light         lighting mapping, B_S(1), B_S(2), rendering            identity, warp, albedo planes
animation     G_motion, warp at 32, B64 ... B_R, B_S, rendering      mapping, B4 ... B32, delta_shape
============  =====================================================  ==============================

With a deterministic ``noise_mode`` ("const" or "none") and ``perturb=False``
the incremental paths give exactly the images of a full forward pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from headforge.models.nerffaceshop import AlbedoPlanes, NeRFFaceShopGenerator, WarpFeatures

__all__ = ["HeadCache", "HeadControls"]


@dataclass(frozen=True)
class HeadCache:
    """Every stage's output for one batch of heads (B samples).

    Attributes:
        ws: (B, num_ws, w_dim) identity latent omega.
        base: B4 ... B32 output before animation (features, skip planes, delta_shape).
        expression_field: (B, 3, 2, R_w, R_w) delta_exp in template space.
        albedo: B64 ... B_R output (features and albedo tri-planes) after the warp.
        lighting_ws: (B, num_lighting_ws, lighting_w_dim) lighting latent l.
        shading_planes: (B, 3, C_p, R, R) shading tri-planes.
    """

    ws: Tensor
    base: WarpFeatures
    expression_field: Tensor
    albedo: AlbedoPlanes
    lighting_ws: Tensor
    shading_planes: Tensor


class HeadControls:
    """Stage-wise synthesis with a :class:`HeadCache` (call under ``torch.no_grad`` for inference).

    Args:
        generator: a :class:`~headforge.models.nerffaceshop.NeRFFaceShopGenerator`.
        noise_mode: the synthesis noise of every stage ("const" keeps results reproducible).
    """

    def __init__(self, generator: NeRFFaceShopGenerator, noise_mode: str = "const") -> None:
        self.generator = generator
        self.noise_mode = noise_mode

    def build(
        self,
        z: Tensor,
        c: Tensor,
        m: Tensor,
        sh: Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> HeadCache:
        """Every stage for z (B, z_dim) conditioned on c (B, 25), motion m (B, motion_dim), sh (B, 9, 3)."""
        generator = self.generator
        ws = generator.encode_identity(z, c, truncation_psi, truncation_cutoff)
        base = generator.synthesize_to_32(ws, self.noise_mode)
        expression = generator.expression_field(generator.encode_motion(m))
        albedo = generator.synthesize_albedo_planes(ws, generator.animate(base, expression), self.noise_mode)
        lighting_ws = generator.encode_lighting(sh)
        shading = generator.synthesize_shading_planes(ws, albedo, lighting_ws, self.noise_mode)
        return HeadCache(ws, base, expression, albedo, lighting_ws, shading)

    def reanimate(self, cache: HeadCache, m: Tensor) -> HeadCache:
        """New animation m (B, motion_dim): G_motion, the warp, B64 ... B_R and B_S run again."""
        generator = self.generator
        expression = generator.expression_field(generator.encode_motion(m))
        animated = generator.animate(cache.base, expression)
        albedo = generator.synthesize_albedo_planes(cache.ws, animated, self.noise_mode)
        shading = generator.synthesize_shading_planes(cache.ws, albedo, cache.lighting_ws, self.noise_mode)
        return dataclasses.replace(cache, expression_field=expression, albedo=albedo, shading_planes=shading)

    def relight(self, cache: HeadCache, sh: Tensor) -> HeadCache:
        """New light sh (B, 9, 3): only the lighting mapping and B_S(1), B_S(2) run again."""
        generator = self.generator
        lighting_ws = generator.encode_lighting(sh)
        shading = generator.synthesize_shading_planes(cache.ws, cache.albedo, lighting_ws, self.noise_mode)
        return dataclasses.replace(cache, lighting_ws=lighting_ws, shading_planes=shading)

    def render(self, cache: HeadCache, camera: Tensor, **render_kwargs: Any) -> dict[str, Tensor]:
        """Images of the cached heads from cameras (B, 25): rendering and super-resolution only.

        ``render_kwargs`` go to :meth:`NeRFFaceShopGenerator.render` (default
        ``perturb=False`` and this object's noise mode).
        """
        render_kwargs.setdefault("perturb", False)
        render_kwargs.setdefault("noise_mode", self.noise_mode)
        return self.generator.render(
            cache.albedo.planes, cache.shading_planes, cache.ws, camera, **render_kwargs
        )

    def render_albedo(self, cache: HeadCache, camera: Tensor, **render_kwargs: Any) -> dict[str, Tensor]:
        """The albedo alone (no shading planes are read), from cameras (B, 25)."""
        render_kwargs.setdefault("perturb", False)
        render_kwargs.setdefault("noise_mode", self.noise_mode)
        return self.generator.render(cache.albedo.planes, None, cache.ws, camera, **render_kwargs)
