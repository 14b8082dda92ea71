"""`headforge eval`: image-quality and control metrics of a checkpoint or a dataset.

Two modes:

- ``--ckpt CKPT --data DIR``: sample the generator (identities x views; see
  ``protocols``), score FID / KID against the images of ``DIR`` and the control
  metrics against what the generator was asked for.
- ``--data DIR [--reference DIR]``: score a dataset's images against another
  dataset (FID / KID; ``--reference`` defaults to ``--data`` itself) and its
  images against its own labels (APD, LE, LS, ID, AED): with ground-truth
  renders this is the floor of each figure (the estimators' own error).

Writes ``--out`` (JSON) and the same name with ``.md`` (a Markdown table).
Metric definitions: ``headforge.eval.protocols`` and docs/metrics.md.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from headforge.apps.loading import load_generator
from headforge.eval.estimators.api import EstimatorQualityWarning, load_estimator
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
    lighting_error,
    lighting_stability,
    parse_metrics,
    pose_distance,
    run_batched,
    samples_from_dataset,
    samples_from_eg3d,
    samples_from_nerffaceshop,
)
from headforge.eval.report import write_report

__all__ = ["add_eval_parser", "run_eval", "evaluate", "PAPER_COUNTS", "CPU_COUNTS"]

#: identities x views of the papers' animation protocol (500 identities x 20 driving codes).
PAPER_COUNTS = (500, 20)
#: small counts for a CPU smoke evaluation.
CPU_COUNTS = (8, 4)


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on a subparsers object; the handler is ``run_eval`` (``set_defaults(run=...)``)."""
    parser = subparsers.add_parser(
        "eval", help="FID / KID and control metrics (APD, LE, LS, ID, AED) of a checkpoint or dataset"
    )
    parser.add_argument("--ckpt", help="generator checkpoint (run folder or stem); omit to evaluate --data")
    parser.add_argument("--data", help="dataset: FID/KID reference with --ckpt, the evaluated set without")
    parser.add_argument("--reference", help="reference dataset for FID/KID without --ckpt (default: --data)")
    parser.add_argument("--metrics", default="fid,kid,apd,id", help=f"comma list of {','.join(METRICS)}")
    parser.add_argument("--out", required=True, help="report JSON path (a .md table is written next to it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of latents, cameras and KID subsets")
    parser.add_argument("--num-images", type=int, help="cap on dataset images / generated images")
    parser.add_argument("--identities", type=int, help=f"generated identities (default {PAPER_COUNTS[0]})")
    parser.add_argument("--views", type=int, help=f"views per generated identity (default {PAPER_COUNTS[1]})")
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
) -> dict[str, dict[str, Any]]:
    """Score ``samples``; returns metric name -> {value, reliable, note, ...}.

    A metric the source cannot support (no labels, no reference) gets value
    NaN and a note saying why, rather than an error: a checkpoint report then
    still shows everything else.
    """
    results: dict[str, dict[str, Any]] = {}

    def estimate(kind: str) -> tuple[dict[str, torch.Tensor], str | None]:
        estimator, warning = _estimator(kind, device)
        outputs: dict[str, list[torch.Tensor]] = {}
        for batch in batched(samples.images, batch_size, progress, f"{kind} estimator"):
            for key, value in estimator(batch.to(device)).items():
                outputs.setdefault(key, []).append(value.cpu())
        return {key: torch.cat(values) for key, values in outputs.items()}, warning

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
            estimated = outputs["expression"]
            columns = min(estimated.shape[1], samples.expression.shape[1])
            results["aed"] = {
                "value": expression_distance(samples.expression[:, :columns], estimated[:, :columns]),
                "reliable": warning is None,
                "note": note_of(warning, f"Euclidean distance of {columns} expression coefficients"),
            }
    return {name: results[name] for name in metrics}


def _counts(args: argparse.Namespace) -> tuple[int, int]:
    identities, views = CPU_COUNTS if args.preset == "cpu" else PAPER_COUNTS
    views = args.views or views
    identities = args.identities or identities
    if args.num_images:
        identities = max(1, math.ceil(args.num_images / views))
    if identities < 1 or views < 1:
        raise ValueError("--identities and --views must be positive")
    return identities, views


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``headforge eval``; returns the exit code (2 for bad arguments)."""
    try:
        metrics = parse_metrics(args.metrics)
        if not args.ckpt and not args.data:
            raise ValueError("pass --ckpt (with --data as FID reference) or --data")
        identities, views = _counts(args)
    except ValueError as error:
        print(f"headforge eval: error: {error}")
        return 2
    torch.manual_seed(args.seed)
    progress = not args.no_progress
    needs_reference = "fid" in metrics or "kid" in metrics
    if args.ckpt:
        generator, meta = load_generator(args.ckpt, device=args.device)
        model = meta.get("config", {}).get("model")
        reference = None
        if args.data and (needs_reference or model == "nerffaceshop"):
            reference_samples = samples_from_dataset(args.data, args.num_images, progress)
            reference = reference_samples.images if needs_reference else None
        if model == "eg3d":
            samples = samples_from_eg3d(
                generator, identities, views, args.seed, args.truncation, args.device, progress
            )
        elif model == "nerffaceshop":
            if not args.data or reference_samples.sh is None:
                print("headforge eval: error: a nerffaceshop --ckpt needs --data with SH labels (the lights)")
                return 2
            samples = samples_from_nerffaceshop(
                generator,
                reference_samples.sh,
                identities,
                views,
                args.seed,
                args.truncation,
                args.device,
                progress,
            )
        else:
            print(f"headforge eval: error: --ckpt of model {model!r} is not supported (eg3d, nerffaceshop)")
            return 2
        samples.source["ckpt"] = str(args.ckpt)
        if args.data:
            samples.source["data"] = str(args.data)
    else:
        samples = samples_from_dataset(args.data, args.num_images, progress)
        reference = None
        if needs_reference:
            reference_path = args.reference or args.data
            reference = samples_from_dataset(reference_path, args.num_images, progress).images
            samples.source["reference"] = str(reference_path)
    results = evaluate(
        samples,
        metrics,
        reference,
        args.seed,
        args.inception,
        args.kid_subsets,
        args.kid_subset_size,
        args.batch,
        args.device,
        progress,
    )
    report = {"source": {**samples.source, "seed": args.seed}, "metrics": results}
    json_path, markdown_path = write_report(report, Path(args.out))
    for name, entry in results.items():
        flag = "" if entry.get("reliable", True) else "  (unreliable)"
        print(f"{name}: {entry['value']:.6g}{flag}")
    print(f"wrote {json_path} and {markdown_path}")
    return 0
