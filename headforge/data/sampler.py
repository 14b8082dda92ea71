"""Deterministic, resumable, sharded sampling of dataset indices for training.

The training stream is an endless concatenation of epochs. Epoch ``e`` is a
permutation of ``range(dataset_size)`` drawn from a ``torch.Generator`` seeded
with ``derive_seed(seed, e)`` (or the identity when ``shuffle=False``). Global
step ``s`` consumes the stream positions ``[s * G, (s + 1) * G)`` with
``G = batch_size_per_rank * world_size``, and rank ``r`` takes every
``world_size``-th of them, starting at offset ``r``::

    position(s, r, k) = s * G + k * world_size + r        k = 0 .. batch_size_per_rank - 1
    index(s, r, k)    = permutation(position // N)[position % N]

Consequences:

- The ranks' shards are disjoint, and within every epoch they cover the
  dataset exactly once between them (a rank owns the positions congruent to
  its rank modulo ``world_size``). Batches may straddle an epoch boundary; no
  sample is dropped or repeated within an epoch.
- The indices of step ``s`` depend only on ``(dataset_size, seed, world_size,
  batch_size_per_rank, rank, s)``, so a resumed run needs no sampler state
  other than the step count: ``start_step=s`` continues exactly where an
  unbroken run would be.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["InfiniteShardedSampler", "derive_seed"]


def derive_seed(*values: int | str) -> int:
    """Mix integers/strings into one well-spread 63-bit seed.

    ``derive_seed(seed, epoch)`` seeds an epoch permutation, ``derive_seed(seed,
    rank, step)`` a per-step generator. Unlike ``seed + step`` it cannot make
    two different tuples collide in practice, and nearby tuples give unrelated
    seeds.

    Returns:
        An int in ``[0, 2**63)``, valid for ``torch.Generator.manual_seed``,
        ``numpy.random.seed`` (after ``% 2**32``) and ``random.seed``.
    """
    text = "\x1f".join(str(value) for value in values).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class InfiniteShardedSampler(Sampler[int]):
    """Endless, rank-sharded stream of dataset indices, resumable from a step count.

    Feed it to ``DataLoader(dataset, batch_size=batch_size_per_rank,
    sampler=...)``: the loader's ``j``-th batch is then exactly
    ``indices_for_step(start_step + j)``.

    Args:
        dataset_size: number of samples ``N`` (> 0).
        batch_size_per_rank: samples this rank draws per step.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of training processes.
        seed: base seed of the epoch permutations (identical on every rank).
        shuffle: permute each epoch; ``False`` walks ``0 .. N-1`` in order.
        start_step: global step of the first batch yielded by ``__iter__``.
    """

    def __init__(
        self,
        dataset_size: int,
        *,
        batch_size_per_rank: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        start_step: int = 0,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError(f"dataset_size must be positive, got {dataset_size}")
        if batch_size_per_rank <= 0:
            raise ValueError(f"batch_size_per_rank must be positive, got {batch_size_per_rank}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.dataset_size = dataset_size
        self.batch_size_per_rank = batch_size_per_rank
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.start_step = start_step
        self._cached_epoch: int | None = None
        self._cached_permutation: list[int] = []

    @property
    def global_batch_size(self) -> int:
        """Samples consumed per step by all ranks together."""
        return self.batch_size_per_rank * self.world_size

    def epoch_permutation(self, epoch: int) -> list[int]:
        """The order of dataset indices in epoch ``epoch`` (same on every rank)."""
        if epoch != self._cached_epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
                order = torch.randperm(self.dataset_size, generator=generator).tolist()
            else:
                order = list(range(self.dataset_size))
            self._cached_epoch, self._cached_permutation = epoch, order
        return self._cached_permutation

    def indices_for_step(self, step: int) -> list[int]:
        """Dataset indices this rank loads at global step ``step`` (length ``batch_size_per_rank``)."""
        first = step * self.global_batch_size + self.rank
        indices = []
        for k in range(self.batch_size_per_rank):
            position = first + k * self.world_size
            epoch, offset = divmod(position, self.dataset_size)
            indices.append(self.epoch_permutation(epoch)[offset])
        return indices

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            yield from self.indices_for_step(step)
            step += 1
