"""Scene sampling: from an image's plan to its expression, pose, camera, light and background.

Everything is drawn from generators seeded by the item's place in the plan
(:mod:`headforge.data.studio.seeding`), never from a running stream, so an
image can be made alone, in any order and in any process:

* identity ``(seed, stream, "identity", i)`` - shape and appearance;
* group ``(seed, stream, "group", g)`` - expression and pose (and the light
  of multiview groups, the camera, light and motion curves of video clips);
* view ``(seed, stream, "view", g, v)`` - the camera of one view;
* light ``(seed, stream, "light", g, v, l)`` - light and background of images.

Cameras follow EG3D's FFHQ framing: on a sphere of radius 2.7 around the
origin, looking at (0, 0, 0.2), normalised focal 4.2647, yaw and pitch from
:func:`headforge.cameras.sample_ffhq_poses` (multiview: yaws stratified over
[-1, 1] rad; lightstage: a fixed rig of 4 cameras).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.cameras import FFHQ_FOCAL, intrinsics_matrix, orbit_cam2world, sample_ffhq_poses
from headforge.data.studio.backgrounds import sample_background_kind
from headforge.data.studio.lights import LightRig, fibonacci_sphere, lightstage_rig, sample_light_rig
from headforge.data.studio.presets import ItemPlan, SynthPreset
from headforge.data.studio.seeding import derive_seed, torch_generator
from headforge.data.studio.trajectories import BlinkTrack, SaccadeCurve, SinusoidCurve, SpeechCurve
from headforge.heads.base import POSE_SLICES, HeadModel
from headforge.lighting import rotate_sh

__all__ = ["Shot", "sample_shot", "LIGHTSTAGE_CAMERAS", "lightstage_directions"]

#: (yaw, pitch) radians of the light-stage cameras.
LIGHTSTAGE_CAMERAS = ((-0.6, 0.08), (-0.2, 0.0), (0.2, 0.0), (0.6, 0.08))


@dataclass
class Shot:
    """Everything an image needs besides the identity.

    Attributes:
        expression: (n_expression,) coefficients. pose: (15,) axis-angle (radians).
        cam2world: (4, 4); intrinsics: (3, 3) normalised.
        rig: the lights.
        background_kind: background pattern; background_seed: its generator seed.
        background_blur: Gaussian blur of the background as a fraction of the image size.
    """

    expression: Tensor
    pose: Tensor
    cam2world: Tensor
    intrinsics: Tensor
    rig: LightRig
    background_kind: str
    background_seed: int
    background_blur: float


def lightstage_directions(count: int) -> Tensor:
    """(count, 3) light directions of the light stage: a Fibonacci sphere (fixed, seed-independent)."""
    return fibonacci_sphere(count)


def _camera(yaw: float | Tensor, pitch: float | Tensor) -> tuple[Tensor, Tensor]:
    return orbit_cam2world(
        torch.as_tensor(yaw, dtype=torch.float32), torch.as_tensor(pitch, dtype=torch.float32)
    )[0], intrinsics_matrix(FFHQ_FOCAL)[0]


# The head model's own expression prior is subtle (a few muscles at ~0.4 of full
# strength): at 128 px it changes a few hundred pixels, too little for generators
# and estimators to learn expressions from. The studio shows them 2x stronger
# (capped below an exaggerated 1.2) and opens the jaw |N(0, 0.15 rad)| (up to ~25 deg).
EXPRESSION_SCALE = 2.0
EXPRESSION_MAX = 1.2
JAW_STD = 0.15


def _expression_and_pose(model: HeadModel, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random still expression and pose from the head model's samplers, at studio strength."""
    expression = model.sample_expression(1, generator=generator)[0].cpu()
    expression = (expression * EXPRESSION_SCALE).clamp(max=EXPRESSION_MAX)
    pose = model.sample_pose(1, generator=generator, jaw_std=JAW_STD)[0].cpu()
    return expression, pose


def _background(generator: torch.Generator) -> tuple[str, int, float]:
    kind = sample_background_kind(generator)
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    blur = 0.012 * float(torch.rand((), generator=generator))
    return kind, seed, blur


