"""Tests for headforge.data.pairs: greedy grouping, adaptive / uniform pair sampling, PairDataset."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import chi2

from headforge.data import HeadDataset, write_dataset_json
from headforge.data.pairs import (
    AdaptivePairSampler,
    PairDataset,
    UniformPairSampler,
    dataset_frame_features,
    euclidean_distances,
    group_frames,
    mesh_features,
    parameter_features,
)
from headforge.heads.base import HeadModel


def line_distances(values) -> torch.Tensor:
    points = torch.tensor(values, dtype=torch.float64)
    return (points[:, None] - points[None, :]).abs()


def chi_square_ok(counts: np.ndarray, probabilities: np.ndarray, quantile: float = 0.999) -> bool:
    """Pearson chi-square goodness of fit over cells with non-zero probability."""
    total = counts.sum()
    keep = probabilities > 0
    assert counts[~keep].sum() == 0, "a zero-probability outcome was drawn"
    expected = probabilities[keep] * total
    statistic = ((counts[keep] - expected) ** 2 / expected).sum()
    return statistic < chi2.ppf(quantile, keep.sum() - 1)


# -------------------------------------------------------------------------------- grouping


def test_grouping_hand_made_example():
    # Centre 0 (value 0) takes 0.5, 1.0, 1.2; centre 3 (value 3.0) takes 3.5; 10 alone.
    assert group_frames(line_distances([0, 0.5, 1.0, 3.0, 1.2, 3.5, 10]), 1.3) == [[0, 1, 2, 4], [3, 5], [6]]
    # Greedy around centres, not connected components: 2.0 is within tau of 1.0 but not of 0.
    assert group_frames(line_distances([0, 1.0, 2.0]), 1.3) == [[0, 1], [2]]
    # "Below" the threshold is strict.
    assert group_frames(line_distances([0.0, 1.5]), 1.5) == [[0], [1]]


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.3, 5.0, float("inf")])
def test_grouping_is_a_partition(tau):
    features = torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    groups = group_frames(euclidean_distances(features, features), tau)
    assert sorted(i for group in groups for i in group) == list(range(40))
    centres = [group[0] for group in groups]
    assert centres == sorted(centres)
    if tau == 0.0:
        assert groups == [[i] for i in range(40)]
    if tau == float("inf"):
        assert groups == [list(range(40))]


def test_euclidean_distances_exact_zero_on_duplicates():
    a = torch.tensor([[1e3, 2.0, 3.0], [1e3, 2.0, 3.0], [0.0, 0.0, 0.0]])
    d = euclidean_distances(a, a)
    assert d[0, 1].item() == 0.0 and d[0, 0].item() == 0.0
    assert d[0, 2].item() == pytest.approx(float(torch.linalg.vector_norm(a[0].double())))


# -------------------------------------------------------------------------------- samplers


def test_first_frame_is_uniform_over_groups():
    # One big group of 10 near-identical frames and 3 far-apart singletons.
    values = [0.01 * i for i in range(10)] + [10.0, 20.0, 30.0]
    items = list(range(100, 113))
    sampler = AdaptivePairSampler({7: items}, _features_for(items, values), tau=1.3)
    assert [len(g) for g in sampler.windows[0].groups] == [10, 1, 1, 1]
    expected = sampler.first_frame_probabilities().numpy()
    assert expected[10] == pytest.approx(0.25) and expected[0] == pytest.approx(0.025)
    pairs = sampler.batch(8000, torch.Generator().manual_seed(1))
    counts = np.bincount(pairs[:, 0].numpy() - 100, minlength=13)
    assert chi_square_ok(counts, expected)
    # Small groups are drawn far more often than under uniform frame sampling (1/13 each).
    assert counts[10:].sum() / 8000 > 0.7


def _features_for(items, values) -> torch.Tensor:
    """(max item + 1, 1) feature table holding ``values`` at ``items`` (other rows unused)."""
    table = torch.full((max(items) + 1, 1), float("nan"))
    table[items, 0] = torch.tensor(values, dtype=torch.float32)
    return table


def test_second_frame_proportional_to_distance():
    values = [0.0, 1.0, 3.0, 6.0, 10.0]  # groups {0, 1}, {3}, {6}, {10}
    sampler = AdaptivePairSampler({0: list(range(5))}, torch.tensor(values)[:, None], tau=1.3)
    distances = line_distances(values).numpy()
    first = np.array([1 / 8, 1 / 8, 1 / 4, 1 / 4, 1 / 4])  # a group uniformly, then a frame of it
    assert np.allclose(sampler.first_frame_probabilities().numpy(), first)
    joint = first[:, None] * distances / distances.sum(axis=1, keepdims=True)
    pairs = sampler.batch(12000, torch.Generator().manual_seed(2)).numpy()
    assert (pairs[:, 0] != pairs[:, 1]).all()
    counts = np.zeros((5, 5))
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    assert chi_square_ok(counts.reshape(-1), joint.reshape(-1))
    conditional = counts[0] / counts[0].sum()
    assert np.abs(conditional - distances[0] / distances[0].sum()).max() < 0.03


def test_duplicate_and_static_frames():
    # Frames 0 and 1 are identical: from either, the other (distance 0) is never drawn.
    sampler = AdaptivePairSampler({0: [0, 1, 2]}, torch.tensor([[0.0], [0.0], [5.0]]), tau=1.3)
    pairs = sampler.batch(500, torch.Generator().manual_seed(3)).tolist()
    assert {tuple(p) for p in pairs if p[0] in (0, 1)} == {(0, 2), (1, 2)}
    assert {tuple(p) for p in pairs if p[0] == 2} == {(2, 0), (2, 1)}
    # A static clip (all distances 0) falls back to uniform over the other frames.
    static = AdaptivePairSampler({0: [0, 1, 2, 3]}, torch.zeros(4, 2), tau=1.3)
    pairs = static.batch(2000, torch.Generator().manual_seed(4)).numpy()
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert len(Counter(map(tuple, pairs))) == 12


def test_uniform_sampler_distinct_and_uniform():
    sampler = UniformPairSampler({0: [10, 11, 12, 13]})
    pairs = sampler.batch(12000, torch.Generator().manual_seed(5)).numpy() - 10
    counts = np.zeros((4, 4))
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    expected = (1 - np.eye(4)) / 12
    assert chi_square_ok(counts.reshape(-1), expected.reshape(-1))


@pytest.mark.parametrize("sampler_class", [AdaptivePairSampler, UniformPairSampler])
def test_determinism_and_clip_handling(sampler_class):
    clips = {0: [0, 1, 2, 3, 4], 1: [5, 6], 2: [7]}  # clip 2 has one frame: skipped
    extra = {"frame_features": torch.randn(8, 3, generator=torch.Generator().manual_seed(0))}
    sampler = sampler_class(clips, **(extra if sampler_class is AdaptivePairSampler else {}))
    assert sampler.skipped_clips == [2]
    a = sampler.batch(50, torch.Generator().manual_seed(9))
    b = sampler.batch(50, torch.Generator().manual_seed(9))
    c = sampler.batch(50, torch.Generator().manual_seed(10))
    assert a.shape == (50, 2) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    clip_of = {item: clip for clip, items in clips.items() for item in items}
    assert all(clip_of[i] == clip_of[j] and i != j for i, j in a.tolist())
    assert 7 not in a
    with pytest.raises(ValueError, match="two or more frames"):
        sampler_class({0: [0], 1: [1]}, **(extra if sampler_class is AdaptivePairSampler else {}))


def test_clip_weighting_and_windows():
    clips = {0: [0, 1], 1: list(range(2, 10))}
    by_clip = UniformPairSampler(clips, clip_weighting="clips")
    by_frames = UniformPairSampler(clips, clip_weighting="frames")
    g = torch.Generator().manual_seed(6)
    share_clip0 = (by_clip.batch(4000, g)[:, 0] < 2).float().mean().item()
    share_frames0 = (by_frames.batch(4000, g)[:, 0] < 2).float().mean().item()
    assert share_clip0 == pytest.approx(0.5, abs=0.03)
    assert share_frames0 == pytest.approx(0.2, abs=0.03)
    # A 10-frame clip cut into windows of at most 4 consecutive frames: 3 + 4 + 3.
    windowed = AdaptivePairSampler({0: list(range(10))}, torch.arange(10.0)[:, None], max_clip_length=4)
    assert [w.items.tolist() for w in windowed.windows] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    window_of = {item: k for k, w in enumerate(windowed.windows) for item in w.items.tolist()}
    pairs = windowed.batch(300, torch.Generator().manual_seed(7)).tolist()
    assert all(window_of[i] == window_of[j] for i, j in pairs)
    assert windowed.window_weights.tolist() == pytest.approx([0.3, 0.4, 0.3])


# ------------------------------------------------------------------------- frame features


class TinyHead(HeadModel):
    """4 vertices on the root joint: posed vertices = R_global (template + blendshapes) (+ root offset)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("v_template", torch.randn(4, 3, generator=g))
        self.register_buffer("shapedirs", torch.randn(4, 3, 2, generator=g))
        self.register_buffer("exprdirs", torch.randn(4, 3, 3, generator=g))
        self.register_buffer("J_regressor", torch.full((5, 4), 0.25))
        self.register_buffer("parents", torch.tensor([-1, 0, 1, 1, 1]))
        self.register_buffer(
            "lbs_weights", torch.nn.functional.one_hot(torch.zeros(4, dtype=torch.long), 5).float()
        )
        self.posedirs = None


