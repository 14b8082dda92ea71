"""``headforge train-estimators``: train, evaluate on a held-out split, write weights + manifest.

Argparse spec (wired by ``headforge/cli.py``)::

    headforge train-estimators --data DIR [DIR ...] --heldout DIR --out DIR
        [--identity-data DIR [DIR ...]] [--kinds attributes identity]
        [--epochs N] [--identity-epochs N] [--batch-size N] [--seed N]
        [--data-resolution PX] [--no-face-crop] [--threads N] [--device cpu|cuda]

``--data``: studio datasets for the attribute network (expression, jaw,
expression landmark offsets, pose, SH, shape). ``--identity-data``:
multi-view studio datasets for the identity embedding (default: ``--data``;
identities with fewer than 4 images are skipped). ``--heldout``: a studio dataset of held-out identities
(``--preset benchmark``) on which the accuracy figures of the manifest are
measured. ``--kinds``: which networks to train. The output folder receives
``attributes.safetensors``, ``identity.safetensors`` and ``manifest.json``
(kind -> file, input resolution, training data, command, held-out accuracy).

``--data-resolution``: the attribute data (and the held-out set) are loaded
at this size (default 128, the studio data are rendered at 128 px) so the
attribute network's face-crop branch sees detail; ``--no-face-crop`` trains
the single-branch network. The held-out figures are measured on the held-out
images at that resolution (``heldout_accuracy``) and again after reducing
them to 64 px (``heldout_accuracy_64px``), the size most generators output.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path
from typing import Any

import torch

from headforge.eval.estimators.api import ESTIMATOR_KINDS, MANIFEST_NAME
from headforge.eval.estimators.identity import verification_metrics
from headforge.eval.estimators.metrics import (
    offsets_report,
    pose_report,
    r2_per_component,
    regression_report,
    sh_report,
)
from headforge.eval.estimators.networks import EstimatorNetwork, resize_for_estimator
from headforge.eval.estimators.training import (
    ATTRIBUTE_TARGETS,
    FACE_CROP,
    EstimatorData,
    load_estimator_data,
    predict,
    train_attribute_network,
    train_identity_network,
)
from headforge.heads.procedural.expressions import EXPRESSION_NAMES

__all__ = [
    "add_train_estimators_arguments",
    "evaluate_attributes",
    "evaluate_identity",
    "run_train_estimators",
]

ATTRIBUTES_FILE = "attributes.safetensors"
IDENTITY_FILE = "identity.safetensors"


def add_train_estimators_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train-estimators`` options (module docstring) to ``parser``."""
    parser.add_argument(
        "--data", nargs="+", required=True, help="studio dataset folder(s) for the attribute network"
    )
    parser.add_argument(
        "--identity-data", nargs="+", default=None, help="multi-view dataset(s) for the identity net"
    )
    parser.add_argument("--heldout", required=True, help="held-out studio dataset (benchmark preset)")
    parser.add_argument("--out", required=True, help="output folder for weights and manifest.json")
    parser.add_argument(
        "--kinds", nargs="+", choices=("attributes", "identity"), default=["attributes", "identity"]
    )
    parser.add_argument("--epochs", type=int, default=20, help="attribute network epochs")
    parser.add_argument(
        "--identity-epochs", type=int, default=None, help="identity epochs (default: --epochs)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-resolution",
        type=int,
        default=128,
        help="load the attribute and held-out images at this size (px) for the face-crop branch",
    )
    parser.add_argument(
        "--no-face-crop", action="store_true", help="attribute network without the face-crop branch"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: min(available, 2))")
    parser.add_argument(
        "--head-weights",
        nargs="+",
        default=None,
        metavar="HEAD=W",
        help="attribute loss weight per head, e.g. expression=4 jaw=4 (default 1 each)",
    )
    parser.add_argument("--device", default="cpu")
    return parser