def _rotation_y(angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _expression_index(model: HeadModel, name: str) -> int | None:
    names = tuple(model.expression_names)
    return names.index(name) if name in names else None


def _video_shot(model: HeadModel, preset: SynthPreset, plan: ItemPlan, seed: int) -> Shot:
    """Frame ``plan.frame`` of clip ``plan.clip``: curves drawn once per clip, evaluated at the frame time."""
    clip = torch_generator(seed, preset.stream, "group", plan.group)
    base_expression, base_pose = _expression_and_pose(model, clip)
    duration = preset.frames_per_clip / preset.fps
    # Muscles drift around the clip's base expression (never into the mirrored, negative direction).
    expression_curve = SinusoidCurve.sample(
        clip, base_expression.double(), base_expression.double() * 0.4 + 0.03
    )
    neck_curve = SinusoidCurve.sample(
        clip, base_pose[POSE_SLICES["neck"]].double(), torch.tensor([0.07, 0.09, 0.03]), 3, (0.05, 0.4)
    )
    speech = SpeechCurve.sample(clip)
    gaze = SaccadeCurve.sample(clip, duration, 2, 0.12)
    blinks = BlinkTrack.sample(clip, duration)
    yaw, pitch = sample_ffhq_poses(1, generator=clip)
    rig = sample_light_rig(clip)
    background = _background(clip)
    drift = (
        (float(torch.rand((), generator=clip)) - 0.5) * 0.6
        if float(torch.rand((), generator=clip)) < 0.5
        else 0.0
    )

    time = plan.frame / preset.fps
    expression = expression_curve(time).clamp(min=0.0, max=EXPRESSION_MAX)
    for name in ("blink_left", "blink_right"):
        index = _expression_index(model, name)
        if index is not None:
            expression[index] = max(float(expression[index]), blinks(time))
    pose = base_pose.clone()
    pose[POSE_SLICES["neck"]] = neck_curve(time)
    pose[POSE_SLICES["jaw"].start] = speech(time)
    look = gaze(time)
    for key in ("left_eye", "right_eye"):
        start = POSE_SLICES[key].start
        pose[start], pose[start + 1] = look[0], look[1]
    if drift:
        # Slowly turning light: rotate every light of the rig about the vertical axis over the clip.
        rotation = _rotation_y(drift * time / duration)
        rig = LightRig(
            rig.directions @ rotation.T,
            rig.colors,
            rotate_sh(rig.ambient, rotation),
            rig.shadowed,
            rig.specular,
        )
    cam2world, intrinsics = _camera(yaw[0], pitch[0])
    return Shot(expression, pose, cam2world, intrinsics, rig, *background)


def sample_shot(model: HeadModel, preset: SynthPreset, plan: ItemPlan, seed: int) -> Shot:
    """The :class:`Shot` of image ``plan`` under ``preset`` and the run's ``seed``."""
    if preset.is_video:
        return _video_shot(model, preset, plan, seed)
    group = torch_generator(seed, preset.stream, "group", plan.group)
    expression, pose = _expression_and_pose(model, group)
    if preset.is_lightstage:
        yaw, pitch = LIGHTSTAGE_CAMERAS[plan.view % len(LIGHTSTAGE_CAMERAS)]
        cam2world, intrinsics = _camera(yaw, pitch)
        rig = lightstage_rig(lightstage_directions(preset.lights)[plan.light])
        return Shot(
            expression, pose, cam2world, intrinsics, rig, "solid-dark", derive_seed(seed, "stage"), 0.0
        )
    if preset.views > 1:
        view = torch_generator(seed, preset.stream, "view", plan.group, plan.view)
        spacing = 2.0 / preset.views
        yaw = -1.0 + spacing * (plan.view + 0.5) + (float(torch.rand((), generator=view)) - 0.5) * spacing
        _, pitch = sample_ffhq_poses(1, generator=view)
        cam2world, intrinsics = _camera(yaw, pitch[0])
        rig = sample_light_rig(group)
        return Shot(expression, pose, cam2world, intrinsics, rig, *_background(group))
    shot = torch_generator(seed, preset.stream, "light", plan.group, plan.view, plan.light)
    yaw, pitch = sample_ffhq_poses(1, generator=shot)
    cam2world, intrinsics = _camera(yaw[0], pitch[0])
    return Shot(expression, pose, cam2world, intrinsics, sample_light_rig(shot), *_background(shot))
