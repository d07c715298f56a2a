"""Safe file writes: nothing half-written, nothing replaced without being asked."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def file_mode(path: Path) -> int:
    """The permissions a file written at ``path`` should get: those of the file it replaces, else
    rw-r--r-- (temporary files start as rw------- and would otherwise stay private)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, file_mode(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """UTF-8 text; file names that were not UTF-8 (surrogate-escaped) keep their original bytes."""
    return atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"), overwrite=overwrite)
