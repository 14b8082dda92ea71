"""`headforge eval`: image-quality and control metrics of a checkpoint or a dataset.

Two modes:

- ``--ckpt CKPT --data DIR``: sample the generator (identities x views; see
  ``protocols``), score FID / KID against the images of ``DIR`` and the control
  metrics against what the generator was asked for.
- ``--data DIR [--reference DIR]``: score a dataset's images against another
  dataset (FID / KID; ``--reference`` defaults to ``--data`` itself) and its
  images against its own labels (APD, LE, LS, ID, AED): with ground-truth
  renders this is the floor of each figure (the estimators' own error).

The consistency metrics (TI, DS, MV) of a checkpoint use a protocol of their
own (``headforge.eval.consistency_protocols``: identities x animations,
lights and paired views); of a dataset, its identity / clip ids, the groups
its labels imply and its depth maps (the studio's ``multiview`` preset gives
MV's ground-truth bracket, ``lightstage`` DS's light groups).

Writes ``--out`` (JSON) and the same name with ``.md`` (a Markdown table).
Metric definitions: ``headforge.eval.protocols`` and docs/metrics.md.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import torch

from headforge.apps.loading import load_generator
from headforge.eval.consistency_scores import DS_NAMES, score_ds, score_mv, score_ti
from headforge.eval.estimators.api import EstimatorQualityWarning, load_estimator
from headforge.eval.estimators.targets import MOUTH_LANDMARKS, expression_offsets
from headforge.eval.features import HeadforgeFeatureNet
from headforge.eval.frechet import frechet_distance_from_features
from headforge.eval.inception import InceptionV3Features
from headforge.eval.kid import kernel_inception_distance
from headforge.eval.protocols import (
    METRICS,
    EvalSamples,
    batched,
    expression_distance,
    identity_consistency,
    landmark_offset_distance,
    lighting_error,
    lighting_stability,
    parse_metrics,
    pose_distance,
    run_batched,
)
from headforge.eval.report import write_report
from headforge.eval.reprojection import DEFAULT_DEPTH_TOLERANCE, DEFAULT_SURFACE_THRESHOLD
from headforge.eval.sources import (
    CONSISTENCY_CPU_COUNTS,
    CONSISTENCY_METRICS,
    CONSISTENCY_PAPER_COUNTS,
    CPU_COUNTS,
    PAPER_COUNTS,
    consistency_counts,
    counts,
    dataset_sources,
    generator_sources,
)

__all__ = [
    "CONSISTENCY_CPU_COUNTS",
    "CONSISTENCY_METRICS",
    "CONSISTENCY_PAPER_COUNTS",
    "CPU_COUNTS",
    "PAPER_COUNTS",
    "add_eval_parser",
    "evaluate",
    "run_eval",
]


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on a subparsers object; the handler is ``run_eval`` (``set_defaults(run=...)``)."""
    parser = subparsers.add_parser(
        "eval",
        help="FID / KID, control (APD, LE, LS, ID, AED) and consistency (TI, DS, MV) metrics "
        "of a checkpoint or dataset",
    )
    parser.add_argument("--ckpt", help="generator checkpoint (run folder or stem); omit to evaluate --data")
    parser.add_argument("--data", help="dataset: FID/KID reference with --ckpt, the evaluated set without")
    parser.add_argument("--reference", help="reference dataset for FID/KID without --ckpt (default: --data)")
    parser.add_argument("--metrics", default="fid,kid,apd,id", help=f"comma list of {','.join(METRICS)}")
    parser.add_argument("--out", required=True, help="report JSON path (a .md table is written next to it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of latents, cameras and KID subsets")
    parser.add_argument(
        "--num-images",
        type=int,
        help="cap on dataset images / generated images (a reference dataset's are spread evenly "
        "over all of it; an evaluated dataset's are its first)",
    )
    parser.add_argument("--identities", type=int, help=f"generated identities (default {PAPER_COUNTS[0]})")
    parser.add_argument("--views", type=int, help=f"views per generated identity (default {PAPER_COUNTS[1]})")
    paper, cpu = CONSISTENCY_PAPER_COUNTS, CONSISTENCY_CPU_COUNTS
    parser.add_argument(
        "--consistency-identities",
        type=int,
        help=f"identities of the TI/DS/MV protocol (default --identities, else {paper[0]}; cpu {cpu[0]})",
    )
    parser.add_argument(
        "--expressions",
        type=int,
        help=f"animations per identity for TI and DS (default {paper[1]}; cpu {cpu[1]})",
    )
    parser.add_argument(
        "--poses",
        type=int,
        help=f"paired cameras per identity for DS and MV (default {paper[2]}; cpu {cpu[2]})",
    )
    parser.add_argument(
        "--lights", type=int, help=f"lights per identity for DS (default {paper[3]}; cpu {cpu[3]})"
    )
    parser.add_argument(
        "--mv-depth-tolerance",
        type=float,
        default=DEFAULT_DEPTH_TOLERANCE,
        help="MV: depth disagreement (world units) beyond which a reprojected point counts as occluded",
    )
    parser.add_argument(
        "--mv-opacity",
        type=float,
        default=DEFAULT_SURFACE_THRESHOLD,
        help="MV: minimum rendered opacity of a compared pixel",
    )
    parser.add_argument("--preset", choices=("paper", "cpu"), default="paper", help="default counts")
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi of the generator")
    parser.add_argument(
        "--inception", help="FID Inception weights file (.pth/.safetensors) instead of the default net"
    )
    parser.add_argument("--kid-subsets", type=int, default=100, help="KID subset rounds")
    parser.add_argument("--kid-subset-size", type=int, default=1000, help="KID rows per subset")
    parser.add_argument("--batch", type=int, default=32, help="images per network batch")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run_eval)
    return parser


