"""Flatten training state (modules, optimisers, RNGs) into safetensors-ready tensors + JSON metadata.

Each ``flatten_*`` returns tensors keyed under a prefix (contiguous CPU copies
that share no storage, as safetensors requires) and, where needed, a JSON-able
dict; the matching ``load_*``/``restore_*`` reverses it. Key layout:

- modules:    ``PREFIX.<state_dict key>``           e.g. ``G.mapping.fc0.weight``
- optimisers: ``PREFIX.state.<param index>.<key>``  e.g. ``opt.G.state.3.exp_avg``;
  ``param_groups`` (lr, betas, ...) and non-tensor state go to JSON.
- RNGs:       ``rng.torch_cpu``, ``rng.cuda.<device>``, ``rng.numpy_mt19937``,
  ``rng.python_mt``, ``rng.generator.<name>``; scalars go to JSON.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "capture_rng_state",
    "flatten_module_state",
    "flatten_optimizer_state",
    "load_module_state",
    "load_optimizer_state",
    "restore_rng_state",
    "tensors_with_prefix",
]

_JSON_SCALARS = (bool, int, float, str, type(None))


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not match what is being restored."""


def _cpu_copy(tensor: Tensor) -> Tensor:
    """A contiguous CPU tensor owning its own storage (safetensors rejects shared or strided ones)."""
    return tensor.detach().to("cpu", copy=True).contiguous()


