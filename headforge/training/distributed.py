"""Multi-process helpers for torchrun, with a single-process path that needs no process group.

Gradient averaging is done by hand (as in StyleGAN2-ADA) rather than with
``DistributedDataParallel`` wrappers: a GAN step runs several phases on
different modules, often with double back-propagation (R1) and modules used
inside other modules' losses, which DDP's per-module hooks handle badly. After
each phase's backward pass the trainer averages that phase's gradients with one
flat ``all_reduce``; because every rank starts from rank 0's weights and applies
the same averaged gradients, the weights stay identical on all ranks.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from headforge.runtime import default_device

__all__ = [
    "DistContext",
    "all_reduce_gradients",
    "barrier",
    "broadcast_module",
    "cleanup_distributed",
    "find_free_port",
    "init_distributed",
    "is_distributed",
    "reduce_scalar_dict",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes (1 when not launched by torchrun).
        local_rank: rank on this machine; selects the CUDA device.
        device: the device this process trains on.
        backend: ``"nccl"``, ``"gloo"``, or ``None`` for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes logs and checkpoints."""
        return self.rank == 0


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Read torchrun's environment and join the process group when there is more than one process.

    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``)
    come from torchrun. Without them (or with ``WORLD_SIZE=1``) no process group
    is created and a single-process context is returned.

    Args:
        device: ``"cpu"``, ``"cuda"`` or an explicit device. ``None`` picks
            ``cuda:LOCAL_RANK`` when CUDA is available, else CPU. ``"cuda"``
            without an index means ``cuda:LOCAL_RANK``.
        timeout_s: collective timeout.

    Returns:
        The :class:`DistContext`; backend nccl on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    resolved = torch.device(default_device(device) if device is None else device)
    if resolved.type == "cuda":
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if world_size <= 1:
        return DistContext(rank=0, world_size=1, local_rank=0, device=resolved, backend=None)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if not is_distributed():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    return DistContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=resolved, backend=backend
    )


def cleanup_distributed() -> None:
    """Leave the process group (no-op for a single process)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if is_distributed():
        dist.barrier()


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer with rank ``src``'s values (no-op for a single process)."""
    if not is_distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=src)


@torch.no_grad()
def all_reduce_gradients(params: Iterable[Tensor], world_size: int, scrub_nonfinite: bool = True) -> None:
    """Average gradients over ranks in one flat buffer, then optionally replace non-finite values.

    A parameter whose gradient is ``None`` on some ranks but not others gets a
    zero gradient on the ranks that lack one (so flat buffers line up and no
    rank hangs); gradients that are ``None`` everywhere stay ``None``, so the
    optimiser skips those parameters exactly as in a single process.

    Args:
        params: parameters whose ``.grad`` to average, in the same order on every rank.
        world_size: number of processes; 1 skips communication.
        scrub_nonfinite: replace NaN by 0 and +-inf by +-1e5 (StyleGAN2-ADA's
            guard). Disable when a GradScaler must see the infs.
    """
    params = list(params)
    if world_size > 1 and is_distributed() and params:
        has_grad = torch.tensor(
            [p.grad is not None for p in params], dtype=torch.float32, device=params[0].device
        )
        dist.all_reduce(has_grad)
        params = [p for p, present in zip(params, has_grad.tolist()) if present > 0]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    else:
        params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    if world_size > 1 and is_distributed():
        dist.all_reduce(flat)
        flat /= world_size
    if scrub_nonfinite:
        torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5, out=flat)
    offset = 0
    for p in params:
        count = p.numel()
        p.grad.copy_(flat[offset : offset + count].view_as(p.grad))
        offset += count


def reduce_scalar_dict(
    values: Mapping[str, float | Tensor], world_size: int, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Average scalar statistics over ranks for logging.

    Every rank must pass the same keys. Tensors are reduced to their mean.

    Returns:
        ``{key: mean over ranks}`` as Python floats.
    """
    keys = sorted(values)
    local = torch.tensor(
        [
            float(values[k].detach().float().mean()) if isinstance(values[k], Tensor) else float(values[k])
            for k in keys
        ],
        dtype=torch.float64,
        device=device,
    )
    if world_size > 1 and is_distributed() and keys:
        dist.all_reduce(local)
        local /= world_size
    return dict(zip(keys, local.tolist()))


def find_free_port() -> int:
    """A TCP port on localhost that is free right now (for MASTER_PORT in tests and local launches)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
