"""Temporal inconsistency (TI), disentanglement score (DS) and view pairing: the formulas.

Pure functions of estimated attributes and group ids; which images form a
group is the protocols' business (``headforge.eval.protocols``,
``headforge.eval.consistency_protocols``). Group ids are (N,) int64 with -1
for images that belong to no group.

- TI (NeRFFaceShop §V-D): per group of images whose shape should not change
  (one identity under many animations), the population standard deviation of
  each estimated shape coefficient over the group, averaged over coefficients;
  then the mean over groups.
- DS (3DFaceShop §5.4.3, eq. 25): for attribute i, groups where only i was
  changed. sigma^(i)_k = mean over those groups of the population variance of
  the estimated attribute k within the group (mean over k's coefficients),
  divided by the variance of k over a reference set (mean over coefficients);
  DS_i = prod_{j != i} sigma^(i)_i / sigma^(i)_j. Higher is better: changing i
  moves i much more than it moves the others.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from headforge.cameras import matrices_from_label
from headforge.heads.base import POSE_SLICES

__all__ = [
    "ATTRIBUTES",
    "attribute_groups",
    "camera_angle_degrees",
    "dataset_attribute_groups",
    "disentanglement_scores",
    "group_spread",
    "reference_variance",
    "temporal_inconsistency",
    "view_pairs",
]

#: the DS attributes (3DFaceShop's beta, R, gamma), in report order.
ATTRIBUTES = ("expression", "pose", "light")


def _members(groups: Tensor) -> list[Tensor]:
    """Index tensors of each group id >= 0 with at least two images, ordered by id."""
    out = []
    for group in torch.unique(groups):
        if int(group) < 0:
            continue
        index = torch.nonzero(groups == group).flatten()
        if index.numel() >= 2:
            out.append(index)
    return out


def group_spread(values: Tensor, groups: Tensor, statistic: str = "std") -> tuple[float, int]:
    """Mean over groups (>= 2 images, id >= 0) of the per-coefficient population std or variance.

    Args:
        values: (N, D) estimated coefficients (any trailing shape is flattened).
        groups: (N,) int64 group ids, -1 = in no group.
        statistic: "std" or "var" (both population: divide by the group size).

    Returns:
        (mean over groups of the mean over coefficients, groups used); (nan, 0) when no group.
    """
    if statistic not in ("std", "var"):
        raise ValueError(f"statistic must be 'std' or 'var', got {statistic!r}")
    flat = values.reshape(values.shape[0], -1).double()
    spreads = []
    for index in _members(groups):
        rows = flat[index]
        spread = rows.var(dim=0, unbiased=False)
        spreads.append((spread.sqrt() if statistic == "std" else spread).mean())
    if not spreads:
        return float("nan"), 0
    return float(torch.stack(spreads).mean()), len(spreads)


def temporal_inconsistency(shape: Tensor, groups: Tensor) -> tuple[float, int]:
    """TI: mean over groups of the mean over coefficients of the population std of the estimated shape.

    Args:
        shape: (N, S) estimated shape coefficients.
        groups: (N,) ids of images whose shape should be constant (one identity, animated); -1: none.

    Returns:
        (TI in shape-coefficient units, groups used); (nan, 0) when no group has two images.
    """
    return group_spread(shape, groups, "std")


def reference_variance(values: Tensor) -> float:
    """Population variance of (N, D) values over N, averaged over the D coefficients (DS's normaliser)."""
    return float(values.reshape(values.shape[0], -1).double().var(dim=0, unbiased=False).mean())


def disentanglement_scores(
    estimates: dict[str, Tensor],
    groups: dict[str, Tensor],
    normalisers: dict[str, float],
) -> dict[str, dict]:
    """DS_i for every attribute i that has groups (3DFaceShop eq. 25; see the module docstring).

    Args:
        estimates: attribute -> (N, D_k) estimated coefficients of every image.
        groups: attribute i -> (N,) ids of the groups where only i changes (-1: none).
        normalisers: attribute -> its variance over the reference set (``reference_variance``).

    Returns:
        attribute i -> {"value": DS_i, "sigma": {k: sigma^(i)_k}, "groups": count}; value NaN
        (and sigma empty) when i has no group of two images, +inf when some sigma^(i)_j is 0
        while sigma^(i)_i > 0.
    """
    scores: dict[str, dict] = {}
    for attribute, ids in groups.items():
        sigma: dict[str, float] = {}
        used = 0
        for other, values in estimates.items():
            variance, used = group_spread(values, ids, "var")
            sigma[other] = variance / normalisers[other] if normalisers[other] > 0 else float("nan")
        if used == 0:
            scores[attribute] = {"value": float("nan"), "sigma": {}, "groups": 0}
            continue
        value = 1.0
        for other, other_sigma in sigma.items():
            if other == attribute:
                continue
            ratio = sigma[attribute] / other_sigma if other_sigma > 0 else math.inf * sigma[attribute]
            value *= ratio
        scores[attribute] = {"value": value, "sigma": sigma, "groups": used}
    return scores


def attribute_groups(identity: Tensor, attributes: dict[str, Tensor]) -> dict[str, Tensor]:
    """Groups where exactly one attribute changes, from per-image attribute values.

    Images share a group for attribute i when they have the same identity and
    bit-identical values of every *other* attribute; a group counts only if
    its members differ in i itself (so duplicates form no group).

    Args:
        identity: (N,) int64 identity ids.
        attributes: name -> (N, ...) the values that define it (e.g. "light" -> SH labels).

    Returns:
        name -> (N,) int64 group ids (dense from 0), -1 for images in no such group.
    """
    rows = {name: values.reshape(values.shape[0], -1).double() for name, values in attributes.items()}
    out: dict[str, Tensor] = {}
    for name, own in rows.items():
        context = torch.cat([identity[:, None].double(), *(v for k, v in rows.items() if k != name)], dim=1)
        context_id = torch.unique(context, dim=0, return_inverse=True)[1]
        ids = torch.full_like(identity, -1)
        next_id = 0
        for index in _members(context_id):
            if torch.unique(own[index], dim=0).shape[0] >= 2:
                ids[index] = next_id
                next_id += 1
        out[name] = ids
    return out


def dataset_attribute_groups(
    identity: Tensor, cameras: Tensor, sh: Tensor, expression: Tensor, pose: Tensor
) -> dict[str, Tensor]:
    """DS groups of a labelled dataset: images of one identity where only one attribute changes.

    Attributes: expression = expression coefficients + jaw and eye joints;
    pose = camera label + global and neck joints (the head as the camera sees
    it); light = SH. Shape is fixed by the identity.

    Args:
        identity: (N,) ids; cameras: (N, 25); sh: (N, 9, 3); expression: (N, E);
        pose: (N, 15) axis-angle joints (``POSE_SLICES``), radians.

    Returns:
        "expression" / "pose" / "light" -> (N,) group ids, -1 where in no group.
    """
    face = [pose[:, POSE_SLICES[name]] for name in ("jaw", "left_eye", "right_eye")]
    head = [pose[:, POSE_SLICES[name]] for name in ("global", "neck")]
    return attribute_groups(
        identity,
        {
            "expression": torch.cat([expression, *face], dim=1),
            "pose": torch.cat([cameras, *head], dim=1),
            "light": sh,
        },
    )


def camera_angle_degrees(camera_a: Tensor, camera_b: Tensor) -> Tensor:
    """(N,) angle between the optical axes of cameras (N, 25) and (N, 25), degrees."""
    axis_a = matrices_from_label(camera_a.double())[0][:, :3, 2]
    axis_b = matrices_from_label(camera_b.double())[0][:, :3, 2]
    cosine = torch.nn.functional.cosine_similarity(axis_a, axis_b, dim=1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosine))


def view_pairs(cameras: Tensor, scene: Tensor, min_degrees: float, max_degrees: float) -> Tensor:
    """Every pair of views of one scene whose cameras are ``min_degrees`` .. ``max_degrees`` apart.

    Args:
        cameras: (N, 25) camera labels.
        scene: (N,) ids; equal ids show the same scene (identity, animation, light); -1: none.
        min_degrees, max_degrees: the accepted angle between the optical axes.

    Returns:
        (P, 2) int64 image indices (i < j), sorted.
    """
    pairs = []
    for index in _members(scene):
        first, second = torch.triu_indices(index.numel(), index.numel(), offset=1)
        angles = camera_angle_degrees(cameras[index[first]], cameras[index[second]])
        keep = (angles >= min_degrees) & (angles <= max_degrees)
        pairs.append(torch.stack([index[first][keep], index[second][keep]], dim=1))
    if not pairs:
        return torch.zeros(0, 2, dtype=torch.int64)
    found = torch.cat(pairs)
    return found[torch.argsort(found[:, 0] * (found.max() + 1) + found[:, 1])] if found.numel() else found