def test_mesh_features_give_rms_vertex_distance_without_head_rotation():
    head = TinyHead()
    g = torch.Generator().manual_seed(1)
    shape = torch.randn(1, 2, generator=g).expand(6, 2)
    expression = torch.randn(6, 3, generator=g)
    pose = torch.zeros(6, 15)
    pose[:, :3] = torch.randn(6, 3, generator=g)  # global head rotation: must not count
    features = mesh_features(head, shape, expression, pose, chunk_size=4)
    assert features.shape == (6, 12)
    offsets = torch.einsum("vce,ne->nvc", head.exprdirs, expression)  # (N, V, 3)
    expected = ((offsets[:, None] - offsets[None]) ** 2).sum(-1).mean(-1).sqrt()
    assert torch.allclose(euclidean_distances(features, features), expected.double(), atol=1e-5)


def test_parameter_features_are_expression_and_jaw():
    expression, pose = torch.randn(5, 4), torch.randn(5, 15)
    features = parameter_features(expression, pose)
    assert torch.equal(features, torch.cat([expression, pose[:, 6:9]], dim=1))
    with pytest.raises(ValueError):
        parameter_features(expression, None)


# ----------------------------------------------------------------------------- PairDataset


FRONTAL_LABEL = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]


@pytest.fixture(scope="module")
def video_dataset_root(tmp_path_factory):
    """6 frames of 8x8: clip 3 has frames 0..3 (stored out of order), clip 5 has frames 0..1."""
    root = tmp_path_factory.mktemp("video")
    rng = np.random.default_rng(0)
    files, clips, params, sh = [], {}, {}, {}
    for i, (clip, frame) in enumerate([(3, 2), (3, 0), (5, 1), (3, 1), (5, 0), (3, 3)]):
        name = f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name)
        files.append(name)
        clips[name] = (clip, frame)
        params[name] = {
            "shape": [0.1, 0.2],
            "expression": rng.normal(size=4).tolist(),
            "pose": rng.normal(size=15).tolist(),
        }
        sh[name] = rng.normal(size=27).tolist()
    write_dataset_json(root, {name: FRONTAL_LABEL for name in files}, sh=sh, params=params, clips=clips)
    return root


