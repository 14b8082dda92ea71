"""Packing a :class:`~headforge.training.trainer.Trainer`'s state into a checkpoint and back.

Checkpoint layout written by the trainer (see :mod:`headforge.training.checkpoint`):

- tensors: ``<network>.<state_dict key>`` for every network (``G.``, ``G_ema.``,
  ``D.``, ...), ``opt.<key>.state.<i>.<name>`` for every optimiser, ``rng.*``.
- JSON ``meta``: ``model`` (``config["model"]`` if present), ``config``, ``step``,
  ``cur_nimg``, ``kimg``, ``batch_size``, ``seed``, ``world_size``, ``networks``
  (name -> class name), ``ema_of``, ``optimizers`` (key -> param_groups, ...),
  ``grad_scalers``, ``rng``, ``losses`` (last logged scalars), ``headforge_version``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import headforge
from headforge.training.checkpoint_state import (
    CheckpointError,
    capture_rng_state,
    flatten_module_state,
    flatten_optimizer_state,
    load_module_state,
    load_optimizer_state,
    restore_rng_state,
)
from headforge.training.phases import Phase

if TYPE_CHECKING:
    from headforge.training.trainer import Trainer

__all__ = [
    "build_checkpoint",
    "config_differences",
    "move_to_device",
    "optimizer_keys",
    "restore_checkpoint",
    "resume_from_latest",
]

_log = logging.getLogger("headforge.training")


def optimizer_keys(phases: Sequence[Phase]) -> dict[str, torch.optim.Optimizer]:
    """Name each distinct optimiser: its network's name, or the phase name if a network has several.

    Phases that share an optimiser (main + lazy regulariser) share its key.
    """
    distinct: list[tuple[Phase, torch.optim.Optimizer]] = []
    for phase in phases:
        if all(phase.optimizer is not seen for _, seen in distinct):
            distinct.append((phase, phase.optimizer))
    per_module: dict[str, int] = {}
    for phase, _ in distinct:
        per_module[phase.module] = per_module.get(phase.module, 0) + 1
    return {(phase.module if per_module[phase.module] == 1 else phase.name): opt for phase, opt in distinct}


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device`` (dicts, lists and tuples are walked)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


_ABSENT = "<absent>"


def config_differences(stored: Any, live: Any, path: str = "", defaults: Any = _ABSENT) -> list[str]:
    """Dotted paths where two JSON-like configs differ (empty when equal).

    ``defaults`` (same shape as ``live``) holds each field's default: a field
    the stored config lacks (it predates the field) and whose live value is
    its default is no difference, because a new field's default keeps the
    behaviour the old run had.
    """
    if isinstance(stored, dict) and isinstance(live, dict):
        differences = []
        for key in sorted(set(stored) | set(live), key=str):
            where = f"{path}.{key}" if path else str(key)
            default = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
            if key not in stored and key in live and default is not _ABSENT and live[key] == default:
                continue
            if key not in stored or key not in live:
                differences.append(where)
            else:
                differences.extend(config_differences(stored[key], live[key], where, default))
        return differences
    return [] if stored == live else [path or "<root>"]


def build_checkpoint(trainer: Trainer) -> tuple[dict[str, Tensor], dict]:
    """All tensors and metadata needed to rebuild and continue ``trainer`` at its current step."""
    tensors: dict[str, Tensor] = {}
    for name, module in trainer.networks.items():
        tensors.update(flatten_module_state(module, f"{name}."))
    optimizers_meta = {}
    for key, optimizer in trainer.optimizers.items():
        opt_tensors, optimizers_meta[key] = flatten_optimizer_state(optimizer, f"opt.{key}.")
        tensors.update(opt_tensors)
    rng_tensors, rng_meta = capture_rng_state()
    tensors.update(rng_tensors)
    meta = {
        "model": trainer.config.get("model"),
        "config": trainer.config,
        "step": trainer.step,
        "cur_nimg": trainer.cur_nimg,
        "kimg": trainer.cur_nimg / 1000,
        "batch_size": trainer.batch_size,
        "seed": trainer.seed,
        "world_size": trainer.dist.world_size,
        "networks": {name: type(module).__name__ for name, module in trainer.networks.items()},
        "ema_of": trainer.ema_of,
        "optimizers": optimizers_meta,
        "grad_scalers": {name: scaler.state_dict() for name, scaler in trainer.scalers.items()},
        "rng": rng_meta,
        "losses": trainer.last_scalars,
        "headforge_version": headforge.__version__,
    }
    return tensors, meta


def restore_checkpoint(
    trainer: Trainer,
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    restore_rng: bool = True,
    new_networks: Sequence[str] = (),
) -> None:
    """Load networks, optimisers, grad scalers and (optionally) RNG states into ``trainer``.

    ``new_networks`` name networks the checkpoint predates (added by an
    accepted config change, e.g. an augmentation pipeline): they keep the
    state they were built with.

    Raises:
        CheckpointError: a network or optimiser of the trainer is missing from the checkpoint.
    """
    for name, module in trainer.networks.items():
        if name not in new_networks:
            load_module_state(module, tensors, f"{name}.")
    saved_optimizers = meta.get("optimizers", {})
    for key, optimizer in trainer.optimizers.items():
        if key not in saved_optimizers:
            raise CheckpointError(
                f"checkpoint has no state for optimizer {key!r} (has {sorted(saved_optimizers)})"
            )
        # The live optimisers were built from the current config, which equals the stored one
        # except for accepted changes: their hyper-parameters (a changed lr) are the ones to keep.
        load_optimizer_state(
            optimizer, tensors, saved_optimizers[key], f"opt.{key}.", keep_live_hyperparameters=True
        )
    for name, scaler in trainer.scalers.items():
        state = meta.get("grad_scalers", {}).get(name)
        if state:
            scaler.load_state_dict(state)
    if restore_rng:
        restore_rng_state(tensors, meta["rng"])


def _config_value(config: Any, where: str) -> Any:
    """The value at a dotted path of a JSON-like config, or ``"<absent>"``."""
    for key in where.split("."):
        if not isinstance(config, dict) or key not in config:
            return _ABSENT
        config = config[key]
    return config


def record_config_changes(
    trainer: Trainer,
    stem: Path | str,
    step: int,
    stored: Mapping[str, Any],
    changed: Sequence[str],
    new_networks: Sequence[str] = (),
) -> None:
    """Log the accepted config changes of a resume and append them to ``out_dir/config_changes.jsonl``."""
    changes = {
        where: {"stored": _config_value(stored, where), "now": _config_value(trainer.config, where)}
        for where in changed
    }
    _log.warning("resuming %s with a changed config (accepted): %s", stem, changes)
    record: dict[str, Any] = {"step": step, "checkpoint": str(stem), "changes": changes}
    if new_networks:
        _log.warning("networks new since %s start from their initial state: %s", stem, list(new_networks))
        record["new_networks"] = list(new_networks)
    trainer.run_log.append_record("config_changes.jsonl", record)


def resume_from_latest(trainer: Trainer) -> None:
    """Load the newest valid checkpoint of ``trainer.checkpoints`` into ``trainer``, if there is one.

    Every rank reads the file (the run folder must be shared, as on one
    machine); only rank 0 restores the saved RNG states, which is harmless
    because the trainer re-seeds all RNGs at every step.

    Raises:
        CheckpointError: the stored config or batch size differs from the trainer's.
    """
    loaded = trainer.checkpoints.load_latest(device="cpu")
    if loaded is None:
        _log.info("no checkpoint in %s; starting fresh", trainer.checkpoints.directory)
        return
    stem, tensors, meta = loaded
    stored_config = meta.get("config", {})
    differences = config_differences(stored_config, trainer.config, defaults=trainer.config_defaults)
    accepted = [
        where
        for where in differences
        if where in trainer.accept_config_changes or where.rsplit(".", 1)[-1] in trainer.accept_config_changes
    ]
    refused = [where for where in differences if where not in accepted]
    if refused:
        raise CheckpointError(
            f"config of {stem}.json differs from this run at: {', '.join(refused[:10])}; "
            "use a new out_dir, the stored config, or accept the change with --accept-config-change FIELD"
        )
    # A network the checkpoint does not describe can only come from a deliberate config change.
    new_networks = [name for name in trainer.networks if name not in meta.get("networks", trainer.networks)]
    if new_networks and not accepted:
        raise CheckpointError(
            f"{stem}.json has no state for the networks {new_networks} of this run; "
            "use the stored config, or accept the config change that adds them "
            "with --accept-config-change FIELD"
        )
    if accepted:
        record_config_changes(trainer, stem, int(meta["step"]), stored_config, accepted, new_networks)
    if meta.get("batch_size") != trainer.batch_size:
        raise CheckpointError(
            f"{stem}.json was trained with batch_size {meta.get('batch_size')}, not {trainer.batch_size}"
        )
    if meta.get("world_size") != trainer.dist.world_size:
        _log.warning(
            "resuming a %s-process run on %s processes: per-rank randomness differs from an unbroken run",
            meta.get("world_size"),
            trainer.dist.world_size,
        )
    restore_checkpoint(trainer, tensors, meta, restore_rng=trainer.dist.is_main, new_networks=new_networks)
    trainer.step = int(meta["step"])
    trainer.resumed_from = trainer.step
    trainer.last_checkpoint = stem
    _log.info("resumed from %s (step %d, %.3f kimg)", stem, trainer.step, trainer.cur_nimg / 1000)
