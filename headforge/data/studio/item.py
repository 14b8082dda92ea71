"""Make one dataset image: sample its shot, render it, encode its files and its record.

:class:`StudioContext` holds what a process builds once (the studio head,
the UV atlas) and small caches of recent identities and posed scenes, which
videos, multi-view groups and light-stage frames reuse image after image.
Nothing in it depends on which images were made before, so a cached and an
uncached run give identical bytes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from headforge.cameras import label_from_matrices
from headforge.data.studio.backgrounds import blur_background, render_background
from headforge.data.studio.head_parts import StudioHead, build_studio_head
from headforge.data.studio.materials import SEGMENT_PALETTE
from headforge.data.studio.presets import ItemPlan, SynthPreset, plan_item
from headforge.data.studio.render import ViewPasses, render_view, scene_shadow_map, to_display
from headforge.data.studio.scene import Identity, PosedScene, build_identity, pose_scene
from headforge.data.studio.seeding import torch_generator
from headforge.data.studio.shots import Shot, sample_shot
from headforge.data.studio.skin_texture import SkinLayout
from headforge.data.studio.uv_atlas import UVAtlas, build_uv_atlas
from headforge.data.studio.writer import MAP_FILE_KINDS, encode_png, image_name, map_name
from headforge.heads.base import HeadModel

__all__ = ["DEPTH_SCALE", "RenderedItem", "StudioContext", "encode_passes", "studio_settings"]

#: World units per 16-bit depth count (the dataset's ``meta.depth_scale``).
DEPTH_SCALE = 1e-4


def studio_settings(resolution: int) -> dict[str, int]:
    """Quality settings for an output resolution: supersampling, texture and shadow-map sizes, hair shells."""
    return {
        "supersample": 2,
        "texture": 256 if resolution <= 128 else (512 if resolution <= 256 else 1024),
        "shadow_map": int(min(1024, max(256, 2 * resolution))),
        "shells": 4 if resolution <= 128 else (6 if resolution <= 256 else 8),
    }


@dataclass
class RenderedItem:
    """One finished image.

    Attributes:
        index: image index.
        files: dataset-relative file name -> encoded bytes (image and maps).
        record: the image's entry for the manifest / ``dataset.json``.
        passes: the rendered passes (linear values; for tests and previews).
        shot: the sampled shot.
    """

    index: int
    files: dict[str, bytes]
    record: dict[str, Any]
    passes: ViewPasses
    shot: Shot


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    return (values * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def encode_passes(passes: ViewPasses) -> dict[str, bytes]:
    """PNG bytes of the image and every map (see docs/studio.md for the encodings).

    image, albedo, shading: display-encoded 8-bit RGB (clip at 1, gamma 1/2.2);
    normal: (n + 1) / 2 * 255; depth: 16-bit counts of :data:`DEPTH_SCALE`;
    segmentation: palette PNG of class ids.
    """
    depth = (passes.depth / DEPTH_SCALE).round().clamp(0, 65535).to(torch.int32).numpy().astype(np.uint16)
    return {
        "image": encode_png(_to_uint8(to_display(passes.color))),
        "albedo": encode_png(_to_uint8(to_display(passes.albedo))),
        "shading": encode_png(_to_uint8(to_display(passes.shading))),
        "normal": encode_png(_to_uint8((passes.normal + 1.0) * 0.5)),
        "depth": encode_png(depth),
        "segmentation": encode_png(passes.segment.to(torch.uint8).numpy(), palette=SEGMENT_PALETTE),
    }


class StudioContext:
    """Per-process state of the studio for one resolution.

    Args:
        model: the head model (moved to the CPU, float32).
        resolution: output image size.
        cache_size: identities / posed scenes kept for reuse.
    """

    def __init__(self, model: HeadModel, resolution: int, cache_size: int = 4) -> None:
        if resolution < 16:
            raise ValueError(f"resolution must be at least 16, got {resolution}")
        self.resolution = int(resolution)
        self.settings = studio_settings(self.resolution)
        self.head: StudioHead = build_studio_head(model)
        model = self.head.model
        self.atlas: UVAtlas = build_uv_atlas(
            model.uv_coords,
            model.uv_faces.long(),
            model.faces.long(),
            model.v_template,
            self.head.face_materials,
            self.settings["texture"],
            self.head.region_features,
        )
        self.skin_layout = SkinLayout.build(self.head, self.atlas)
        self.cache_size = cache_size
        self._identities: OrderedDict[tuple, Identity] = OrderedDict()
        self._scenes: OrderedDict[tuple, PosedScene] = OrderedDict()

    def _remember(self, cache: OrderedDict, key: tuple, value: Any) -> None:
        cache[key] = value
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    def identity(self, seed: int, preset: SynthPreset, number: int) -> Identity:
        """The identity ``number`` of the preset's seed stream (cached)."""
        key = (seed, preset.stream, number)
        if key not in self._identities:
            generator = torch_generator(seed, preset.stream, "identity", number)
            self._remember(
                self._identities, key, build_identity(self.head, self.atlas, self.skin_layout, generator)
            )
        self._identities.move_to_end(key)
        return self._identities[key]

    def scene(self, seed: int, preset: SynthPreset, plan: ItemPlan, shot: Shot) -> PosedScene:
        """The posed scene of a shot (cached per identity, expression and pose)."""
        key = (seed, preset.stream, plan.identity, tuple(shot.expression.tolist()), tuple(shot.pose.tolist()))
        if key not in self._scenes:
            identity = self.identity(seed, preset, plan.identity)
            scene = pose_scene(self.head, identity, shot.expression, shot.pose, self.settings["shells"])
            self._remember(self._scenes, key, scene)
        self._scenes.move_to_end(key)
        return self._scenes[key]

    def background(self, shot: Shot) -> torch.Tensor:
        """(R, R, 3) linear background of a shot."""
        size = self.resolution
        if shot.background_kind == "solid-dark":  # the light stage's black drape
            return torch.full((size, size, 3), 0.004)
        generator = torch.Generator().manual_seed(shot.background_seed)
        image = render_background(shot.background_kind, generator, size, size)
        return blur_background(image, shot.background_blur * size)

    def render(self, preset: SynthPreset, index: int, seed: int) -> RenderedItem:
        """Make image ``index`` of ``preset`` with the run's ``seed``."""
        plan = plan_item(preset, index)
        return self.render_shot(preset, plan, seed, sample_shot(self.head.model, preset, plan, seed))

    def render_shot(self, preset: SynthPreset, plan: ItemPlan, seed: int, shot: Shot) -> RenderedItem:
        """Render a given shot of the planned identity (tests change one thing of a sampled shot)."""
        index = plan.index
        identity = self.identity(seed, preset, plan.identity)
        scene = self.scene(seed, preset, plan, shot)
        shadow_maps = scene_shadow_map(scene, shot.rig, self.settings["shadow_map"])
        passes = render_view(
            self.head,
            identity,
            scene,
            shot.cam2world,
            shot.intrinsics,
            shot.rig,
            shadow_maps,
            self.background(shot),
            self.resolution,
            self.settings["supersample"],
        )
        encoded = encode_passes(passes)
        files = {image_name(index): encoded["image"]}
        files.update({map_name(kind, index): encoded[kind] for kind in MAP_FILE_KINDS})
        record: dict[str, Any] = {
            "index": index,
            "file": image_name(index),
            "label": [float(x) for x in label_from_matrices(shot.cam2world, shot.intrinsics).tolist()],
            "sh": [float(x) for x in shot.rig.sh().reshape(-1).tolist()],
            "params": {
                "shape": [float(x) for x in identity.shape.tolist()],
                "expression": [float(x) for x in shot.expression.tolist()],
                "pose": [float(x) for x in shot.pose.tolist()],
                "model": "procedural",
            },
            "identity": plan.identity + preset.identity_offset,
            "maps": {kind: map_name(kind, index) for kind in MAP_FILE_KINDS},
        }
        if preset.is_video:
            record["clip"] = [plan.clip, plan.frame]
        for value in record["label"] + record["sh"]:
            if not math.isfinite(value):
                raise FloatingPointError(f"image {index}: non-finite camera or light value")
        return RenderedItem(index, files, record, passes, shot)
