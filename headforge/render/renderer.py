"""Two-pass (coarse + importance) volume renderer over any field callable.

A *field* is any callable ``field(points (B, N, 3), directions (B, N, 3)) ->
{"sigma": (B, N, 1) raw density, "features": (B, N, C), other: (B, N, K)}``
(docs/architecture.md). The renderer knows nothing about tri-planes.

The scheme is EG3D's ``ImportanceRenderer``: stratified coarse samples,
compositing weights of the coarse pass, importance samples drawn from them,
then one composite over the union of coarse and fine samples sorted by depth.
The field is evaluated once per sample: coarse outputs are reused, and only
depths and densities are sorted (features are summed per pass with weights
scattered back, see ``_composite_merged``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from headforge.render.compositing import (
    DENSITY_ACTIVATIONS,
    composite_depth,
    compositing_weights,
    per_sample_weights,
    weighted_sum,
)
from headforge.render.rays import ray_aabb_intersect
from headforge.render.sampling import importance_depths, stratified_depths

__all__ = ["Field", "RenderingOptions", "VolumeRenderer"]

Field = Callable[[torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]]

# Names the renderer adds to its output; a field must not return them.
_RENDERER_OUTPUTS = ("depth", "opacity", "weights", "sample_depths")


@dataclass
class RenderingOptions:
    """Settings of :class:`VolumeRenderer` (EG3D FFHQ defaults).

    Attributes:
        num_coarse: stratified samples per ray (EG3D ``depth_resolution``).
        num_fine: importance samples per ray; 0 renders a single pass.
        ray_start, ray_end: sampling range along each ray in ray-parameter
            units (world units for unit directions), or ``"auto"`` to use the
            ray's entry / exit of the cube ``[-box_warp/2, box_warp/2]^3``.
        box_warp: side of the cube the field lives in (world units).
        density_activation: ``softplus``, ``relu``, ``exp`` or ``identity``.
        density_shift: added to the raw density before the activation (EG3D
            uses softplus(sigma - 1)).
        density_noise: std of Gaussian noise added to the raw density
            (a NeRF regulariser; 0 disables it).
        perturb: jitter stratified samples and draw random importance
            quantiles (EG3D always does); False makes rendering deterministic.
        disparity_space_sampling: stratify in inverse depth.
        white_background: composite features over ones.
        chunk_size: render at most this many rays (per batch item) at a time,
            both passes and the composite, to bound memory; None renders all
            rays at once. Results match up to float rounding. The default 512
            keeps temporaries small: on CPU, one large pass spends most of its
            time in page faults of freshly mapped memory (about 2x slower).
    """

    num_coarse: int = 48
    num_fine: int = 48
    ray_start: float | str = 2.25
    ray_end: float | str = 3.3
    box_warp: float = 1.0
    density_activation: str = "softplus"
    density_shift: float = -1.0
    density_noise: float = 0.0
    perturb: bool = True
    disparity_space_sampling: bool = False
    white_background: bool = False
    chunk_size: int | None = 512

    def __post_init__(self) -> None:
        if self.num_coarse < 2:
            raise ValueError(f"num_coarse must be >= 2, got {self.num_coarse}")
        if self.num_fine < 0:
            raise ValueError(f"num_fine must be >= 0, got {self.num_fine}")
        if self.num_fine > 0 and self.num_coarse < 4:
            raise ValueError("importance sampling needs num_coarse >= 4")
        for name in ("ray_start", "ray_end"):
            value = getattr(self, name)
            if isinstance(value, str) and value != "auto":
                raise ValueError(f"{name} must be a number or 'auto', got {value!r}")
        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"density_activation must be one of {DENSITY_ACTIVATIONS}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive or None, got {self.chunk_size}")


class VolumeRenderer(nn.Module):
    """Render rays through a field with EG3D's coarse + importance scheme.

    Args:
        options: :class:`RenderingOptions`; read at every call, so changing
            the object (e.g. ``perturb`` for evaluation) takes effect at once.
    """

    def __init__(self, options: RenderingOptions | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else RenderingOptions()

    def forward(
        self,
        field: Field,
        ray_origins: torch.Tensor,
        ray_directions: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Render a batch of rays.

        Args:
            field: the field callable (see module docstring).
            ray_origins: (B, R, 3) world-space origins.
            ray_directions: (B, R, 3) world-space directions, unit length so
                that depths are world distances.
            generator: optional RNG for the stratified jitter, importance
                quantiles and density noise (same device as the rays).

        Returns:
            dict with ``features`` (B, R, C), ``depth`` (B, R, 1) (distance
            along the ray), ``opacity`` (B, R, 1), every extra field output
            composited to (B, R, K), and for regularisers ``sample_depths``
            (B, R, S, 1), all samples sorted by depth, and ``weights``
            (B, R, S-1, 1), the weights of the intervals between them.
        """
        opts = self.options
        batch, rays, _ = ray_origins.shape
        near, far = self._ray_bounds(ray_origins, ray_directions)
        # Every random number is drawn here, for all rays, in a fixed order, so
        # that the result does not depend on chunk_size.
        coarse_depths = stratified_depths(
            near,
            far,
            opts.num_coarse,
            perturb=opts.perturb,
            generator=generator,
            disparity_space=opts.disparity_space_sampling,
        )
        coarse_noise = self._density_noise((batch, rays, opts.num_coarse, 1), near, generator)
        quantiles = fine_noise = None
        if opts.num_fine > 0:
            if opts.perturb:
                quantiles = torch.rand(
                    (batch, rays, opts.num_fine), generator=generator, dtype=near.dtype, device=near.device
                )
            fine_noise = self._density_noise((batch, rays, opts.num_fine, 1), near, generator)

        def rows(tensor: torch.Tensor | None, ray_slice: slice) -> torch.Tensor | None:
            return None if tensor is None else tensor[:, ray_slice]

        chunk = opts.chunk_size or rays
        pieces = []
        for start in range(0, rays, chunk):
            ray_slice = slice(start, min(start + chunk, rays))
            pieces.append(
                self._render_rays(
                    field,
                    ray_origins[:, ray_slice],
                    ray_directions[:, ray_slice],
                    coarse_depths[:, ray_slice],
                    rows(coarse_noise, ray_slice),
                    rows(quantiles, ray_slice),
                    rows(fine_noise, ray_slice),
                )
            )
        if len(pieces) == 1:
            return pieces[0]
        return {name: torch.cat([piece[name] for piece in pieces], dim=1) for name in pieces[0]}

    def _density_noise(
        self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """Gaussian noise for the raw density (dtype and device of ``like``), or None when disabled."""
        if self.options.density_noise <= 0:
            return None
        noise = torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
        return noise * self.options.density_noise

    def _render_rays(
        self,
        field: Field,
        origins: torch.Tensor,
        directions: torch.Tensor,
        coarse_depths: torch.Tensor,
        coarse_noise: torch.Tensor | None,
        quantiles: torch.Tensor | None,
        fine_noise: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Both passes and the composite for one chunk of rays.

        Args:
            origins, directions: (B, r, 3).
            coarse_depths: (B, r, Sc, 1) stratified depths.
            coarse_noise, fine_noise: (B, r, S, 1) density noise or None.
            quantiles: (B, r, Sf) importance-sampling quantiles, or None for
                evenly spaced ones.
        """
        opts = self.options
        coarse = self._evaluate(field, origins, directions, coarse_depths, coarse_noise)
        if opts.num_fine == 0:
            return self._composite_sorted(coarse, coarse_depths)
        coarse_weights = compositing_weights(
            coarse["sigma"], coarse_depths, opts.density_activation, opts.density_shift
        )
        fine_depths = importance_depths(
            coarse_depths, coarse_weights, opts.num_fine, deterministic=quantiles is None, quantiles=quantiles
        )
        fine = self._evaluate(field, origins, directions, fine_depths, fine_noise)
        return self._composite_merged(coarse, coarse_depths, fine, fine_depths)

    def _ray_bounds(
        self, origins: torch.Tensor, directions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, R, 1) near and far ray parameters from the options."""
        opts = self.options
        batch, rays, _ = origins.shape
        shape = (batch, rays, 1)
        fixed = {
            name: torch.full(shape, float(value), dtype=origins.dtype, device=origins.device)
            for name, value in (("start", opts.ray_start), ("end", opts.ray_end))
            if value != "auto"
        }
        if len(fixed) == 2:
            return fixed["start"], fixed["end"]
        half = opts.box_warp / 2
        near, far, hit = ray_aabb_intersect(origins, directions, (-half,) * 3, (half,) * 3)
        # Rays that miss the box get an empty interval at the farthest exit
        # of any ray: zero opacity, and a background depth rather than 0.
        # Computed without a host sync (no boolean indexing).
        hit = hit.unsqueeze(-1)
        background = torch.where(hit, far, torch.zeros_like(far)).amax()
        near = torch.where(hit, near, background)
        far = torch.where(hit, far, background)
        near = fixed.get("start", near)
        far = torch.maximum(fixed.get("end", far), near)
        return near, far

    def _evaluate(
        self,
        field: Field,
        origins: torch.Tensor,
        directions: torch.Tensor,
        depths: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Run the field at ``origins + depths * directions``.

        Args:
            origins, directions: (B, r, 3).
            depths: (B, r, S, 1).
            noise: (B, r, S, 1) added to the raw density, or None.

        Returns:
            Field outputs reshaped per ray: name -> (B, r, S, K).
        """
        batch, rays, samples, _ = depths.shape
        points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(batch, rays * samples, 3)
        sample_dirs = (
            directions.unsqueeze(-2).expand(batch, rays, samples, 3).reshape(batch, rays * samples, 3)
        )
        outputs = _per_ray(field(points, sample_dirs), batch, rays, samples)
        if noise is not None:
            outputs["sigma"] = outputs["sigma"] + noise
        return outputs

    def _composite_sorted(
        self, samples: Mapping[str, torch.Tensor], depths: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Composite one pass whose samples are already sorted by depth."""
        opts = self.options
        weights = compositing_weights(samples["sigma"], depths, opts.density_activation, opts.density_shift)
        sample_weights = per_sample_weights(weights)
        composited = {name: weighted_sum(sample_weights, v) for name, v in samples.items() if name != "sigma"}
        return self._finish(composited, weights, depths)

    def _composite_merged(
        self,
        coarse: Mapping[str, torch.Tensor],
        coarse_depths: torch.Tensor,
        fine: Mapping[str, torch.Tensor],
        fine_depths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Composite the union of coarse and fine samples, sorted by depth.

        Only depths and densities are gathered into sorted order. The
        per-sample weights are scattered back to the unsorted (coarse, fine)
        order and features are summed per pass, which equals compositing the
        sorted features but moves (B, R, S, 1) tensors instead of (B, R, S, C).
        """
        opts = self.options
        num_coarse = coarse_depths.shape[-2]
        depths, order = torch.sort(torch.cat([coarse_depths, fine_depths], dim=-2), dim=-2)
        sigma = torch.cat([coarse["sigma"], fine["sigma"]], dim=-2).gather(-2, order)
        weights = compositing_weights(sigma, depths, opts.density_activation, opts.density_shift)
        sorted_sample_weights = per_sample_weights(weights)
        sample_weights = torch.scatter(sorted_sample_weights, -2, order, sorted_sample_weights)
        coarse_sw, fine_sw = sample_weights[:, :, :num_coarse], sample_weights[:, :, num_coarse:]
        composited = {
            name: weighted_sum(coarse_sw, coarse[name]) + weighted_sum(fine_sw, fine[name])
            for name in coarse
            if name != "sigma"
        }
        return self._finish(composited, weights, depths)

    def _finish(
        self, composited: dict[str, torch.Tensor], weights: torch.Tensor, depths: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Add opacity, depth, background and the regulariser tensors."""
        opacity = weights.sum(dim=-2)
        if self.options.white_background:
            composited["features"] = composited["features"] + (1.0 - opacity)
        composited.update(
            depth=composite_depth(weights, depths, opacity),
            opacity=opacity,
            sample_depths=depths,
            weights=weights,
        )
        return composited


def _per_ray(
    outputs: Mapping[str, torch.Tensor], batch: int, rays: int, samples: int
) -> dict[str, torch.Tensor]:
    """Check a field's outputs and reshape each (B, N, K) to (B, R, S, K)."""
    for required in ("sigma", "features"):
        if required not in outputs:
            raise KeyError(f"field output lacks {required!r}; got keys {sorted(outputs)}")
    if outputs["sigma"].shape[-1] != 1:
        raise ValueError(f"field 'sigma' must have one channel, got shape {tuple(outputs['sigma'].shape)}")
    reshaped = {}
    for name, value in outputs.items():
        if name in _RENDERER_OUTPUTS:
            raise ValueError(f"field output name {name!r} clashes with a renderer output")
        if value.dim() != 3 or value.shape[:2] != (batch, rays * samples):
            expected = f"({batch}, {rays * samples}, K)"
            raise ValueError(f"field output {name!r} must have shape {expected}, got {tuple(value.shape)}")
        reshaped[name] = value.reshape(batch, rays, samples, value.shape[-1])
    return reshaped
