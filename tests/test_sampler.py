"""InfiniteShardedSampler: disjoint covering shards, exact resume, DataLoader integration."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from headforge.data.sampler import InfiniteShardedSampler, derive_seed


def _rank_samplers(
    size: int, world_size: int, per_rank: int, seed: int = 0, **kwargs
) -> list[InfiniteShardedSampler]:
    return [
        InfiniteShardedSampler(
            size, batch_size_per_rank=per_rank, rank=r, world_size=world_size, seed=seed, **kwargs
        )
        for r in range(world_size)
    ]


@pytest.mark.parametrize(("size", "world_size", "per_rank"), [(10, 3, 2), (12, 2, 3), (7, 1, 4)])
def test_shards_are_disjoint_and_cover_each_epoch(size, world_size, per_rank):
    samplers = _rank_samplers(size, world_size, per_rank, seed=3)
    steps = 4 * size  # several epochs, with batches straddling epoch boundaries
    # Reassemble the global stream: position s*G + k*W + r belongs to rank r.
    stream = []
    for step in range(steps):
        per_rank_indices = [sampler.indices_for_step(step) for sampler in samplers]
        for k in range(per_rank):
            stream.extend(per_rank_indices[r][k] for r in range(world_size))
    epochs = [stream[e * size : (e + 1) * size] for e in range(len(stream) // size)]
    for epoch_indices in epochs:
        assert sorted(epoch_indices) == list(range(size))
    for e, epoch_indices in enumerate(epochs):  # ranks own disjoint positions of each epoch
        owners = {
            r: {epoch_indices[p] for p in range(size) if (e * size + p) % world_size == r}
            for r in range(world_size)
        }
        for a, b in itertools.combinations(owners.values(), 2):
            assert not a & b
    assert len({tuple(epoch) for epoch in epochs}) > 1  # reshuffled between epochs


def test_resume_from_step_yields_the_same_indices():
    unbroken = iter(_rank_samplers(11, 2, 3, seed=5)[1])
    history = [next(unbroken) for _ in range(3 * 40)]
    for start_step in (0, 1, 7, 25):
        resumed = iter(
            InfiniteShardedSampler(
                11, batch_size_per_rank=3, rank=1, world_size=2, seed=5, start_step=start_step
            )
        )
        tail = [next(resumed) for _ in range(3 * (40 - start_step))]
        assert tail == history[3 * start_step :]


def test_seed_and_shuffle_control_the_order():
    ordered = InfiniteShardedSampler(6, batch_size_per_rank=6, shuffle=False)
    assert ordered.indices_for_step(0) == list(range(6)) == ordered.indices_for_step(1)
    a = InfiniteShardedSampler(50, batch_size_per_rank=50, seed=1).indices_for_step(0)
    b = InfiniteShardedSampler(50, batch_size_per_rank=50, seed=2).indices_for_step(0)
    assert a != b and sorted(a) == sorted(b) == list(range(50))
    assert derive_seed(1, 2) != derive_seed(2, 1) and 0 <= derive_seed(1, 2) < 2**63


def test_dataloader_batches_follow_the_steps():
    dataset = TensorDataset(torch.arange(9))
    sampler = InfiniteShardedSampler(9, batch_size_per_rank=4, seed=1, start_step=2)
    loader = iter(DataLoader(dataset, batch_size=4, sampler=sampler))
    for step in range(2, 6):
        (batch,) = next(loader)
        assert batch.tolist() == sampler.indices_for_step(step)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        InfiniteShardedSampler(0, batch_size_per_rank=1)
    with pytest.raises(ValueError):
        InfiniteShardedSampler(4, batch_size_per_rank=1, rank=2, world_size=2)
