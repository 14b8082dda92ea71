"""Writing ``dataset.json`` (the format of ``docs/dataset_format.md``), atomically.

Used by the synthetic head studio and the preprocessing pipeline. What is
written goes through the same checks as what ``HeadDataset`` reads, so a
writer cannot produce a file the reader would reject for its contents.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headforge.atomic_io import write_bytes_atomic
from headforge.data.manifest import parse_manifest
from headforge.data.validation import DatasetError

# A per-file key may be given as {file: value} or as [(file, value), ...].
PerFile = Mapping[str, Any] | Sequence[tuple[str, Any]]


def _pairs(values: PerFile) -> list[tuple[str, Any]]:
    items = values.items() if isinstance(values, Mapping) else values
    return [(str(name), value) for name, value in items]


def _floats(value: Any) -> list[float]:
    """Array-like (list, NumPy array, torch tensor on any device) -> flat list of Python floats."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return [float(x) for x in np.asarray(value, dtype=np.float64).reshape(-1)]


def _params_entry(value: Mapping[str, Any]) -> dict[str, Any]:
    return {name: (array if name == "model" else _floats(array)) for name, array in value.items()}


def build_dataset_document(
    labels: PerFile,
    sh: PerFile | None = None,
    params: PerFile | None = None,
    clips: PerFile | None = None,
    maps: Mapping[str, PerFile] | None = None,
    identities: PerFile | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of a ``dataset.json``, with every value turned into plain JSON types.

    ``labels``: file -> 25 numbers; ``sh``: file -> 27 numbers or (9, 3);
    ``params``: file -> {"shape", "expression", "pose": numbers, optional "model"};
    ``clips``: file -> (clip_id, frame_index); ``maps``: kind -> (file -> map file);
    ``identities``: file -> int; ``meta``: any JSON object.
    """
    document: dict[str, Any] = {"labels": [[name, _floats(label)] for name, label in _pairs(labels)]}
    if sh is not None:
        document["sh"] = [[name, _floats(value)] for name, value in _pairs(sh)]
    if params is not None:
        document["params"] = [[name, _params_entry(value)] for name, value in _pairs(params)]
    if clips is not None:
        document["clips"] = [
            [name, [operator.index(value[0]), operator.index(value[1])]] for name, value in _pairs(clips)
        ]
    if maps is not None:
        document["maps"] = {
            kind: [[name, str(file)] for name, file in _pairs(files)] for kind, files in maps.items()
        }
    if identities is not None:
        document["identities"] = [[name, operator.index(value)] for name, value in _pairs(identities)]
    if meta is not None:
        document["meta"] = dict(meta)
    return document


def write_dataset_json(
    path: str | os.PathLike[str],
    labels: PerFile,
    sh: PerFile | None = None,
    params: PerFile | None = None,
    clips: PerFile | None = None,
    maps: Mapping[str, PerFile] | None = None,
    identities: PerFile | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Check and write ``dataset.json`` atomically; returns the path written.

    ``path`` is the dataset folder (the file goes to ``path/dataset.json``) or
    the ``.json`` file itself. Arguments are as in ``build_dataset_document``;
    files are named relative to the dataset root. Contents are checked like the
    reader checks them (camera validity, SH, key coverage, ...) and any problem
    raises ``DatasetError`` before anything is written. The file is written to a
    temporary file in the same folder and renamed over the target, so readers
    see the old file or the new one, never a partial one.
    """
    path = Path(path)
    target = path / "dataset.json" if path.is_dir() or path.suffix.lower() != ".json" else path
    document = build_dataset_document(labels, sh, params, clips, maps, identities, meta)
    _, problems = parse_manifest(document, check_values=True)
    if problems:
        raise DatasetError(target, problems)
    # allow_nan=False: NaN and Infinity are not JSON (other readers reject them).
    write_bytes_atomic(target, json.dumps(document, allow_nan=False).encode("utf-8"), durable=True)
    return target
