"""The viewer's settings, their validation, and which control path a change of them needs.

Nothing here imports gradio: the browser app (:mod:`headforge.apps.viewer`)
passes the raw widget values to :func:`parse_settings`, asks
:func:`plan_update` what to re-run and hands the plan to an engine
(:mod:`headforge.apps.viewer_engine`).

The settings fall into groups that enter the generator at different depths
(docs/nerffaceshop.md, "Controls that reuse work"):

==========  ===============================================  =================================
group       settings                                         stage when it changes
==========  ===============================================  =================================
identity    seed, truncation psi                             build (everything)
animation   leading components of m, random-animation seed   reanimate (G_motion ... B_S)
            (or, with a driving encoder: head-model expression
            coefficients and jaw opening)
lighting    light azimuth / elevation / intensity, ambient   relight (lighting mapping, B_S)
camera      yaw, pitch                                       render (volume rendering + SR)
display     lit image, albedo, shading or depth              nothing when the last render
                                                             already holds that pass
==========  ===============================================  =================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "ANIMATION_SOURCES",
    "DISPLAYS",
    "FLOAT_RANGES",
    "INT_RANGES",
    "Stage",
    "ViewSettings",
    "ViewerInputError",
    "parse_settings",
    "plan_update",
]

#: Inclusive ranges of the float settings (angles in degrees).
FLOAT_RANGES: dict[str, tuple[float, float]] = {
    "truncation": (0.0, 1.0),
    "motion": (-3.0, 3.0),  # one component of m ~ N(0, I): +-3 standard deviations
    "expression": (-3.0, 3.0),  # one head-model expression coefficient (unit-scaled)
    "jaw_open": (0.0, 0.5),  # jaw rotation about x in radians (positive opens the mouth)
    "light_azimuth": (-180.0, 180.0),
    "light_elevation": (-90.0, 90.0),
    "light_intensity": (0.0, 3.0),
    "ambient": (0.0, 2.0),
    "yaw": (-90.0, 90.0),
    "pitch": (-60.0, 60.0),
}
#: Inclusive ranges of the integer settings. animation_seed 0 means "no random animation".
INT_RANGES: dict[str, tuple[int, int]] = {
    "seed": (0, 2**31 - 1),
    "animation_seed": (0, 2**31 - 1),
}
#: What the viewer can show: the lit image, the albedo, the shading (NeRFFaceShop) or depth.
DISPLAYS = ("image", "albedo", "shading", "depth")
#: Where the animation latent m comes from: the latent sliders, or head-model coefficients through
#: the driving encoder E (NeRFFaceShop §IV-A) when one is loaded.
ANIMATION_SOURCES = ("latent", "head_model")


class ViewerInputError(ValueError):
    """A setting sent by the browser has the wrong type or lies outside its range."""


@dataclass(frozen=True)
class ViewSettings:
    """One validated state of the viewer's controls.

    Angles are in degrees. ``motion`` holds the leading components of the
    animation latent m; the rest of m is drawn from ``animation_seed`` (0: zeros,
    the neutral mode of N(0, I)). With ``animation_source == "head_model"`` m is
    instead the driving encoder's output for the leading ``expression``
    coefficients (the rest zero) and ``jaw_open`` (radians). With
    ``average_light`` the model's running mean of the training lights replaces
    the directional light.
    """

    seed: int
    truncation: float
    animation_source: str
    motion: tuple[float, ...]
    animation_seed: int
    expression: tuple[float, ...]
    jaw_open: float
    light_azimuth: float
    light_elevation: float
    light_intensity: float
    ambient: float
    average_light: bool
    yaw: float
    pitch: float
    display: str

    @property
    def identity_key(self) -> tuple:
        return (self.seed, self.truncation)

    @property
    def animation_key(self) -> tuple:
        # Only the chosen source's controls matter.
        if self.animation_source == "head_model":
            return ("head_model", self.expression, self.jaw_open)
        return ("latent", self.motion, self.animation_seed)

    @property
    def lighting_key(self) -> tuple:
        # The direction sliders do not matter while the average light is chosen.
        if self.average_light:
            return (True,)
        return (False, self.light_azimuth, self.light_elevation, self.light_intensity, self.ambient)

    @property
    def camera_key(self) -> tuple:
        return (self.yaw, self.pitch)


class Stage(str, Enum):
    """One control path; a plan runs them in the order listed here."""

    BUILD = "build"  # identity, base, animation, albedo and shading tri-planes from scratch
    RELIGHT = "relight"  # lighting mapping + B_S(1), B_S(2)
    REANIMATE = "reanimate"  # G_motion, the warp, B64 ... B_R, B_S
    RENDER = "render"  # volume rendering + super-resolution of the lit head (every pass)
    RENDER_ALBEDO = "render_albedo"  # the albedo alone (the shading tri-planes are not read)


def _check_float(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ViewerInputError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ViewerInputError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
    return value


def _check_int(name: str, value: object, low: int, high: int) -> int:
    # Number widgets send integral floats (3.0); anything else is refused, not rounded.
    is_integral_float = isinstance(value, float) and math.isfinite(value) and value.is_integer()
    if isinstance(value, bool) or not (isinstance(value, int) or is_integral_float):
        raise ViewerInputError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ViewerInputError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def _check_vector(name: str, values: object, count: int) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or len(values) != count:
        raise ViewerInputError(f"{name} must be {count} numbers, got {values!r}")
    low, high = FLOAT_RANGES[name]
    return tuple(_check_float(f"{name}[{i}]", v, low, high) for i, v in enumerate(values))


def parse_settings(
    raw: Mapping[str, object],
    motion_count: int,
    displays: tuple[str, ...] = DISPLAYS,
    expression_count: int = 0,
) -> ViewSettings:
    """Validate the browser's values (a mapping by :class:`ViewSettings` field name).

    ``motion`` must be a sequence of ``motion_count`` numbers and
    ``expression`` one of ``expression_count`` (0: no driving encoder, and then
    ``animation_source`` must be "latent"); ``display`` one of ``displays``
    (the engine's). Raises :class:`ViewerInputError` naming the first bad
    setting, its allowed range and the value received.
    """
    expected = set(ViewSettings.__dataclass_fields__)
    if set(raw) != expected:
        missing, unknown = sorted(expected - set(raw)), sorted(set(raw) - expected)
        raise ViewerInputError(f"settings mismatch: missing {missing}, unknown {unknown}")
    sources = ANIMATION_SOURCES if expression_count else ANIMATION_SOURCES[:1]
    if raw["animation_source"] not in sources:
        raise ViewerInputError(
            f"animation_source must be one of {list(sources)}, got {raw['animation_source']!r}"
        )
    if not isinstance(raw["average_light"], bool):
        raise ViewerInputError(f"average_light must be true or false, got {raw['average_light']!r}")
    if raw["display"] not in displays:
        raise ViewerInputError(f"display must be one of {list(displays)}, got {raw['display']!r}")
    scalar_floats = [name for name in FLOAT_RANGES if name not in ("motion", "expression")]
    floats = {name: _check_float(name, raw[name], *FLOAT_RANGES[name]) for name in scalar_floats}
    ints = {name: _check_int(name, raw[name], *bounds) for name, bounds in INT_RANGES.items()}
    return ViewSettings(
        animation_source=str(raw["animation_source"]),
        motion=_check_vector("motion", raw["motion"], motion_count),
        expression=_check_vector("expression", raw["expression"], expression_count),
        average_light=raw["average_light"],
        display=str(raw["display"]),
        **floats,
        **ints,
    )


def plan_update(
    previous: ViewSettings | None,
    new: ViewSettings,
    rendered_passes: frozenset[str] = frozenset(),
    animatable: bool = True,
    relightable: bool = True,
) -> tuple[Stage, ...]:
    """The stages that bring a cache made for ``previous`` up to ``new``.

    Args:
        previous: the settings the session's cache and last render were made
            for (None: no cache yet).
        new: the requested settings.
        rendered_passes: the passes the last render holds (e.g. {"image",
            "albedo", "shading", "depth"}); a change of ``display`` alone to one of
            them needs no stage at all.
        animatable, relightable: whether the model has animation / lighting
            inputs (False for EG3D: those settings are then ignored).

    Returns the stages in run order; empty when the shown image is already right.
    """
    render = Stage.RENDER_ALBEDO if new.display == "albedo" else Stage.RENDER
    if previous is None or previous.identity_key != new.identity_key:
        return (Stage.BUILD, render)
    stages: list[Stage] = []
    if relightable and previous.lighting_key != new.lighting_key:
        stages.append(Stage.RELIGHT)
    if animatable and previous.animation_key != new.animation_key:
        stages.append(Stage.REANIMATE)
    # The albedo never depends on the light, so a relight alone leaves an albedo view as it is.
    albedo_still_valid = new.display == "albedo" and stages == [Stage.RELIGHT]
    if albedo_still_valid and previous.camera_key == new.camera_key and "albedo" in rendered_passes:
        return (Stage.RELIGHT,)
    if stages or previous.camera_key != new.camera_key or new.display not in rendered_passes:
        stages.append(render)
    return tuple(stages)
