"""The generic multi-phase GAN training loop shared by every system.

A system builds its networks and :class:`~headforge.training.phases.Phase`
list and calls ``Trainer(...).train()``. The trainer owns data iteration,
backward passes, gradient averaging across torchrun processes, optimiser
steps, EMA updates, logging, checkpoints and resume.

Determinism: the batch of step ``s`` depends only on ``(seed, s)`` (and the
rank's shard), every phase draws from a generator seeded by ``(seed, rank, s,
phase index)``, and the global torch/numpy/python RNGs are re-seeded from
``(seed, rank, s)`` at the start of every step. A run resumed from a checkpoint
therefore repeats an unbroken run bit for bit on CPU, on every rank, although
only rank 0's RNG states are written to the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from headforge.data.sampler import InfiniteShardedSampler, derive_seed
from headforge.training.checkpoint import CheckpointManager
from headforge.training.distributed import (
    DistContext,
    all_reduce_gradients,
    broadcast_module,
    init_distributed,
    is_distributed,
    reduce_scalar_dict,
)
from headforge.training.ema import ExponentialMovingAverage
from headforge.training.phases import (
    Phase,
    PhaseContext,
    StepInfo,
    make_adam,
    split_loss_output,
    validate_setup,
)
from headforge.training.run_log import RunLog
from headforge.training.schedules import kimg_to_steps
from headforge.training.trainer_state import (
    build_checkpoint,
    move_to_device,
    optimizer_keys,
    resume_from_latest,
)

__all__ = ["Trainer", "make_adam"]

_log = logging.getLogger("headforge.training")


class Trainer:
    """Runs ``phases`` over ``dataset`` until ``total_kimg`` thousand images (or ``max_steps``).

    Args:
        networks: every network by name: trainable ones (targets of phases),
            EMA copies (listed in ``ema_of``) and any others to checkpoint.
            Names must not contain ``.`` nor be ``opt`` / ``rng``.
        phases: run in order on each step whose index is a multiple of their interval.
        dataset: map-style dataset; items are collated by the DataLoader
            (dicts of tensors work). Must be deterministic per index.
        batch_size: global batch size (all ranks); must divide by the world size.
        total_kimg: length of training in thousands of images.
        out_dir: run folder (``checkpoints/``, ``tensorboard/``, ``stats.jsonl``, ``images/``).
        config: JSON-able description from which the networks can be rebuilt;
            stored in every checkpoint and compared on resume.
        config_defaults: the defaults of ``config``'s fields, same nesting: on
            resume, a field the checkpoint's config lacks (it was written before
            the field existed) is no change when its value here is the default.
        ema_of: ``{ema_name: source_name}``, e.g. ``{"G_ema": "G"}``.
        ema_kimg, ema_rampup: EMA half-life and ramp-up (see :mod:`~headforge.training.ema`).
        seed: base seed of everything random.
        device: training device; ``None`` = ``cuda:LOCAL_RANK`` if available, else CPU.
            Ignored when ``dist`` is given.
        dist: process context from :func:`init_distributed`; by default it is
            created here from torchrun's environment.
        mixed_precision: autocast (float16) with a GradScaler per phase on CUDA; ignored on CPU.
        num_workers: DataLoader worker processes.
        shuffle: shuffle the dataset each epoch.
        log_every: steps between logged scalars.
        snapshot_every: steps between image grids (``None`` = only at the end).
        checkpoint_every: steps between checkpoints (``None`` = only at the end).
            Convert kimg with :func:`~headforge.training.schedules.kimg_to_steps`.
        keep_checkpoints: checkpoints kept on disk.
        image_snapshot_fn: ``fn(networks) -> (N, 3, H, W)`` in [-1, 1], called under
            ``no_grad`` on rank 0; it should use fixed latents of its own.
        image_grid: ``(cols, rows)`` of the snapshot grid.
        resume: continue from the newest valid checkpoint in ``out_dir`` if any.
        accept_config_changes: config fields (dotted path or last name, e.g.
            ``superresolution_noise_mode``) that may differ from the stored config on
            resume; the run continues with the new values and ``config_changes.jsonl``
            in ``out_dir`` records the step and the old and new values.
        max_steps: stop after this many steps in total (tests, smoke runs).
        on_step_start, on_step_end: hooks called with a :class:`StepInfo` on every rank.
        progress: show a tqdm bar on rank 0 (``None`` = when stderr is a terminal).
        tensorboard: write TensorBoard event files.
    """

    def __init__(
        self,
        networks: Mapping[str, nn.Module],
        phases: Sequence[Phase],
        dataset: Dataset,
        batch_size: int,
        total_kimg: float,
        out_dir: str | Path,
        config: Mapping[str, Any] | None = None,
        *,
        config_defaults: Mapping[str, Any] | None = None,
        ema_of: Mapping[str, str] | None = None,
        ema_kimg: float = 10.0,
        ema_rampup: float | None = 0.05,
        seed: int = 0,
        device: str | torch.device | None = None,
        dist: DistContext | None = None,
        mixed_precision: bool = False,
        num_workers: int = 0,
        shuffle: bool = True,
        log_every: int = 10,
        snapshot_every: int | None = None,
        checkpoint_every: int | None = 500,
        keep_checkpoints: int = 2,
        image_snapshot_fn: Callable[[Mapping[str, nn.Module]], Tensor] | None = None,
        image_grid: tuple[int, int] | None = None,
        resume: bool = False,
        accept_config_changes: Sequence[str] = (),
        max_steps: int | None = None,
        on_step_start: Callable[[StepInfo], None] | None = None,
        on_step_end: Callable[[StepInfo], None] | None = None,
        progress: bool | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.dist = dist if dist is not None else init_distributed(device)
        self.device = self.dist.device
        self.networks = dict(networks)
        self.phases = list(phases)
        self.ema_of = dict(ema_of or {})
        validate_setup(self.networks, self.phases, self.ema_of, batch_size, self.dist.world_size)
        self.dataset = dataset
        self.batch_size = batch_size
        self.batch_size_per_rank = batch_size // self.dist.world_size
        self.total_steps = kimg_to_steps(total_kimg, batch_size)
        if max_steps is not None:
            self.total_steps = min(self.total_steps, max_steps)
        self.total_kimg = total_kimg
        self.out_dir = Path(out_dir)
        # The JSON round trip makes the stored and the live config comparable (tuples -> lists).
        self.config = json.loads(json.dumps(dict(config or {})))
        self.config_defaults = json.loads(json.dumps(dict(config_defaults or {})))
        self.ema = ExponentialMovingAverage(ema_kimg, ema_rampup)
        self.seed = seed
        self.use_amp = mixed_precision and self.device.type == "cuda"
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.log_every = max(1, log_every)
        self.snapshot_every = snapshot_every
        self.checkpoint_every = checkpoint_every
        self.image_snapshot_fn = image_snapshot_fn
        self.image_grid = image_grid
        self.resume = resume
        self.accept_config_changes = tuple(accept_config_changes)
        self.on_step_start = on_step_start
        self.on_step_end = on_step_end
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", keep=keep_checkpoints)
        self.run_log = RunLog(self.out_dir, enabled=self.dist.is_main, tensorboard=tensorboard)
        self.optimizers = optimizer_keys(self.phases)
        self.scalers = {p.name: torch.amp.GradScaler("cuda") for p in self.phases} if self.use_amp else {}
        self.step = 0
        self.resumed_from: int | None = None
        self.last_checkpoint: Path | None = None
        self.last_scalars: dict[str, float] = {}
        self._pending: dict[str, list[Tensor]] = {}
        self._stop_requested = False
        for name, module in self.networks.items():
            module.to(self.device)
            if name in self.ema_of:
                module.requires_grad_(False).eval()
            broadcast_module(module)
        # Flags chosen by the caller (frozen parts stay frozen); phases only ever switch grads off.
        self._grad_flags = {
            name: [p.requires_grad for p in m.parameters()] for name, m in self.networks.items()
        }

    @property
    def cur_nimg(self) -> int:
        """Images shown so far (all ranks): ``step * batch_size``."""
        return self.step * self.batch_size

    # ------------------------------------------------------------------ resume / checkpoint

    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint of the current step (rank 0 only) and return its stem."""
        if not self.dist.is_main:
            return None
        tensors, meta = build_checkpoint(self)
        self.last_checkpoint = self.checkpoints.save(self.step, tensors, meta)
        return self.last_checkpoint

    # ------------------------------------------------------------------ one step

    def _seed_global_rngs(self, step: int) -> None:
        seed = derive_seed(self.seed, self.dist.rank, step, "global")
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _only_grads_of(self, trained: str | None) -> None:
        """Give ``trained`` its caller-chosen grad flags and switch off all others (``None`` restores all)."""
        for name, module in self.networks.items():
            for param, flag in zip(module.parameters(), self._grad_flags[name]):
                param.requires_grad_(False if trained is not None and name != trained else flag)
        if trained is not None:  # a parameter shared with another network must stay trainable
            for param, flag in zip(self.networks[trained].parameters(), self._grad_flags[trained]):
                param.requires_grad_(flag)

    def _run_phase(self, index: int, phase: Phase, batch: Any, scalars: dict[str, Tensor]) -> None:
        step = self.step
        self._only_grads_of(phase.module)
        phase.optimizer.zero_grad(set_to_none=True)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.seed, self.dist.rank, step, index))
        ctx = PhaseContext(
            phase=phase.name,
            step=step,
            cur_nimg=self.cur_nimg,
            batch=batch,
            batch_size=self.batch_size_per_rank,
            generator=generator,
            device=self.device,
            gain=phase.interval,
            networks=self.networks,
            dist=self.dist,
        )
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.use_amp else contextlib.nullcontext()
        with autocast:
            output = phase.loss_fn(ctx)
        loss, extras = split_loss_output(output, phase.name)
        scaler = self.scalers.get(phase.name)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        params = [p for group in phase.optimizer.param_groups for p in group["params"]]
        # With a GradScaler, infs must survive the average so every rank skips the same step.
        all_reduce_gradients(params, self.dist.world_size, scrub_nonfinite=scaler is None)
        if scaler is not None:
            scaler.step(phase.optimizer)
            scaler.update()
        else:
            phase.optimizer.step()
        scalars[f"Loss/{phase.name}"] = loss.detach().float()
        for key, value in extras.items():
            value = value.detach().float().mean() if isinstance(value, Tensor) else torch.tensor(float(value))
            scalars[f"{phase.name}/{key}"] = value

    def run_phase(self, name: str, batch: Any) -> dict[str, float]:
        """Run one phase by name on a batch (moved to the device) and return its scalars.

        Used by benchmarks to time phases one at a time; training uses ``train()``.
        """
        for index, phase in enumerate(self.phases):
            if phase.name == name:
                scalars: dict[str, Tensor] = {}
                self._run_phase(index, phase, move_to_device(batch, self.device), scalars)
                self._only_grads_of(None)
                return {tag: float(value) for tag, value in scalars.items()}
        raise KeyError(f"no phase named {name!r}; phases: {[p.name for p in self.phases]}")

    def _train_step(self, batch: Any) -> dict[str, Tensor]:
        self._seed_global_rngs(self.step)
        if self.on_step_start is not None:
            self.on_step_start(StepInfo(self.step, self.cur_nimg, self.networks, self))
        scalars: dict[str, Tensor] = {}
        timing_step = (self.step + 1) % self.log_every == 0
        for index, phase in enumerate(self.phases):
            if self.step % phase.interval:
                continue
            start = time.perf_counter()
            self._run_phase(index, phase, batch, scalars)
            if timing_step:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                scalars[f"Timing/{phase.name}_sec"] = torch.tensor(time.perf_counter() - start)
        self._only_grads_of(None)
        for ema_name, source in self.ema_of.items():
            beta = self.ema.update(
                self.networks[ema_name], self.networks[source], self.batch_size, self.cur_nimg
            )
            scalars[f"Progress/ema_beta_{ema_name}"] = torch.tensor(beta)
        self.step += 1
        if self.on_step_end is not None:
            self.on_step_end(StepInfo(self.step, self.cur_nimg, self.networks, self, scalars))
        return scalars

    # ------------------------------------------------------------------ logging

    def _log_scalars(self, seconds_per_step: float) -> None:
        local = {tag: torch.stack(values).mean() for tag, values in self._pending.items()}
        self._pending.clear()
        averaged = reduce_scalar_dict(local, self.dist.world_size, self.device)
        averaged["Progress/kimg"] = self.cur_nimg / 1000
        averaged["Progress/sec_per_step"] = seconds_per_step
        averaged["Progress/kimg_per_sec"] = self.batch_size / 1000 / max(seconds_per_step, 1e-12)
        self.last_scalars = averaged
        self.run_log.scalars(self.step, averaged)
        if self.dist.is_main:
            losses = " ".join(
                f"{k.removeprefix('Loss/')} {v:.4f}" for k, v in averaged.items() if k.startswith("Loss/")
            )
            _log.info(
                "step %d/%d kimg %.2f %s (%.3f s/step)",
                self.step,
                self.total_steps,
                self.cur_nimg / 1000,
                losses,
                seconds_per_step,
            )

    def _snapshot_images(self) -> None:
        if self.image_snapshot_fn is None or not self.dist.is_main:
            return
        with torch.no_grad():
            images = self.image_snapshot_fn(self.networks)
        self.run_log.images("fakes", self.step, images, self.image_grid)

    # ------------------------------------------------------------------ the loop

    def _request_stop(self, signum: int, _frame: Any) -> None:
        _log.warning(
            "received signal %d: finishing the current step, saving and stopping "
            "(send it again to abort without saving)",
            signum,
        )
        self._stop_requested = True
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop (all ranks must stop at the same step)."""
        if self.dist.world_size == 1 or not is_distributed():
            return self._stop_requested
        flag = torch.tensor([float(self._stop_requested)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def _make_loader(self) -> DataLoader:
        sampler = InfiniteShardedSampler(
            len(self.dataset),
            batch_size_per_rank=self.batch_size_per_rank,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            seed=self.seed,
            shuffle=self.shuffle,
            start_step=self.step,
        )
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size_per_rank,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.num_workers > 0,
            # A private generator keeps DataLoader start-up from consuming the global torch RNG.
            generator=torch.Generator().manual_seed(derive_seed(self.seed, self.dist.rank, "loader")),
        )

    def _loop(self) -> bool:
        """Run steps until the end or an agreed stop; returns whether training was interrupted."""
        saved_step = self.step if self.resumed_from is not None else None
        snapshot_step = None
        interrupted = False
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.progress and self.dist.is_main),
        )
        batches = iter(self._make_loader())
        interval_start, interval_steps = time.perf_counter(), 0
        try:
            while self.step < self.total_steps:
                if self._stop_agreed():
                    interrupted = True
                    break
                batch = move_to_device(next(batches), self.device)
                for tag, value in self._train_step(batch).items():
                    self._pending.setdefault(tag, []).append(value)
                interval_steps += 1
                bar.update(1)
                if self.step % self.log_every == 0:
                    self._log_scalars((time.perf_counter() - interval_start) / interval_steps)
                    bar.set_postfix(
                        {
                            k.removeprefix("Loss/"): f"{v:.3f}"
                            for k, v in self.last_scalars.items()
                            if k.startswith("Loss/")
                        }
                    )
                    interval_start, interval_steps = time.perf_counter(), 0
                if self.snapshot_every and self.step % self.snapshot_every == 0:
                    self._snapshot_images()
                    snapshot_step = self.step
                if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                    self.save_checkpoint()
                    saved_step = self.step
        finally:
            bar.close()
        if self._pending:
            self._log_scalars((time.perf_counter() - interval_start) / max(interval_steps, 1))
        if snapshot_step != self.step and not interrupted:
            self._snapshot_images()
        if saved_step != self.step:
            self.save_checkpoint()
        return interrupted

    def train(self) -> dict[str, Any]:
        """Train to ``total_kimg`` / ``max_steps`` and return a summary.

        A first SIGINT/SIGTERM stops after the current step with a checkpoint;
        a second one aborts immediately without saving.

        Returns:
            ``{"steps", "kimg", "seconds", "losses" (last logged scalars), "interrupted",
            "resumed_from" (step or None), "checkpoint" (stem of the last checkpoint or None)}``.
        """
        started = time.perf_counter()
        if self.resume:
            resume_from_latest(self)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                handlers[signum] = signal.signal(signum, self._request_stop)
        try:
            interrupted = self._loop()
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            self.run_log.close()
        return {
            "steps": self.step,
            "kimg": self.cur_nimg / 1000,
            "seconds": time.perf_counter() - started,
            "losses": {k: v for k, v in self.last_scalars.items() if k.startswith("Loss/")},
            "interrupted": interrupted,
            "resumed_from": self.resumed_from,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint is not None else None,
        }
