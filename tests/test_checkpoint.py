"""Checkpoint files: round trips, atomic writes, damage detection, keep-last-K."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from headforge.training import checkpoint as ckpt
from headforge.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    checkpoint_paths,
    flatten_module_state,
    flatten_optimizer_state,
    latest_checkpoint,
    load_checkpoint,
    load_module_state,
    load_optimizer_state,
    read_checkpoint_meta,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


class TiedNet(nn.Module):
    """Linear layers with a tied weight, a buffer and a non-contiguous parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 3)
        self.decoder = nn.Linear(3, 4)
        self.head = nn.Linear(4, 3)
        self.head.weight = self.encoder.weight  # shared storage: safetensors needs copies
        self.register_buffer("running", torch.arange(5, dtype=torch.float32))
        self.transposed = nn.Parameter(torch.randn(3, 2).t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)) + self.head(x).sum() + self.transposed.sum()


def test_module_round_trip_with_tied_and_strided_tensors(tmp_path):
    torch.manual_seed(0)
    source, target = TiedNet(), TiedNet()
    save_checkpoint(tmp_path / "net", flatten_module_state(source, "G."), {"step": 3})
    tensors, meta = load_checkpoint(tmp_path / "net")
    assert meta == {"step": 3}
    load_module_state(target, tensors, "G.")
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name
    assert target.head.weight is target.encoder.weight  # the tie survives loading


def test_module_mismatch_is_reported():
    tensors = flatten_module_state(nn.Linear(2, 2), "D.")
    with pytest.raises(CheckpointError, match="D."):
        load_module_state(nn.Linear(2, 3, bias=False), tensors, "D.")
    with pytest.raises(CheckpointError, match="no tensors under prefix 'G.'"):
        load_module_state(nn.Linear(2, 2), tensors, "G.")


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=generator)
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        optimizer.step()


def test_adam_state_round_trip_continues_bit_identically(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.0, 0.99))
    _train(model, optimizer, steps=3, seed=5)

    opt_tensors, opt_meta = flatten_optimizer_state(optimizer, "opt.G.")
    assert "opt.G.state.0.exp_avg" in opt_tensors and "opt.G.state.3.step" in opt_tensors
    save_checkpoint(tmp_path / "c", {**flatten_module_state(model, "G."), **opt_tensors}, {"opt": opt_meta})

    torch.manual_seed(2)  # different initial weights: everything must come from the file
    restored = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    restored_opt = torch.optim.Adam(restored.parameters(), lr=0.5, betas=(0.9, 0.999))
    tensors, meta = load_checkpoint(tmp_path / "c")
    load_module_state(restored, tensors, "G.")
    load_optimizer_state(restored_opt, tensors, meta["opt"], "opt.G.")
    assert restored_opt.param_groups[0]["betas"] == (0.0, 0.99)  # tuple again, not a JSON list
    assert restored_opt.param_groups[0]["lr"] == 0.01

    _train(model, optimizer, steps=4, seed=6)
    _train(restored, restored_opt, steps=4, seed=6)
    for a, b in zip(model.parameters(), restored.parameters()):
        assert torch.equal(a, b)


def test_optimizer_group_mismatch_is_reported():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    two_groups = torch.optim.Adam([{"params": a.parameters()}, {"params": b.parameters()}])
    tensors, meta = flatten_optimizer_state(two_groups, "opt.D.")
    with pytest.raises(CheckpointError, match="parameter groups"):
        load_optimizer_state(torch.optim.Adam(a.parameters()), tensors, meta, "opt.D.")


def _draw_everything(generator: torch.Generator) -> list[float]:
    return [
        torch.rand(()).item(),
        float(np.random.rand()),
        np.random.randn(),
        random.random(),
        random.gauss(0, 1),
        torch.rand((), generator=generator).item(),
    ]


def test_rng_states_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(11)
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    _draw_everything(generator)  # leaves numpy and python with a cached Gaussian
    tensors, meta = capture_rng_state({"data": generator})
    save_checkpoint(tmp_path / "rng", tensors, {"rng": meta})
    expected = _draw_everything(generator)

    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    generator.manual_seed(99)
    loaded, loaded_meta = load_checkpoint(tmp_path / "rng")
    restore_rng_state(loaded, loaded_meta["rng"], {"data": generator})
    assert _draw_everything(generator) == expected
    with pytest.raises(CheckpointError, match="'other'"):
        restore_rng_state(loaded, loaded_meta["rng"], {"other": torch.Generator()})


