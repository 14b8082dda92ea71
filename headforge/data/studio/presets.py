"""Synthesis presets and the plan that maps an image index to what it shows.

``--count`` is always the number of images. An image index ``i`` decides,
through :func:`plan_item`, which identity, expression group, camera and
light it shows; the plan depends on the preset only (not on the count), so a
larger run extends a smaller one with the same seed image by image.

===========  ==========================================================================
preset       image i shows
===========  ==========================================================================
images       identity i, one random expression, camera (FFHQ-like) and light
videos       clip c = i // F, frame i % F (F = frames_per_clip): identity c talking,
             moving its head and blinking in front of a fixed camera
multiview    identity i // (V E), expression group i // V, camera i % V (V views of
             each of E expressions per identity), one light per group
lightstage   identity i // (C L E), expression group i // (C L), camera (i // L) % C
             from a fixed camera rig, light i % L (one directional light of L spread
             over the sphere)
benchmark    identity i // 4 of the held-out stream, each image with its own
             random expression, camera and light
===========  ==========================================================================

Seed streams: training presets draw every random choice from the
``"train"`` stream, the benchmark from ``"benchmark"``
(:func:`headforge.data.studio.seeding.derive_seed` of ``(seed, stream, ...)``),
so benchmark identities never occur in training data made with any seed;
benchmark identity ids are also offset by :data:`BENCHMARK_IDENTITY_OFFSET`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SynthPreset", "ItemPlan", "SYNTH_PRESETS", "BENCHMARK_IDENTITY_OFFSET", "plan_item", "get_preset"]

BENCHMARK_IDENTITY_OFFSET = 1_000_000


@dataclass(frozen=True)
class SynthPreset:
    """How a preset lays images out.

    Attributes:
        name: preset name (``--preset``).
        description: one line for ``--help``.
        stream: seed stream ("train" or "benchmark").
        frames_per_clip: video frames per clip (0: not a video preset).
        fps: video frame rate (time step of the motion curves and of the mp4 previews).
        views: cameras per expression group.
        lights: lights per (group, camera).
        expressions_per_identity: expression groups per identity.
        images_per_identity: independent images per identity (images / benchmark).
        identity_offset: added to identity ids written to ``dataset.json``.
    """

    name: str
    description: str
    stream: str = "train"
    frames_per_clip: int = 0
    fps: float = 25.0
    views: int = 1
    lights: int = 1
    expressions_per_identity: int = 1
    images_per_identity: int = 1
    identity_offset: int = 0

    @property
    def is_video(self) -> bool:
        return self.frames_per_clip > 0

    @property
    def is_lightstage(self) -> bool:
        return self.lights > 1


SYNTH_PRESETS: dict[str, SynthPreset] = {
    "images": SynthPreset("images", "one image per identity: random expression, FFHQ-like camera and light"),
    "videos": SynthPreset(
        "videos",
        "talking-head clips of 48 frames (25 fps): smooth expression, jaw, head motion and blinks",
        frames_per_clip=48,
    ),
    "multiview": SynthPreset(
        "multiview",
        "8 cameras of each of 2 expressions per identity, one light per expression",
        views=8,
        expressions_per_identity=2,
    ),
    "lightstage": SynthPreset(
        "lightstage",
        "4 fixed cameras x 16 directional lights per expression, 2 expressions per identity",
        views=4,
        lights=16,
        expressions_per_identity=2,
    ),
    "benchmark": SynthPreset(
        "benchmark",
        "held-out evaluation split: 4 random images per identity from a separate seed stream",
        stream="benchmark",
        images_per_identity=4,
        identity_offset=BENCHMARK_IDENTITY_OFFSET,
    ),
}


def get_preset(name: str) -> SynthPreset:
    """The preset called ``name``; a ``ValueError`` lists the valid names otherwise."""
    if name not in SYNTH_PRESETS:
        raise ValueError(f"unknown synth preset {name!r}; choose from {', '.join(SYNTH_PRESETS)}")
    return SYNTH_PRESETS[name]


@dataclass(frozen=True)
class ItemPlan:
    """What image ``index`` shows (all ids are within the preset's seed stream).

    Attributes:
        index: image index.
        identity: identity number (seeds the shape and appearance).
        group: expression group (seeds expression and pose; shared by views and lights).
        view: camera number within the group.
        light: light number within the group (lightstage) or 0.
        clip, frame: clip id and frame index for videos, else -1.
    """

    index: int
    identity: int
    group: int
    view: int
    light: int
    clip: int = -1
    frame: int = -1


def plan_item(preset: SynthPreset, index: int) -> ItemPlan:
    """The :class:`ItemPlan` of image ``index`` under ``preset`` (see the module table)."""
    if index < 0:
        raise ValueError(f"image index must be >= 0, got {index}")
    if preset.is_video:
        clip, frame = divmod(index, preset.frames_per_clip)
        return ItemPlan(index, identity=clip, group=clip, view=0, light=0, clip=clip, frame=frame)
    per_group = preset.views * preset.lights
    group, within = divmod(index, per_group)
    view, light = divmod(within, preset.lights)
    if preset.images_per_identity > 1:
        identity = index // preset.images_per_identity
    else:
        identity = group // preset.expressions_per_identity
    return ItemPlan(index, identity=identity, group=group, view=view, light=light)
