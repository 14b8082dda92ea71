"""The viewer's change detection, validation and engines (no browser; see test_viewer_browser.py)."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from headforge.apps.viewer_engine import EG3DEngine, NeRFFaceShopEngine, ViewerSession, light_sh, make_engine
from headforge.apps.viewer_state import Stage, ViewerInputError, ViewSettings, parse_settings, plan_update
from headforge.lighting import shade_lambertian
from headforge.models.eg3d import TriplaneGenerator
from headforge.models.eg3d import preset as eg3d_preset
from headforge.models.nerffaceshop import NeRFFaceShopGenerator
from headforge.models.nerffaceshop_config import preset

B, RA, RL, RN, RAL = Stage.BUILD, Stage.REANIMATE, Stage.RELIGHT, Stage.RENDER, Stage.RENDER_ALBEDO
ALL_PASSES = frozenset({"image", "albedo", "shading", "depth"})


def raw_settings(**changes) -> dict:
    """The browser's values for a default view, with some replaced."""
    raw = dict(
        seed=3,
        truncation=0.7,
        animation_source="latent",
        motion=[0.0, 0.0, 0.0, 0.0],
        animation_seed=0,
        expression=[],
        jaw_open=0.0,
        light_azimuth=0.0,
        light_elevation=0.0,
        light_intensity=0.5,
        ambient=0.5,
        average_light=False,
        yaw=0.0,
        pitch=0.0,
        display="image",
    )
    raw.update(changes)
    return raw


def settings(**changes) -> ViewSettings:
    return parse_settings(raw_settings(**changes), motion_count=4)


# ------------------------------------------------------------------ which path runs for which change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"seed": 4}, (B, RN)),
        ({"truncation": 0.5}, (B, RN)),
        ({"motion": [0.5, 0.0, 0.0, 0.0]}, (RA, RN)),
        ({"animation_seed": 7}, (RA, RN)),
        ({"light_azimuth": 30.0}, (RL, RN)),
        ({"light_elevation": -10.0}, (RL, RN)),
        ({"light_intensity": 1.0}, (RL, RN)),
        ({"ambient": 0.1}, (RL, RN)),
        ({"average_light": True}, (RL, RN)),
        ({"yaw": 20.0}, (RN,)),
        ({"pitch": -5.0}, (RN,)),
        ({"light_azimuth": 30.0, "motion": [1.0, 0.0, 0.0, 0.0]}, (RL, RA, RN)),
        ({"seed": 4, "yaw": 10.0, "light_azimuth": 5.0}, (B, RN)),
        ({"display": "shading"}, ()),
        ({}, ()),
    ],
)
def test_plan_runs_only_the_stages_downstream_of_the_change(change: dict, expected: tuple) -> None:
    assert plan_update(settings(), settings(**change), ALL_PASSES) == expected


def test_first_update_builds_and_renders_the_requested_pass() -> None:
    assert plan_update(None, settings()) == (B, RN)
    assert plan_update(None, settings(display="albedo")) == (B, RAL)


def test_display_needs_a_render_only_when_the_last_render_lacks_the_pass() -> None:
    albedo_only = frozenset({"image", "albedo", "depth"})  # what render_albedo gives
    assert plan_update(settings(display="albedo"), settings(display="shading"), albedo_only) == (RN,)
    assert plan_update(settings(), settings(display="albedo"), ALL_PASSES) == ()
    assert plan_update(settings(), settings(display="albedo", yaw=5.0), ALL_PASSES) == (RAL,)


def test_relight_while_showing_the_albedo_skips_the_render() -> None:
    previous = settings(display="albedo")
    assert plan_update(previous, settings(display="albedo", ambient=1.0), ALL_PASSES) == (RL,)
    assert plan_update(previous, settings(display="albedo", ambient=1.0, yaw=3.0), ALL_PASSES) == (RL, RAL)


def test_light_sliders_are_ignored_under_the_average_light() -> None:
    previous = settings(average_light=True)
    assert plan_update(previous, settings(average_light=True, light_azimuth=90.0), ALL_PASSES) == ()
    assert plan_update(previous, settings(average_light=False, light_azimuth=90.0), ALL_PASSES) == (RL, RN)


