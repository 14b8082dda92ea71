"""The systems headforge can train, by name.

A system is registered as a :class:`ModelSpec`: how to read its config, its
presets, how to build its networks and how to train them. The CLI and the
loaders look systems up here, so adding one never touches them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Everything the CLI needs to know about one system.

    ``build_training(config, dataset, device)`` returns the system's
    :class:`TrainingPlan`. ``build_dataset(config, dataset, seed)``, when set,
    turns the checked image dataset into the one the system trains on (e.g.
    frame pairs); the launcher hands that to ``build_training`` and the trainer.

    For ``headforge bench``: ``generation_stages(generator, device)`` returns
    named zero-argument callables, each running one stage or control path at
    batch 1 (``"full"`` is the whole image); ``benchmark_batch(config, batch)``
    returns a random collated training batch shaped like the system's data.
    """

    name: str
    description: str
    presets: Mapping[str, Any]
    config_from_dict: Callable[[dict[str, Any]], Any]
    build_generator: Callable[[Any], nn.Module]
    build_discriminator: Callable[[Any], nn.Module]
    build_training: Callable[..., Any]
    required_dataset_keys: tuple[str, ...] = ()
    build_dataset: Callable[..., Any] | None = None
    generation_stages: Callable[..., dict[str, Callable[[], Any]]] | None = None
    benchmark_batch: Callable[..., dict[str, Any]] | None = None


@dataclass
class TrainingPlan:
    """What a system hands the generic trainer: networks, phases and EMA settings.

    ``networks`` holds every trained module and its EMA copies by name
    (``G``, ``G_ema``, ``D``, ...); ``phases`` are
    :class:`headforge.training.phases.Phase` objects.
    """

    networks: dict[str, nn.Module]
    phases: list[Any]
    ema_of: dict[str, str] = field(default_factory=dict)
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    image_snapshot_fn: Callable[[dict[str, nn.Module]], Any] | None = None
    on_step_start: Callable[[Any], None] | None = None
    on_step_end: Callable[[Any], None] | None = None


# name -> "module:attribute" of its ModelSpec, imported on first use so that
# `headforge --help` stays fast and one system's imports never slow another's.
_SPEC_LOCATIONS: dict[str, str] = {
    "eg3d": "headforge.training.steps.eg3d:SPEC",
    "nerffaceshop": "headforge.training.steps.nerffaceshop:SPEC",
}


def available_models() -> list[str]:
    return sorted(_SPEC_LOCATIONS)


def get_model_spec(name: str) -> ModelSpec:
    """The registered system called ``name``; a clear error for unknown names."""
    if name not in _SPEC_LOCATIONS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    module_name, attribute = _SPEC_LOCATIONS[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)
