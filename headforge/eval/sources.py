"""What ``headforge eval`` scores: samples of a generator or a dataset, and the reference sets.

``run_eval`` (``headforge.eval.command``) loads the generator; these helpers
turn the CLI counts into the protocols' samples. Argument problems raise
``ValueError`` (the command prints them and exits with status 2).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch

from headforge.eval.consistency_protocols import (
    consistency_samples_from_eg3d,
    consistency_samples_from_nerffaceshop,
)
from headforge.eval.protocols import (
    EvalSamples,
    samples_from_dataset,
    samples_from_eg3d,
    samples_from_nerffaceshop,
)

__all__ = [
    "CONSISTENCY_CPU_COUNTS",
    "CONSISTENCY_METRICS",
    "CONSISTENCY_PAPER_COUNTS",
    "CPU_COUNTS",
    "PAPER_COUNTS",
    "Sources",
    "consistency_counts",
    "counts",
    "dataset_sources",
    "generator_sources",
]

#: identities x views of the papers' animation protocol (500 identities x 20 driving codes).
PAPER_COUNTS = (500, 20)
#: small counts for a CPU smoke evaluation.
CPU_COUNTS = (8, 4)
#: identities, animations, cameras and lights per identity of the consistency protocol:
#: NeRFFaceShop's TI (1,000 identities x 100 expressions) and 3DFaceShop's 10 poses and lights.
CONSISTENCY_PAPER_COUNTS = (1000, 100, 10, 10)
CONSISTENCY_CPU_COUNTS = (4, 4, 4, 3)
#: metrics scored on the consistency samples.
CONSISTENCY_METRICS = ("ti", "ds", "mv")


@dataclass
class Sources:
    """Everything ``evaluate`` scores.

    Attributes:
        samples: the evaluated images (FID, KID, APD, LE, LS, ID, AED).
        consistency: the TI / DS / MV samples (None: use ``samples``).
        reference_images: (M, 3, H, W) FID / KID reference, or None.
        reference_samples: a labelled reference dataset (DS normaliser, TI floor), or None.
    """

    samples: EvalSamples
    consistency: EvalSamples | None = None
    reference_images: torch.Tensor | None = None
    reference_samples: EvalSamples | None = None


def _given(value: int | None, default: int) -> int:
    """A count flag's value, or the default when absent (0 is a value: it is rejected, not replaced)."""
    return default if value is None else value


def counts(args: argparse.Namespace) -> tuple[int, int]:
    """(identities, views) of the main generator protocol (--preset, --identities, --views, --num-images)."""
    identities, views = CPU_COUNTS if args.preset == "cpu" else PAPER_COUNTS
    views = _given(args.views, views)
    identities = _given(args.identities, identities)
    if args.num_images:
        identities = max(1, math.ceil(args.num_images / views))
    if identities < 1 or views < 1:
        raise ValueError("--identities and --views must be positive")
    return identities, views


def consistency_counts(args: argparse.Namespace) -> tuple[int, int, int, int]:
    """(identities, animations, cameras, lights) per identity of the consistency protocol.

    Identities: --consistency-identities, else --identities, else the preset's.
    """
    identities, expressions, poses, lights = (
        CONSISTENCY_CPU_COUNTS if args.preset == "cpu" else CONSISTENCY_PAPER_COUNTS
    )
    identities = _given(args.consistency_identities, _given(args.identities, identities))
    expressions = _given(args.expressions, expressions)
    poses = _given(args.poses, poses)
    lights = _given(args.lights, lights)
    if min(identities, expressions, poses, lights) < 1:
        raise ValueError("--consistency-identities, --expressions, --poses and --lights must be positive")
    return identities, expressions, poses, lights


def generator_sources(
    generator: torch.nn.Module,
    model: str | None,
    args: argparse.Namespace,
    metrics: list[str],
    progress: bool,
) -> Sources:
    """Samples of an EG3D or NeRFFaceShop generator; ``--data`` is the reference (and the lights)."""
    if model not in ("eg3d", "nerffaceshop"):
        raise ValueError(f"--ckpt of model {model!r} is not supported (eg3d, nerffaceshop)")
    wants_main = any(name not in CONSISTENCY_METRICS for name in metrics)
    wants_consistency = any(name in CONSISTENCY_METRICS for name in metrics)
    needs_reference = "fid" in metrics or "kid" in metrics
    if model == "nerffaceshop" and not args.data:
        raise ValueError("a nerffaceshop --ckpt needs --data with SH labels (the lights)")
    reference = None
    if args.data and (needs_reference or model == "nerffaceshop" or wants_consistency):
        reference = samples_from_dataset(args.data, args.num_images, progress, spread=True)
    if model == "nerffaceshop" and reference.sh is None:
        raise ValueError("a nerffaceshop --ckpt needs --data with SH labels (the lights)")
    identities, views = counts(args)
    consistency_identities, expressions, poses, lights = consistency_counts(args)
    device, seed, psi = args.device, args.seed, args.truncation
    samples = consistency = None
    if model == "eg3d":
        if wants_main:
            samples = samples_from_eg3d(generator, identities, views, seed, psi, device, progress)
        if wants_consistency:
            consistency = consistency_samples_from_eg3d(
                generator, consistency_identities, max(2, poses), seed, psi, device, progress
            )
    else:
        if wants_main:
            samples = samples_from_nerffaceshop(
                generator, reference.sh, identities, views, seed, psi, device, progress
            )
        if wants_consistency:
            consistency = consistency_samples_from_nerffaceshop(
                generator,
                reference.sh,
                consistency_identities,
                expressions,
                poses,
                lights,
                seed,
                psi,
                device,
                progress,
            )
    if samples is None:
        samples = consistency
    elif consistency is not None:
        samples.source["consistency"] = consistency.source
    samples.source["ckpt"] = str(args.ckpt)
    if args.data:
        samples.source["data"] = str(args.data)
    return Sources(
        samples,
        consistency,
        reference.images if needs_reference and reference is not None else None,
        reference if wants_consistency else None,
    )


def dataset_sources(args: argparse.Namespace, metrics: list[str], progress: bool) -> Sources:
    """A dataset scored against its own labels; ``--reference`` (default: itself) for FID / KID."""
    samples = samples_from_dataset(args.data, args.num_images, progress, with_depth="mv" in metrics)
    needs_reference = "fid" in metrics or "kid" in metrics
    wants_reference_labels = "ti" in metrics or "ds" in metrics
    reference = None
    if args.reference and (needs_reference or wants_reference_labels):
        reference = samples_from_dataset(args.reference, args.num_images, progress, spread=True)
        samples.source["reference"] = str(args.reference)
    elif needs_reference:
        samples.source["reference"] = str(args.data)
    reference_images = None
    if needs_reference:
        reference_images = reference.images if reference is not None else samples.images
    return Sources(samples, None, reference_images, reference if wants_reference_labels else None)