def test_models_without_animation_or_lighting_ignore_those_settings() -> None:
    change = settings(light_azimuth=40.0, motion=[2.0, 0.0, 0.0, 0.0])
    assert plan_update(settings(), change, ALL_PASSES, animatable=False, relightable=False) == ()
    moved = dataclasses.replace(change, yaw=12.0)
    assert plan_update(settings(), moved, ALL_PASSES, animatable=False, relightable=False) == (RN,)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": -1}, r"seed must lie in \[0, 2147483647\], got -1"),
        ({"seed": 2.5}, "seed must be an integer"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"seed": True}, "seed must be an integer"),
        ({"animation_seed": None}, "animation_seed must be an integer"),
        ({"truncation": 1.5}, r"truncation must lie in \[0, 1\], got 1.5"),
        ({"yaw": float("nan")}, "yaw must lie in"),
        ({"pitch": 61.0}, r"pitch must lie in \[-60, 60\]"),
        ({"light_azimuth": "left"}, "light_azimuth must be a number"),
        ({"light_intensity": -0.1}, "light_intensity must lie in"),
        ({"motion": [0.0, 0.0, 0.0, 3.5]}, r"motion\[3\] must lie in \[-3, 3\]"),
        ({"motion": [0.0, 0.0]}, "motion must be 4 numbers"),
        ({"motion": "0000"}, "motion must be 4 numbers"),
        ({"average_light": "yes"}, "average_light must be true or false"),
        ({"display": "normals"}, "display must be one of"),
        ({"display": "/etc/passwd"}, "display must be one of"),
        ({"animation_source": "head_model"}, r"animation_source must be one of \['latent'\]"),
        ({"expression": [0.5]}, "expression must be 0 numbers"),
        ({"jaw_open": 0.6}, r"jaw_open must lie in \[0, 0.5\]"),
    ],
)
def test_out_of_range_or_mistyped_values_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ViewerInputError, match=message):
        settings(**change)


def test_unknown_or_missing_settings_are_refused() -> None:
    with pytest.raises(ViewerInputError, match=r"unknown \['path'\]"):
        parse_settings(raw_settings(path="/tmp/x"), motion_count=4)
    raw = raw_settings()
    del raw["yaw"]
    with pytest.raises(ViewerInputError, match=r"missing \['yaw'\]"):
        parse_settings(raw, motion_count=4)


def test_integral_floats_and_bounds_are_accepted() -> None:
    parsed = settings(seed=5.0, truncation=1, yaw=-90, pitch=60.0, motion=[-3, 3, 0, 0])
    assert parsed.seed == 5 and isinstance(parsed.seed, int)
    assert parsed.truncation == 1.0 and parsed.yaw == -90.0 and parsed.motion == (-3.0, 3.0, 0.0, 0.0)
    with pytest.raises(ViewerInputError, match="display must be one of"):
        parse_settings(raw_settings(display="albedo"), motion_count=4, displays=("image", "depth"))


# ------------------------------------------------------------------ the light control


@pytest.mark.parametrize(("azimuth", "elevation"), [(0.0, 0.0), (90.0, 0.0), (-45.0, 30.0), (180.0, -60.0)])
def test_light_direction_lights_the_facing_surface_with_intensity_plus_ambient(azimuth, elevation) -> None:
    view = settings(light_azimuth=azimuth, light_elevation=elevation, light_intensity=0.8, ambient=0.3)
    sh = light_sh(view).double()[0]
    a, e = math.radians(azimuth), math.radians(elevation)
    towards = torch.tensor(
        [math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)], dtype=sh.dtype
    )
    # A white Lambertian surface facing the light reflects intensity + ambient (closed form).
    assert torch.allclose(
        shade_lambertian(1.0, towards, sh), torch.full((3,), 1.1, dtype=sh.dtype), atol=1e-6
    )
    # The facing side is the brightest of many normals.
    normals = torch.nn.functional.normalize(torch.randn(500, 3, dtype=sh.dtype), dim=-1)
    assert (shade_lambertian(1.0, normals, sh)[:, 0] <= 1.1 + 1e-6).all()


def test_positive_azimuth_lights_world_plus_x() -> None:
    sh = light_sh(settings(light_azimuth=90.0, light_intensity=1.0, ambient=0.0))[0]
    right = shade_lambertian(1.0, torch.tensor([1.0, 0.0, 0.0]), sh)
    left = shade_lambertian(1.0, torch.tensor([-1.0, 0.0, 0.0]), sh)
    assert (right > 0.99).all() and (left < 0.1).all()


# ------------------------------------------------------------------ engines


@pytest.fixture(scope="module")
def engine() -> NeRFFaceShopEngine:
    torch.manual_seed(0)
    generator = NeRFFaceShopGenerator(preset("tiny")).eval().requires_grad_(False)
    built = make_engine(generator)
    assert isinstance(built, NeRFFaceShopEngine)
    return built


