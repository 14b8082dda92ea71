"""Tests of ``run_synth``: reproducibility, resume, worker pools, dataset format, video previews, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch

from headforge.data import HeadDataset
from headforge.data.studio import SynthError, run_synth
from headforge.data.studio.writer import MANIFEST_NAME, image_name, item_files, preview_name
from headforge.heads.procedural import ProceduralHeadModel

RESOLUTION = 32
MAP_KINDS = ("albedo", "normal", "depth", "segmentation", "shading")


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def synth(out: Path, preset: str = "images", count: int = 3, seed: int = 0, workers: int = 1) -> dict:
    return run_synth(
        preset,
        count,
        RESOLUTION,
        seed,
        out,
        workers=workers,
        progress=False,
        head_model_factory=ProceduralHeadModel,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An unbroken 4-image run (seed 0)."""
    out = tmp_path_factory.mktemp("reference")
    summary = synth(out, count=4)
    assert summary["generated"] == 4 and summary["skipped"] == 0
    return out


def test_same_seed_gives_identical_bytes_with_any_worker_count(reference, tmp_path):
    again = tmp_path / "again"
    summary = synth(again, count=4, workers=2)
    assert summary["workers"] == 2 and summary["generated"] == 4
    assert tree_hashes(again) == tree_hashes(reference)
    other = tmp_path / "other"
    synth(other, count=4, seed=1)
    differing = [
        name
        for name, digest in tree_hashes(other).items()
        if name.endswith(".png") and tree_hashes(reference).get(name) != digest
    ]
    assert len(differing) >= 4 * 6 - 2  # every image and map changes with the seed


def test_resume_after_an_interrupt_matches_the_unbroken_run(reference, tmp_path):
    out = tmp_path / "broken"
    synth(out, count=4)
    # Simulate a crash: image 2 lost its files and record, image 3 has a map but no image, the
    # manifest ends in a half-written line, a temporary file is left over, dataset.json is missing.
    for name in item_files(2):
        (out / name).unlink()
    (out / image_name(3)).unlink()
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["index"] not in (2, 3)]
    (out / MANIFEST_NAME).write_text("\n".join(kept) + "\n" + lines[-1][: len(lines[-1]) // 2])
    (out / "00000" / ".img00000002.png.abcd.tmp").write_bytes(b"partial")
    (out / "dataset.json").unlink()
    summary = synth(out, count=4)
    assert summary["generated"] == 2 and summary["skipped"] == 2
    assert tree_hashes(out) == tree_hashes(reference)


def test_extending_a_run_adds_images_and_keeps_the_first_ones(reference, tmp_path):
    out = tmp_path / "grow"
    synth(out, count=2)
    summary = synth(out, count=4)
    assert summary["skipped"] == 2 and summary["generated"] == 2
    assert tree_hashes(out) == tree_hashes(reference)


def test_dataset_loads_with_every_key_and_map(reference):
    dataset = HeadDataset(reference, maps=MAP_KINDS)
    assert len(dataset) == 4 and dataset.has_sh and dataset.has_params and dataset.has_identities
    assert dataset.params_model == "procedural"
    item = dataset[1]
    assert item["image"].shape == (3, RESOLUTION, RESOLUTION)
    assert item["sh"].shape == (9, 3) and item["camera"].shape == (25,)
    assert set(item["params"]) == {"shape", "expression", "pose"} and item["params"]["pose"].shape == (15,)
    depth = item["depth"][item["depth"] > 0]
    assert depth.min() > 2.0 and depth.max() < 3.4  # the head sits about 2.7 from the camera
    segmentation = item["segmentation"]
    assert segmentation.min() == 0 and {1, 3}.issubset(set(segmentation.unique().long().tolist()))
    normal = item["normal"][:, segmentation[0] > 0]
    assert torch.allclose(normal.norm(dim=0), torch.ones(normal.shape[1]), atol=0.02)
    assert dataset.meta["preset"] == "images" and dataset.meta["seed"] == 0
    assert dataset.meta["depth_scale"] == 1e-4 and "generator_version" in dataset.meta
    text = (reference / "dataset.json").read_text()
    assert "time" not in text  # no time stamps: reruns are byte-identical


def test_videos_preset_writes_clips_with_consecutive_frames_and_a_preview(tmp_path):
    out = tmp_path / "videos"
    summary = synth(out, preset="videos", count=5)
    assert summary["previews"] == 1
    dataset = HeadDataset(out, maps=("segmentation",))
    assert dataset.has_clips
    assert dataset.clips() == {0: [0, 1, 2, 3, 4]}
    frames = [int(dataset[i]["frame"]) for i in range(5)]
    assert frames == [0, 1, 2, 3, 4] and {int(dataset[i]["clip"]) for i in range(5)} == {0}
    assert {int(dataset[i]["identity"]) for i in range(5)} == {0}
    reader = imageio.get_reader(out / preview_name(0), format="FFMPEG")
    decoded = [frame for frame in reader]
    reader.close()
    assert len(decoded) == 5 and decoded[0].shape == (RESOLUTION, RESOLUTION, 3)
    # Motion is smooth: consecutive frames differ, but less than frames of different identities.
    first = dataset[0]["image"]
    step = (dataset[1]["image"] - first).abs().mean()
    assert 0 < step < 0.2


def test_benchmark_identities_are_held_out(tmp_path):
    out = tmp_path / "bench"
    synth(out, preset="benchmark", count=2)
    dataset = HeadDataset(out)
    assert [int(dataset[i]["identity"]) for i in range(2)] == [1_000_000, 1_000_000]
    synth(tmp_path / "train", preset="images", count=1)
    train_shape = HeadDataset(tmp_path / "train")[0]["params"]["shape"]
    assert not torch.allclose(dataset[0]["params"]["shape"], train_shape)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(SynthError, match="unknown preset"):
        synth(tmp_path / "a", preset="nope")
    with pytest.raises(SynthError, match="count"):
        synth(tmp_path / "a", count=0)
    with pytest.raises(SynthError, match="resolution"):
        run_synth("images", 1, 30, 0, tmp_path / "a", progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="not empty"):
        synth(foreign, count=1)
    used = tmp_path / "used"
    synth(used, count=1)
    with pytest.raises(SynthError, match="different settings"):
        synth(used, count=1, seed=5)
