"""Tests for the EG3D-format dataset reader, its validation and the dataset.json writer."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headforge.data import (
    DatasetError,
    DatasetWarning,
    HeadDataset,
    check_batch_size,
    spread_indices,
    write_dataset_json,
)

SIZE = 8
FOCAL = 4.2647
X_ODD_SH = [3, 4, 7]  # Y11, Y2-2, Y21 in the basis order of docs/architecture.md


def camera_label(yaw: float, pitch: float = 0.0, radius: float = 2.7) -> list[float]:
    """EG3D label of an orbit camera looking at the origin (OpenCV axes), built independently."""
    eye = radius * np.array(
        [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)]
    )
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])  # x right; y down is forward x right
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    cam2world = np.eye(4)
    cam2world[:3, 0], cam2world[:3, 1], cam2world[:3, 2], cam2world[:3, 3] = right, down, forward, eye
    intrinsics = np.array([[FOCAL, 0, 0.5], [0, FOCAL, 0.5], [0, 0, 1.0]])
    return [*cam2world.reshape(-1).tolist(), *intrinsics.reshape(-1).tolist()]


def random_image(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def make_dataset(root: Path, count: int = 4, extras: bool = False, seed: int = 0) -> dict:
    """Write ``count`` random PNGs with labels (and every optional key when ``extras``); return the truth."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth: dict = {"files": [], "pixels": [], "labels": [], "sh": [], "params": [], "clips": [], "ids": []}
    for i in range(count):
        name = f"img/{i:05d}.png"
        (root / "img").mkdir(exist_ok=True)
        pixels = random_image(rng)
        Image.fromarray(pixels).save(root / name)
        truth["files"].append(name)
        truth["pixels"].append(pixels)
        truth["labels"].append(camera_label(0.3 * (i - count / 2), 0.05 * i))
        truth["sh"].append(rng.normal(size=27).tolist())
        truth["params"].append(
            {
                "shape": rng.normal(size=5).tolist(),
                "expression": rng.normal(size=3).tolist(),
                "pose": rng.normal(size=15).tolist(),
                "model": "procedural",
            }
        )
        truth["clips"].append((i % 2, count - i))  # frames deliberately out of order
        truth["ids"].append(10 + i % 3)
    keys = {}
    if extras:
        keys = dict(
            sh=dict(zip(truth["files"], truth["sh"])),
            params=dict(zip(truth["files"], truth["params"])),
            clips=dict(zip(truth["files"], truth["clips"])),
            identities=dict(zip(truth["files"], truth["ids"])),
            meta={"generator": "test", "seed": seed},
        )
    write_dataset_json(root, dict(zip(truth["files"], truth["labels"])), **keys)
    return truth


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return archive


def load_json(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def save_json(root: Path, document: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(document))


def as_01(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 127.5 - 1


@pytest.fixture(params=["folder", "zip"])
def stored(request, tmp_path):
    """A dataset with every optional key, opened as a folder or as a zip."""
    truth = make_dataset(tmp_path / "ds", extras=True)
    path = tmp_path / "ds" if request.param == "folder" else zip_folder(tmp_path / "ds", tmp_path / "ds.zip")
    return path, truth


# -- reading ------------------------------------------------------------------------------


def test_reads_exact_pixels_and_labels(stored):
    path, truth = stored
    dataset = HeadDataset(path)
    assert len(dataset) == dataset.num_images == 4 and dataset.resolution == SIZE
    for i in range(4):
        item = dataset[i]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, SIZE, SIZE)
        assert torch.equal(item["image"], as_01(truth["pixels"][i]))
        assert torch.equal(item["camera"], torch.tensor(truth["labels"][i], dtype=torch.float32))
        assert item["index"] == i and not item["flipped"]
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    with pytest.raises(IndexError):
        dataset[4]


def test_folder_and_zip_are_identical(tmp_path):
    make_dataset(tmp_path / "ds", extras=True)
    folder = HeadDataset(tmp_path / "ds", xflip=True)
    archive = HeadDataset(zip_folder(tmp_path / "ds", tmp_path / "ds.zip"), xflip=True)
    assert len(folder) == len(archive) == 8
    for i in range(len(folder)):
        a, b = folder[i], archive[i]
        assert a.keys() == b.keys()
        for key in ("image", "camera", "sh", "clip", "frame", "identity", "flipped"):
            assert torch.equal(a[key], b[key]), key
        assert all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])


