"""Datasets written by the synthetic head studio train the systems as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from headforge.data.dataset import HeadDataset
from headforge.data.studio import run_synth
from headforge.training.checkpoint import latest_checkpoint, load_checkpoint
from headforge.training.launch import TrainRequest, train


@pytest.mark.parametrize(("preset", "model", "count"), [("images", "eg3d", 8), ("videos", "nerffaceshop", 8)])
def test_synth_dataset_trains(tmp_path: Path, preset: str, model: str, count: int) -> None:
    data = tmp_path / "data"
    run_synth(preset, count, 32, seed=3, out=data, progress=False)
    dataset = HeadDataset(data, maps=("albedo", "segmentation"))
    assert len(dataset) == count and dataset.has_sh and dataset.has_params
    summary = train(
        TrainRequest(
            model=model, data=data, out=tmp_path / "run", preset="tiny", kimg=0.002, batch=2, progress=False
        )
    )
    assert summary["steps"] == 1
    tensors, meta = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert meta["config"]["model"] == model
    assert meta["config"]["model_config"]["output_resolution"] == 32
