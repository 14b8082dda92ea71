"""headforge.training: the generic GAN training machinery every system reuses.

- :mod:`~headforge.training.trainer`: :class:`Trainer`, the multi-phase loop.
- :mod:`~headforge.training.phases`: :class:`Phase`, :class:`PhaseContext`, :class:`StepInfo`,
  :func:`make_adam`.
- :mod:`~headforge.training.losses`: GAN losses and regularisers.
- :mod:`~headforge.training.schedules`: blur, rendering-resolution and swap schedules.
- :mod:`~headforge.training.ema`: generator weight averaging.
- :mod:`~headforge.training.checkpoint`: safetensors + JSON checkpoints.
- :mod:`~headforge.training.distributed`: torchrun helpers.
- :mod:`~headforge.training.run_log`: TensorBoard / JSON-lines logs and image grids.
"""

from headforge.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    latest_checkpoint,
    load_checkpoint,
    load_module_state,
    read_checkpoint_meta,
    resolve_checkpoint,
    save_checkpoint,
)
from headforge.training.distributed import DistContext, init_distributed
from headforge.training.ema import ExponentialMovingAverage, update_ema
from headforge.training.phases import Phase, PhaseContext, StepInfo, make_adam
from headforge.training.run_log import save_image_grid
from headforge.training.trainer import Trainer

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "DistContext",
    "ExponentialMovingAverage",
    "Phase",
    "PhaseContext",
    "StepInfo",
    "Trainer",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "load_module_state",
    "make_adam",
    "read_checkpoint_meta",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_image_grid",
    "update_ema",
]
