"""File helpers shared by every dataset's preparation: atomic writes, SHA-256 hashes, and the
marker that says an extraction has finished."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MARKER = ".ranksim_complete"     # written into an extracted folder once extraction has finished


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write ``path`` by calling ``write(fh)`` on a binary temporary file beside it, then renaming it
    into place, so that ``path`` is never a half-written file. A failed or interrupted write
    (Ctrl-C) removes the temporary file and leaves ``path`` as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (split files and downloads are checked by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
