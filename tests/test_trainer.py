"""The generic Trainer on a toy GAN: outputs, resume after SIGKILL / SIGINT, validation."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset
from toy_gan import build_trainer

from headforge.training import Phase, Trainer, make_adam, save_image_grid
from headforge.training.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta
from headforge.training.distributed import DistContext

TOY_SCRIPT = Path(__file__).with_name("toy_gan.py")
TOTAL_STEPS = 8


def _script_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run_toy(out_dir: Path, *args: str) -> dict:
    """Run the toy GAN script to completion and return its summary."""
    result = subprocess.run(
        [
            sys.executable,
            str(TOY_SCRIPT),
            "--out",
            str(out_dir),
            "--steps",
            str(TOTAL_STEPS),
            "--no-tensorboard",
            *args,
        ],
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary_lines = [line for line in result.stdout.splitlines() if line.startswith("SUMMARY ")]
    return json.loads(summary_lines[-1].removeprefix("SUMMARY "))


def _start_slow_toy(out_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(TOY_SCRIPT),
            "--out",
            str(out_dir),
            "--steps",
            str(TOTAL_STEPS),
            "--sleep",
            "0.25",
            "--no-tensorboard",
        ],
        env=_script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"training exited before {path} appeared: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.01)


def _assert_same_checkpoint(stem_a: Path, stem_b: Path) -> None:
    tensors_a, meta_a = load_checkpoint(stem_a)
    tensors_b, meta_b = load_checkpoint(stem_b)
    assert meta_a["step"] == meta_b["step"] == TOTAL_STEPS
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:
        a, b = tensors_a[key], tensors_b[key]
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=0, atol=1e-6), f"{key} differs by {(a - b).abs().max()}"
        else:
            assert torch.equal(a, b), key


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory) -> Path:
    """The reference run, in this process with one thread like the scripts (OMP_NUM_THREADS=1)."""
    out_dir = tmp_path_factory.mktemp("unbroken")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = build_trainer(out_dir, steps=TOTAL_STEPS, tensorboard=False).train()
    finally:
        torch.set_num_threads(threads)
    assert summary["steps"] == TOTAL_STEPS and summary["resumed_from"] is None
    return out_dir / "checkpoints" / f"step-{TOTAL_STEPS:08d}"


def test_toy_gan_trains_and_writes_outputs(tmp_path):
    trainer = build_trainer(tmp_path, steps=6, checkpoint_every=2, snapshot_every=3)
    summary = trainer.train()
    assert summary["steps"] == 6 and summary["kimg"] == pytest.approx(0.024)
    assert set(summary["losses"]) == {"Loss/Gmain", "Loss/Dmain", "Loss/Dreg"}
    assert all(math.isfinite(value) for value in summary["losses"].values())
    G, G_ema = trainer.networks["G"], trainer.networks["G_ema"]
    assert not all(torch.equal(a, b) for a, b in zip(G.parameters(), G_ema.parameters()))
    assert torch.equal(G.forward_calls, G_ema.forward_calls)  # buffers are copied, not averaged
    assert all(p.requires_grad for p in G.parameters()) and not any(
        p.requires_grad for p in G_ema.parameters()
    )

    checkpoints = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == [f"step-0000000{s}.{ext}" for s in (4, 6) for ext in ("json", "safetensors")]
    meta = read_checkpoint_meta(tmp_path / "checkpoints" / "step-00000006")
    assert meta["config"]["model"] == "toy" and meta["step"] == 6 and meta["cur_nimg"] == 24
    assert set(meta["optimizers"]) == {"G", "D"}  # Dmain and Dreg share one optimizer
    tensors, _ = load_checkpoint(tmp_path / "checkpoints" / "step-00000006")
    assert {key.split(".")[0] for key in tensors} == {"G", "G_ema", "D", "opt", "rng"}

    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    grids = sorted((tmp_path / "images").glob("*.png"))
    assert [path.name for path in grids] == ["fakes-00000003.png", "fakes-00000006.png"]
    assert Image.open(grids[0]).size == (16, 16)  # 2 x 2 grid of 8 x 8 images
    stats = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [row["step"] for row in stats] == [2, 4, 6]
    assert "Progress/kimg_per_sec" in stats[0] and "Timing/Gmain_sec" in stats[0]


def test_resume_rejects_a_different_config(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="headforge.training"):
        build_trainer(tmp_path, steps=2, resume=True).train()
    assert "no checkpoint" in caplog.text and "starting fresh" in caplog.text
    with pytest.raises(CheckpointError, match="latents_from_data.*--accept-config-change"):
        build_trainer(tmp_path, steps=4, latents_from_data=True, resume=True).train()
    assert not (tmp_path / "config_changes.jsonl").exists()


def test_an_accepted_learning_rate_change_takes_effect_on_resume(tmp_path):
    """The moments come from the checkpoint, the learning rate from the new config."""
    build_trainer(tmp_path, steps=2).train()
    tensors, meta = load_checkpoint(tmp_path / "checkpoints" / "step-00000002")
    resumed = build_trainer(tmp_path, steps=2, g_lr=0.002, resume=True, accept_config_changes=("g_lr",))
    resumed.train()  # already at step 2: loads and stops
    assert resumed.resumed_from == 2
    (optimizer,) = [phase.optimizer for phase in resumed.phases if phase.name == "Gmain"]
    assert [group["lr"] for group in optimizer.param_groups] == [0.002]
    stored = meta["optimizers"]["G"]["param_groups"][0]["lr"]
    assert stored == 0.01  # what load_state_dict alone would bring back
    first = optimizer.param_groups[0]["params"][0]
    assert torch.equal(optimizer.state[first]["exp_avg_sq"], tensors["opt.G.state.0.exp_avg_sq"])


def test_resume_accepts_a_named_config_change_and_records_it(tmp_path, caplog):
    build_trainer(tmp_path, steps=2).train()
    with pytest.raises(CheckpointError, match="latents_from_data"):  # another field does not open the door
        build_trainer(
            tmp_path, steps=4, latents_from_data=True, resume=True, accept_config_changes=("z_dim",)
        ).train()
    with caplog.at_level(logging.WARNING, logger="headforge.training"):
        trainer = build_trainer(
            tmp_path,
            steps=4,
            latents_from_data=True,
            resume=True,
            accept_config_changes=("latents_from_data",),
        )
        trainer.train()
    assert trainer.resumed_from == 2 and trainer.step == 4
    assert "changed config (accepted)" in caplog.text
    (record,) = [json.loads(line) for line in (tmp_path / "config_changes.jsonl").read_text().splitlines()]
    assert record["step"] == 2
    assert record["changes"] == {"latents_from_data": {"stored": False, "now": True}}
    # The new checkpoints carry the new config: a plain resume needs no acceptance any more.
    assert (
        read_checkpoint_meta(tmp_path / "checkpoints" / "step-00000004")["config"]["latents_from_data"]
        is True
    )
    build_trainer(tmp_path, steps=6, latents_from_data=True, resume=True).train()


def test_resume_after_sigkill_equals_unbroken_run(tmp_path, unbroken_run):
    process = _start_slow_toy(tmp_path)
    _wait_for(tmp_path / "checkpoints" / "step-00000002.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "checkpoints" / f"step-{TOTAL_STEPS:08d}.json").exists()

    summary = _run_toy(tmp_path, "--resume")
    assert summary["resumed_from"] in (2, 4, 6) and summary["steps"] == TOTAL_STEPS
    _assert_same_checkpoint(unbroken_run, tmp_path / "checkpoints" / f"step-{TOTAL_STEPS:08d}")


def test_sigint_saves_then_resume_equals_unbroken_run(tmp_path, unbroken_run):
    process = _start_slow_toy(tmp_path)
    _wait_for(tmp_path / "checkpoints" / "step-00000002.json", process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.splitlines()[-1].removeprefix("SUMMARY "))
    stopped_at = summary["steps"]
    assert summary["interrupted"] and 2 <= stopped_at < TOTAL_STEPS
    assert summary["checkpoint"].endswith(f"step-{stopped_at:08d}")

    summary = _run_toy(tmp_path, "--resume")
    assert summary["resumed_from"] == stopped_at
    _assert_same_checkpoint(unbroken_run, tmp_path / "checkpoints" / f"step-{TOTAL_STEPS:08d}")


def _regression_trainer(out_dir: Path, model: nn.Module, batch_size: int = 4, **kwargs) -> Trainer:
    inputs = torch.linspace(-1, 1, 8).unsqueeze(1)
    dataset = TensorDataset(inputs, 3 * inputs + 1)

    def mse(ctx):
        x, y = ctx.batch
        return (ctx.networks["M"](x) - y).square().mean()

    phase = Phase("fit", "M", make_adam(model.parameters(), lr=0.05, betas=(0.9, 0.99)), mse)
    return Trainer(
        {"M": model},
        [phase],
        dataset,
        batch_size=batch_size,
        total_kimg=0.04,
        out_dir=out_dir,
        device="cpu",
        checkpoint_every=None,
        progress=False,
        tensorboard=False,
        **kwargs,
    )


def test_frozen_parameters_stay_frozen_and_tuples_collate(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    model.bias.requires_grad_(False)
    bias_before = model.bias.detach().clone()
    summary = _regression_trainer(tmp_path, model).train()
    assert summary["steps"] == 10 and summary["losses"]["Loss/fit"] < 10
    assert torch.equal(model.bias, bias_before) and not model.bias.requires_grad
    assert model.weight.requires_grad
    assert (tmp_path / "checkpoints" / "step-00000010.json").exists()  # final checkpoint


def test_invalid_setups_are_rejected(tmp_path):
    model = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="multiple of world size 2"):
        _regression_trainer(tmp_path, model, batch_size=3, dist=DistContext(world_size=2))
    with pytest.raises(ValueError, match="unknown network"):
        _regression_trainer(tmp_path, model, ema_of={"M_ema": "M"})


def test_image_grid_layout(tmp_path):
    images = torch.stack([torch.full((3, 2, 4), value) for value in (-1.0, 1.0, 0.0)])
    images[2, 0] = 1.0  # third image: red channel on
    picture = save_image_grid(images, tmp_path / "grid.png", grid=(2, 2))
    assert picture.shape == (4, 8, 3)  # rows * H, cols * W
    assert (picture[:2, :4] == 0).all() and (picture[:2, 4:] == 255).all()
    assert (picture[2:, :4] == [255, 128, 128]).all()
    assert (picture[2:, 4:] == 0).all()  # empty cell
    reloaded = np.asarray(Image.open(tmp_path / "grid.png"))
    assert np.array_equal(reloaded, picture)


def test_config_differences_ignore_new_fields_left_at_their_default():
    from headforge.training.trainer_state import config_differences

    stored = {"model": "m", "model_config": {"a": 1}}
    live = {"model": "m", "model_config": {"a": 1, "new": "none", "other": 3}}
    defaults = {"model_config": {"a": 0, "new": "none", "other": 2}}
    # "new" predates the stored run and keeps its default: no change; "other" is not its default.
    assert config_differences(stored, live, defaults=defaults) == ["model_config.other"]
    assert config_differences(stored, live) == ["model_config.new", "model_config.other"]
    # A field present in both is compared as it is, whatever its default.
    assert config_differences({"model_config": {"a": 5}}, {"model_config": {"a": 0}}, defaults=defaults) == [
        "model_config.a"
    ]
    # A field that disappeared is a difference.
    assert config_differences({"x": 1}, {}, defaults={"x": 1}) == ["x"]
