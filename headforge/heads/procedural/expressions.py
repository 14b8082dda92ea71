"""Expression components of the procedural head.

An expression component is a lid state (for blinks, squints, wide eyes:
the head is rebuilt with the lids more or less open) and/or a smooth
displacement field, both at coefficient 1 = a strong, full expression. Its
blendshape is the change of every vertex.

Fields are evaluated at each vertex's template position. Inside the bags
(mouth cavity, eye sockets) they are scaled down with depth, so the lining
right behind the lips follows them and the deep cavity stays put; bag
vertices take the lip side (upper / lower) of the slit vertex they hang
from. Eyeballs, teeth and the tongue are rigid: only jaw-driven components
(which use the jaw skinning weight) move them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from headforge.heads.procedural.fields import bump, ellipse_bump, smoothstep
from headforge.heads.procedural.surface import LidState

__all__ = ["ExpressionContext", "ExpressionComponent", "EXPRESSION_COMPONENTS", "EXPRESSION_NAMES"]


@dataclass
class ExpressionContext:
    """What the fields need to know about the template.

    Attributes:
        points: (V, 3) where each vertex's field is evaluated (the template).
        vertices: (V, 3) template vertices.
        follow: (V,) 1 on the skin, fading inside bags, 0 on rigid parts.
        lip_side: (V,) +1 above the lip slit, -1 below, 0 at its corners.
        jaw_weight: (V,) skinning weight of the jaw.
        jaw_joint: (3,) jaw hinge position.
        corner_x, slit_y, front_z: mouth corners' |x|, the slit height and its midline front.
        g: nominal geometry parameters.
    """

    points: np.ndarray
    vertices: np.ndarray
    follow: np.ndarray
    lip_side: np.ndarray
    jaw_weight: np.ndarray
    jaw_joint: np.ndarray
    corner_x: float
    slit_y: float
    front_z: float
    g: dict[str, float]

    def face(self, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
        """Ellipse bump over the face front at (cx, cy), times ``follow``, (V,)."""
        p = self.points
        front = smoothstep(0.08, 0.14, p[:, 2])
        return ellipse_bump(p[:, 0], p[:, 1], cx, cy, rx, ry, angle) * front * self.follow

    def corner(self, sign: float, radius: float = 0.03) -> np.ndarray:
        """Weight around the mouth corner on side ``sign`` (+1 = left, +x)."""
        return self.face(sign * self.corner_x, self.slit_y, radius, radius)

    def lip(self, side: float, reach: float) -> np.ndarray:
        """Weight of the upper (side +1) or lower (-1) lip, fading ``reach`` away from the slit."""
        p = self.points
        across = bump(p[:, 0] / (1.2 * self.corner_x))
        away = bump((p[:, 1] - self.slit_y) / reach)
        front = smoothstep(0.08, 0.14, p[:, 2])
        return across * away * front * (self.lip_side == side) * self.follow

    def mouth(self) -> np.ndarray:
        """Weight of the whole mouth area (lips, around them, the cavity lining)."""
        return self.face(0.0, self.slit_y, 0.075, 0.05)


Field = Callable[[ExpressionContext], np.ndarray]


@dataclass(frozen=True)
class ExpressionComponent:
    """A named expression: lid state and/or displacement field, and how to sample it.

    Sampling: ``|N(0, std)|`` with probability ``p_active``, else 0.
    """

    name: str
    field: Field | None = None
    lids: LidState | None = None
    std: float = 0.35
    p_active: float = 0.25


def _vec(w: np.ndarray, d: tuple[float, float, float]) -> np.ndarray:
    return w[:, None] * np.asarray(d)[None]


def _jaw_open(c: ExpressionContext) -> np.ndarray:
    angle = 0.3  # radians about +x: the chin moves down and back
    rot = np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(angle), -np.sin(angle)], [0.0, np.sin(angle), np.cos(angle)]]
    )
    rel = c.vertices - c.jaw_joint
    return c.jaw_weight[:, None] * (rel @ rot.T - rel)


def _smile(sign: float, scale: float = 1.0) -> Field:
    def field(c: ExpressionContext) -> np.ndarray:
        g = c.g
        d = _vec(c.corner(sign, 0.036), (sign * 0.011 * scale, 0.014 * scale, -0.008 * scale))
        d += _vec(c.face(sign * 0.058, -0.045, 0.032, 0.032), (0.0, 0.005 * scale, 0.003 * scale))
        d += _vec(c.face(sign * g["eye_x"], g["eye_y"] - 0.018, 0.024, 0.009), (0.0, 0.0015 * scale, 0.0))
        return d

    return field


def _both(*fields: Field) -> Field:
    return lambda c: sum(f(c) for f in fields)


def _frown(sign: float) -> Field:
    def field(c: ExpressionContext) -> np.ndarray:
        d = _vec(c.corner(sign), (sign * 0.003, -0.008, -0.002))
        return d + _vec(c.face(0.0, c.g["menton_y"] + 0.035, 0.04, 0.035), (0.0, 0.001, 0.001))

    return field


def _smirk(c: ExpressionContext) -> np.ndarray:
    d = _smile(1.0, 1.1)(c)
    d += _vec(c.mouth(), (0.003, 0.0, 0.0))
    return d + _vec(c.corner(-1.0), (0.0, -0.002, -0.001))


def _brow(sign: float, cx: float, move: tuple[float, float, float]) -> Field:
    def field(c: ExpressionContext) -> np.ndarray:
        return _vec(c.face(sign * cx, c.g["brow_y"] + 0.004, 0.038, 0.05), move)

    return field


def _brow_lower(sign: float) -> Field:
    def field(c: ExpressionContext) -> np.ndarray:
        g = c.g
        d = _vec(c.face(sign * 0.045, g["brow_y"] - 0.002, 0.055, 0.032), (-sign * 0.003, -0.007, 0.0015))
        return d + _vec(c.face(0.0, g["brow_y"] - 0.012, 0.016, 0.02), (0.0, 0.0, 0.0015))

    return field


def _cheek_raise(sign: float) -> Field:
    def field(c: ExpressionContext) -> np.ndarray:
        return _vec(c.face(sign * 0.058, -0.04, 0.035, 0.035), (0.0, 0.004, 0.002))

    return field


def _pout(c: ExpressionContext) -> np.ndarray:
    w = c.face(0.0, c.slit_y, 0.06, 0.035)
    d = _vec(w, (0.0, 0.0, 0.012))
    d[:, 0] -= 0.3 * w * c.points[:, 0]
    return d


def _funnel(c: ExpressionContext) -> np.ndarray:
    w = c.face(0.0, c.slit_y, 0.06, 0.035)
    d = _vec(w, (0.0, 0.0, 0.008))
    d[:, 0] -= 0.2 * w * c.points[:, 0]
    d += _vec(c.lip(1.0, 0.03), (0.0, 0.005, 0.0)) + _vec(c.lip(-1.0, 0.035), (0.0, -0.006, 0.0))
    return d


def _press(c: ExpressionContext) -> np.ndarray:
    return _vec(c.lip(1.0, 0.022), (0.0, -0.0015, -0.004)) + _vec(c.lip(-1.0, 0.026), (0.0, 0.0015, -0.004))


def _shift(dx: float) -> Field:
    return lambda c: _vec(c.mouth(), (dx, 0.0, 0.0))


def _stretch(c: ExpressionContext) -> np.ndarray:
    d = sum(_vec(c.corner(s), (s * 0.008, -0.004, -0.002)) for s in (-1.0, 1.0))
    return d + 0.3 * _press(c)


def _cheek_puff(c: ExpressionContext) -> np.ndarray:
    p = c.points
    out = np.stack([p[:, 0], np.zeros(len(p)), p[:, 2] - (c.front_z - 0.09)], 1)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    w = sum(c.face(s * 0.062, c.slit_y + 0.015, 0.042, 0.048) for s in (-1.0, 1.0))
    return 0.012 * w[:, None] * out + _vec(c.face(0.0, c.slit_y, 0.05, 0.03), (0.0, 0.0, 0.003))


def _nose_wrinkle(sign: float) -> Field:
    def field(c: ExpressionContext) -> np.ndarray:
        g = c.g
        d = _vec(c.face(sign * 0.022, g["subnasale_y"] + 0.016, 0.022, 0.03), (0.0, 0.004, 0.001))
        d += _vec(c.lip(1.0, 0.035) * bump((c.points[:, 0] - sign * 0.02) / 0.03), (0.0, 0.003, 0.0))
        return d + _vec(c.face(sign * 0.02, g["brow_y"] - 0.004, 0.022, 0.02), (0.0, -0.003, 0.0))

    return field


def _upper_lip_raise(c: ExpressionContext) -> np.ndarray:
    return _vec(c.lip(1.0, 0.04), (0.0, 0.006, 0.001))


def _lower_lip_depress(c: ExpressionContext) -> np.ndarray:
    return _vec(c.lip(-1.0, 0.045), (0.0, -0.007, 0.001))


def _chin_raise(c: ExpressionContext) -> np.ndarray:
    d = _vec(c.face(0.0, c.slit_y - 0.06, 0.045, 0.045), (0.0, 0.004, 0.002))
    return d + _vec(c.lip(-1.0, 0.03), (0.0, 0.002, 0.002))


def _jaw_move(d: tuple[float, float, float]) -> Field:
    return lambda c: _vec(c.jaw_weight, d)


def _lids(left: tuple[float, float] = (1.0, 1.0), right: tuple[float, float] = (1.0, 1.0)) -> LidState:
    return LidState(left_upper=left[0], left_lower=left[1], right_upper=right[0], right_lower=right[1])


def _wide(sign: float) -> Field:
    return _both(_brow(sign, 0.025, (0.0, 0.003, 0.0)), _brow(sign, 0.08, (0.0, 0.003, 0.0)))


EXPRESSION_COMPONENTS: tuple[ExpressionComponent, ...] = (
    ExpressionComponent("jaw_open", _jaw_open, std=0.35, p_active=0.4),
    ExpressionComponent("jaw_forward", _jaw_move((0.0, 0.0, 0.008)), p_active=0.1),
    ExpressionComponent("jaw_left", _jaw_move((0.008, 0.0, 0.0)), p_active=0.1),
    ExpressionComponent("jaw_right", _jaw_move((-0.008, 0.0, 0.0)), p_active=0.1),
    ExpressionComponent("smile", _both(_smile(1.0), _smile(-1.0)), std=0.5, p_active=0.35),
    ExpressionComponent("smile_left", _smile(1.0, 1.15), p_active=0.15),
    ExpressionComponent("smile_right", _smile(-1.0, 1.15), p_active=0.15),
    ExpressionComponent("smirk", _smirk, p_active=0.1),
    ExpressionComponent("frown", _both(_frown(1.0), _frown(-1.0)), p_active=0.2),
    ExpressionComponent("frown_left", _frown(1.0), p_active=0.1),
    ExpressionComponent("frown_right", _frown(-1.0), p_active=0.1),
    ExpressionComponent("brow_inner_raise_left", _brow(1.0, 0.025, (0.0, 0.012, 0.0)), p_active=0.2),
    ExpressionComponent("brow_inner_raise_right", _brow(-1.0, 0.025, (0.0, 0.012, 0.0)), p_active=0.2),
    ExpressionComponent("brow_outer_raise_left", _brow(1.0, 0.08, (0.0, 0.012, 0.0)), p_active=0.2),
    ExpressionComponent("brow_outer_raise_right", _brow(-1.0, 0.08, (0.0, 0.012, 0.0)), p_active=0.2),
    ExpressionComponent("brow_lower_left", _brow_lower(1.0), p_active=0.15),
    ExpressionComponent("brow_lower_right", _brow_lower(-1.0), p_active=0.15),
    ExpressionComponent("blink_left", lids=_lids(left=(0.0, 0.0)), std=0.4, p_active=0.1),
    ExpressionComponent("blink_right", lids=_lids(right=(0.0, 0.0)), std=0.4, p_active=0.1),
    ExpressionComponent("squint_left", _cheek_raise(1.0), lids=_lids(left=(0.8, 0.2)), p_active=0.15),
    ExpressionComponent("squint_right", _cheek_raise(-1.0), lids=_lids(right=(0.8, 0.2)), p_active=0.15),
    ExpressionComponent("eye_wide_left", _wide(1.0), lids=_lids(left=(1.45, 1.1)), p_active=0.1),
    ExpressionComponent("eye_wide_right", _wide(-1.0), lids=_lids(right=(1.45, 1.1)), p_active=0.1),
    ExpressionComponent("pout", _pout, p_active=0.1),
    ExpressionComponent("lip_funnel", _funnel, p_active=0.1),
    ExpressionComponent("lip_press", _press, p_active=0.15),
    ExpressionComponent("mouth_left", _shift(0.01), p_active=0.1),
    ExpressionComponent("mouth_right", _shift(-0.01), p_active=0.1),
    ExpressionComponent("mouth_stretch", _stretch, p_active=0.1),
    ExpressionComponent("cheek_puff", _cheek_puff, p_active=0.08),
    ExpressionComponent("nose_wrinkle_left", _nose_wrinkle(1.0), p_active=0.08),
    ExpressionComponent("nose_wrinkle_right", _nose_wrinkle(-1.0), p_active=0.08),
    ExpressionComponent("upper_lip_raise", _upper_lip_raise, p_active=0.15),
    ExpressionComponent("lower_lip_depress", _lower_lip_depress, p_active=0.15),
    ExpressionComponent("chin_raise", _chin_raise, p_active=0.1),
)
EXPRESSION_NAMES: tuple[str, ...] = tuple(e.name for e in EXPRESSION_COMPONENTS)
