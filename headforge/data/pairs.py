"""Frame pairs from video clips: NeRFFaceShop's adaptive sampling (§III-C2) and the uniform ablation.

NeRFFaceShop learns animation from the difference between two frames of one
video, so the pair should differ visibly and the first frame should not
over-represent the dominant expression (e.g. listening). Per clip:

1. Distances between all frames. The paper measures distances between the
   reconstructed meshes; here a frame is a feature vector and the distance a
   callable (default Euclidean). ``parameter_features`` gives expression +
   jaw coefficients (the default: FLAME-like expression coefficients are
   roughly unit-scaled, the scale in which the paper's tau = 1.3 is plausible);
   ``mesh_features`` gives head-model vertices scaled so that the Euclidean
   distance is the RMS vertex distance in world units (pick tau in those units).
2. ``group_frames``: the paper's greedy grouping with threshold tau.
3. First frame: a group uniformly, then a frame of it uniformly. Second frame:
   any other frame of the clip with probability proportional to its distance
   to the first (groups are not used for it).

Clips are chosen uniformly (the paper does not say; ``clip_weighting="frames"``
weights them by length instead). Distance matrices are computed once, memory
``O(sum_c n_c^2)``; clips longer than ``max_clip_length`` are cut into
windows of consecutive frames of balanced length, and both frames of a pair
then come from one window.

``PairDataset`` turns a sampler into a map-style dataset whose item ``k`` is a
pure function of ``(seed, k)``, so a resumed run reloads exactly the same pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from headforge.data.sampler import derive_seed

if TYPE_CHECKING:
    from headforge.heads.base import HeadModel

__all__ = [
    "DEFAULT_NUM_PAIRS",
    "AdaptivePairSampler",
    "PairDataset",
    "UniformPairSampler",
    "dataset_frame_features",
    "euclidean_distances",
    "group_frames",
    "mesh_features",
    "parameter_features",
]

#: Default ``len(PairDataset)``: the number of distinct pairs a training run cycles through.
DEFAULT_NUM_PAIRS = 2**20
#: Jaw rotation inside the FLAME-layout (B, 15) pose vector (global 3, neck 3, jaw 3, eyes 6).
JAW_SLICE = slice(6, 9)

FrameFeatures = Tensor | Callable[[Tensor], Tensor]
Distance = Callable[[Tensor, Tensor], Tensor]
ClipWeighting = Literal["clips", "frames"]


# ------------------------------------------------------------------------- frame distances


def parameter_features(expression: Tensor, pose: Tensor | None = None, include_jaw: bool = True) -> Tensor:
    """Expression (+ jaw) coefficients per frame, (N, E) or (N, E + 3).

    Args:
        expression: (N, E) expression coefficients.
        pose: (N, 15) FLAME-layout axis-angle pose (radians); its jaw (3) is appended.
        include_jaw: append the jaw rotation (needs ``pose``).
    """
    if not include_jaw:
        return expression.float()
    if pose is None or pose.ndim != 2 or pose.shape[1] < JAW_SLICE.stop:
        raise ValueError("include_jaw needs a (N, 15) pose")
    return torch.cat([expression, pose[:, JAW_SLICE]], dim=1).float()


def mesh_features(
    model: HeadModel,
    shape: Tensor,
    expression: Tensor,
    pose: Tensor,
    canonical_pose: bool = True,
    chunk_size: int = 256,
) -> Tensor:
    """Head-model vertices per frame, flattened and scaled by ``1 / sqrt(V)``, (N, 3 V).

    The Euclidean distance between two rows is then the RMS distance between
    corresponding vertices (world units). With ``canonical_pose`` the global
    and neck rotations are zeroed, so head motion (which the camera carries)
    does not count as expression change; jaw and eyes are kept.

    Args:
        model: a ``HeadModel`` (``model(shape=, expression=, pose=).vertices`` (B, V, 3)).
        shape, expression, pose: (N, D) parameters, pose in FLAME layout (N, 15).
        chunk_size: frames per forward pass (bounds memory).
    """
    pose = pose.clone()
    if canonical_pose:
        pose[:, : JAW_SLICE.start] = 0.0  # global (0:3) and neck (3:6)
    dtype = model.v_template.dtype
    rows = []
    with torch.no_grad():
        for start in range(0, shape.shape[0], chunk_size):
            part = slice(start, start + chunk_size)
            vertices = model(
                shape=shape[part].to(model.device, dtype),
                expression=expression[part].to(model.device, dtype),
                pose=pose[part].to(model.device, dtype),
            ).vertices
            rows.append((vertices.flatten(1) / math.sqrt(vertices.shape[1])).float().cpu())
    return torch.cat(rows)


def dataset_frame_features(dataset: Any, head_model: HeadModel | None = None) -> FrameFeatures:
    """Frame features of a dataset's items for ``AdaptivePairSampler``.

    Without a head model: ``parameter_features`` of the stored ``expression``
    and jaw ``pose`` params, an (N, E + 3) tensor. With one: a callable giving
    ``mesh_features`` of the requested items (per clip window, so the N x 3V
    vertex matrix never exists at once).

    Args:
        dataset: a ``HeadDataset`` with ``params`` (``params_tensor(name)`` -> (N, D)).
        head_model: the model the params belong to, or None.
    """
    expression, pose = dataset.params_tensor("expression"), dataset.params_tensor("pose")
    if head_model is None:
        return parameter_features(expression, pose)
    shape = dataset.params_tensor("shape")

    def features(items: Tensor) -> Tensor:
        return mesh_features(head_model, shape[items], expression[items], pose[items])

    return features


def euclidean_distances(a: Tensor, b: Tensor) -> Tensor:
    """(n, F), (m, F) -> (n, m) Euclidean distances, computed directly (identical rows give exactly 0)."""
    return torch.cdist(a[None].double(), b[None].double(), compute_mode="donot_use_mm_for_euclid_dist")[0]


def group_frames(distances: Tensor, tau: float = 1.3) -> list[list[int]]:
    """NeRFFaceShop's greedy grouping of a clip's frames (§III-C2), deterministic.

    Frames are visited in order. The first frame not yet in a group becomes the
    *centre* of a new group, which takes every still-ungrouped frame whose
    distance to the centre is strictly below ``tau`` (membership is decided
    against the centre only, and a grouped frame never moves). This repeats
    until every frame is in exactly one group. ``tau <= 0`` gives singletons,
    ``tau = inf`` a single group.

    Args:
        distances: (n, n) symmetric, non-negative.
        tau: threshold in the distance's units (paper: 1.3).

    Returns:
        Groups of local frame indices (0..n-1), each sorted, centre first,
        groups ordered by their centre.
    """
    if distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be (n, n), got {tuple(distances.shape)}")
    ungrouped = torch.ones(distances.shape[0], dtype=torch.bool, device=distances.device)
    groups = []
    while bool(ungrouped.any()):
        centre = int(torch.nonzero(ungrouped)[0])
        members = ungrouped & (distances[centre] < tau)
        members[centre] = True
        groups.append(torch.nonzero(members).flatten().tolist())
        ungrouped &= ~members
    return groups


# ---------------------------------------------------------------------------- samplers


def _split_clip(items: Sequence[int], max_length: int | None) -> list[list[int]]:
    """Consecutive windows of balanced length <= max_length (each >= 2 frames when len >= 2)."""
    items = list(items)
    if max_length is None or len(items) <= max_length:
        return [items]
    count = math.ceil(len(items) / max_length)
    bounds = [round(i * len(items) / count) for i in range(count + 1)]
    return [items[bounds[i] : bounds[i + 1]] for i in range(count)]


@dataclass
class ClipWindow:
    """Frames of one clip window and what sampling needs about them.

    Attributes:
        clip: clip id.
        items: (n,) long dataset item indices in frame order.
        groups: (adaptive only) groups as (k,) long local indices.
        distances: (adaptive only) (n, n) float64 frame distances.
    """

    clip: int
    items: Tensor
    groups: list[Tensor] | None = None
    distances: Tensor | None = None


class ClipPairSampler:
    """Base: chooses a clip window, then two distinct frames of it (``_pick``, subclasses).

    Args:
        clips: clip id -> dataset item indices in frame order
            (``HeadDataset.clips()``). Clips of fewer than 2 frames are
            skipped (listed in ``skipped_clips``).
        clip_weighting: "clips" (each clip equally likely; its windows by
            length) or "frames" (clips by length).
        max_clip_length: longest window (>= 3), None for whole clips.
        seed: seeds the generator used when ``sample`` gets none.
    """

    def __init__(
        self,
        clips: Mapping[int, Sequence[int]],
        clip_weighting: ClipWeighting = "clips",
        max_clip_length: int | None = None,
        seed: int = 0,
    ) -> None:
        if clip_weighting not in ("clips", "frames"):
            raise ValueError(f"clip_weighting must be 'clips' or 'frames', got {clip_weighting!r}")
        if max_clip_length is not None and max_clip_length < 3:
            raise ValueError(f"max_clip_length must be >= 3 (or None), got {max_clip_length}")
        self.skipped_clips = [clip for clip, items in clips.items() if len(items) < 2]
        self.windows: list[ClipWindow] = []
        weights = []
        for clip, items in clips.items():
            if len(items) < 2:
                continue
            for window in _split_clip(items, max_clip_length):
                self.windows.append(ClipWindow(int(clip), torch.as_tensor(window, dtype=torch.long)))
                weights.append(len(window) / (len(items) if clip_weighting == "clips" else 1))
        if not self.windows:
            raise ValueError("no clip has two or more frames: cannot draw frame pairs")
        self.window_weights = torch.tensor(weights, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)

    def _pick(self, window: ClipWindow, generator: torch.Generator) -> tuple[int, int]:
        """Two distinct local frame indices of ``window``."""
        raise NotImplementedError

    def sample(self, generator: torch.Generator | None = None) -> tuple[int, int]:
        """One pair ``(i, j)`` of dataset item indices, ``i != j``, from one clip (CPU generator)."""
        generator = self.generator if generator is None else generator
        window = self.windows[int(torch.multinomial(self.window_weights, 1, generator=generator))]
        first, second = self._pick(window, generator)
        return int(window.items[first]), int(window.items[second])

    def batch(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 2) long: ``n`` independent pairs, drawn in order from ``generator``."""
        return torch.tensor([self.sample(generator) for _ in range(n)], dtype=torch.long).reshape(n, 2)


