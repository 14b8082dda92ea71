"""From a `headforge train` request to a running :class:`Trainer`, for any registered system.

The system contributes its config, networks and phases (a
:class:`~headforge.models.registry.TrainingPlan`); this module adds what is
common: the dataset and its checks, the output resolution taken from the data,
the run folder, the default lengths and intervals, and torchrun support (the
trainer reads torchrun's environment itself).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from headforge.data.dataset import HeadDataset, check_batch_size
from headforge.models.registry import ModelSpec, get_model_spec
from headforge.training.distributed import init_distributed
from headforge.training.schedules import kimg_to_steps
from headforge.training.trainer import Trainer

# Default run lengths (thousands of real images) when --kimg is not given.
DEFAULT_KIMG = {"tiny": 0.2, "small": 4000.0}
FALLBACK_KIMG = 25000.0  # EG3D's FFHQ schedule


@dataclass
class TrainRequest:
    """Everything `headforge train` was asked to do."""

    model: str
    data: Path
    out: Path
    preset: str = "tiny"
    kimg: float | None = None
    batch: int | None = None
    resume: bool = False
    accept_config_changes: tuple[str, ...] = ()
    skip_bad: bool = False
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    snapshot_every: int | None = None
    workers: int = 0
    mixed_precision: bool = False
    xflip: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    progress: bool | None = None


def resolve_config(spec: ModelSpec, preset: str, resolution: int, batch: int | None, overrides: dict) -> Any:
    """The preset with the dataset's output resolution, the batch size and user overrides applied."""
    if preset not in spec.presets:
        raise ValueError(
            f"model {spec.name!r} has no preset {preset!r}; choose from {', '.join(spec.presets)}"
        )
    values = dataclasses.asdict(spec.presets[preset])
    values["output_resolution"] = resolution
    if batch is not None:
        values["batch_size"] = batch
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ValueError(f"unknown config field(s) for {spec.name}: {', '.join(unknown)}")
    values.update(overrides)
    config = spec.config_from_dict(values)
    config.sr_factor  # noqa: B018 - raises a clear error when the data's resolution does not fit the preset
    return config


def open_dataset(spec: ModelSpec, request: TrainRequest) -> HeadDataset:
    """The training set, validated before any training starts."""
    dataset = HeadDataset(request.data, xflip=request.xflip, skip_bad=request.skip_bad)
    missing = [key for key in spec.required_dataset_keys if not getattr(dataset, f"has_{key}", False)]
    if missing:
        raise ValueError(f"{request.data}: model {spec.name!r} needs dataset key(s) {', '.join(missing)}")
    return dataset


def build_trainer(request: TrainRequest) -> Trainer:
    """Dataset, config, networks and phases of a request, assembled into a trainer."""
    spec = get_model_spec(request.model)
    dist = init_distributed(request.device)
    dataset = open_dataset(spec, request)
    config = resolve_config(spec, request.preset, dataset.resolution, request.batch, request.overrides)
    check_batch_size(dataset, config.batch_size, dist.world_size)
    if spec.build_dataset is not None:
        dataset = spec.build_dataset(config, dataset, request.seed)
    torch.manual_seed(request.seed)  # identical initial weights on every rank
    plan = spec.build_training(config, dataset, dist.device)
    kimg = request.kimg if request.kimg is not None else DEFAULT_KIMG.get(request.preset, FALLBACK_KIMG)
    every_10_kimg = max(1, kimg_to_steps(10.0, config.batch_size))
    return Trainer(
        networks=plan.networks,
        phases=plan.phases,
        dataset=dataset,
        batch_size=config.batch_size,
        total_kimg=kimg,
        out_dir=request.out,
        config={"model": spec.name, "model_config": config.to_dict()},
        config_defaults={"model_config": type(config)().to_dict()},
        ema_of=plan.ema_of,
        ema_kimg=plan.ema_kimg,
        ema_rampup=plan.ema_rampup,
        seed=request.seed,
        dist=dist,
        mixed_precision=request.mixed_precision,
        num_workers=request.workers,
        snapshot_every=request.snapshot_every or every_10_kimg,
        checkpoint_every=request.checkpoint_every or every_10_kimg,
        keep_checkpoints=request.keep_checkpoints,
        image_snapshot_fn=plan.image_snapshot_fn,
        resume=request.resume,
        accept_config_changes=request.accept_config_changes,
        max_steps=request.max_steps,
        on_step_start=plan.on_step_start,
        on_step_end=plan.on_step_end,
        progress=request.progress,
    )


def train(request: TrainRequest) -> dict[str, Any]:
    """Run a training request to the end (or until interrupted) and return the trainer's summary."""
    request.out.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(request)
    if trainer.dist.is_main:
        (request.out / "request.json").write_text(
            json.dumps(dataclasses.asdict(request), indent=2, default=str) + "\n"
        )
    return trainer.train()


class _BatchDataset(torch.utils.data.Dataset):
    """The samples of one collated batch as a dataset (for timing phases on a fixed batch)."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch
        self.xflip = False

    def __len__(self) -> int:
        return next(iter(self.batch.values())).shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.batch.items()}

    def labels_tensor(self, include_mirrored: bool = False) -> torch.Tensor:
        return self.batch["camera"].reshape(-1, 25)


def random_image_batch(config: Any, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images (b, 3, R, R) at the config's output resolution with FFHQ-like cameras (b, 25)."""
    from headforge.cameras import Camera, sample_ffhq_poses

    generator = torch.Generator().manual_seed(seed)
    resolution = config.output_resolution
    yaw, pitch = sample_ffhq_poses(batch, generator=generator)
    return {
        "image": torch.rand(batch, 3, resolution, resolution, generator=generator) * 2 - 1,
        "camera": Camera.orbit(yaw, pitch).to_label(),
    }


def build_benchmark_step(
    spec: ModelSpec, config: Any, batch: int, device: torch.device
) -> tuple[dict[str, Callable[[], Any]], dict[str, int]]:
    """One callable per phase (running it once on a random batch) and each phase's interval."""
    config = dataclasses.replace(config, batch_size=batch)
    make_batch = spec.benchmark_batch or random_image_batch
    dataset = _BatchDataset(make_batch(config, batch))
    plan = spec.build_training(config, dataset, device)
    out_dir = Path(tempfile.mkdtemp(prefix="headforge-bench-"))
    trainer = Trainer(
        networks=plan.networks,
        phases=plan.phases,
        dataset=dataset,
        batch_size=batch,
        total_kimg=0,
        out_dir=out_dir,
        ema_of=plan.ema_of,
        device=device,
        checkpoint_every=None,
        progress=False,
        tensorboard=False,
    )
    loaded = dataset.batch
    calls = {phase.name: (lambda name=phase.name: trainer.run_phase(name, loaded)) for phase in plan.phases}
    intervals = {phase.name: phase.interval for phase in plan.phases}
    return calls, intervals
