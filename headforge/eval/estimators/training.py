"""Supervised training of the estimators on studio datasets.

Two networks are trained:

- the *attribute* network: one backbone with heads ``expression``, ``jaw``,
  ``expression_offsets`` (the expression-induced displacement of the 68
  landmarks on the mean identity, 68 x 3 flattened, head-model units; see
  ``targets.expression_offsets``: unlike the coefficients it is identifiable
  from an image), ``pose`` (head yaw/pitch/roll relative to the camera, see
  ``headforge.eval.estimators.targets``), ``sh`` (27 = 9 x 3) and ``shape``,
  trained jointly with the sum of per-head mean squared errors on targets
  standardised by the training-set statistics (so every head weighs alike);
- the *identity* network: the same backbone (initialised from the attribute
  backbone, whose shape head already needs identity cues) with one
  ``embedding`` head, trained with CosFace + batch-hard triplet losses on
  identity-balanced batches (``headforge.eval.estimators.identity``).

The attribute network has a second backbone on a fixed face crop
(``FACE_CROP``, see ``EstimatorNetwork``): the head fills the middle of an
EG3D-aligned image, and expression / jaw live in a ~30 px region at 64 px.
Training data are best rendered at 128 px so the crop has real detail; the
views (full image at 64 px, face crop at 64 px) are prepared once per dataset.
Because callers also feed 64 px images (whose crop is an upsampled ~36 px
region), a fraction of the training crops (``low_res_crop_fraction``) is cut
from the image first reduced to 64 px, so both inputs are in distribution.

Both use AdamW with a cosine learning-rate decay and run on the device of
the tensors given; data are held in memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.data.dataset import HeadDataset
from headforge.eval.estimators.identity import CosFaceHead, batch_hard_triplet_loss, identity_batches
from headforge.eval.estimators.networks import (
    INPUT_RESOLUTION,
    EstimatorNetwork,
    crop_face_region,
    resize_for_estimator,
)
from headforge.eval.estimators.targets import expression_offsets, head_pose_angles
from headforge.heads.base import POSE_SLICES

__all__ = [
    "ATTRIBUTE_TARGETS",
    "ATTRIBUTE_CHANNELS",
    "ATTRIBUTE_HIDDEN",
    "FACE_CROP",
    "EstimatorData",
    "load_estimator_data",
    "train_attribute_network",
    "train_identity_network",
    "predict",
]

#: Heads of the attribute network, in training order.
ATTRIBUTE_TARGETS = ("expression", "jaw", "expression_offsets", "pose", "sh", "shape")

#: Face region of an EG3D-aligned image, (x0, y0, size) as fractions of the side: eyebrows to
#: chin and cheek to cheek of a frontal studio head, with room for the studio's yaw / pitch spread
#: (72 x 72 px of a 128 px image, x 28..100, y 34..106).
FACE_CROP = (0.21875, 0.265625, 0.5625)

#: Backbone widths (each branch) and head hidden width of the attribute network: two branches of
#: (32, 64, 128, 256) with 256-wide heads would be a 6.3 MB float16 file; these keep it near 4 MB.
ATTRIBUTE_CHANNELS = (32, 64, 128, 192)
ATTRIBUTE_HIDDEN = 128

Logger = Callable[[str], None]


@dataclass
class EstimatorData:
    """A dataset held in memory for estimator training / evaluation.

    Attributes:
        images: (N, 3, R, R) float32 in [-1, 1].
        targets: ``expression`` (N, n_expr), ``jaw`` (N, 3) axis-angle radians,
            ``expression_offsets`` (N, 204): ``targets.expression_offsets`` flattened
            (68 landmarks x xyz, head-model world units),
            ``pose`` (N, 3) head yaw/pitch/roll radians, ``sh`` (N, 27), ``shape`` (N, n_shape).
        identities: (N,) int64 identity ids, or ``None`` when the dataset has none.
        sources: the dataset folders, for the manifest.
    """

    images: Tensor
    targets: dict[str, Tensor]
    identities: Tensor | None
    sources: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Tensor) -> EstimatorData:
        """The items at ``indices`` (int64 tensor)."""
        return EstimatorData(
            images=self.images[indices],
            targets={name: value[indices] for name, value in self.targets.items()},
            identities=None if self.identities is None else self.identities[indices],
            sources=self.sources,
        )


def _load_one(path: Path, resolution: int) -> EstimatorData:
    dataset = HeadDataset(path, resolution=resolution)
    if not (dataset.has_params and dataset.has_sh):
        raise ValueError(f"{path}: estimator training needs the 'params' and 'sh' keys (a studio dataset)")
    images, sh, identities = [], [], []
    for index in range(len(dataset)):
        item = dataset[index]
        images.append(item["image"])
        sh.append(item["sh"])
        if dataset.has_identities:
            identities.append(int(item["identity"]))
    pose = dataset.params_tensor("pose")
    expression = dataset.params_tensor("expression")
    jaw = pose[:, POSE_SLICES["jaw"]].clone()
    targets = {
        "expression": expression,
        "jaw": jaw,
        "expression_offsets": expression_offsets(expression, jaw).reshape(len(dataset), -1),
        "pose": head_pose_angles(dataset.labels_tensor().double(), pose.double()).float(),
        "sh": torch.stack(sh).reshape(len(dataset), 27),
        "shape": dataset.params_tensor("shape"),
    }
    return EstimatorData(
        images=torch.stack(images),
        targets=targets,
        identities=torch.tensor(identities) if dataset.has_identities else None,
        sources=[str(path)],
    )


def load_estimator_data(paths: Sequence[str | Path], resolution: int = INPUT_RESOLUTION) -> EstimatorData:
    """Load and concatenate studio datasets (folders or zips), images resized to ``resolution``.

    Identity ids restart at 0 in every studio run, so they are re-based per
    dataset (consecutive ranges) to keep identities of different datasets
    apart. Identities are dropped when any dataset lacks them.
    """
    parts = [_load_one(Path(path), resolution) for path in paths]
    if not parts:
        raise ValueError("no datasets given")
    identities: list[Tensor] | None = []
    offset = 0
    for part in parts:
        if part.identities is None or identities is None:
            identities = None
            continue
        identities.append(part.identities - part.identities.min() + offset)
        offset = int(identities[-1].max()) + 1
    return EstimatorData(
        images=torch.cat([part.images for part in parts]),
        targets={name: torch.cat([part.targets[name] for part in parts]) for name in parts[0].targets},
        identities=None if identities is None else torch.cat(identities),
        sources=[source for part in parts for source in part.sources],
    )


def _schedule_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up for ``warmup`` steps, then cosine decay to 0.02."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _augment(images: Tensor, generator: torch.Generator, max_shift: int = 2) -> Tensor:
    """Random integer translation by up to ``max_shift`` px (edge padding): small framing jitter.

    Flips are not used: expression, shape, pose and SH labels are not mirror-invariant.
    """
    if max_shift == 0:
        return images
    size = images.shape[-1]
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * max_shift + 1, (2,), generator=generator))
    return padded[..., dy : dy + size, dx : dx + size]


def prepare_training_views(
    network: EstimatorNetwork, images: Tensor, batch_size: int = 512
) -> tuple[list[Tensor], Tensor | None]:
    """The network's input views of every image, plus crops cut from a 64 px copy.

    Args:
        network: decides the views (``EstimatorNetwork.prepare_views``).
        images: (N, 3, H, W) in [-1, 1].

    Returns:
        ``views``: list of (N, 3, R, R) (full image, and face crop when the
        network has a crop branch); ``low_res_crops``: (N, 3, R, R) face crops
        cut from the image first resized to R (what a caller's R px image
        gives), or ``None`` without a crop branch or when H <= R already.
    """
    parts: list[list[Tensor]] = []
    low_parts: list[Tensor] = []
    resolution = network.input_resolution
    low_res = network.face_crop is not None and images.shape[-1] > resolution
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        parts.append(network.prepare_views(chunk))
        if low_res and network.face_crop is not None:
            reduced = resize_for_estimator(chunk, resolution)
            low_parts.append(crop_face_region(reduced, network.face_crop, resolution))
    views = [torch.cat([part[i] for part in parts]) for i in range(len(parts[0]))]
    return views, torch.cat(low_parts) if low_res else None


def train_attribute_network(
    data: EstimatorData,
    epochs: int = 20,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    channels: Sequence[int] = ATTRIBUTE_CHANNELS,
    face_crop: Sequence[float] | None = FACE_CROP,
    crop_channels: Sequence[int] | None = None,
    hidden: int = ATTRIBUTE_HIDDEN,
    head_weights: Mapping[str, float] | None = None,
    low_res_crop_fraction: float = 0.3,
    log: Logger = print,
) -> EstimatorNetwork:
    """Train the joint expression / jaw / expression-offsets / pose / SH / shape regressor.

    Args:
        data: training data (targets of ``ATTRIBUTE_TARGETS``); its device is used.
            Images at 128 px give the face crop detail; 64 px images work too.
        epochs: passes over the data.
        batch_size: images per step.
        learning_rate: peak AdamW learning rate.
        seed: initialisation and shuffling seed.
        channels: backbone widths.
        face_crop: ``(x0, y0, size)`` face box for the crop branch (fractions of
            the image side), ``None`` for a single full-image backbone.
        crop_channels: crop backbone widths (default: ``channels``).
        hidden: hidden width of every head.
        head_weights: loss weight per head (default 1 each; e.g. more weight on
            the expression and jaw heads, which learn far slower than pose / SH).
        low_res_crop_fraction: probability per training sample of taking the
            face crop from the image reduced to the input resolution (only when
            the data are larger than that).
        log: progress sink (one line per epoch).

    Returns:
        The trained network in eval mode, target statistics set from ``data``.
    """
    torch.manual_seed(seed)
    device = data.images.device
    heads = {name: data.targets[name].shape[1] for name in ATTRIBUTE_TARGETS}
    network = EstimatorNetwork(
        heads, channels=channels, face_crop=face_crop, crop_channels=crop_channels, hidden=hidden
    ).to(device)
    for name in ATTRIBUTE_TARGETS:
        network.set_target_statistics(name, data.targets[name])
    standardised = {name: network.standardise(name, data.targets[name]) for name in ATTRIBUTE_TARGETS}
    weights = {name: float((head_weights or {}).get(name, 1.0)) for name in ATTRIBUTE_TARGETS}
    # Views once per dataset: resizing / cropping 128 px images every step would cost as much as the net.
    views, low_res_crops = prepare_training_views(network, data.images)
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(data) // batch_size)
    total = epochs * steps_per_epoch
    step = 0
    started = time.time()
    network.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=generator).to(device)
        running = {name: 0.0 for name in ATTRIBUTE_TARGETS}
        for batch_index in range(steps_per_epoch):
            indices = order[batch_index * batch_size : (batch_index + 1) * batch_size]
            factor = _schedule_factor(step, total, warmup=max(1, min(100, total // 10)))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * factor
            batch_views = [view[indices] for view in views]
            if low_res_crops is not None and low_res_crop_fraction > 0:
                pick = torch.rand(len(indices), generator=generator) < low_res_crop_fraction
                pick = pick.to(device)[:, None, None, None]
                batch_views[1] = torch.where(pick, low_res_crops[indices], batch_views[1])
            # Independent shifts per view: framing jitter, and crop-box jitter relative to the head.
            outputs = network.forward_views([_augment(view, generator) for view in batch_views])
            losses = {
                name: F.mse_loss(outputs[name], standardised[name][indices]) for name in ATTRIBUTE_TARGETS
            }
            optimizer.zero_grad(set_to_none=True)
            sum(weights[name] * value for name, value in losses.items()).backward()
            optimizer.step()
            step += 1
            for name, value in losses.items():
                running[name] += float(value.detach()) / steps_per_epoch
        log(
            f"attributes epoch {epoch + 1}/{epochs} ({time.time() - started:.0f} s): "
            + " ".join(f"{k}={v:.3f}" for k, v in running.items())
        )
    return network.eval()


def train_identity_network(
    data: EstimatorData,
    epochs: int = 20,
    identities_per_batch: int = 16,
    images_per_identity: int = 4,
    embedding_dim: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    init_from: EstimatorNetwork | None = None,
    log: Logger = print,
) -> EstimatorNetwork:
    """Train the identity embedding with CosFace + batch-hard triplet losses.

    Args:
        data: training data with ``identities``; identities with fewer than
            ``images_per_identity`` images are never sampled (pass multi-view data).
        epochs: passes over the eligible identities (each epoch runs the
            identity list several times, see below).
        identities_per_batch, images_per_identity: P x K batches.
        embedding_dim: D of the unit-norm embedding.
        learning_rate: peak AdamW learning rate (the backbone, when
            initialised from ``init_from``, uses a tenth of it).
        seed: initialisation and sampling seed.
        init_from: a trained network whose backbone initialises this one.
        log: progress sink.

    Returns:
        Network with one unit-norm ``embedding`` head, eval mode.
    """
    if data.identities is None:
        raise ValueError("identity training needs datasets with the 'identities' key")
    torch.manual_seed(seed)
    device = data.images.device
    channels = init_from.backbone.channels if init_from is not None else (32, 64, 128, 256)
    network = EstimatorNetwork(
        {"embedding": embedding_dim}, channels=channels, unit_norm_heads=("embedding",)
    )
    network = network.to(device)
    if init_from is not None:
        network.backbone.load_state_dict(init_from.backbone.state_dict())
    _, class_index = data.identities.unique(return_inverse=True)
    class_index = class_index.to(device)
    cosface = CosFaceHead(embedding_dim, int(class_index.max()) + 1).to(device)
    backbone_lr = learning_rate * (0.1 if init_from is not None else 1.0)
    optimizer = torch.optim.AdamW(
        [
            {"params": network.backbone.parameters(), "lr": backbone_lr, "base_lr": backbone_lr},
            {
                "params": list(network.heads.parameters()) + list(cosface.parameters()),
                "lr": learning_rate,
                "base_lr": learning_rate,
            },
        ],
        weight_decay=1e-4,
    )
    generator = torch.Generator().manual_seed(seed)
    # Each identity gives K images per pass, so several passes make one "epoch" ~ one look at every image.
    counts = torch.bincount(class_index.cpu())
    passes = max(1, int(counts[counts >= images_per_identity].float().mean() // images_per_identity))
    batches_per_pass = int((counts >= images_per_identity).sum()) // identities_per_batch
    total = epochs * passes * batches_per_pass
    step = 0
    network.train()
    for epoch in range(epochs):
        totals = {"cosface": 0.0, "triplet": 0.0}
        count = 0
        for _ in range(passes):
            for indices in identity_batches(
                class_index.cpu(), identities_per_batch, images_per_identity, generator
            ):
                indices = indices.to(device)
                factor = _schedule_factor(step, total, warmup=max(1, min(100, total // 10)))
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                embeddings = network.forward_raw(_augment(data.images[indices], generator))["embedding"]
                labels = class_index[indices]
                loss_cosface = cosface(embeddings, labels)
                loss_triplet = batch_hard_triplet_loss(embeddings, labels)
                optimizer.zero_grad(set_to_none=True)
                (loss_cosface + loss_triplet).backward()
                optimizer.step()
                step += 1
                count += 1
                totals["cosface"] += float(loss_cosface.detach())
                totals["triplet"] += float(loss_triplet.detach())
        log(
            f"identity epoch {epoch + 1}/{epochs}: "
            + " ".join(f"{k}={v / max(1, count):.3f}" for k, v in totals.items())
        )
    return network.eval()


@torch.no_grad()
def predict(network: EstimatorNetwork, images: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
    """Run ``network`` over (N, 3, H, W) images in batches; name -> (N, D)."""
    network.eval()
    parts = [network(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