def _uniform_index(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


class UniformPairSampler(ClipPairSampler):
    """Two distinct frames of a clip, uniformly (NeRFFaceShop's "w/ Uni." ablation)."""

    def _pick(self, window: ClipWindow, generator: torch.Generator) -> tuple[int, int]:
        n = len(window.items)
        first = _uniform_index(n, generator)
        second = _uniform_index(n - 1, generator)
        return first, second + (second >= first)  # skip the first frame


class AdaptivePairSampler(ClipPairSampler):
    """NeRFFaceShop's adaptive pair sampling (§III-C2); see the module docstring.

    Args:
        clips: clip id -> dataset item indices in frame order.
        frame_features: (N_items, F) tensor indexed by item index, or a callable
            mapping a (n,) long tensor of item indices to (n, F) (computed per
            window, e.g. head-model vertices, so all N need not fit at once).
        tau: grouping threshold (paper: 1.3), in the distance's units.
        distance: (n, F), (n, F) -> (n, n) non-negative distances.
        clip_weighting, max_clip_length, seed: as ``ClipPairSampler``
            (``max_clip_length`` defaults to 1024: a window's matrix is <= 8 MiB).

    The second frame is drawn with probability ``D[i, j] / sum_k D[i, k]``
    over ``j != i``; frames at distance 0 (duplicates of the first) are never
    drawn, and if every other frame is at distance 0 it falls back to uniform.
    """

    def __init__(
        self,
        clips: Mapping[int, Sequence[int]],
        frame_features: FrameFeatures,
        tau: float = 1.3,
        distance: Distance = euclidean_distances,
        clip_weighting: ClipWeighting = "clips",
        max_clip_length: int | None = 1024,
        seed: int = 0,
    ) -> None:
        super().__init__(clips, clip_weighting, max_clip_length, seed)
        self.tau = float(tau)
        for window in self.windows:
            if callable(frame_features):
                features = frame_features(window.items)
            else:
                features = frame_features[window.items]
            distances = distance(features, features).double().cpu()
            if not bool(torch.isfinite(distances).all()) or bool((distances < 0).any()):
                raise ValueError(f"clip {window.clip}: distances must be finite and non-negative")
            window.distances = distances
            window.groups = [torch.tensor(g, dtype=torch.long) for g in group_frames(distances, self.tau)]

    def _pick(self, window: ClipWindow, generator: torch.Generator) -> tuple[int, int]:
        assert window.groups is not None and window.distances is not None
        group = window.groups[_uniform_index(len(window.groups), generator)]
        first = int(group[_uniform_index(len(group), generator)])
        weights = window.distances[first].clone()
        weights[first] = 0.0
        if not bool((weights > 0).any()):  # a static clip: no frame is farther than another
            weights = torch.ones_like(weights)
            weights[first] = 0.0
        return first, int(torch.multinomial(weights, 1, generator=generator))

    def first_frame_probabilities(self, window_index: int = 0) -> Tensor:
        """(n,) probability of each frame of a window being the first frame (for tests and plots)."""
        window = self.windows[window_index]
        assert window.groups is not None
        probabilities = torch.zeros(len(window.items), dtype=torch.float64)
        for group in window.groups:
            probabilities[group] = 1.0 / (len(window.groups) * len(group))
        return probabilities


# ------------------------------------------------------------------------------ dataset


def _stack(first: Any, second: Any) -> Any:
    """Stack two items' values along a new leading axis of 2 (dicts recursively)."""
    if isinstance(first, Mapping):
        return {key: _stack(first[key], second[key]) for key in first}
    if isinstance(first, Tensor):
        return torch.stack((first, second))
    return torch.tensor([first, second])


class PairDataset(torch.utils.data.Dataset):
    """Map-style dataset of frame pairs: item ``k`` is pair ``k`` of a deterministic family.

    Pair ``k`` is drawn by ``sampler.sample`` from a generator seeded with
    ``derive_seed(seed, "pairs", k)``, so it depends on ``(seed, k)`` only:
    any worker, rank or resumed run loading index ``k`` gets the same pair.
    Feed it to the trainer's ``InfiniteShardedSampler`` like any dataset; the
    run then cycles through ``num_pairs`` distinct draws, reshuffled per epoch.

    When mirroring is on, the pair's coin (from the same generator) mirrors
    both frames or neither: a flip between the two frames would look like
    motion to the video discriminator.

    Args:
        dataset: a ``HeadDataset`` (or anything with ``__getitem__``,
            ``num_images`` and ``xflip``) whose clips fed the sampler.
        sampler: ``AdaptivePairSampler`` or ``UniformPairSampler`` over
            unmirrored item indices 0..N-1.
        num_pairs: ``len(self)``.
        seed: base seed of the pair family.
        mirror: mirror pairs at random (items ``i + N``); None follows ``dataset.xflip``.
    """

    def __init__(
        self,
        dataset: Any,
        sampler: ClipPairSampler,
        num_pairs: int = DEFAULT_NUM_PAIRS,
        seed: int = 0,
        mirror: bool | None = None,
    ) -> None:
        if num_pairs <= 0:
            raise ValueError(f"num_pairs must be positive, got {num_pairs}")
        self.dataset = dataset
        self.sampler = sampler
        self.num_pairs = int(num_pairs)
        self.seed = seed
        self.mirror = bool(getattr(dataset, "xflip", False)) if mirror is None else mirror
        if self.mirror and not getattr(dataset, "xflip", False):
            raise ValueError("mirror=True needs a dataset built with xflip=True")

    def __len__(self) -> int:
        return self.num_pairs

    def pair_indices(self, index: int) -> tuple[int, int]:
        """Dataset item indices of pair ``index`` (mirrored items are offset by ``num_images``)."""
        index = int(index)
        if not 0 <= index < self.num_pairs:
            raise IndexError(f"pair {index} out of range for {self.num_pairs} pairs")
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "pairs", index))
        first, second = self.sampler.sample(generator)
        if self.mirror and bool(torch.rand((), generator=generator) < 0.5):
            offset = self.dataset.num_images
            first, second = first + offset, second + offset
        return first, second

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Pair ``index`` as the two items' fields stacked on a new axis of 2.

        ``image`` (2, 3, R, R), ``camera`` (2, 25), ``index`` (2,) long,
        ``flipped`` (2,) bool, and when present ``sh`` (2, 9, 3), ``params``
        {name: (2, D)}, ``clip`` / ``frame`` / ``identity`` (2,), maps (2, C, R, R).
        """
        first, second = self.pair_indices(index)
        return _stack(self.dataset[first], self.dataset[second])
