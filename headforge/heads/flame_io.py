"""Reading user-supplied FLAME model files safely (no chumpy, no arbitrary code).

FLAME's ``generic_model.pkl`` / ``flame2023.pkl`` are Python-2 pickles whose
arrays are partly chumpy objects. ``safe_unpickle`` loads them with an
unpickler that only resolves a short allow-list of globals: numpy array
reconstruction, scipy.sparse matrices, a few builtins, ``_codecs.encode``
(bytes in protocol-2 pickles), and every ``chumpy.*``
class mapped to a tiny stand-in that just keeps the pickled state (whose
``x`` entry is the array). Any other global (``os.system``, ...) is refused
with an error naming the file. The npz variant is read with
``allow_pickle=False``.
"""

from __future__ import annotations

import codecs
import copyreg
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

__all__ = ["FlameFileError", "safe_unpickle", "load_arrays"]


class FlameFileError(ValueError):
    """A FLAME (or landmark-embedding) file is missing, unreadable, unsafe or malformed."""


class ChumpyStandIn:
    """Takes the place of any chumpy class; keeps the pickled state as attributes."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    @property
    def value(self) -> Any:
        """The stored array (chumpy keeps a constant's value under ``x``), or None."""
        return self.__dict__.get("x")


_SPARSE = {name: getattr(scipy.sparse, name) for name in ("csc_matrix", "csr_matrix", "coo_matrix")}
_BUILTINS = {
    "set": set,
    "frozenset": frozenset,
    "object": object,
    "slice": slice,
    "complex": complex,
    "bytearray": bytearray,
}


def _numpy_global(name: str) -> Any:
    import numpy.core.multiarray as multiarray
    import numpy.core.numeric as numeric

    table = {
        "_reconstruct": multiarray._reconstruct,
        "scalar": multiarray.scalar,
        "ndarray": np.ndarray,
        "dtype": np.dtype,
        "_frombuffer": getattr(numeric, "_frombuffer", None),
    }
    return table.get(name)


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copyreg._reconstructor`` restricted to the stand-in and sparse matrices on ``object``."""
    if base is not object or not (cls is ChumpyStandIn or cls in _SPARSE.values()):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from {base!r}")
    return copyreg._reconstructor(cls, base, state)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = {"copy_reg": "copyreg", "__builtin__": "builtins"}.get(module, module)
        found: Any = None
        if module.split(".")[0] == "chumpy":
            found = ChumpyStandIn
        elif module in (
            "numpy",
            "numpy.core.multiarray",
            "numpy._core.multiarray",
            "numpy.core.numeric",
            "numpy._core.numeric",
        ):
            found = _numpy_global(name)
        elif module.startswith("scipy.sparse"):
            found = _SPARSE.get(name)
        elif module == "builtins":
            found = _BUILTINS.get(name)
        elif module == "copyreg" and name == "_reconstructor":
            found = _safe_reconstructor
        elif module == "_codecs" and name == "encode":
            found = codecs.encode  # how protocol-2 pickles written by Python 3 store bytes
        if found is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        return found


def safe_unpickle(path: str | Path) -> Any:
    """Unpickle a FLAME-style file with the restricted unpickler.

    Raises:
        FlameFileError: unreadable file, not a pickle, or a forbidden global (the message names the file).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return _RestrictedUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError as err:
        raise FlameFileError(f"{path}: file not found") from err
    except pickle.UnpicklingError as err:
        raise FlameFileError(f"{path}: cannot load safely: {err}") from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError) as err:
        raise FlameFileError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err


def _to_plain(value: Any, path: Path, key: str) -> Any:
    """Chumpy stand-ins -> their ndarray; everything else unchanged."""
    if isinstance(value, ChumpyStandIn):
        stored = value.value
        if stored is None:
            raise FlameFileError(f"{path}: entry '{key}' is a chumpy expression without a stored value")
        return _to_plain(stored, path, key)
    return value


def load_arrays(path: str | Path) -> dict[str, Any]:
    """Read a FLAME-format file (pickle or npz) into a dict of numpy arrays / sparse matrices.

    Raises:
        FlameFileError: the file cannot be read or is not a mapping of arrays.
    """
    path = Path(path)
    if not path.exists():
        raise FlameFileError(f"{path}: file not found")
    if zipfile.is_zipfile(path):
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except ValueError as err:
            raise FlameFileError(
                f"{path}: npz holds object arrays (pickles), which are not loaded: {err}"
            ) from err
    raw = safe_unpickle(path)
    if not isinstance(raw, dict):
        raise FlameFileError(f"{path}: expected a dict of arrays, found {type(raw).__name__}")
    return {str(key): _to_plain(value, path, str(key)) for key, value in raw.items()}