def _feature_network(inception: str | None, device: str) -> tuple[torch.nn.Module, str]:
    if inception:
        return InceptionV3Features.from_file(inception).to(device).eval(), "inception"
    return HeadforgeFeatureNet().to(device), "headforge-net"


def _estimator(kind: str, device: str) -> tuple[Any, str | None]:
    """Load an estimator; returns it and the EstimatorQualityWarning message, if any."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EstimatorQualityWarning)
        estimator = load_estimator(kind, device=device)
    messages = [str(w.message) for w in caught if issubclass(w.category, EstimatorQualityWarning)]
    return estimator, (messages[0] if messages else None)


def _missing(note: str) -> dict[str, Any]:
    return {"value": float("nan"), "reliable": False, "note": note}


def evaluate(
    samples: EvalSamples,
    metrics: list[str],
    reference_images: torch.Tensor | None = None,
    seed: int = 0,
    inception: str | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
    consistency: EvalSamples | None = None,
    reference_samples: EvalSamples | None = None,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
    surface_threshold: float = DEFAULT_SURFACE_THRESHOLD,
) -> dict[str, dict[str, Any]]:
    """Score ``samples``; returns metric name -> {value, reliable, note, ...}.

    A metric the source cannot support (no labels, no reference) gets value
    NaN and a note saying why, rather than an error: a checkpoint report then
    still shows everything else. TI, DS and MV are scored on ``consistency``
    (default: ``samples``); ``reference_samples`` (a labelled dataset)
    normalises DS and gives TI's estimator floor. ``ds`` is reported as three
    entries, ``ds_expression``, ``ds_pose`` and ``ds_light``, in its place.
    """
    results: dict[str, dict[str, Any]] = {}
    estimators: dict[str, tuple[Any, str | None]] = {}
    estimate_cache: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    def estimate_images(kind: str, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], str | None]:
        # Cached per (kind, image set): DS, TI and APD may ask for the same estimates.
        if kind not in estimators:
            estimators[kind] = _estimator(kind, device)
        estimator, warning = estimators[kind]
        key = (kind, id(images))
        if key not in estimate_cache:
            outputs: dict[str, list[torch.Tensor]] = {}
            for batch in batched(images, batch_size, progress, f"{kind} estimator"):
                for name, value in estimator(batch.to(device)).items():
                    outputs.setdefault(name, []).append(value.cpu())
            estimate_cache[key] = {name: torch.cat(values) for name, values in outputs.items()}
        return estimate_cache[key], warning

    def estimate(kind: str) -> tuple[dict[str, torch.Tensor], str | None]:
        return estimate_images(kind, samples.images)

    def note_of(warning: str | None, text: str) -> str:
        return f"UNRELIABLE: {warning}. {text}" if warning else text

    if "fid" in metrics or "kid" in metrics:
        if reference_images is None:
            for name in ("fid", "kid"):
                if name in metrics:
                    results[name] = _missing("no reference images (pass --data)")
        else:
            network, network_name = _feature_network(inception, device)
            features = run_batched(network, samples.images, device, "features", batch_size, progress)
            reference = run_batched(
                network, reference_images, device, "reference features", batch_size, progress
            )
            counts = f"{features.shape[0]} vs {reference.shape[0]} images, features: {network_name}"
            if "fid" in metrics:
                fid = frechet_distance_from_features(features, reference)
                results["fid"] = {"value": fid, "reliable": True, "network": network_name, "note": counts}
            if "kid" in metrics:
                rng = torch.Generator().manual_seed(seed)
                mean, std = kernel_inception_distance(features, reference, kid_subsets, kid_subset_size, rng)
                results["kid"] = {
                    "value": mean,
                    "std": std,
                    "reliable": True,
                    "network": network_name,
                    "note": counts,
                }
    if "apd" in metrics:
        if samples.pose is None:
            results["apd"] = _missing("the source has no requested head pose")
        else:
            outputs, warning = estimate("pose")
            estimated = torch.stack([outputs["yaw"], outputs["pitch"], outputs["roll"]], dim=1)
            results["apd"] = {
                "value": pose_distance(samples.pose, estimated),
                "apd_no_roll": pose_distance(samples.pose, estimated, include_roll=False),
                "reliable": warning is None,
                "note": note_of(warning, "radians; apd_no_roll is Next3D's APD* (yaw, pitch)"),
            }
    if ("le" in metrics or "ls" in metrics) and samples.sh is None and samples.light_group is None:
        for name in ("le", "ls"):
            if name in metrics:
                results[name] = _missing("the source has no requested SH lighting")
    elif "le" in metrics or "ls" in metrics:
        outputs, warning = estimate("lighting")
        if "le" in metrics:
            if samples.sh is None:
                results["le"] = _missing("the source has no requested SH lighting")
            else:
                # The MSE of always answering the mean requested light: LE means little unless below it.
                mean_light = samples.sh.double().mean(dim=0, keepdim=True).expand_as(samples.sh)
                baseline = lighting_error(samples.sh, mean_light)
                results["le"] = {
                    "value": lighting_error(samples.sh, outputs["sh"]),
                    "mean_light_baseline": baseline,
                    "reliable": warning is None,
                    "note": note_of(
                        warning, f"MSE of the 9x3 SH coefficients; answering the mean light: {baseline:.4g}"
                    ),
                }
        if "ls" in metrics:
            groups = samples.light_group
            value, used = (float("nan"), 0) if groups is None else lighting_stability(outputs["sh"], groups)
            results["ls"] = {
                "value": value,
                "groups": used,
                "reliable": warning is None and used > 0,
                "note": note_of(warning, f"std of estimated SH over {used} groups sharing one light"),
            }
    if "id" in metrics:
        if samples.identity is None:
            results["id"] = _missing("the source has no identity ids")
        else:
            outputs, warning = estimate("identity")
            value, pairs, different = identity_consistency(outputs["embedding"], samples.identity)
            results["id"] = {
                "value": value,
                "pairs": pairs,
                "different_identity_similarity": different,
                "reliable": warning is None and pairs > 0,
                "note": note_of(
                    warning,
                    f"mean cosine similarity over {pairs} same-identity pairs; "
                    f"different identities: {different:.3f}",
                ),
            }
    if "aed" in metrics:
        if samples.expression is None:
            results["aed"] = _missing("the source has no requested expression coefficients")
        else:
            outputs, warning = estimate("expression")
            # Coefficients are compared through what they do (landmark offsets): see protocols.py.
            jaw = samples.jaw if samples.jaw is not None else torch.zeros(len(samples), 3)
            requested = expression_offsets(samples.expression, jaw)
            estimated = outputs["expression_offsets"]
            no_motion = landmark_offset_distance(requested, torch.zeros_like(requested))
            columns = min(outputs["expression"].shape[1], samples.expression.shape[1])
            results["aed"] = {
                "value": landmark_offset_distance(requested, estimated),
                "aed_mouth": landmark_offset_distance(requested, estimated, MOUTH_LANDMARKS),
                "no_motion_baseline": no_motion,
                "aed_coefficients": expression_distance(
                    samples.expression[:, :columns], outputs["expression"][:, :columns]
                ),
                "reliable": warning is None,
                "note": note_of(
                    warning,
                    "mm per landmark, expression-induced offsets of the 68 landmarks (mean identity); "
                    f"answering 'neutral': {no_motion:.3g} mm",
                ),
            }
    consistency = samples if consistency is None else consistency
    if "ti" in metrics:
        results["ti"] = score_ti(consistency, estimate_images, reference_samples)
    if "ds" in metrics:
        results.update(score_ds(consistency, estimate_images, reference_samples))
    if "mv" in metrics:
        results["mv"] = score_mv(
            consistency, depth_tolerance, surface_threshold, batch_size, device, progress
        )
    names = [expanded for name in metrics for expanded in (DS_NAMES if name == "ds" else (name,))]
    return {name: results[name] for name in names}


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``headforge eval``; returns the exit code (2 for bad arguments)."""
    try:
        metrics = parse_metrics(args.metrics)
        if not args.ckpt and not args.data:
            raise ValueError("pass --ckpt (with --data as FID reference) or --data")
        counts(args)
        consistency_counts(args)
    except ValueError as error:
        print(f"headforge eval: error: {error}")
        return 2
    torch.manual_seed(args.seed)
    progress = not args.no_progress
    try:
        if args.ckpt:
            generator, meta = load_generator(args.ckpt, device=args.device)
            model = meta.get("config", {}).get("model")
            sources = generator_sources(generator, model, args, metrics, progress)
        else:
            sources = dataset_sources(args, metrics, progress)
    except ValueError as error:
        print(f"headforge eval: error: {error}")
        return 2
    results = evaluate(
        sources.samples,
        metrics,
        sources.reference_images,
        args.seed,
        args.inception,
        args.kid_subsets,
        args.kid_subset_size,
        args.batch,
        args.device,
        progress,
        consistency=sources.consistency,
        reference_samples=sources.reference_samples,
        depth_tolerance=args.mv_depth_tolerance,
        surface_threshold=args.mv_opacity,
    )
    legend = {name: METRICS[name.split("_")[0]] for name in results}  # ds_pose -> the ds line
    report = {"source": {**sources.samples.source, "seed": args.seed}, "metrics": results, "legend": legend}
    json_path, markdown_path = write_report(report, Path(args.out))
    for name, entry in results.items():
        flag = "" if entry.get("reliable", True) else "  (unreliable)"
        print(f"{name}: {entry['value']:.6g}{flag}")
    print(f"wrote {json_path} and {markdown_path}")
    return 0
