"""Distributed helpers: single-process fallbacks, gloo collectives, 2-process training == 1 process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn
from toy_gan import build_trainer

from headforge.training.checkpoint import load_checkpoint
from headforge.training.distributed import (
    all_reduce_gradients,
    barrier,
    broadcast_module,
    cleanup_distributed,
    find_free_port,
    init_distributed,
    is_distributed,
    reduce_scalar_dict,
)

TOY_SCRIPT = Path(__file__).with_name("toy_gan.py")


def test_single_process_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.backend) == (0, 1, True, None)
    assert ctx.device == torch.device("cpu") and not is_distributed()
    module = nn.Linear(2, 2)
    before = [p.detach().clone() for p in module.parameters()]
    broadcast_module(module)
    barrier()
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))
    assert reduce_scalar_dict({"a": torch.tensor([1.0, 3.0]), "b": 5}, world_size=1) == {"a": 2.0, "b": 5.0}


def test_gradient_scrub_single_process():
    weight, bias, unused = (nn.Parameter(torch.zeros(3)) for _ in range(3))
    weight.grad = torch.tensor([float("nan"), float("inf"), -float("inf")])
    bias.grad = torch.tensor([1.0, 2.0, 3.0])
    all_reduce_gradients([weight, bias, unused], world_size=1)
    assert weight.grad.tolist() == [0.0, 1e5, -1e5]
    assert bias.grad.tolist() == [1.0, 2.0, 3.0]
    assert unused.grad is None  # the optimiser must still skip it


def _collectives_worker(rank: int, world_size: int, port: int, results: dict) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    ctx = init_distributed(device="cpu")
    try:
        torch.manual_seed(rank)  # different weights on each rank until broadcast
        module = nn.Linear(2, 2)
        broadcast_module(module)
        shared = nn.Parameter(torch.zeros(2))
        only_rank0 = nn.Parameter(torch.zeros(2))
        never = nn.Parameter(torch.zeros(1))
        shared.grad = torch.full((2,), float(rank + 1))  # 1 and 2 -> mean 1.5
        if rank == 0:
            only_rank0.grad = torch.tensor([4.0, -4.0])  # missing on rank 1 -> mean 2, -2
        all_reduce_gradients([shared, only_rank0, never], ctx.world_size)
        stats = reduce_scalar_dict({"loss": float(rank)}, ctx.world_size)
        results[rank] = {
            "weight": module.weight.detach().tolist(),
            "shared": shared.grad.tolist(),
            "only_rank0": only_rank0.grad.tolist(),
            "never": never.grad,
            "loss": stats["loss"],
            "backend": ctx.backend,
        }
    finally:
        cleanup_distributed()


def test_gloo_collectives_average_and_broadcast():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_collectives_worker, args=(2, find_free_port(), results), nprocs=2, join=True)
    assert results[0]["weight"] == results[1]["weight"]
    for rank in (0, 1):
        assert results[rank]["backend"] == "gloo"
        assert results[rank]["shared"] == [1.5, 1.5]
        assert results[rank]["only_rank0"] == [2.0, -2.0]
        assert results[rank]["never"] is None
        assert results[rank]["loss"] == 0.5


def _toy_command(out_dir: Path) -> list[str]:
    return [
        str(TOY_SCRIPT),
        "--out",
        str(out_dir),
        "--steps",
        "2",
        "--batch",
        "4",
        "--latents-from-data",
        "--dump-rank-weights",
        "--no-tensorboard",
    ]


def test_two_process_training_step_equals_one_process_on_the_combined_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    single, double = tmp_path / "one", tmp_path / "two"
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(find_free_port()),
    ]
    result = subprocess.run(
        [*launcher, *_toy_command(double)], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the workers (OMP_NUM_THREADS=1)
    try:
        build_trainer(single, steps=2, batch_size=4, latents_from_data=True, tensorboard=False).train()
    finally:
        torch.set_num_threads(threads)

    # Every rank ends with rank 0's weights.
    rank0, rank1 = load_file(double / "rank0.safetensors"), load_file(double / "rank1.safetensors")
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    # Step 0 runs Gmain, Dmain and the R1 phase; step 1 Gmain and Dmain. Weights and Adam moments agree.
    one, meta_one = load_checkpoint(single / "checkpoints" / "step-00000002")
    two, meta_two = load_checkpoint(double / "checkpoints" / "step-00000002")
    assert meta_one["world_size"] == 1 and meta_two["world_size"] == 2
    compared = [key for key in one if key.split(".")[0] in ("G", "D", "opt") and one[key].is_floating_point()]
    assert any(key.startswith("opt.D.state") for key in compared)
    for key in compared:
        assert torch.allclose(one[key], two[key], rtol=0, atol=1e-6), (
            f"{key}: {(one[key] - two[key]).abs().max()}"
        )
    # The weights moved: the comparison is not trivially between two initial states.
    torch.manual_seed(7)
    assert not torch.allclose(one["G.net.0.weight"], nn.Linear(8 + 25, 32).weight, atol=1e-4)
