"""The `headforge` command.

Each subcommand imports what it needs only when it runs, so `headforge --help`
answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from headforge.runtime import default_device, tune_cpu_allocator


# ---------------------------------------------------------------------------- synth
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="render a labelled dataset of procedural heads (the synthetic head studio)",
        description="Render an EG3D-compatible dataset of procedural heads with exact labels: "
        "camera, SH light, "
        "head-model parameters, clip ids and albedo / normal / depth / segmentation / shading maps. "
        "Deterministic from the seed; an interrupted run resumes in the same folder.",
    )
    p.add_argument(
        "--preset",
        default="images",
        help="images, videos, multiview, lightstage or benchmark (default images)",
    )
    p.add_argument("--count", type=int, required=True, help="number of images (video frames included)")
    p.add_argument("--resolution", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="global seed (default 0)")
    p.add_argument("--out", required=True, type=Path, help="dataset folder")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.set_defaults(run=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from headforge.data.studio import SynthError, run_synth

    try:
        summary = run_synth(args.preset, args.count, args.resolution, args.seed, args.out, args.workers)
    except SynthError as error:
        raise ValueError(str(error)) from error
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a system on a dataset", description="Train a system on a dataset."
    )
    p.add_argument("--model", default="eg3d", help="system to train (default: eg3d)")
    p.add_argument("--data", required=True, type=Path, help="dataset folder or zip with dataset.json")
    p.add_argument("--preset", default="tiny", help="preset of the system (tiny, small, ffhq512, ...)")
    p.add_argument(
        "--out", required=True, type=Path, help="run folder: checkpoints, TensorBoard logs, snapshots"
    )
    p.add_argument(
        "--kimg", type=float, default=None, help="thousands of real images to show (default: preset)"
    )
    p.add_argument("--batch", type=int, default=None, help="global batch size (default: preset)")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    p.add_argument("--skip-bad", action="store_true", help="leave out bad dataset items with a warning")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=2,
        help="how many of the newest checkpoints stay on disk (default 2; more keeps a way back)",
    )
    p.add_argument(
        "--accept-config-change",
        action="append",
        default=[],
        metavar="FIELD",
        help="with --resume: let this config field (e.g. superresolution_noise_mode) differ from the "
        "checkpoint's and continue with the new value; recorded in RUN/config_changes.jsonl (repeatable)",
    )
    p.add_argument("--snapshot-every", type=int, default=None, help="steps between image grids")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes (default 0)")
    p.add_argument("--mixed-precision", action="store_true", help="autocast + grad scaling on CUDA")
    p.add_argument("--no-xflip", action="store_true", help="disable x-flip augmentation")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set r1_gamma=4 (repeatable; values parsed as JSON)",
    )
    p.set_defaults(run=_run_train)


def _parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _run_train(args: argparse.Namespace) -> int:
    from headforge.training.launch import TrainRequest, train

    summary = train(
        TrainRequest(
            model=args.model,
            data=args.data,
            preset=args.preset,
            out=args.out,
            kimg=args.kimg,
            batch=args.batch,
            resume=args.resume,
            skip_bad=args.skip_bad,
            seed=args.seed,
            device=default_device(args.device),
            checkpoint_every=args.checkpoint_every,
            keep_checkpoints=args.keep_checkpoints,
            accept_config_changes=tuple(args.accept_config_change),
            snapshot_every=args.snapshot_every,
            workers=args.workers,
            mixed_precision=args.mixed_precision,
            xflip=not args.no_xflip,
            overrides=_parse_overrides(args.set),
        )
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun, only the main process reports
        print(json.dumps(summary, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------- generate / video / mesh
def _add_common_generation(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ckpt", required=True, type=Path, help="checkpoint (.safetensors / .json / stem) or run folder"
    )
    p.add_argument("--trunc", type=float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="images and depth maps for seeds",
        description="Write seedNNNN.png, seedNNNN_depth.png and seedNNNN_raw.png for each seed.",
    )
    _add_common_generation(p)
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7 or 1,5,9 (default 0-7)")
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw in radians (default 0: frontal)")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch in radians")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from headforge.apps.generate import generate_images, parse_seeds
    from headforge.apps.loading import load_generator

    device = default_device(args.device)
    generator, _ = load_generator(args.ckpt, device)
    written = generate_images(
        generator, parse_seeds(args.seeds), args.out, args.trunc, args.yaw, args.pitch, device
    )
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def _add_video(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="orbit video of a generated head (H.264 MP4)",
        description="Render an orbit around one seed's head as an H.264 MP4.",
    )
    _add_common_generation(p)
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--orbit", action="store_true", default=True, help="orbit the camera (the default path)")
    p.add_argument("--frames", type=int, default=60, help="number of frames (default 60)")
    p.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")
    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.set_defaults(run=_run_video)


def _run_video(args: argparse.Namespace) -> int:
    from headforge.apps.loading import load_generator
    from headforge.apps.video import write_orbit_video

    device = default_device(args.device)
    generator, _ = load_generator(args.ckpt, device)
    path = write_orbit_video(generator, args.seed, args.out, args.frames, args.fps, args.trunc, device)
    print(f"wrote {path}")
    return 0


def _add_mesh(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mesh",
        help="marching-cubes mesh with vertex colours (PLY / OBJ)",
        description="Extract a head mesh from the density field by marching cubes.",
    )
    _add_common_generation(p)
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--resolution", type=int, default=128, help="voxel grid resolution (default 128)")
    p.add_argument(
        "--level",
        type=_level,
        default=10.0,
        help="raw density iso-level (default 10, as EG3D), or 'auto' (midpoint of the 5th/95th percentiles)",
    )
    p.add_argument("--out", required=True, type=Path, help="output .ply or .obj")
    p.set_defaults(run=_run_mesh)


def _level(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--level expects a number or 'auto', got {text!r}") from error


def _run_mesh(args: argparse.Namespace) -> int:
    from headforge.apps.loading import load_generator
    from headforge.apps.mesh import export_seed_mesh

    device = default_device(args.device)
    generator, _ = load_generator(args.ckpt, device)
    path = export_seed_mesh(generator, args.seed, args.out, args.resolution, args.level, args.trunc, device)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="per-stage timings, images/s and seconds per training step",
        description="Time generation stages and a training step for presets.",
    )
    p.add_argument("--model", default="eg3d", help="system (default eg3d)")
    p.add_argument(
        "--preset",
        action="append",
        default=None,
        help="preset to time (repeatable; default: tiny and ffhq512)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after warm-up; the median is kept")
    p.add_argument(
        "--train-batch",
        type=int,
        default=None,
        help="batch size for the training-step timing (default: min(preset batch, 4))",
    )
    p.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object per preset")
    p.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from headforge.bench import format_report, run_benchmarks

    results = run_benchmarks(
        model=args.model,
        presets=args.preset or ["tiny", "ffhq512"],
        repeats=args.repeats,
        train_batch=args.train_batch,
        train=not args.no_train,
        device=default_device(args.device),
    )
    if args.json:
        for result in results:
            print(json.dumps(result))
    else:
        print(format_report(results))
    return 0


# ---------------------------------------------------------------------------- estimators
def _add_train_estimators(sub: argparse._SubParsersAction) -> None:
    from headforge.eval.estimators.command import add_train_estimators_arguments

    p = sub.add_parser(
        "train-estimators",
        help="train the expression / pose / lighting / shape / identity estimators on studio data",
        description="Train the image -> attribute estimators on datasets with ground truth (the studio's) "
        "and write their weights and a manifest with held-out accuracy.",
    )
    add_train_estimators_arguments(p)
    p.set_defaults(run=_run_train_estimators)


def _run_train_estimators(args: argparse.Namespace) -> int:
    from headforge.eval.estimators.command import run_train_estimators

    manifest = run_train_estimators(args)
    print(json.dumps(manifest, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="animate, relight, turn and export the shipped NeRFFaceShop model",
        description="Load the shipped NeRFFaceShop model (or --ckpt) and write a grid of identities x "
        "expressions x lights x views, an orbit video, a relighting video, a driven-animation video and "
        "a mesh with albedo colours.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)"
    )
    p.add_argument(
        "--ckpt", type=Path, default=None, help="NeRFFaceShop checkpoint (default: the shipped model)"
    )
    p.add_argument("--encoder", type=Path, default=None, help="driving encoder (default: the shipped one)")
    p.add_argument("--seeds", default="0-3", help="identity seeds, e.g. 0-3 or 1,5,9 (default 0-3)")
    p.add_argument("--frames", type=int, default=48, help="frames of each video (default 48)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from headforge.apps.demo import run_demo
    from headforge.apps.generate import parse_seeds

    run_demo(
        args.out,
        checkpoint=args.ckpt,
        encoder=args.encoder,
        seeds=tuple(parse_seeds(args.seeds)),
        device=default_device(args.device),
        frames=args.frames,
    )
    return 0


# ---------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headforge",
        description="3D-aware generative models of animatable and relightable human heads.",
    )
    from headforge import __version__

    parser.add_argument("--version", action="version", version=f"headforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Commands whose parsers live with their code (each sets ``run=`` itself).
    from headforge.apps.drive import add_drive_parser
    from headforge.apps.viewer import add_viewer_parser
    from headforge.eval.command import add_eval_parser
    from headforge.preprocess import add_preprocess_parser
    from headforge.training.domain_transfer import add_finetune_domain_parser
    from headforge.training.export import add_export_parser
    from headforge.training.nerffaceshop_driving import add_train_driver_parser

    for add in (
        _add_demo,
        _add_synth,
        _add_train,
        _add_train_estimators,
        _add_generate,
        _add_video,
        _add_mesh,
        _add_bench,
    ):
        add(sub)
    for add in (
        add_preprocess_parser,
        add_train_driver_parser,
        add_drive_parser,
        add_finetune_domain_parser,
        add_viewer_parser,
        add_eval_parser,
        add_export_parser,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_cpu_allocator()
    from headforge.training.checkpoint_state import CheckpointError

    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, CheckpointError) as error:
        print(f"headforge {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"headforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
