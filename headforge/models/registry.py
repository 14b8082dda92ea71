"""The systems headforge can train, by name.

A system is registered as a :class:`ModelSpec`: how to read its config, its
presets, how to build its networks and how to train them. The CLI and the
loaders look systems up here, so adding one never touches them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Everything the CLI needs to know about one system.

    ``build_training(config, networks, dataset, device)`` returns the
    trainer's phases (and optionally hooks) for this system.
    """

    name: str
    description: str
    presets: Mapping[str, Any]
    config_from_dict: Callable[[dict[str, Any]], Any]
    build_generator: Callable[[Any], nn.Module]
    build_discriminator: Callable[[Any], nn.Module]
    build_training: Callable[..., Any]
    required_dataset_keys: tuple[str, ...] = ()


# name -> "module:attribute" of its ModelSpec, imported on first use so that
# `headforge --help` stays fast and one system's imports never slow another's.
_SPEC_LOCATIONS: dict[str, str] = {
    "eg3d": "headforge.training.steps.eg3d:SPEC",
}


def available_models() -> list[str]:
    return sorted(_SPEC_LOCATIONS)


def get_model_spec(name: str) -> ModelSpec:
    """The registered system called ``name``; a clear error for unknown names."""
    if name not in _SPEC_LOCATIONS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    module_name, attribute = _SPEC_LOCATIONS[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)