def tensors_with_prefix(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries whose key starts with ``prefix``, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def flatten_module_state(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    """``module.state_dict()`` as ``{prefix + key: CPU tensor}`` (tied weights become separate copies).

    Args:
        module: any module.
        prefix: key prefix including the trailing dot, e.g. ``"G."``.
    """
    return {prefix + key: _cpu_copy(value) for key, value in module.state_dict().items()}


def load_module_state(
    module: nn.Module, tensors: Mapping[str, Tensor], prefix: str, strict: bool = True
) -> None:
    """Load the ``prefix``-ed tensors of a checkpoint into ``module`` (copied to its device and dtype).

    Raises:
        CheckpointError: no tensor has the prefix, or (``strict``) keys are missing or unexpected.
    """
    state = tensors_with_prefix(tensors, prefix)
    if not state:
        raise CheckpointError(f"checkpoint has no tensors under prefix {prefix!r}")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches raise even when not strict
        raise CheckpointError(
            f"cannot load tensors under {prefix!r} into {type(module).__name__}: {error}"
        ) from error
    if strict and (result.missing_keys or result.unexpected_keys):
        raise CheckpointError(
            f"checkpoint tensors under {prefix!r} do not match {type(module).__name__}: "
            f"missing {result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}"
        )


def _json_value(value: Any, where: str) -> Any:
    """``value`` with tuples turned into lists; raises when it is not JSON-able."""
    if isinstance(value, (tuple, list)):
        return [_json_value(item, where) for item in value]
    if isinstance(value, _JSON_SCALARS):
        return value
    raise CheckpointError(f"cannot store {where} of type {type(value).__name__} in checkpoint JSON")


def flatten_optimizer_state(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and JSON metadata.

    Per-parameter tensors (Adam: ``exp_avg``, ``exp_avg_sq``, ``step``) become
    ``{prefix}state.{index}.{key}``; tensor-valued group hyper-parameters become
    ``{prefix}group.{g}.{key}``; everything else goes into the returned dict.

    Args:
        optimizer: any ``torch.optim`` optimiser.
        prefix: key prefix including the trailing dot, e.g. ``"opt.G."``.

    Returns:
        ``(tensors, meta)`` with ``meta = {"param_groups": [...], "state_scalars": {...}}``.
    """
    state_dict = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    state_scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}state.{index}.{key}"] = _cpu_copy(value)
            else:
                state_scalars.setdefault(str(index), {})[key] = _json_value(value, f"optimizer state {key!r}")
    groups = []
    for group_index, group in enumerate(state_dict["param_groups"]):
        json_group = {}
        for key, value in group.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}group.{group_index}.{key}"] = _cpu_copy(value)
            else:
                json_group[key] = _json_value(value, f"optimizer hyper-parameter {key!r}")
        groups.append(json_group)
    return tensors, {"param_groups": groups, "state_scalars": state_scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    prefix: str,
    keep_live_hyperparameters: bool = False,
) -> None:
    """Restore an optimiser saved by :func:`flatten_optimizer_state`.

    State tensors are moved to each parameter's device by
    ``Optimizer.load_state_dict``; list-valued hyper-parameters become tuples
    where the live optimiser uses tuples (e.g. Adam's ``betas``).

    With ``keep_live_hyperparameters`` only the per-parameter state (moments,
    step counts) comes from the checkpoint, and each group keeps the live
    optimiser's hyper-parameters (lr, betas, eps, ...): a trainer builds its
    optimisers from the current config, so a resumed run with an accepted
    change of a learning rate trains at the new rate (``load_state_dict``
    alone would bring the stored one back).

    Raises:
        CheckpointError: the saved groups do not fit this optimiser.
    """
    state: dict[int, dict[str, Any]] = {}
    group_tensors: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors_with_prefix(tensors, prefix).items():
        kind, index, key = name.split(".", 2)
        if kind == "state":
            state.setdefault(int(index), {})[key] = value.clone()
        elif kind == "group":
            group_tensors.setdefault(int(index), {})[key] = value.clone()
    for index, scalars in meta.get("state_scalars", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    live_groups = optimizer.param_groups
    saved_groups = meta["param_groups"]
    if len(saved_groups) != len(live_groups):
        raise CheckpointError(
            f"optimizer under {prefix!r} has {len(live_groups)} parameter groups, "
            f"checkpoint has {len(saved_groups)}"
        )
    groups = []
    for group_index, (saved, live) in enumerate(zip(saved_groups, live_groups)):
        group = {
            key: tuple(value) if isinstance(live.get(key), tuple) else value for key, value in saved.items()
        }
        group.update(group_tensors.get(group_index, {}))
        if keep_live_hyperparameters:
            group.update({key: value for key, value in live.items() if key != "params"})
        groups.append(group)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"cannot restore optimizer under {prefix!r}: {error}") from error


def capture_rng_state(
    generators: Mapping[str, torch.Generator] | None = None, prefix: str = "rng."
) -> tuple[dict[str, Tensor], dict]:
    """Snapshot every random number generator a training run touches.

    Covers torch's CPU generator, every CUDA device's generator (when CUDA is
    available), numpy's global MT19937, Python's ``random`` and the given named
    ``torch.Generator`` objects.

    Returns:
        ``(tensors, meta)``: state vectors as tensors and their scalars as JSON.
    """
    tensors = {f"{prefix}torch_cpu": torch.get_rng_state().clone()}
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    for device_index, cuda_state in enumerate(cuda_states):
        tensors[f"{prefix}cuda.{device_index}"] = cuda_state.clone()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached_gauss = np.random.get_state()
    tensors[f"{prefix}numpy_mt19937"] = torch.from_numpy(np_keys.astype(np.int64))
    py_version, py_internal, py_gauss_next = random.getstate()
    tensors[f"{prefix}python_mt"] = torch.tensor(py_internal, dtype=torch.int64)
    for name, generator in (generators or {}).items():
        tensors[f"{prefix}generator.{name}"] = generator.get_state().clone()
    meta = {
        "cuda_devices": len(cuda_states),
        "numpy": {
            "kind": np_kind,
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached_gauss),
        },
        "python": {"version": py_version, "gauss_next": py_gauss_next},
        "generators": sorted(generators or {}),
    }
    return tensors, meta


def restore_rng_state(
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    generators: Mapping[str, torch.Generator] | None = None,
    prefix: str = "rng.",
) -> None:
    """Restore the generators captured by :func:`capture_rng_state`.

    CUDA states are restored only when the number of visible devices matches
    (otherwise they are skipped: a CPU-only resume of a GPU run is allowed).

    Raises:
        CheckpointError: a requested named generator is not in the checkpoint.
    """
    torch.set_rng_state(tensors[f"{prefix}torch_cpu"])
    cuda_states = [tensors[f"{prefix}cuda.{i}"] for i in range(int(meta.get("cuda_devices", 0)))]
    if cuda_states and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
        torch.cuda.set_rng_state_all(cuda_states)
    np_meta = meta["numpy"]
    np_keys = tensors[f"{prefix}numpy_mt19937"].numpy().astype(np.uint32)
    np.random.set_state(
        (np_meta["kind"], np_keys, np_meta["pos"], np_meta["has_gauss"], np_meta["cached_gaussian"])
    )
    py_meta = meta["python"]
    py_internal = tuple(int(v) for v in tensors[f"{prefix}python_mt"].tolist())
    random.setstate((py_meta["version"], py_internal, py_meta["gauss_next"]))
    for name, generator in (generators or {}).items():
        key = f"{prefix}generator.{name}"
        if key not in tensors:
            raise CheckpointError(f"checkpoint has no state for the random generator {name!r}")
        generator.set_state(tensors[key])