def test_optional_keys_round_trip(stored):
    path, truth = stored
    dataset = HeadDataset(path)
    assert dataset.has_sh and dataset.has_params and dataset.has_clips and dataset.has_identities
    assert dataset.params_model == "procedural" and dataset.meta == {"generator": "test", "seed": 0}
    for i in range(4):
        item = dataset[i]
        assert torch.equal(item["sh"], torch.tensor(truth["sh"][i], dtype=torch.float32).reshape(9, 3))
        for name in ("shape", "expression", "pose"):
            assert torch.equal(
                item["params"][name], torch.tensor(truth["params"][i][name], dtype=torch.float32)
            )
        assert item["clip"].dtype == torch.int64 and item["clip"].item() == truth["clips"][i][0]
        assert item["frame"].item() == truth["clips"][i][1] and item["identity"].item() == truth["ids"][i]
    # Clip 0 holds items 0 (frame 4) and 2 (frame 2): sorted by frame -> [2, 0].
    assert dataset.clips() == {0: [2, 0], 1: [3, 1]}
    assert dataset.params_tensor("pose").shape == (4, 15)
    assert torch.equal(dataset.labels_tensor(), torch.tensor(truth["labels"], dtype=torch.float32))
    with pytest.raises(DatasetError, match="no 'nope'"):
        dataset.params_tensor("nope")


def test_xflip_mirrors_image_camera_and_sh(stored):
    path, _ = stored
    dataset = HeadDataset(path, xflip=True)
    assert len(dataset) == 8
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    for i in range(4):
        plain, mirrored = dataset[i], dataset[i + 4]
        assert mirrored["flipped"] and mirrored["index"] == i + 4
        assert torch.equal(mirrored["image"], plain["image"].flip(-1))
        cam2world = plain["camera"][:16].double().reshape(4, 4).numpy()
        expected = flip @ cam2world @ flip
        np.testing.assert_allclose(mirrored["camera"][:16].reshape(4, 4).numpy(), expected, atol=1e-6)
        intrinsics = plain["camera"][16:].clone()
        intrinsics[2] = 1 - intrinsics[2]  # principal x
        torch.testing.assert_close(mirrored["camera"][16:], intrinsics)
        signs = torch.ones(9, 1)
        signs[X_ODD_SH] = -1
        torch.testing.assert_close(mirrored["sh"], plain["sh"] * signs)
        # Head parameters are returned as stored; consumers read "flipped".
        assert torch.equal(mirrored["params"]["pose"], plain["params"]["pose"])
    # Pose sampling over a mirrored dataset: label rows line up with item indices.
    labels = dataset.labels_tensor(include_mirrored=True)
    assert labels.shape == (8, 25) and torch.equal(labels[4 + 2], dataset[6]["camera"])


def test_image_modes_convert_to_rgb(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    rgba = rng.integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    ramp = np.linspace(0, 255, SIZE)
    smooth = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128.0), axis=-1).astype(np.uint8)
    Image.fromarray(grey).save(root / "grey.png")
    Image.fromarray(rgba).save(root / "rgba.png")
    Image.fromarray(smooth).save(root / "photo.jpg", quality=95)
    write_dataset_json(root, {name: camera_label(0.0) for name in ("grey.png", "rgba.png", "photo.jpg")})
    dataset = HeadDataset(root)
    assert torch.equal(dataset[0]["image"], as_01(np.repeat(grey[..., None], 3, axis=2)))
    assert torch.equal(dataset[1]["image"], as_01(rgba[..., :3]))  # alpha dropped, not composited
    jpeg = dataset[2]["image"]
    assert torch.equal(jpeg, as_01(np.asarray(Image.open(root / "photo.jpg").convert("RGB"))))
    assert (jpeg - as_01(smooth)).abs().mean() < 0.05  # lossy, but close on a smooth image


