"""headforge.data: the EG3D-format head dataset (reader, validation, ``dataset.json`` writer).

The format is described in docs/dataset_format.md.
"""

from headforge.data.dataset import HeadDataset, check_batch_size, spread_indices
from headforge.data.dataset_json import build_dataset_document, write_dataset_json
from headforge.data.manifest import DatasetManifest, parse_manifest
from headforge.data.storage import MAP_KINDS
from headforge.data.validation import DatasetError, DatasetWarning, Problem

__all__ = [
    "MAP_KINDS",
    "DatasetError",
    "DatasetManifest",
    "DatasetWarning",
    "HeadDataset",
    "Problem",
    "build_dataset_document",
    "check_batch_size",
    "parse_manifest",
    "spread_indices",
    "write_dataset_json",
]