def test_incremental_updates_equal_a_fresh_build(engine: NeRFFaceShopEngine) -> None:
    session = ViewerSession()
    changes = [
        {},
        {"light_azimuth": 70.0, "ambient": 0.2},
        {"yaw": 25.0},
        {"motion": [1.5, -1.0, 0.0, 0.5], "animation_seed": 9},
        {"light_elevation": 40.0, "motion": [0.0, 2.0, 0.0, 0.5]},
        {"average_light": True, "pitch": -10.0},
    ]
    expected_stages = [(B, RN), (RL, RN), (RN,), (RA, RN), (RL, RA, RN), (RL, RN)]
    raw = raw_settings()
    for change, stages in zip(changes, expected_stages):
        raw.update(change)
        view = parse_settings(raw, engine.motion_count)
        session = engine.update(session, view)
        assert session.last_stages == stages
        # Every step shows exactly what a build from scratch at the same settings shows.
        fresh = engine.update(ViewerSession(), view)
        for name in ("image", "albedo", "shading", "depth"):
            np.testing.assert_array_equal(session.passes[name], fresh.passes[name], err_msg=name)


def test_camera_change_reuses_every_tri_plane(engine: NeRFFaceShopEngine, monkeypatch) -> None:
    session = engine.update(ViewerSession(), settings())
    calls: list[str] = []
    for name in ("build", "relight", "reanimate"):
        original = getattr(engine.controls, name)
        monkeypatch.setattr(
            engine.controls, name, lambda *a, _n=name, _f=original: calls.append(_n) or _f(*a)
        )
    moved = engine.update(session, settings(yaw=30.0))
    assert calls == [] and moved.cache is session.cache
    assert not np.array_equal(moved.passes["image"], session.passes["image"])
    relit = engine.update(moved, settings(yaw=30.0, light_azimuth=-80.0, light_intensity=2.0))
    assert calls == ["relight"]
    assert relit.cache.albedo is moved.cache.albedo
    # Density and albedo never depend on the light: the albedo pass is bit-identical.
    np.testing.assert_array_equal(relit.passes["albedo"], moved.passes["albedo"])
    assert not np.array_equal(relit.passes["shading"], moved.passes["shading"])


def test_random_animation_seed_draws_the_tail_of_m(engine: NeRFFaceShopEngine) -> None:
    neutral = engine.motion(settings())
    assert torch.count_nonzero(neutral) == 0
    drawn = engine.motion(settings(animation_seed=5, motion=[0.25, 0.0, 0.0, 0.0]))
    reference = torch.randn(1, engine.generator.config.motion_dim, generator=torch.Generator().manual_seed(5))
    assert drawn[0, 0] == 0.25 and torch.equal(drawn[0, 4:], reference[0, 4:])
    leading = engine.random_motion_leading(5)
    assert leading == tuple(float(v) for v in reference[0, :4].clamp(-3, 3))


def test_mesh_and_orbit_exports(engine: NeRFFaceShopEngine, tmp_path: Path) -> None:
    import imageio.v2 as imageio
    import trimesh

    session = engine.update(ViewerSession(), settings())
    path, level = engine.export_mesh(session, tmp_path / "head.ply", resolution=24)
    mesh = trimesh.load(path)
    assert level in ("10", "auto") and len(mesh.faces) > 0
    assert np.abs(mesh.vertices).max() <= engine.generator.config.box_warp / 2 + 1e-6
    video = engine.export_orbit(session, tmp_path / "orbit.mp4", frames=6, fps=6)
    reader = imageio.get_reader(video)
    assert reader.count_frames() == 6
    reader.close()


def test_eg3d_engine_serves_seed_and_camera_only() -> None:
    torch.manual_seed(0)
    engine = make_engine(TriplaneGenerator(eg3d_preset("tiny")).eval().requires_grad_(False))
    assert isinstance(engine, EG3DEngine) and engine.light_preview(settings()) is None
    display = {"display": "depth", "motion": []}
    session = engine.update(ViewerSession(), parse_settings(raw_settings(**display), 0, engine.displays))
    with pytest.raises(ViewerInputError):
        parse_settings(raw_settings(display="albedo", motion=[]), 0, engine.displays)
    relit = engine.update(
        session, parse_settings(raw_settings(light_azimuth=50.0, **display), 0, engine.displays)
    )
    assert relit.last_stages == () and relit.cache is session.cache
    moved = engine.update(session, parse_settings(raw_settings(yaw=30.0, **display), 0, engine.displays))
    assert moved.last_stages == (RN,) and moved.cache is session.cache
    assert not np.array_equal(moved.passes["depth"], session.passes["depth"])


