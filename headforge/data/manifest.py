"""Parsing and checking ``dataset.json``: camera labels and the optional per-file keys.

The format is described in ``docs/dataset_format.md``. ``parse_manifest``
turns the JSON object into arrays aligned with the ``labels`` order and
returns every problem it finds instead of stopping at the first; problems
with ``file=None`` make the whole file unusable.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from headforge.cameras import validate_label
from headforge.data.storage import DEFAULT_DEPTH_SCALE, MAP_KINDS, FileDecodeError, normalize_name
from headforge.data.validation import DatasetWarning, Problem
from headforge.lighting import validate_sh

LABEL_SIZE = 25  # 16 cam2world + 9 normalised intrinsics
SH_SHAPE = (9, 3)
REQUIRED_PARAMS = ("shape", "expression", "pose")
HEAD_MODELS = ("procedural", "flame")


@dataclass
class DatasetManifest:
    """Contents of ``dataset.json`` as arrays, item ``i`` being ``files[i]`` (N items).

    Rows of items with problems hold placeholders (NaN or 0); such items are
    dropped or reported before a manifest reaches users.
    """

    files: list[str]
    labels: np.ndarray  # (N, 25) float64
    sh: np.ndarray | None = None  # (N, 9, 3) float64
    params: dict[str, np.ndarray] | None = None  # name -> (N, D) float64
    params_model: str | None = None  # "procedural", "flame" or None when unspecified
    clips: np.ndarray | None = None  # (N, 2) int64: clip id, frame index
    identities: np.ndarray | None = None  # (N,) int64
    maps: dict[str, list[str]] = field(default_factory=dict)  # kind -> N file names
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def depth_scale(self) -> float:
        """World units per count of a 16-bit depth PNG (``meta["depth_scale"]``)."""
        return float(self.meta.get("depth_scale", DEFAULT_DEPTH_SCALE))

    def select(self, indices: Sequence[int]) -> DatasetManifest:
        """Manifest of the items ``indices`` (in that order)."""
        index = np.asarray(indices, dtype=np.int64)

        def take(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[index]

        return replace(
            self,
            files=[self.files[i] for i in index],
            labels=self.labels[index],
            sh=take(self.sh),
            params=None if self.params is None else {k: v[index] for k, v in self.params.items()},
            clips=take(self.clips),
            identities=take(self.identities),
            maps={kind: [names[i] for i in index] for kind, names in self.maps.items()},
        )


def parse_manifest(
    source: bytes | str | dict, check_values: bool = True
) -> tuple[DatasetManifest | None, list[Problem]]:
    """Parse ``dataset.json`` (raw bytes/text or the decoded object) into a manifest.

    With ``check_values`` every camera goes through ``headforge.cameras.validate_label``
    and every SH block through ``headforge.lighting.validate_sh``; lengths, types
    and finiteness are always checked. Returns ``(None, problems)`` when there
    are no usable ``labels`` at all.
    """
    problems: list[Problem] = []
    if isinstance(source, dict):
        document = source
    else:
        try:
            document = json.loads(source)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return None, [Problem(None, f"dataset.json is not valid JSON ({error})")]
    if not isinstance(document, dict):
        return None, [Problem(None, "dataset.json must hold a JSON object with a 'labels' key")]
    if "labels" not in document:
        return None, [Problem(None, "dataset.json has no 'labels' key")]
    raw_labels = document["labels"]
    if not isinstance(raw_labels, list) or not raw_labels:
        what = "null" if raw_labels is None else "empty" if raw_labels == [] else "not a list"
        return None, [
            Problem(None, f"'labels' in dataset.json is {what}; expected [[file, [25 numbers]], ...]")
        ]

    files, labels = _parse_labels(raw_labels, check_values, problems)
    index = {name: i for i, name in enumerate(files)}
    manifest = DatasetManifest(files=files, labels=labels)

    sh = _per_file(document.get("sh"), "sh", index, lambda v: _parse_sh(v, check_values), problems)
    if sh is not None:
        manifest.sh = _stack(sh, len(files), SH_SHAPE, np.float64)
    params = _per_file(document.get("params"), "params", index, _parse_params, problems)
    if params is not None:
        manifest.params, manifest.params_model = _gather_params(params, files, problems)
    clips = _per_file(document.get("clips"), "clips", index, _parse_clip, problems)
    if clips is not None:
        manifest.clips = _stack(clips, len(files), (2,), np.int64)
        _check_unique_frames(clips, files, problems)
    identities = _per_file(document.get("identities"), "identities", index, _parse_identity, problems)
    if identities is not None:
        manifest.identities = _stack(identities, len(files), (), np.int64)
    manifest.maps = _parse_maps(document.get("maps"), index, problems)
    manifest.meta = _parse_meta(document.get("meta"), problems)
    return manifest, problems


def _parse_labels(
    raw_labels: list, check_values: bool, problems: list[Problem]
) -> tuple[list[str], np.ndarray]:
    files: list[str] = []
    seen: set[str] = set()
    rows: list[np.ndarray] = []
    for position, entry in enumerate(raw_labels):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            problems.append(Problem(None, f"'labels' entry #{position} is not a [file, [25 numbers]] pair"))
            continue
        try:
            name = normalize_name(entry[0])
        except FileDecodeError as error:
            problems.append(Problem(entry[0], str(error)))
            continue
        if name in seen:
            problems.append(Problem(name, "listed more than once in 'labels'"))
            continue
        seen.add(name)
        label, error = _number_vector(entry[1], (LABEL_SIZE,), "camera label")
        if error is None and check_values:
            error = validate_label(torch.from_numpy(label))
            error = None if error is None else f"invalid camera label: {error}"
        if error is not None:
            problems.append(Problem(name, error))
            label = np.full(LABEL_SIZE, np.nan)
        files.append(name)
        rows.append(label)
    return files, np.stack(rows) if rows else np.zeros((0, LABEL_SIZE))


def _number_vector(value: Any, shape: tuple[int, ...], what: str) -> tuple[np.ndarray, str | None]:
    """Strict JSON numbers -> float64 array of ``shape`` (nested lists or flat); error text on failure."""
    size = math.prod(shape)
    flat = value
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        flat = [number for row in value for number in row]
        if len(shape) != 2 or len(value) != shape[0] or any(len(row) != shape[1] for row in value):
            return np.empty(0), f"{what} must be {size} numbers, got nested lists of another shape"
    if not isinstance(flat, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat
    ):
        return np.empty(0), f"{what} must be a list of {size} numbers"
    if len(flat) != size:
        return np.empty(0), f"{what} has {len(flat)} numbers, expected {size}"
    array = np.asarray(flat, dtype=np.float64).reshape(shape)
    if not np.isfinite(array).all():
        return np.empty(0), f"{what} has non-finite values (NaN or infinity)"
    return array, None


def _per_file(
    raw: Any,
    key: str,
    index: dict[str, int],
    parse_value: Callable[[Any], tuple[Any, str | None]],
    problems: list[Problem],
) -> dict[int, Any] | None:
    """Match ``[[file, value], ...]`` to items; every item needs a value once one has it.

    Returns {item index: parsed value or None when the value was bad}; None when
    the key is absent or empty.
    """
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        problems.append(Problem(None, f"'{key}' must be a list of [file, value] pairs"))
        return None
    values: dict[int, Any] = {}
    for position, entry in enumerate(raw):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            problems.append(Problem(None, f"'{key}' entry #{position} is not a [file, value] pair"))
            continue
        try:
            name = normalize_name(entry[0])
        except FileDecodeError as error:
            problems.append(Problem(entry[0], str(error)))
            continue
        item = index.get(name)
        if item is None:
            problems.append(Problem(name, f"has a '{key}' entry but no entry in 'labels'"))
        elif item in values:
            problems.append(Problem(name, f"listed more than once in '{key}'"))
        else:
            value, error = parse_value(entry[1])
            if error is not None:
                problems.append(Problem(name, f"bad '{key}': {error}"))
            values[item] = None if error is not None else value
    if values and 2 * len(values) < len(index):
        # Most items lack the key: the few entries are the odd ones out, and
        # skipping them (skip_bad) leaves a consistent dataset without the key.
        problems.extend(
            Problem(name, f"has a '{key}' entry although most items have none")
            for name, item in index.items()
            if item in values
        )
        return None
    if values:
        problems.extend(
            Problem(name, f"missing from '{key}' although other items have it")
            for name, item in index.items()
            if item not in values
        )
    return values


def _stack(values: dict[int, Any], count: int, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    array = np.zeros((count, *shape), dtype=dtype)
    for item, value in values.items():
        if value is not None:
            array[item] = value
    return array


def _parse_sh(value: Any, check_values: bool) -> tuple[np.ndarray, str | None]:
    sh, error = _number_vector(value, SH_SHAPE, "sh")
    if error is None and check_values:
        error = validate_sh(torch.from_numpy(sh))
    return sh, error


def _parse_params(value: Any) -> tuple[tuple[dict[str, np.ndarray], str | None], str | None]:
    if not isinstance(value, dict):
        return ({}, None), 'must be an object {"shape": [...], "expression": [...], "pose": [...]}'
    missing = [name for name in REQUIRED_PARAMS if name not in value]
    if missing:
        return ({}, None), f"lacks {', '.join(missing)}"
    model = value.get("model")
    if model is not None and model not in HEAD_MODELS:
        return ({}, None), f"model must be one of {', '.join(HEAD_MODELS)}, got {model!r}"
    arrays = {}
    for name, numbers in value.items():
        if name == "model":
            continue
        if not isinstance(numbers, list):
            return ({}, None), f"'{name}' must be a list of numbers"
        array, error = _number_vector(numbers, (len(numbers),), f"'{name}'")
        if error is not None:
            return ({}, None), error
        arrays[name] = array
    return (arrays, model), None


def _gather_params(
    values: dict[int, Any], files: list[str], problems: list[Problem]
) -> tuple[dict[str, np.ndarray], str | None]:
    """Per-item parameter dicts -> {name: (N, D)}; every item must match the majority layout and model."""
    good = {item: value for item, value in values.items() if value is not None}
    layout = Counter(
        tuple(sorted((name, len(a)) for name, a in arrays.items())) for arrays, _ in good.values()
    )
    models = Counter(model for _, model in good.values())
    if not layout:
        return {}, None
    common_layout = dict(layout.most_common(1)[0][0])
    common_model = models.most_common(1)[0][0]
    for item, (arrays, model) in good.items():
        shape = {name: len(a) for name, a in arrays.items()}
        if shape != common_layout:
            describe = ", ".join(f"{name}: {size}" for name, size in sorted(shape.items()))
            expected = ", ".join(f"{name}: {size}" for name, size in sorted(common_layout.items()))
            problems.append(
                Problem(files[item], f"params sizes ({describe}) differ from the others ({expected})")
            )
        elif model != common_model:
            problems.append(
                Problem(files[item], f"params model {model!r} differs from the others ({common_model!r})")
            )
    stacked = {name: np.zeros((len(files), size)) for name, size in common_layout.items()}
    for item, (arrays, _) in good.items():
        if {name: len(a) for name, a in arrays.items()} == common_layout:
            for name, array in arrays.items():
                stacked[name][item] = array
    return stacked, common_model


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_clip(value: Any) -> tuple[tuple[int, int] | None, str | None]:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)):
        return None, "must be [clip_id, frame_index] (two integers)"
    if value[0] < 0 or value[1] < 0:
        return None, f"clip id and frame index must be >= 0, got {value}"
    return (value[0], value[1]), None


def _check_unique_frames(clips: dict[int, Any], files: list[str], problems: list[Problem]) -> None:
    first_file: dict[tuple[int, int], str] = {}
    for item in sorted(clips):
        key = clips[item]
        if key is None:
            continue
        if key in first_file:
            problems.append(Problem(files[item], f"clip {key[0]} frame {key[1]} is also {first_file[key]}"))
        else:
            first_file[key] = files[item]


def _parse_identity(value: Any) -> tuple[int | None, str | None]:
    if not _is_int(value) or value < 0:
        return None, f"identity must be an integer >= 0, got {value!r}"
    return value, None


def _parse_maps(raw: Any, index: dict[str, int], problems: list[Problem]) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(Problem(None, "'maps' must be an object {kind: [[file, map_file], ...]}"))
        return {}
    maps = {}
    for kind, entries in raw.items():
        if kind not in MAP_KINDS:
            warnings.warn(
                f"ignoring unknown map kind {kind!r} (known: {', '.join(MAP_KINDS)})",
                DatasetWarning,
                stacklevel=3,
            )
            continue
        values = _per_file(entries, f"maps.{kind}", index, _parse_map_file, problems)
        if values is not None:
            maps[kind] = [values.get(i) or "" for i in range(len(index))]
    return maps


def _parse_map_file(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, "map file must be a string"
    try:
        return normalize_name(value), None
    except FileDecodeError as error:
        return None, str(error)


def _parse_meta(raw: Any, problems: list[Problem]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(Problem(None, "'meta' must be an object"))
        return {}
    scale = raw.get("depth_scale")
    if scale is not None and not (_is_number(scale) and math.isfinite(scale) and scale > 0):
        problems.append(Problem(None, f"meta.depth_scale must be a positive number, got {scale!r}"))
    return dict(raw)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
