"""Metric learning for the identity embedding: losses, an identity-balanced sampler, verification metrics.

Training combines two losses on unit-norm embeddings (B, D):

- a large-margin cosine softmax (CosFace: logits ``s * (cos theta_j - m [j = y])``
  against learned unit class centres), which pulls each embedding towards its
  identity's centre;
- a batch-hard triplet loss (hardest positive vs hardest negative per anchor,
  on cosine distance ``1 - cos``), which works directly on pairs and so
  transfers to identities never seen in training.

Batches hold ``identities_per_batch`` identities x ``images_per_identity``
images each (``identity_batches``) so every anchor has positives.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CosFaceHead",
    "batch_hard_triplet_loss",
    "identity_batches",
    "verification_metrics",
]


class CosFaceHead(nn.Module):
    """Cosine classifier with an additive margin (CosFace); training-only, not shipped.

    Args:
        embedding_dim: D.
        num_classes: number of training identities.
        scale: logit scale s.
        margin: additive cosine margin m subtracted from the true class.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, scale: float = 16.0, margin: float = 0.25
    ) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.randn(num_classes, embedding_dim) / math.sqrt(embedding_dim))
        self.scale = float(scale)
        self.margin = float(margin)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of (B, D) unit embeddings against (B,) class indices in [0, num_classes); scalar."""
        cosines = F.normalize(embeddings, dim=1) @ F.normalize(self.centres, dim=1).T  # (B, C)
        margins = F.one_hot(labels, cosines.shape[1]).to(cosines.dtype) * self.margin
        return F.cross_entropy(self.scale * (cosines - margins), labels)


def batch_hard_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 0.2) -> Tensor:
    """Batch-hard triplet loss on cosine distance.

    For each anchor with at least one positive and one negative in the batch:
    ``relu(max_pos d(a, p) - min_neg d(a, n) + margin)``, ``d = 1 - cos``.

    Args:
        embeddings: (B, D) embeddings (normalised inside).
        labels: (B,) integer identity labels.
        margin: distance margin.

    Returns:
        Scalar mean over valid anchors (0 when none is valid).
    """
    unit = F.normalize(embeddings, dim=1)
    distances = 1.0 - unit @ unit.T  # (B, B)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positives = same & ~eye
    negatives = ~same
    valid = positives.any(dim=1) & negatives.any(dim=1)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    hardest_positive = distances.masked_fill(~positives, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(~negatives, float("inf")).amin(dim=1)
    losses = F.relu(hardest_positive - hardest_negative + margin)
    return losses[valid].mean()


def identity_batches(
    labels: Tensor,
    identities_per_batch: int,
    images_per_identity: int,
    generator: torch.Generator,
) -> Iterator[Tensor]:
    """One epoch of P x K index batches over identities with at least ``images_per_identity`` images.

    Args:
        labels: (N,) identity label per item.
        identities_per_batch: P identities in each batch.
        images_per_identity: K images drawn (without replacement) per identity.
        generator: CPU generator (deterministic order).

    Yields:
        (P * K,) int64 index tensors; each eligible identity appears once per epoch.
    """
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels.tolist()):
        groups.setdefault(int(label), []).append(index)
    eligible = [torch.tensor(indices) for indices in groups.values() if len(indices) >= images_per_identity]
    if len(eligible) < identities_per_batch:
        raise ValueError(
            f"need {identities_per_batch} identities with >= {images_per_identity} images each, "
            f"found {len(eligible)}"
        )
    order = torch.randperm(len(eligible), generator=generator)
    for start in range(0, len(order) - identities_per_batch + 1, identities_per_batch):
        batch = []
        for group_index in order[start : start + identities_per_batch].tolist():
            members = eligible[group_index]
            batch.append(members[torch.randperm(len(members), generator=generator)[:images_per_identity]])
        yield torch.cat(batch)


def verification_metrics(embeddings: Tensor, labels: Tensor, far: float = 0.01) -> dict[str, float]:
    """Pairwise verification and retrieval figures for (N, D) embeddings with (N,) identity labels.

    Every unordered pair (i < j) is scored by cosine similarity. Returns:

    - ``pair_auc``: probability that a random same-identity pair scores above a
      random different-identity pair (ROC AUC; ties count half; chance 0.5);
    - ``tar_at_far``: fraction of same-identity pairs accepted at the threshold
      that accepts a fraction ``far`` of different-identity pairs;
    - ``best_accuracy``: verification accuracy on balanced classes (mean of
      TAR and 1 - FAR) at the best threshold (an optimistic, oracle threshold);
    - ``rank1``: fraction of items whose most similar other item shares its
      identity (items whose identity has a single image are skipped);
    - ``rank1_chance``: the expected rank-1 of random similarities.
    """
    unit = F.normalize(embeddings.double(), dim=1)
    similarity = unit @ unit.T
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=labels.device), diagonal=1)
    genuine = similarity[same & upper]
    impostor = similarity[~same & upper]
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("verification needs at least one same-identity and one different-identity pair")
    # AUC through ranks (Mann-Whitney U), ties averaged.
    scores = torch.cat([genuine, impostor])
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype, device=scores.device)
    unique, inverse = scores.unique(return_inverse=True)
    rank_sum = torch.zeros_like(unique).index_add_(0, inverse, ranks)
    rank_count = torch.zeros_like(unique).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (rank_sum / rank_count)[inverse]
    u_statistic = ranks[: len(genuine)].sum() - len(genuine) * (len(genuine) + 1) / 2
    auc = float(u_statistic / (len(genuine) * len(impostor)))
    threshold = torch.quantile(impostor, 1.0 - far)
    tar = float((genuine > threshold).double().mean())
    # Accept every pair scoring >= t, for t running down the sorted scores: cumulative counts give
    # TAR and FAR at every threshold in O(P log P) memory-light work.
    descending = scores.argsort(descending=True)
    is_genuine = (descending < len(genuine)).double()
    tar_curve = is_genuine.cumsum(0) / len(genuine)
    far_curve = (1.0 - is_genuine).cumsum(0) / len(impostor)
    best_accuracy = float((0.5 * (tar_curve + 1.0 - far_curve)).max())
    masked = similarity.masked_fill(torch.eye(n, dtype=torch.bool, device=labels.device), float("-inf"))
    has_match = same.sum(dim=1) > 1
    nearest = masked.argmax(dim=1)
    rank1 = float((labels[nearest] == labels)[has_match].double().mean())
    # A random neighbour shares the identity with probability (count - 1) / (n - 1).
    chance = float(((same.sum(dim=1) - 1).double() / (n - 1))[has_match].mean())
    return {
        "pair_auc": auc,
        "tar_at_far": tar,
        "far": far,
        "best_accuracy": best_accuracy,
        "rank1": rank1,
        "rank1_chance": chance,
    }
