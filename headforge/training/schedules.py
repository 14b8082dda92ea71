"""Training schedules as pure functions of the image count ``cur_nimg``.

Being pure functions of ``cur_nimg`` (images shown to the discriminator so
far), they need no state and are resume-safe: compute them inside a phase's
loss function from ``PhaseContext.cur_nimg``.
"""

from __future__ import annotations

import math

__all__ = [
    "blur_sigma",
    "conditioning_swap_probability",
    "kimg_to_steps",
    "linear_fade",
    "neural_rendering_resolution",
]


def linear_fade(cur_nimg: int, fade_kimg: float) -> float:
    """Progress ``alpha = min(cur_nimg / (fade_kimg * 1000), 1)`` in [0, 1]; 1 when ``fade_kimg <= 0``."""
    if fade_kimg <= 0:
        return 1.0
    return min(cur_nimg / (fade_kimg * 1000.0), 1.0)


def blur_sigma(cur_nimg: int, init_sigma: float = 10.0, fade_kimg: float = 200.0) -> float:
    """EG3D's discriminator-input blur: ``init_sigma * max(1 - cur_nimg / (fade_kimg * 1000), 0)``.

    Returns:
        Gaussian blur standard deviation in pixels; 0 once faded (and always 0 when ``fade_kimg <= 0``).
    """
    if fade_kimg <= 0:
        return 0.0
    return init_sigma * (1.0 - linear_fade(cur_nimg, fade_kimg))


def neural_rendering_resolution(
    cur_nimg: int, initial: int = 64, final: int | None = None, fade_kimg: float = 1000.0
) -> int:
    """EG3D's neural rendering resolution schedule.

    ``round(initial * (1 - alpha) + final * alpha)`` with
    ``alpha = min(cur_nimg / (fade_kimg * 1000), 1)``; ``initial`` when
    ``final`` is ``None``. Rounds half to even, like ``numpy.rint``.

    Returns:
        Resolution of the volume-rendered image in pixels.
    """
    if final is None:
        return initial
    alpha = linear_fade(cur_nimg, fade_kimg)
    return int(round(initial * (1.0 - alpha) + final * alpha))


def conditioning_swap_probability(
    cur_nimg: int, final_probability: float | None = 0.5, fade_kimg: float = 1000.0
) -> float | None:
    """EG3D's generator pose-conditioning swap probability.

    Starts at 1 (labels always swapped) and fades linearly to
    ``final_probability`` over ``fade_kimg``; ``None`` (no swapping, the
    generator sees zero labels in EG3D) when ``final_probability`` is ``None``.
    """
    if final_probability is None:
        return None
    alpha = linear_fade(cur_nimg, fade_kimg)
    return (1.0 - alpha) * 1.0 + alpha * final_probability


def kimg_to_steps(kimg: float, batch_size: int) -> int:
    """Number of steps of ``batch_size`` images needed to show ``kimg`` thousand images (rounded up)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    # The tolerance keeps e.g. 0.3 kimg / 3 from becoming 101 steps through float error.
    return max(0, math.ceil(kimg * 1000.0 / batch_size - 1e-9))
