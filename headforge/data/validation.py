"""Problems found in a dataset: the error type, and the checks that decode every file.

Validation collects every problem before raising, so one run of a broken
dataset shows all that is wrong with it. A ``Problem`` names the file it
belongs to; a problem with ``file=None`` concerns the dataset as a whole and
can never be skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from headforge.data.storage import (
    RGB_CONVERTIBLE_MODES,
    DatasetStorage,
    FileDecodeError,
    decode_map,
    open_image,
)

MAX_PROBLEMS_SHOWN = 20


class Problem(NamedTuple):
    """One thing wrong with a dataset: the file it concerns (None: the whole dataset) and what."""

    file: str | None
    message: str


class DatasetWarning(UserWarning):
    """A dataset issue that was tolerated (skipped item, ignored file, unknown key)."""


class DatasetError(ValueError):
    """A dataset cannot be used as it is.

    The message names the dataset path and lists up to ``MAX_PROBLEMS_SHOWN``
    problems (file and what is wrong) plus a count of the rest; all of them are
    kept in ``problems``. ``DatasetError(message)`` alone (no problems) makes
    an error from a finished message, as DataLoader workers re-raise them.
    """

    def __init__(self, path: str | os.PathLike[str], problems: Sequence[Problem] | str | None = None) -> None:
        if problems is None:
            self.path, self.problems = "", []
            super().__init__(str(path))
            return
        if isinstance(problems, str):
            problems = [Problem(None, problems)]
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(format_problems(self.path, self.problems))

    def __reduce__(self) -> tuple:
        # Exceptions pickle their args by default, which here is the message only.
        if not self.problems:
            return type(self), (str(self),)
        return type(self), (self.path, self.problems)


def format_problems(path: str, problems: Sequence[Problem], limit: int = MAX_PROBLEMS_SHOWN) -> str:
    """Human-readable report: 'dataset PATH: N problems' then one line per problem."""
    if len(problems) == 1:
        return f"dataset {path}: {_describe(problems[0])}"
    lines = [f"dataset {path}: {len(problems)} problems"]
    lines.extend(f"  {_describe(problem)}" for problem in problems[:limit])
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def _describe(problem: Problem) -> str:
    return problem.message if problem.file is None else f"{problem.file}: {problem.message}"


class FileCheck(NamedTuple):
    """Outcome of decoding one item's files: image size (width, height) or None, and problems."""

    size: tuple[int, int] | None
    problems: list[Problem]


def check_item_files(
    storage: DatasetStorage,
    image_file: str,
    map_files: dict[str, str],
    depth_scale: float,
) -> FileCheck:
    """Fully decode one image and the given maps ``{kind: file}``; report what fails.

    Every map must have the same size as its image. Decoding happens once per
    file; nothing is kept.
    """
    problems: list[Problem] = []
    size = None
    try:
        image = open_image(storage.read(image_file))
        size = image.size
        if image.mode not in RGB_CONVERTIBLE_MODES:
            problems.append(Problem(image_file, f"unsupported image mode {image.mode}"))
            size = None
        elif size[0] != size[1]:
            problems.append(Problem(image_file, f"image is {size[0]}x{size[1]}, not square"))
            size = None
    except FileNotFoundError:
        problems.append(Problem(image_file, "image file not found"))
    except FileDecodeError as error:
        problems.append(Problem(image_file, str(error)))
    for kind, map_file in map_files.items():
        try:
            array = decode_map(kind, storage.read(map_file), map_file, depth_scale)
        except FileNotFoundError:
            problems.append(Problem(image_file, f"{kind} map {map_file} not found"))
            continue
        except FileDecodeError as error:
            problems.append(Problem(image_file, f"{kind} map {map_file}: {error}"))
            continue
        map_size = (array.shape[2], array.shape[1])
        if size is not None and map_size != size:
            problems.append(
                Problem(
                    image_file,
                    f"{kind} map {map_file} is {map_size[0]}x{map_size[1]}, image is {size[0]}x{size[1]}",
                )
            )
    return FileCheck(size, problems)


def check_files(
    storage: DatasetStorage,
    files: Sequence[str],
    maps: dict[str, Sequence[str]],
    resolution: int | None,
    depth_scale: float,
    workers: int | None = None,
) -> tuple[int | None, list[Problem]]:
    """Decode every image (and the maps ``{kind: per-item files}``) of a dataset.

    Without ``resolution`` all images must share one square size: the most
    common size wins and every other image is reported. Returns that size
    (``resolution`` when given; None when no image decoded) and the problems.
    Decoding runs on a thread pool: PIL releases the GIL while it decodes.
    """
    workers = workers or min(8, os.cpu_count() or 1)

    def check(index: int) -> FileCheck:
        item_maps = {kind: names[index] for kind, names in maps.items()}
        return check_item_files(storage, files[index], item_maps, depth_scale)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(check, range(len(files)), chunksize=64))
    problems = [problem for result in results for problem in result.problems]
    sizes = Counter(result.size for result in results if result.size is not None)
    if resolution is not None:
        return resolution, problems
    if not sizes:
        return None, problems
    (common, _), *_ = sizes.most_common(1)
    for file, result in zip(files, results):
        if result.size is not None and result.size != common:
            problems.append(
                Problem(
                    file,
                    f"image is {result.size[0]}x{result.size[1]} but most images are "
                    f"{common[0]}x{common[1]}; pass resolution= to resize",
                )
            )
    return common[0], problems


def split_problems(
    problems: Iterable[Problem], item_files: Iterable[str]
) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """Sort problems into (dataset-wide, about an item, about a file that is no item)."""
    items = set(item_files)
    dataset_wide, of_items, of_others = [], [], []
    for problem in problems:
        if problem.file is None:
            dataset_wide.append(problem)
        elif problem.file in items:
            of_items.append(problem)
        else:
            of_others.append(problem)
    return dataset_wide, of_items, of_others
