"""The pieces a system hands to the :class:`~headforge.training.trainer.Trainer`: phases and their context.

A *phase* is one optimiser update of one network from one loss, e.g.
StyleGAN2's ``Gmain``, ``Greg`` (lazy, every 4 steps), ``Dmain``, ``Dreg``
(every 16 steps). The system writes only ``loss_fn(ctx)``; the trainer does
``zero_grad``, ``backward``, the cross-process gradient average, the NaN scrub
and ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from headforge.training.distributed import DistContext
from headforge.training.losses import lazy_regularization_adjustment

if TYPE_CHECKING:
    from headforge.training.trainer import Trainer

__all__ = [
    "LossOutput",
    "Phase",
    "PhaseContext",
    "StepInfo",
    "make_adam",
    "split_loss_output",
    "validate_setup",
]

RESERVED_NETWORK_NAMES = ("opt", "rng")  # top-level checkpoint prefixes

#: What a phase's ``loss_fn`` returns: a scalar tensor to back-propagate, or a
#: mapping with that tensor under ``"loss"`` plus extra scalars to log.
LossOutput = Tensor | Mapping[str, Tensor | float]


@dataclass
class PhaseContext:
    """Everything a phase's loss function may use for one step.

    Attributes:
        phase: the phase's name.
        step: index of the current step (0-based, global, same on every rank).
        cur_nimg: images shown before this step (all ranks together); feed schedules with it.
        batch: this rank's batch, collated by the DataLoader and moved to ``device``
            (e.g. ``{"image": (b, 3, H, W), "camera": (b, 25)}``).
        batch_size: samples per rank in ``batch`` (b).
        generator: ``torch.Generator`` on ``device`` seeded from (seed, rank, step, phase
            index); draw all randomness from it (or from :meth:`randn` / :meth:`rand`).
        device: training device of this rank.
        gain: the phase's interval. The loss function multiplies lazily applied
            regularisers by it (StyleGAN2: ``loss.mean() * gamma / 2 * gain``);
            the trainer does not.
        networks: all networks by name (including EMA copies).
        dist: rank / world size of this process.
    """

    phase: str
    step: int
    cur_nimg: int
    batch: Any
    batch_size: int
    generator: torch.Generator
    device: torch.device
    gain: int
    networks: Mapping[str, nn.Module]
    dist: DistContext

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal samples of ``shape`` on ``device`` from this step's generator."""
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=dtype)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform [0, 1) samples of ``shape`` on ``device`` from this step's generator."""
        return torch.rand(shape, generator=self.generator, device=self.device, dtype=dtype)


@dataclass
class Phase:
    """One optimiser update per ``interval`` steps of ``networks[module]`` from ``loss_fn``.

    Attributes:
        name: unique label used in logs (``Loss/<name>``).
        module: key of the network whose parameters ``optimizer`` updates; while
            the phase runs, every other network's parameters have
            ``requires_grad=False``.
        optimizer: optimiser over (a subset of) that network's parameters. Phases
            may share one optimiser (StyleGAN2's main + lazy-regularisation phases).
        loss_fn: ``loss_fn(ctx) -> Tensor | {"loss": Tensor, **scalars}``; the
            loss is back-propagated as returned (already multiplied by ``ctx.gain``
            where wanted); extra scalars are logged as ``<name>/<key>`` and must
            have the same keys on every rank.
        interval: run on steps where ``step % interval == 0``.
    """

    name: str
    module: str
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[PhaseContext], LossOutput]
    interval: int = 1

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"phase {self.name!r}: interval must be >= 1, got {self.interval}")


@dataclass
class StepInfo:
    """Progress handed to ``on_step_start`` / ``on_step_end`` hooks.

    Attributes:
        steps_done: steps completed at this moment (the running step's index in
            ``on_step_start``; that index + 1 in ``on_step_end``).
        cur_nimg: images shown at this moment (all ranks).
        networks: the trainer's networks.
        scalars: in ``on_step_end``, this step's detached loss tensors by tag.
        trainer: the trainer itself.
    """

    steps_done: int
    cur_nimg: int
    networks: Mapping[str, nn.Module]
    trainer: Trainer
    scalars: dict[str, Tensor] = field(default_factory=dict)


def make_adam(
    params: Iterable[Tensor] | Iterable[dict],
    lr: float,
    betas: tuple[float, float] = (0.0, 0.99),
    eps: float = 1e-8,
    interval: int | None = None,
) -> torch.optim.Adam:
    """Adam with StyleGAN2's lazy-regularisation correction.

    Args:
        params: parameters (or parameter groups) to optimise.
        lr: learning rate before correction (EG3D: G 0.0025, D 0.002).
        betas: Adam betas before correction.
        eps: Adam epsilon.
        interval: the lazy regulariser's interval for the network this optimiser
            serves (e.g. 16 for D with R1 every 16 steps). ``None`` = no lazy
            regularisation, no correction. See
            :func:`~headforge.training.losses.lazy_regularization_adjustment`.
    """
    lr, betas = lazy_regularization_adjustment(lr, betas, interval)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)


def split_loss_output(output: LossOutput, phase: str) -> tuple[Tensor, dict[str, Tensor | float]]:
    """``(loss to back-propagate, extra scalars)`` from what a phase's ``loss_fn`` returned.

    Raises:
        KeyError: a mapping without ``"loss"``.
        ValueError: a loss that is not a scalar.
    """
    if isinstance(output, Tensor):
        loss, extras = output, {}
    else:
        if "loss" not in output:
            raise KeyError(f"phase {phase!r}: loss_fn returned a mapping without a 'loss' entry")
        loss, extras = output["loss"], {key: value for key, value in output.items() if key != "loss"}
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        raise ValueError(
            f"phase {phase!r}: the loss must be a scalar tensor, got {getattr(loss, 'shape', loss)}"
        )
    return loss, extras


def validate_setup(
    networks: Mapping[str, nn.Module],
    phases: Iterable[Phase],
    ema_of: Mapping[str, str],
    batch_size: int,
    world_size: int,
) -> None:
    """Reject trainer set-ups that cannot work, with a message saying why.

    Raises:
        ValueError: bad network names, duplicate phase names, phases training
            unknown or EMA networks, unknown EMA pairs, or a batch size that
            does not divide by the world size.
    """
    for name in networks:
        if "." in name or name in RESERVED_NETWORK_NAMES:
            raise ValueError(
                f"network name {name!r} may not contain '.' nor be one of {RESERVED_NETWORK_NAMES}"
            )
    phases = list(phases)
    names = [phase.name for phase in phases]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names must be unique, got {names}")
    for phase in phases:
        if phase.module not in networks:
            raise ValueError(f"phase {phase.name!r} trains unknown network {phase.module!r}")
        if phase.module in ema_of:
            raise ValueError(f"phase {phase.name!r} trains the EMA copy {phase.module!r}")
    for ema_name, source in ema_of.items():
        if ema_name not in networks or source not in networks:
            raise ValueError(f"ema_of entry {ema_name!r}: {source!r} names an unknown network")
    if batch_size <= 0 or batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of world size {world_size}")