def test_pair_dataset_items_are_stacked_and_deterministic(video_dataset_root):
    dataset = HeadDataset(video_dataset_root)
    assert dataset.clips() == {3: [1, 3, 0, 5], 5: [4, 2]}
    sampler = AdaptivePairSampler(dataset.clips(), dataset_frame_features(dataset), tau=1.3)
    pairs = PairDataset(dataset, sampler, num_pairs=40, seed=3)
    item = pairs[7]
    assert item["image"].shape == (2, 3, 8, 8)
    assert item["camera"].shape == (2, 25) and item["sh"].shape == (2, 9, 3)
    assert item["params"]["expression"].shape == (2, 4) and item["params"]["pose"].shape == (2, 15)
    assert item["clip"][0] == item["clip"][1] and item["index"][0] != item["index"][1]
    assert torch.equal(item["image"][1], dataset[int(item["index"][1])]["image"])
    # Pair k depends only on (seed, k): a fresh object (a resumed run) gives the same pairs.
    again = PairDataset(
        dataset, AdaptivePairSampler(dataset.clips(), dataset_frame_features(dataset)), 40, seed=3
    )
    assert [pairs.pair_indices(k) for k in range(40)] == [again.pair_indices(k) for k in range(40)]
    assert torch.equal(again[7]["image"], item["image"])
    other_seed = PairDataset(dataset, sampler, num_pairs=40, seed=4)
    assert [pairs.pair_indices(k) for k in range(40)] != [other_seed.pair_indices(k) for k in range(40)]
    batch = next(iter(torch.utils.data.DataLoader(pairs, batch_size=3)))
    assert batch["image"].shape == (3, 2, 3, 8, 8)
    with pytest.raises(IndexError):
        pairs[40]


def test_pair_dataset_mirrors_both_frames_alike(video_dataset_root):
    dataset = HeadDataset(video_dataset_root, xflip=True)
    sampler = UniformPairSampler(dataset.clips())
    pairs = PairDataset(dataset, sampler, num_pairs=60, seed=0)
    flips = [pairs[k]["flipped"].tolist() for k in range(0, 60, 3)]
    assert all(a == b for a, b in flips)
    assert {a for a, _ in flips} == {True, False}
    with pytest.raises(ValueError, match="xflip"):
        PairDataset(HeadDataset(video_dataset_root), sampler, mirror=True)