def evaluate_attributes(network: EstimatorNetwork, data: EstimatorData) -> dict[str, Any]:
    """Held-out accuracy of the attribute network (see docs/estimators.md for the definitions)."""
    outputs = predict(network, data.images)
    targets = data.targets
    jaw_opening = regression_report(
        outputs["jaw"][:, :1], targets["jaw"][:, :1], network.target_mean("jaw")[:1]
    )
    expression: dict[str, Any] = dict(
        regression_report(outputs["expression"], targets["expression"], network.target_mean("expression"))
    )
    per_component = r2_per_component(outputs["expression"], targets["expression"])
    # Named after the procedural head model's components when the widths match (the studio's model).
    names = EXPRESSION_NAMES if len(EXPRESSION_NAMES) == len(per_component) else range(len(per_component))
    expression["r2_by_component"] = {
        str(name): value for name, value in zip(names, per_component, strict=True)
    }
    offsets = outputs["expression_offsets"].reshape(len(data), -1, 3)
    return {
        "expression": expression,
        "expression_offsets": offsets_report(
            offsets,
            targets["expression_offsets"].reshape(offsets.shape),
            network.target_mean("expression_offsets").reshape(offsets.shape[1:]),
        ),
        "jaw": {
            **regression_report(outputs["jaw"], targets["jaw"], network.target_mean("jaw")),
            "opening_x": jaw_opening,
        },
        "pose": pose_report(outputs["pose"], targets["pose"], network.target_mean("pose")),
        "lighting": sh_report(
            outputs["sh"].reshape(-1, 9, 3),
            targets["sh"].reshape(-1, 9, 3),
            network.target_mean("sh").reshape(9, 3),
        ),
        "shape": regression_report(outputs["shape"], targets["shape"], network.target_mean("shape")),
    }


def evaluate_identity(network: EstimatorNetwork, data: EstimatorData) -> dict[str, float]:
    """Verification / retrieval figures of the embedding on held-out identities."""
    if data.identities is None:
        raise ValueError("the held-out data have no identities")
    embeddings = predict(network, data.images)["embedding"]
    return verification_metrics(embeddings, data.identities)


