"""Report entries of ``headforge eval``'s TI, DS and MV from :class:`EvalSamples` and estimators.

Each entry is a dict {value, reliable, note, ...} like the other metrics of
``headforge.eval.command.evaluate``; a metric the samples cannot support gets
value NaN and a note. Requesting ``ds`` gives three entries, ``ds_expression``,
``ds_pose`` and ``ds_light``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from headforge.eval.consistency import (
    ATTRIBUTES,
    disentanglement_scores,
    group_spread,
    reference_variance,
    temporal_inconsistency,
)
from headforge.eval.protocols import EvalSamples
from headforge.eval.reprojection import (
    DEFAULT_DEPTH_TOLERANCE,
    DEFAULT_SURFACE_THRESHOLD,
    reprojection_error,
)

__all__ = ["DS_NAMES", "Estimate", "attribute_estimates", "score_ds", "score_mv", "score_ti"]

#: estimator kind, images (N, 3, H, W) -> (outputs, EstimatorQualityWarning message or None).
Estimate = Callable[[str, Tensor], tuple[dict[str, Tensor], str | None]]
#: the report rows of ``ds``.
DS_NAMES = tuple(f"ds_{attribute}" for attribute in ATTRIBUTES)


def _missing(note: str) -> dict[str, Any]:
    return {"value": float("nan"), "reliable": False, "note": note}


def _note(warnings: list[str | None], text: str) -> str:
    found = [w for w in dict.fromkeys(warnings) if w]
    return f"UNRELIABLE: {'; '.join(found)}. {text}" if found else text


def _has_groups(ids: Tensor | None) -> bool:
    """Whether some group id >= 0 has at least two images."""
    if ids is None:
        return False
    kept = ids[ids >= 0]
    return kept.numel() > 0 and bool((torch.bincount(kept) >= 2).any())


def score_ti(
    samples: EvalSamples, estimate: Estimate, reference: EvalSamples | None = None
) -> dict[str, Any]:
    """TI entry: value, groups, ``all_images_std`` (identities mixed: chance) and ``reference_floor``.

    ``reference_floor`` is TI of ``reference`` grouped by its shape groups
    (studio data: the shape is constant per identity, so this is the shape
    estimator's own noise), NaN without such a reference.
    """
    if not _has_groups(samples.shape_group):
        return _missing("the source has no shape groups (animations of one identity, identity or clip ids)")
    outputs, warning = estimate("shape", samples.images)
    value, used = temporal_inconsistency(outputs["shape"], samples.shape_group)
    everyone = torch.zeros(len(samples), dtype=torch.int64)
    chance, _ = group_spread(outputs["shape"], everyone, "std")
    floor = float("nan")
    floor_text = (
        "no reference (on ground-truth data with constant shape per identity, TI itself is the floor)"
    )
    if reference is not None and _has_groups(reference.shape_group):
        reference_outputs, _ = estimate("shape", reference.images)
        floor, _ = temporal_inconsistency(reference_outputs["shape"], reference.shape_group)
        floor_text = f"{floor:.4g}"
    return {
        "value": value,
        "groups": used,
        "all_images_std": chance,
        "reference_floor": floor,
        "reliable": warning is None and used > 0,
        "note": _note(
            [warning],
            f"std of estimated shape coefficients over {used} groups; all images mixed: {chance:.4g}; "
            f"estimator floor (reference data by identity): {floor_text}",
        ),
    }


def attribute_estimates(
    samples: EvalSamples, estimate: Estimate
) -> tuple[dict[str, Tensor], list[str | None]]:
    """Estimated DS attributes of every image: expression (N, 204), pose (N, 3) radians, light (N, 27).

    The expression is read as its landmark offsets (68 x 3, head-model units), the
    identifiable form of the coefficients (docs/estimators.md).
    """
    expression, expression_warning = estimate("expression", samples.images)
    pose, pose_warning = estimate("pose", samples.images)
    light, light_warning = estimate("lighting", samples.images)
    values = {
        "expression": expression["expression_offsets"].flatten(1),
        "pose": torch.stack([pose["yaw"], pose["pitch"], pose["roll"]], dim=1),
        "light": light["sh"].reshape(len(samples), -1),
    }
    return values, [expression_warning, pose_warning, light_warning]


def score_ds(
    samples: EvalSamples, estimate: Estimate, reference: EvalSamples | None = None
) -> dict[str, Any]:
    """The three DS entries (``DS_NAMES``): value, sigma per attribute, groups, normaliser source."""
    groups = {name: ids for name, ids in samples.attribute_groups.items() if _has_groups(ids)}
    if not groups:
        note = "the source has no groups where only the expression, the pose or the light changes"
        return {name: _missing(note) for name in DS_NAMES}
    values, warnings = attribute_estimates(samples, estimate)
    if reference is not None:
        reference_values, _ = attribute_estimates(reference, estimate)
        normaliser_source = f"variance over the {len(reference)} reference images"
    else:
        reference_values = values
        normaliser_source = f"variance over the {len(samples)} evaluated images (no reference set)"
    normalisers = {name: reference_variance(reference_values[name]) for name in ATTRIBUTES}
    scores = disentanglement_scores(values, groups, normalisers)
    entries: dict[str, Any] = {}
    for attribute, name in zip(ATTRIBUTES, DS_NAMES, strict=True):
        if attribute not in scores or scores[attribute]["groups"] == 0:
            entries[name] = _missing(f"the source has no groups where only the {attribute} changes")
            continue
        score = scores[attribute]
        sigma = ", ".join(f"{key} {value:.3g}" for key, value in score["sigma"].items())
        entries[name] = {
            "value": score["value"],
            "sigma": score["sigma"],
            "groups": score["groups"],
            "normalisers": normalisers,
            "reliable": all(w is None for w in warnings),
            "note": _note(
                warnings,
                f"{score['groups']} groups changing only the {attribute}; normalised sigma: {sigma}; "
                f"normaliser: {normaliser_source}",
            ),
        }
    return entries


def score_mv(
    samples: EvalSamples,
    depth_tolerance: float = DEFAULT_DEPTH_TOLERANCE,
    surface_threshold: float = DEFAULT_SURFACE_THRESHOLD,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """MV entry: mean absolute colour error ([0, 1] scale) over both directions of every view pair.

    Also ``psnr`` (dB, of the mean squared error over directions), ``valid_fraction`` (mean
    over directions of compared / surface pixels of the source view), ``unaligned_baseline``
    (the error against B's same pixels, no reprojection), ``pairs`` and ``directions``
    (those with at least one compared pixel).
    """
    pairs = samples.view_pairs
    if samples.depth is None or samples.surface is None or samples.cameras is None:
        return _missing("the source has no depth maps")
    if pairs is None or pairs.shape[0] == 0:
        return _missing("the source has no pairs of views of one scene a few degrees apart")
    both = torch.cat([pairs, pairs.flip(1)])  # A -> B and B -> A
    absolute, squared, unaligned, fractions = [], [], [], []
    starts = range(0, both.shape[0], batch_size)
    for start in tqdm(starts, desc="reprojection", unit="batch", disable=not progress):
        first, second = both[start : start + batch_size].unbind(1)

        def rows(tensor: Tensor, index: Tensor) -> Tensor:
            return tensor[index].to(device)

        result = reprojection_error(
            rows(samples.images, first),
            rows(samples.depth, first),
            rows(samples.surface, first),
            rows(samples.cameras, first),
            rows(samples.images, second),
            rows(samples.depth, second),
            rows(samples.surface, second),
            rows(samples.cameras, second),
            depth_tolerance,
            surface_threshold,
        )
        used = (result.valid > 0).cpu()
        absolute.append(result.abs_error.double().cpu()[used])
        squared.append(result.squared_error.double().cpu()[used])
        unaligned.append(result.unaligned_abs_error.double().cpu()[used])
        fractions.append(torch.nan_to_num(result.valid_fraction.cpu(), nan=0.0))
    absolute_all, squared_all = torch.cat(absolute), torch.cat(squared)
    valid_fraction = float(torch.cat(fractions).mean())
    directions = int(absolute_all.numel())
    settings = f"opacity >= {surface_threshold}, depth tolerance {depth_tolerance} world units"
    if directions == 0:
        entry = _missing(f"no pixel of {pairs.shape[0]} view pairs could be compared ({settings})")
        entry.update(pairs=int(pairs.shape[0]), directions=0, valid_fraction=valid_fraction)
        return entry
    mse = float(squared_all.mean())
    baseline = float(torch.cat(unaligned).mean())
    psnr = 10.0 * torch.log10(torch.tensor(1.0 / mse, dtype=torch.float64)).item()
    return {
        "value": float(absolute_all.mean()),
        "psnr": psnr,
        "valid_fraction": valid_fraction,
        "unaligned_baseline": baseline,
        "pairs": int(pairs.shape[0]),
        "directions": directions,
        "reliable": True,
        "note": (
            f"mean absolute difference of view A's colour and view B's at A's reprojection, [0, 1] scale, "
            f"{pairs.shape[0]} pairs x 2 "
            f"directions at image resolution (depth resized bilinearly); PSNR {psnr:.2f} dB; "
            f"compared {valid_fraction:.1%} of surface pixels; {settings}; "
            f"same pixels without reprojection: {baseline:.4g}"
        ),
    }