# ------------------------------------------------------------------ command line


def test_parser_binds_localhost_only() -> None:
    from headforge.apps.viewer import add_viewer_parser, run_viewer

    parser = argparse.ArgumentParser()
    add_viewer_parser(parser.add_subparsers())
    args = parser.parse_args(["viewer", "--ckpt", "run"])
    assert (args.port, args.host, args.run) == (7860, "127.0.0.1", run_viewer)
    with pytest.raises(SystemExit):
        parser.parse_args(["viewer", "--ckpt", "run", "--host", "0.0.0.0"])


# ------------------------------------------------------------------ head-model coefficients (driving encoder)


@pytest.fixture(scope="module")
def driven_engine(engine: NeRFFaceShopEngine) -> NeRFFaceShopEngine:
    from headforge.models.nerffaceshop_encoder import CoefficientEncoder, CoefficientEncoderConfig

    torch.manual_seed(1)
    motion_dim = engine.generator.config.motion_dim
    encoder = CoefficientEncoder(
        CoefficientEncoderConfig(expression_dim=10, motion_dim=motion_dim, hidden=16)
    )
    return make_engine(engine.generator, encoder=encoder)


def head_model_settings(**changes) -> ViewSettings:
    values = {"animation_source": "head_model", "expression": [0.0] * 6, **changes}
    return parse_settings(raw_settings(**values), motion_count=4, expression_count=6)


def test_head_model_coefficients_drive_m_through_the_encoder(driven_engine: NeRFFaceShopEngine) -> None:
    assert driven_engine.expression_count == 6
    view = head_model_settings(expression=[1.0, -0.5, 0.0, 0.0, 0.0, 2.0], jaw_open=0.3)
    coefficients = torch.zeros(1, 13)
    coefficients[0, :6] = torch.tensor([1.0, -0.5, 0.0, 0.0, 0.0, 2.0])
    coefficients[0, 10] = 0.3  # jaw axis-angle x, after the 10 expression coefficients
    assert torch.equal(driven_engine.motion(view), driven_engine.encoder(coefficients))


def test_head_model_source_plans(driven_engine: NeRFFaceShopEngine) -> None:
    previous = head_model_settings()
    # The latent sliders are not the source: moving them changes nothing.
    assert plan_update(previous, head_model_settings(motion=[2.0, 0, 0, 0]), ALL_PASSES) == ()
    assert plan_update(previous, head_model_settings(jaw_open=0.2), ALL_PASSES) == (RA, RN)
    assert plan_update(previous, head_model_settings(expression=[0, 0, 1.0, 0, 0, 0]), ALL_PASSES) == (RA, RN)
    latent = parse_settings(raw_settings(expression=[0.0] * 6), motion_count=4, expression_count=6)
    assert plan_update(previous, latent, ALL_PASSES) == (RA, RN)
    session = driven_engine.update(ViewerSession(), previous)
    opened = driven_engine.update(session, head_model_settings(jaw_open=0.5))
    assert opened.last_stages == (RA, RN) and opened.cache.ws is session.cache.ws


def test_encoder_must_match_the_generator(engine: NeRFFaceShopEngine) -> None:
    from headforge.models.nerffaceshop_encoder import CoefficientEncoder, CoefficientEncoderConfig

    wrong = CoefficientEncoder(CoefficientEncoderConfig(expression_dim=10, motion_dim=3, hidden=8))
    with pytest.raises(ValueError, match="m of 3 numbers"):
        make_engine(engine.generator, encoder=wrong)


def test_apps_build_for_every_engine(driven_engine: NeRFFaceShopEngine, tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="gradio not installed (pip install -e '.[viewer]')")
    from headforge.apps.viewer import build_app

    torch.manual_seed(0)
    eg3d = make_engine(TriplaneGenerator(eg3d_preset("tiny")).eval().requires_grad_(False))
    for engine, has_expression in ((driven_engine, True), (eg3d, False)):
        app = build_app(engine, tmp_path)
        components = {c["props"].get("elem_id"): c for c in app.config["components"]}
        assert {"render", "status", "seed", "yaw", "export-mesh"} <= set(components)
        assert ("expression-0" in components) == has_expression