def _describe(data_paths: list[str]) -> list[dict[str, Any]]:
    described = []
    for path in data_paths:
        meta_path = Path(path) / "synth_run.json"
        entry: dict[str, Any] = {"path": path}
        if meta_path.is_file():
            entry.update(json.loads(meta_path.read_text()))
        dataset_json = Path(path) / "dataset.json"
        if dataset_json.is_file():
            entry["count"] = len(json.loads(dataset_json.read_text())["labels"])
        described.append(entry)
    return described


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def run_train_estimators(args: argparse.Namespace) -> dict[str, Any]:
    """Train the requested networks, evaluate them on ``--heldout``, write weights and ``manifest.json``.

    Returns the manifest. An existing manifest in ``--out`` is updated, so the
    two networks can be trained by separate runs.
    """
    if args.device == "cpu":
        # The build machines share a couple of cores; more threads only add contention (with
        # other jobs busy on them, even 2 threads can be several times slower than 1: --threads 1).
        threads = getattr(args, "threads", None)
        torch.set_num_threads(threads if threads else min(torch.get_num_threads(), 2))
    data_resolution = int(getattr(args, "data_resolution", 64))
    face_crop = None if getattr(args, "no_face_crop", False) else FACE_CROP
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = _command_line(args)
    manifest_path = out / MANIFEST_NAME
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.setdefault("estimators", {})
    heldout_cache: list[EstimatorData] = []

    def heldout() -> EstimatorData:
        # Loaded after training, so the held-out set may still be rendering while training runs.
        if not heldout_cache:
            data = load_estimator_data([args.heldout], resolution=data_resolution)
            heldout_cache.append(_to_device(data, args.device))
        return heldout_cache[0]

    if "attributes" in args.kinds:
        started = time.time()
        data = _to_device(load_estimator_data(args.data, resolution=data_resolution), args.device)
        network = train_attribute_network(
            data,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            face_crop=face_crop,
            head_weights=_head_weights(getattr(args, "head_weights", None)),
        )
        del data  # the held-out set is loaded next; do not hold both in memory
        seconds = round(time.time() - started, 1)
        kinds_meta = {"kinds": "expression,pose,lighting,shape"}
        network.to("cpu").save_weights(out / ATTRIBUTES_FILE, kinds_meta, storage_dtype=torch.float16)
        # Evaluate what ships: the float16 file, reloaded.
        network = EstimatorNetwork.from_file(out / ATTRIBUTES_FILE, device=args.device)
        accuracy = _rounded(evaluate_attributes(network, heldout()))
        accuracy_64 = accuracy
        if heldout().images.shape[-1] != 64:
            reduced = heldout()
            reduced = EstimatorData(
                resize_for_estimator(reduced.images, 64), reduced.targets, reduced.identities, reduced.sources
            )
            accuracy_64 = _rounded(evaluate_attributes(network, reduced))
        common = {
            "file": ATTRIBUTES_FILE,
            "network": "attributes (joint heads: " + ", ".join(network.head_dims) + ")",
            "face_crop": list(network.face_crop) if network.face_crop is not None else None,
            "input_resolution": network.input_resolution,
            "training_data": _describe(list(args.data)),
            "training": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "data_resolution": data_resolution,
                "seconds": seconds,
                "command": command,
            },
            "heldout_data": _describe([args.heldout]),
            "heldout_resolution": int(heldout().images.shape[-1]),
        }

        def figures_of(kind: str, figures: dict[str, Any]) -> dict[str, Any]:
            if kind == "expression":
                return {
                    "expression_offsets": figures["expression_offsets"],
                    "expression": figures["expression"],
                    "jaw": figures["jaw"],
                }
            return figures[kind]

        for kind in ("expression", "pose", "lighting", "shape"):
            manifest["estimators"][kind] = {
                **common,
                "kind": kind,
                "outputs": list(ESTIMATOR_KINDS[kind]),
                "heldout_accuracy": figures_of(kind, accuracy),
                "heldout_accuracy_64px": figures_of(kind, accuracy_64),
            }
        print(json.dumps({"heldout": accuracy, "heldout_64px": accuracy_64}, indent=1))
        if "identity" in args.kinds:
            init_from = network
    else:
        init_from = None
        if (out / ATTRIBUTES_FILE).is_file() and "identity" in args.kinds:
            init_from = EstimatorNetwork.from_file(out / ATTRIBUTES_FILE, device=args.device)

    if "identity" in args.kinds:
        started = time.time()
        identity_paths = list(args.identity_data or args.data)
        # The identity network has no crop branch: 64 px inputs.
        data = _to_device(load_estimator_data(identity_paths), args.device)
        epochs = args.identity_epochs or args.epochs
        network = train_identity_network(data, epochs=epochs, seed=args.seed, init_from=init_from)
        network.to("cpu").save_weights(out / IDENTITY_FILE, {"kinds": "identity"}, torch.float16)
        network = EstimatorNetwork.from_file(out / IDENTITY_FILE, device=args.device)
        accuracy = _rounded(evaluate_identity(network, heldout()))
        manifest["estimators"]["identity"] = {
            "kind": "identity",
            "file": IDENTITY_FILE,
            "outputs": ["embedding"],
            "input_resolution": network.input_resolution,
            "training_data": _describe(identity_paths),
            "training": {
                "epochs": epochs,
                "seed": args.seed,
                "seconds": round(time.time() - started, 1),
                "initialised_from": ATTRIBUTES_FILE if init_from is not None else None,
                "command": command,
            },
            "heldout_data": _describe([args.heldout]),
            "heldout_accuracy": accuracy,
        }
        print(json.dumps(accuracy, indent=1))

    temporary = manifest_path.with_name(manifest_path.name + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    temporary.replace(manifest_path)
    return manifest


def _command_line(args: argparse.Namespace) -> str:
    """The canonical ``headforge train-estimators`` command reproducing ``args``."""
    parts = ["headforge", "train-estimators", "--data", *args.data]
    if args.identity_data:
        parts += ["--identity-data", *args.identity_data]
    parts += [
        "--heldout",
        args.heldout,
        "--out",
        args.out,
        "--kinds",
        *args.kinds,
        "--epochs",
        str(args.epochs),
    ]
    if args.identity_epochs:
        parts += ["--identity-epochs", str(args.identity_epochs)]
    parts += ["--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    parts += ["--data-resolution", str(getattr(args, "data_resolution", 64))]
    if getattr(args, "no_face_crop", False):
        parts.append("--no-face-crop")
    if getattr(args, "head_weights", None):
        parts += ["--head-weights", *args.head_weights]
    if getattr(args, "threads", None):
        parts += ["--threads", str(args.threads)]
    return " ".join(shlex.quote(str(part)) for part in parts)


def _head_weights(pairs: list[str] | None) -> dict[str, float] | None:
    """``["expression=4", "jaw=4"]`` -> ``{"expression": 4.0, "jaw": 4.0}``; ``ValueError`` on bad items."""
    if not pairs:
        return None
    weights = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in ATTRIBUTE_TARGETS or not value:
            raise ValueError(f"--head-weights: expected HEAD=W, HEAD in {ATTRIBUTE_TARGETS}, got {pair!r}")
        weights[name] = float(value)
    return weights


def _to_device(data: EstimatorData, device: str) -> EstimatorData:
    return EstimatorData(
        images=data.images.to(device),
        targets={name: value.to(device) for name, value in data.targets.items()},
        identities=None if data.identities is None else data.identities.to(device),
        sources=data.sources,
    )


def main(argv: list[str] | None = None) -> None:
    """Stand-alone entry: ``python -m headforge.eval.estimators.command ...`` (same options as the CLI)."""
    parser = add_train_estimators_arguments(argparse.ArgumentParser(prog="headforge train-estimators"))
    run_train_estimators(parser.parse_args(argv))


if __name__ == "__main__":
    main()