def test_resolution_resizes_and_mismatched_sizes_fail(tmp_path):
    root = tmp_path / "ds"
    truth = make_dataset(root, count=3)
    Image.fromarray(random_image(np.random.default_rng(5), 16)).save(root / truth["files"][1])
    with pytest.raises(DatasetError, match=r"img/00001\.png: image is 16x16 but most images are 8x8"):
        HeadDataset(root)
    dataset = HeadDataset(root, resolution=4)
    assert dataset.resolution == 4 and all(dataset[i]["image"].shape == (3, 4, 4) for i in range(3))
    Image.fromarray(random_image(np.random.default_rng(5), 16)[:8]).save(root / truth["files"][2])
    with pytest.raises(DatasetError, match=r"00002\.png: image is 16x8, not square"):
        HeadDataset(root, resolution=4)


def test_dataloader_collates_from_zip_in_workers(stored):
    path, _ = stored
    dataset = HeadDataset(path, xflip=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["image"].shape == (4, 3, SIZE, SIZE) and batches[1]["flipped"].all()
    assert batches[0]["params"]["pose"].shape == (4, 15) and batches[1]["index"].tolist() == [4, 5, 6, 7]


def test_max_items_and_check_false(tmp_path):
    root = tmp_path / "ds"
    truth = make_dataset(root, count=5)
    (root / truth["files"][4]).write_bytes(b"not an image")
    assert HeadDataset(root, max_items=3).num_images == 3  # the broken item is beyond max_items
    unchecked = HeadDataset(root, check=False)  # trusts the files ...
    assert unchecked.num_images == 5 and unchecked.resolution == SIZE
    with pytest.raises(DatasetError, match=r"00004\.png: cannot decode image"):
        unchecked[4]  # ... until the broken one is read


def test_items_select_labels_in_order(tmp_path):
    root = tmp_path / "ds"
    truth = make_dataset(root, count=5)
    (root / truth["files"][1]).write_bytes(b"not an image")
    chosen = HeadDataset(root, items=[4, 0, 2])  # the broken item 1 is not among them
    assert chosen.num_images == 3
    for position, index in enumerate([4, 0, 2]):
        assert torch.equal(chosen[position]["image"], as_01(truth["pixels"][index]))
        label = torch.tensor(truth["labels"][index], dtype=torch.float32)
        assert torch.equal(chosen[position]["camera"], label)
    for bad in ([0, 0], [5], [-1], []):
        with pytest.raises(ValueError, match=r"ds: items must be distinct indices in 0\.\.4"):
            HeadDataset(root, items=bad, check=False)
    with pytest.raises(ValueError, match="max_items or items"):
        HeadDataset(root, items=[0], max_items=1)


@pytest.mark.parametrize("total,count", [(10, 3), (4608, 256), (7, 7), (5, 9), (97, 96), (1000, 1)])
def test_spread_indices_cover_the_whole_range(total, count):
    indices = spread_indices(total, count)
    assert len(indices) == min(total, count) and len(set(indices)) == len(indices)
    assert indices == sorted(indices) and indices[0] >= 0 and indices[-1] < total
    # every run of ceil(total / count) consecutive items holds one index: no stretch is skipped
    stride = -(-total // len(indices))
    gaps = np.diff([-1, *indices, total])
    assert gaps.max() <= stride + 1, gaps
    assert spread_indices(48 * 96, 256)[:3] == [9, 27, 45]  # strata of 18 frames: 2-3 per 48-frame clip


@pytest.mark.parametrize("total,count", [(10, 3), (300, 48), (7, 7), (5, 9), (49, 48), (1000, 1)])
def test_spread_indices_from_end_to_end_keep_the_first_and_last(total, count):
    indices = spread_indices(total, count, include_ends=True)
    assert len(indices) == min(total, count) and len(set(indices)) == len(indices)
    assert indices == sorted(indices) and indices[0] == 0
    if count > 1:
        assert indices[-1] == total - 1
        # evenly spaced: every gap is the ideal spacing rounded down or up
        spacing = (total - 1) / (min(total, count) - 1)
        assert set(np.diff(indices)) <= {int(np.floor(spacing)), int(np.ceil(spacing))}
    assert spread_indices(10, 3, include_ends=True) == [0, 4, 9]  # 4.5 rounds half to even
    with pytest.raises(ValueError, match="positive total and count"):
        spread_indices(10, 0, include_ends=True)


# -- maps ---------------------------------------------------------------------------------


def write_maps(root: Path, truth: dict, depth_format: str = "png") -> dict:
    rng = np.random.default_rng(7)
    maps: dict = {kind: {} for kind in ("albedo", "normal", "depth", "segmentation", "shading")}
    values: dict = {kind: [] for kind in maps}
    (root / "maps").mkdir(exist_ok=True)
    for i, file in enumerate(truth["files"]):
        for kind in ("albedo", "normal", "shading"):
            pixels = random_image(rng)
            Image.fromarray(pixels).save(root / f"maps/{kind}{i}.png")
            maps[kind][file], values[kind] = f"maps/{kind}{i}.png", [*values[kind], pixels]
        counts = rng.integers(0, 65536, (SIZE, SIZE), dtype=np.uint16)
        if depth_format == "png":
            Image.fromarray(counts).save(root / f"maps/depth{i}.png")
            maps["depth"][file] = f"maps/depth{i}.png"
        else:
            np.save(root / f"maps/depth{i}.npy", counts.astype(np.float32) * 1e-3)
            maps["depth"][file] = f"maps/depth{i}.npy"
        values["depth"].append(counts)
        segmentation = Image.fromarray(rng.integers(0, 19, (SIZE, SIZE), dtype=np.uint8), mode="L").convert(
            "P"
        )
        segmentation.save(root / f"maps/seg{i}.png")
        maps["segmentation"][file] = f"maps/seg{i}.png"
        values["segmentation"].append(np.array(segmentation))
    write_dataset_json(
        root, dict(zip(truth["files"], truth["labels"])), maps=maps, meta={"depth_scale": 2e-4}
    )
    return values


@pytest.mark.parametrize("depth_format", ["png", "npy"])
def test_maps_decode_to_documented_ranges(tmp_path, depth_format):
    root = tmp_path / "ds"
    truth = make_dataset(root, count=2)
    values = write_maps(root, truth, depth_format)
    kinds = ("albedo", "normal", "depth", "segmentation", "shading")
    dataset = HeadDataset(root, maps=kinds, xflip=True)
    assert set(dataset.map_kinds) == set(kinds)
    for i in range(2):
        item = dataset[i]
        for kind in ("albedo", "normal", "shading"):
            assert item[kind].shape == (3, SIZE, SIZE) and torch.equal(item[kind], as_01(values[kind][i]))
        scale = 2e-4 if depth_format == "png" else 1e-3  # meta.depth_scale applies to PNG counts only
        depth = torch.from_numpy(values["depth"][i].astype(np.float64) * scale).float()[None]
        torch.testing.assert_close(item["depth"], depth, rtol=1e-6, atol=1e-6)
        assert torch.equal(item["segmentation"], torch.from_numpy(values["segmentation"][i]).float()[None])
        mirrored = dataset[i + 2]
        assert torch.equal(mirrored["albedo"], item["albedo"].flip(-1))
        assert torch.equal(mirrored["depth"], item["depth"].flip(-1))
        assert torch.equal(mirrored["normal"][0], -item["normal"][0].flip(-1))  # x negated
        assert torch.equal(mirrored["normal"][1:], item["normal"][1:].flip(-1))


def test_maps_resize_nearest_for_ids_and_reject_bad_maps(tmp_path):
    root = tmp_path / "ds"
    truth = make_dataset(root, count=2)
    values = write_maps(root, truth)
    small = HeadDataset(root, maps=("segmentation", "depth"), resolution=4)
    ids = small[0]["segmentation"]
    assert ids.shape == (1, 4, 4) and set(ids.unique().tolist()) <= set(
        np.unique(values["segmentation"][0]).tolist()
    )
    with pytest.raises(DatasetError, match="no 'maps'|requested but the dataset has none"):
        HeadDataset(make_dataset_root(tmp_path), maps=("albedo",))
    Image.fromarray(random_image(np.random.default_rng(0))[..., 0]).save(root / "maps/depth1.png")  # 8-bit
    with pytest.raises(
        DatasetError, match=r"00001\.png: depth map maps/depth1\.png: depth PNG must be 16-bit"
    ):
        HeadDataset(root, maps=("depth",))
    Image.fromarray(random_image(np.random.default_rng(0), 4)).save(root / "maps/albedo0.png")
    with pytest.raises(DatasetError, match=r"00000\.png: albedo map maps/albedo0\.png is 4x4, image is 8x8"):
        HeadDataset(root, maps=("albedo",))
    os.remove(root / "maps/shading1.png")  # not requested: existence is still checked
    with pytest.raises(DatasetError, match=r"00001\.png: shading map maps/shading1\.png not found"):
        HeadDataset(root)


def make_dataset_root(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "plain", count=2)
    return tmp_path / "plain"


# -- validation ---------------------------------------------------------------------------


def corrupt_bytes(root, truth):
    (root / truth["files"][1]).write_bytes(b"\x89PNG garbage" * 8)
    return truth["files"][1], "cannot decode image"


def truncate_png(root, truth):
    path = root / truth["files"][1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return truth["files"][1], "cannot decode image"


def missing_file(root, truth):
    os.remove(root / truth["files"][1])
    return truth["files"][1], "not found"


def edit_json(edit):
    def corrupt(root, truth):
        document = load_json(root)
        message = edit(document)
        save_json(root, document)
        return truth["files"][1], message

    return corrupt


def _short_label(document):
    document["labels"][1][1] = document["labels"][1][1][:24]
    return "has 24 numbers, expected 25"


def _nan_label(document):
    document["labels"][1][1][5] = float("nan")
    return "non-finite"


def _bad_rotation(document):
    document["labels"][1][1][0] *= 1.5  # stretched x axis
    return "not orthonormal"


def _reflected_rotation(document):
    for k in (0, 4, 8):  # negate the first column: determinant -1
        document["labels"][1][1][k] *= -1
    return "reflection"


def _short_sh(document):
    document["sh"][1][1] = document["sh"][1][1][:26]
    return "has 26 numbers, expected 27"


def _nan_sh(document):
    document["sh"][1][1][3] = float("inf")
    return "non-finite"


def _missing_from_key(document):
    del document["identities"][1]
    return "missing from 'identities'"


def _duplicate_label(document):
    document["labels"].append(document["labels"][1])
    return "listed more than once in 'labels'"


def _bad_params(document):
    document["params"][1][1]["expression"] = [1.0, 2.0]
    return "params sizes"


def _duplicate_frame(document):
    document["clips"][1][1] = document["clips"][0][1]
    return "clip 0 frame 4 is also img/00000.png"


def _unknown_head_model(document):
    document["params"][1][1]["model"] = "bfm"
    return "model must be one of procedural, flame"


BAD_ITEM_CASES = {
    "corrupt bytes": corrupt_bytes,
    "truncated png": truncate_png,
    "missing file": missing_file,
    "wrong-length label": edit_json(_short_label),
    "nan label": edit_json(_nan_label),
    "bad rotation": edit_json(_bad_rotation),
    "reflection": edit_json(_reflected_rotation),
    "short sh": edit_json(_short_sh),
    "infinite sh": edit_json(_nan_sh),
    "missing from key": edit_json(_missing_from_key),
    "duplicate label": edit_json(_duplicate_label),
    "inconsistent params": edit_json(_bad_params),
    "duplicate frame": edit_json(_duplicate_frame),
    "unknown head model": edit_json(_unknown_head_model),
}


@pytest.mark.parametrize("case", BAD_ITEM_CASES)
@pytest.mark.parametrize("form", ["folder", "zip"])
def test_bad_item_raises_naming_path_file_and_problem(tmp_path, case, form):
    root = tmp_path / "ds"
    truth = make_dataset(root, extras=True)
    bad_file, problem = BAD_ITEM_CASES[case](root, truth)
    path = root if form == "folder" else zip_folder(root, tmp_path / "ds.zip")
    with pytest.raises(DatasetError) as caught:
        HeadDataset(path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert str(path) in message and f"{bad_file}: " in message and problem in message, message
    assert [p.file for p in caught.value.problems] == [bad_file]


@pytest.mark.parametrize("case", BAD_ITEM_CASES)
def test_skip_bad_drops_exactly_the_bad_item(tmp_path, case):
    root = tmp_path / "ds"
    truth = make_dataset(root, extras=True)
    bad_file, _ = BAD_ITEM_CASES[case](root, truth)
    with pytest.warns(DatasetWarning, match=re.escape(f"skipping {bad_file}")):
        dataset = HeadDataset(root, skip_bad=True)
    assert dataset.files == [f for f in truth["files"] if f != bad_file]
    for i, file in enumerate(dataset.files):
        assert torch.equal(dataset[i]["image"], as_01(truth["pixels"][truth["files"].index(file)]))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"labels": [', "not valid JSON"),
        (b'{"meta": {}}', "no 'labels' key"),
        (b'{"labels": null}', "'labels' in dataset.json is null"),
        (b"[1, 2]", "must hold a JSON object"),
    ],
)
def test_unusable_dataset_json(tmp_path, content, problem):
    root = tmp_path / "ds"
    make_dataset(root)
    (root / "dataset.json").write_bytes(content)
    for skip_bad in (False, True):
        with pytest.raises(DatasetError, match=re.escape(problem)) as caught:
            HeadDataset(root, skip_bad=skip_bad)
        assert str(root) in str(caught.value)


def test_missing_dataset_and_missing_json(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        HeadDataset(tmp_path / "nowhere")
    make_dataset(tmp_path / "ds")
    os.remove(tmp_path / "ds/dataset.json")
    with pytest.raises(DatasetError, match="no dataset.json"):
        HeadDataset(tmp_path / "ds")
    make_dataset(tmp_path / "ds")
    with zipfile.ZipFile(tmp_path / "nested.zip", "w") as zf:  # zipped the folder, not its contents
        for path in (tmp_path / "ds").rglob("*"):
            zf.write(path, path.relative_to(tmp_path).as_posix())
    with pytest.raises(DatasetError, match="found ds/dataset.json"):
        HeadDataset(tmp_path / "nested.zip")


def test_all_problems_are_reported_together(tmp_path):
    root = tmp_path / "ds"
    truth = make_dataset(root, count=30)
    document = load_json(root)
    for i in range(25):
        document["labels"][i][1][0] = float("nan")
    save_json(root, document)
    os.remove(root / truth["files"][29])
    with pytest.raises(DatasetError) as caught:
        HeadDataset(root)
    assert len(caught.value.problems) == 26
    message = str(caught.value)
    assert message.startswith(f"dataset {root}: 26 problems") and "... and 6 more" in message
    assert message.count("non-finite") == 20


def test_minority_key_blames_the_items_that_have_it(tmp_path):
    root = tmp_path / "ds"
    truth = make_dataset(root, count=4)
    document = load_json(root)
    document["sh"] = [[truth["files"][2], [0.0] * 27]]
    save_json(root, document)
    with pytest.raises(DatasetError, match=r"00002\.png: has a 'sh' entry although most items have none"):
        HeadDataset(root)
    with pytest.warns(DatasetWarning, match="skipping img/00002.png"):
        dataset = HeadDataset(root, skip_bad=True)
    assert dataset.num_images == 3 and not dataset.has_sh


def test_entries_for_unknown_files_and_unlabelled_images(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, count=3)
    Image.fromarray(random_image(np.random.default_rng(3))).save(root / "img/extra.png")
    with pytest.warns(
        DatasetWarning, match=r"ignoring 1 image file\(s\) without an entry in 'labels': img/extra\.png"
    ):
        assert HeadDataset(root).num_images == 3
    os.remove(root / "img/extra.png")
    document = load_json(root)
    document["identities"] = [[entry[0], 1] for entry in document["labels"]] + [["img/ghost.png", 2]]
    save_json(root, document)
    with pytest.raises(
        DatasetError, match=r"img/ghost\.png: has a 'identities' entry but no entry in 'labels'"
    ):
        HeadDataset(root)
    with pytest.warns(DatasetWarning, match=r"ignoring img/ghost\.png"):
        assert HeadDataset(root, skip_bad=True).num_images == 3


def test_skip_bad_with_nothing_left_raises(tmp_path):
    root = tmp_path / "ds"
    truth = make_dataset(root, count=2)
    for file in truth["files"]:
        (root / file).write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no usable items"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        HeadDataset(root, skip_bad=True)


def test_check_batch_size(tmp_path):
    make_dataset(tmp_path / "ds", count=6)
    dataset = HeadDataset(tmp_path / "ds")
    assert check_batch_size(dataset, 6) == 6
    assert check_batch_size(dataset, 4, world_size=2) == 2
    with pytest.raises(
        DatasetError,
        match=r"6 items over 1 process\(es\) gives 6 per process, fewer than the "
        r"per-process batch of 8",
    ) as caught:
        check_batch_size(dataset, 8)
    assert str(tmp_path / "ds") in str(caught.value)
    with pytest.raises(DatasetError, match="gives 1 per process"):
        check_batch_size(dataset, 8, world_size=4)
    assert check_batch_size(HeadDataset(tmp_path / "ds", xflip=True), 12) == 12
    with pytest.raises(ValueError, match="does not split evenly"):
        check_batch_size(dataset, 5, world_size=2)


# -- writer -------------------------------------------------------------------------------


def test_write_dataset_json_is_atomic(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    make_dataset(root, count=2)
    before = (root / "dataset.json").read_bytes()

    def failing_fsync(*args, **kwargs):  # the new content is in the temporary file, not yet renamed
        raise RuntimeError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dataset_json(root, {"img/00000.png": camera_label(0.5)})
    assert (root / "dataset.json").read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["dataset.json", "img"]  # no temporary left behind


def test_write_dataset_json_rejects_invalid_content(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, count=2)
    before = (root / "dataset.json").read_bytes()
    bad = camera_label(0.0)
    bad[3] = float("nan")
    with pytest.raises(DatasetError, match=r"a\.png: camera label has non-finite values"):
        write_dataset_json(root, {"a.png": bad})
    with pytest.raises(DatasetError, match=r"b\.png: missing from 'sh'"):
        write_dataset_json(
            root, {"a.png": camera_label(0), "b.png": camera_label(1)}, sh={"a.png": [0.0] * 27}
        )
    assert (root / "dataset.json").read_bytes() == before


def test_write_dataset_json_accepts_tensors_and_round_trips_exactly(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, count=2)
    labels = torch.tensor([camera_label(0.1), camera_label(-0.2)], dtype=torch.float32)
    sh = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(0))
    files = ["img/00000.png", "img/00001.png"]
    written = write_dataset_json(root / "dataset.json", list(zip(files, labels)), sh=list(zip(files, sh)))
    assert written == root / "dataset.json"
    dataset = HeadDataset(root)
    assert torch.equal(dataset.labels_tensor(), labels)
    assert torch.equal(torch.stack([dataset[i]["sh"] for i in range(2)]), sh)


def test_copy_of_dataset_survives_move(tmp_path):
    """Paths in dataset.json are relative: a moved dataset still reads."""
    truth = make_dataset(tmp_path / "ds", count=2)
    shutil.move(tmp_path / "ds", tmp_path / "moved")
    assert torch.equal(HeadDataset(tmp_path / "moved")[1]["image"], as_01(truth["pixels"][1]))


def test_dataset_error_survives_pickling_and_worker_reraise(tmp_path):
    truth = make_dataset(tmp_path / "ds", count=2)
    dataset = HeadDataset(tmp_path / "ds", check=False)
    (tmp_path / "ds" / truth["files"][1]).write_bytes(b"junk")
    with pytest.raises(DatasetError) as caught:
        dataset[1]
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.problems == caught.value.problems
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1)
    with pytest.raises(DatasetError, match=r"img/00001\.png: cannot decode image"):
        next(iter(loader))
