"""Export a trained generator for inference: G_ema only, optionally float16, no optimiser or D state.

A training checkpoint holds G, G_ema, D, both optimisers' moments and the RNG
state (what exact resuming needs). Applications need only G_ema and the model
config, so an export keeps those, in the same safetensors + JSON pair format
(``headforge.training.checkpoint``): :func:`headforge.apps.loading.load_generator`
reads exports and training checkpoints alike. Float16 storage halves the size;
the weights are cast back to float32 on load (``load_state_dict`` copies into
the module's dtype), which changes images by float16 rounding only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from headforge.training.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint

__all__ = ["EXPORT_KIND", "export_generator", "add_export_parser", "run_export"]

#: ``meta["kind"]`` of an export (training checkpoints have none).
EXPORT_KIND = "generator-export"
#: meta keys of the training checkpoint carried into the export: the model and its training provenance.
_PROVENANCE_KEYS = ("model", "config", "step", "kimg", "batch_size", "seed", "headforge_version", "losses")


def export_generator(
    checkpoint: str | Path,
    out: str | Path,
    half: bool = False,
    network: str = "G_ema",
    note: dict[str, Any] | None = None,
) -> Path:
    """Write ``network``'s tensors (as ``G_ema.*``) and the model config of a checkpoint to ``out``.

    Args:
        checkpoint: a run folder (its newest valid checkpoint), a checkpoint stem or either file.
        out: destination stem or ``.safetensors`` path; ``.safetensors`` and ``.json`` are written.
        half: store floating-point tensors as float16.
        network: which network to export (``G_ema``; ``G`` for runs without an EMA).
        note: extra JSON-able provenance (e.g. the exact training command and wall time).

    Returns:
        The stem written.

    Raises:
        CheckpointError / FileNotFoundError: the checkpoint is missing or damaged (named).
        ValueError: the checkpoint has no tensors under ``network``.
    """
    stem = resolve_checkpoint(checkpoint)
    tensors, meta = load_checkpoint(stem)
    prefix = f"{network}."
    selected = {name: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
    if not selected:
        networks = sorted({name.split(".", 1)[0] for name in tensors})
        raise ValueError(f"{stem}.safetensors has no {network!r} tensors (it has {', '.join(networks)})")
    exported = {}
    for name, tensor in selected.items():
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        # Always stored under G_ema so that loaders pick the exported network.
        exported["G_ema." + name[len(prefix) :]] = tensor
    export_meta = {key: meta[key] for key in _PROVENANCE_KEYS if key in meta}
    export_meta.update(
        kind=EXPORT_KIND,
        network=network,
        dtype="float16" if half else "float32",
        source_checkpoint=str(stem),
        exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        parameters=int(sum(t.numel() for t in exported.values())),
        note=note or {},
    )
    out = Path(out)
    if out.suffix in (".safetensors", ".json"):
        out = out.with_suffix("")
    return save_checkpoint(out, exported, export_meta)


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``headforge export --ckpt RUN --out STEM [--half]``."""
    parser = subparsers.add_parser(
        "export",
        help="write a trained generator's G_ema alone (optionally float16) for the apps",
        description="Export the EMA generator and model config of a training checkpoint (no D, no "
        "optimiser state) as a safetensors + JSON pair that every app loads like a checkpoint.",
    )
    parser.add_argument("--ckpt", required=True, help="run folder or checkpoint (.safetensors/.json/stem)")
    parser.add_argument("--out", required=True, help="destination stem or .safetensors path")
    parser.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    parser.add_argument("--network", default="G_ema", help="network to export (default G_ema)")
    parser.add_argument("--command-note", default=None, help="the training command, recorded in the JSON")
    parser.set_defaults(run=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    note = {"training_command": args.command_note} if args.command_note else None
    stem = export_generator(args.ckpt, args.out, half=args.half, network=args.network, note=note)
    size = stem.with_suffix(".safetensors").stat().st_size
    print(f"exported {args.network} to {stem}.safetensors ({size / 2**20:.1f} MB) and {stem}.json")
    return 0
