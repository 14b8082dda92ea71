"""Acceptance tests of the studio's renders: light vs albedo, jaw vs mouth, landmarks, shading vs SH."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from headforge.cameras import intrinsics_matrix, orbit_cam2world, project_points
from headforge.data.studio.item import StudioContext
from headforge.data.studio.lights import sample_light_rig
from headforge.data.studio.materials import SEGMENT_IDS
from headforge.data.studio.presets import SYNTH_PRESETS, plan_item
from headforge.data.studio.shots import sample_shot
from headforge.heads.base import POSE_SLICES
from headforge.heads.procedural import ProceduralHeadModel
from headforge.lighting import irradiance

RESOLUTION = 64
PRESET = SYNTH_PRESETS["images"]


@pytest.fixture(scope="module")
def context() -> StudioContext:
    torch.set_num_threads(1)
    return StudioContext(ProceduralHeadModel(), RESOLUTION)


def _shot(context: StudioContext, index: int):
    plan = plan_item(PRESET, index)
    return plan, sample_shot(context.head.model, PRESET, plan, seed=0)


def _frontal(shot):
    cam2world = orbit_cam2world(torch.tensor(0.0), torch.tensor(0.0))[0]
    return dataclasses.replace(shot, cam2world=cam2world, intrinsics=intrinsics_matrix(4.2647)[0])


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_light_changes_shading_but_not_albedo(context):
    plan, shot = _shot(context, 0)
    other = dataclasses.replace(shot, rig=sample_light_rig(torch.Generator().manual_seed(123)))
    first = context.render_shot(PRESET, plan, 0, shot)
    second = context.render_shot(PRESET, plan, 0, other)
    assert torch.equal(first.passes.albedo, second.passes.albedo)
    albedo_name = "maps/albedo/00000/img00000000.png"
    assert first.files[albedo_name] == second.files[albedo_name]
    shading_name = "maps/shading/00000/img00000000.png"
    assert first.files[shading_name] != second.files[shading_name]
    foreground = first.passes.segment > 0
    assert (first.passes.shading - second.passes.shading)[foreground].abs().mean() > 0.01
    assert first.record["sh"] != second.record["sh"]


def test_jaw_open_shows_the_mouth_interior(context):
    plan, shot = _shot(context, 1)
    shot = _frontal(shot)
    closed_pose = torch.zeros(15)
    open_pose = closed_pose.clone()
    open_pose[POSE_SLICES["jaw"].start] = 0.35
    neutral = torch.zeros_like(shot.expression)
    counts = []
    for pose in (closed_pose, open_pose):
        item = context.render_shot(PRESET, plan, 0, dataclasses.replace(shot, expression=neutral, pose=pose))
        counts.append(int((item.passes.segment == SEGMENT_IDS["mouth_interior"]).sum()))
    assert counts[1] > counts[0] + 10, counts


FACE_CLASSES = {SEGMENT_IDS[name] for name in ("skin", "eyes", "brows", "lips", "nose", "mouth_interior")}


def test_label_camera_reprojects_landmarks_onto_the_face(context):
    checked = 0
    for index in range(8):
        plan, shot = _shot(context, index)
        if context.identity(0, PRESET, plan.identity).appearance.beard > 0:
            continue  # a moustache may legitimately cover the lip contour
        item = context.render_shot(PRESET, plan, 0, shot)
        label = torch.tensor(item.record["label"])
        cam2world, intrinsics = label[:16].reshape(1, 4, 4), label[16:].reshape(1, 3, 3)
        scene = context.scene(0, PRESET, plan, shot)
        uv, depth = project_points(scene.landmarks[None], cam2world, intrinsics)
        pixels = (uv[0] * RESOLUTION).floor().long()
        # Nose (27-35) and inner eye corners (39, 42) face the camera in every FFHQ-like pose.
        for landmark in (27, 28, 29, 30, 33, 39, 42):
            col, row = pixels[landmark].tolist()
            assert 0 <= row < RESOLUTION and 0 <= col < RESOLUTION
            assert int(item.passes.segment[row, col]) in FACE_CLASSES, (index, landmark)
            # The depth map agrees with the landmark's camera depth (same camera, same surface); on a
            # silhouette the pixel centre may just miss it, so look at the 3 x 3 neighbourhood.
            window = item.passes.depth[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2]
            assert (window - depth[0, landmark]).abs().min() < 0.01, (index, landmark)
        checked += 1
    assert checked >= 3


def test_shading_map_is_label_sh_irradiance_where_lit(context):
    found_shadow = False
    for index in range(4):
        plan, shot = _shot(context, index)
        item = context.render_shot(PRESET, plan, 0, shot)
        passes = item.passes
        sh = torch.tensor(item.record["sh"]).reshape(9, 3)
        foreground = passes.segment > 0
        lit = foreground & (passes.visibility == 1.0)
        expected = irradiance(passes.normal, sh) / math.pi
        assert lit.sum() > 100
        assert (passes.shading - expected)[lit].abs().max() < 1e-4
        # Everywhere: the label's irradiance minus the blocked part of the (single) shadowed key light.
        key = irradiance(passes.normal, shot.rig.light_sh(0)) / math.pi
        assert shot.rig.shadowed.tolist() == [True] + [False] * (shot.rig.directions.shape[0] - 1)
        with_shadow = (expected - (1.0 - passes.visibility)[..., None] * key).clamp(min=0.0)
        assert (passes.shading - with_shadow)[foreground].abs().max() < 1e-4
        # Where a shadow blocks a key light that would light the surface, the surface gets darker.
        shadowed = foreground & (passes.visibility < 0.5) & (key.min(-1).values > 0.05)
        if shadowed.any():
            found_shadow = True
            assert ((expected - passes.shading)[shadowed] > 0.02).all()
        # The same relation holds for the files, up to 8-bit quantisation (interior pixels only).
        shading = (_decode(item.files[f"maps/shading/00000/img{index:08d}.png"]) / 255.0) ** 2.2
        normal = _decode(item.files[f"maps/normal/00000/img{index:08d}.png"]) / 127.5 - 1.0
        normal_t = torch.nn.functional.normalize(torch.from_numpy(normal).float(), dim=-1)
        from_files = (irradiance(normal_t, sh) / math.pi).clamp(0, 1).numpy()
        interior = lit.numpy() & (np.abs(np.gradient(shading.mean(-1)))[0] < 0.05)
        assert np.abs(shading - from_files)[interior].mean() < 0.01
    assert found_shadow


def test_image_is_albedo_times_shading_plus_specular_on_opaque_pixels(context):
    plan, shot = _shot(context, 2)
    # One sample per pixel: the image pass and the maps pass then see the same surface points.
    settings = dict(context.settings)
    context.settings["supersample"] = 1
    try:
        item = context.render_shot(PRESET, plan, 0, shot)
    finally:
        context.settings = settings
    passes = item.passes
    skin = passes.segment == SEGMENT_IDS["skin"]
    diffuse = passes.albedo * passes.shading
    # Specular only adds light: the image is never darker than its diffuse part.
    assert (passes.color - diffuse)[skin].min() > -1e-5
    assert torch.median((passes.color - diffuse)[skin]) < 0.05
