"""Evaluation protocols of `headforge eval`: what is sampled, what is requested, how it is scored.

An evaluation turns a source (a dataset or a generator) into
:class:`EvalSamples`: images plus the controls each image was *asked* for
(head pose, SH light, expression) and group ids (same identity, same light).
The estimators (``headforge.eval.estimators``) read the controls back from the
images and the metrics below compare requested with estimated values
(the definitions of record for ``headforge eval``):

- APD (NeRFFaceShop §V-B, Next3D §4.1): mean over images of the Euclidean
  distance between requested and estimated head (yaw, pitch, roll), radians;
  APD* (``include_roll=False``) the same with (yaw, pitch) only.
- LE (NeRFFaceShop §V-B after NeRFFaceLighting): mean squared error between
  requested and estimated SH coefficients, averaged over the 9 x 3 coefficients.
- LS (same protocol): for each group of images rendered under the *same*
  requested light, the population standard deviation of the estimated SH over
  the group, per coefficient; averaged over coefficients and groups.
- ID (Next3D §4.1): mean cosine similarity of the identity embeddings of
  pairs of images of the same identity (all pairs within each identity).
- AED (Next3D §4.1, 3DFaceShop §5.4): the papers compare requested and
  estimated 3DMM expression coefficients. The procedural head's 35
  coefficients are not identifiable from images (several combinations give
  the same surface, docs/estimators.md), so AED here compares what they do:
  the expression-induced offsets of the 68 landmarks of the mean identity
  (``headforge.eval.estimators.targets.expression_offsets``, jaw included);
  mean over images of the mean per-landmark Euclidean distance, millimetres.
  ``aed_mouth`` restricts it to landmarks 48-67; ``no_motion_baseline`` is
  the value of always answering "neutral"; ``aed_coefficients`` is the
  papers' coefficient distance, reported but meaningless here.

Consistency metrics (formulas in ``headforge.eval.consistency`` and
``headforge.eval.reprojection``; generator protocols in
``headforge.eval.consistency_protocols``):

- TI (NeRFFaceShop §V-D): per shape group (one identity under many
  animations: a generator's animation latents, a dataset's identity / clip),
  the population std of each estimated shape coefficient over the group,
  averaged over coefficients; mean over groups. Reported with the std over
  all images (different identities mixed: the chance level) and, with a
  reference dataset, TI of that dataset grouped by identity (its shape is
  constant per identity: the estimator's noise floor).
- DS (3DFaceShop §5.4.3, eq. 25): for i in expression, pose, light and groups
  of images where only i changes, sigma^(i)_k = mean over groups of the
  population variance within the group of the estimated k (expression
  coefficients; head yaw, pitch, roll; the 27 SH coefficients), mean over
  k's coefficients, divided by k's variance over the reference images (the
  samples themselves without one); DS_i = prod_{j != i} sigma^(i)_i / sigma^(i)_j.
- MV: pairs of views of one scene (datasets: 3 to 25 degrees apart); view A's surface
  pixels are moved into view B through A's depth, occluded ones dropped (B's
  depth disagrees by more than 0.03 world units), and the colour compared with
  B's image sampled there: mean absolute error on the [0, 1] scale (both
  directions of every pair averaged), the PSNR of those pixels and the
  fraction of A's surface pixels that were compared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from headforge.apps.generate import camera_labels, frontal_label, latent_for_seed, render_seed
from headforge.cameras import sample_ffhq_poses
from headforge.data.dataset import HeadDataset, spread_indices
from headforge.eval.consistency import dataset_attribute_groups, view_pairs
from headforge.eval.estimators.targets import UNITS_PER_MM, head_pose_angles
from headforge.eval.reprojection import erode_mask
from headforge.heads.base import POSE_SLICES
from headforge.models.nerffaceshop_controls import HeadControls

__all__ = [
    "METRICS",
    "EvalSamples",
    "batched",
    "check_light_pool",
    "expression_distance",
    "landmark_offset_distance",
    "group_ids_of_rows",
    "identity_consistency",
    "lighting_error",
    "lighting_stability",
    "parse_metrics",
    "pose_distance",
    "run_batched",
    "samples_from_dataset",
    "samples_from_eg3d",
    "samples_from_nerffaceshop",
]

#: metric name -> one-line description (the report's legend).
METRICS: dict[str, str] = {
    "fid": "Frechet distance of features against the reference set (lower is better)",
    "kid": "kernel distance (unbiased MMD^2, cubic kernel) against the reference set (lower is better)",
    "apd": "average pose distance, radians, requested vs estimated (yaw, pitch, roll); apd_no_roll: no roll",
    "le": "lighting error: mean squared error of the 27 SH coefficients, requested vs estimated",
    "ls": "lighting stability: std of the estimated SH over images sharing one requested light",
    "id": "identity consistency: mean cosine similarity of identity embeddings within an identity",
    "aed": "average expression distance: mm per landmark, requested vs estimated offsets of 68 landmarks",
    "ti": "temporal inconsistency: std of the estimated shape over an identity's animations (lower: better)",
    "ds": "disentanglement score per attribute (expression, pose, light): variance ratios (higher is better)",
    "mv": "multi-view consistency: colour error of view pairs reprojected through depth, [0, 1] scale",
}

#: head-model pose vector length (axis-angle joints, ``headforge.heads.base.POSE_SLICES``).
POSE_DIM = 15


def parse_metrics(text: str) -> list[str]:
    """'fid,kid,apd' -> ['fid', 'kid', 'apd'] (order kept, duplicates dropped).

    Raises:
        ValueError: an unknown or empty metric list, naming the valid ones.
    """
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"no metrics in {text!r}; choose from {', '.join(METRICS)}")
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


@dataclass
class EvalSamples:
    """Images and the controls they were asked for; all rows aligned with ``images``.

    Attributes:
        images: (N, 3, H, W) float32 in [-1, 1].
        pose: (N, 3) requested head yaw, pitch, roll relative to the camera, radians, or None.
        sh: (N, 9, 3) requested SH lighting, or None.
        expression: (N, E) requested expression coefficients, or None.
        jaw: (N, 3) requested jaw rotation (axis-angle, radians), or None (then no jaw motion).
        identity: (N,) int64 identity group ids, or None.
        light_group: (N,) int64 ids of images sharing one requested light, or None.
        source: free-form description for the report.
        shape_group: (N,) int64 ids of images whose shape must not change (TI), -1: none; or None.
        attribute_groups: "expression" / "pose" / "light" -> (N,) int64 ids of groups where only
            that attribute changes (DS), -1: none.
        cameras: (N, 25) camera labels, or None.
        depth: (N, 1, h, w) camera-space z, world units (MV), or None.
        surface: (N, 1, h, w) opacity in [0, 1] or a {0, 1} surface mask (MV), or None.
        view_pairs: (P, 2) int64 indices of two views of one scene (MV), or None.
    """

    images: Tensor
    pose: Tensor | None = None
    sh: Tensor | None = None
    expression: Tensor | None = None
    jaw: Tensor | None = None
    identity: Tensor | None = None
    light_group: Tensor | None = None
    source: dict = field(default_factory=dict)
    shape_group: Tensor | None = None
    attribute_groups: dict[str, Tensor] = field(default_factory=dict)
    cameras: Tensor | None = None
    depth: Tensor | None = None
    surface: Tensor | None = None
    view_pairs: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def group_ids_of_rows(values: Tensor) -> Tensor:
    """(N, ...) values -> (N,) int64 ids, equal exactly where rows are equal."""
    return torch.unique(values.reshape(values.shape[0], -1), dim=0, return_inverse=True)[1]


#: accepted optical-axis angle between two dataset views paired for MV, degrees.
DATASET_PAIR_DEGREES = (3.0, 25.0)


def samples_from_dataset(
    path: str,
    max_images: int | None = None,
    progress: bool = True,
    with_depth: bool = False,
    spread: bool = False,
) -> EvalSamples:
    """The first ``max_images`` images of a dataset with the labels it has.

    With ``spread`` the ``max_images`` are spread evenly over the whole dataset
    instead (:func:`~headforge.data.dataset.spread_indices`): a reference set
    must not be the first few clips of a video dataset (the first 256 frames
    of the studio's videos are 6 of its 96 identities). Grouped protocols
    that need neighbouring items (multiview pairs) read the first images.

    Requested pose is the head pose relative to the camera of the labels
    (``head_pose_angles``, needs ``params['pose']``); light groups are images
    with bit-identical SH labels. Consistency groups: shape groups (TI) are
    the identity ids, split by clip where the dataset has clips (or the clips
    alone); DS groups come from :func:`dataset_attribute_groups`. With
    ``with_depth`` and depth maps in the dataset, ``depth`` and ``surface``
    (depth > 0, eroded by one pixel: silhouette pixels mix in the background)
    are read and ``view_pairs`` holds every pair of views of one identity,
    expression, head pose and light whose cameras are ``DATASET_PAIR_DEGREES``
    apart.
    """
    # A cheap unchecked open (structure only, no image decoded) gives the item count for the
    # spread and tells whether depth maps exist (asking for absent maps is an error).
    unchecked = HeadDataset(path, check=False)
    subset: dict[str, Any] = {"max_items": max_images}
    if spread and max_images is not None:
        subset = {"items": spread_indices(unchecked.num_images, max_images)}
    depth_kind = ("depth",) if with_depth and "depth" in unchecked.map_kinds else ()
    dataset = HeadDataset(path, maps=depth_kind, **subset)
    items = [dataset[index] for index in tqdm(range(len(dataset)), desc="read", disable=not progress)]
    samples = EvalSamples(
        torch.stack([item["image"] for item in items]),
        source={"kind": "dataset", "path": str(path), "images": len(dataset)},
        cameras=dataset.labels_tensor(),
    )
    if dataset.has_sh:
        samples.sh = torch.stack([item["sh"] for item in items])
        samples.light_group = group_ids_of_rows(samples.sh)
    if dataset.has_params:
        names = items[0]["params"]
        if "pose" in names:
            samples.pose = head_pose_angles(dataset.labels_tensor(), dataset.params_tensor("pose"))
            samples.jaw = dataset.params_tensor("pose")[:, POSE_SLICES["jaw"]]
        if "expression" in names:
            samples.expression = dataset.params_tensor("expression")
    if dataset.has_identities:
        samples.identity = torch.stack([item["identity"] for item in items])
    columns = []
    if dataset.has_identities:
        columns.append(samples.identity)
    if dataset.has_clips:
        columns.append(torch.stack([item["clip"] for item in items]))
    if columns:
        samples.shape_group = group_ids_of_rows(torch.stack(columns, dim=1))
    if dataset.has_params and {"pose", "expression"} <= set(names) and samples.sh is not None:
        identity = samples.identity
        if identity is None:
            identity = torch.zeros(len(items), dtype=torch.int64)
        expression, pose = dataset.params_tensor("expression"), dataset.params_tensor("pose")
        samples.attribute_groups = dataset_attribute_groups(
            identity, samples.cameras, samples.sh, expression, pose
        )
    if depth_kind:
        samples.depth = torch.stack([item["depth"] for item in items])
        samples.surface = erode_mask((samples.depth > 0).float())
        scene = samples.attribute_groups.get("pose")
        if scene is not None:
            samples.view_pairs = view_pairs(samples.cameras, scene, *DATASET_PAIR_DEGREES)
    return samples


def samples_from_eg3d(
    generator: torch.nn.Module,
    identities: int,
    views: int,
    seed: int,
    truncation_psi: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvalSamples:
    """``identities`` x ``views`` images (identity-major) of an EG3D generator.

    Identity k is latent seed ``seed + k``, seen from ``views`` FFHQ-like
    cameras drawn from a CPU generator seeded from ``(seed, k)``, so the same
    seed gives the same images. The requested head pose is that of an unposed
    head seen from the camera (``head_pose_angles`` with a zero pose: yaw =
    -camera yaw, roll 0).
    """
    images, poses = [], []
    for index in tqdm(range(identities), desc="eg3d", unit="id", disable=not progress):
        camera_rng = torch.Generator().manual_seed(seed * 1_000_003 + index)
        yaw, pitch = sample_ffhq_poses(views, generator=camera_rng)
        cameras = camera_labels(yaw, pitch, device)
        output = render_seed(generator, seed + index, cameras, truncation_psi, device)
        images.append(output["image"].float().clamp(-1, 1).cpu())
        poses.append(head_pose_angles(cameras.cpu(), torch.zeros(views, POSE_DIM)))
    identity = torch.arange(identities).repeat_interleave(views)
    source = {
        "kind": "eg3d",
        "identities": identities,
        "views": views,
        "seed": seed,
        "truncation_psi": truncation_psi,
    }
    return EvalSamples(torch.cat(images), pose=torch.cat(poses), identity=identity, source=source)


def check_light_pool(lights: Tensor) -> None:
    """Raise ValueError unless ``lights`` is a non-empty pool of SH lights (L, 9, 3)."""
    if lights.ndim != 3 or lights.shape[1:] != (9, 3) or lights.shape[0] == 0:
        raise ValueError(f"expected a pool of lights (L, 9, 3), got {tuple(lights.shape)}")


@torch.no_grad()
def samples_from_nerffaceshop(
    generator: torch.nn.Module,
    lights: Tensor,
    identities: int,
    views: int,
    seed: int,
    truncation_psi: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvalSamples:
    """``identities`` x ``views`` images (identity-major) of a NeRFFaceShop generator.

    Identity k is latent seed ``seed + k`` under one light drawn from the pool
    ``lights`` (L, 9, 3) (real lights, e.g. a dataset's SH labels, as in the
    NeRFFaceLighting protocol of NeRFFaceShop §V-B), rendered from ``views``
    FFHQ-like cameras, each with its own animation latent m ~ N(0, I): so one
    light group = one identity, varied in view and animation (LS, ID). Light
    index, cameras and m come from a CPU generator seeded from ``(seed, k)``.
    The requested head pose is an unposed head seen from the camera (m moves
    the face, not the head).
    """
    check_light_pool(lights)
    controls = HeadControls(generator, noise_mode="const")
    motion_dim = generator.config.motion_dim
    images, poses, shs = [], [], []
    for index in tqdm(range(identities), desc="nerffaceshop", unit="id", disable=not progress):
        rng = torch.Generator().manual_seed(seed * 1_000_003 + index)
        light = lights[int(torch.randint(lights.shape[0], (1,), generator=rng))]
        yaw, pitch = sample_ffhq_poses(views, generator=rng)
        motion = torch.randn(views, motion_dim, generator=rng)
        cameras = camera_labels(yaw, pitch, device)
        z = latent_for_seed(seed + index, generator.config.z_dim, device).expand(views, -1)
        sh = light.to(device, torch.float32).expand(views, 9, 3)
        cache = controls.build(z, frontal_label(views, device), motion.to(device), sh, truncation_psi)
        images.append(controls.render(cache, cameras)["image"].float().clamp(-1, 1).cpu())
        poses.append(head_pose_angles(cameras.cpu(), torch.zeros(views, POSE_DIM)))
        shs.append(sh.cpu())
    group = torch.arange(identities).repeat_interleave(views)
    source = {
        "kind": "nerffaceshop",
        "identities": identities,
        "views": views,
        "seed": seed,
        "truncation_psi": truncation_psi,
        "light_pool": int(lights.shape[0]),
    }
    return EvalSamples(
        torch.cat(images),
        pose=torch.cat(poses),
        sh=torch.cat(shs),
        identity=group,
        light_group=group.clone(),
        source=source,
    )


def batched(images: Tensor, batch_size: int, progress: bool, desc: str) -> Iterator[Tensor]:
    """Consecutive batches (B, 3, H, W) of images, with a progress bar."""
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
        yield images[start : start + batch_size]


def run_batched(
    function: Callable[[Tensor], Tensor],
    images: Tensor,
    device: torch.device | str,
    desc: str,
    batch_size: int = 32,
    progress: bool = True,
) -> Tensor:
    """``function`` over batches of images moved to ``device``; results concatenated on the CPU."""
    with torch.no_grad():
        return torch.cat(
            [function(batch.to(device)).cpu() for batch in batched(images, batch_size, progress, desc)]
        )


def pose_distance(requested: Tensor, estimated: Tensor, include_roll: bool = True) -> float:
    """APD: mean Euclidean distance of (yaw, pitch[, roll]) rows (N, 3), radians.

    Angle differences are wrapped to [-pi, pi) so that yaw +179 deg and -179 deg are 2 deg apart.
    """
    columns = 3 if include_roll else 2
    difference = (estimated[:, :columns] - requested[:, :columns]).double()
    difference = torch.remainder(difference + torch.pi, 2 * torch.pi) - torch.pi
    return float(difference.norm(dim=1).mean())


def lighting_error(requested_sh: Tensor, estimated_sh: Tensor) -> float:
    """LE: mean squared error over the (N, 9, 3) SH coefficients."""
    return float(((estimated_sh.double() - requested_sh.double()) ** 2).mean())


def lighting_stability(estimated_sh: Tensor, light_group: Tensor) -> tuple[float, int]:
    """LS: mean over light groups of >= 2 images of the per-coefficient population std of the estimated SH.

    Args:
        estimated_sh: (N, 9, 3) estimated SH.
        light_group: (N,) ids; equal ids were asked for the same light.

    Returns:
        (LS, number of groups used); (nan, 0) when no group has two images.
    """
    stds = []
    for group in torch.unique(light_group):
        members = estimated_sh[light_group == group].double()
        if members.shape[0] >= 2:
            stds.append(members.reshape(members.shape[0], -1).std(dim=0, unbiased=False).mean())
    if not stds:
        return float("nan"), 0
    return float(torch.stack(stds).mean()), len(stds)


def identity_consistency(embeddings: Tensor, identity: Tensor) -> tuple[float, int, float]:
    """ID: mean cosine similarity over all pairs of images with the same identity id.

    Args:
        embeddings: (N, D) identity embeddings (normalised here).
        identity: (N,) identity ids.

    Returns:
        (ID, number of same-identity pairs, mean cosine similarity of pairs of
        *different* identities). The last is the chance level that puts ID in
        context (a network mapping everything to one point gives ID = 1 and
        the same figure for different identities). NaN where there are no pairs.
    """
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    similarity = unit @ unit.T
    same = identity[:, None] == identity[None, :]
    upper = torch.ones_like(same).triu(diagonal=1)
    same_pairs, different_pairs = similarity[same & upper], similarity[~same & upper]
    different = float(different_pairs.mean()) if different_pairs.numel() else float("nan")
    if same_pairs.numel() == 0:
        return float("nan"), 0, different
    return float(same_pairs.mean()), int(same_pairs.numel()), different


def expression_distance(requested: Tensor, estimated: Tensor) -> float:
    """The papers' AED: mean Euclidean distance of expression coefficient rows (N, E)."""
    return float((estimated.double() - requested.double()).norm(dim=1).mean())


def landmark_offset_distance(requested: Tensor, estimated: Tensor, landmarks: slice = slice(None)) -> float:
    """AED on landmark offsets (N, 68, 3) in head-model units: mean per-landmark distance, millimetres."""
    difference = estimated[:, landmarks].double() - requested[:, landmarks].double()
    return float(difference.norm(dim=-1).mean() / UNITS_PER_MM)
