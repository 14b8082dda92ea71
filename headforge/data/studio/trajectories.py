"""Smooth random motion for the video preset: talking-head expression, jaw, head and gaze curves.

Every curve is a closed-form function of time drawn from a clip's generator,
so any frame of a clip can be rendered on its own (in any order, in any
worker) and consecutive frames still move smoothly:

* :class:`SinusoidCurve` - a sum of low-frequency sinusoids per dimension
  (slow expression changes and head motion);
* :class:`SpeechCurve` - a non-negative jaw opening: syllable-rate
  oscillation under a slowly varying speaking envelope;
* :class:`SaccadeCurve` - gaze that holds still and jumps quickly (smoothed
  steps at random times);
* :class:`BlinkTrack` - blinks as short events (fast close, slower open).

Times are in seconds; ``fps`` converts frame indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SinusoidCurve", "SpeechCurve", "SaccadeCurve", "BlinkTrack"]


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


@dataclass
class SinusoidCurve:
    """``x(t) = offset + sum_k amplitude_k sin(2 pi f_k t + phase_k)`` per dimension.

    Attributes:
        offset: (D,) value around which the curve moves.
        amplitudes, frequencies, phases: (K, D).
    """

    offset: Tensor
    amplitudes: Tensor
    frequencies: Tensor
    phases: Tensor

    @classmethod
    def sample(
        cls,
        generator: torch.Generator,
        offset: Tensor,
        scale: Tensor | float,
        components: int = 3,
        frequency_range: tuple[float, float] = (0.08, 0.6),
    ) -> SinusoidCurve:
        """Random curve around ``offset`` (D,); each dimension's standard deviation is about ``scale``.

        Component k has frequency uniform in ``frequency_range`` (Hz) and an
        amplitude drawn so that the sum's variance is ``scale ** 2``.
        """
        dims = offset.shape[0]
        weights = _uniform(generator, (components, dims), 0.3, 1.0)
        weights = weights / weights.pow(2).sum(0, keepdim=True).sqrt()  # unit norm per dimension
        scale_t = torch.as_tensor(scale, dtype=torch.float64)
        amplitudes = weights * scale_t * math.sqrt(2.0)  # a sinusoid of amplitude a has variance a^2 / 2
        frequencies = _uniform(generator, (components, dims), *frequency_range)
        phases = _uniform(generator, (components, dims), 0.0, 2.0 * math.pi)
        return cls(offset.double(), amplitudes, frequencies, phases)

    def __call__(self, time: float) -> Tensor:
        """(D,) value at ``time`` seconds, float32."""
        waves = self.amplitudes * torch.sin(2.0 * math.pi * self.frequencies * time + self.phases)
        return (self.offset + waves.sum(0)).float()


@dataclass
class SpeechCurve:
    """Jaw opening (radians, >= 0) of someone talking.

    ``jaw(t) = max(0, peak * envelope(t) * (0.5 + 0.5 sin(2 pi syllable_rate t + phase) + wobble(t)))``
    where ``envelope`` is a smooth 0..1 curve (talking vs pausing) and
    ``wobble`` a small irregular component.
    """

    peak: float
    syllable_rate: float
    phase: float
    envelope: SinusoidCurve
    wobble: SinusoidCurve

    @classmethod
    def sample(cls, generator: torch.Generator, peak_range: tuple[float, float] = (0.08, 0.3)) -> SpeechCurve:
        """Random speaker: 3-5.5 syllables per second, peak opening in ``peak_range`` radians."""
        u = _uniform(generator, (3,), 0.0, 1.0)
        envelope = SinusoidCurve.sample(generator, torch.tensor([0.55]), 0.45, 2, (0.1, 0.35))
        wobble = SinusoidCurve.sample(generator, torch.tensor([0.0]), 0.15, 2, (1.0, 2.5))
        return cls(
            peak=float(peak_range[0] + (peak_range[1] - peak_range[0]) * u[0]),
            syllable_rate=float(3.0 + 2.5 * u[1]),
            phase=float(2.0 * math.pi * u[2]),
            envelope=envelope,
            wobble=wobble,
        )

    def __call__(self, time: float) -> float:
        talking = float(self.envelope(time).clamp(0.0, 1.0))
        syllable = 0.5 + 0.5 * math.sin(2.0 * math.pi * self.syllable_rate * time + self.phase)
        return max(0.0, self.peak * talking * (syllable + float(self.wobble(time))))


@dataclass
class SaccadeCurve:
    """Piecewise-steady gaze with quick smooth jumps.

    Attributes:
        times: (N,) jump start times (s), increasing; targets[k + 1] is reached after ``times[k]``.
        targets: (N + 1, D) gaze values.
        jump_duration: seconds a jump takes (smoothstep).
    """

    times: Tensor
    targets: Tensor
    jump_duration: float = 0.06

    @classmethod
    def sample(
        cls, generator: torch.Generator, duration: float, dims: int, scale: float, mean_hold: float = 0.8
    ) -> SaccadeCurve:
        """Fixations of mean length ``mean_hold`` s over ``duration`` s; targets N(0, scale^2)."""
        count = max(1, int(math.ceil(duration / mean_hold)) * 2)
        holds = -torch.log(_uniform(generator, (count,), 1e-6, 1.0)) * mean_hold
        times = torch.cumsum(holds, 0)
        targets = torch.randn(count + 1, dims, generator=generator, dtype=torch.float64) * scale
        return cls(times, targets)

    def __call__(self, time: float) -> Tensor:
        value = self.targets[0].clone()
        for k in range(self.times.shape[0]):
            progress = (time - float(self.times[k])) / self.jump_duration
            if progress <= 0.0:
                break
            t = min(progress, 1.0)
            step = t * t * (3.0 - 2.0 * t)
            value = value + step * (self.targets[k + 1] - self.targets[k])
        return value.float()


@dataclass
class BlinkTrack:
    """Blink events: lid closure in [0, 1] (1 = fully closed).

    Attributes:
        starts: (N,) blink start times (s).
        close_time, open_time: seconds to close and to reopen.
    """

    starts: Tensor
    close_time: float = 0.08
    open_time: float = 0.16

    @classmethod
    def sample(cls, generator: torch.Generator, duration: float, rate: float = 0.3) -> BlinkTrack:
        """Poisson blinks at ``rate`` per second over ``duration`` seconds (at least 0.35 s apart)."""
        starts: list[float] = []
        time = float(-torch.log(_uniform(generator, (1,), 1e-6, 1.0))[0]) / rate * 0.5
        while time < duration:
            starts.append(time)
            gap = float(-torch.log(_uniform(generator, (1,), 1e-6, 1.0))[0]) / rate
            time += max(gap, 0.35)
        return cls(torch.tensor(starts, dtype=torch.float64))

    def __call__(self, time: float) -> float:
        closure = 0.0
        for start in self.starts.tolist():
            local = time - start
            if 0.0 <= local < self.close_time:
                t = local / self.close_time
            elif self.close_time <= local < self.close_time + self.open_time:
                t = 1.0 - (local - self.close_time) / self.open_time
            else:
                continue
            closure = max(closure, t * t * (3.0 - 2.0 * t))
        return closure
