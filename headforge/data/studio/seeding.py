"""Stable per-item seeds, so items can be generated in any order, in any process.

Every random choice of the studio draws from a generator seeded by
:func:`derive_seed` of a *path* of names and numbers, e.g.
``derive_seed(seed, "train", "identity", 17)``. The hash is BLAKE2b of the
path's text, so it is the same in every process and Python version (unlike
``hash()``), and two different paths give unrelated streams.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["derive_seed", "torch_generator", "numpy_generator"]

#: Seeds are kept below 2**63 so that ``torch.Generator.manual_seed`` accepts them.
_SEED_BITS = 63


def derive_seed(*path: int | str) -> int:
    """A 63-bit seed from a path of ints and strings, e.g. ``(seed, "identity", 3)``.

    Ints and strings are tagged differently, so ``(1,)`` and ``("1",)`` differ.
    """
    text = "/".join(f"i{part}" if isinstance(part, int) else f"s{part}" for part in path)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - _SEED_BITS)


def torch_generator(*path: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*path)``.

    Draws happen on the CPU and are moved to the working device afterwards, so
    the same seed gives the same values on CPU and CUDA runs.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(*path))
    return generator


def numpy_generator(*path: int | str) -> np.random.Generator:
    """A NumPy ``Generator`` (PCG64) seeded with ``derive_seed(*path)``."""
    return np.random.default_rng(derive_seed(*path))
