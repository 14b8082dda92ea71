"""Atomic file writes: readers see the old file or the new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    ``durable`` also fsyncs the data before the rename (for files whose loss
    after a power cut would matter, such as ``dataset.json``). The file gets
    mode 0644 (``mkstemp`` creates 0600; outputs are meant to be shared).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path
