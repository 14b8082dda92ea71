"""``headforge preprocess images|videos``: the command-line parser and entry point.

``headforge.cli`` registers the command with :func:`add_preprocess_parser` and calls
:func:`run_preprocess` through ``args.run``.
"""

from __future__ import annotations

import argparse
import json

from headforge.preprocess.pipeline import DETECTORS, PreprocessSettings, run_preprocess_images
from headforge.preprocess.video import run_preprocess_videos

__all__ = ["add_preprocess_parser", "run_preprocess"]


def add_preprocess_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``preprocess images|videos`` on a CLI's subparsers."""
    parser = subparsers.add_parser(
        "preprocess", help="turn photos or talking-head videos into an EG3D dataset"
    )
    parser.add_argument("kind", choices=("images", "videos"))
    parser.add_argument("--in", dest="in_dir", required=True, help="input folder")
    parser.add_argument(
        "--out", dest="out_dir", required=True, help="output folder (the EG3D dataset is OUT/dataset)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=512, help="crop side in pixels")
    parser.add_argument(
        "--min-face", type=float, default=128.0, help="leave out faces with a smaller crop (px)"
    )
    parser.add_argument(
        "--flame", default=None, help="fit this FLAME model file instead of the procedural head"
    )
    parser.add_argument("--flame-landmarks", default=None, help="FLAME's 68-point landmark embedding file")
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default="mediapipe",
        help="face detector and landmarks (dlib: pip install dlib-bin face_recognition_models)",
    )
    parser.add_argument("--max-frames", type=int, default=48, help="videos: frames kept per clip")
    parser.set_defaults(run=run_preprocess)  # headforge.cli dispatches on args.run
    return parser


def run_preprocess(args: argparse.Namespace) -> int:
    """CLI entry: run, print the summary, return the exit code (0, or 1 if nothing was kept)."""
    settings = PreprocessSettings(
        resolution=args.resolution,
        min_face_px=args.min_face,
        flame_path=args.flame,
        flame_landmarks=args.flame_landmarks,
        workers=args.workers,
        detector=args.detector,
    )
    if args.kind == "images":
        summary = run_preprocess_images(args.in_dir, args.out_dir, settings)
    else:
        summary = run_preprocess_videos(args.in_dir, args.out_dir, settings, max_frames=args.max_frames)
    printable = {k: v for k, v in summary.items() if k != "skipped_items"}
    print(json.dumps(printable, indent=1))
    for name, entry in summary["skipped_items"].items():
        print(f"skipped {name}: {entry['reason']}")
    return 0 if summary["kept"] else 1
