"""Volume rendering: rays, sampling along rays, compositing and the two-pass renderer."""

from headforge.render.compositing import (
    activate_density,
    composite,
    composite_depth,
    compositing_weights,
    per_sample_weights,
    weighted_sum,
)
from headforge.render.rays import ray_aabb_intersect
from headforge.render.renderer import Field, RenderingOptions, VolumeRenderer
from headforge.render.sampling import importance_depths, sample_pdf, smooth_weights, stratified_depths

__all__ = [
    "Field",
    "RenderingOptions",
    "VolumeRenderer",
    "activate_density",
    "composite",
    "composite_depth",
    "compositing_weights",
    "importance_depths",
    "per_sample_weights",
    "ray_aabb_intersect",
    "sample_pdf",
    "smooth_weights",
    "stratified_depths",
    "weighted_sum",
]