def test_crash_during_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(2, {"w": torch.full((3,), 2.0)}, {"step": 2})

    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        calls.append(dst)
        if str(dst).endswith(".json"):  # killed between the two renames
            raise KeyboardInterrupt("simulated kill")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        manager.save(4, {"w": torch.full((5,), 4.0)}, {"step": 4})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert len(calls) == 2 and str(calls[0]).endswith(".safetensors")

    # step 4 has new tensors but no JSON: detected, and the manager falls back to step 2.
    with pytest.raises(CheckpointError, match="step-00000004.json is missing"):
        load_checkpoint(manager.stem_for_step(4))
    stem, tensors, meta = manager.load_latest()
    assert stem == manager.stem_for_step(2) and meta["step"] == 2
    assert torch.equal(tensors["w"], torch.full((3,), 2.0))
    assert manager.latest_valid() == manager.stem_for_step(2)


def test_crash_in_the_tensor_writer_changes_nothing(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "a", {"w": torch.ones(2)}, {"version": 1})
    before = sorted(os.listdir(tmp_path))

    def broken_serializer(tensors, metadata=None):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.safetensors.torch, "save", broken_serializer)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "a", {"w": torch.zeros(2)}, {"version": 2})
    assert sorted(os.listdir(tmp_path)) == before
    tensors, meta = load_checkpoint(tmp_path / "a")
    assert meta == {"version": 1} and torch.equal(tensors["w"], torch.ones(2))


def test_truncated_tensors_file_is_detected(tmp_path):
    save_checkpoint(tmp_path / "t", {"w": torch.randn(100)}, {})
    tensors_path, _ = checkpoint_paths(tmp_path / "t")
    data = tensors_path.read_bytes()
    tensors_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"t\.safetensors are truncated"):
        load_checkpoint(tmp_path / "t")


def test_mismatched_pair_is_detected(tmp_path):
    save_checkpoint(tmp_path / "a", {"w": torch.zeros(4)}, {"name": "a"})
    save_checkpoint(tmp_path / "b", {"w": torch.ones(4)}, {"name": "b"})  # same size, other content
    (tmp_path / "a.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes())
    with pytest.raises(
        CheckpointError, match=r"a\.safetensors do not match the SHA-256 recorded in .*a\.json"
    ):
        load_checkpoint(tmp_path / "a")
    save_checkpoint(tmp_path / "c", {"w": torch.zeros(9)}, {})
    (tmp_path / "a.safetensors").write_bytes((tmp_path / "c.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="different saves"):
        load_checkpoint(tmp_path / "a")


def test_garbage_and_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.json is missing"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(tmp_path / "g", {"w": torch.zeros(4)}, {})
    garbage = b"\x00" * (tmp_path / "g.safetensors").stat().st_size
    (tmp_path / "g.safetensors").write_bytes(garbage)
    with pytest.raises(CheckpointError, match=r"g\.safetensors is not a valid safetensors file"):
        load_checkpoint(tmp_path / "g", verify=False)
    (tmp_path / "g.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"g\.json is not valid JSON"):
        load_checkpoint(tmp_path / "g")
    (tmp_path / "g.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a headforge checkpoint"):
        read_checkpoint_meta(tmp_path / "g.json")


def test_keep_last_k_and_resolution(tmp_path):
    manager = CheckpointManager(tmp_path / "run" / "checkpoints", keep=2)
    for step in (10, 20, 30, 40):
        manager.save(step, {"w": torch.tensor([float(step)])}, {"step": step})
    assert manager.steps() == [30, 40]
    assert not [name for name in os.listdir(manager.directory) if name.startswith(".")]
    # A run resumed from 30 drops the abandoned step 40 at its next save.
    manager.save(30, {"w": torch.tensor([30.5])}, {"step": 30})
    assert manager.steps() == [30]
    assert read_checkpoint_meta(tmp_path / "run") == {"step": 30}
    assert resolve_checkpoint(tmp_path / "run" / "checkpoints") == manager.stem_for_step(30)
    assert resolve_checkpoint(manager.stem_for_step(30).with_suffix(".json")) == manager.stem_for_step(30)
    assert latest_checkpoint(tmp_path / "run") == manager.stem_for_step(30)
    (tmp_path / "empty").mkdir()
    assert latest_checkpoint(tmp_path / "empty") is None
    with pytest.raises(CheckpointError, match="no valid checkpoint found in .*empty"):
        resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(ValueError):
        CheckpointManager(tmp_path, keep=0)
